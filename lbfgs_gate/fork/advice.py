"""Applying the series to a fork, and the advice the verdict gives: which patch, which command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lbfgs_gate import PATCHES_DIR, defects, series
from lbfgs_gate.fork.source import GATE_IDENTITY, Checkout, _git, _last_line, local_checkout
from lbfgs_gate.run_record import Outcome, Record

STATE_LABELS = {
    "applied": "already applied",
    "applies": "applies cleanly",
    "upstream": "fixed upstream",
    "conflicts": "conflicts",
}


def _label(state: str) -> str:
    return STATE_LABELS.get(state, state)


def patch_statuses(tree: Path, version: str, series_file: Path) -> tuple[list[series.Status], dict[str, Path]]:
    """Where each patch of the series stands against the fork, and the file (the patch or
    its variant for a nearby release) that `git am` should take."""
    patches = series.read_series(series_file)
    statuses = series.series_status(tree, patches, version)
    paths = {s.patch: p.parent / s.source if s.source else p for s, p in zip(statuses, patches, strict=True)}
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


def git_am_command(checkout: Checkout, patches: list[Path], three_way: bool = False) -> str:
    """The exact command that applies `patches` to the user's own checkout of the fork."""
    paths = " ".join(str(path) for path in patches)
    options = "am -3" if three_way else "am"
    where = local_checkout(checkout.source)
    if where is not None:
        return f"git -C {where} {options} {paths}"
    return f"git {options} {paths}  (in your checkout of {checkout.source})"


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


def find_defects(
    judged, records: dict[str, Record], statuses: list[series.Status], paths: dict[str, Path], checkout: Checkout
) -> list[DefectFinding]:
    """The patchable defects the verdict found present, each with the patch and command that fix
    it, the detectors that reproduced it and the shortest report among theirs (the smallest problem)."""
    by_patch = {s.patch: s for s in statuses}
    # The defects whose patch the tested tree lacks: a detector marked with several defects
    # (a float32 Hessian through an unroll needs 0002, 0003 and 0005) reproduces while any is.
    lacking = {
        d.name
        for d in defects.DEFECTS.values()
        if d.patch and getattr(by_patch.get(d.patch), "state", "") in ("applies", "conflicts")
    }
    findings = []
    for name, row in judged.defects.items():
        defect = defects.DEFECTS[name]
        if defect.patch is None or not (row.reproduced or row.optax_reproduced):
            continue  # limits are expected everywhere; absent defects need no advice
        status = by_patch.get(defect.patch)
        reproduced = [
            test
            for record in records.values()
            for test in record.tests.values()
            if name in test.defects and test.outcome == Outcome.REPRODUCED
        ]
        explained = all(set(test.defects) & (lacking - {name}) for test in reproduced)
        if status is not None and status.state == "applied" and not row.optax_reproduced and explained:
            continue  # its patch is applied; each detector also detects a defect whose patch is not
        finding = DefectFinding(
            name,
            defect.summary,
            defect.patch,
            status.state if status else "not in the series",
            *_advice(paths.get(defect.patch, PATCHES_DIR / defect.patch), status, checkout),
        )
        finding.tests = sorted(test.nodeid for test in reproduced)
        if reproduced:
            test = min(reproduced, key=lambda test: (len(test.report.splitlines()), len(test.report)))
            finding.example = {"test": test.nodeid, "message": test.report or test.message}
        findings.append(finding)
    return findings
