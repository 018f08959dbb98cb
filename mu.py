#!/usr/bin/env python3
"""mu: a self-hosted messaging and mail server. `python mu.py --help` for usage."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_venv_site = None
if _here not in sys.path:
    sys.path.insert(0, _here)

from mu.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
