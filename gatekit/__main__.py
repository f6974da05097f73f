"""Command line of the gate's machinery: `python -m gatekit COMMAND ...`.

nox and tox sessions call these commands inside their environments, so that both
runners share one implementation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gatekit import PATCHES_DIR, GateError, fork, matrix, sdist, series, sessions, tree, upstream
from gatekit import optax_tests as optax_tests_module


def install_patched(args) -> None:
    patched = tree.prepare(args.release, args.series, args.sdist_dir)
    tree.install(patched)
    tree.verify(patched, tree.touched_files(args.series, patched))
    print(f"installed and verified: optax {args.release} + {_patch_numbers(args.series)}")


def _patch_numbers(series_file: Path) -> str:
    return ", ".join(series.read_patch(p).number for p in series.read_series(series_file))


def optax_tests(args) -> None:
    optax_tests_module.run(args.release, args.series, args.expect, args.upstream, args.pytest_args, args.sdist_dir)


def session(args) -> None:
    run = getattr(sessions, args.name.replace("-", "_"))
    run(args.release, args.series, args.pytest_args, sdist_dir=args.sdist_dir)


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

    in_session = commands.add_parser("session", help="what a gate session does inside its environment")
    in_session.add_argument("name", choices=("unpatched", "patched"))
    release_options(in_session)
    in_session.add_argument("pytest_args", nargs="*", help="extra pytest arguments for the suite (after --)")
    in_session.set_defaults(run=session)

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

    # Everything after "--" is passed through to pytest untouched.
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
        # A command may return an exit code: the fork gate returns 1 for a red verdict.
        code = args.run(args)
    except GateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
