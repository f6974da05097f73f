"""upstream_lint: optax's settings are found, written, and applied to the files given (offline)."""

import tomllib

from lbfgs_gate import upstream_lint

HEADER = """# Copyright 2025 DeepMind Technologies Limited. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
# ==============================================================================
"""

CLEAN = (
    HEADER + '"""A test module in optax\'s style."""\n\nimport numpy as np\n\n\ndef _two():\n  return np.float32(2.0)\n'
)
# One blank line before a top-level def (E302), trailing whitespace, no header.
DIRTY = '"""No header."""\n\nimport numpy as np\n\ndef _two():  \n  return np.float32(2.0)\n'


def test_settings_written_for_ruff_read_back_unchanged():
    assert tomllib.loads(upstream_lint._toml(upstream_lint.UPSTREAM_RUFF)) == upstream_lint.UPSTREAM_RUFF


def test_tree_without_lint_settings_gets_optax_mains(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "optax"\n')
    ruff, disable, source = upstream_lint.upstream_settings(tmp_path)
    assert ruff["line-length"] == 80 and "E302" in ruff["lint"]["select"]
    assert "protected-access" in disable and "optax main" in source


def test_findings_name_file_line_and_check(tmp_path):
    upstream_lint.check_pins()  # the linters, as constraints/tools.txt pins them (nox -s gate_selftest installs them)
    (tmp_path / "optax").mkdir()
    (tmp_path / "optax/clean_test.py").write_text(CLEAN)
    (tmp_path / "optax/dirty_test.py").write_text(DIRTY)
    findings = upstream_lint.lint_tree("0.0", tmp_path, ["optax/clean_test.py", "optax/dirty_test.py"])
    checks = {(f.path, f.line, f.check) for f in findings}
    assert ("optax/dirty_test.py", 5, "ruff E302") in checks
    assert ("optax/dirty_test.py", 5, "trailing-whitespace") in checks
    assert ("optax/dirty_test.py", 1, "license-header") in checks
    assert not [f for f in findings if f.path == "optax/clean_test.py"], findings
