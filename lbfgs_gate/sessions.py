"""The gate's sessions, for nox and tox alike: `python -m lbfgs_gate session NAME`.

unpatched  the base release as published: every defect the series fixes must be
           reproduced, by every detector of the suite and every test the series
           adds to optax;
patched    the base release with the series: no defect left, optax's own L-BFGS and
           linesearch tests pass, primal results bitwise those of the release;
upstream   `patched` on the newest release (patches already upstream skipped).

Each ends with the verdict table (lbfgs_gate/verdict.py) and writes
build/reports/<session>/: verdict.json, report.md, junit.xml, pytest logs.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from lbfgs_gate import GateError, defects, inventory, pipeline, runner, verdict, work_dir

# optax's own tests that exercise L-BFGS and the linesearches (pytest node ids).
UPSTREAM_TESTS = ("optax/_src/alias_test.py::LBFGSTest", "optax/_src/linesearch_test.py")
PRIMAL_TEST = "lbfgs_gate/suite/test_primal_identity.py"


def reports_dir(session: str) -> Path:
    """build/reports/<session>/, emptied: a previous run's reports never pass for this one's.
    Every session calls it first, before it checks its arguments or installs anything, so
    that no exit path (bad input included) leaves an older verdict behind."""
    folder = work_dir() / "reports" / session
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def start(session: str, pytest_args: list[str]) -> Path:
    """What every judging session does before anything else: clear its reports, then
    refuse arguments and environment variables that would change what runs."""
    reports = reports_dir(session)
    runner.check_pytest_args(pytest_args, session)
    runner.check_environment(session)
    return reports


def patchable_defects(build: pipeline.Build) -> frozenset[str]:
    """The defects whose patch the series applies to this release: the release must carry them."""
    applies = {s.patch for s in build.statuses if s.state == "applies"}
    return frozenset(d.name for d in defects.DEFECTS.values() if d.patch in applies)


class Phases:
    """Wall time of each phase of a session, printed as it ends and kept in verdict.json."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"[{name}: {self.seconds[name]} s]", flush=True)


def _judge(
    session: str, build: pipeline.Build, records: dict, expectation: verdict.Expectation, reports: Path, phases: Phases
) -> int:
    result = verdict.judge(session, records, expectation)
    context = [f"optax under test: {build.label}"]
    if not build.applied:
        context.append("primal identity: nothing applied, nothing to compare (test_primal_identity.py not run)")
    compiles = {source: record.get("compiles", {}) for source, record in records.items()}
    verdict.write(result, reports, context, {"optax": build.label, "phases": phases.seconds, "compiles": compiles})
    print(verdict.table(result), flush=True)
    print(f"reports: {os.path.relpath(reports)}", flush=True)
    return 0 if result.green else 1


def unpatched(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None) -> int:
    reports = start("unpatched", pytest_args)
    phases = Phases()
    with phases("install"):
        build = pipeline.published(release, series_file, sdist_dir)
    if build.patched_tree is None:
        raise GateError(
            f"the series does not apply to optax {release} (see `python -m lbfgs_gate status`): "
            "the unpatched session is for a release the series is made for"
        )
    expected = patchable_defects(build)
    modules = pipeline.series_test_modules(build, series_file)
    with phases("tests"):
        records = runner.run_with_optax_tests(
            [runner.SUITE, f"--ignore={PRIMAL_TEST}"],
            list(modules),
            build.patched_tree,
            reports=reports,
            patch_state=build.label,
            defect_modules={Path(m).name: d for m, d in modules.items()},
            args=[f"--known-defects={','.join(sorted(expected))}", *runner.default_workers(pytest_args)],
        )
    expectation = verdict.Expectation(present=expected, inventory=inventory.expected((PRIMAL_TEST,)))
    return _judge("unpatched", build, records, expectation, reports, phases)


def patched(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None, session="patched") -> int:
    reports = start(session, pytest_args)
    phases = Phases()
    with phases("install"):
        build = pipeline.patched(release, series_file, sdist_dir)
    modules = pipeline.series_test_modules(build, series_file)
    with phases("record"):
        reference = pipeline.primal_reference(build.pristine)
    with phases("tests"):
        records = runner.run_with_optax_tests(
            [runner.SUITE],
            [*modules, *UPSTREAM_TESTS],
            build.patched_tree,
            reports=reports,
            patch_state=build.label,
            defect_modules={Path(m).name: d for m, d in modules.items()},
            args=["--known-defects=", *runner.default_workers(pytest_args)],
            env_extra={"LBFGS_GATE_PRIMAL_REFERENCE": str(reference)},
        )
    return _judge(session, build, records, verdict.Expectation(inventory=inventory.expected()), reports, phases)


def upstream(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None) -> int:
    return patched(release, series_file, pytest_args, sdist_dir, session="upstream")


SESSIONS = {"unpatched": unpatched, "patched": patched, "upstream": upstream}
