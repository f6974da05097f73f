"""Patched source trees: built whole or not at all, installed, and verified."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lbfgs_gate import GateError, sdist, series, work_dir

# Written into each prepared tree: which file of the series (the patch or one of its
# variants) was applied, and which patches were skipped as already upstream.
MANIFEST = ".lbfgs_gate-series.json"
# Written last into each tree the gate keeps (patched trees, unpacked sdists): the digest
# of every other file. A tree is reused only while its files still match it.
SEAL = ".lbfgs_gate-content.sha256"


def content_digest(folder: Path) -> str:
    """The digest of every file below `folder` (paths and bytes), the seal itself excepted."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.name != SEAL and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def seal(folder: Path) -> None:
    (Path(folder) / SEAL).write_text(content_digest(folder) + "\n")


def intact(folder: Path, report=print) -> bool:
    """Whether a kept tree still holds what was sealed in it; one that does not is removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    sealed = folder / SEAL
    if sealed.is_file() and sealed.read_text().strip() == content_digest(folder):
        return True
    report(f"{folder.name}: its files changed since it was built (or it has no seal): building it again")
    shutil.rmtree(folder)
    return False


def _tree_key(sdist_path: Path, patches: list[Path], release: str) -> str:
    digest = hashlib.sha256(sdist_path.read_bytes())
    digest.update(MANIFEST.encode())  # a tree written by another version of the gate is not reused
    for patch in patches:
        # The file that carries each patch on this release (series.file_for), name and bytes.
        carrier = series.file_for(patch, release)
        digest.update(str(carrier.relative_to(patch.parent)).encode())
        digest.update(carrier.read_bytes())
    return digest.hexdigest()[:12]


def prepare(release: str, series_file: Path, sdist_dir=None, report=print) -> Path:
    """The optax `release` sdist with the whole series applied.

    Each patch is applied as the file `series.file_for` names for the release
    (the patch or its variant for that release); a patch already in the release
    (status "upstream" or "applied") is skipped and recorded as such in the tree's
    MANIFEST. Any other patch that does not apply stops the build.

    The tree is built in a scratch folder and moved into build/trees/ only once
    every patch has applied, so a failed run leaves nothing to be reused. A tree
    already there for the same sdist and patches is reused.
    """
    patches = series.read_series(series_file)
    series.require_tool("git")
    sdist_path = sdist.fetch(release, sdist_dir)
    trees = work_dir() / "trees"
    tree = trees / f"optax-{release}+{_tree_key(sdist_path, patches, release)}"
    if intact(tree, report=print):
        report(f"patched tree: {tree} (reused, its content verified)")
        return tree
    trees.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=trees))
    try:
        work = sdist.unpack(sdist_path, scratch / "optax")
        # Where each patch stands, as the series stacks (series.py alone knows how); a patch
        # already upstream or applied in the release as published is skipped.
        statuses = series.series_status(work, patches, release)
        stuck = series.blocking(statuses)
        if stuck is not None:
            report(series.format_table(statuses))
            raise GateError(
                f"{stuck.patch} cannot be applied to optax {release} ({stuck.state}"
                f"{': ' + stuck.detail if stuck.detail else ''}): "
                "fix or regenerate the patch (or add a variant for this release), "
                "or remove it from the series"
            )
        series.apply_series(work, statuses, Path(series_file).parent)
        manifest = {"release": release, "statuses": [s.__dict__ for s in statuses]}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        seal(work)
        report(series.format_table(statuses))
        try:
            os.replace(work, tree)
        except OSError:
            if not tree.is_dir():  # another run finished the same tree first: use it
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(f"patched tree: {tree}")
    return tree


def applied_patches(tree: Path, series_file: Path) -> list[Path]:
    """The files of the series applied to a prepared tree, in order.

    A tree without a manifest (one not built by `prepare`) is taken to carry the
    whole series as listed.
    """
    manifest = Path(tree) / MANIFEST if tree is not None else None
    if manifest is None or not manifest.is_file():
        return series.read_series(series_file)
    statuses = json.loads(manifest.read_text())["statuses"]
    return [Path(series_file).parent / s["source"] for s in statuses if s["state"] == "applies"]


def statuses(tree: Path) -> list[series.Status]:
    """Where each patch stood when `prepare` built the tree."""
    return [series.Status(**s) for s in json.loads((Path(tree) / MANIFEST).read_text())["statuses"]]


def touched_files(series_file: Path, tree: Path | None = None) -> list[str]:
    """Files the series changes: in `tree` as prepared, if given (skipped patches touch none)."""
    files = []
    for patch in applied_patches(tree, series_file):
        files += [f for f in series.read_patch(patch).files if f not in files]
    return files


def install(tree: Path, python: Path | str = sys.executable) -> None:
    """Installs a source tree into `python`'s environment."""
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--force-reinstall",
            str(tree),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        last = [line for line in result.stderr.splitlines() if line.strip()][-1:] or ["no message"]
        raise GateError(f"pip could not install {tree} ({last[0].strip()}): run the session again from scratch")


def installed_optax_root(python: Path | str = sys.executable) -> Path:
    """The folder holding the `optax` package that `python` imports."""
    result = subprocess.run(
        # find_spec locates the package without importing it (and so without its dependencies).
        [
            str(python),
            "-c",
            "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('optax').origin).parent.parent)",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if result.returncode != 0:
        raise GateError("optax cannot be imported in this environment: install it first")
    return Path(result.stdout.strip())


def difference(tree: Path, python: Path | str = sys.executable) -> str | None:
    """The first file of `tree`'s optax package that the optax imported by `python` lacks or
    holds otherwise (None when every one is the same, byte for byte)."""
    root = installed_optax_root(python) / "optax"
    source = Path(tree) / "optax"
    for path in sorted(source.rglob("*.py")):
        relative = path.relative_to(source)
        installed = root / relative
        if not installed.is_file() or installed.read_bytes() != path.read_bytes():
            return f"optax/{relative}"
    return None


def install_and_verify(tree: Path, python: Path | str = sys.executable) -> bool:
    """Makes the optax that `python` imports exactly `tree`'s, installing it only when it is
    not already (a reused environment); refuses unless every file then matches.
    Returns whether it installed."""
    if difference(tree, python) is None:
        return False
    install(tree, python)
    different = difference(tree, python)
    if different is not None:
        raise GateError(
            f"the optax imported from {installed_optax_root(python)} is not {tree.name}: {different} differs "
            "after installing it; remove the environment and run the session again"
        )
    return True
