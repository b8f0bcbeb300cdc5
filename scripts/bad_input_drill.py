#!/usr/bin/env python
"""Every bad input of docs/errors.md through famr-run (the drill lives in famr_lab.bad_input_drill).

python scripts/bad_input_drill.py [--workers 1] [--keep]
"""

import sys

from famr_lab.bad_input_drill import main

if __name__ == "__main__":
    sys.exit(main())
