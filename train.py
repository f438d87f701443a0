"""`accelerate launch train.py [--config recipe.yaml] [--flags]`: the checkout's entry point.

A thin wrapper over `sec_trl.train` (the installed package's `accelerate launch -m sec_trl.train`, which does the
same); `python -m sec_trl.train --help` lists every flag.
"""

from sec_trl.train import cli


if __name__ == "__main__":
    cli()
