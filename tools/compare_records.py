"""Compares two gate runs test by test: the same outcome and the same hypothesis examples?

Each argument is a record the gate wrote (build/reports/<session>/record-suite.json, or
a copy of it). Used to show that a speed lever changes no verdict: run a session twice,
once with the lever and once without (`-- -n 0` for no xdist; LBFGS_GATE_JAX_CACHE=off,
or a cache with damaged entries, for the compilation cache), and compare.

    python tools/compare_records.py RECORD_A RECORD_B

Exit 0 when every test has the same outcome and every property ran the same number of
valid and discarded examples in both; 1 otherwise, listing the differences.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lbfgs_gate.run_record import Record, load  # noqa: E402


def differences(a: Record, b: Record) -> list[str]:
    found = []
    for nodeid in sorted(set(a.tests) | set(b.tests)):
        left, right = a.tests.get(nodeid), b.tests.get(nodeid)
        if left is None or right is None:
            found.append(f"{nodeid}: only in {'the second' if left is None else 'the first'} run")
            continue
        if left.outcome != right.outcome:
            found.append(f"{nodeid}: {left.outcome} != {right.outcome}")
        if left.examples != right.examples:
            found.append(f"{nodeid}: examples {left.examples} != {right.examples}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tools/compare_records.py RECORD_A RECORD_B", file=sys.stderr)
        return 2
    a, b = (load(Path(path)) for path in argv)
    found = differences(a, b)
    print(f"{len(a.tests)} and {len(b.tests)} tests; {len(found)} differences")
    for line in found:
        print(f"  {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
