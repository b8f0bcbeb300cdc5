#!/usr/bin/env python
"""A sweep's summary: the same command as ``famr-summarize`` (famr_cli.sweep.summarize_cli), kept for old command lines."""

import sys

from famr_cli.sweep.summarize_cli import main

if __name__ == "__main__":
    sys.exit(main())
