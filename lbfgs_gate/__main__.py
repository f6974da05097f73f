"""lbfgs-gate: is the optax installed here safe to differentiate through L-BFGS?

`lbfgs-gate check` (or `python -m lbfgs_gate check`) judges the optax of the environment it
runs in; `lbfgs-gate patches` gives the series that fixes what it finds. The other commands
are the gate's sessions, which nox and tox call inside their environments so that both
runners share one implementation. Exit status: 0 green, 1 red, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from lbfgs_gate import (
    PATCHES_DIR,
    PROJECT_ROOT,
    GateError,
    base_release,
    check,
    fork,
    in_clone,
    inventory,
    matrix,
    newest_release,
    runner,
    sdist,
    series,
    sessions,
    work_dir,
)


def session(args) -> int:
    release = args.release or (newest_release() if args.name == "upstream" else base_release())
    return sessions.SESSIONS[args.name](release, args.series, args.pytest_args, sdist_dir=args.sdist_dir)


def status(args) -> None:
    if not (Path(args.tree) / "optax/_src/transform.py").is_file():
        raise GateError(
            f"{args.tree} is not an optax source tree (no optax/_src/transform.py): pass the root of an optax checkout"
        )
    statuses = series.series_status(Path(args.tree), series.read_series(args.series), args.release)
    print(series.format_table(statuses))
    if args.json:
        Path(args.json).write_text(json.dumps([s.__dict__ for s in statuses], indent=2) + "\n")


def fetch(args) -> None:
    for release in args.releases or matrix.releases():
        print(sdist.fetch(release))


def _clone_only(command: str) -> None:
    if not in_clone():
        raise GateError(f"`{command}` runs from a clone of the project (its tests and pins are not installed)")


def selftest(args) -> int:
    """The gate's own tests: tests/gate (no jax), or with --end-to-end the fork gate on simulated
    forks (tests/gate_e2e). The sdists they build trees from are fetched first, so the tests stay
    offline (every release of the matrix: a fork's base release is found among them)."""
    _clone_only("selftest")
    for release in matrix.releases():
        sdist.fetch(release)
    if args.end_to_end:
        from lbfgs_gate.fork.environment import find_uv

        command = [sys.executable, "-m", "pytest", "tests/gate_e2e", *args.pytest_args]
        env = {**os.environ, "UV": find_uv()}
    else:
        # One worker a core (at most four): the tests are independent, each in its own tmp_path.
        command = [sys.executable, "-m", "pytest", "tests/gate", "-n", "auto", "--maxprocesses=4", *args.pytest_args]
        env = None
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=False).returncode


LINT = (
    ("ruff", "check", "."),
    ("ruff", "format", "--check", "."),
    (sys.executable, "-m", "lbfgs_gate", "inventory", "--check"),
    ("zizmor", "--offline", "--persona=auditor", "--min-severity=informational", ".github/workflows/"),
)


def lint(args) -> int:
    """ruff (check and format), the suite's inventory against its files, zizmor over the workflows:
    every one runs, and any finding fails."""
    _clone_only("lint")
    failed = []
    for command in LINT:
        print("+ " + " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command)), flush=True)
        if subprocess.run(command, cwd=PROJECT_ROOT, check=False).returncode != 0:
            failed.append(Path(command[0]).name if command[0] != sys.executable else "inventory")
    if failed:
        print(f"lint: {', '.join(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


def take_inventory(args) -> int:
    if args.check:
        problems = inventory.check()
        for problem in problems:
            print(f"inventory: {problem}", file=sys.stderr)
        if problems:
            print(
                "error: lbfgs_gate/suite/inventory.json is stale: run `nox -s inventory` and commit it", file=sys.stderr
            )
            return 1
        print(f"inventory: {len(inventory.expected())} tests, consistent with the suite's files")
        return 0
    runner.check_environment("inventory")
    record = runner.run(
        [runner.SUITE, "--collect-only"],
        reports=work_dir() / "reports" / "inventory",
        name="suite",
        patch_state="collecting the inventory",
        args=["--known-defects="],
    )
    if record.collection_errors:
        raise GateError(f"the suite does not collect: {record.collection_errors[0]}")
    written = inventory.write(record.inventory)
    print(f"wrote {written.relative_to(inventory.PROJECT_ROOT)}: {len(inventory.expected())} tests")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lbfgs-gate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    in_session = commands.add_parser("session", help="a gate session, inside its environment: verdict and reports")
    in_session.add_argument("name", choices=sorted(sessions.SESSIONS))
    in_session.add_argument("--release", help="optax release (default: constraints/base.txt's; upstream: newest.txt's)")
    in_session.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    in_session.add_argument("--sdist-dir", help="folder holding optax-<release>.tar.gz (offline use)")
    in_session.add_argument("pytest_args", nargs="*", help="pytest arguments for the suite (after --)")
    in_session.set_defaults(run=session)

    standing = commands.add_parser("status", help="where each patch stands against a source tree")
    standing.add_argument("--tree", required=True)
    standing.add_argument("--release", help="the tree's optax release, for patches already upstream")
    standing.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    standing.add_argument("--json", help="also write the table as JSON to this file")
    standing.set_defaults(run=status)

    download = commands.add_parser("fetch", help="download and check optax sdists into build/sdists")
    download.add_argument("releases", nargs="*", metavar="RELEASE", help="default: every release of the matrix")
    download.set_defaults(run=fetch)

    listing = commands.add_parser("inventory", help="write (or --check) the suite's committed inventory")
    listing.add_argument("--check", action="store_true", help="compare it with the suite's files (no jax needed)")
    listing.set_defaults(run=take_inventory)

    own = commands.add_parser("selftest", help="the gate's own tests (a clone; --end-to-end: the fork gate)")
    own.add_argument("--end-to-end", action="store_true", help="the fork gate end to end on simulated forks (slow)")
    own.add_argument("pytest_args", nargs="*", help="pytest arguments (after --)")
    own.set_defaults(run=selftest)

    linting = commands.add_parser("lint", help="ruff, the inventory check and zizmor over the project (a clone)")
    linting.set_defaults(run=lint)

    check.add_command(commands)
    fork.add_command(commands)
    matrix.add_command(commands)

    # Everything after "--" is passed through to pytest.
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = []
    if "--" in argv:
        argv, passthrough = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    if passthrough and not hasattr(args, "pytest_args"):
        parser.error(f"{args.command} takes no pytest arguments")
    if hasattr(args, "pytest_args"):
        args.pytest_args = [*args.pytest_args, *passthrough]
    try:
        code = args.run(args)
    except GateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
