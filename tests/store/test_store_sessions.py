"""Records of an unfinished profile session are provisional: settled reads leave them out until
the session finishes (an interrupted candidate has fewer samples than asked)."""

from __future__ import annotations

from toolchain.profiling.records import CostRecord
from toolchain.store.db import RecordStore


def _rec(cid: str, session: str | None, key: str) -> CostRecord:
    host = {} if session is None else {"profile_session": session, "profile_unit": key}
    return CostRecord(target="host", target_hash="h", candidate_id=cid, candidate={}, precision="fp32",
                      runtime="onnxruntime", latency_ms_samples=(1.0, 2.0), host=host, run_id="run")


def test_unfinished_session_records_are_provisional(tmp_path):
    with RecordStore(tmp_path / "db") as store:
        store.append(_rec("old", None, ""))  # made before sessions named their records
        store.begin_session("s1", target="host", run_id="run", planned=["a#1/2", "a#2/2"])
        store.append(_rec("a", "s1", "a#1/2"), session_id="s1", progress_key="a#1/2")
        assert [r.candidate_id for r in store.records(settled=True)] == ["old"]
        assert store.measured_candidates("host", settled=True) == {"old"}
        assert store.measured_candidates("host") == {"old", "a"}
        (pending,) = store.unfinished_sessions(target="host", run_id="run")
        assert pending["session_id"] == "s1" and pending["done"] == ["a#1/2"]
        assert store.unfinished_sessions(run_id="other") == []
        store.append(_rec("a", "s1", "a#2/2"), session_id="s1", progress_key="a#2/2")
        store.finish_session("s1")
        assert [r.host["profile_unit"] for r in store.session_records("s1")] == ["a#1/2", "a#2/2"]
        assert store.measured_candidates("host", settled=True) == {"old", "a"}
        assert len(store.records(settled=True)) == 3 and store.unfinished_sessions() == []
