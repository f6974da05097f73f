"""The fork gate: an optax fork checked against the patch series and the suite.

`python -m gatekit fork SOURCE [--ref REF] [--apply]` (and `nox -s fork -- ...`):

1. checks the fork out (a local checkout or a git URL, at REF or its HEAD) into a
   scratch folder, so the fork itself is never touched;
2. tells, for each patch of the series, whether the fork already carries it,
   whether it applies cleanly, or where it conflicts;
3. installs the fork as it is (with --apply: with the missing patches applied by
   `git am`) into a fresh environment pinned for its optax version, and runs the
   whole suite expecting no defect;
4. writes report.md, report.json and junit.xml, and exits 0 (green), 1 (a defect
   or another failure: red) or 2 (bad input, one-line error, nothing left behind).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from gatekit import CONSTRAINTS_DIR, PATCHES_DIR, PROJECT_ROOT, WORK_DIR, GateError, defects, sdist, series, sessions

REPORT_FILES = ("report.md", "report.json", "junit.xml")
REQUIREMENTS = PROJECT_ROOT / "requirements" / "test.txt"
SUITE = "tests/lbfgs"
# Identity for the commits `git am` makes in the scratch copy (CI machines often have none).
GATE_IDENTITY = (
    "-c",
    "user.name=lbfgs-gate",
    "-c",
    "user.email=lbfgs-gate@localhost",
    "-c",
    "commit.gpgsign=false",
)
# The longest minimal example the Markdown summary shows; the JUnit report has the rest.
EXAMPLE_LINES = 40

STATE_LABELS = {
    "applied": "already applied",
    "applies": "applies cleanly",
    "upstream": "fixed upstream",
    "conflicts": "conflicts",
}


def find_uv() -> str:
    """The uv binary to build the fork's environment with, or "" to fall back to venv + pip.

    The nox session calls this in nox's own interpreter, where uv is installed
    alongside nox even when it is not on PATH, and passes it on as $UV.
    """
    if os.environ.get("UV"):
        return os.environ["UV"]
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv") or ""


def _label(state: str) -> str:
    return STATE_LABELS.get(state, state)


# --- the fork's source -------------------------------------------------------------------------


def is_url(source: str) -> bool:
    """scheme://... or scp-like user@host:path, as git itself tells them from paths."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) or re.match(r"^[\w.-]+@[\w.-]+:", source))


def local_checkout(source: str) -> Path | None:
    """Where a user can run `git am` on the fork: the path itself, or a file:// URL's path."""
    if not is_url(source):
        return Path(source).expanduser().resolve()
    url = urlparse(source)
    return Path(unquote(url.path)) if url.scheme == "file" else None


def _git(*args: str, cwd=None, ceiling: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # a private URL must fail, not wait for a password
    if ceiling is not None:
        # Stops git from taking a folder inside another repository (this project's
        # build/, say) for part of that repository.
        env["GIT_CEILING_DIRECTORIES"] = str(ceiling)
    return subprocess.run(
        [series.require_tool("git"), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


@dataclass(frozen=True)
class Checkout:
    source: str
    ref: str  # what was asked for ("HEAD" when nothing was)
    commit: str
    tree: Path

    @property
    def label(self) -> str:
        return f"{self.source} at {self.ref} ({self.commit[:12]})"


def check_local_source(source: str) -> None:
    """Refuses a local source that is not the top of a git repository, before any work."""
    path = Path(source).expanduser()
    if not path.exists():
        raise GateError(f"{source} does not exist: pass the path of an optax checkout or a git URL")
    if not path.is_dir():
        raise GateError(f"{source} is not a directory: pass the path of an optax checkout or a git URL")
    found = _git("rev-parse", "--show-toplevel", cwd=path, ceiling=path.resolve().parent)
    if found.returncode != 0 or Path(found.stdout.strip()).resolve() != path.resolve():
        raise GateError(
            f"{source} is not a git repository: commit the fork with `git init` and `git commit`, or pass its git URL"
        )


def checkout(source: str, ref: str | None, destination: Path) -> Checkout:
    """Clones `source` into `destination` and checks out `ref` (default: its HEAD), detached.

    The fork's committed state is what is tested: a clone leaves the fork's own
    folder untouched, and a commit is what `git am` advice applies to.
    """
    if not is_url(source):
        check_local_source(source)
        if ref is None:
            dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=source).stdout.strip()
            if dirty:
                print(f"note: {source} has uncommitted changes; the gate tests its last commit", flush=True)
    cloned = _git("clone", "--quiet", "--no-checkout", source, str(destination))
    if cloned.returncode != 0:
        raise GateError(f"cannot clone {source} ({_last_line(cloned.stderr)}): pass an optax checkout or git URL")
    wanted = ref or "HEAD"
    # A branch of the source is a remote-tracking branch of the clone.
    for candidate in (wanted, f"origin/{wanted}"):
        found = _git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=destination)
        if found.returncode == 0:
            commit = found.stdout.strip()
            break
    else:
        if ref is None:
            raise GateError(f"{source} has no commit to test: commit the fork first")
        raise GateError(f"{ref!r} is not a commit, branch or tag of {source}: pass an existing ref")
    switched = _git("checkout", "--quiet", "--detach", commit, cwd=destination)
    if switched.returncode != 0:
        raise GateError(f"cannot check out {wanted} of {source} ({_last_line(switched.stderr)})")
    return Checkout(source, wanted, commit, destination)


def optax_version(tree: Path, label: str) -> str:
    """The version the fork's optax/__init__.py declares; refuses a tree that is not optax."""
    init = Path(tree) / "optax" / "__init__.py"
    if not init.is_file():
        raise GateError(f"{label} is not an optax source tree: it has no optax/__init__.py")
    found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", init.read_text(errors="replace"), re.M)
    if not found:
        raise GateError(f'{label}: optax/__init__.py sets no __version__ = "...", so its pins cannot be chosen')
    if not any("def scale_by_lbfgs(" in f.read_text(errors="replace") for f in (Path(tree) / "optax").rglob("*.py")):
        raise GateError(f"{label} has no scale_by_lbfgs: the gate tests optax's L-BFGS (optax 0.2.3 or later)")
    return found.group(1)


# --- pins and environment ------------------------------------------------------------------------


def constraints_for(version: str) -> tuple[Path, bool]:
    """constraints/optax-<version>.txt, or the nearest release's; and whether it is exact.

    Nearest by release number; between two equally near, the newer, since a fork
    declares the version it started from and its requirements only grow.
    """
    known = {}
    for path in CONSTRAINTS_DIR.glob("optax-*.txt"):
        release = path.name[len("optax-") : -len(".txt")]
        known[series.version_tuple(release)] = path
    if not known:
        raise GateError(f"no constraints/optax-<release>.txt in {CONSTRAINTS_DIR}: the fork's pins cannot be chosen")
    wanted = series.version_tuple(version)
    if wanted in known:
        return known[wanted], True

    def number(key):
        major, minor, micro = (*key, 0, 0, 0)[:3]
        return major * 1_000_000 + minor * 1_000 + micro

    nearest = min(known, key=lambda key: (abs(number(key) - number(wanted)), -number(key)))
    return known[nearest], False


def _fork_constraints(constraints: Path, destination: Path) -> Path:
    """The pins without the optax pin: the fork is the optax to install, whatever it calls itself."""
    lines = [line for line in constraints.read_text().splitlines() if not re.match(r"^\s*optax\s*(==|@|$)", line)]
    destination.write_text("\n".join(lines) + "\n")
    return destination


def _run_quiet(command: list[str], what: str) -> None:
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GateError(f"{what} failed ({_last_line(result.stderr)}): fix the pins or the fork's dependencies")


def build_environment(env_dir: Path, tree: Path, constraints: Path, uv: str) -> Path:
    """A fresh environment with the suite's requirements and the fork's optax; its python."""
    python = env_dir / "bin" / "python"
    if uv:
        _run_quiet([uv, "venv", "--quiet", "--python", sys.executable, str(env_dir)], "creating the environment")
        install = [uv, "pip", "install", "--quiet", "--python", str(python)]
    else:
        _run_quiet([sys.executable, "-m", "venv", str(env_dir)], "creating the environment")
        install = [str(python), "-m", "pip", "install", "--quiet"]
    _run_quiet([*install, "-r", str(REQUIREMENTS), "-c", str(constraints)], "installing the suite's requirements")
    # No build isolation: flit-core comes pinned from the requirements, so the
    # build needs no index; the fork's own dependencies still resolve under the pins.
    _run_quiet([*install, "--no-build-isolation", str(tree), "-c", str(constraints)], "installing the fork")
    verify_installed(python, tree)
    return python


def verify_installed(python: Path, tree: Path) -> None:
    """Refuses unless the optax the environment imports is, file for file, the fork's."""
    found = subprocess.run(
        [str(python), "-c", "import optax, pathlib; print(pathlib.Path(optax.__file__).parent)"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if found.returncode != 0:
        raise GateError(f"the fork's optax does not import in its environment ({_last_line(found.stderr)})")
    installed = Path(found.stdout.strip())
    for source in sorted((Path(tree) / "optax").rglob("*.py")):
        relative = source.relative_to(Path(tree) / "optax")
        copy = installed / relative
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            raise GateError(f"the installed optax is not the fork: optax/{relative} differs; run the gate again")


# --- applying the series ---------------------------------------------------------------------------


def patch_statuses(tree: Path, version: str, series_file: Path) -> tuple[list[series.Status], dict[str, Path]]:
    """Where each patch of the series stands against the fork, and the file (the patch or
    its variant for a nearby release) that `git am` should take."""
    statuses, paths = [], {}
    for patch in series.read_series(series_file):
        status = series.patch_status(tree, patch, version)
        statuses.append(status)
        paths[status.patch] = patch.parent / status.source if status.source else patch
    return statuses, paths


@dataclass(frozen=True)
class Applied:
    patch: str
    how: str  # the git am command used, as run in the scratch copy
    ok: bool
    detail: str = ""


def apply_missing(tree: Path, statuses: list[series.Status], paths: dict[str, Path]) -> list[Applied]:
    """Applies, in series order, every patch the fork lacks, with `git am` as a maintainer would.

    A patch that does not apply cleanly gets a three-way merge (`git am -3`), which
    succeeds when the fork's edits touch only nearby lines; when that fails too, the
    patch is left out and the run goes on with the others.
    """
    results = []
    for status in statuses:
        if status.state not in ("applies", "conflicts"):
            continue
        options = ["-3"] if status.state == "conflicts" else []
        result = _git(*GATE_IDENTITY, "am", "--quiet", *options, str(paths[status.patch]), cwd=tree)
        how = " ".join(["git am", *options])
        if result.returncode != 0:
            _git("am", "--abort", cwd=tree)
            results.append(Applied(status.patch, how, False, status.detail or _last_line(result.stderr)))
        else:
            results.append(Applied(status.patch, how, True))
    return results


# --- the suite and its verdict -------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    test: str
    defects: tuple[str, ...]
    message: str

    @property
    def shows_defect(self) -> bool:
        # As in tests/conftest.py: only an AssertionError is the defect's own symptom;
        # a crash for another reason in the same test is reported as such.
        return self.message.startswith("AssertionError")


def read_junit(path: Path) -> tuple[dict[str, int], list[Failure]]:
    """Counts and failures of a pytest JUnit XML report (with gatekit.pytest_defects loaded)."""
    root = ElementTree.parse(path).getroot()
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failures = []
    for case in root.iter("testcase"):
        counts["tests"] += 1
        if case.find("skipped") is not None:
            counts["skipped"] += 1
        problems = [*case.findall("failure"), *case.findall("error")]
        for problem in problems:
            counts["failures" if problem.tag == "failure" else "errors"] += 1
        if not problems:
            continue
        names = tuple(p.get("value") for p in case.iter("property") if p.get("name") == "defect")
        test = f"{case.get('classname')}::{case.get('name')}"
        failures.append(Failure(test, names, _message(problems[0])))
    return counts, failures


def _message(problem) -> str:
    """The exception message of a failure, whole.

    The `message` attribute is cut short by pytest for long messages, so the message
    is read from the report's "E" lines (the last block of them: the exception that
    ended the test), without the lines pytest's assertion rewriting adds.
    """
    blocks, block = [], []
    for line in (problem.text or "").splitlines():
        if line.startswith("E ") or line == "E":
            block.append(line[8:] if line.startswith("E       ") else line[1:].strip())
        elif block:
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    if not blocks:
        return problem.get("message") or ""
    # pytest indents the continuation lines of an exception message by two spaces.
    lines = textwrap.dedent("\n".join(blocks[-1])).splitlines()
    lines = [line[2:] if line.startswith("  ") else line for line in lines]
    kept, skipping = [], False
    for line in lines:
        # Dropped: assertion rewriting's "assert ..." lines, and hypothesis's
        # "Explanation:" block (paths inside the scratch environment).
        skipping = (skipping and line.strip() != "") or line.startswith("Explanation:")
        if not skipping and not line.startswith(("assert ", " +")):
            kept.append(line)
    return "\n".join(kept).strip()


@dataclass
class DefectFinding:
    name: str
    summary: str
    patch: str | None
    patch_state: str
    advice: str
    command: str
    tests: list[str] = field(default_factory=list)
    example: dict = field(default_factory=dict)


def _example(failures: list[Failure]) -> dict:
    """The shortest failure message: the smallest problem that shows the defect."""
    chosen = min(failures, key=lambda f: (len(f.message.splitlines()), len(f.message)))
    return {"test": chosen.test, "message": chosen.message}


def git_am_command(checkout: Checkout, patches: list[Path], three_way: bool = False) -> str:
    """The exact command that applies `patches` to the user's own checkout of the fork."""
    paths = " ".join(str(path) for path in patches)
    options = "am -3" if three_way else "am"
    where = local_checkout(checkout.source)
    if where is not None:
        return f"git -C {where} {options} {paths}"
    return f"git {options} {paths}  (in your checkout of {checkout.source})"


def find_defects(
    failures: list[Failure], statuses: list[series.Status], paths: dict[str, Path], checkout: Checkout
) -> list[DefectFinding]:
    """The patchable defects the failing tests show, each with the patch and command that fix it."""
    by_patch = {s.patch: s for s in statuses}
    findings: dict[str, DefectFinding] = {}
    for failure in failures:
        if not failure.shows_defect:
            continue
        for name in failure.defects:
            defect = defects.DEFECTS.get(name)
            if defect is None or defect.patch is None:
                continue  # a limit's xfail that passed is not a defect of the fork
            if name not in findings:
                status = by_patch.get(defect.patch)
                state = status.state if status else "not in the series"
                findings[name] = DefectFinding(
                    name,
                    defect.summary,
                    defect.patch,
                    state,
                    *_advice(paths.get(defect.patch, PATCHES_DIR / defect.patch), status, checkout),
                )
            findings[name].tests.append(failure.test)
    for finding in findings.values():
        finding.example = _example([f for f in failures if f.test in finding.tests])
    return sorted(findings.values(), key=lambda f: f.name)


def _advice(patch: Path, status: series.Status | None, checkout: Checkout) -> tuple[str, str]:
    if status is None or status.state == "applies":
        return "apply it", git_am_command(checkout, [patch])
    if status.state == "conflicts":
        return (
            f"it conflicts ({status.detail}): apply it with a three-way merge and resolve the conflict",
            git_am_command(checkout, [patch], three_way=True),
        )
    # The tested tree carries the fix, yet shows the defect: a change of the fork, or
    # another patch that is missing, undoes it; there is nothing for `git am` to apply.
    return (
        f"the tested tree carries it ({STATE_LABELS[status.state]}) yet shows the defect: another missing "
        f"patch or a change of the fork undoes it; compare its scale_by_lbfgs with {patch}",
        "",
    )


@dataclass
class Report:
    verdict: str  # "green", "red", or "not run" (--table-only)
    fork: dict
    run: str
    patches: list[dict]
    applied: list[dict] = field(default_factory=list)
    suite: dict = field(default_factory=dict)
    defects: list[dict] = field(default_factory=list)
    other_failures: list[dict] = field(default_factory=list)
    apply_all: str = ""


def judge(
    checkout: Checkout, statuses: list[series.Status], paths: dict[str, Path], pytest_exit: int, junit: Path
) -> tuple:
    """(verdict, suite counts, defect findings, other failures) of one suite run."""
    counts, failures = read_junit(junit)
    counts["pytest_exit"] = pytest_exit
    findings = find_defects(failures, statuses, paths, checkout)
    shown = {test for finding in findings for test in finding.tests}
    others = [{"test": f.test, "message": f.message} for f in failures if f.test not in shown]
    verdict = "green" if pytest_exit == 0 and not failures else "red"
    return verdict, counts, findings, others


def run_suite(python: Path, junit: Path, patch_state: str, pytest_args: list[str],
              primal_reference: Path | None = None) -> int:
    """The whole suite, expecting no defect; pytest's exit code (1 means tests failed)."""
    env = dict(os.environ, LBFGS_GATE_PATCH_STATE=patch_state)
    if primal_reference:
        env[sessions.PRIMAL_REFERENCE_VARIABLE] = str(primal_reference)
    env.setdefault("HYPOTHESIS_PROFILE", "ci")  # derandomized: the same fork gets the same verdict
    command = [
        str(python),
        "-m",
        "pytest",
        SUITE,
        "-p",
        "gatekit.pytest_defects",
        "--known-defects=",
        f"--junitxml={junit}",
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]
    print("+", " ".join(command), flush=True)
    code = subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=False).returncode
    if code not in (0, 1) or not junit.is_file():
        raise GateError(f"pytest could not run the suite on the fork (exit {code}): see its output above")
    return code


# --- reports -------------------------------------------------------------------------------------


def markdown(report: Report) -> str:
    fork = report.fork
    pins = fork["constraints"] + ("" if fork["constraints_exact"] else f" (nearest to optax {fork['optax_version']})")
    lines = [
        f"# optax fork gate: {report.verdict.upper()}",
        "",
        f"- fork: `{fork['source']}` at `{fork['ref']}` (commit `{fork['commit'][:12]}`), "
        f"optax {fork['optax_version']}",
        f"- run: {report.run}; pins: `{pins}`",
    ]
    if report.suite:
        suite = report.suite
        lines.append(
            f"- suite: `{SUITE}`, {suite['tests']} tests, {suite['failures']} failed, "
            f"{suite['errors']} errors, {suite['skipped']} skipped (details: `junit.xml`)"
        )
    lines += ["", "## Patches", "", "| patch | state | detail |", "|---|---|---|"]
    lines += [f"| `{p['patch']}` | {STATE_LABELS[p['state']]} | {p['detail']} |" for p in report.patches]
    if report.applied:
        lines += ["", "Applied to a scratch copy for this run:", ""]
        lines += [
            f"- `{a['patch']}`: {a['how']}, " + ("applied" if a["ok"] else f"**not applied**: {a['detail']}")
            for a in report.applied
        ]
    if report.defects:
        lines += ["", "## Defects present"]
    for finding in report.defects:
        example = finding["example"]["message"].splitlines()
        if len(example) > EXAMPLE_LINES:
            example = [*example[:EXAMPLE_LINES], "... (the rest is in junit.xml)"]
        lines += [
            "",
            f"### {finding['name']}: {finding['summary']}",
            "",
            f"Fixed by `{finding['patch']}` ({_label(finding['patch_state'])}); {finding['advice']}:",
            "",
            "```sh",
            finding["command"],
            "```",
            "",
            f"{len(finding['tests'])} failing tests. Minimal example, `{finding['example']['test']}`:",
            "",
            "```text",
            *example,
            "```",
        ]
    if report.other_failures:
        lines += ["", "## Other failures", ""]
        lines += [
            f"- `{f['test']}`: {f['message'].splitlines()[0] if f['message'] else ''}" for f in report.other_failures
        ]
    if report.apply_all:
        lines += ["", "Every missing patch, in series order:", "", "```sh", report.apply_all, "```"]
    return "\n".join(lines) + "\n"


def write_reports(report: Report, scratch_junit: Path | None, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    if scratch_junit is not None:
        shutil.copyfile(scratch_junit, output / "junit.xml")
    (output / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (output / "report.md").write_text(markdown(report))


def remove_reports(output: Path) -> None:
    """A previous run's reports must never pass for this run's."""
    for name in REPORT_FILES:
        (output / name).unlink(missing_ok=True)


# --- the whole run -------------------------------------------------------------------------------


def run(
    source: str,
    ref: str | None = None,
    *,
    apply: bool = False,
    table_only: bool = False,
    output: Path | None = None,
    series_file: Path = PATCHES_DIR / "series",
    pytest_args=(),
    uv: str | None = None,
) -> int:
    """The fork gate; returns the exit code (0 green or table only, 1 red). Bad input: GateError."""
    output = Path(output) if output else WORK_DIR / ("fork-apply" if apply else "fork")
    remove_reports(output)
    if not is_url(source):
        check_local_source(source)  # before any scratch folder exists
    scratch = Path(tempfile.mkdtemp(prefix="lbfgs-gate-fork-"))
    try:
        fork = checkout(source, ref, scratch / "fork")
        version = optax_version(fork.tree, fork.label)
        constraints, exact = constraints_for(version)
        statuses, paths = patch_statuses(fork.tree, version, series_file)
        print(
            f"fork: {fork.label}, optax {version}; pins: {constraints.relative_to(PROJECT_ROOT)}"
            + ("" if exact else " (nearest known release)"),
            flush=True,
        )
        print(series.format_table(statuses), flush=True)
        missing = [paths[s.patch] for s in statuses if s.state in ("applies", "conflicts")]
        report = Report(
            verdict="not run",
            fork={
                "source": source,
                "ref": fork.ref,
                "commit": fork.commit,
                "optax_version": version,
                "constraints": str(constraints.relative_to(PROJECT_ROOT)),
                "constraints_exact": exact,
            },
            run="patch table only" if table_only else "as is",
            patches=[asdict(s) for s in statuses],
            apply_all=git_am_command(fork, missing) if missing else "",
        )
        if table_only:
            write_reports(report, None, output)
            return 0
        patch_state = f"fork {fork.label} as is"
        if apply:
            applied = apply_missing(fork.tree, statuses, paths)
            report.applied = [asdict(a) for a in applied]
            numbers = ", ".join(a.patch.split("-", 1)[0] for a in applied if a.ok) or "no patch"
            report.run = f"with missing patches applied by git am ({numbers})"
            patch_state = f"fork {fork.label} + {numbers} (git am)"
            for a in applied:
                print(f"{a.patch}: {a.how}: " + ("applied" if a.ok else f"NOT applied ({a.detail})"), flush=True)
            # Defects are judged against the tree that ran: a patch applied here is no
            # longer one to advise applying.
            statuses, paths = patch_statuses(fork.tree, version, series_file)
        python = build_environment(
            scratch / "env",
            fork.tree,
            _fork_constraints(constraints, scratch / "constraints.txt"),
            find_uv() if uv is None else uv,
        )
        junit = scratch / "junit.xml"
        # The fork's primal results are compared with its release as published, recorded
        # here with the fork's own environment (bits depend on the processor); a version
        # with no known sdist falls back to the committed record.
        try:
            sdist.known_hash(version)
        except GateError:
            reference = None
        else:
            reference = sessions.record_primal_reference(version, python=python)
        code = run_suite(python, junit, patch_state, list(pytest_args), primal_reference=reference)
        verdict, counts, findings, others = judge(fork, statuses, paths, code, junit)
        report.verdict, report.suite = verdict, counts
        report.defects = [asdict(f) for f in findings]
        report.other_failures = others
        write_reports(report, junit, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _print_verdict(report, output)
    return 0 if report.verdict == "green" else 1


def _print_verdict(report: Report, output: Path) -> None:
    where = f"reports: {output / 'report.md'}, {output / 'report.json'}, {output / 'junit.xml'}"
    if report.verdict == "green":
        print(f"fork gate GREEN: no defect in {report.fork['source']} ({report.run}); {where}", flush=True)
        return
    lines = [f"fork gate RED: {report.fork['source']} ({report.run}); {where}"]
    for finding in report.defects:
        lines.append(
            f"  defect {finding['name']} present ({len(finding['tests'])} tests): fixed by "
            f"{finding['patch']} ({_label(finding['patch_state'])}); {finding['advice']}: {finding['command']}"
        )
    if report.other_failures:
        lines.append(
            f"  {len(report.other_failures)} other failing tests, not a known defect: "
            + ", ".join(f["test"] for f in report.other_failures[:5])
        )
    print("\n".join(lines), file=sys.stderr, flush=True)


def add_command(commands) -> None:
    """Registers `python -m gatekit fork` on the CLI's subcommands."""
    command = commands.add_parser("fork", help="gate an optax fork: patch table, suite, verdict")
    command.add_argument("source", help="the fork: a local git checkout or a git URL (file:// works offline)")
    command.add_argument("--ref", help="commit, branch or tag to test (default: the source's HEAD)")
    command.add_argument(
        "--apply",
        action="store_true",
        help="apply the missing patches (git am) to a scratch copy and run the suite there",
    )
    command.add_argument("--table-only", action="store_true", help="only the patch table: install and run nothing")
    command.add_argument(
        "--output",
        type=Path,
        help="folder for report.md, report.json, junit.xml (default build/fork, build/fork-apply)",
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
        )
    )
