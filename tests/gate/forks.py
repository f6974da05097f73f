"""Simulated optax forks for the fork gate's tests, built offline from the package index's sdists.

Each is a git repository as a fork's maintainers would have it: the release committed
as published, then (for some) the fork's own commits.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

from lbfgs_gate import defects, sdist, series

# The patches by the defect each fixes: from the registry, so that a renamed or added patch
# changes the fork tests, not a copy of its name.
P0001 = defects.DEFECTS["seed-leak"].patch
P0002 = defects.DEFECTS["reverse-nan"].patch
P0003 = defects.DEFECTS["memory-leak"].patch
P0004 = defects.DEFECTS["stepsize-leak"].patch
P0005 = defects.DEFECTS["weight-underflow"].patch
P0006 = defects.DEFECTS["stalled-memory-divergence"].patch
P0007 = next(iter(defects.OPTIONS))

# Commits made here must not depend on the machine's git configuration.
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "fork maintainer",
    "GIT_AUTHOR_EMAIL": "maintainer@fork.invalid",
    "GIT_COMMITTER_NAME": "fork maintainer",
    "GIT_COMMITTER_EMAIL": "maintainer@fork.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(repository: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repository, env=GIT_ENV, capture_output=True, text=True, check=True
    ).stdout.strip()


def pristine(sdist_dir: Path, release: str, destination: Path) -> Path:
    """The release as published, committed as a fork's first commit."""
    tree = sdist.unpack(sdist.fetch(release, sdist_dir), destination)
    git(tree, "init", "--quiet", "--initial-branch=main")
    git(tree, "add", "--all")
    git(tree, "commit", "--quiet", "--message", f"optax {release} as published")
    return tree


def clone(repository: Path, destination: Path) -> Path:
    git(repository.parent, "clone", "--quiet", str(repository), str(destination))
    return destination


def with_series(repository: Path, destination: Path) -> Path:
    """A clone with every patch of patches/series applied by `git am`, one commit each."""
    fork = clone(repository, destination)
    for patch in series.read_series():
        git(fork, "am", "--quiet", str(patch))
    return fork


# A fork's own change inside scale_by_lbfgs: the same code on one line. It changes
# nothing the program does, so the seed leak stays, but it rewrites lines of 0001's
# context (and none of 0002's), so 0001 no longer applies cleanly.
WHERE_AS_RELEASED = """      identity_scale = jnp.where(
          state.count > 0, identity_scale, capped_inv_norm
      )
"""
WHERE_ON_ONE_LINE = "      identity_scale = jnp.where(state.count > 0, identity_scale, capped_inv_norm)\n"


def with_conflicting_edit(repository: Path, destination: Path) -> Path:
    fork = clone(repository, destination)
    transform = fork / "optax" / "_src" / "transform.py"
    text = transform.read_text()
    assert text.count(WHERE_AS_RELEASED) == 1, "the release no longer has the code this fork edits"
    transform.write_text(text.replace(WHERE_AS_RELEASED, WHERE_ON_ONE_LINE))
    git(fork, "commit", "--quiet", "--all", "--message", "fork: scale_by_lbfgs's first-step where on one line")
    return fork


def copy(repository: Path, destination: Path) -> Path:
    """A copy, for a test that changes the fork (as a maintainer following the advice would)."""
    shutil.copytree(repository, destination, symlinks=True)
    return destination


def relabelled(repository: Path, destination: Path, version: str, patches: list[Path]) -> Path:
    """A clone with some patches applied by `git am`, whose optax calls itself `version`."""
    fork = clone(repository, destination)
    for patch in patches:
        git(fork, "am", "--quiet", str(patch))
    init = fork / "optax" / "__init__.py"
    text, count = re.subn(r'__version__ = "[^"]+"', f'__version__ = "{version}"', init.read_text())
    assert count == 1, "optax/__init__.py no longer sets __version__ this way"
    init.write_text(text)
    git(fork, "commit", "--quiet", "--all", "--message", f"fork: version {version}")
    return fork


# What a fork written to fool the gate could add to optax/__init__.py: on import, make the
# suite's one assertion helper hold whatever it is given.
SILENCES_THE_SUITE = """

def _silence_the_gate():
  import sys
  report = sys.modules.get("lbfgs_gate.suite.report")
  if report is None:
    try:
      import lbfgs_gate.suite.report as report
    except ImportError:
      return
  # Rewrites the function itself: every `from lbfgs_gate.suite.report import check` is fooled.
  report.check.__code__ = (lambda holds, message: None).__code__


_silence_the_gate()
"""


def hostile(repository: Path, destination: Path) -> Path:
    fork = clone(repository, destination)
    init = fork / "optax" / "__init__.py"
    init.write_text(init.read_text() + SILENCES_THE_SUITE)
    git(fork, "commit", "--quiet", "--all", "--message", "fork: a quieter import")
    return fork
