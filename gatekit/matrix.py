"""The release matrix: which optax release carries which defect, as the suite's detectors find it.

`python -m gatekit matrix --release R [--patched]` runs, against the optax installed
here, every test of tests/lbfgs marked `@pytest.mark.defect(NAME)` (FAIL_TO_PASS), plainly:
no `--known-defects`, so each detector asserts the true property. Its raw outcome
decides the cell:

    present  a detector failed with AssertionError, the defect's own symptom;
    error    no detector failed so, but one crashed with another exception (an API the
             release lacks, say): the release was not measured, which is not "absent";
    absent   every detector passed.

Each run writes build/matrix/<mode>/<release>.json and rebuilds the release-by-defect
table from the runs there: build/matrix/matrix.md and .json (the releases as published)
or matrix-patched.md and .json (with the series applied where it applies).

This module is also the pytest plugin (`-p gatekit.matrix`) that records the raw
outcomes: plain hook functions, so importing it needs no pytest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from gatekit import CONSTRAINTS_DIR, PATCHES_DIR, PROJECT_ROOT, GateError, defects, sdist, series, tree

# Where the plugin writes the raw outcomes of one run (set by `run` for its pytest).
RESULTS_VARIABLE = "LBFGS_GATE_MATRIX_RESULTS"
MODES = ("unpatched", "patched")


def releases() -> list[str]:
    """The releases of the matrix: every release with an sdist hash and a constraints file."""
    known = re.findall(r"^optax==(\S+)", sdist.SDIST_HASHES.read_text(), flags=re.M)
    pinned = [r for r in known if (CONSTRAINTS_DIR / f"optax-{r}.txt").is_file()]
    return sorted(pinned, key=series.version_tuple)


def matrix_dir() -> Path:
    # Read at call time: the gate's own tests move the work folder.
    return tree.WORK_DIR / "matrix"


# --- the pytest plugin ---------------------------------------------------------------

_outcomes: dict[str, dict] = {}
_collection_errors: list[str] = []


def pytest_runtest_makereport(item, call):
    """Records each phase's exception type; returns None so pytest still makes the report."""
    names = [mark.args[0] for mark in item.iter_markers("defect")]
    if not names:
        return None
    record = _outcomes.setdefault(item.nodeid, {"defects": names, "exception": None, "phase": None})
    if call.excinfo is not None and record["exception"] is None:
        record["exception"] = call.excinfo.typename
        record["phase"] = call.when
        record["message"] = str(call.excinfo.value).splitlines()[0][:200] if str(call.excinfo.value) else ""
    return None


def pytest_collectreport(report):
    if report.failed:
        last = [line for line in str(report.longrepr).splitlines() if line.strip()][-1:] or ["?"]
        _collection_errors.append(f"{report.nodeid}: {last[0].strip()}")


def pytest_sessionfinish(session):
    path = os.environ.get(RESULTS_VARIABLE)
    if path:
        Path(path).write_text(json.dumps({"tests": _outcomes, "collection_errors": _collection_errors}, indent=1))


# --- one release -----------------------------------------------------------------------


def classify(outcomes: dict, collection_errors: list[str]) -> dict[str, dict]:
    """The cell of each registered defect, from the raw outcomes of its detectors."""
    cells = {}
    for name in defects.DEFECTS:
        tests = [t for t in outcomes.values() if name in t["defects"]]
        failed = [t for t in tests if t["exception"] == "AssertionError" and t["phase"] == "call"]
        # Skipped is not measured either: pytest.skip raises Skipped.
        crashed = [t for t in tests if t["exception"] is not None and t not in failed]
        if failed:
            state = "present"
        elif crashed or collection_errors:
            state = "error"
        elif tests:
            state = "absent"
        else:
            state = "no detector"
        errors = sorted({f"{t['exception']}: {t.get('message', '')}".rstrip(": ") for t in crashed})
        if collection_errors and not failed:
            errors += [f"collection error: {e}" for e in collection_errors]
        cells[name] = {"state": state, "detectors": len(tests), "failed": len(failed), "crashed": len(crashed),
                       "errors": errors}
    return cells


def _installed_is_release(release: str, series_file: Path, sdist_dir=None) -> None:
    """Refuses unless the optax imported here is `release` as published, file for file
    where the series touches it: a reused environment may still hold a patched build."""
    if version("optax") != release:
        raise GateError(f"the installed optax is {version('optax')}, not {release}: install optax=={release} first")
    root = tree.installed_optax_root()
    with tempfile.TemporaryDirectory(prefix="optax-pristine-") as scratch:
        pristine = sdist.unpack(sdist.fetch(release, sdist_dir), Path(scratch) / "optax")
        for relative in tree.touched_files(series_file):
            if not relative.startswith("optax/") or not (pristine / relative).is_file():
                continue  # a file the series adds, or one this release does not have
            installed = root / relative
            if not installed.is_file() or installed.read_bytes() != (pristine / relative).read_bytes():
                raise GateError(
                    f"the optax {release} imported from {root} is not the release as published "
                    f"({relative} differs): run the matrix in a fresh environment (not nox -R)"
                )


def run(release: str, patched: bool, series_file: Path, pytest_args: list[str], sdist_dir=None) -> dict:
    """Measures one release in this environment; writes its result and rebuilds the table."""
    mode = "patched" if patched else "unpatched"
    out = matrix_dir() / mode / f"{release}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # a failed run must not leave an older result in the table
    result = {"release": release, "jax": version("jax"), "mode": mode}
    if patched:
        if version("optax") != release:
            raise GateError(f"the installed optax is {version('optax')}, not {release}: "
                            f"install optax=={release} first")
        try:
            patched_tree = tree.prepare(release, series_file, sdist_dir)
        except GateError as error:
            # The series does not support this release: recorded, not measured.
            result.update(series="does not apply", reason=str(error), defects={})
            _write(out, result)
            return result
        tree.install(patched_tree)
        tree.verify(patched_tree, tree.touched_files(series_file, patched_tree))
        result["series"] = [s.__dict__ for s in tree.statuses(patched_tree)]
        patch_state = f"optax {release} + patches/series (verified)"
    else:
        _installed_is_release(release, series_file, sdist_dir)
        patch_state = f"optax {release} as released"
    raw = matrix_dir() / mode / f".{release}.raw.json"
    env = dict(os.environ, LBFGS_GATE_PATCH_STATE=patch_state, PYTHONPATH=str(PROJECT_ROOT))
    env[RESULTS_VARIABLE] = str(raw)
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    command = [sys.executable, "-m", "pytest", "tests/lbfgs", "-m", "defect", "-p", "gatekit.matrix",
               "-p", "no:cacheprovider", "-q", "--continue-on-collection-errors", *pytest_args]
    print("+", " ".join(command), flush=True)
    code = subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=False).returncode
    # 0: all passed, 1: some failed (a measurement, not an error here); anything else
    # means pytest itself did not run the detectors.
    if code not in (0, 1) or not raw.is_file():
        raise GateError(f"pytest did not run the detectors on optax {release} (exit {code}): see its report above")
    recorded = json.loads(raw.read_text())
    raw.unlink()
    result["defects"] = classify(recorded["tests"], recorded["collection_errors"])
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
        reason = re.sub(r"\s+", " ", result.get("reason", ""))
        # "NNNN-name.patch cannot be applied to optax R (state: detail): advice" -> "NNNN state: detail"
        found = re.match(r"(\d+)-\S+ cannot be applied to optax \S+ \((.*?)\): ", reason)
        return ("does not apply: " + (" ".join(found.groups()) if found else reason[:120])).replace("|", "\\|")
    parts = []
    for status in result.get("series", []):
        number = status["patch"].split("-", 1)[0]
        if status["state"] == "applies":
            parts.append(number + (f" ({status['source'].split('/')[0]} variant)" if "/" in status["source"] else ""))
        else:
            parts.append(f"{number} {status['state']}")
    return ", ".join(parts)


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
    header = ["optax", "jax", *(["series"] if mode == "patched" else []),
              *(name if defects.DEFECTS[name].patch else f"{name} (limit)" for name in names)]
    title = ("Defects of each optax release as published" if mode == "unpatched"
             else "Defects left with patches/series applied")
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for release, result in results.items():
        if result is None:
            lines.append("| " + " | ".join([release, "", *([""] if mode == "patched" else []),
                                              *["not run"] * len(names)]) + " |")
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
    lines += ["", "Detectors: the tests of tests/lbfgs marked `@pytest.mark.defect(NAME)`, run plainly. "
              "present: a detector failed with AssertionError; absent: all passed; error: a detector crashed "
              "for another reason, so the release was not measured; not run: the release's last run "
              "predates the detector. A limit is a defect no patch fixes: "
              "the series is not expected to remove it.",
              f"Regenerate: `nox -s matrix{' -- --patched' if mode == 'patched' else ''}`."]
    stem = "matrix" if mode == "unpatched" else "matrix-patched"
    markdown = "\n".join(lines) + "\n"
    (matrix_dir() / f"{stem}.md").write_text(markdown)
    document = {"mode": mode, "defects": {n: defects.DEFECTS[n].summary for n in names}, "releases": results}
    (matrix_dir() / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    return markdown


def verdict(mode: str, release: str) -> list[str]:
    """With the series applied, a release it applies to must be clean: what is not."""
    if mode != "patched":
        return []
    path = matrix_dir() / mode / f"{release}.json"
    result = json.loads(path.read_text()) if path.is_file() else {"defects": {}}
    if result.get("series") == "does not apply":
        return []  # not a release the series supports: the table says so
    # Limits stay with the series applied (no patch fixes them): only the series' defects count.
    return [f"{release}: {name} {cell['state']}" for name, cell in result["defects"].items()
            if cell["state"] != "absent" and defects.DEFECTS.get(name) and defects.DEFECTS[name].patch]


def add_command(commands) -> None:
    """Registers `python -m gatekit matrix` on the CLI's subcommands."""
    command = commands.add_parser("matrix", help="run the defect detectors on one release; rebuild the table")
    command.add_argument("--release", required=True, help="the optax release installed here")
    command.add_argument("--patched", action="store_true", help="apply the series first (where it applies)")
    command.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    command.add_argument("--sdist-dir", help="folder holding optax-<release>.tar.gz (offline use)")
    command.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")

    def measure(args) -> int:
        if args.release not in releases():
            raise GateError(f"optax {args.release} is not in the matrix: use one of {', '.join(releases())} "
                            "(a release needs its sdist hash and constraints/optax-<release>.txt)")
        run(args.release, args.patched, args.series, args.pytest_args, args.sdist_dir)
        problems = verdict("patched" if args.patched else "unpatched", args.release)
        if problems:
            print("with the series applied, defects remain: " + "; ".join(problems), flush=True)
            return 1
        return 0

    command.set_defaults(run=measure)
