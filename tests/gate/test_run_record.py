"""The record's file (lbfgs_gate/run_record.py): what `dump` writes, `load` reads back, and nothing else."""

import json

import pytest

from lbfgs_gate import GateError, run_record
from lbfgs_gate.run_record import HypothesisSettings, Outcome, Record


def _record() -> Record:
    """A record with every field set, as a run that reproduced a defect and was then killed leaves it."""
    detector = run_record.TestRecord(
        "t.py::test_property",
        defects=["seed-leak"],
        outcome=Outcome.REPRODUCED,
        phases={"setup": Outcome.PASSED, "call": Outcome.REPRODUCED, "teardown": Outcome.PASSED},
        phase="call",
        exception="DefectObserved",
        message="Jacobian is not finite",
        report="Jacobian is not finite\nreproduce: ...",
        hypothesis=HypothesisSettings("ci", 200, True, False, ["explicit", "generate"]),
        examples={"valid": 200, "invalid": 3, "generated": 203},
    )
    plain = run_record.TestRecord(
        "t.py::test_plain", outcome=Outcome.PASSED, phases=dict.fromkeys(run_record.PHASES, Outcome.PASSED)
    )
    return Record(
        inventory={detector.nodeid: ["seed-leak"], plain.nodeid: [], "t.py::test_deselected": []},
        tests={detector.nodeid: detector, plain.nodeid: plain},
        collection_errors=["t2.py: ImportError: no module named optax"],
        crashed_workers=[detector.nodeid],
        compiles={"traces": 12, "traces_seconds": 1.5},
        exitstatus=1,
        timed_out=8.0,
        running=[detector.nodeid],
    )


def test_load_reads_back_what_dump_wrote(tmp_path):
    path = tmp_path / "record.json"
    run_record.dump(_record(), path)
    assert run_record.load(path) == _record()
    assert json.loads(path.read_text())["tests"]["t.py::test_plain"]["outcome"] == "passed"


def test_unknown_outcome_in_a_record_file_is_refused(tmp_path):
    path = tmp_path / "record.json"
    run_record.dump(_record(), path)
    document = json.loads(path.read_text())
    document["tests"]["t.py::test_plain"]["outcome"] = "passd"
    path.write_text(json.dumps(document))
    with pytest.raises(GateError, match=r"t.py::test_plain: unknown outcome 'passd' \(one of 'reproduced', "):
        run_record.load(path)
