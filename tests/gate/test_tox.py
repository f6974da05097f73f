"""tox.ini mirrors the noxfile: the same sessions, the same defaults, the same releases."""

import ast
import configparser
import re

from lbfgs_gate import PROJECT_ROOT, base_release, newest_release
from lbfgs_gate.matrix import releases as matrix_releases


def _nox():
    """Session names and the default list, read from noxfile.py without importing nox."""
    tree = ast.parse((PROJECT_ROOT / "noxfile.py").read_text())
    sessions, defaults = set(), None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any("nox.session" in ast.unparse(d) for d in node.decorator_list):
            sessions.add(node.name)
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "nox.options.sessions":
            defaults = ast.literal_eval(node.value)
    return sessions, defaults


def _tox():
    config = configparser.ConfigParser(interpolation=None)
    config.read(PROJECT_ROOT / "tox.ini")
    envs = {}
    for section in config.sections():
        if section.startswith("testenv:"):
            name, _, factors = section[len("testenv:") :].partition("-")
            envs[name] = re.findall(r"[\d.]+", factors)
    defaults = [e.strip() for e in config["tox"]["env_list"].split(",")]
    return envs, defaults, config


def test_tox_has_every_nox_session_and_nothing_else():
    sessions, _ = _nox()
    envs, _, _ = _tox()
    assert set(envs) == sessions


def test_tox_defaults_are_noxs():
    _, nox_defaults = _nox()
    _, tox_defaults, _ = _tox()
    assert tox_defaults == nox_defaults


def test_tox_releases_are_the_constraints_links_and_the_matrix():
    envs, _, config = _tox()
    assert envs["matrix"] == matrix_releases()
    assert envs["optax_suite"] == envs["hunk_proof"] == [base_release(), newest_release()]
    # A factor only picks its release's pins; no command names a release.
    for section in config.sections():
        commands = config[section].get("commands", "")
        assert not re.search(r"\d+\.\d+\.\d+", commands), f"[{section}] names a release in its commands"
        assert len([line for line in commands.splitlines() if line.strip()]) <= 1, f"[{section}]: one command"


def test_every_nox_session_that_runs_the_gate_has_pip_to_fetch_sdists():
    # The gate downloads optax's sdists with pip (lbfgs_gate/sdist.py), and nox's uv
    # environments have none: `nox -s fork` from a fresh clone stopped there (exit 2).
    source = (PROJECT_ROOT / "noxfile.py").read_text()
    helpers = {
        node.name: ast.get_source_segment(source, node)
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef)
    }
    fetches_nothing = {"lint"}  # ruff, zizmor and the inventory's file check
    for name, body in helpers.items():
        runs_the_gate = re.search(r'"-m", "lbfgs_gate|_lbfgs_gate\(|lbfgs_gate\.\w+"|tools/', body)
        if not runs_the_gate or name.startswith("_") or name in fetches_nothing:
            continue
        installs = body + "".join(helpers[h] for h in re.findall(r"\b(_install_\w+)\(", body))
        requirements = re.findall(r"requirements/[\w-]+\.txt", installs)
        has_pip = 'session.install("pip"' in installs or any(
            re.search(r"^pip\b", (PROJECT_ROOT / r).read_text(), flags=re.M) for r in requirements
        )
        assert has_pip, f"nox session {name} runs the gate without pip in its environment"
