"""The gate's machinery, shared by noxfile.py, tox.ini and the tests.

Everything that downloads, checks, applies, installs or verifies lives here once;
the session runners only call it.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PATCHES_DIR = PROJECT_ROOT / "patches"
CONSTRAINTS_DIR = PROJECT_ROOT / "constraints"
# Downloads and patched trees; LBFGS_GATE_WORK_DIR moves them (the gate's own tests do).
WORK_DIR = Path(os.environ.get("LBFGS_GATE_WORK_DIR", PROJECT_ROOT / "build"))


class GateError(Exception):
    """A failure the user can act on; its text is the one-line message shown."""
