"""Writes lbfgs_gate/patches/releases.json: the series as it stands on each published release.

For every release the matrix knows (constraints/sdists.txt with a constraints file), the
release's sdist is unpacked and `series.series_status` says, patch by patch, which file
applies (the patch or one of its variants) and which patch is already upstream. That table
is what `lbfgs-gate patches --release R` prints from, without a tree. Run it (from the
project root, sdists fetched with `python -m lbfgs_gate fetch ...`) whenever a patch, a
variant or a release changes; the gate's own tests check it on the releases they have.

    python tools/write_release_table.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lbfgs_gate import matrix, sdist, series  # noqa: E402


def main() -> int:
    table = {}
    with tempfile.TemporaryDirectory(prefix="release-table-") as scratch:
        for release in matrix.releases():
            tree = sdist.unpack(sdist.fetch(release), Path(scratch) / release)
            statuses = series.series_status(tree, series.read_series(), release)
            table[release] = [asdict(status) for status in statuses]
            print(f"optax {release}: {series.describe(statuses)}")
    series.RELEASE_TABLE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {series.RELEASE_TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
