"""The newest optax release: where each patch stands on it, and the suite with the series applied.

`python -m gatekit upstream --release R` (the upstream session) runs in an environment
holding optax R as published (constraints/optax-R.txt). It classifies each patch of
the series against the R sdist (applied / applies / upstream / conflicts, variants
included: see series.patch_status), skips the patches already upstream, applies the
rest, installs and verifies that build, then runs optax's tests and the whole suite
with the expectations of the patched session: no defect may remain.
"""

from __future__ import annotations

import json
from pathlib import Path

from gatekit import PATCHES_DIR, tree
from gatekit import optax_tests as optax_test_files
from gatekit.sessions import record_primal_reference, run_suite

NEWEST_RELEASE = "0.2.8"


def run(release: str, series_file: Path, pytest_args: list[str], sdist_dir=None, status_json=None) -> None:
    patched_tree = tree.prepare(release, series_file, sdist_dir)
    statuses = tree.statuses(patched_tree)
    # The table is printed even when the tree is reused, as the session's report.
    print(f"\npatches/series on optax {release}:")
    for status in statuses:
        detail = f" ({status.detail})" if status.detail else ""
        action = "applied" if status.state == "applies" else "skipped"
        print(f"  {status.patch}: {status.state}{detail} -> {action}")
    if status_json:
        Path(status_json).parent.mkdir(parents=True, exist_ok=True)
        Path(status_json).write_text(json.dumps([s.__dict__ for s in statuses], indent=2) + "\n")
    tree.install(patched_tree)
    tree.verify(patched_tree, tree.touched_files(series_file, patched_tree))
    applied = [s for s in statuses if s.state == "applies"]
    described = ", ".join(s.patch.split("-", 1)[0] + (f" ({s.source})" if "/" in s.source else "") for s in applied)
    print(f"installed and verified: optax {release} + {described or 'nothing (every patch is upstream)'}",
          flush=True)
    optax_test_files.run(release, series_file, "pass", upstream=True, pytest_args=["-n", "2", "-q"],
                         sdist_dir=sdist_dir)
    reference = record_primal_reference(release, sdist_dir)
    run_suite(f"optax {release} + {described} (verified)", [], pytest_args, primal_reference=reference)


def add_command(commands) -> None:
    """Registers `python -m gatekit upstream` on the CLI's subcommands."""
    command = commands.add_parser("upstream", help="the newest release with the series: patch table, tests, suite")
    command.add_argument("--release", default=NEWEST_RELEASE, help=f"optax release (default {NEWEST_RELEASE})")
    command.add_argument("--series", type=Path, default=PATCHES_DIR / "series")
    command.add_argument("--sdist-dir", help="folder holding optax-<release>.tar.gz (offline use)")
    command.add_argument("--status-json", help="also write the patch table as JSON to this file")
    command.add_argument("pytest_args", nargs="*", help="extra pytest arguments for the suite (after --)")
    command.set_defaults(
        run=lambda args: run(args.release, args.series, args.pytest_args, args.sdist_dir, args.status_json)
    )
