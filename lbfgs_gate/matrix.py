"""The release matrix: which optax release carries which defect, as the suite's detectors find it.

`python -m lbfgs_gate matrix --release R [--patched]` runs, against the optax installed
here, every test of lbfgs_gate/suite marked `@pytest.mark.defect(NAME)`, plainly: no
`--known-defects`, so each detector asserts the true property. The cells come from
lbfgs_gate/verdict.py, the one place that judges records: present (a detector raised
DefectObserved, the defect's own symptom), absent (every detector passed), or not
measured (a detector crashed, was skipped or did not run: an API the release lacks,
say), which is not "absent". With --patched, a defect the series fixes that is not
absent on a release the series applies to makes the run red.

Each run writes build/matrix/<mode>/<release>.json and rebuilds the release-by-defect
table from the runs there: build/matrix/matrix.md and .json (the releases as published)
or matrix-patched.md and .json (with the series applied where it applies).
"""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import version
from pathlib import Path

from lbfgs_gate import (
    CONSTRAINTS_DIR,
    PATCHES_DIR,
    PROJECT_ROOT,
    GateError,
    defects,
    in_clone,
    inventory,
    pipeline,
    runner,
    sdist,
    series,
    skeleton,
    verdict,
    work_dir,
)


def releases() -> list[str]:
    """The releases of the matrix: every release with an sdist hash and a constraints file."""
    known = re.findall(r"^optax==(\S+)", sdist.SDIST_HASHES.read_text(), flags=re.M)
    pinned = [r for r in known if (CONSTRAINTS_DIR / f"optax-{r}.txt").is_file()]
    return sorted(pinned, key=series.version_tuple)


def installed_optax() -> str | None:
    """The version of the optax installed in this environment, if any."""
    try:
        return version("optax")
    except Exception:  # noqa: BLE001 - not installed: the caller asks for --release
        return None


def matrix_dir() -> Path:
    return work_dir() / "matrix"


def cells(judged: verdict.Verdict) -> dict[str, dict]:
    """The table's cell of each defect, from the verdict's row."""
    result = {}
    for name, row in judged.defects.items():
        failing = row.crashed + row.skipped + row.not_run
        if row.detectors == 0:
            state = "no detector"
        elif row.reproduced:
            state = "present"
        elif failing:
            state = "error"
        else:
            state = "absent"
        result[name] = {
            "state": state,
            "detectors": row.detectors,
            "failed": row.reproduced,
            "crashed": failing,
            "errors": [r for r in judged.reasons if name in r or "collection error" in r][:3],
        }
    return result


def run(release: str, patched: bool, series_file: Path, pytest_args: list[str], sdist_dir=None) -> dict:
    """Measures one release in this environment; writes its result and rebuilds the table."""
    mode = "patched" if patched else "unpatched"
    out = matrix_dir() / mode / f"{release}.json"
    reports = matrix_dir() / mode / f"reports-{release}"

    def clear() -> Path:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)  # a failed run must not leave an older result in the table
        return skeleton.clear(reports)

    skeleton.start("matrix", pytest_args, clear)
    result = {"release": release, "jax": version("jax"), "mode": mode}
    try:
        build = (pipeline.patched if patched else pipeline.published)(release, series_file, sdist_dir)
    except GateError as error:
        if not patched or version("optax") != release:
            raise
        # The series does not support this release: recorded, not measured, with where each
        # patch stands (series.py's model of the stack, not the error's text).
        pristine = pipeline.pristine_tree(release, sdist_dir)
        statuses = series.series_status(pristine, series.read_series(series_file), release)
        result.update(series="does not apply", reason=str(error), statuses=[s.__dict__ for s in statuses], defects={})
        _write(out, result)
        return result
    if patched:
        result["series"] = [s.__dict__ for s in build.statuses]
    plan = skeleton.Plan(
        session=f"matrix {mode} {release}",
        optax=build.label,
        # The corpus against the release (test_never_worse.py) needs the tree without the series
        # recorded first: the patched sessions judge it, the matrix does not.
        expectation=verdict.Expectation(
            measure=not patched,
            detectors_only=True,
            inventory=inventory.expected((runner.NEVER_WORSE_TEST,)),
            only=defects.judged_without_the_release(),
        ),
        suite=[runner.SUITE, "-m", "defect", f"--ignore={runner.NEVER_WORSE_TEST}"],
    )
    judged, _ = skeleton.run_session(plan, reports, pytest_args)
    result["defects"] = cells(judged)
    result["verdict"] = judged.verdict
    result["reasons"] = judged.reasons
    _write(out, result)
    return result


def _write(out: Path, result: dict) -> None:
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = write_tables(result["mode"])
    print(f"\n{table}\nwritten: {out}", flush=True)


# --- the table -------------------------------------------------------------------------


def _cell(cell: dict | None) -> str:
    if cell is None:
        return "not run"
    counts = f"{cell['failed']}/{cell['detectors']} detectors fail"
    if cell["state"] == "present":
        text = f"**present** ({counts})"
    elif cell["state"] == "absent":
        text = f"absent (0/{cell['detectors']})"
    elif cell["state"] == "error":
        text = f"error, not measured ({cell['crashed']} crashed: {'; '.join(cell['errors'])[:160]})"
    else:
        text = cell["state"]
    return text.replace("|", "\\|")


def _series_cell(result: dict) -> str:
    if result.get("series") == "does not apply":
        if result.get("statuses"):
            return series.describe(result["statuses"]).replace("|", "\\|")
        return ("does not apply: " + re.sub(r"\s+", " ", result.get("reason", ""))[:120]).replace("|", "\\|")
    return series.describe(result.get("series", []))


def _names() -> list[str]:
    """Defects the series fixes first, then limits (no patch fixes them)."""
    return sorted(defects.DEFECTS, key=lambda name: defects.DEFECTS[name].patch is None)


def write_tables(mode: str) -> str:
    """Rebuilds build/matrix/matrix[-patched].{md,json} from the per-release results."""
    names = _names()
    results = {}
    for release in releases():
        path = matrix_dir() / mode / f"{release}.json"
        results[release] = json.loads(path.read_text()) if path.is_file() else None
    header = [
        "optax",
        "jax",
        *(["series"] if mode == "patched" else []),
        *(name if defects.DEFECTS[name].patch else f"{name} (limit)" for name in names),
    ]
    title = (
        "Defects of each optax release as published"
        if mode == "unpatched"
        else "Defects left with patches/series applied"
    )
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for release, result in results.items():
        if result is None:
            lines.append(
                "| " + " | ".join([release, "", *([""] if mode == "patched" else []), *["not run"] * len(names)]) + " |"
            )
            continue
        row = [release, result["jax"]]
        if mode == "patched":
            row.append(_series_cell(result))
        for name in names:
            if result.get("series") == "does not apply":
                row.append("n/a")
            else:
                row.append(_cell(result["defects"].get(name)))
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Detectors: the tests of lbfgs_gate/suite marked `@pytest.mark.defect(NAME)`, run plainly. "
        "present: a detector raised DefectObserved, the defect's symptom; absent: all passed; error: a "
        "detector crashed, was skipped or did not run, so the release was not measured; not run: the "
        "release's last run "
        "predates the detector. A limit is a defect no patch fixes: "
        "the series is not expected to remove it.",
        f"Regenerate: `nox -s matrix{' -- --patched' if mode == 'patched' else ''}`.",
    ]
    stem = "matrix" if mode == "unpatched" else "matrix-patched"
    markdown = "\n".join(lines) + "\n"
    (matrix_dir() / f"{stem}.md").write_text(markdown)
    document = {"mode": mode, "defects": {n: defects.DEFECTS[n].summary for n in names}, "releases": results}
    (matrix_dir() / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    if in_clone() and "LBFGS_GATE_WORK_DIR" not in os.environ:
        write_page()
    return markdown


PAGE = PROJECT_ROOT / "docs" / "releases.md"


def write_page(page: Path = PAGE) -> Path:
    """docs/releases.md, from the tables of build/matrix/: the page is written by the matrix
    session (`nox -s matrix`, and `-- --patched`), never by hand."""
    parts = [
        "# Which releases carry which defect",
        "",
        "Written by `nox -s matrix` (the releases as published) and `nox -s matrix -- --patched` (with",
        "the series), from their results in `build/matrix/`; do not edit it by hand. Each release runs",
        "in a jax it supports (pins: `constraints/optax-<release>.txt`). In CI, the workflow",
        "`.github/workflows/release-matrix.yml` runs one job per release and builds the same tables.",
        "",
    ]
    for stem in ("matrix", "matrix-patched"):
        table = matrix_dir() / f"{stem}.md"
        parts.append(table.read_text() if table.is_file() else f"### {stem}: not run yet\n")
    page.write_text("\n".join(parts))
    return page


def problems(mode: str, release: str) -> list[str]:
    """Why a release's run is red (lbfgs_gate/verdict.py decided it): empty when green. With the
    series (--patched), a release it does not apply to is red: nothing was fixed there."""
    path = matrix_dir() / mode / f"{release}.json"
    result = json.loads(path.read_text()) if path.is_file() else {"verdict": "red", "reasons": ["no result"]}
    if result.get("series") == "does not apply":
        return [f"the series does not apply to optax {release}: {result.get('reason', '')}"]
    return [] if result.get("verdict") == "green" else result.get("reasons", ["red"])


def add_command(commands) -> None:
    """Registers `python -m lbfgs_gate matrix` on the CLI's subcommands."""
    command = commands.add_parser("matrix", help="run the defect detectors on one release; rebuild the table")
    command.add_argument("--release", help="the optax release installed here (default: its version)")
    command.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: rebuild the tables (and docs/releases.md) from the results in build/matrix/",
    )
    command.add_argument("--patched", action="store_true", help="apply the series first (where it applies)")
    command.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    command.add_argument("--sdist-dir", help="folder holding optax-<release>.tar.gz (offline use)")
    command.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")

    def measure(args) -> int:
        if args.table_only:
            for mode in ("unpatched", "patched"):
                print(write_tables(mode), flush=True)
            missing = [
                f"{mode} {r}"
                for mode in ("unpatched", "patched")
                for r in releases()
                if not (matrix_dir() / mode / f"{r}.json").is_file()
            ]
            print(f"not run: {', '.join(missing)}" if missing else "every release ran in both modes", flush=True)
            return 0
        if args.release is None:
            # The environment's own optax, as nox and tox pin it for this release.
            args.release = installed_optax()
        if args.release is None:
            raise GateError(f"--release R is needed (one of {', '.join(releases())}), or --table-only")
        if args.release not in releases():
            raise GateError(
                f"optax {args.release} is not in the matrix: use one of {', '.join(releases())} "
                "(a release needs its sdist hash and constraints/optax-<release>.txt)"
            )
        run(args.release, args.patched, args.series, args.pytest_args, args.sdist_dir)
        found = problems("patched" if args.patched else "unpatched", args.release)
        if found:
            print(f"GATE RED: matrix {args.release}: {found[0]}", flush=True)
            return 1
        print(f"GATE GREEN: matrix {args.release}", flush=True)
        return 0

    command.set_defaults(run=measure)
