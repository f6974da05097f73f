"""The fork gate: an optax fork checked against the patch series and the suite.

`python -m lbfgs_gate fork SOURCE [--ref REF] [--apply] [--accept DEFECT=REASON]` (and
`nox -s fork -- ...`):

1. checks the fork out (a local checkout or a git URL, at REF or its HEAD) into a
   scratch folder, so the fork itself is never touched (source.py);
2. tells, for each patch of the series, whether the fork already carries it,
   whether it applies cleanly, or where it conflicts (advice.py);
3. finds the fork's base release from its contents, not its __version__ (base.py),
   installs the fork as it is (with --apply: with the missing patches applied by
   `git am`), built in isolation, into an environment pinned for that release
   (environment.py), and runs the whole suite expecting no defect but the accepted ones;
4. judges the record with lbfgs_gate/verdict.py, like every session, and writes
   verdict.json, report.md and junit.xml (report.py); exits 0 (green), 1 (red) or
   2 (bad input, one-line error, nothing left behind). A patch that applies cleanly
   (the fork lacks it) while its defect reads absent is red too: the detectors did not
   see a defect the fork's code still has.

Trust model: the gate catches a fork's mistakes, not a fork written to fool it. The
suite runs in the same processes as the fork's optax, which can rewrite the suite on
import; run an untrusted fork in a container or a throwaway machine (docs/fork.md).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from lbfgs_gate import (
    PATCHES_DIR,
    PROJECT_ROOT,
    GateError,
    defects,
    inventory,
    pipeline,
    release_comparison,
    runner,
    series,
    skeleton,
    work_dir,
)
from lbfgs_gate import verdict as verdicts
from lbfgs_gate.fork.advice import apply_missing, find_defects, git_am_command, patch_statuses
from lbfgs_gate.fork.base import base_release
from lbfgs_gate.fork.environment import build_environment, environment_dir, find_uv, fork_constraints
from lbfgs_gate.fork.report import Report, print_verdict, remove_reports, write_reports
from lbfgs_gate.fork.source import _git, check_local_source, checkout, is_url, optax_version


def parse_accepted(entries: list[str]) -> dict[str, str]:
    """--accept DEFECT=REASON, repeatable: a defect the fork ships knowingly, and why."""
    accepted = {}
    for entry in entries:
        name, _, reason = entry.partition("=")
        name, reason = name.strip(), reason.strip()
        if name not in defects.DEFECTS or defects.DEFECTS[name].patch is None:
            patchable = ", ".join(sorted(n for n, d in defects.DEFECTS.items() if d.patch))
            raise GateError(f"--accept {entry!r}: {name!r} is not a defect the series fixes: use one of {patchable}")
        if not reason:
            raise GateError(f'--accept {name}: give the reason, as --accept {name}="why the fork ships it"')
        accepted[name] = reason
    return accepted


def run(
    source: str,
    ref: str | None = None,
    *,
    apply: bool = False,
    table_only: bool = False,
    output: Path | None = None,
    series_file: Path = PATCHES_DIR / "series",
    pytest_args=(),
    accept: dict[str, str] | list[str] | None = None,
    uv: str | None = None,
    sdist_dir=None,
) -> int:
    """The fork gate; returns the exit code (0 green or table only, 1 red). Bad input: GateError.
    `accept` is {DEFECT: REASON} or the command line's DEFECT=REASON entries."""
    output = Path(output) if output else work_dir() / ("fork-apply" if apply else "fork")

    def clear() -> Path:
        remove_reports(output)  # first: no exit path may leave a previous verdict behind
        return output

    skeleton.start("fork", list(pytest_args), clear)
    if isinstance(accept, list):
        accept = parse_accepted(accept)
    if not is_url(source):
        check_local_source(source)  # before any scratch folder exists
    scratch = Path(tempfile.mkdtemp(prefix="lbfgs-gate-fork-"))
    try:
        fork = checkout(source, ref, scratch / "fork")
        declared = optax_version(fork.tree, fork.label)
        base = base_release(fork.tree, declared, sdist_dir)
        version, constraints, exact = base.release, base.constraints, base.lines == 0
        statuses, paths = patch_statuses(fork.tree, version, series_file)
        print(f"fork: {fork.label}, {base.label}; pins: {constraints.relative_to(PROJECT_ROOT)}", flush=True)
        print(series.format_table(statuses), flush=True)
        missing = [paths[s.patch] for s in statuses if s.state in ("applies", "conflicts")]
        report = Report(
            verdict="not run",
            fork={
                "source": source,
                "ref": fork.ref,
                "commit": fork.commit,
                "optax_version": declared,
                "base_release": version,
                "base_lines_different": base.lines,
                "constraints": str(constraints.relative_to(PROJECT_ROOT)),
                "constraints_exact": exact,
            },
            run="patch table only" if table_only else "as is",
            patches=[asdict(s) for s in statuses],
            apply_all=git_am_command(fork, missing) if missing else "",
        )
        if table_only:
            write_reports(report, output)
            return 0
        patch_state = f"fork {fork.label} as is"
        applied_any = False
        if apply:
            # The tree without the series, for the primal comparison: the fork's commit as it is.
            _git("worktree", "add", "--quiet", "--detach", str(scratch / "as-is"), fork.commit, cwd=fork.tree)
            applied = apply_missing(fork.tree, statuses, paths)
            report.applied = [asdict(a) for a in applied]
            applied_any = any(a.ok for a in applied)
            numbers = ", ".join(a.patch.split("-", 1)[0] for a in applied if a.ok) or "no patch"
            report.run = f"with missing patches applied by git am ({numbers})"
            patch_state = f"fork {fork.label} + {numbers} (git am)"
            for a in applied:
                print(f"{a.patch}: {a.how}: " + ("applied" if a.ok else f"NOT applied ({a.detail})"), flush=True)
            # Defects are judged against the tree that ran: a patch applied here is no
            # longer one to advise applying.
            statuses, paths = patch_statuses(fork.tree, version, series_file)
        pins = fork_constraints(constraints, scratch / "constraints.txt")
        uv_binary = find_uv() if uv is None else uv
        python = build_environment(environment_dir(pins, uv_binary), fork.tree, pins, uv_binary)
        env_extra = {}
        left_out = defects.absent_option_tests(fork.tree / "optax")
        only = None  # every defect judged
        if applied_any:
            # The fork with the patches against the same fork without them, in this environment:
            # its primal results bit for bit, its derivatives on the corpus of users' loops.
            env_extra = pipeline.release_records(scratch / "as-is", python=python)
            report.primal = "compared with the fork as it is (without the patches applied here), bit for bit"
        else:
            left_out = (*runner.COMPARISON_TESTS, *left_out)
            only = defects.judged_without_the_release()
            report.primal = (
                "nothing applied, nothing to compare (test_primal_identity.py and test_never_worse.py not run)"
            )
        print(f"primal identity: {report.primal}", flush=True)
        plan = skeleton.Plan(
            session="fork",
            optax=patch_state,
            expectation=verdicts.Expectation(
                accepted=accept or {},
                inventory=inventory.expected(left_out),
                only=only,
            ),
            suite=[runner.SUITE, *(f"--ignore={module}" for module in left_out)],
            python=python,
            env_extra=env_extra,
            amend=lambda judged: _unseen_defects(judged, statuses),
        )
        # The fork's reports (the patch table, the findings) are written by report.py.
        judged, records = skeleton.run_session(plan, output, pytest_args, write=False, show=False)
        report.judged, report.verdict = judged, judged.verdict
        report.findings = [asdict(f) for f in find_defects(judged, records, statuses, paths, fork)]
        report.comparison = release_comparison.lines(records, "the fork as it is (without the patches applied here)")
        write_reports(report, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_verdict(report, output)
    return 0 if report.verdict == "green" else 1


def _unseen_defects(judged: verdicts.Verdict, statuses: list[series.Status]) -> None:
    """Red when a patch applies cleanly to the tree that ran (the fork lacks it) while its
    defect reads absent: the code still has the defect; the detectors did not see it."""
    by_patch = {d.patch: name for name, d in defects.DEFECTS.items() if d.patch}
    for status in statuses:
        name = by_patch.get(status.patch)
        if status.state != "applies" or name is None or name in judged.accepted:
            continue
        if judged.defects[name].outcome == "absent":
            judged.reasons.append(
                f"{name} reads absent, yet {status.patch} applies cleanly to the fork, which lacks its fix: "
                "its detectors did not see a defect the code still has (another jax line, a changed test, or "
                "code that changes the suite); gate the fork with --apply, or run it sandboxed and inspect it"
            )
            judged.defects[name].outcome = "absent, but its patch applies (suspicious)"
    if judged.reasons:
        judged.verdict = "red"


def add_command(commands) -> None:
    """Registers `python -m lbfgs_gate fork` on the CLI's subcommands."""
    command = commands.add_parser("fork", help="gate an optax fork: patch table, suite, verdict")
    command.add_argument("source", help="the fork: a local git checkout or a git URL (file:// works offline)")
    command.add_argument("--ref", help="commit, branch or tag to test (default: the source's HEAD)")
    command.add_argument(
        "--apply",
        action="store_true",
        help="apply the missing patches (git am) to a scratch copy and run the suite there",
    )
    command.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="DEFECT=REASON",
        help="a defect the fork ships knowingly (repeatable): reported as accepted, not red",
    )
    command.add_argument("--table-only", action="store_true", help="only the patch table: install and run nothing")
    command.add_argument(
        "--output",
        type=Path,
        help="folder for report.md, verdict.json, junit.xml (default build/fork, build/fork-apply)",
    )
    command.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    command.add_argument("pytest_args", nargs="*", help="extra pytest arguments for the suite (after --)")
    command.set_defaults(
        run=lambda args: run(
            args.source,
            args.ref,
            apply=args.apply,
            table_only=args.table_only,
            output=args.output,
            series_file=args.series,
            pytest_args=args.pytest_args,
            accept=list(args.accept),
        )
    )
