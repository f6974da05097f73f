"""optax's own test files, run from a patched tree against the optax installed here."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gatekit import GateError, tree

# optax's own tests that exercise L-BFGS and the linesearches (pytest node ids).
UPSTREAM_TESTS = ("optax/_src/alias_test.py::LBFGSTest", "optax/_src/linesearch_test.py")


def _pytest(tests: list[str], tree_dir: Path, extra: list[str]) -> int:
    """Runs optax test files from `tree_dir` against the optax installed here.

    The files are copied out of the tree first: run in place, pytest would import
    them as part of the tree's `optax` package, and so test the tree, not the install.
    """
    with tempfile.TemporaryDirectory(prefix="optax-tests-") as scratch:
        (Path(scratch) / "pytest.ini").write_text("[pytest]\n")
        targets = []
        for test in tests:
            relative, _, node = test.partition("::")
            copy = Path(scratch) / Path(relative).name
            shutil.copyfile(tree_dir / relative, copy)
            targets.append(f"{copy.name}::{node}" if node else copy.name)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra, *targets]
        print("+", " ".join(command), f"(in a copy of {', '.join(tests)})", flush=True)
        return subprocess.run(command, check=False, cwd=scratch).returncode


def run(release: str, series_file: Path, expect: str, upstream: bool, pytest_args: list[str],
        sdist_dir=None) -> None:
    """Runs the tests the series adds to optax (and, with `upstream`, optax's own).

    expect="pass": they must pass. expect="fail": on the release as published, each
    test module the series adds must fail, i.e. still catch its defect.
    """
    patched = tree.prepare(release, series_file, sdist_dir)
    added = tree.optax_test_modules(patched, series_file)
    if expect == "pass":
        paths = [str(m.relative_to(patched)) for m in added]
        if upstream:
            paths += list(UPSTREAM_TESTS)
        if _pytest(paths, patched, pytest_args) != 0:
            raise GateError("optax's tests failed on the installed optax: see the pytest report above")
        return
    for module in added:
        code = _pytest([str(module.relative_to(patched))], patched, pytest_args)
        if code != 1:
            raise GateError(
                f"{module.name} was expected to fail on optax {release} as released "
                f"(pytest exit {code}, not 1): the test no longer detects its defect"
            )
        print(f"{module.name}: fails on the release as published, as it must")
