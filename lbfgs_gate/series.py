"""The patch series: reading it, and checking or applying its patches to a tree.

Patches are applied with `git apply`, which needs no repository; the tree may be a
plain unpacked sdist or a git checkout (a fork).
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lbfgs_gate import PATCHES_DIR, GateError

TRAILER = re.compile(r"^([A-Z][A-Za-z-]+): (.+)$")


def require_tool(name: str) -> str:
    """The path of an external program the gate needs, or a clear error."""
    path = shutil.which(name)
    if path is None:
        raise GateError(f"'{name}' not found on PATH: install {name} and run again")
    return path


def read_series(series_file: Path = PATCHES_DIR / "series") -> list[Path]:
    """The patches listed in a quilt-style series file, in order."""
    series_file = Path(series_file)
    if not series_file.is_file():
        raise GateError(f"series file {series_file} not found: pass an existing series file")
    patches = []
    for line in series_file.read_text().splitlines():
        name = line.split("#", 1)[0].strip().split()
        if not name:
            continue
        patch = series_file.parent / name[0]
        if not patch.is_file():
            raise GateError(
                f"{series_file.name} lists {name[0]}, which is not in {series_file.parent}: "
                "restore the patch or remove its line from the series"
            )
        patches.append(patch)
    if not patches:
        raise GateError(f"series file {series_file} lists no patch: add the patches in order")
    return patches


@dataclass(frozen=True)
class PatchInfo:
    """What a patch's header says about it."""

    path: Path
    subject: str
    trailers: dict[str, str]
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def applied_upstream(self) -> str | None:
        return self.trailers.get("Applied-Upstream")


def read_patch(path: Path) -> PatchInfo:
    """Parses the mbox header and DEP-3 trailers of a `git format-patch` file."""
    text = Path(path).read_text()
    message = email.parser.Parser().parsestr(text, headersonly=False)
    subject = " ".join(str(message.get("Subject", "")).split())
    subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject)
    body = message.get_payload()
    description = body.split("\n---\n", 1)[0] if isinstance(body, str) else ""
    trailers = {}
    for line in description.splitlines():
        match = TRAILER.match(line)
        if match:
            trailers[match.group(1)] = match.group(2)
    files = tuple(dict.fromkeys(re.findall(r"^\+\+\+ b/(\S+)", text, flags=re.M)))
    return PatchInfo(Path(path), subject, trailers, files)


def _git_apply(tree: Path, patch: Path, *args: str) -> subprocess.CompletedProcess:
    git = require_tool("git")
    env = dict(os.environ)
    # A tree nested in another repository (build/ inside this project) must not be
    # taken for part of it: git would then apply paths relative to the outer root.
    env["GIT_CEILING_DIRECTORIES"] = str(Path(tree).resolve().parent)
    return subprocess.run(
        [git, "apply", *args, str(Path(patch).resolve())],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _conflict(stderr: str) -> str:
    """Names the file and hunk that `git apply` could not place."""
    found = re.search(r"patch failed: (\S+):(\d+)", stderr)
    if found:
        return f"{found.group(1)}, hunk at line {found.group(2)}"
    missing = re.search(r"error: (\S+): (No such file or directory|does not exist in index)", stderr)
    if missing:
        return f"{missing.group(1)}: file not in the tree"
    exists = re.search(r"error: (\S+): already exists in working directory", stderr)
    if exists:
        return f"{exists.group(1)}: file already exists"
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "git apply failed without a message"


@dataclass(frozen=True)
class Status:
    """Where one patch stands against one tree."""

    patch: str
    state: str  # "applied", "applies", "upstream" or "conflicts"
    detail: str = ""
    # The file that applies or is applied, relative to the series' folder: the patch
    # itself or a variant of it (patches/<release>/<name>); "" for upstream/conflicts.
    source: str = ""


VARIANTS = PATCHES_DIR / "variants.json"


def checked_releases(path: Path = VARIANTS) -> list[str]:
    """The published releases the series was checked on, each with the files file_for names
    (the gate's own tests apply them to each release's sdist)."""
    return json.loads(Path(path).read_text())["checked"]


def variant_table(path: Path = VARIANTS) -> dict[str, dict[str, str]]:
    """The one table of variants: from a release on, which patch is carried by the file of the
    same name in another folder of the series (patches/<folder>/<name>), by patch number."""
    table = json.loads(Path(path).read_text())
    return {release: row for release, row in table.items() if re.fullmatch(r"\d+(\.\d+)+", release)}


def file_for(patch: Path, release: str | None) -> Path:
    """The file that carries `patch` on `release`: the one rule. The table's row for the newest
    release it lists at or below `release` (a 0.2.9.dev checkout takes 0.2.8's row) names the
    variant; a patch that row does not name, or a release below every row (the base release the
    series is made for), takes the patch as listed. Nothing is chosen by trying files: a variant
    can apply cleanly where it is wrong (0006 as listed applies to 0.2.5 and calls otu.*, which
    0.2.5's transform.py does not import)."""
    patch = Path(patch)
    if release is None:
        return patch
    table = variant_table()
    rows = [r for r in table if version_tuple(r) <= version_tuple(release)]
    if not rows:
        return patch
    folder = table[max(rows, key=version_tuple)].get(patch.name[:4])
    if folder is None:
        return patch
    variant = patch.parent / folder / patch.name
    if not variant.is_file():
        raise GateError(f"{VARIANTS.name} names {folder}/{patch.name}, which is not in the series: add it or fix it")
    return variant


def _source(candidate: Path, patch: Path) -> str:
    return str(Path(candidate).relative_to(Path(patch).parent))


def _lines_still_present(tree: Path, patch: Path) -> list[str]:
    """Lines that `patch` removes and that the tree still holds, as 'file: line'.

    An `Applied-Upstream:` claim is only believed when the code the patch replaces is
    gone: upstream may respell a fix, but it cannot have fixed code it still ships.
    """
    present = []
    for diff in re.split(r"^diff --git ", Path(patch).read_text(), flags=re.M)[1:]:
        target = re.search(r"^--- a/(\S+)$", diff, flags=re.M)
        if not target or not (Path(tree) / target.group(1)).is_file():
            continue
        shipped = {line.strip() for line in (Path(tree) / target.group(1)).read_text().splitlines()}
        removed = [
            line[1:].strip() for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")
        ]
        present += [f"{target.group(1)}: {line}" for line in removed if line and line in shipped]
    return present


def patch_status(tree: Path, patch: Path, release: str | None = None) -> Status:
    """Classifies a patch (or, for `release`, one of its variants) against a tree.

    applied: it reverse-applies (the tree already carries it, e.g. after `git am`).
    applies: it applies cleanly.
    upstream: it does neither, its header says the fix shipped in `release` or
      earlier, and the lines it removes are gone from the tree (upstream may spell a
      fix differently from the patch, as 0.2.5 did for 0001).
    conflicts: none of these; the detail names the file and hunk.
    The file tried is the one `file_for` names for `release`; it is named in `source`
    (git apply has no fuzz: a clean apply is exact).
    """
    patch = Path(patch)
    carrier = file_for(patch, release)
    via = "" if carrier == patch else f"variant {_source(carrier, patch)}"
    if _git_apply(tree, carrier, "--check", "--reverse").returncode == 0:
        return Status(patch.name, "applied", via, _source(carrier, patch))
    if _git_apply(tree, carrier, "--check").returncode == 0:
        return Status(patch.name, "applies", via, _source(carrier, patch))
    shipped = read_patch(patch).applied_upstream
    if shipped and release and version_tuple(release) >= version_tuple(shipped):
        still = _lines_still_present(tree, carrier)
        if not still:
            return Status(patch.name, "upstream", f"fixed upstream in {shipped}")
        return Status(
            patch.name, "conflicts", f"header says fixed upstream in {shipped}, but the tree still has {still[0]!r}"
        )
    detail = _conflict(_git_apply(tree, carrier, "--check").stderr)
    return Status(patch.name, "conflicts", f"{detail} ({via})" if via else detail)


def series_status(tree: Path, patches: list[Path], release: str | None = None) -> list[Status]:
    """Where each patch of a series stands against `tree`, each seen as the series stacks.

    A later patch may change lines an earlier one changed (0005 rewrites a line of 0002):
    alone, it would not apply to the release, and the earlier one would not reverse-apply
    to a tree that carries both. So the patches are classified on a scratch copy of the
    files they touch: from the last to the first, a patch the copy carries is "applied" and
    taken off it; then, in order, each patch carried is put back, and each other one is
    classified and, when it applies, applied to the copy, as `git am` would stack it.
    """
    if release is None:
        release = tree_release(tree)
    files = {f for patch in patches for f in read_patch(file_for(patch, release)).files}
    with tempfile.TemporaryDirectory(prefix="series-status-") as scratch:
        copy = Path(scratch) / "tree"
        for relative in files:
            if (Path(tree) / relative).is_file():
                (copy / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tree) / relative, copy / relative)
        copy.mkdir(exist_ok=True)
        found: dict[str, Status] = {}
        for patch in reversed(patches):
            carrier = file_for(patch, release)
            if _git_apply(copy, carrier, "--check", "--reverse").returncode == 0:
                via = "" if carrier == patch else f"variant {_source(carrier, patch)}"
                found[patch.name] = Status(patch.name, "applied", via, _source(carrier, patch))
                _git_apply(copy, carrier, "--reverse")
        statuses = []
        for patch in patches:
            status = found.get(patch.name) or patch_status(copy, patch, release)
            if status.state in ("applied", "applies"):
                # Put back what the tree carries, or stack what it would take, for the next one.
                _git_apply(copy, Path(patch).parent / status.source)
            statuses.append(status)
        return statuses


def added_tests(patch: Path) -> list[str]:
    """The optax test modules (`*_test.py`) a patch file touches: those the series adds."""
    return [file for file in read_patch(patch).files if file.endswith("_test.py")]


def tree_release(tree: Path) -> str | None:
    """The __version__ an optax tree declares (a checkout's 0.2.9.dev0 takes 0.2.8's variants)."""
    init = Path(tree) / "optax" / "__init__.py"
    found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", init.read_text()) if init.is_file() else None
    return found.group(1) if found else None


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def apply_patch(tree: Path, patch: Path) -> None:
    result = _git_apply(tree, patch)
    if result.returncode != 0:
        raise GateError(
            f"{patch.name} does not apply: {_conflict(result.stderr)}; regenerate the patch against this release"
        )


def blocking(statuses: list[Status]) -> Status | None:
    """The first patch that keeps the series from a tree: neither applicable, applied nor upstream."""
    return next((s for s in statuses if s.state not in ("applies", "applied", "upstream")), None)


def apply_series(tree: Path, statuses: list[Status], series_dir: Path) -> None:
    """Applies, in order, every patch `series_status` found applicable (the file it chose)."""
    for status in statuses:
        if status.state == "applies":
            apply_patch(tree, Path(series_dir) / status.source)


def describe(statuses) -> str:
    """'0001, 0002 (0.2.8 variant), 0003' or, when every patch is upstream, 'nothing'; a series
    that does not apply: 'does not apply: 0001 conflicts: <where>'."""
    statuses = [s if isinstance(s, Status) else Status(**s) for s in statuses]
    stuck = blocking(statuses)
    if stuck is not None:
        return f"does not apply: {stuck.patch.split('-', 1)[0]} {stuck.state}: {stuck.detail}"
    parts = []
    for status in statuses:
        number = status.patch.split("-", 1)[0]
        if status.state == "applies":
            parts.append(number + (f" ({status.source.split('/')[0]} variant)" if "/" in status.source else ""))
        else:
            parts.append(f"{number} {status.state}")
    applied = [p for p, s in zip(parts, statuses, strict=True) if s.state == "applies"]
    skipped = [p for p, s in zip(parts, statuses, strict=True) if s.state != "applies"]
    return (", ".join(applied) or "nothing") + (f"; {', '.join(skipped)}" if skipped else "")


def format_table(statuses: list[Status]) -> str:
    width = max(len(s.patch) for s in statuses)
    lines = [f"{'patch'.ljust(width)}  state      detail"]
    lines += [f"{s.patch.ljust(width)}  {s.state.ljust(9)}  {s.detail}".rstrip() for s in statuses]
    return "\n".join(lines)
