"""Runs pytest for the gate: the suite or optax's own test files, recorded and logged.

Every run the gate judges goes through `run`: it hands pytest an environment
built from an allowlist (and refuses one that would change what runs), turns
plugin autoloading off and loads the gate's plugins by name (the record plugin,
lbfgs_gate/record.py; pytest-xdist; hypothesis; pytest-timeout), forces the `ci`
hypothesis profile, bounds each test's time and the whole run's, points JAX at the
persistent compilation cache, writes pytest's own output to a log file (a green
session prints the verdict table, not tracebacks of expected failures) and returns
the record that lbfgs_gate/verdict.py judges, with pytest's exit status.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from lbfgs_gate import PROJECT_ROOT, SUITE_DIR, GateError, work_dir
from lbfgs_gate.run_record import Record, load_progress
from lbfgs_gate.verdict import PROFILE, load_record

SUITE = "lbfgs_gate/suite"
# The primal identity module: run only where a patch was applied to compare against the tree without it.
PRIMAL_TEST = "lbfgs_gate/suite/test_primal_identity.py"
NEVER_WORSE_TEST = "lbfgs_gate/suite/test_never_worse.py"
# What compares the optax under test with the tree without the series: left out where nothing is applied.
COMPARISON_TESTS = (PRIMAL_TEST, NEVER_WORSE_TEST)
# Per test (setup, call and teardown each): the slowest test measured 24 s cold on a
# loaded 2-core machine; 12 times that. pytest-timeout's thread method ends the process
# even inside native code (an XLA compile): the test is a crash, named in the record.
TEST_TIMEOUT = 300
# The whole run: the suite and optax's tests took 4.3 min cold (upstream, loaded
# machine); a run still going after this is killed, red, naming what was running.
RUN_TIMEOUT = 1800
# The plugins a judged run loads, by name; nothing an installed package registers
# loads by itself (PYTEST_DISABLE_PLUGIN_AUTOLOAD).
PLUGINS = ("lbfgs_gate.plugin", "lbfgs_gate.record", "xdist.plugin", "_hypothesis_pytestplugin", "pytest_timeout")
# The environment a judged run inherits: only what a process needs to run. Everything
# else is dropped; these change what runs or how, and are refused rather than dropped
# silently, so that a user who set one learns that the gate did not honour it.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TERM", "TMPDIR", "TZ", "CI")
REFUSED_PREFIXES = ("PYTEST_", "HYPOTHESIS_", "JAX_", "XLA_")
REFUSED = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP", "PYTHONINSPECT")
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


def check_environment(session: str, environ=os.environ) -> None:
    """Refuses an environment variable that would change which tests run or how."""
    for name in sorted(environ):
        if name.startswith(REFUSED_PREFIXES) or name in REFUSED:
            raise GateError(
                f"{name} is set: the {session} session runs pytest, hypothesis and JAX with its own settings; "
                f"unset it (`env -u {name} ...`) and run again"
            )


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
    xdist_group, lbfgs_gate/suite/conftest.py), unless the arguments choose (-n 0: one process)."""
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
    """The environment of every pytest run the gate judges: the allowlist, then the gate's own."""
    env = {name: value for name, value in os.environ.items() if name in INHERITED or name.startswith("LC_")}
    env.update(
        LBFGS_GATE_PATCH_STATE=patch_state,
        HYPOTHESIS_PROFILE=PROFILE,
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTHONPATH=str(PROJECT_ROOT),
        PYTHONDONTWRITEBYTECODE="1",
    )
    if "LBFGS_GATE_WORK_DIR" in os.environ:
        env["LBFGS_GATE_WORK_DIR"] = os.environ["LBFGS_GATE_WORK_DIR"]
    if os.environ.get("LBFGS_GATE_JAX_CACHE") != "off":
        env.update(
            JAX_COMPILATION_CACHE_DIR=str(jax_cache_dir(python)),
            # Keep every entry: most of the suite's compiles take well under a second.
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    env.update(extra or {})
    return env


def shown(path) -> str:
    """A path as a person reads it: relative inside a clone's tree, else whole (an installed gate)."""
    path = Path(path)
    return os.path.relpath(path, PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else str(path)


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
    time_bound: float = RUN_TIMEOUT,
    test_timeout: float = TEST_TIMEOUT,
) -> Record:
    """One recorded pytest run; returns its record with pytest's exit status and, for a run
    killed at its time bound, that bound."""
    reports.mkdir(parents=True, exist_ok=True)
    record, log = reports / f"record-{name}.json", reports / f"pytest-{name}.log"
    junit = reports / ("junit.xml" if name == "suite" else f"junit-{name}.xml")
    for stale in (record, log, junit):
        stale.unlink(missing_ok=True)
    plugins = [part for plugin in PLUGINS for part in ("-p", plugin)]
    command = [
        str(python),
        "-m",
        "pytest",
        *plugins,
        # The suite's own configuration and the package's parent (cwd) as rootdir, from a clone
        # and installed alike: the same options and the same node ids (lbfgs_gate/suite/...).
        "-c",
        str(SUITE_DIR / "pytest.ini"),
        f"--rootdir={cwd}",
        f"--gate-record={record}",
        f"--junitxml={junit}",
        f"--timeout={test_timeout:g}",
        "--timeout-method=thread",
        "-p",
        "no:cacheprovider",
        "-q",
        *args,
        *targets,
    ]
    if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        # pytest-xdist 3.8 can hang when a worker dies under --dist loadgroup; with no
        # restart it stops the run instead, the dead worker's test a crash (measured).
        command.insert(command.index("-q"), "--max-worker-restart=0")
    command_line = " ".join(shown(c) if os.path.isabs(c) else c for c in command[1:])
    print(f"+ {label or command_line}  (log: {shown(log)})", flush=True)
    timed_out = None
    with open(log, "w") as output:
        # A process group of its own: at the time bound, the workers go with the controller.
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=environment(patch_state, python, env_extra),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=time_bound)
        except subprocess.TimeoutExpired:
            timed_out = time_bound
            os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    if timed_out is not None:
        record.unlink(missing_ok=True)  # whatever a killed run left is not its record
        result = load_progress(record)
        result.exitstatus, result.timed_out = code, timed_out
        print(f"  killed at the time bound of {timed_out:g} s", flush=True)
        return result
    result = load_record(record, name, code)
    if code not in (0, 1) and not result.tests:
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
        # The path below the tree, kept: two files of one name must not overwrite each other.
        copy = folder / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tree) / relative, copy)
        target = os.path.relpath(copy, PROJECT_ROOT)
        targets.append(f"{target}::{node}" if node else target)
    return targets


def _targets(targets: list[str]) -> str:
    """Targets as a log line shows them: a list of node ids is counted, not spelled out."""
    if len(targets) <= 3:
        return " ".join(targets) or "nothing"
    return f"{len(targets)} tests ({targets[0]}, ...)"


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
) -> dict[str, Record]:
    """The suite and optax's own test files in one pytest run, one pool of workers (one
    import of jax per worker, both cores busy to the end); the record split by source:
    {"suite": ..., "optax": ...}. `defect_modules` marks the tests of a file (by name) as
    detectors of a defect (the modules the series adds)."""
    folder = reports / "optax-tests"
    # pytest names a test file outside its rootdir (the project) by its class alone
    # (`::Class::test`), so copies must lie below the project: with the reports elsewhere
    # (LBFGS_GATE_WORK_DIR), in a folder of the project removed after the run.
    outside = not folder.resolve().is_relative_to(PROJECT_ROOT.resolve())
    if outside:
        folder = PROJECT_ROOT / f".optax-tests-{reports.name}"
    try:
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
            label=f"pytest {_targets(suite_targets)} + optax's {_targets(optax_tests)} (copied from the tree)",
        )
    finally:
        if outside:
            shutil.rmtree(folder, ignore_errors=True)
    prefix = os.path.relpath(folder, PROJECT_ROOT) + "/"
    split = {}
    for source, keep in (
        ("suite", lambda nodeid: not nodeid.startswith(prefix)),
        ("optax", lambda nodeid: nodeid.startswith(prefix)),
    ):
        split[source] = replace(
            record,
            inventory={k: v for k, v in record.inventory.items() if keep(k)},
            tests={k: v for k, v in record.tests.items() if keep(k)},
            collection_errors=[e for e in record.collection_errors if keep(e)],
        )
    split["optax"].compiles = {}  # one process pool: the counts are the suite's record's
    return split
