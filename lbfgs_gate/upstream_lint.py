"""optax's own lint checks over the files the series changes, on the patched tree.

An optax maintainer runs these on every pull request (`.github/workflows/tests.yml`
and `.pre-commit-config.yaml` of github google-deepmind/optax, main at 2edbcbe2):

- ruff with the `[tool.ruff]` settings of optax's pyproject.toml (line length 80,
  preview, F, E, W291, B023, E302, E303, and its ignores);
- flake8 `--select=E9,F63,F7,F82,E225,E251`;
- pylint with the `[tool.pylint.messages_control]` settings of optax's pyproject.toml:
  modules with `-d E1102`, tests (`*_test.py`) with `-d W0212,E1102`, and the quote
  consistency pass over both; upstream fails on any message (pylint-exit -efail
  -wfail -cfail -rfail);
- the license-header check (`.github/check_license_headers.py`: every Python file
  starts with DeepMind's Apache-2.0 header, after optional pylint/coding lines);
- the pre-commit hygiene hooks that apply to a Python file: it parses, it has no
  trailing whitespace, no CR line ends, and ends with one newline.

The settings are read from the patched tree's pyproject.toml when it carries them
(the 0.2.8 sdist does); older sdists (0.2.4) ship a pyproject.toml without them, and
then the copy below, taken from optax main's pyproject.toml, is used.
The linters run pinned (constraints/tools.txt) in the running interpreter's
environment; none of them imports optax or jax.

    python -m lbfgs_gate.upstream_lint --release 0.2.4 --release 0.2.8

Exit status 0: clean; 1: findings, one line each; 2: bad input or a linter missing.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from lbfgs_gate import CONSTRAINTS_DIR, PATCHES_DIR, GateError, base_release, newest_release, sdist, tree

TOOLS_CONSTRAINTS = CONSTRAINTS_DIR / "tools.txt"
LINTERS = ("ruff", "flake8", "pylint")

# optax main (2edbcbe2) pyproject.toml, [tool.ruff] and [tool.ruff.lint]: used for a
# tree whose pyproject.toml has no [tool.ruff] (sdists before 0.2.5 or so).
UPSTREAM_RUFF = {
    "line-length": 80,
    "lint": {
        "preview": True,
        "select": ["F", "E", "W291", "B023", "E302", "E303"],
        "ignore": ["E731", "F401", "E402", "E741", "E703", "E111", "E114"],
    },
}
# optax main (2edbcbe2) pyproject.toml, [tool.pylint.messages_control] disable.
UPSTREAM_PYLINT_DISABLE = [
    "bad-indentation",
    "unknown-option-value",
    "invalid-name",
    "missing-function-docstring",
    "missing-class-docstring",
    "missing-module-docstring",
    "no-member",
    "too-many-locals",
    "too-many-positional-arguments",
    "no-else-return",
    "line-too-long",
    "too-many-arguments",
    "no-value-for-parameter",
    "duplicate-code",
    "unused-argument",
    "too-few-public-methods",
    "wrong-import-order",
    "unused-import",
    "wrong-import-position",
    "unnecessary-lambda-assignment",
    "too-many-lines",
    "too-many-statements",
    "deprecated-class",
    "redefined-builtin",
    "used-before-assignment",
    "undefined-variable",
    "protected-access",
    "not-callable",
    "redefined-outer-name",
    "too-many-instance-attributes",
    "missing-final-newline",
    "too-many-public-methods",
    "import-error",
]
# optax main (2edbcbe2) .github/workflows/tests.yml, job by job.
FLAKE8_SELECT = "E9,F63,F7,F82,E225,E251"
PYLINT_MODULES_DISABLE = "E1102"
PYLINT_TESTS_DISABLE = "W0212,E1102"
PYLINT_QUOTES = ["--disable=R,C,W,E", "--enable=inconsistent-quotes", "--check-quote-consistency=y"]

# The header .github/check_license_headers.py requires, as a pattern of our own.
LICENSE_HEADER = re.compile(
    r"(# (pylint|coding).*\n)*"
    r"# Copyright 20[0-9][0-9] DeepMind Technologies Limited\. All Rights Reserved\.\n"
    r"#\n"
    r"# Licensed under the Apache License, Version 2\.0 \(the \"License\"\);\n"
    r"# you may not use this file except in compliance with the License\.\n"
    r"# You may obtain a copy of the License at\n"
    r"#\n"
    r"#     http://www\.apache\.org/licenses/LICENSE-2\.0\n"
    r"#\n"
    r"# Unless required by applicable law or agreed to in writing, software\n"
    r"# distributed under the License is distributed on an \"AS IS\" BASIS,\n"
    r"# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied\.\n"
    r"# See the License for the specific language governing permissions and\n"
    r"# limitations under the License\.\n"
    r"# =+\n"
)

PYLINT_FORMAT = "{path}:{line}:{column}: {msg_id} {msg} ({symbol})"


@dataclass(frozen=True)
class Finding:
    release: str
    check: str
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"optax {self.release}: {self.path}:{self.line}: [{self.check}] {self.message}"


def upstream_settings(tree_dir: Path) -> tuple[dict, list[str], str]:
    """ruff settings, pylint's disabled messages, and where they come from."""
    pyproject = Path(tree_dir) / "pyproject.toml"
    tool = tomllib.loads(pyproject.read_text()).get("tool", {}) if pyproject.is_file() else {}
    ruff = tool.get("ruff")
    disable = tool.get("pylint", {}).get("messages_control", {}).get("disable")
    if ruff and disable is not None:
        return ruff, list(disable), "the tree's pyproject.toml"
    return UPSTREAM_RUFF, UPSTREAM_PYLINT_DISABLE, "optax main's pyproject.toml (the tree has none)"


def _toml(table: dict, prefix: str = "") -> str:
    """A small TOML writer for the settings above (strings, numbers, booleans, lists, tables)."""
    lines, tables = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in tables:
        text += f"\n[{prefix}{key}]\n" + _toml(value, f"{prefix}{key}.")
    return text


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, check=False)


def _linter_failed(name: str, result: subprocess.CompletedProcess) -> GateError:
    last = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()][-1:]
    return GateError(f"{name} did not run ({last[0].strip() if last else f'exit {result.returncode}'})")


def check_pins() -> None:
    """Refuses unless the linters installed here are the versions constraints/tools.txt pins."""
    pins = {}
    for line in TOOLS_CONSTRAINTS.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    for name in LINTERS:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise GateError(
                f"{name} is not installed: pip install ruff flake8 pylint -c constraints/{TOOLS_CONSTRAINTS.name}"
            ) from None
        if name in pins and installed != pins[name]:
            raise GateError(f"{name} {installed} is installed, constraints/tools.txt pins {pins[name]}")


def ruff(release: str, tree_dir: Path, files: list[str], settings: dict, scratch: Path) -> list[Finding]:
    config = scratch / "ruff.toml"
    config.write_text(_toml(settings))
    # --config with an explicit file: no other configuration (ours included) is looked up.
    result = _run(["ruff", "check", "--no-cache", "--config", str(config), "--output-format", "json", *files], tree_dir)
    if result.returncode not in (0, 1):
        raise _linter_failed("ruff", result)
    return [
        Finding(
            release,
            f"ruff {d['code']}",
            str(Path(d["filename"]).relative_to(tree_dir.resolve())),
            d["location"]["row"],
            d["message"],
        )
        for d in json.loads(result.stdout or "[]")
    ]


def flake8(release: str, tree_dir: Path, files: list[str]) -> list[Finding]:
    result = _run(
        ["flake8", "--isolated", f"--select={FLAKE8_SELECT}", "--format=%(path)s:%(row)d:%(code)s %(text)s", *files],
        tree_dir,
    )
    if result.returncode not in (0, 1) or (result.returncode == 1 and not result.stdout.strip()):
        raise _linter_failed("flake8", result)
    findings = []
    for line in result.stdout.splitlines():
        path, row, rest = line.split(":", 2)
        code, message = rest.split(" ", 1)
        findings.append(Finding(release, f"flake8 {code}", path, int(row), message))
    return findings


def pylint(release: str, tree_dir: Path, files: list[str], disable: list[str], scratch: Path) -> list[Finding]:
    rcfile = scratch / "pylintrc.toml"
    rcfile.write_text(_toml({"tool": {"pylint": {"messages_control": {"disable": disable}}}}))
    common = [
        "pylint",
        f"--rcfile={rcfile}",
        "--persistent=n",
        "--score=n",
        "--reports=n",
        f"--msg-template={PYLINT_FORMAT}",
    ]
    tests = [f for f in files if f.endswith("_test.py")]
    modules = [f for f in files if not f.endswith("_test.py")]
    passes = [
        ("pylint", modules, [f"--disable={PYLINT_MODULES_DISABLE}"]),
        ("pylint", tests, [f"--disable={PYLINT_TESTS_DISABLE}"]),
        ("pylint quotes", files, PYLINT_QUOTES),
    ]
    findings = []
    for check, targets, options in passes:
        if not targets:
            continue
        result = _run([*common, *options, *targets], tree_dir)
        # pylint's exit status is a bit mask of message categories; 32 is a usage error.
        if result.returncode & 32 or (result.returncode and not result.stdout.strip()):
            raise _linter_failed("pylint", result)
        for line in result.stdout.splitlines():
            match = re.match(r"^(.+?):(\d+):\d+: (\S+) (.*)$", line)
            if match:
                findings.append(
                    Finding(release, f"{check} {match.group(3)}", match.group(1), int(match.group(2)), match.group(4))
                )
    return findings


def hygiene(release: str, tree_dir: Path, files: list[str]) -> list[Finding]:
    """The license header and the pre-commit hooks that apply to a Python file."""
    findings = []
    for relative in files:
        raw = (tree_dir / relative).read_bytes()
        text = raw.decode("utf-8")
        if not LICENSE_HEADER.match(text):
            findings.append(
                Finding(release, "license-header", relative, 1, "does not start with optax's Apache-2.0 license header")
            )
        try:
            ast.parse(text, filename=relative)
        except SyntaxError as error:
            findings.append(Finding(release, "check-ast", relative, error.lineno or 0, str(error.msg)))
        if b"\r" in raw:
            findings.append(Finding(release, "mixed-line-ending", relative, 1, "CR line ends"))
        for number, line in enumerate(text.split("\n"), start=1):
            if line != line.rstrip():
                findings.append(Finding(release, "trailing-whitespace", relative, number, "trailing whitespace"))
        if text and (not text.endswith("\n") or text.endswith("\n\n")):
            findings.append(
                Finding(
                    release,
                    "end-of-file-fixer",
                    relative,
                    text.count("\n") + 1,
                    "the file must end with exactly one newline",
                )
            )
    return findings


def lint_tree(release: str, tree_dir: Path, files: list[str]) -> list[Finding]:
    """Every finding of upstream's checks over `files` (paths relative to `tree_dir`)."""
    tree_dir = Path(tree_dir)
    files = [f for f in files if f.endswith(".py")]
    if not files:
        return []
    missing = [f for f in files if not (tree_dir / f).is_file()]
    if missing:
        raise GateError(f"{tree_dir} has no {missing[0]}: pass the patched tree the series was applied to")
    ruff_settings, pylint_disable, _ = upstream_settings(tree_dir)
    with tempfile.TemporaryDirectory(prefix="upstream-lint-") as scratch:
        scratch = Path(scratch)
        return [
            *ruff(release, tree_dir, files, ruff_settings, scratch),
            *flake8(release, tree_dir, files),
            *pylint(release, tree_dir, files, pylint_disable, scratch),
            *hygiene(release, tree_dir, files),
        ]


def _key(tree_dir: Path, finding: Finding) -> tuple:
    """A finding without its line number (the series shifts lines): check, file, line text."""
    lines = (Path(tree_dir) / finding.path).read_text().split("\n")
    text = lines[finding.line - 1].strip() if 0 < finding.line <= len(lines) else ""
    return finding.check, finding.path, text, finding.message


def published_findings(release: str, files: list[str]) -> set[tuple]:
    """What the same checks find in the release as published, in the files it has."""
    with tempfile.TemporaryDirectory(prefix="upstream-lint-published-") as scratch:
        pristine = sdist.unpack(sdist.fetch(release), Path(scratch) / "optax")
        present = [f for f in files if (pristine / f).is_file()]
        return {_key(pristine, f) for f in lint_tree(release, pristine, present)}


def run(release: str, series_file: Path, report=print) -> int:
    """Lints the files the series changes on `release` with it applied; 0 when clean, else 1.

    A finding counts when the series brings it: one the release as published already
    has on the same line (upstream code an older optax did not lint yet) is listed,
    not counted.
    """
    patched = tree.prepare(release, series_file, report=lambda _: None)
    files = tree.touched_files(series_file, patched)
    _, _, source = upstream_settings(patched)
    found = lint_tree(release, patched, files)
    # Only files with findings are linted again as published (pylint takes seconds a pass).
    published = published_findings(release, sorted({f.path for f in found})) if found else set()
    findings, inherited = [], []
    for finding in found:
        (inherited if _key(patched, finding) in published else findings).append(finding)
    for finding in inherited:
        report(f"{finding} (also in the release as published: not counted)")
    for finding in findings:
        report(str(finding))
    verdict = "clean" if not findings else f"{len(findings)} finding(s)"
    report(
        f"optax {release} + series: upstream's ruff, flake8, pylint, license-header and hygiene "
        f"checks over the {len(files)} files the series changes (settings from {source}): {verdict}"
    )
    return 1 if findings else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lbfgs_gate.upstream_lint", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--release", action="append", help="optax release (repeatable; default: the base and the newest release)"
    )
    parser.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    args = parser.parse_args(argv)
    try:
        check_pins()
        status = 0
        for release in args.release or [base_release(), newest_release()]:
            status = max(status, run(release, args.series))
        return status
    except GateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
