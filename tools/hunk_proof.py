"""Every code hunk of the series is load-bearing: each, reversed alone, must be caught.

    python tools/hunk_proof.py [--release R] [--patch NNNN] [-- PYTEST_ARGS]

Run when a patch changes (`nox -s hunk_proof`), with optax R installed. A patch is judged on its
stage (the release with the series up to it): intact, its detectors and the test modules it adds
must be green (lbfgs_gate/verdict.py, on its defect alone); each hunk of its library code reversed
alone (`git apply -R`) is caught when the verdict reads the defect present, or for an option (0007)
when one of its PASS_TO_PASS tests fails. The stage that fixes the last defect (0006) is also judged
on the quick comparison with the release (lbfgs-gate check's loops of test_never_worse.py, against
the release as published recorded here): its hunks that only keep the default's derivative exact
are caught when one of those loops falls short. A hunk with the same AST (docstrings aside) is docs only;
one that alone only breaks the code is judged with its patch's code hunks reversed together.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lbfgs_gate import PATCHES_DIR, GateError, check, defects, inventory, pipeline, runner, series, skeleton  # noqa: E402, I001
from lbfgs_gate import tree, verdict, work_dir  # noqa: E402
from lbfgs_gate.run_record import Outcome  # noqa: E402

SESSION = "hunk_proof"
HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class Hunk:
    file: str  # the file of optax it changes
    index: int  # 1-based, within its patch
    line: int  # where it starts in the patched file
    diff: str  # the file's diff header and this hunk alone: a patch `git apply` takes


def split_hunks(text: str) -> list[Hunk]:
    """Every hunk of a `git format-patch` file as a one-hunk patch. A hunk ends where the line
    counts of its @@ header are used up: the mbox signature ("-- ", the git version) is not in it."""
    lines, hunks, header, position = text.splitlines(keepends=True), [], "", 0
    while position < len(lines):
        line = lines[position]
        if line.startswith("diff --git "):
            header, position = line, position + 1
            while position < len(lines) and not lines[position].startswith(("@@ ", "diff --git ")):
                header, position = header + lines[position], position + 1
            continue
        found, position = HUNK.match(line) if header else None, position + 1
        if not found:
            continue
        target = re.search(r"^\+\+\+ b/(\S+)$", header, flags=re.M)
        old, new, start = int(found[1] or 1), int(found[3] or 1), position - 1
        while position < len(lines) and lines[position][:1] in " -+\\\n" and (old or new or lines[position][0] == "\\"):
            kind = lines[position][:1]
            old, new, position = old - (kind in " -\n"), new - (kind in " +\n"), position + 1
        if not target or old or new:
            raise GateError(f"cannot read the hunk {line.strip()}: regenerate the patch with git format-patch")
        hunks.append(Hunk(target[1], len(hunks) + 1, int(found[2]), header + "".join(lines[start:position])))
    return hunks


def is_library(file: str) -> bool:  # optax's library code, not the test modules the patches add
    return file.endswith(".py") and not file.endswith("_test.py")


def docs_only(before: str, after: str) -> bool:
    """Whether two versions of a module differ in docstrings or comments only (the same AST)."""

    def code(source: str) -> str:
        module = ast.parse(source)
        for node in ast.walk(module):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                if ast.get_docstring(node, clean=False) is not None:
                    node.body = node.body[1:] or [ast.Pass()]
        return ast.dump(module)

    return code(before) == code(after)


def reverse(optax_tree: Path, hunk: Hunk) -> str | None:
    """Reverses one hunk in place (`git apply -R`): None, or why it could not be."""
    # The tree may sit inside this project's repository (build/): git must not take it for part of it.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(Path(optax_tree).resolve().parent)}
    command = [series.require_tool("git"), "apply", "-R"]
    result = subprocess.run(command, cwd=optax_tree, env=env, input=hunk.diff, text=True, capture_output=True)
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["git apply -R failed"])[-1]


def copy(source: Path, destination: Path) -> Path:
    shutil.rmtree(destination, ignore_errors=True)
    return Path(shutil.copytree(source, destination, ignore=shutil.ignore_patterns(tree.SEAL, "__pycache__")))


@dataclass(frozen=True)
class Stage:  # the series up to and including one patch, on one release
    number: str  # the patch's number, 0001
    sources: tuple[str, ...]  # the files applied in order (patches or variants), ending with its own
    defect: str | None  # None: an option
    fixed: frozenset[str]  # the defects no longer in the stage's tree


def stages(statuses: list[series.Status]) -> list[Stage]:
    by_patch = {d.patch: d.name for d in defects.DEFECTS.values() if d.patch}
    found, sources, fixed = [], (), set()
    for status in statuses:
        defect = by_patch.get(status.patch)
        if defect is None and status.patch not in defects.OPTIONS:
            raise GateError(f"{status.patch} fixes no defect of lbfgs_gate/defects.py and is no option: add it there")
        fixed |= {defect} - {None}  # a patch already upstream: its defect is not in the release either
        if status.state == "applies":
            sources += (status.source,)
            found.append(Stage(status.patch.split("-", 1)[0], sources, defect, frozenset(fixed)))
    return found


# The defects the series fixes; a stage whose tree has them all fixed has the series' default whole.
PATCHED = frozenset(d.name for d in defects.DEFECTS.values() if d.patch)


class Records:
    """The release's errors on the quick comparison, recorded from the release as published once,
    when a stage first needs them (check.quick_release_records: reused across runs as check's are)."""

    def __init__(self, pristine: Path):
        self.pristine, self.found = pristine, None

    def __call__(self) -> dict[str, str]:
        self.found = self.found or check.quick_release_records(self.pristine)
        return self.found


class Proof:
    """One stage's tests, as the gate runs them: `run` gives the verdict and the tests that showed the symptom."""

    def __init__(self, release: str, stage: Stage, series_dir: Path, pytest_args: list[str], records: Records):
        self.release, self.stage, self.pytest_args = release, stage, pytest_args
        expected, self.modules = inventory.expected(), series.added_tests(series_dir / stage.sources[-1])
        self.compared, self.records = {}, {}
        if stage.defect:
            self.nodes = {n: v for n, v in expected.items() if stage.defect in v and set(v) <= stage.fixed}
            if stage.fixed >= PATCHED:  # the default whole: its loops that pass as published must pass
                self.compared = {n: expected[n] for n in check.QUICK_COMPARISON if not expected[n]}
                self.nodes, self.records = {**self.nodes, **self.compared}, records()
        else:  # an option: its module of PASS_TO_PASS tests, whole
            option = next(o for o in defects.OPTIONS.values() if o.patch.startswith(stage.number))
            self.nodes = {n: v for n, v in expected.items() if n.startswith(f"lbfgs_gate/suite/{option.tests}::")}
        # Detectors only, but for the comparison's loops: each must run (not run is red).
        only, detectors_only = frozenset({stage.defect} - {None}), stage.defect is not None and not self.compared
        self.expectation = verdict.Expectation(detectors_only=detectors_only, inventory=self.nodes, only=only)

    def run(self, optax_tree: Path, name: str) -> tuple[verdict.Verdict, list[str]]:
        tree.install_and_verify(optax_tree)
        plan = skeleton.Plan(
            session=SESSION,
            optax=f"optax {self.release} + the series up to {self.stage.number}, {name}",
            expectation=self.expectation,
            suite=sorted(self.nodes),
            optax_tests=tuple(self.modules),
            tree=optax_tree,
            defect_modules={Path(m).name: self.stage.defect for m in self.modules if self.stage.defect},
            env_extra=self.records,
        )
        folder = skeleton.clear(work_dir() / "reports" / SESSION / self.release / f"{self.stage.number}-{name}")
        judged, records = skeleton.run_session(plan, folder, self.pytest_args, write=False, show=False)
        tests = [test for record in records.values() for test in record.tests.values()]
        # A PASS_TO_PASS test's own check failed (DefectObserved, or optax's assertions in the call).
        symptom = lambda t: t.outcome == Outcome.REPRODUCED or (t.phase, t.exception) == ("call", "AssertionError")  # noqa: E731
        if self.stage.defect:  # the verdict reads the defect present (its detectors reproduced it), or
            # a loop of the comparison falls short of the release
            shown = judged.defects[self.stage.defect].outcome.startswith("present")
            detectors = [t.nodeid for t in tests if t.outcome == Outcome.REPRODUCED and t.nodeid not in self.compared]
            short = [t.nodeid for t in tests if t.nodeid in self.compared and symptom(t)]
            return judged, (detectors if shown else []) + short
        # An option: its tests' own checks failed.
        return judged, [] if judged.green else [t.nodeid for t in tests if symptom(t)]


def named(nodeids: list[str]) -> str:
    names = [nodeid.split("optax-tests/")[-1].split("/")[-1] for nodeid in nodeids]
    return ", ".join(names[:2]) + (f" (+{len(names) - 2})" if len(names) > 2 else "")


def prove(release: str, series_file: Path, pytest_args: list[str], only: str | None) -> int:
    build = pipeline.patched(release, series_file)
    series_dir, scratch = Path(series_file).parent, work_dir() / SESSION
    shutil.rmtree(work_dir() / "reports" / SESSION / release, ignore_errors=True)
    chosen = [stage for stage in stages(list(build.statuses)) if only in (None, stage.number)]
    if not chosen:
        raise GateError(f"--patch {only}: no patch of that number applies to optax {release}")
    counts, records = {"caught": 0, "NOT caught": 0, "docs only, not judged": 0}, Records(build.pristine)

    def say(hunk: Hunk, stage: Stage, outcome: str, detail: str = "") -> None:
        counts[outcome] += 1
        print(f"{release} {stage.number} {hunk.file} hunk {hunk.index} (line {hunk.line}): {outcome}{detail}")

    try:
        for stage in chosen:
            proof = Proof(release, stage, series_dir, pytest_args, records)
            intact = copy(build.pristine, scratch / f"optax-{release}-stage")
            for source in stage.sources:
                series.apply_patch(intact, series_dir / source)
            judged, _ = proof.run(intact, "intact")
            print(f"{release} {stage.number} intact: {judged.verdict}", *judged.reasons[:1])
            code, broken = [], []
            for hunk in [h for h in split_hunks((series_dir / stage.sources[-1]).read_text()) if is_library(h.file)]:
                mutant = copy(intact, scratch / f"optax-{release}-hunk")
                why = reverse(mutant, hunk)
                if why:
                    say(hunk, stage, "NOT caught", f": cannot be reversed alone ({why})")
                elif docs_only((intact / hunk.file).read_text(), (mutant / hunk.file).read_text()):
                    say(hunk, stage, "docs only, not judged")
                elif not judged.green:
                    say(hunk, stage, "NOT caught", f": the stage intact is red ({judged.reasons[0]})")
                else:
                    code.append(hunk)
                    alone, by = proof.run(mutant, f"hunk-{hunk.index}")
                    if by:
                        say(hunk, stage, "caught", f" by {named(by)}")
                    elif alone.green:
                        say(hunk, stage, "NOT caught", ": the verdict stays green")
                    else:
                        broken.append((hunk, alone.reasons[0]))
            if broken:  # each breaks the code alone: the patch's code reversed as a whole must be caught
                together = copy(intact, scratch / f"optax-{release}-together")
                why = next(filter(None, (reverse(together, hunk) for hunk in reversed(code))), None)
                by = proof.run(together, "together")[1] if why is None else []
                result = f"by {named(by)}" if by else why or "the verdict does not read it"
                for hunk, reason in broken:
                    detail = f" with the {len(code)} code hunks of {stage.number} reversed together, {result}"
                    say(hunk, stage, "caught" if by else "NOT caught", f"{detail} (alone it breaks the code: {reason})")
    finally:
        tree.install_and_verify(build.tree)  # the environment goes back to the patched release
    print(f"{release}: " + ", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
    return 0 if counts["caught"] and not counts["NOT caught"] else 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message} (usage: python tools/hunk_proof.py [--release R] [--patch NNNN] [-- PYTEST])\n")


def main(argv: list[str]) -> int:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", help="the optax release installed here (default: its version)")
    parser.add_argument("--patch", metavar="NNNN", help="that patch's stage alone")
    parser.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    own, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args, started = parser.parse_args(own), time.perf_counter()
    sys.stdout.reconfigure(line_buffering=True)  # each line as it comes, between the runner's
    try:
        runner.check_pytest_args(pytest_args, SESSION)
        runner.check_environment(SESSION)
        release = args.release or version("optax")
        code = prove(release, args.series, pytest_args, args.patch)
    except (GateError, PackageNotFoundError) as error:
        print(f"error: {error if isinstance(error, GateError) else 'optax is not installed here'}", file=sys.stderr)
        return 2
    print(f"{'GREEN' if code == 0 else 'RED'}: hunk_proof {release} ({time.perf_counter() - started:.0f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
