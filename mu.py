#!/usr/bin/env python3
"""mu: a self-hosted messaging and mail server. `python mu.py --help` for usage."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)


def _reexec_in_venv() -> None:
    """Run as `./mu.py` with a system Python that lacks the dependencies: use the
    project's .venv (made by `make run`) when there is one."""
    import importlib.util
    if all(importlib.util.find_spec(name) for name in ("bottle", "waitress", "dns", "dkim", "spf")):
        return
    venv_python = os.path.join(_here, ".venv", "bin", "python")
    if os.path.exists(venv_python) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(_here, ".venv")):
        os.execv(venv_python, [venv_python, os.path.abspath(__file__), *sys.argv[1:]])


if __name__ == "__main__":
    _reexec_in_venv()
    from mu.cli import main
    sys.exit(main())
