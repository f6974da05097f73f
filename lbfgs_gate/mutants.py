"""Every library hunk of the series is load-bearing: `python -m lbfgs_gate mutants --release R`.

Each patch is judged where the series puts it: on the release with the series applied up to
and including that patch (a *stage*; patches already upstream skipped). A later patch may make
an earlier hunk redundant (0003 stops the gradient of the memory, and with it 0001's scale;
0005 rewrites the weight 0002 made safe), so a hunk reversed on the whole series proves
nothing about its own patch; on its stage it does.

For each stage, first the stage intact: the suite's detectors that read the stage's defect
alone (marked with it, and with no defect the stage still has) and the test modules its patch
adds to optax must pass, judged by lbfgs_gate/verdict.py with only that defect judged, expected
absent. Then each hunk of the stage's patch that changes optax's library code (not the
`*_test.py` modules the patches add) is reversed alone, with `git apply -R`, on a copy of the
stage: a mutant, installed and verified file by file, and the same detectors run on it with the
gate's record plugin and hypothesis profile. The hunk is *caught* when that verdict is red and
the stage's defect reads present (reproduced by at least one detector, named in "by"). A hunk
that cannot be reversed alone, or whose stage intact does not read its defect absent, is red.

Reports: build/reports/mutants/<release>/verdict.json (and each stage's and mutant's pytest
log and record under <release>/<stage or mutant>/), and build/reports/mutants/verdict.json,
rebuilt after each release from the releases' verdicts made with the same series and suite:
green only when every release of the gate (the base and the newest) ran and every library hunk
was caught.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lbfgs_gate import (
    PATCHES_DIR,
    PROJECT_ROOT,
    SUITE_DIR,
    GateError,
    base_release,
    defects,
    inventory,
    newest_release,
    pipeline,
    runner,
    series,
    skeleton,
    tree,
    verdict,
    work_dir,
)
from lbfgs_gate.run_record import Outcome, Record

SESSION = "mutants"
HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def releases() -> tuple[str, ...]:
    """The releases a mutants run covers: the base and the newest (their own nox environments)."""
    return (base_release(), newest_release())


# --- hunks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hunk:
    """One hunk of one file of a patch, and the one-hunk patch that carries it alone."""

    patch: str  # the series' name of the patch (its variants share it)
    source: str  # the file the hunk was cut from, relative to the series' folder
    file: str  # the file of optax it changes
    index: int  # 1-based, within the patch
    header: str  # its @@ line
    diff: str  # a patch `git apply` takes: the file's diff header and this hunk only

    @property
    def removed(self) -> list[str]:
        return [line[1:] for line in self.diff.splitlines() if line.startswith("-") and not line.startswith("---")]

    @property
    def added(self) -> list[str]:
        return [line[1:] for line in self.diff.splitlines() if line.startswith("+") and not line.startswith("+++")]

    @property
    def label(self) -> str:
        return f"{self.patch.split('-', 1)[0]} hunk {self.index}"

    @property
    def slug(self) -> str:
        return f"{self.patch.split('-', 1)[0]}-hunk-{self.index}"


def split_hunks(patch_file: Path, patch: str | None = None, source: str | None = None) -> list[Hunk]:
    """Every hunk of a `git format-patch` file, each as a one-hunk patch.

    A hunk ends where its @@ header's line counts are used up, so that neither the mbox
    signature ("-- " and the git version) nor a removed line that looks like one is taken
    for part of it.
    """
    lines = Path(patch_file).read_text().splitlines(keepends=True)
    hunks: list[Hunk] = []
    position = 0
    while position < len(lines):
        if not lines[position].startswith("diff --git "):
            position += 1
            continue
        start = position
        position += 1
        while position < len(lines) and not lines[position].startswith(("@@ ", "diff --git ")):
            position += 1
        file_header = "".join(lines[start:position])
        target = re.search(r"^\+\+\+ b/(\S+)$", file_header, flags=re.M)
        while position < len(lines) and lines[position].startswith("@@ "):
            found = HUNK_HEADER.match(lines[position])
            if not found or not target:
                raise GateError(f"{Path(patch_file).name}: cannot read the hunk at line {position + 1}: regenerate it")
            old = int(found.group(2) if found.group(2) is not None else 1)
            new = int(found.group(4) if found.group(4) is not None else 1)
            body_start = position + 1
            position = body_start
            while (old > 0 or new > 0) and position < len(lines):
                kind = lines[position][:1]
                if kind in (" ", "\n"):
                    old, new = old - 1, new - 1
                elif kind == "-":
                    old -= 1
                elif kind == "+":
                    new -= 1
                elif kind != "\\":  # "\ No newline at end of file" counts for nothing
                    break
                position += 1
            if old != 0 or new != 0:
                raise GateError(
                    f"{Path(patch_file).name}: the hunk {lines[body_start - 1].strip()} is shorter than its header "
                    "says: regenerate the patch with git format-patch"
                )
            while position < len(lines) and lines[position].startswith("\\"):
                position += 1
            hunks.append(
                Hunk(
                    patch=patch or Path(patch_file).name,
                    source=source or Path(patch_file).name,
                    file=target.group(1),
                    index=len(hunks) + 1,
                    header=lines[body_start - 1].rstrip("\n"),
                    diff=file_header + "".join(lines[body_start - 1 : position]),
                )
            )
    return hunks


def is_library(file: str) -> bool:
    """optax's library code: not the test modules (the patches add `*_test.py` files)."""
    return file.endswith(".py") and not file.endswith("_test.py")


def library_hunks(patched_tree: Path, series_file: Path) -> list[Hunk]:
    """The library hunks of every patch applied to a tree `tree.prepare` built, in series order."""
    found = []
    for status in tree.statuses(patched_tree):
        if status.state != "applies":
            continue  # already upstream in this release: nothing of it in the tree to reverse
        patch_file = Path(series_file).parent / status.source
        found += [h for h in split_hunks(patch_file, status.patch, status.source) if is_library(h.file)]
    return found


# --- stages: the series up to each patch ----------------------------------------------


@dataclass(frozen=True)
class Stage:
    """The series applied up to and including one of its patches, on one release."""

    patch: str  # the series' name of the last patch applied
    source: str  # its file (the patch or its variant)
    defect: str | None  # the defect it fixes; None for an option (defects.OPTIONS)
    sources: tuple[str, ...]  # every file applied, in series order, ending with `source`
    fixed: frozenset[str]  # the defects no longer in the tree: its patches' and those already upstream

    @property
    def label(self) -> str:
        return self.patch.split("-", 1)[0]

    @property
    def judged(self) -> str:
        """What the stage's tests judge: its defect, or the option it adds."""
        return self.defect or f"option {defects.OPTIONS[self.patch].argument}"

    @property
    def slug(self) -> str:
        return f"{self.label}-intact"

    def expectation(self, nodes: dict[str, list[str]]) -> verdict.Expectation:
        """Only this stage's defect is judged, expected absent, on exactly `nodes`; for an option,
        its PASS_TO_PASS tests must pass (no defect judged; every other rule kept)."""
        if self.defect is None:
            return verdict.Expectation(inventory=nodes, only=frozenset())
        return verdict.Expectation(detectors_only=True, inventory=nodes, only=frozenset({self.defect}))


def prefixes(statuses) -> list[Stage]:
    """One stage per patch applied to the release, in series order."""
    stages, sources, fixed = [], [], set()
    for status in statuses:
        if status.patch in defects.OPTIONS:
            # An option fixes no defect: its stage is judged by its PASS_TO_PASS tests.
            if status.state == "applies":
                sources.append(status.source)
                stages.append(Stage(status.patch, status.source, None, tuple(sources), frozenset(fixed)))
            continue
        fixed.add(defect_of(status.patch))  # a patch already upstream: its defect is not in the release
        if status.state != "applies":
            continue
        sources.append(status.source)
        stages.append(Stage(status.patch, status.source, defect_of(status.patch), tuple(sources), frozenset(fixed)))
    return stages


def stage_hunks(stage: Stage, series_file: Path) -> list[Hunk]:
    """The library hunks of the stage's own patch."""
    patch_file = Path(series_file).parent / stage.source
    return [h for h in split_hunks(patch_file, stage.patch, stage.source) if is_library(h.file)]


def detectors(stage: Stage, expected: dict[str, list[str]]) -> dict[str, list[str]]:
    """The suite's detectors that read the stage's defect alone: marked with it, and with no
    defect the stage's tree still has (a test also marked with a later patch's defect would
    reproduce through that one). For an option: its module of PASS_TO_PASS tests, whole."""
    if stage.defect is None:
        module = f"lbfgs_gate/suite/{defects.OPTIONS[stage.patch].tests}::"
        return {nodeid: names for nodeid, names in expected.items() if nodeid.startswith(module)}
    return {nodeid: names for nodeid, names in expected.items() if stage.defect in names and set(names) <= stage.fixed}


def build_prefix(pristine: Path, stage: Stage, series_file: Path, destination: Path) -> Path:
    """`destination`: the release as published with the stage's patches applied, in order."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(pristine, destination, ignore=shutil.ignore_patterns(tree.SEAL, "__pycache__"))
    for source in stage.sources:
        series.apply_patch(destination, Path(series_file).parent / source)
    return destination


# --- mutants ----------------------------------------------------------------------------


def _git(tree_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    git = series.require_tool("git")
    env = dict(os.environ)
    # The tree sits inside this project's repository (build/): git must not take it for part of it.
    env["GIT_CEILING_DIRECTORIES"] = str(Path(tree_dir).resolve().parent)
    return subprocess.run([git, *args], cwd=tree_dir, env=env, input=stdin, capture_output=True, text=True, check=False)


def changed_lines(before: Path, after: Path) -> tuple[list[str], list[str]]:
    """(lines removed, lines added) going from file `before` to file `after` (git diff, no context)."""
    result = subprocess.run(
        [series.require_tool("git"), "diff", "--no-index", "--no-color", "-U0", str(before), str(after)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise GateError(f"git diff could not compare {before} and {after}: {result.stderr.strip()}")
    removed, added = [], []
    for line in result.stdout.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
    return removed, added


@dataclass(frozen=True)
class Reversal:
    ok: bool
    detail: str  # how it was reversed, or why it could not be


def reverse_hunk(tree_dir: Path, hunk: Hunk) -> Reversal:
    """Reverses one hunk in place (`git apply -R` of its one-hunk patch), checked.

    With all its context first; if a later patch rewrote a context line, with less context
    (`-C2` to `-C0`), and then only if the file now differs from before by exactly the hunk's
    own lines, reversed (what the hunk added removed, what it removed restored): less context
    must not land the reversal anywhere else.
    """
    target = Path(tree_dir) / hunk.file
    if not target.is_file():
        return Reversal(False, f"{hunk.file} is not in the tree")
    before = Path(tempfile.mkdtemp(prefix="hunk-")) / "before"
    try:
        shutil.copyfile(target, before)
        errors = []
        for context in (None, 2, 1, 0):
            args = ["apply", "-R", *([] if context is None else [f"-C{context}"])]
            result = _git(tree_dir, *args, stdin=hunk.diff)
            if result.returncode != 0:
                errors.append(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "git apply failed")
                continue
            removed, added = changed_lines(before, target)
            if (removed, added) == (hunk.added, hunk.removed):
                how = "git apply -R" if context is None else f"git apply -R -C{context} (a later patch rewrote context)"
                return Reversal(True, how)
            shutil.copyfile(before, target)  # landed, but not as the hunk alone: undo
            errors.append(f"-C{context} changed other lines than the hunk's")
        return Reversal(False, f"cannot be reversed alone: {errors[0]}")
    finally:
        shutil.rmtree(before.parent, ignore_errors=True)


def build_mutant(patched_tree: Path, hunk: Hunk, destination: Path) -> Reversal:
    """`destination`: a copy of `patched_tree` with `hunk` reversed (removed if it cannot be)."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(patched_tree, destination)
    reversal = reverse_hunk(destination, hunk)
    if not reversal.ok:
        shutil.rmtree(destination, ignore_errors=True)
    return reversal


# --- judging ----------------------------------------------------------------------------


def defect_of(patch: str) -> str:
    by_patch = {d.patch: d.name for d in defects.DEFECTS.values() if d.patch}
    if patch not in by_patch:
        raise GateError(f"{patch} fixes no defect named in lbfgs_gate/defects.py: add its defect there")
    return by_patch[patch]


def symptom_by(record: Record, stage: Stage) -> list[str]:
    """Node ids of the stage's tests that showed its symptom: its defect's detectors that reproduced
    it; for an option, its PASS_TO_PASS tests that failed their own assertion (an AssertionError in
    the call, not a NameError or TypeError: those break the code) or a detector that reproduced."""
    if stage.defect is not None:
        return reproduced_by(record, stage.defect)
    return [
        nodeid
        for nodeid, test in sorted(record.tests.items())
        if test.outcome == Outcome.REPRODUCED
        or (test.outcome == Outcome.CRASHED and test.phase == "call" and test.exception == "AssertionError")
    ]


def reproduced_by(record: Record, defect: str) -> list[str]:
    """Node ids of the detectors of `defect` that raised its symptom."""
    found = []
    for nodeid, test in sorted(record.tests.items()):
        names = record.inventory.get(nodeid, test.defects)
        if defect in names and test.outcome == Outcome.REPRODUCED:
            found.append(nodeid)
    return found


def judge_mutant(hunk: Hunk, stage: Stage, judged, by: list[str], release: str) -> dict:
    """The row of one mutant: caught when its verdict is red and the stage's defect was
    reproduced (`by`: the detectors that reproduced it)."""
    caught = (not judged.green) and bool(by)
    return {
        **_row(hunk, release),
        "defect": stage.judged,
        "caught": caught,
        "by": by,
        "verdict": judged.verdict,
        "reasons": judged.reasons[:8],
    }


def _original_name(nodeid: str, copies: str, originals: dict[str, str]) -> str:
    """An optax-side test's node id with its file as in optax (runner copies the files out to run them)."""
    if not nodeid.startswith(copies):
        return nodeid
    file, separator, rest = nodeid[len(copies) :].partition("::")
    # The copy keeps the file's path in optax (optax/_src/x_test.py) or, once, its name alone.
    return originals.get(file, originals.get(Path(file).name, file)) + separator + rest


def _row(hunk: Hunk, release: str) -> dict:
    return {"patch": hunk.patch, "source": hunk.source, "file": hunk.file, "hunk": hunk.header, "release": release}


# --- reports ----------------------------------------------------------------------------


def reports_root() -> Path:
    return work_dir() / "reports" / SESSION


def clear_reports(release: str | None) -> None:
    """Before anything else: the combined verdict and the release's folder go, whatever follows."""
    root = reports_root()
    (root / "verdict.json").unlink(missing_ok=True)
    (root / "report.md").unlink(missing_ok=True)
    if release and re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", release):
        shutil.rmtree(root / release, ignore_errors=True)


def fingerprint(series_file: Path) -> str:
    """What a release's verdict was made with: the series (every variant) and the suite's detectors.

    The combined verdict only joins releases run with the same of both."""
    digest = hashlib.sha256()
    folders = [Path(series_file).parent, SUITE_DIR]
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def format_table(rows: list[dict]) -> str:
    header = ["release", "patch", "file", "hunk", "caught", "by"]
    lines = [header]
    for row in rows:
        by = ", ".join(nodeid.split("/")[-1] for nodeid in row["by"][:3])
        if len(row["by"]) > 3:
            by += f" (+{len(row['by']) - 3})"
        missed = {"failed": "NOT REVERSIBLE", "not tried": "STAGE RED"}.get(row.get("reversal"), "NO")
        caught = "yes" if row["caught"] else missed
        lines.append(
            [row["release"], row["patch"].split("-", 1)[0], row["file"].split("/")[-1], row["hunk"], caught, by or "-"]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def markdown_table(rows: list[dict]) -> str:
    lines = ["| release | patch | file | hunk | caught | by |", "|---|---|---|---|---|---|"]
    for row in rows:
        by = "<br>".join(f"`{nodeid}`" for nodeid in row["by"]) or "-"
        caught = "yes" if row["caught"] else "**no**"
        number = row["patch"].split("-", 1)[0]
        lines.append(f"| {row['release']} | {number} | `{row['file']}` | `{row['hunk']}` | {caught} | {by} |")
    return "\n".join(lines) + "\n"


def _document(rows: list[dict], reasons: list[str], **extra) -> dict:
    return {"session": SESSION, "verdict": "red" if reasons else "green", "reasons": reasons, **extra, "hunks": rows}


def _reasons(rows: list[dict]) -> list[str]:
    reasons = []
    for row in rows:
        if row["caught"]:
            continue
        if row.get("reversal") in ("failed", "not tried"):
            reasons.append(f"{row['release']} {row['patch']} {row['hunk']}: {row['detail']}")
        else:
            reasons.append(
                f"{row['release']} {row['patch']} {row['hunk']} not caught: reversed, the suite does not read "
                f"{row.get('defect', 'its defect')} present (verdict {row.get('verdict')})"
            )
    return reasons


def write_combined(series_file: Path) -> dict:
    """build/reports/mutants/verdict.json from the releases' verdicts made with this series and suite."""
    root = reports_root()
    current = fingerprint(series_file)
    rows, reasons, ran = [], [], []
    for release in releases():
        path = root / release / "verdict.json"
        document = json.loads(path.read_text()) if path.is_file() else None
        if document is None or document.get("fingerprint") != current:
            state = "not run" if document is None else "run with another series or suite"
            reasons.append(f"{release}: {state} (nox -s mutants runs both releases)")
            continue
        ran.append(release)
        rows += document["hunks"]
        reasons += document["reasons"] or ([] if document["verdict"] == "green" else [f"{release}: red"])
    if not rows and not reasons:
        reasons.append("no library hunk to mutate")
    combined = _document(rows, reasons, releases=ran, fingerprint=current)
    root.mkdir(parents=True, exist_ok=True)
    (root / "verdict.json").write_text(json.dumps(combined, indent=2) + "\n")
    status = "GATE GREEN" if not reasons else f"GATE RED: {reasons[0]}"
    (root / "report.md").write_text(f"# {SESSION}: {status}\n\n{markdown_table(rows)}")
    return combined


# --- the session ------------------------------------------------------------------------


def run(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None, only: str | None = None) -> int:
    """Builds, installs and judges every mutant of `release`; writes the verdicts; 0 green, 1 red.
    `only` (a patch number, e.g. 0007): that stage alone, a partial run, whose verdict is red."""
    runner.check_pytest_args(pytest_args, SESSION)
    runner.check_environment(SESSION)
    started = time.perf_counter()
    build = pipeline.patched(release, series_file, sdist_dir)
    folder = reports_root() / release
    folder.mkdir(parents=True, exist_ok=True)
    modules = pipeline.series_test_modules(build, series_file)
    expected = inventory.expected()
    stages = prefixes(build.statuses)
    if only is not None:
        labels = [stage.label for stage in stages]
        if only not in labels:
            raise GateError(f"--stage {only}: not a stage of optax {release} (its stages: {', '.join(labels)})")
        stages = [stage for stage in stages if stage.label == only]
    hunks = {stage.patch: stage_hunks(stage, series_file) for stage in stages}
    print(f"{sum(map(len, hunks.values()))} library hunks in the series as applied to optax {release}", flush=True)
    rows, documentation = [], []
    try:
        for stage in stages:
            context = _StageRun(release, stage, series_file, build, modules, expected, folder, pytest_args)
            stage_rows, stage_documentation = context.judge(hunks[stage.patch])
            rows += stage_rows
            documentation += stage_documentation
    finally:
        # The environment goes back to the patched release, as the other sessions leave it.
        tree.install_and_verify(build.tree)
    reasons = _reasons(rows)
    if only is not None:
        reasons.append(f"only stage {only} was run (--stage): a partial run, not the series' verdict")
    if not rows:
        reasons.append(f"no library hunk applied to optax {release}")
    document = _document(
        rows,
        reasons,
        documentation=documentation,
        release=release,
        optax=build.label,
        fingerprint=fingerprint(series_file),
        seconds=round(time.perf_counter() - started, 1),
    )
    (folder / "verdict.json").write_text(json.dumps(document, indent=2) + "\n")
    print("\n" + format_table(rows), flush=True)
    print(f"reports: {os.path.relpath(folder)}", flush=True)
    combined = write_combined(series_file)
    own = f"{SESSION} {release}"
    print(f"GATE GREEN: {own}" if not reasons else f"GATE RED: {own}: {reasons[0]}", flush=True)
    if combined["verdict"] == "green":
        print(f"GATE GREEN: {SESSION}", flush=True)
    elif not reasons:
        print(f"combined verdict (build/reports/{SESSION}/verdict.json): {combined['reasons'][0]}", flush=True)
    else:
        print(f"GATE RED: {SESSION}: {reasons[0]}", flush=True)
    return 0 if not reasons else 1


class _StageRun:
    """One stage of one release: the stage intact, then each of its patch's hunks reversed."""

    def __init__(self, release, stage, series_file, build, modules, expected, folder, pytest_args):
        self.release, self.stage, self.folder, self.pytest_args = release, stage, folder, pytest_args
        self.nodes = detectors(stage, expected)
        if stage.defect is None:
            self.own_modules = series.added_tests(Path(series_file).parent / stage.source)
        else:
            self.own_modules = [m for m, defect in modules.items() if defect == stage.defect]
        self.originals = {Path(m).name: m for m in (*modules, *self.own_modules)}
        scratch = work_dir() / "mutants" / f"optax-{release}-stage"
        self.tree = build_prefix(build.pristine, stage, series_file, scratch)
        self.up_to = f"optax {release} + the series up to {stage.label}"

    def run(self, optax_tree: Path, slug: str, label: str):
        """Installs `optax_tree`, runs the stage's detectors on it: (its verdict, its records)."""
        tree.install_and_verify(optax_tree)
        plan = skeleton.Plan(
            session=f"{SESSION} {label}",
            optax=label,
            expectation=self.stage.expectation(self.nodes),
            suite=sorted(self.nodes),
            optax_tests=tuple(self.own_modules),
            tree=optax_tree,
            defect_modules={Path(m).name: self.stage.defect for m in self.own_modules if self.stage.defect},
            label=f"{len(self.nodes)} tests of {self.stage.judged}",
        )
        reports = skeleton.clear(self.folder / slug)
        return skeleton.run_session(plan, reports, self.pytest_args, write=False, show=False)

    def reproducing(self, records: dict[str, Record], slug: str) -> list[str]:
        """The detectors that reproduced the stage's defect; optax-side tests (run from a copy in
        the reports) named by their file in optax."""
        copies = os.path.relpath(self.folder / slug / "optax-tests", PROJECT_ROOT) + "/"
        found = [nodeid for record in records.values() for nodeid in symptom_by(record, self.stage)]
        return [_original_name(nodeid, copies, self.originals) for nodeid in found]

    def judge(self, hunks: list[Hunk]) -> tuple[list[dict], list[dict]]:
        """(the rows of the stage's code hunks, the hunks that change documentation only)."""
        stage, release = self.stage, self.release
        wanted = "must read absent" if stage.defect else "its tests must pass"
        print(f"\n== {self.up_to}, intact: {stage.judged} {wanted}", flush=True)
        control, _ = self.run(self.tree, stage.slug, self.up_to)
        state = control.defects[stage.defect].outcome if stage.defect else "tests"
        print(f"{self.up_to}: {stage.judged} {state} ({control.verdict})", flush=True)
        problem = None if control.green else control.reasons[0]
        if not self.nodes:
            problem = f"no test of the suite reads {stage.judged} alone up to {stage.label}"
        rows, documentation, broken, code = [], [], [], []
        for hunk in hunks:
            if problem:
                detail = f"the series up to {stage.label} does not hold {stage.judged}: {problem}"
                rows.append({**_row(hunk, release), "defect": stage.judged, "caught": False, "by": []})
                rows[-1].update(reversal="not tried", detail=detail)
                continue
            mutant = work_dir() / "mutants" / f"optax-{release}-{hunk.slug}"
            reversal = build_mutant(self.tree, hunk, mutant)
            print(f"\n== {hunk.label} ({hunk.file} {hunk.header}) on {self.up_to}: {reversal.detail}", flush=True)
            if not reversal.ok:
                failed = {"caught": False, "by": [], "reversal": "failed", "detail": reversal.detail}
                rows.append({**_row(hunk, release), **failed})
                continue
            if same_code(self.tree / hunk.file, mutant / hunk.file):
                print(f"{hunk.label}: documentation only (the module's code, docstrings aside, is the same)")
                documentation.append({**_row(hunk, release), "detail": "docstrings or comments only"})
                continue
            code.append(hunk)
            label = f"{self.up_to}, {hunk.label} of {hunk.source} reversed ({hunk.file} {hunk.header})"
            judged, records = self.run(mutant, hunk.slug, label)
            by = self.reproducing(records, hunk.slug)
            row = {**judge_mutant(hunk, stage, judged, by, release), "reversal": reversal.detail}
            error = breaks(records, stage)
            if not row["caught"] and error:
                broken.append((hunk, row, error))
            rows.append(row)
            what = "caught" if row["caught"] else f"breaks the code alone ({error})" if error else "NOT caught"
            print(f"{hunk.label}: {what} ({len(row['by'])} detectors)", flush=True)
        if broken:
            self.judge_together(broken, code)
        return rows, documentation

    def judge_together(self, broken, code) -> None:
        """Hunks that each, reversed alone, break the code (the detectors raise another error than
        the defect's symptom: a field, a name or a function the rest of the patch uses is gone)
        are reversed together: the change they make as one must be caught. When they still break
        the code together (an argument's signature and the body that reads it: 0007), every code
        hunk of the patch is reversed together: the patch's change as a whole must be caught."""
        hunks = [hunk for hunk, _, _ in broken]
        caught, by, detail, error = self._reverse_together(hunks, "hunks-together")
        if not caught and error and len(code) > len(hunks):
            print(f"{self.stage.label}: together they still break the code ({error}): every code hunk next", flush=True)
            hunks = code
            caught, by, detail, error = self._reverse_together(code, "code-together")
        for _, row, alone in broken:
            row.update(caught=caught, by=by, together=[hunk.header for hunk in hunks])
            row["detail"] = f"alone it breaks the code ({alone}); {detail}"

    def _reverse_together(self, hunks, slug: str):
        """Reverses `hunks` together on a copy of the stage and runs its tests:
        (caught, the tests that showed the symptom, a detail for the rows, the error that broke it)."""
        stage = self.stage
        names = ", ".join(str(hunk.index) for hunk in hunks)
        together = work_dir() / "mutants" / f"optax-{self.release}-{stage.label}-{slug}"
        shutil.rmtree(together, ignore_errors=True)
        shutil.copytree(self.tree, together)
        reversals = [reverse_hunk(together, hunk) for hunk in reversed(hunks)]
        print(f"\n== {stage.label} hunks {names} reversed together on {self.up_to}", flush=True)
        caught, by, error = False, [], None
        if all(r.ok for r in reversals):
            label = f"{self.up_to}, {stage.label} hunks {names} reversed together"
            judged, records = self.run(together, f"{stage.label}-{slug}", label)
            by = self.reproducing(records, f"{stage.label}-{slug}")
            caught = (not judged.green) and bool(by)
            error = None if caught else breaks(records, stage)
            detail = f"reversed together with {stage.label} hunks {names}: verdict {judged.verdict}"
        else:
            detail = next(r.detail for r in reversals if not r.ok)
        print(f"{stage.label} hunks {names} together: {'caught' if caught else 'NOT caught'}", flush=True)
        return caught, by, detail, error


def same_code(before: Path, after: Path) -> bool:
    """Whether two versions of a module differ in docstrings or comments only (same AST otherwise)."""

    def code(path: Path) -> str:
        module = ast.parse(Path(path).read_text())
        for node in ast.walk(module):
            body = getattr(node, "body", None)
            if (
                isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
        return ast.dump(module)

    try:
        return code(before) == code(after)
    except SyntaxError:
        return False


def breaks(records: dict[str, Record], stage: Stage) -> str | None:
    """The error a mutant's tests raised instead of the stage's symptom, if none showed it."""
    errors = []
    for record in records.values():
        if symptom_by(record, stage):
            return None
        for nodeid, test in record.tests.items():
            names = record.inventory.get(nodeid, test.defects)
            if (stage.defect is None or stage.defect in names) and test.outcome == Outcome.CRASHED and test.exception:
                errors.append(test.exception)
        if record.collection_errors:
            errors.append("collection error")  # the module did not import: the code is broken
    return errors[0] if errors else None


def add_command(commands) -> None:
    """Registers `python -m lbfgs_gate mutants` on the CLI's subcommands."""
    command = commands.add_parser("mutants", help="reverse each library hunk of the series alone; each must be caught")
    # Not required by argparse: the reports are cleared before the release is checked.
    command.add_argument("--release", help="the optax release installed here: the base or the newest")
    command.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    command.add_argument("--sdist-dir", help="folder holding optax-<release>.tar.gz (offline use)")
    command.add_argument("--stage", metavar="NNNN", help="one stage alone (a partial run: its verdict is red)")
    command.add_argument("pytest_args", nargs="*", help="pytest arguments for the suite (after --)")

    def mutants(args) -> int:
        clear_reports(args.release)
        if args.release not in releases():
            raise GateError(
                f"--release {args.release or 'RELEASE'} is needed, one of {', '.join(releases())}: "
                "the mutants session runs the base and the newest release"
            )
        return run(args.release, args.series, args.pytest_args, args.sdist_dir, args.stage)

    command.set_defaults(run=mutants)
