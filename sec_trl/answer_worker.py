"""The math-verify worker subprocess of :class:`sec_trl.answer_checking.AnswerChecker`.

:func:`serve` runs in the child: it imports math-verify, caps its own address space (``RLIMIT_AS``), and answers
JSON requests ``{"id", "gold", "pred", "symmetric"}`` on a socket with ``{"id", "ok"}`` until EOF. It parses with
math-verify's LaTeX extraction only (every answer is wrapped in ``\\boxed{}``), never with its expression extractor,
which goes through ``sympy.parse_expr`` (``eval``). :class:`WorkerProcess` is the parent's handle: start, wait
until ready, kill. The timeout policy (how long to wait, when to kill and restart) is the checker's.

This file imports nothing from ``sec_trl``: the child loads it by path, so that starting a worker does not import
torch and TRL.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection


logger = logging.getLogger(__name__)

__all__ = ["WorkerDied", "WorkerProcess", "serve"]


# The worker is this very file, loaded by path under a private name: importing `sec_trl.answer_worker` would run
# `sec_trl/__init__.py` (torch, TRL) in the child for nothing. So this file imports nothing from sec_trl.
_WORKER_BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_sec_trl_answer_worker', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "mod.serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))\n"
)


def serve(fd: int, alarm_seconds: int, memory_limit_mb: int) -> None:  # pragma: no cover - runs in the child
    """Serve ``{"id", "gold", "pred", "symmetric"}`` requests on ``fd`` until EOF. Runs in the worker process."""
    import signal
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it kills us at exit
    # Orphan guard: if the parent dies while we are stuck in C code (big-integer power, ...), SIGALRM with its
    # default action ends us even though the GIL is held. Re-armed for every request.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    if memory_limit_mb > 0:
        try:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    warnings.simplefilter("ignore")
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)

    conn = Connection(fd)
    from functools import lru_cache

    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]

    @lru_cache(maxsize=1024)
    def parse_answer(answer: str):
        return tuple(parse("\\boxed{" + answer + "}", extraction_config=config, parsing_timeout=None))

    def equal(gold: str, pred: str, symmetric: bool) -> bool:
        g, p = parse_answer(gold), parse_answer(pred)
        if not g or not p:
            return False
        if verify(list(g), list(p), timeout_seconds=None):
            return True
        return symmetric and verify(list(p), list(g), timeout_seconds=None)

    equal("\\frac{1}{2}", "0.5", True)  # warm up the LaTeX grammar and sympy before reporting ready
    conn.send_bytes(json.dumps({"ready": os.getpid()}).encode())
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        signal.alarm(alarm_seconds)
        try:
            ok = bool(equal(request["gold"], request["pred"], bool(request.get("symmetric"))))
        except BaseException:  # RecursionError, MemoryError, anything: not equal
            ok = False
        signal.alarm(0)
        try:
            conn.send_bytes(json.dumps({"id": request["id"], "ok": ok}).encode())
        except OSError:
            return


class WorkerDied(Exception):
    """The worker exited, closed its socket, or did not report ready in time."""


class WorkerProcess:
    """One worker process plus the parent's end of its socket pair. Not thread-safe: the checker's lock guards it."""

    def __init__(self, alarm_seconds: int, memory_limit_mb: int):
        parent_sock, child_sock = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, os.path.abspath(__file__), str(child_sock.fileno())]
                + [str(alarm_seconds), str(memory_limit_mb)],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.owner_pid = os.getpid()
        self.ready = False

    def wait_ready(self, timeout: float) -> None:
        """Wait until the worker has imported math-verify; :class:`WorkerDied` if not within ``timeout`` s."""
        if self.ready:
            return
        try:
            if not self.conn.poll(timeout):
                raise WorkerDied(f"no ready message within {timeout:.0f} s")
            json.loads(self.conn.recv_bytes())
        except (EOFError, OSError, ValueError) as exc:
            raise WorkerDied(f"exited during start-up (exit code {self.proc.poll()})") from exc
        self.ready = True

    def kill(self) -> None:
        """SIGKILL the worker and reap it (a no-op in a forked child, where the worker is the parent's)."""
        if self.owner_pid != os.getpid():  # inherited through fork: the parent's worker, not ours to kill
            return
        try:
            self.conn.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not take 5 s
            logger.warning("answer-checking worker %d did not exit after SIGKILL", self.proc.pid)
