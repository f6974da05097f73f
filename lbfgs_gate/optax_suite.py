"""optax's whole test suite, as published and with the series: the same passes and skips, plus the series' tests.

Runs `pytest --pyargs optax` (as optax's CI does) twice in the running environment: once
on the release's sdist as published, once on the same sdist with the series applied, each
built and installed the same way, so that the series is the only difference. Then it
compares the outcomes test by test:

- every test that passes as published passes with the series;
- the same tests are skipped;
- the tests the series adds (its `*_test.py` modules) all pass, and nothing else is new;
- a test that fails as published is listed; it counts only if the series changes its outcome.

The environment must hold optax's `test` extra, pinned: constraints/optax_suite-<release>.txt
(slow: on 0.2.4, about 5.5 min a run with `-n 2` on 2 idle cores; 7 and 10 min with `-n 1`
on 2 cores shared with other work; 0.2.8, 14 to 15 min a run that way).

Measured with `-n 1`: 0.2.4 (jax 0.4.35) 3142 passed, 626 skipped as published; 3159 passed,
626 skipped with the series. 0.2.8 (jax 0.10.2) 2501 passed, 5 failed, 130 skipped as
published; 2514 passed, the same 5 failed, 130 skipped with the series. The 5 fail on jax
0.10.2 whatever the series (test_nnls4/5, test_clip_by_block_rms, two freezing tests that
match an error message jax changed).

    python -m lbfgs_gate.optax_suite [--release 0.2.4] [--workers 2] [-- PYTEST_ARGS]

Reports in build/optax-suite/<release>/: published.xml, patched.xml (junit), comparison.json.
Exit status 0: as expected; 1: a difference, one line each; 2: bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from lbfgs_gate import CONSTRAINTS_DIR, PATCHES_DIR, GateError, matrix, sdist, tree, verdict, work_dir

OUTCOMES = ("passed", "failed", "skipped")


def constraints(release: str) -> Path:
    return CONSTRAINTS_DIR / f"optax_suite-{release}.txt"


def outcomes(junit: Path) -> dict[str, str]:
    """Test id (_src.module.Class.test, the package left out) -> passed, failed (errors included) or skipped."""
    results = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        parts = case.get("classname", "").split(".")
        # Relative to pytest's rootdir, which --pyargs places at or above the installed
        # package: the classname starts with the way there. Keep what follows `optax`.
        if "optax" in parts:
            parts = parts[parts.index("optax") + 1 :]
        test_id = ".".join([*parts, case.get("name", "")])
        if case.find("skipped") is not None:
            outcome = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        else:
            outcome = "passed"
        # A test reported twice (an error in teardown after a pass) keeps its worst outcome.
        if results.get(test_id) != "failed":
            results[test_id] = outcome
    return results


CRASH = re.compile(r"worker '\w+' crashed while running '([^']+)'")


def crashed(junit: Path) -> list[str]:
    """Node ids (relative to the optax package) whose pytest-xdist worker died under them."""
    found = []
    for case in ElementTree.parse(junit).iter("testcase"):
        for child in case:
            match = CRASH.search(child.get("message") or "")
            if match and match.group(1) not in found:
                found.append(match.group(1))
    return found


def counts(results: dict[str, str]) -> dict[str, int]:
    return {outcome: sum(1 for o in results.values() if o == outcome) for outcome in OUTCOMES}


def run_suite(label: str, source_tree: Path, junit: Path, workers: str, pytest_args: list[str]) -> dict[str, str]:
    """Installs `source_tree` here, then runs optax's suite from a scratch folder into `junit`."""
    tree.install(source_tree)
    different = tree.difference(source_tree)
    if different is not None:
        raise GateError(
            f"the optax imported here is not {source_tree.name}: {different} differs; use a fresh environment"
        )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "optax",
        "-p",
        "no:cacheprovider",
        "-q",
        "-n",
        workers,
        f"--junitxml={junit}",
        *pytest_args,
    ]
    print(f"+ ({label}) {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="optax-suite-") as scratch:
        # From a scratch folder: optax is imported from the environment, and no project's
        # pytest configuration applies (optax's CI does the same).
        result = subprocess.run(command, cwd=scratch, env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False)
    if not junit.is_file():
        raise GateError(f"pytest wrote no results for optax {label} (exit {result.returncode}): see its output above")
    results = outcomes(junit)
    # A worker that dies (a signal, memory) is not an outcome of the test it was running:
    # those tests run once more, one process, and that outcome counts; both are shown.
    lost = crashed(junit)
    if lost:
        package = tree.installed_optax_root() / "optax"
        rerun = junit.with_name(junit.stem + "-rerun.xml")
        print(f"+ ({label}) again, after a worker crash: {' '.join(lost)}", flush=True)
        with tempfile.TemporaryDirectory(prefix="optax-suite-") as scratch:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-p",
                    "no:cacheprovider",
                    "-q",
                    f"--rootdir={package}",  # node ids as in the whole run
                    f"--junitxml={rerun}",
                    *[str(package / node) for node in lost],
                ],
                cwd=scratch,
                env={**os.environ, "JAX_PLATFORMS": "cpu"},
                check=False,
            )
        if rerun.is_file():
            results.update(outcomes(rerun))
    summary = ", ".join(f"{n} {outcome}" for outcome, n in counts(results).items())
    print(f"optax {label}: {summary} in {time.monotonic() - started:.0f} s", flush=True)
    return results


def run(release: str, series_file: Path, workers: str = "2", pytest_args=(), report=print) -> int:
    """Both runs and the comparison; 0 when the series adds its tests and changes no other outcome."""
    if not constraints(release).is_file():
        raise GateError(f"no {constraints(release).name}: resolve optax {release}'s test extra into it first")
    output = work_dir() / "optax-suite" / release
    output.mkdir(parents=True, exist_ok=True)
    patched = tree.prepare(release, series_file)
    # Test ids leave out the package: optax/_src/x_test.py holds _src.x_test.Class.test.
    series_modules = [
        f[len("optax/") : -len(".py")].replace("/", ".")
        for f in tree.touched_files(series_file, patched)
        if f.endswith("_test.py")
    ]
    with tempfile.TemporaryDirectory(prefix="optax-published-", dir=output) as scratch:
        pristine = sdist.unpack(sdist.fetch(release), Path(scratch) / "optax")
        published = run_suite(f"{release} as published", pristine, output / "published.xml", workers, list(pytest_args))
        with_series = run_suite(
            f"{release} with the series", patched, output / "patched.xml", workers, list(pytest_args)
        )
    problems = verdict.optax_suite_differences(published, with_series, series_modules)
    failing = sorted(t for t, o in published.items() if o == "failed" and with_series.get(t) == "failed")
    document = {
        "release": release,
        "published": counts(published),
        "patched": counts(with_series),
        "series_tests": sorted(t for t in with_series if any(t.startswith(m + ".") for m in series_modules)),
        "failing_in_both": failing,
        "problems": problems,
        "verdict": verdict.optax_suite_verdict(problems),
    }
    (output / "comparison.json").write_text(json.dumps(document, indent=2) + "\n")
    for test_id in failing:
        report(f"{test_id}: fails as published and with the series (not the series' doing)")
    for problem in problems:
        report(problem)
    added = len(document["series_tests"])
    report(
        f"optax {release}: as published {document['published']}; with the series {document['patched']} "
        f"({added} tests of the series): {'the same outcomes plus the series tests' if not problems else 'DIFFERENT'}"
    )
    return 0 if document["verdict"] == "green" else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lbfgs_gate.optax_suite", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--release", help="optax release (its sdist, constraints/optax_suite-<release>.txt; default: the installed one)"
    )
    parser.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    parser.add_argument("--workers", default="2", help="pytest-xdist workers (-n), default 2")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    try:
        release = args.release or matrix.installed_optax()
        if release is None:
            raise GateError("no optax is installed here: pass --release R")
        return run(release, args.series, args.workers, args.pytest_args)
    except GateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
