"""Times the gate as a user meets it: a fresh clone, the README's gate command, cold then warm.

cold: a fresh clone with empty package caches (uv and pip), so every wheel and the
      sdist are downloaded, and the patched tree is built.
warm: the same clone run again: caches filled, sdist and patched tree reused; nox
      still recreates every session's environment, as it does by default.

    python tools/benchmark_gate.py [--sessions unpatched patched] [--json build/benchmark-gate.json]

Prints one line per run and session; writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SESSION_LINE = re.compile(r"nox > \* (\S+): (\w+), took (.+)$")


def _duration(text: str) -> float:
    minutes = re.search(r"(\d+) minute", text)
    seconds = re.search(r"(\d+) second", text)
    return 60.0 * int(minutes.group(1) if minutes else 0) + int(seconds.group(1) if seconds else 0)


def run_gate(clone: Path, sessions: list[str], env: dict) -> dict:
    command = (f"{sys.executable} -m venv .venv && .venv/bin/python -m pip install -q -r requirements/tools.txt"
               f" && .venv/bin/nox -s {' '.join(sessions)}")
    start = time.perf_counter()
    result = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    per_session = {}
    for line in result.stdout.splitlines() + result.stderr.splitlines():
        match = SESSION_LINE.search(line)
        if match:
            per_session[match.group(1)] = {"result": match.group(2), "seconds": _duration(match.group(3))}
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise SystemExit(f"the gate failed (exit {result.returncode}):\n{tail}")
    return {"wall_seconds": round(wall, 1), "sessions": per_session}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", nargs="+", default=["unpatched", "patched"])
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "benchmark-gate.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gate-benchmark-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(os.environ, UV_CACHE_DIR=str(Path(scratch) / "uv-cache"),
                   PIP_CACHE_DIR=str(Path(scratch) / "pip-cache"))
        results = {"machine": {"cores": os.cpu_count(), "load_before": os.getloadavg()}, "runs": {}}
        for run in ("cold", "warm"):
            results["runs"][run] = run_gate(clone, args.sessions, env)
            line = ", ".join(f"{name} {s['seconds']:.0f} s" for name, s in results["runs"][run]["sessions"].items())
            print(f"{run}: {results['runs'][run]['wall_seconds']:.0f} s wall ({line})", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
