"""``python -m sec_trl.rank``: rank a prompt dataset by semantic entropy (see :mod:`sec_trl.ranking`).

This module re-exports the public names of the :mod:`sec_trl.ranking` package (``from sec_trl.rank import
rank_dataset, ensure_ranked, ...`` keeps working) and is the command line's entry point.
"""

import sys

from sec_trl.ranking import *  # noqa: F403
from sec_trl.ranking import __all__  # noqa: F401
from sec_trl.ranking.cli import cli


if __name__ == "__main__":
    sys.exit(cli())
