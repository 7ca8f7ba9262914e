#!/usr/bin/env python3
"""The workload generator of a source checkout: ``python -m ptreloc.workload`` (its options and
output are in ptreloc/workload.py), runnable by the system python3 without installing ptreloc -
the checkout's package comes first on the path.  The installed package never runs this file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ptreloc.workload import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    sys.exit(main())
