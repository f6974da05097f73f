"""The optax a session tests: prepared, installed and verified, in one place.

`published` (the release as published) and `patched` (the release with the series)
return a Build: the tree the environment's optax must equal file for file, the
tree without the series (for the primal comparison), and a label that says exactly
which patches, and which of their variants, were applied.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from lbfgs_gate import PROJECT_ROOT, SUITE_DIR, GateError, runner, sdist, series, tree, work_dir
from lbfgs_gate.suite import corpus


@dataclass(frozen=True)
class Build:
    release: str
    tree: Path  # what the environment's optax is, file for file
    pristine: Path  # the release as published, unpacked
    patched_tree: Path | None  # the release with the series (it holds the test modules the series adds)
    statuses: tuple[series.Status, ...]  # where each patch stands on the release
    applied: bool  # whether `tree` carries the series

    @property
    def label(self) -> str:
        if not self.applied:
            return f"optax {self.release} as published"
        return f"optax {self.release} + {series.describe(self.statuses)} (verified)"


def pristine_tree(release: str, sdist_dir=None) -> Path:
    """The release's sdist, unpacked once into build/pristine/ (atomically: see sdist.unpack),
    and reused only while its content matches the seal written when it was unpacked."""
    destination = work_dir() / "pristine" / f"optax-{release}"
    if not tree.intact(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        scratch = destination.with_name(f".partial-{destination.name}-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        sdist.unpack(sdist.fetch(release, sdist_dir), scratch)
        tree.seal(scratch)
        try:
            os.replace(scratch, destination)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            if not tree.intact(destination):  # another run's tree, unless it is broken too
                raise
    return destination


def _check_version(release: str) -> None:
    if version("optax") != release:
        raise GateError(
            f"the installed optax is {version('optax')}, not {release}: "
            f"install the pins of constraints/optax-{release}.txt first"
        )


def published(release: str, series_file: Path, sdist_dir=None, report=print) -> Build:
    """The release as published, installed here: every file of its package verified.

    Its `patched_tree` (which holds the test modules the series adds) is None when the
    series does not apply to the release (the matrix measures such releases too)."""
    pristine = pristine_tree(release, sdist_dir)
    try:
        patched_tree = tree.prepare(release, series_file, sdist_dir, report=lambda _: None)
        statuses = tuple(tree.statuses(patched_tree))
    except GateError:
        patched_tree = None
        statuses = tuple(series.series_status(pristine, series.read_series(series_file), release))
    _check_version(release)
    if tree.install_and_verify(pristine):
        report(f"reinstalled optax {release} from its sdist: the environment held another build")
    build = Build(release, pristine, pristine, patched_tree, statuses, False)
    report(series.format_table(list(build.statuses)))
    report(f"installed and verified: {build.label}")
    return build


def patched(release: str, series_file: Path, sdist_dir=None, report=print) -> Build:
    """The release with the series applied (patches already upstream skipped), installed and verified."""
    patched_tree = tree.prepare(release, series_file, sdist_dir, report=lambda _: None)
    _check_version(release)
    pristine = pristine_tree(release, sdist_dir)
    tree.install_and_verify(patched_tree)
    build = Build(release, patched_tree, pristine, patched_tree, tuple(tree.statuses(patched_tree)), True)
    report(series.format_table(list(build.statuses)))
    report(f"installed and verified: {build.label}")
    return build


# --- the primal record of the tree without the series ----------------------------------------------


def _processor() -> str:
    """What makes bits differ between machines: the processor's features (jax picks kernels by them)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


def release_records(source_tree: Path, python: Path | str = sys.executable) -> dict[str, str]:
    """What the suite compares the optax under test with, made from `source_tree` (the same tree
    without the series), as the variables that name each to the suite: the primal results and the
    corpus's derivatives, recorded side by side (two subprocesses: the recording is compilation,
    one core each), and the tree's package as optax_release."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        primal = pool.submit(primal_reference, source_tree, python)
        derivatives = pool.submit(release_derivatives, source_tree, python)
        records = {"LBFGS_GATE_PRIMAL_REFERENCE": str(primal.result()), corpus.VARIABLE: str(derivatives.result())}
    return {**records, corpus.PACKAGE_VARIABLE: str(release_package(source_tree))}


def primal_reference(source_tree: Path, python: Path | str = sys.executable) -> Path:
    """The primal L-BFGS results of the optax in `source_tree` (the same tree without the
    series), recorded by `python`'s environment: bits depend on optax, jax and the processor.

    Recorded once per (tree, recorder, environment, processor) into build/primal/ and
    reused: when nothing changed, recording again would write the same bits.
    """
    return _record(source_tree, python, "primal", "lbfgs_gate.suite.primal", ("primal.py", "solvers.py"))


def release_derivatives(
    source_tree: Path,
    python: Path | str = sys.executable,
    state: str = "as it is, without the series",
    only: tuple[tuple[str, str], ...] = (),
) -> Path:
    """The errors of the derivatives the optax in `source_tree` (the tree without the series)
    gives on the corpus of users' loops (lbfgs_gate/suite/corpus.py), for test_never_worse.py;
    `only`: those (workload, dtype) measurements alone (`lbfgs-gate check`'s quick set).
    Recorded and reused as the primal reference is, into build/derivatives/."""
    recorders = ("corpus.py", "user_loops.py", "solvers.py", "claims.py")
    arguments = tuple(f"--only={name}:{dtype}" for name, dtype in only)
    return _record(source_tree, python, "derivatives", "lbfgs_gate.suite.corpus", recorders, state, arguments)


def release_derivatives_side_by_side(
    source_tree: Path, only: tuple[tuple[str, str], ...], state: str, parts: int = 2
) -> Path:
    """release_derivatives of `only`, made by `parts` recorders side by side (one core each, the
    recording is compilation) and merged into one record (reused as each part is)."""
    chunks = [only[i::parts] for i in range(parts) if only[i::parts]]
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        paths = list(pool.map(lambda chunk: release_derivatives(source_tree, state=state, only=chunk), chunks))
    key = hashlib.sha256("".join(path.name for path in paths).encode()).hexdigest()[:16]
    merged = work_dir() / "derivatives" / f"derivatives-merged-{key}.json"
    if not merged.is_file():
        documents = [json.loads(path.read_text()) for path in paths]
        document = {**documents[0], "records": [r for d in documents for r in d["records"]]}
        merged.parent.mkdir(parents=True, exist_ok=True)
        partial = merged.with_suffix(".partial")
        partial.write_text(json.dumps(document, indent=1) + "\n")
        os.replace(partial, merged)
    return merged


# Import statements of optax's own modules, rewritten so that the release's package imports as
# `optax_release` beside the optax under test (test_never_worse.py's property compares the two
# in one process). Anything else naming the package at the start of a line is refused.
_IMPORTS = (
    (re.compile(r"^(\s*)from optax([.\s])", re.M), r"\1from optax_release\2"),
    (re.compile(r"^(\s*)import optax(\.[\w.]+) as ", re.M), r"\1import optax_release\2 as "),
    (re.compile(r"^(\s*)import optax(\.[\w.]+)\s*$", re.M), r"\1import optax_release\2; optax = optax_release"),
    (re.compile(r"^(\s*)import optax\s*$", re.M), r"\1import optax_release as optax"),
)
_LEFT = re.compile(r"^\s*(?:from|import) optax\b.*$", re.M)


def release_package(source_tree: Path) -> Path:
    """The optax package of `source_tree` (the tree without the series) as `optax_release`, in a
    folder of its own under build/release-package/ (keyed by the tree's files): put the folder on
    sys.path and `import optax_release`. Its tests are left out; its imports of itself rewritten."""
    files = sorted(p for p in (Path(source_tree) / "optax").rglob("*.py") if not p.name.endswith("_test.py"))
    key = hashlib.sha256()
    for path in files:
        key.update(str(path.relative_to(source_tree)).encode() + path.read_bytes())
    folder = work_dir() / "release-package" / key.hexdigest()[:16]
    if (folder / "optax_release" / "__init__.py").is_file():
        return folder
    work_dir().mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="release-package-", dir=work_dir()))
    try:
        for path in files:
            text = path.read_text()
            for pattern, replacement in _IMPORTS:
                text = pattern.sub(replacement, text)
            left = _LEFT.search(text)
            if left:
                line = left.group(0).strip()
                raise GateError(
                    f"{path.relative_to(source_tree)} imports optax in a form not rewritten: {line} "
                    "(the gate imports the tree without the series as optax_release: write it "
                    "`from optax... import X`, `import optax.X as Y` or `import optax` on a line of its own)"
                )
            target = partial / "optax_release" / path.relative_to(Path(source_tree) / "optax")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _record(
    source_tree: Path,
    python,
    kind: str,
    module: str,
    recorders: tuple[str, ...],
    state: str = "as it is, without the series",
    arguments: tuple[str, ...] = (),
) -> Path:
    """Run `python -m module --output F --expect-optax-in DIR [arguments]` with only the tree's optax
    on the path; F is keyed by the tree's optax, the recorder's files and arguments, the environment
    and the processor."""
    key = hashlib.sha256()
    if arguments:
        key.update(repr(arguments).encode())
    for path in sorted((Path(source_tree) / "optax").rglob("*.py")):
        key.update(str(path.relative_to(source_tree)).encode() + path.read_bytes())
    for recorder in recorders:
        key.update((SUITE_DIR / recorder).read_bytes())
    versions = subprocess.run(
        [
            str(python),
            "-c",
            "import sys; from importlib.metadata import version as v; "
            "print(sys.version, *(v(p) for p in ('jax', 'jaxlib', 'numpy')))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    key.update(versions.encode() + _processor().encode())
    output = work_dir() / kind / f"{kind}-{key.hexdigest()[:16]}.json"
    if output.is_file():
        print(f"{kind} record of {source_tree.name} ({state}): reused {output.name}", flush=True)
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".partial")
    # Only the tree's optax package goes on the path, copied out: nothing else at the tree's
    # root (a fork's sitecustomize.py, say) is importable while the reference is recorded.
    package_root = Path(tempfile.mkdtemp(prefix=f"{kind}-optax-"))
    shutil.copytree(Path(source_tree) / "optax", package_root / "optax")
    command = [str(python), "-m", module, "--output", str(partial), "--expect-optax-in", str(package_root), *arguments]
    print(f"+ python -m {module}  (records {source_tree.name} {state})", flush=True)
    env = runner.environment(
        f"recording the {kind} reference", python, {"PYTHONPATH": f"{package_root}{os.pathsep}{PROJECT_ROOT}"}
    )
    try:
        # Run from the copy's folder: `python -m` puts the working folder first on the path, and where
        # lbfgs-gate is installed PROJECT_ROOT is site-packages, whose optax would shadow the tree's.
        result = subprocess.run(command, cwd=package_root, env=env, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(package_root, ignore_errors=True)
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        last = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()][-1:] or ["no message"]
        raise GateError(f"could not record the {kind} of {source_tree.name} ({last[0]}): see the command above")
    os.replace(partial, output)
    return output


def series_test_modules(build: Build, series_file: Path) -> dict[str, str]:
    """The test modules the applied patches add to optax (relative path -> the defect each detects)."""
    from lbfgs_gate import defects

    by_patch = {d.patch: d.name for d in defects.DEFECTS.values() if d.patch}
    modules = {}
    for status in build.statuses:
        if status.state == "applies" and status.patch in by_patch:
            for file in series.added_tests(Path(series_file).parent / status.source):
                modules[file] = by_patch[status.patch]
    return modules


def option_test_modules(build: Build, series_file: Path) -> list[str]:
    """The test modules the applied option patches add to optax (defects.OPTIONS): PASS_TO_PASS."""
    from lbfgs_gate import defects

    modules = []
    for status in build.statuses:
        if status.state == "applies" and status.patch in defects.OPTIONS:
            modules += series.added_tests(Path(series_file).parent / status.source)
    return modules
