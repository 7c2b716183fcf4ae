"""A test script run in a fresh interpreter from the repository's root (so it imports
this checkout's pyproof and tests): what the startup tests use to see a process's
imports and forks from the outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(script: str, *args: str, timeout: float = 60) -> tuple[Any, str]:
    """Run `script` (python -c) with `args`; it must exit 0 within `timeout` s and print
    a JSON document as its last line. Returns that document and the script's stderr."""
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                         text=True, timeout=timeout, check=True, cwd=ROOT)
    return json.loads(out.stdout.splitlines()[-1]), out.stderr
