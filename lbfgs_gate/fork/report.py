"""The fork gate's reports: verdict.json (what CI reads), report.md (a person), junit.xml."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lbfgs_gate import verdict as verdicts
from lbfgs_gate.fork.advice import STATE_LABELS, _label

REPORT_FILES = ("report.md", "verdict.json", "junit.xml")
# The longest minimal example the Markdown summary shows; the JUnit report has the rest.
EXAMPLE_LINES = 40


@dataclass
class Report:
    verdict: str  # "green", "red", or "not run" (--table-only)
    fork: dict
    run: str
    patches: list[dict]
    applied: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    apply_all: str = ""
    primal: str = ""
    judged: verdicts.Verdict | None = None
    # The loops of the corpus against the fork as it is, where patches were applied to it here
    # (lbfgs_gate/release_comparison.py).
    comparison: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        document = {"session": "fork", "verdict": self.verdict}
        if self.judged is not None:
            document.update(self.judged.to_json())
            document["session"] = "fork"
        document.update(
            fork=self.fork,
            run=self.run,
            patches=self.patches,
            applied=self.applied,
            findings=self.findings,
            apply_all=self.apply_all,
            primal=self.primal,
            comparison=self.comparison,
        )
        return document


def markdown(report: Report) -> str:
    fork = report.fork
    pins = fork["constraints"] + ("" if fork["constraints_exact"] else f" (nearest to optax {fork['optax_version']})")
    if report.judged is None:
        title = "patch table only (no verdict)"
    elif report.judged.green:
        title = "GATE GREEN"
    else:
        title = f"GATE RED: {report.judged.reasons[0]}"
    lines = [f"# optax fork gate: {title}", ""]
    if report.judged is not None:
        lines += [f"- **accepted, not fixed**: `{name}`: {reason}" for name, reason in report.judged.accepted.items()]
    lines += [
        f"- fork: `{fork['source']}` at `{fork['ref']}` (commit `{fork['commit'][:12]}`), "
        f"optax {fork['optax_version']}",
        f"- run: {report.run}; pins: `{pins}`",
    ]
    if report.primal:
        lines.append(f"- primal identity: {report.primal}")
    if report.judged is not None:
        table = verdicts.markdown(report.judged).split("\n", 2)[2]  # without its title line
        lines += ["", table.rstrip()]
    if report.comparison:
        lines += ["", "## Derivatives against the release", "", "```text", *report.comparison, "```"]
    lines += ["", "## Patches", "", "| patch | state | detail |", "|---|---|---|"]
    lines += [f"| `{p['patch']}` | {STATE_LABELS[p['state']]} | {p['detail']} |" for p in report.patches]
    if report.applied:
        lines += ["", "Applied to a scratch copy for this run:", ""]
        lines += [
            f"- `{a['patch']}`: {a['how']}, " + ("applied" if a["ok"] else f"**not applied**: {a['detail']}")
            for a in report.applied
        ]
    if report.findings:
        lines += ["", "## Defects present"]
    for finding in report.findings:
        example = (finding["example"].get("message") or "").splitlines()
        if len(example) > EXAMPLE_LINES:
            example = [*example[:EXAMPLE_LINES], "... (the rest is in junit.xml)"]
        accepted = report.judged is not None and finding["name"] in report.judged.accepted
        lines += ["", f"### {finding['name']}: {finding['summary']}", ""]
        if accepted:
            lines += [f"Accepted by the maintainer: {report.judged.accepted[finding['name']]}", ""]
        lines += [f"Fixed by `{finding['patch']}` ({_label(finding['patch_state'])}); {finding['advice']}:", ""]
        if finding["command"]:
            lines += ["```sh", finding["command"], "```", ""]
        lines += [
            f"{len(finding['tests'])} detectors reproduced it. Minimal example, "
            f"`{finding['example'].get('test', '')}`:",
            "",
            "```text",
            *example,
            "```",
        ]
    if report.apply_all:
        lines += ["", "Every missing patch, in series order:", "", "```sh", report.apply_all, "```"]
    return "\n".join(lines) + "\n"


def write_reports(report: Report, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "verdict.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (output / "report.md").write_text(markdown(report))


def remove_reports(output: Path) -> None:
    """A previous run's reports must never pass for this run's."""
    for name in (*REPORT_FILES, "record-suite.json", "pytest-suite.log"):
        (output / name).unlink(missing_ok=True)


def print_verdict(report: Report, output: Path) -> None:
    if report.judged is not None:
        print(verdicts.table(report.judged), flush=True)
    for line in report.comparison:
        print(line, flush=True)
    where = f"reports: {output / 'report.md'}, {output / 'verdict.json'}, {output / 'junit.xml'}"
    if report.verdict == "green":
        print(f"fork gate GREEN: {report.fork['source']} ({report.run}); {where}", flush=True)
        return
    lines = [f"fork gate RED: {report.fork['source']} ({report.run}); {where}"]
    for finding in report.findings:
        if report.judged is not None and finding["name"] in report.judged.accepted:
            continue
        lines.append(
            f"  defect {finding['name']} present ({len(finding['tests'])} detectors): fixed by "
            f"{finding['patch']} ({_label(finding['patch_state'])}); {finding['advice']}: {finding['command']}"
        )
    print("\n".join(lines), file=sys.stderr, flush=True)
