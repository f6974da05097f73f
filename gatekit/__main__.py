"""Command line of the gate's machinery: `python -m gatekit COMMAND ...`.

nox and tox sessions call these commands inside their environments, so that both
runners share one implementation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gatekit import PATCHES_DIR, GateError, fork, matrix, sdist, series, tree, upstream

# optax's own tests that exercise L-BFGS and the linesearches (pytest node ids).
UPSTREAM_TESTS = ("optax/_src/alias_test.py::LBFGSTest", "optax/_src/linesearch_test.py")


def _pytest(tests: list[str], tree_dir: Path, extra: list[str]) -> int:
    """Runs optax test files from `tree_dir` against the optax installed here.

    The files are copied out of the tree first: run in place, pytest would import
    them as part of the tree's `optax` package, and so test the tree, not the install.
    """
    with tempfile.TemporaryDirectory(prefix="optax-tests-") as scratch:
        (Path(scratch) / "pytest.ini").write_text("[pytest]\n")
        targets = []
        for test in tests:
            relative, _, node = test.partition("::")
            copy = Path(scratch) / Path(relative).name
            shutil.copyfile(tree_dir / relative, copy)
            targets.append(f"{copy.name}::{node}" if node else copy.name)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra, *targets]
        print("+", " ".join(command), f"(in a copy of {', '.join(tests)})", flush=True)
        return subprocess.run(command, check=False, cwd=scratch).returncode


def install_patched(args) -> None:
    patched = tree.prepare(args.release, args.series, args.sdist_dir)
    tree.install(patched)
    tree.verify(patched, tree.touched_files(args.series, patched))
    print(f"installed and verified: optax {args.release} + {_patch_numbers(args.series)}")


def _patch_numbers(series_file: Path) -> str:
    return ", ".join(series.read_patch(p).number for p in series.read_series(series_file))


def optax_tests(args) -> None:
    """Runs the tests the series adds to optax (and optax's own) on the installed optax."""
    patched = tree.prepare(args.release, args.series, args.sdist_dir)
    added = tree.optax_test_modules(patched, args.series)
    if args.expect == "pass":
        paths = [str(m.relative_to(patched)) for m in added]
        if args.upstream:
            paths += list(UPSTREAM_TESTS)
        if _pytest(paths, patched, args.pytest_args) != 0:
            raise GateError("optax's tests failed on the installed optax: see the pytest report above")
        return
    # On the release as published, each test module the series adds must catch its defect.
    for module in added:
        code = _pytest([str(module.relative_to(patched))], patched, args.pytest_args)
        if code != 1:
            raise GateError(
                f"{module.name} was expected to fail on optax {args.release} as released "
                f"(pytest exit {code}, not 1): the test no longer detects its defect"
            )
        print(f"{module.name}: fails on the release as published, as it must")


def status(args) -> None:
    if not (Path(args.tree) / "optax/_src/transform.py").is_file():
        raise GateError(f"{args.tree} is not an optax source tree (no optax/_src/transform.py): "
                        "pass the root of an optax checkout")
    statuses = [series.patch_status(Path(args.tree), p, args.release) for p in series.read_series(args.series)]
    print(series.format_table(statuses))
    if args.json:
        Path(args.json).write_text(json.dumps([s.__dict__ for s in statuses], indent=2) + "\n")


def verify(args) -> None:
    patched = tree.prepare(args.release, args.series, args.sdist_dir, report=lambda _: None)
    tree.verify(patched, tree.touched_files(args.series, patched))
    print(f"verified: the optax imported here is optax {args.release} + {_patch_numbers(args.series)}")


def fetch(args) -> None:
    for release in args.releases:
        print(sdist.fetch(release))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatekit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def release_options(command):
        command.add_argument("--release", default="0.2.4", help="optax release (default 0.2.4)")
        command.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
        command.add_argument("--sdist-dir", help="folder holding optax-<release>.tar.gz (offline use)")

    install = commands.add_parser("install-patched", help="build, install and verify the patched release")
    release_options(install)
    install.set_defaults(run=install_patched)

    tests = commands.add_parser("optax-tests", help="run optax's tests added by the series (and its own)")
    release_options(tests)
    tests.add_argument("--expect", choices=("pass", "fail"), required=True)
    tests.add_argument("--upstream", action="store_true", help="also run optax's L-BFGS and linesearch tests")
    tests.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    tests.set_defaults(run=optax_tests)

    check = commands.add_parser("status", help="where each patch stands against a source tree")
    check.add_argument("--tree", required=True)
    check.add_argument("--release", help="the tree's optax release, for patches already upstream")
    check.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    check.add_argument("--json", help="also write the table as JSON to this file")
    check.set_defaults(run=status)

    check_install = commands.add_parser("verify", help="refuse unless the imported optax is the patched tree")
    release_options(check_install)
    check_install.set_defaults(run=verify)

    download = commands.add_parser("fetch", help="download and check optax sdists into build/sdists")
    download.add_argument("releases", nargs="+", metavar="RELEASE")
    download.set_defaults(run=fetch)

    fork.add_command(commands)
    upstream.add_command(commands)
    matrix.add_command(commands)

    args = parser.parse_args(argv)
    try:
        # A command may return an exit code: the fork gate returns 1 for a red verdict.
        code = args.run(args)
    except GateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
