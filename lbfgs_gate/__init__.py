"""The gate's machinery, shared by noxfile.py, tox.ini and the tests.

Where things are decided:
- lbfgs_gate/verdict.py   the verdict, for every session (from the records of lbfgs_gate/run_record.py)
- lbfgs_gate/pipeline.py  prepare, install and verify the optax a session tests
- lbfgs_gate/sessions.py  unpatched, patched and upstream; lbfgs_gate/matrix.py; lbfgs_gate/fork/
- lbfgs_gate/runner.py    how pytest runs (record, profile, compilation cache, logs)
"""

import os
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The folder that holds the package: a clone of the project, or site-packages once installed.
# pytest runs from here, so that node ids read lbfgs_gate/suite/... either way.
PROJECT_ROOT = PACKAGE_DIR.parent
PATCHES_DIR = PACKAGE_DIR / "patches"  # the series ships in the package (patches/ in a clone links here)
SUITE_DIR = PACKAGE_DIR / "suite"  # the detectors and their harness
CONSTRAINTS_DIR = PROJECT_ROOT / "constraints"  # a clone's pins (not installed)


def in_clone() -> bool:
    """Whether this is a clone of the project (its nox sessions and pins beside the package)."""
    return (PROJECT_ROOT / "noxfile.py").is_file() and CONSTRAINTS_DIR.is_dir()


class GateError(Exception):
    """A failure the user can act on; its text is the one-line message shown."""


def work_dir() -> Path:
    """Downloads, trees, caches and reports: build/ in a clone, the user's cache once installed;
    LBFGS_GATE_WORK_DIR moves them (the gate's own tests do)."""
    if os.environ.get("LBFGS_GATE_WORK_DIR"):
        return Path(os.environ["LBFGS_GATE_WORK_DIR"])
    if in_clone():
        return PROJECT_ROOT / "build"
    # Installed: never inside site-packages; the compilation cache outlives a run here.
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lbfgs-gate"


def release_pinned_by(constraints: Path) -> str:
    """The optax release a constraints file pins."""
    found = re.search(r"^optax==(\S+)", Path(constraints).read_text(), flags=re.M)
    if not found:
        raise GateError(f"{constraints} pins no optax==VERSION: add the pin")
    return found.group(1)


def base_release() -> str:
    """The release the series is made for: constraints/base.txt, a link to its pins (nox and tox read it too)."""
    return release_pinned_by(CONSTRAINTS_DIR / "base.txt")


def newest_release() -> str:
    """The newest release the gate follows: constraints/newest.txt."""
    return release_pinned_by(CONSTRAINTS_DIR / "newest.txt")
