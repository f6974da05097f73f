"""Fixtures for the tests of the gate's own machinery (no jax, no network).

The optax sdists come from $LBFGS_GATE_SDIST_DIR, which the gate_selftest session
fills before running these tests (`python -m lbfgs_gate fetch ...`).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lbfgs_gate import PROJECT_ROOT, sdist, work_dir


@pytest.fixture(scope="session")
def sdist_dir() -> Path:
    """$LBFGS_GATE_SDIST_DIR, or build/sdists where `python -m lbfgs_gate fetch` puts them."""
    folder = Path(os.environ.get(sdist.SDIST_DIR_VARIABLE) or work_dir() / "sdists")
    assert (folder / "optax-0.2.4.tar.gz").is_file(), (
        f"no optax sdists in {folder}: run `python -m lbfgs_gate fetch 0.2.4 0.2.8` first (`nox -s gate_selftest` does)"
    )
    return folder


@pytest.fixture(autouse=True)
def private_work_dir(tmp_path, monkeypatch):
    """Trees built in-process go to a scratch folder, never to the project's build/."""
    monkeypatch.setenv("LBFGS_GATE_WORK_DIR", str(tmp_path / "work"))


@pytest.fixture()
def pristine_tree(sdist_dir, tmp_path) -> Path:
    """A fresh unpacked optax 0.2.4 sdist."""
    return sdist.unpack(sdist.fetch("0.2.4", sdist_dir), tmp_path / "optax-0.2.4")


@pytest.fixture()
def gate(tmp_path, sdist_dir):
    """Runs `python -m lbfgs_gate ...` with a private work folder; returns the completed process."""
    work = tmp_path / "work"

    def run(*args, env=None):
        # pytest's own variables (PYTEST_CURRENT_TEST) are this test run's: the gate refuses them.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        environment = {**inherited, "LBFGS_GATE_WORK_DIR": str(work), sdist.SDIST_DIR_VARIABLE: str(sdist_dir)}
        environment.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "lbfgs_gate", *args],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )

    run.work = work
    return run


def git(tree, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )


def make_repository(tree: Path) -> Path:
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", "optax as published")
    return tree


@pytest.fixture(scope="session")
def require_program():
    def check(name):
        assert shutil.which(name), f"'{name}' is needed by this test: install it"

    return check
