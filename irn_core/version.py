"""The code version recorded in every output (package version plus git commit when available)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from irn_core import __version__


@functools.cache
def code_version() -> str:
    """``"<version>"``, or ``"<version>+g<commit>[.dirty]"`` when running from a git checkout."""
    repository = Path(__file__).resolve().parents[1]
    if not (repository / ".git").exists():
        return __version__
    try:
        commit = subprocess.run(
            ["git", "-C", str(repository), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repository), "status", "--porcelain", "--untracked-files=no", "--", "irn_core"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if status else "")
