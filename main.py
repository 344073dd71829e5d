"""Command line: fetch the data, train, predict, evaluate, or all of it in one go.

    python main.py all       (fetch, train, choose on the selection slices, score the test slices once)
    python main.py --help    (every subcommand; the same program as the ``unet`` command)

The commands live in :mod:`isbi_unet.cli`.
"""

import sys

from isbi_unet.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
