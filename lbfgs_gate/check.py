"""`lbfgs-gate check`: is the optax importable here safe to differentiate through L-BFGS?

It judges the optax and jax of the environment it runs in, as they are, expecting every
defect the series fixes absent: the same runner (environment allowlist, plugins by name,
time bounds), record and verdict (lbfgs_gate/verdict.py) as the gate's sessions. The quick
default runs a few cheap detectors per defect (QUICK, none a hypothesis property); `--thorough`
runs every detector of the suite with the gate's full property search. For each defect found
present it names the patch that fixes it, where it stands upstream, the command that applies
it to a checkout of the release found, and what to do meanwhile.

Where the optax judged is not the release it reports as published (the series applied, a fork),
the check also compares its derivatives with that release's on users' loops (test_never_worse.py,
lbfgs_gate/suite/corpus.py): the release's sdist is downloaded (checked by the hash the package
ships) and its errors recorded in this environment, as the patched sessions record them. The quick
set measures one loop of each class (corpus.QUICK), `--thorough` the whole corpus and the property
searches. A loop where the optax falls short of min(max(10 x the release's error, floor), cap) is
printed with both errors; where it is one of the series' known shortfalls (the limit
derivative-short-of-release) the verdict does not count it, elsewhere it is red (PASS_TO_PASS).

Exit status: 0 green (no defect), 1 red (a defect present, a loop worse than the release outside
the known limit, or a run that did not complete), 2 bad input (optax or jax missing or too old, a
refused option or environment variable, the release's sdist not downloadable).
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
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
    sdist,
    series,
    skeleton,
    tree,
    verdict,
    work_dir,
)
from lbfgs_gate.suite import corpus

SESSION = "check"
# The oldest optax whose L-BFGS the suite knows (the matrix's first release).
OLDEST_OPTAX = "0.2.3"
OLDEST_JAX = "0.4.30"

# The quick default's detectors of each defect the series fixes: plain tests (no hypothesis
# search), each asserting the defect's property against an independent reference (a finite but
# wrong derivative is a detection, not only a NaN), that together reproduce the defect on every
# release that has it and pass on every release with the series (tests/gate/test_check.py checks
# the list against the suite). A defect has more than one where one symptom does not cover what a
# plausible partial fix gets wrong: the seed leak's spurious term (|g0| > 1) and its NaN (g0 = 0);
# the memory's first derivative (past convergence) and its second (a custom_jvp that only makes
# the first tangent finite); the stepsize's NaN past convergence and its finite, wrong tangent
# in a converged solve (a custom_jvp that makes it finite passes the first). The stalled memory's
# divergence is a tangent rule, the same in both modes, so the quick set runs its forward detector
# alone (the reverse one, 2.5 s more, runs in --thorough and the sessions): a fix by custom_vjp
# cannot be differentiated forward, and the forward detector then crashes, which is red.
QUICK = {
    "seed-leak": (
        "lbfgs_gate/suite/test_seed_leak.py::"
        "test_first_direction_has_no_tangent_through_identity_scale[float64-g=(3,4)]",
        "lbfgs_gate/suite/test_seed_leak.py::"
        "test_issue_1189_forward_derivative_through_while_loop_solve_is_that_of_its_one_step[float64]",
    ),
    "reverse-nan": (
        "lbfgs_gate/suite/test_reverse_nan.py::"
        "test_gradient_after_convergence_matches_the_implicit_function_answer[float64-2d]",
    ),
    "memory-leak": (
        "lbfgs_gate/suite/test_pytrees.py::test_unroll_past_convergence_memory_tangent_is_the_implicit_one[float32]",
        "lbfgs_gate/suite/test_user_loops.py::"
        "test_second_forward_derivative_through_an_unroll_is_the_implicit_one[float64]",
    ),
    "stepsize-leak": (
        "lbfgs_gate/suite/test_pytrees.py::test_unroll_past_convergence_stepsize_tangent_is_the_implicit_one[float32]",
        "lbfgs_gate/suite/test_properties.py::test_converged_solve_jacobian_wrt_b_is_inverse_hessian",
    ),
    "weight-underflow": (
        "lbfgs_gate/suite/test_weight_underflow.py::"
        "test_reverse_gradient_of_small_problem_is_the_implicit_one[loop-returning-its-state-1e-4-float32]",
    ),
    "stalled-memory-divergence": (
        "lbfgs_gate/suite/test_notebook_loops.py::test_loop_stalled_at_rounding_keeps_its_curvature[float64-jacfwd]",
    ),
}
QUICK_NODES = tuple(nodeid for nodeids in QUICK.values() for nodeid in nodeids)

# What a user can do while the optax they have carries the defect.
MEANWHILE = {
    "seed-leak": "upgrade optax to 0.2.5 or newer (upstream's fix), or differentiate the solution implicitly",
    "reverse-nan": "use forward mode (jax.jvp, jax.jacfwd) through the loop, or differentiate the solution implicitly",
    "memory-leak": "differentiate the solution implicitly (jax.lax.custom_root around the solve) instead of "
    "through its iterations",
    "stepsize-leak": "differentiate the solution implicitly instead of through the zoom linesearch's iterations",
    "weight-underflow": "in float32, differentiate the solution implicitly, or run the solve in float64",
    "stalled-memory-divergence": "stop a fixed-step loop at convergence (a tolerance on |g|) instead of running a "
    "fixed number of steps past it, or differentiate the solution implicitly",
}
IMPLICIT = "a tested recipe ships here: lbfgs_gate.suite.solvers.implicit_lbfgs_solve"

# The comparison with the release (test_never_worse.py): the quick set measures one loop of each
# class (corpus.QUICK), --thorough the whole corpus and the two property searches.
QUICK_COMPARISON = tuple(release_comparison.node(name, dtype) for name, dtype in corpus.QUICK)


@dataclass(frozen=True)
class Comparison:
    """What the check compares the optax it judges with: the release as published, recorded here."""

    release: str
    records: dict[str, str]  # the variables naming the release's record and package to the suite
    why_not: str = ""  # where nothing is compared: why


def release_to_compare(version: str, thorough: bool) -> Comparison:
    """The release the judged optax reports, as published (its sdist, checked by hash), with its
    errors on the corpus recorded by this environment's jax; no records where the judged optax is
    that release itself, or where the gate knows no sdist of it."""
    release = release_of(version)
    try:
        sdist.known_hash(release)
    except GateError:
        return Comparison(release, {}, f"the gate knows no published sdist of optax {release} (lbfgs_gate/sdists.txt)")
    pristine = pipeline.pristine_tree(release)
    if tree.difference(pristine) is None:
        return Comparison(release, {}, f"this optax is {release} as published, file for file: nothing to compare")
    if thorough:
        derivatives = pipeline.release_derivatives(pristine, state="as published, the whole corpus")
        return Comparison(release, _comparison_variables(pristine, derivatives))
    return Comparison(release, quick_release_records(pristine))


def quick_release_records(pristine: Path) -> dict[str, str]:
    """The release's errors on the quick set (corpus.QUICK), recorded from `pristine` (the release
    as published) by two recorders side by side, as the variables that name them to the suite."""
    state = "as published, one loop of each class"
    derivatives = pipeline.release_derivatives_side_by_side(pristine, only=corpus.QUICK, state=state)
    return _comparison_variables(pristine, derivatives)


def _comparison_variables(pristine: Path, derivatives: Path) -> dict[str, str]:
    # Not pipeline.release_records, which records the primal reference too (the patched sessions').
    return {corpus.VARIABLE: str(derivatives), corpus.PACKAGE_VARIABLE: str(pipeline.release_package(pristine))}


def comparison_lines(comparison: Comparison, records: dict) -> list[str]:
    """The comparison's outcome (release_comparison.lines), or why nothing was compared."""
    if not comparison.records:
        return [f"derivatives against the release as published: not compared ({comparison.why_not})"]
    return release_comparison.lines(records, f"optax {comparison.release} as published")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _too_old(found: str, oldest: str) -> bool:
    return series.version_tuple(re.match(r"[\d.]*\d", found).group(0)) < series.version_tuple(oldest)


def installed_versions() -> dict[str, str]:
    """optax, jax and jaxlib as this environment has them; a GateError if one is missing or too old."""
    found = {name: _version(name) for name in ("optax", "jax", "jaxlib")}
    where = sys.executable
    for name, oldest in (("optax", OLDEST_OPTAX), ("jax", OLDEST_JAX), ("jaxlib", OLDEST_JAX)):
        if found[name] is None:
            raise GateError(
                f"{name} is not installed in this environment ({where}): run lbfgs-gate from the environment "
                f"whose optax you want judged, or install {name} there"
            )
        if not re.match(r"\d", found[name]) or _too_old(found[name], oldest):
            raise GateError(
                f"{name} {found[name]} is older than {oldest}, the oldest the detectors know: upgrade it "
                f"(pip install -U {name}) or judge it with a clone's `nox -s matrix`"
            )
    for name in ("jax", "optax"):
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - any failure to import is the message
            raise GateError(
                f"{name} {found[name]} is installed but cannot be imported ({type(error).__name__}: {error}): "
                "repair this environment first"
            ) from None
    return found


def optax_imported(cwd: Path, env: dict | None = None) -> Path | None:
    """The optax package folder that `import optax` gives to a Python started in `cwd` with
    `env` (None: this process's environment); None when there is none. Found without
    importing it (importlib's spec), so no jax is loaded for the answer."""
    found = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; s = u.find_spec('optax'); print(s and s.origin or '')"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    origin = found.stdout.strip() if found.returncode == 0 else ""
    return Path(origin).resolve().parent if origin else None


def judged_optax() -> Path:
    """The optax the detectors will import, which must be the one `import optax` gives where the
    check is run: a folder holding its own optax/ (a checkout, a vendored copy) shadows the
    installed one for the user, not for the detectors' process."""
    here = optax_imported(Path.cwd())
    judged = optax_imported(PROJECT_ROOT, runner.environment(SESSION))
    if here != judged:
        raise GateError(
            f"`import optax` here gives {here}, but the check would judge {judged}: run lbfgs-gate check "
            "from a folder without its own optax/, or install that copy (pip install -e PATH) and run it elsewhere"
        )
    return judged


def release_of(version: str) -> str:
    """The release a version string belongs to (0.2.5.dev0 -> 0.2.5), for the patch files to use."""
    return re.match(r"\d+(\.\d+)*", version).group(0)


def patches_for(release: str, only: set[str] | None = None, tree: Path | None = None) -> list[Path]:
    """The files of the series for `release`, in order, leaving out patches already upstream (or,
    with `tree`, already applied there); only those of the defects in `only`, if given. Which
    variant serves a release is series.file_for's rule; `tree`, a checkout, is also checked
    for what applies and what it already carries."""
    patches = series.read_series(PATCHES_DIR / "series")
    if tree is not None:
        statuses = series.series_status(tree, patches, release)
        stuck = series.blocking(statuses)
        if stuck is not None:
            raise GateError(
                f"the series does not apply to the optax checkout {tree}: {stuck.patch} {stuck.state} ({stuck.detail})"
            )
    else:
        checked = series.checked_releases()
        if release not in checked:
            raise GateError(
                f"optax {release} is not a release the series was checked on ({', '.join(checked)}): "
                "pass --tree PATH/TO/optax to choose the patches on your checkout"
            )
        statuses = [series.Status(p.name, _published_state(p, release), "", _source(p, release)) for p in patches]
    by_patch = {d.patch: d.name for d in defects.DEFECTS.values() if d.patch}
    return [
        PATCHES_DIR / status.source
        for status in statuses
        if status.state == "applies" and (only is None or by_patch.get(status.patch) in only)
    ]


def _published_state(patch: Path, release: str) -> str:
    shipped = series.read_patch(patch).applied_upstream
    return "upstream" if shipped and series.version_tuple(release) >= series.version_tuple(shipped) else "applies"


def _source(patch: Path, release: str) -> str:
    return str(series.file_for(patch, release).relative_to(patch.parent))


def advice(judged: verdict.Verdict, version: str) -> list[str]:
    """For each defect present: its patch, where it stands upstream, the command, what to do meanwhile."""
    release = release_of(version)
    lines = []
    present = [name for name, row in judged.defects.items() if row.reproduced and defects.DEFECTS[name].patch]
    for name in present:
        defect = defects.DEFECTS[name]
        info = series.read_patch(PATCHES_DIR / defect.patch)
        upstream = info.applied_upstream
        where = (
            f"upstream since optax {upstream}"
            if upstream
            else f"not upstream (forwarded: {info.trailers.get('Forwarded', 'no')})"
        )
        lines += [
            f"{name}: {defect.summary}",
            f"  fixed by {defect.patch} ({where})",
            f"  meanwhile: {MEANWHILE.get(name, 'differentiate the solution implicitly')} ({IMPLICIT})",
        ]
    if present:
        lines += [
            "",
            f"To apply the series to a checkout of optax {release} (git am takes the patches in order):",
            f"  lbfgs-gate patches --release {release} --print | git -C PATH/TO/optax am",
            "  (a checkout that is not the release as published: --tree PATH/TO/optax instead of --release)",
            "  then reinstall optax from that checkout and run lbfgs-gate check again",
        ]
    return lines


def run(thorough: bool, json_path: Path | None, pytest_args: list[str]) -> int:
    def clear() -> Path:
        """Before anything else: no earlier verdict of this command survives it."""
        if json_path is not None:
            Path(json_path).unlink(missing_ok=True)
        return skeleton.clear(work_dir() / "reports" / SESSION)

    reports = skeleton.start(SESSION, pytest_args, clear)
    versions = installed_versions()
    optax = f"optax {versions['optax']} (jax {versions['jax']}) from {judged_optax()}"
    expected = inventory.expected()
    missing = [nodeid for nodeid in (*QUICK_NODES, *QUICK_COMPARISON) if nodeid not in expected]
    if missing:
        raise GateError(f"the quick detector {missing[0]} is not in the suite's inventory: reinstall lbfgs-gate")
    print(f"lbfgs-gate check ({'thorough' if thorough else 'quick'}): {optax}", flush=True)
    comparison = release_to_compare(versions["optax"], thorough)
    if thorough:
        compared = {nodeid: names for nodeid, names in expected.items() if nodeid.startswith(runner.NEVER_WORSE_TEST)}
        nodes = {nodeid: names for nodeid, names in expected.items() if names and nodeid not in compared}
        targets = [runner.SUITE, "-m", "defect", f"--ignore={runner.NEVER_WORSE_TEST}"]
        if comparison.records:
            nodes.update(compared)
            targets = sorted(nodes)
    else:
        nodes = {nodeid: expected[nodeid] for nodeid in QUICK_NODES}
        if comparison.records:
            nodes.update({nodeid: expected[nodeid] for nodeid in QUICK_COMPARISON})
        targets = sorted(nodes)
    patchable = frozenset(d.name for d in defects.DEFECTS.values() if d.patch)
    plan = skeleton.Plan(
        session=SESSION,
        optax=optax,
        # Node ids named one by one are all judged, the comparison's PASS_TO_PASS loops included (a
        # loop not run is red); `-m defect` (--thorough, nothing compared) selects detectors only.
        expectation=verdict.Expectation(detectors_only="-m" in targets, inventory=nodes, only=patchable),
        suite=targets,
        label=f"{len(nodes)} tests of lbfgs_gate/suite",
        env_extra=comparison.records,
    )
    judged, records = skeleton.run_session(plan, reports, pytest_args, show=False)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reports / "verdict.json", json_path)
    table = verdict.table(judged).splitlines()
    print("\n".join(table[:-1]))
    for line in advice(judged, versions["optax"]):
        print(line)
    for line in comparison_lines(comparison, records):
        print(line)
    print(f"reports: {runner.shown(reports)}", flush=True)
    print(table[-1], flush=True)
    return 0 if judged.green else 1


def print_patches(release: str | None, show: bool, only: list[str], tree: Path | None = None) -> int:
    """`lbfgs-gate patches`: the series' files for a release, listed, or printed for `git am`."""
    if tree is not None and not (Path(tree) / "optax" / "_src" / "transform.py").is_file():
        raise GateError(f"--tree {tree}: not an optax checkout (no optax/_src/transform.py there)")
    if release is None and tree is not None:
        release = series.tree_release(Path(tree))
    if release is None:
        found = _version("optax")
        if found is None:
            raise GateError("no optax is installed here to take the release from: pass --release X.Y.Z")
        release = found
    if not re.match(r"\d+(\.\d+)+", release):
        raise GateError(f"--release {release!r} is not a release number such as 0.2.4")
    try:
        wanted = set(defects.parse_names(",".join(only))) if only else None
    except GateError as error:
        raise GateError(f"--defect: {error}") from None
    files = patches_for(release_of(release), wanted, tree)
    if show:
        for path in files:
            sys.stdout.write(path.read_text())
        return 0
    where = f"the optax checkout {tree}" if tree is not None else f"optax {release_of(release)}"
    print(f"the series for {where}: {len(files)} patches to apply (git am takes them in this order)")
    for path in files:
        print(f"  {path}")
    return 0


def add_command(commands) -> None:
    """Registers `check` and `patches` on the CLI's subcommands."""
    command = commands.add_parser("check", help="judge the optax installed here: is it safe to differentiate through?")
    command.add_argument("--thorough", action="store_true", help="every detector, with the full property search")
    command.add_argument("--json", type=Path, metavar="PATH", help="also write the verdict (verdict.json) here")
    command.add_argument("pytest_args", nargs="*", help="pytest arguments (after --): -n N, -v, --tb")
    command.set_defaults(run=lambda args: run(args.thorough, args.json, args.pytest_args))

    listing = commands.add_parser("patches", help="the patch series for a release: listed, or --print for git am")
    listing.add_argument("--release", help="default: the optax installed here")
    listing.add_argument("--print", dest="show", action="store_true", help="print the patches (an mbox for git am)")
    listing.add_argument("--defect", action="append", default=[], help="only the patch of this defect (repeatable)")
    listing.add_argument(
        "--tree", type=Path, metavar="PATH", help="an optax checkout: choose the patches that apply to it"
    )
    listing.set_defaults(run=lambda args: print_patches(args.release, args.show, args.defect, args.tree))
