"""A fork's base release, from what it contains: its optax package against each published sdist.

The version a fork declares says what it wants to be called, not what it is: a fork
of 0.2.4 relabelled 0.2.9.dev0 would get 0.2.8's pins, a jax on which some defects of
0.2.4 do not show. The release whose package differs from the fork's in the fewest
lines is its base; its pins are the fork's pins.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from lbfgs_gate import CONSTRAINTS_DIR, GateError, pipeline, series
from lbfgs_gate.matrix import releases


@dataclass(frozen=True)
class Base:
    release: str
    lines: int  # lines added or removed in the fork's optax/ against that release's
    declared: str  # the fork's __version__

    @property
    def constraints(self) -> Path:
        return CONSTRAINTS_DIR / f"optax-{self.release}.txt"

    @property
    def label(self) -> str:
        relabelled = "" if self.declared == self.release else f"; it declares {self.declared}"
        return f"based on optax {self.release} by its contents ({self.lines} lines differ from that sdist{relabelled})"


def lines_different(fork_tree: Path, release_tree: Path) -> int:
    """Lines added plus removed between two optax/ packages, as git counts them (a binary file: 1000)."""
    result = subprocess.run(
        [
            series.require_tool("git"),
            "diff",
            "--no-index",
            "--numstat",
            "--",
            str(Path(release_tree) / "optax"),
            str(Path(fork_tree) / "optax"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise GateError(f"cannot compare the fork with {release_tree.name}: {result.stderr.strip()[:200]}")
    total = 0
    for line in result.stdout.splitlines():
        added, removed, _ = line.split("\t", 2)
        total += int(added) + int(removed) if added != "-" else 1000
    return total


def base_release(fork_tree: Path, declared: str, sdist_dir=None) -> Base:
    """The published release nearest to the fork by content (ties: the newer)."""
    known = releases()
    if not known:
        raise GateError("no release with constraints/optax-<release>.txt and an sdist hash: the base cannot be chosen")
    distances = {release: lines_different(fork_tree, pipeline.pristine_tree(release, sdist_dir)) for release in known}
    nearest = min(known, key=lambda release: (distances[release], [-part for part in series.version_tuple(release)]))
    return Base(nearest, distances[nearest], declared)
