"""Sessions of the L-BFGS derivative gate. `nox -l` lists them; the real work is in gatekit/."""

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent))

# A release is in the matrix when it has an sdist hash and constraints/optax-<release>.txt.
from gatekit.matrix import releases as matrix_releases  # noqa: E402

nox.options.default_venv_backend = "uv|virtualenv"
# upstream is a default (measured 3.5 min; 5.5 min with the 2 cores shared); the matrix is not (about 9 min a mode).
nox.options.sessions = ["lint", "gate_selftest", "unpatched", "patched", "upstream"]

BASE_RELEASE = "0.2.4"
CONSTRAINTS = f"constraints/optax-{BASE_RELEASE}.txt"
# Releases whose sdists the gate's own tests build simulated trees from.
GATE_TEST_RELEASES = (BASE_RELEASE, "0.2.8")


def _install_suite(session, constraints=CONSTRAINTS):
    session.install("-r", "requirements/test.txt", "optax", "-c", constraints)


@nox.session
def unpatched(session):
    """optax 0.2.4 as released: every known defect must be reproduced."""
    _install_suite(session)
    session.run("python", "-m", "gatekit", "session", "unpatched", "--release", BASE_RELEASE, "--", *session.posargs)


@nox.session
def patched(session):
    """optax 0.2.4 with patches/series applied and verified: no defect remains, optax's own tests pass."""
    _install_suite(session)
    session.run("python", "-m", "gatekit", "session", "patched", "--release", BASE_RELEASE, "--", *session.posargs)


@nox.session
def gate_selftest(session):
    """Tests of the gate's own machinery: series, sdists, trees, errors (no jax)."""
    session.install("pytest", "pip", "-c", CONSTRAINTS)
    # The tests themselves stay offline: the sdists they build trees from are fetched here.
    session.run("python", "-m", "gatekit", "fetch", *GATE_TEST_RELEASES)
    session.run("pytest", "tests/gate", *session.posargs)


@nox.session
def lint(session):
    """ruff over the project's Python code."""
    session.install("ruff", "-c", "constraints/tools.txt")
    session.run("ruff", "check", ".")


@nox.session
def record_reference(session):
    """Record primal L-BFGS results of optax 0.2.4 as released (for the bitwise PASS_TO_PASS tests)."""
    _install_suite(session)
    session.run("python", "tools/record_primal_reference.py")


@nox.session
def fork(session):
    """Gate an optax fork: patch table, whole suite on the fork as it is, verdict (-- SOURCE [--ref REF] [--apply])."""
    if not session.posargs or session.posargs[0].startswith("-"):
        session.error("Usage: nox -s fork -- SOURCE [--ref REF] [--apply] [--table-only] [--output DIR] [-- PYTEST]")
    from gatekit.fork import find_uv

    # gatekit builds the fork its own environment, pinned for the fork's optax version,
    # with the uv that nox itself uses; this session's environment only runs gatekit.
    session.run("python", "-m", "gatekit", "fork", *session.posargs, env={"UV": find_uv()})


@nox.session
def fork_e2e(session):
    """The fork gate end to end on simulated forks: a jax environment and the whole suite per fork (slow)."""
    from gatekit.fork import find_uv

    session.install("pytest", "pip", "-c", CONSTRAINTS)
    session.run("python", "-m", "gatekit", "fetch", *GATE_TEST_RELEASES)
    session.run("pytest", "tests/gate_e2e", *session.posargs, env={"UV": find_uv()})


NEWEST_RELEASE = "0.2.8"


@nox.session
def upstream(session):
    """optax 0.2.8, the newest release, with the series: patch table (upstream ones skipped), optax's tests, suite."""
    _install_suite(session, f"constraints/optax-{NEWEST_RELEASE}.txt")
    session.run("python", "-m", "gatekit", "upstream", "--release", NEWEST_RELEASE,
                "--status-json", "build/upstream/status.json", "--", *session.posargs)


@nox.session
@nox.parametrize("release", matrix_releases())
def matrix(session, release):
    """Defect detectors on each release as published (-- --patched: with the series); table in build/matrix/."""
    if session.posargs not in ([], ["--patched"]):
        session.error("Usage: nox -s matrix [-- --patched]")
    _install_suite(session, f"constraints/optax-{release}.txt")
    session.run("python", "-m", "gatekit", "matrix", "--release", release, *session.posargs)
