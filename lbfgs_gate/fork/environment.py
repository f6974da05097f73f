"""The fork's own environment: pins chosen by its optax version, the fork installed and verified."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lbfgs_gate import PROJECT_ROOT, GateError, tree, work_dir
from lbfgs_gate.fork.source import _last_line

REQUIREMENTS = PROJECT_ROOT / "requirements" / "test.txt"


def find_uv() -> str:
    """The uv binary to build the fork's environment with, or "" to fall back to venv + pip.

    The nox session calls this in nox's own interpreter, where uv is installed
    alongside nox even when it is not on PATH, and passes it on as $UV.
    """
    if os.environ.get("UV"):
        return os.environ["UV"]
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv") or ""


def fork_constraints(constraints: Path, destination: Path) -> Path:
    """The pins without the optax pin: the fork is the optax to install, whatever it calls itself."""
    lines = [line for line in constraints.read_text().splitlines() if not re.match(r"^\s*optax\s*(==|@|$)", line)]
    destination.write_text("\n".join(lines) + "\n")
    return destination


def _run_quiet(command: list[str], what: str) -> None:
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GateError(f"{what} failed ({_last_line(result.stderr)}): fix the pins or the fork's dependencies")


def environment_dir(constraints: Path, uv: str) -> Path:
    """The fork environment for these pins, kept between runs in build/fork-envs/: a fork
    gated on every commit pays for its environment once, then for installing the fork."""
    key = hashlib.sha256()
    for part in (constraints.read_bytes(), REQUIREMENTS.read_bytes(), sys.version.encode(), b"uv" if uv else b"pip"):
        key.update(part)
    return work_dir() / "fork-envs" / key.hexdigest()[:16]


def build_environment(env_dir: Path, tree: Path, constraints: Path, uv: str) -> Path:
    """The environment with the suite's requirements and the fork's optax, verified; its python.

    An environment already in `env_dir` is reused: the requirements are brought to the pins
    again (nothing to do when they are), and the fork is always reinstalled, then verified
    file for file, so a reused environment can hold nothing but the fork under test."""
    python = env_dir / "bin" / "python"
    reused = python.is_file()
    if uv:
        if not reused:
            _run_quiet([uv, "venv", "--quiet", "--python", sys.executable, str(env_dir)], "creating the environment")
        install = [uv, "pip", "install", "--quiet", "--python", str(python)]
        reinstall = ["--reinstall-package", "optax"]
    else:
        if not reused:
            _run_quiet([sys.executable, "-m", "venv", str(env_dir)], "creating the environment")
        install = [str(python), "-m", "pip", "install", "--quiet"]
        reinstall = ["--force-reinstall", "--no-deps"] if reused else []
    print(f"fork environment: {env_dir}" + (" (reused)" if reused else ""), flush=True)
    _run_quiet([*install, "-r", str(REQUIREMENTS), "-c", str(constraints)], "installing the suite's requirements")
    # Built in isolation: the fork's build backend runs in a throwaway environment of
    # its own, never in this one (which the next fork reuses) nor in the gate's.
    _run_quiet([*install, *reinstall, str(tree), "-c", str(constraints)], "installing the fork")
    verify_installed(python, tree)
    return python


def verify_installed(python: Path, tree_dir: Path) -> None:
    """Refuses unless the optax the environment imports is, file for file, the fork's."""
    different = tree.difference(tree_dir, python)
    if different is not None:
        raise GateError(f"the installed optax is not the fork: {different} differs; run the gate again")
