"""One skeleton for every judged run: the sessions, the fork gate, the matrix, the stages
of tools/hunk_proof.py and `lbfgs-gate check`.

Each builds the optax it tests its own way (an sdist with or without the series, a fork's
checkout, a stage with one hunk reversed, the environment as it is) and describes the run as a `Plan`; then
`start` clears its reports first and refuses what would change what runs, and
`run_session` runs pytest through lbfgs_gate/runner.py, judges the record with
lbfgs_gate/verdict.py, writes verdict.json and report.md, and prints the verdict table.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lbfgs_gate import release_comparison, runner, verdict
from lbfgs_gate.run_record import Record


class Phases:
    """Wall time of each phase of a run, printed as it ends and kept in verdict.json."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"[{name}: {self.seconds[name]} s]", flush=True)


@dataclass
class Plan:
    """One judged run: the optax under test, what runs against it, what it must show."""

    session: str
    optax: str  # the optax under test, as the reports name it
    expectation: verdict.Expectation
    suite: list[str]  # the suite's targets: lbfgs_gate/suite (with --ignore or -m) or node ids
    known_defects: frozenset[str] = frozenset()  # --known-defects, for pytest's own outcome only
    optax_tests: tuple[str, ...] = ()  # optax's own test files, run from a copy of `tree`
    tree: Path | None = None
    defect_modules: dict[str, str] = field(default_factory=dict)  # optax test file name -> defect
    python: Path | str = sys.executable
    env_extra: dict[str, str] = field(default_factory=dict)
    label: str | None = None  # the log line for the pytest command, if not the command itself
    context: tuple[str, ...] = ()  # report.md lines after the optax under test
    # A session's own rule on top of the verdict's (the fork gate: a patch that applies while
    # its defect reads absent); it may only add reasons.
    amend: Callable[[verdict.Verdict], None] | None = None


def clear(folder: Path) -> Path:
    """A reports folder, emptied: a previous run's reports never pass for this one's."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def start(session: str, pytest_args: list[str], reports: Callable[[], Path]) -> Path:
    """What every judged run does first: clear its reports (`reports()`), then refuse
    arguments and environment variables that would change what runs. Returns the folder."""
    folder = reports()
    runner.check_pytest_args(list(pytest_args), session)
    runner.check_environment(session)
    return folder


def run_session(
    plan: Plan,
    reports: Path,
    pytest_args: list[str] = (),
    phases: Phases | None = None,
    *,
    write: bool = True,
    show: bool = True,
) -> tuple[verdict.Verdict, dict[str, Record]]:
    """Runs the plan, judges it; writes verdict.json and report.md (unless `write` is off: the
    fork gate writes its own) and prints the table (unless `show` is off). (verdict, records)."""
    phases = phases or Phases()
    args = [f"--known-defects={','.join(sorted(plan.known_defects))}", *runner.default_workers(list(pytest_args))]
    with phases("tests"):
        if plan.optax_tests:
            records = runner.run_with_optax_tests(
                list(plan.suite),
                list(plan.optax_tests),
                plan.tree,
                reports=reports,
                patch_state=plan.optax,
                defect_modules=plan.defect_modules,
                args=args,
                python=plan.python,
                env_extra=plan.env_extra,
            )
        else:
            record = runner.run(
                list(plan.suite),
                reports=reports,
                name="suite",
                patch_state=plan.optax,
                args=args,
                python=plan.python,
                env_extra=plan.env_extra,
                label=plan.label,
            )
            records = {"suite": record}
    judged = verdict.judge(plan.session, records, plan.expectation)
    if plan.amend is not None:
        plan.amend(judged)
        if judged.reasons:
            judged.verdict = "red"
    comparison = release_comparison.lines(records)
    if write:
        compiles = {source: record.compiles for source, record in records.items()}
        extra = {"optax": plan.optax, "phases": phases.seconds, "compiles": compiles}
        context = [f"optax under test: {plan.optax}", *plan.context]
        if comparison:
            context += ["", "```text", *comparison, "```"]
        verdict.write(judged, reports, context, extra)
    if show:
        print(verdict.table(judged), flush=True)
        for line in comparison:
            print(line, flush=True)
        print(f"reports: {runner.shown(reports)}", flush=True)
    return judged, records
