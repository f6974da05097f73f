"""The gate's sessions, for nox and tox alike: `python -m lbfgs_gate session NAME`.

unpatched  the base release as published: every defect the series fixes must be
           reproduced, by every detector of the suite and every test the series
           adds to optax;
patched    the base release with the series: no defect left, optax's own L-BFGS and
           linesearch tests pass, primal results bitwise those of the release;
upstream   `patched` on the newest release (patches already upstream skipped).

Each is a build and a plan for lbfgs_gate/skeleton.py, which runs, judges
(lbfgs_gate/verdict.py), prints the verdict table and writes build/reports/<session>/:
verdict.json, report.md, junit.xml, pytest logs.
"""

from __future__ import annotations

from pathlib import Path

from lbfgs_gate import GateError, defects, inventory, pipeline, runner, skeleton, verdict, work_dir

# optax's own tests that exercise L-BFGS and the linesearches (pytest node ids).
UPSTREAM_TESTS = ("optax/_src/alias_test.py::LBFGSTest", "optax/_src/linesearch_test.py")


def reports_dir(session: str) -> Path:
    """build/reports/<session>/, emptied: a previous run's reports never pass for this one's.
    Every session clears it first, before it checks its arguments or installs anything, so
    that no exit path (bad input included) leaves an older verdict behind."""
    return skeleton.clear(work_dir() / "reports" / session)


def start(session: str, pytest_args: list[str]) -> Path:
    return skeleton.start(session, pytest_args, lambda: reports_dir(session))


def patchable_defects(build: pipeline.Build) -> frozenset[str]:
    """The defects whose patch the series applies to this release: the release must carry them."""
    applies = {s.patch for s in build.statuses if s.state == "applies"}
    return frozenset(d.name for d in defects.DEFECTS.values() if d.patch in applies)


def _result(judged: verdict.Verdict) -> int:
    return 0 if judged.green else 1


def unpatched(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None) -> int:
    reports = start("unpatched", pytest_args)
    phases = skeleton.Phases()
    with phases("install"):
        build = pipeline.published(release, series_file, sdist_dir)
    if build.patched_tree is None:
        raise GateError(
            f"the series does not apply to optax {release} (see `python -m lbfgs_gate status`): "
            "the unpatched session is for a release the series is made for"
        )
    expected = patchable_defects(build)
    modules = pipeline.series_test_modules(build, series_file)
    # Nothing applied, nothing to compare: the primal identity and the corpus against the release.
    left_out = (*runner.COMPARISON_TESTS, *defects.absent_option_tests(build.pristine / "optax"))
    plan = skeleton.Plan(
        session="unpatched",
        optax=build.label,
        expectation=verdict.Expectation(
            present=expected,
            inventory=inventory.expected(left_out),
            only=defects.judged_without_the_release(),
        ),
        suite=[runner.SUITE, *(f"--ignore={module}" for module in left_out)],
        known_defects=expected,
        optax_tests=tuple(modules),
        tree=build.patched_tree,
        defect_modules={Path(m).name: d for m, d in modules.items()},
        context=(
            "primal identity and derivatives against the release: nothing applied, nothing to compare "
            "(test_primal_identity.py and test_never_worse.py not run)",
        ),
    )
    return _result(skeleton.run_session(plan, reports, pytest_args, phases)[0])


def patched(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None, session="patched") -> int:
    reports = start(session, pytest_args)
    phases = skeleton.Phases()
    with phases("install"):
        build = pipeline.patched(release, series_file, sdist_dir)
    modules = pipeline.series_test_modules(build, series_file)
    with phases("record"):
        records = pipeline.release_records(build.pristine)
    left_out = defects.absent_option_tests(build.patched_tree / "optax")
    plan = skeleton.Plan(
        session=session,
        optax=build.label,
        expectation=verdict.Expectation(inventory=inventory.expected(left_out)),
        suite=[runner.SUITE, *(f"--ignore={module}" for module in left_out)],
        optax_tests=(*modules, *pipeline.option_test_modules(build, series_file), *UPSTREAM_TESTS),
        tree=build.patched_tree,
        defect_modules={Path(m).name: d for m, d in modules.items()},
        env_extra=records,
    )
    return _result(skeleton.run_session(plan, reports, pytest_args, phases)[0])


def upstream(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None) -> int:
    return patched(release, series_file, pytest_args, sdist_dir, session="upstream")


SESSIONS = {"unpatched": unpatched, "patched": patched, "upstream": upstream}
