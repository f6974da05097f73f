"""Sessions of the L-BFGS derivative gate. `nox -l` lists them; the real work is in the lbfgs_gate package."""

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))

from lbfgs_gate import base_release, newest_release  # noqa: E402

# A release is in the matrix when it has an sdist hash and constraints/optax-<release>.txt.
from lbfgs_gate.matrix import releases as matrix_releases  # noqa: E402

PYTHON = "3.11"  # the pins are for CPython 3.11
nox.options.default_venv_backend = "uv|virtualenv"
# An environment is rebuilt only when its Python changes; `session.install` brings it to
# the pins every run, and each session verifies, file by file, the optax it tests.
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "upstream_lint", "gate_selftest", "unpatched", "patched", "upstream"]

# constraints/base.txt and newest.txt link to the pins of the base and the newest release:
# the one place that names them (lbfgs_gate reads the same files).
BASE = "constraints/base.txt"
NEWEST = "constraints/newest.txt"
TOOLS = "constraints/tools.txt"  # the pins of lint's tools and optax's linters
# The base and the newest release: the gate's own tests build simulated trees from their
# sdists, and upstream's linters and optax's whole suite run on both.
RELEASES = (base_release(), newest_release())


def _lbfgs_gate(session, *args):
    session.run("python", "-m", "lbfgs_gate", *args)


def _install_suite(session, constraints):
    # The project itself (the lbfgs-gate package, editable: its reports stay in build/), the
    # suite's requirements and optax, pinned.
    session.install("-e", ".", "-r", "requirements/test.txt", "optax", "-c", constraints)


@nox.session(python=PYTHON)
def unpatched(session):
    """The base release as published: every defect the series fixes must be reproduced."""
    _install_suite(session, BASE)
    _lbfgs_gate(session, "session", "unpatched", "--", *session.posargs)


@nox.session(python=PYTHON)
def patched(session):
    """The base release with patches/series applied and verified: no defect left, nothing else changed."""
    _install_suite(session, BASE)
    _lbfgs_gate(session, "session", "patched", "--", *session.posargs)


@nox.session(python=PYTHON)
def upstream(session):
    """The newest release with the series (patches already upstream skipped): no defect left."""
    _install_suite(session, NEWEST)
    _lbfgs_gate(session, "session", "upstream", "--", *session.posargs)


@nox.session(python=PYTHON)
def gate_selftest(session):
    """Tests of the gate's own machinery: verdict rules, series, sdists, trees, errors (no jax)."""
    session.install("-r", "requirements/selftest.txt", "-c", BASE, "-c", TOOLS)
    _lbfgs_gate(session, "selftest", "--", *session.posargs)


@nox.session(python=PYTHON)
def lint(session):
    """ruff (check and format) over the project's Python code; zizmor over its GitHub workflows (any finding fails)."""
    session.install("ruff", "zizmor", "-c", TOOLS)
    _lbfgs_gate(session, "lint")


@nox.session(python=PYTHON)
def upstream_lint(session):
    """optax's own linters (ruff, flake8, pylint, license headers), pinned, over every file the series touches."""
    session.install("-r", "requirements/upstream-linters.txt", "-c", TOOLS)
    session.run("python", "-m", "lbfgs_gate.upstream_lint")


@nox.session(python=PYTHON)
@nox.parametrize("release", RELEASES)
def optax_suite(session, release):
    """optax's whole test suite, as published and with the series, compared test by test (slow: ~11 min on 0.2.4)."""
    session.install("-e", ".", "-r", "requirements/test.txt", "optax", "-c", f"constraints/optax_suite-{release}.txt")
    session.run("python", "-m", "lbfgs_gate.optax_suite", "--release", release, *session.posargs)


@nox.session(python=PYTHON, default=False)
@nox.parametrize("release", RELEASES)
def hunk_proof(session, release):
    """Each code hunk of the series, reversed alone on the series up to its patch, must be caught (slow)."""
    _install_suite(session, f"constraints/optax-{release}.txt")
    session.run("python", "tools/hunk_proof.py", "--release", release, *session.posargs)


@nox.session(python=PYTHON)
def inventory(session):
    """Collect the suite and write lbfgs_gate/suite/inventory.json, the node ids every gate run must collect."""
    _install_suite(session, BASE)
    _lbfgs_gate(session, "inventory")


@nox.session(python=PYTHON)
def record_reference(session):
    """Record primal L-BFGS results of the base release as published into lbfgs_gate/suite/data/ (plain pytest runs)."""
    _install_suite(session, BASE)
    session.run("python", "-m", "lbfgs_gate.suite.primal")


@nox.session(python=PYTHON)
def fork(session):
    """Gate an optax fork: patch table, suite, verdict (-- SOURCE [--ref REF] [--apply] [--accept DEFECT=REASON])."""
    if not session.posargs or session.posargs[0].startswith("-"):
        session.error(
            "Usage: nox -s fork -- SOURCE [--ref REF] [--apply] [--accept DEFECT=REASON] [--table-only] "
            "[--output DIR] [-- PYTEST]"
        )
    from lbfgs_gate.fork.environment import find_uv

    # lbfgs_gate builds the fork its own environment, pinned for the fork's optax version,
    # with the uv that nox itself uses; this session's environment only runs lbfgs_gate, and
    # its pip downloads the sdists the fork is compared with (a uv environment has none).
    session.install("pip", "-c", TOOLS)
    session.run("python", "-m", "lbfgs_gate", "fork", *session.posargs, env={"UV": find_uv()})


@nox.session(python=PYTHON, default=False)
def fork_e2e(session):
    """The fork gate end to end on simulated forks: a jax environment and the whole suite per fork (slow)."""
    session.install("-e", ".", "-r", "requirements/selftest.txt", "-c", BASE, "-c", TOOLS)
    _lbfgs_gate(session, "selftest", "--end-to-end", "--", *session.posargs)


@nox.session(python=PYTHON)
@nox.parametrize("release", matrix_releases())
def matrix(session, release):
    """Defect detectors on each release as published (-- --patched: with the series); table in build/matrix/."""
    if session.posargs not in ([], ["--patched"]):
        session.error("Usage: nox -s matrix [-- --patched]")
    _install_suite(session, f"constraints/optax-{release}.txt")
    _lbfgs_gate(session, "matrix", "--release", release, *session.posargs)
