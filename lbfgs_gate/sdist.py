"""Source distributions of optax: fetched from the package index, checked by hash."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from lbfgs_gate import PACKAGE_DIR, GateError, work_dir

# In the package (`lbfgs-gate check` compares with the release it downloads); constraints/sdists.txt
# in a clone links here.
SDIST_HASHES = PACKAGE_DIR / "sdists.txt"
# Where a local copy of the sdists may be found instead of the index (offline use).
SDIST_DIR_VARIABLE = "LBFGS_GATE_SDIST_DIR"


def known_hash(release: str) -> str:
    """The sha256 recorded for optax `release` in constraints/sdists.txt."""
    for line in SDIST_HASHES.read_text().splitlines():
        found = re.match(r"optax==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
        if found and found.group(1) == release:
            return found.group(2)
    known = re.findall(r"optax==(\S+)", SDIST_HASHES.read_text())
    raise GateError(
        f"optax {release} is not a known release: use one of {', '.join(known)} "
        f"(or add its sdist hash to constraints/sdists.txt)"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch(release: str, sdist_dir: str | os.PathLike | None = None) -> Path:
    """The path of the verified sdist `optax-<release>.tar.gz`.

    Looks in `sdist_dir` (or $LBFGS_GATE_SDIST_DIR) first, then in build/sdists/,
    and downloads it from the package index only when neither has it.
    """
    expected = known_hash(release)
    name = f"optax-{release}.tar.gz"
    sdist_dir = sdist_dir or os.environ.get(SDIST_DIR_VARIABLE)
    if sdist_dir:
        local = Path(sdist_dir) / name
        if not local.is_file():
            raise GateError(f"{local} not found: put the optax {release} sdist there or unset {SDIST_DIR_VARIABLE}")
        if _sha256(local) != expected:
            raise GateError(f"{local} does not match the sha256 in constraints/sdists.txt: replace the file")
        return local
    cached = work_dir() / "sdists" / name
    if cached.is_file() and _sha256(cached) == expected:
        return cached
    if importlib.util.find_spec("pip") is None:
        raise GateError(f"pip is not installed in {sys.prefix}: install pip there to download the optax sdists")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        requirement = Path(tmp) / "requirement.txt"
        requirement.write_text(f"optax=={release} --hash=sha256:{expected}\n")
        download = Path(tmp) / "download"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary=:all:",
                "--require-hashes",
                "-r",
                str(requirement),
                "-d",
                str(download),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        fetched = download / name
        if result.returncode != 0 or not fetched.is_file():
            reason = [line for line in result.stderr.splitlines() if "ERROR" in line][-1:] or ["no file"]
            raise GateError(
                f"could not download the optax {release} sdist from the package index ({reason[0].strip()}): "
                f"check the network, or put the file in a folder named by {SDIST_DIR_VARIABLE}"
            )
        os.replace(fetched, cached)
    return cached


def unpack(sdist: Path, destination: Path) -> Path:
    """Unpacks an sdist into `destination` (which must not exist); returns the tree."""
    destination = Path(destination)
    with tempfile.TemporaryDirectory(dir=destination.parent) as tmp:
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        (top,) = Path(tmp).iterdir()
        shutil.move(str(top), destination)
    return destination
