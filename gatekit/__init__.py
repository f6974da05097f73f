"""The gate's machinery, shared by noxfile.py, tox.ini and the tests.

Where things are decided:
- gatekit/verdict.py   the verdict, for every session (from gatekit/record.py's records)
- gatekit/pipeline.py  prepare, install and verify the optax a session tests
- gatekit/sessions.py  unpatched, patched and upstream; gatekit/matrix.py; gatekit/fork/
- gatekit/runner.py    how pytest runs (record, profile, compilation cache, logs)
"""

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PATCHES_DIR = PROJECT_ROOT / "patches"
CONSTRAINTS_DIR = PROJECT_ROOT / "constraints"


class GateError(Exception):
    """A failure the user can act on; its text is the one-line message shown."""


def work_dir() -> Path:
    """Downloads, trees, caches and reports; LBFGS_GATE_WORK_DIR moves them (the gate's own tests do)."""
    return Path(os.environ.get("LBFGS_GATE_WORK_DIR", PROJECT_ROOT / "build"))


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
