"""The fork's source: a local checkout or a git URL, cloned into a scratch folder at a commit."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from lbfgs_gate import GateError, series

# Identity for the commits `git am` makes in the scratch copy (CI machines often have none).
GATE_IDENTITY = (
    "-c",
    "user.name=lbfgs-gate",
    "-c",
    "user.email=lbfgs-gate@localhost",
    "-c",
    "commit.gpgsign=false",
)


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
