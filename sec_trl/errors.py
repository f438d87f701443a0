"""How the command lines end on a user's mistake: one ``error:`` line on stderr and exit code 2, no traceback.

Each command line (``sec_trl.train.cli``, ``sec_trl.ranking.cli.cli``, ``sec_trl.evaluation.cli.cli``,
``sec_trl.hub.main``) runs inside :func:`user_errors`. The project's checks (config fields, data files and columns,
reward functions, trackers, preflight) raise ``ValueError`` / ``FileNotFoundError`` / ``ImportError`` naming the flag
and the fix; a missing model or dataset raises ``OSError`` or one of the :class:`UserFacingError` classes. Those are
reported as one line while the command is still preparing its work. Inside :func:`work_phase` (the training loop, the
ranking's sampling, the evaluation's sampling) nothing is shortened: an exception there keeps its traceback, since it
is more likely a bug or a runtime failure than a mistyped flag. Other exception types (``TypeError``, ``KeyError``,
``RuntimeError``, ...) always keep theirs.

``SEC_TRL_DEBUG=1`` in the environment shows the full traceback of every error (under ``accelerate launch`` too: the
launched processes inherit it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


DEBUG_ENV = "SEC_TRL_DEBUG"
EXIT_USAGE = 2
"""Exit code of a command line stopped by a user error (argparse's code for a bad command line)."""

_DURING_WORK = "_sec_trl_during_work"


class UserFacingError(Exception):
    """Mixed into an exception class whose message tells the user what to change (e.g. a model that cannot be
    found); :func:`user_errors` reports it as one line."""


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, UserFacingError)


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


@contextlib.contextmanager
def work_phase() -> Iterator[None]:
    """The command's real work (training, sampling): an exception raised inside keeps its traceback. Usable as a
    decorator too."""
    try:
        yield
    except BaseException as e:
        with contextlib.suppress(AttributeError, TypeError):
            setattr(e, _DURING_WORK, True)
        raise


def _rank_prefix() -> str:
    """``[rank N] `` under a multi-process launch (every process reports its own error), else nothing."""
    world = os.environ.get("WORLD_SIZE")
    if world is None or world == "1":
        return ""
    return f"[rank {os.environ.get('RANK', '?')}] "


def format_user_error(e: BaseException) -> str:
    """``error: <message>`` (plus the cause's own message when the message does not already hold it)."""
    message = str(e).strip() or type(e).__name__
    cause = e.__cause__
    lines = [f"error: {message}"]
    if cause is not None and str(cause).strip() and str(cause).strip() not in message:
        lines.append(f"  caused by {type(cause).__name__}: {str(cause).strip()}")
    return "\n".join(lines)


@contextlib.contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """The boundary of a command line: a user error raised outside :func:`work_phase` is printed as ``error:
    <message>`` on stderr and the process exits with :data:`EXIT_USAGE`; everything else propagates unchanged."""
    try:
        yield
    except USER_ERRORS as e:
        if debug_enabled() or getattr(e, _DURING_WORK, False):
            raise
        prefix = _rank_prefix()
        text = format_user_error(e).replace("\n", "\n" + prefix)
        print(f"{prefix}{prog}: {text}", file=sys.stderr, flush=True)
        if os.environ.get("RANK", "0") == "0":
            print(f"(set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None
