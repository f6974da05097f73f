"""What the gate's sessions do inside their environment, for nox and tox alike.

A session runner only creates the environment and installs the pinned
requirements; then it calls `python -m gatekit session NAME`, which lands here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gatekit import PROJECT_ROOT, WORK_DIR, GateError, defects, optax_tests, sdist, series, tree

BASE_RELEASE = "0.2.4"


def base_defects() -> list[str]:
    """Every defect the series fixes is, by construction, in the release it is made for."""
    return [d.name for d in defects.DEFECTS.values() if d.patch is not None]


# Where the suite's primal-identity tests find the record to compare against.
PRIMAL_REFERENCE_VARIABLE = "LBFGS_GATE_PRIMAL_REFERENCE"


def record_primal_reference(release: str, sdist_dir=None, python: Path | str = sys.executable) -> Path:
    """Records the primal L-BFGS results of optax `release` as published, here and now.

    Bitwise results depend on optax, jax and the processor: a record made on another
    machine (tests/lbfgs/data) can differ in the last bits of float32 runs (seen with
    jax 0.10.2). So a patched session records the release as published, imported from
    its unpacked sdist (optax is pure Python) by this environment's Python and jax, and
    the suite compares the patched build with that record.
    """
    pristine = WORK_DIR / "pristine" / f"optax-{release}"
    if not pristine.is_dir():
        pristine.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=pristine.parent))
        try:
            sdist.unpack(sdist.fetch(release, sdist_dir), scratch / "optax")
            os.replace(scratch / "optax", pristine)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    output = WORK_DIR / "primal" / f"primal-optax-{release}-as-published.json"
    command = [str(python), "tools/record_primal_reference.py", "--output", str(output),
               "--expect-optax-in", str(pristine)]
    print("+", " ".join(command), f"(optax {release} as published, from {pristine})", flush=True)
    env = dict(os.environ, PYTHONPATH=str(pristine))
    if subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=False).returncode != 0:
        raise GateError(f"could not record the primal results of optax {release} as published: see above")
    return output


def run_suite(patch_state: str, known_defects: list[str], pytest_args: list[str],
              primal_reference: Path | None = None) -> None:
    """Runs the project's suite (tests/lbfgs) against the optax installed here."""
    env = dict(os.environ, LBFGS_GATE_PATCH_STATE=patch_state)
    if primal_reference:
        env[PRIMAL_REFERENCE_VARIABLE] = str(primal_reference)
    # The gate's verdicts rely on the ci profile (derandomized, enough examples to find the leak).
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    command = [sys.executable, "-m", "pytest", "tests/lbfgs", f"--known-defects={','.join(known_defects)}",
               *pytest_args]
    print("+", " ".join(command), flush=True)
    if subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=False).returncode != 0:
        raise GateError(f"the suite failed on {patch_state}: see the pytest report above")


def unpatched(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None) -> None:
    """The release as published: each known defect must be reproduced, by optax-style and suite tests."""
    optax_tests.run(release, series_file, "fail", upstream=False, pytest_args=[], sdist_dir=sdist_dir)
    run_suite(f"optax {release} as released", base_defects(), pytest_args)


def patched(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None) -> None:
    """The release with the series: installed, verified, optax's own tests and the suite green."""
    patched_tree = tree.prepare(release, series_file, sdist_dir)
    tree.install(patched_tree)
    tree.verify(patched_tree, tree.touched_files(series_file, patched_tree))
    numbers = ", ".join(series.read_patch(p).number for p in series.read_series(series_file))
    print(f"installed and verified: optax {release} + {numbers}", flush=True)
    optax_tests.run(release, series_file, "pass", upstream=True, pytest_args=["-n", "2", "-q"], sdist_dir=sdist_dir)
    reference = record_primal_reference(release, sdist_dir)
    run_suite(f"optax {release} + {numbers} (verified)", [], pytest_args, primal_reference=reference)
