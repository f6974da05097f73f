"""Runs pytest for the gate: the suite or optax's own test files, recorded and logged.

Every run the gate judges goes through `run`: it loads the record plugin
(gatekit/record.py), forces the `ci` hypothesis profile, points JAX at the
persistent compilation cache, writes pytest's own output to a log file (a green
session prints the verdict table, not tracebacks of expected failures) and returns
the record that gatekit/verdict.py judges.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from gatekit import PROJECT_ROOT, GateError, work_dir
from gatekit.verdict import PROFILE, load_record

SUITE = "tests/lbfgs"
# Arguments a gate session passes on to pytest: how the tests run and report, never
# which tests run (a subset is not a gate verdict). Values follow the option.
PASSTHROUGH = {
    "-n": True,
    "--numprocesses": True,
    "--dist": True,
    "--tb": True,
    "--durations": True,
    "-v": False,
    "-vv": False,
    "-q": False,
    "-s": False,
    "-l": False,
    "--capture": True,
}


def check_pytest_args(args: list[str], session: str) -> None:
    """Refuses arguments that could select, skip or stop tests: a subset is not a gate verdict."""
    position = 0
    while position < len(args):
        arg = args[position]
        name, has_value, _ = arg.partition("=")
        if name.startswith("-r") or name in ("-ra", "-rA"):
            position += 1
            continue
        if name not in PASSTHROUGH and not (name.startswith("-n") and name[2:].isdigit()):
            raise GateError(
                f"`{arg}` is not allowed in the {session} session: a gate verdict runs every test with its "
                f"own settings (allowed: {', '.join(sorted(PASSTHROUGH))}, -r...); for a subset run pytest "
                f"itself, e.g. `pytest {SUITE} {' '.join(args)}`"
            )
        position += 2 if PASSTHROUGH.get(name) and not has_value else 1


def default_workers(args: list[str]) -> list[str]:
    """pytest-xdist on every core, tests that share traced solves on one worker (their
    xdist_group, tests/lbfgs/conftest.py), unless the arguments choose (-n 0: one process)."""
    chosen = list(args)
    if not any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        chosen = ["-n", "auto", *chosen]
    if not any(a.startswith("--dist") for a in args):
        chosen = ["--dist", "loadgroup", *chosen]
    return chosen


def jax_cache_dir(python: Path | str = sys.executable) -> Path:
    """JAX's persistent compilation cache for the jax and jaxlib of `python`'s environment.

    One folder per (jax, jaxlib, Python, machine): an entry is only reused by the
    versions that wrote it. Entries are keyed by JAX on the compiled program, so a
    patched and a published optax never share one; an unreadable entry is recompiled
    (JAX warns). LBFGS_GATE_JAX_CACHE moves the root; "off" disables it.
    """
    root = os.environ.get("LBFGS_GATE_JAX_CACHE", str(work_dir() / "jax-cache"))
    found = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version as v; print(v('jax'), v('jaxlib'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    jax, jaxlib = found.stdout.split() if found.returncode == 0 else ("none", "none")
    name = f"jax-{jax}-jaxlib-{jaxlib}-py{platform.python_version()}-{platform.machine()}"
    return Path(root) / name


def environment(patch_state: str, python: Path | str = sys.executable, extra: dict | None = None) -> dict:
    """The environment of every pytest run the gate judges."""
    env = dict(os.environ, LBFGS_GATE_PATCH_STATE=patch_state, HYPOTHESIS_PROFILE=PROFILE)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if os.environ.get("LBFGS_GATE_JAX_CACHE") != "off":
        env.update(
            JAX_COMPILATION_CACHE_DIR=str(jax_cache_dir(python)),
            # Keep every entry: most of the suite's compiles take well under a second.
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    env.update(extra or {})
    return env


def run(
    targets: list[str],
    *,
    reports: Path,
    name: str,
    patch_state: str,
    args: list[str] = (),
    python: Path | str = sys.executable,
    cwd: Path = PROJECT_ROOT,
    env_extra: dict | None = None,
    label: str | None = None,
) -> dict:
    """One recorded pytest run; returns its record (gatekit.record's JSON)."""
    reports.mkdir(parents=True, exist_ok=True)
    record, log = reports / f"record-{name}.json", reports / f"pytest-{name}.log"
    junit = reports / ("junit.xml" if name == "suite" else f"junit-{name}.xml")
    for stale in (record, log, junit):
        stale.unlink(missing_ok=True)
    command = [
        str(python),
        "-m",
        "pytest",
        "-p",
        "gatekit.record",
        f"--gate-record={record}",
        f"--junitxml={junit}",
        "-p",
        "no:cacheprovider",
        "-q",
        *args,
        *targets,
    ]
    shown = " ".join(os.path.relpath(c, PROJECT_ROOT) if os.path.isabs(c) else c for c in command[1:])
    print(f"+ {label or shown}  (log: {os.path.relpath(log, PROJECT_ROOT)})", flush=True)
    with open(log, "w") as output:
        code = subprocess.run(
            command,
            cwd=cwd,
            env=environment(patch_state, python, env_extra),
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    result = load_record(record, name)
    if code not in (0, 1) and not result.get("tests"):
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise GateError(f"pytest could not run ({name}, exit {code}): {' / '.join(tail)}; see {log}")
    return result


def copy_optax_tests(tests: list[str], tree: Path, folder: Path) -> list[str]:
    """optax test files (node ids relative to `tree`) copied into `folder`; their new node ids.

    Run in place, pytest would import them as part of the tree's `optax` package, and so
    test the tree, not the install: copied out, they import the installed optax.
    """
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    targets = []
    for test in tests:
        relative, _, node = test.partition("::")
        copy = folder / Path(relative).name
        shutil.copyfile(Path(tree) / relative, copy)
        target = os.path.relpath(copy, PROJECT_ROOT)
        targets.append(f"{target}::{node}" if node else target)
    return targets


def run_with_optax_tests(
    suite_targets: list[str],
    optax_tests: list[str],
    tree: Path,
    *,
    reports: Path,
    patch_state: str,
    defect_modules: dict[str, str],
    args: list[str] = (),
    python: Path | str = sys.executable,
    env_extra: dict | None = None,
) -> dict[str, dict]:
    """The suite and optax's own test files in one pytest run, one pool of workers (one
    import of jax per worker, both cores busy to the end); the record split by source:
    {"suite": ..., "optax": ...}. `defect_modules` marks the tests of a file (by name) as
    detectors of a defect (the modules the series adds)."""
    folder = reports / "optax-tests"
    targets = copy_optax_tests(optax_tests, tree, folder)
    marks = [f"--gate-defect-module={file}={defect}" for file, defect in defect_modules.items()]
    record = run(
        [*suite_targets, *targets],
        reports=reports,
        name="suite",
        patch_state=patch_state,
        args=[*marks, *args],
        python=python,
        env_extra=env_extra,
        label=f"pytest {' '.join(suite_targets)} + optax's {' '.join(optax_tests)} (copied from the tree)",
    )
    prefix = os.path.relpath(folder, PROJECT_ROOT) + "/"
    split = {}
    for source, keep in (
        ("suite", lambda nodeid: not nodeid.startswith(prefix)),
        ("optax", lambda nodeid: nodeid.startswith(prefix)),
    ):
        split[source] = {
            **record,
            "inventory": {k: v for k, v in record.get("inventory", {}).items() if keep(k)},
            "tests": {k: v for k, v in record.get("tests", {}).items() if keep(k)},
            "collection_errors": [e for e in record.get("collection_errors", []) if keep(e)],
        }
    split["optax"]["compiles"] = {}  # one process pool: the counts are the suite's record's
    return split
