"""The ``refrt`` command (also ``python -m refrt``): tunes the process for refrt
(``refrt.tune_process()``, before NumPy is loaded), then runs the command line (``refrt.cli``)."""

import sys


def main() -> int:
    from .tuning import tune_process

    tune_process()
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
