"""Facts about the software and machine a run used, stored in /env."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def nearest_existing(path: str | Path) -> Path:
    """`path`, or its nearest ancestor that exists: where a file would be created (train makes the missing folders)
    and whose file system it would be on. Normalised first: 'new/../x' means x, though 'new' does not exist."""
    found = Path(os.path.abspath(path))
    while not found.exists():
        found = found.parent
    return found


def git_commit() -> str:
    """Commit of the hpcfed checkout in use ('unknown' for an installed wheel)."""
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
