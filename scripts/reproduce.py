#!/usr/bin/env python
"""The paper's tables: the same command as ``famr-reproduce`` (famr_cli.reproduce.cli), kept for old command lines."""

import sys

from famr_cli.reproduce.cli import run

if __name__ == "__main__":
    sys.exit(run())
