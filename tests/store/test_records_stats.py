"""CostRecord round trips and the statistics derived from raw samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from store_helpers import make_record

from toolchain.errors import StoreError
from toolchain.profiling.records import CostRecord, host_info, input_crc
from toolchain.profiling.stats import percentile, pooled_stats, record_stats, summarize


def test_record_round_trips_through_json():
    rec = make_record(samples=[3, 1, 2], instructions=[5, 6], host=host_info(), predicted_latency_ms=1)
    again = CostRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec
    assert again.latency_ms_samples == (3.0, 1.0, 2.0)
    assert len(rec.record_id) == 32 and rec.recorded_at.endswith("+00:00")
    assert {"cpu_model", "governor", "machine", "python"} <= set(rec.host)
    assert hash(rec) == hash(again)
    assert not any(k.startswith(("median", "mean", "p90")) for k in rec.to_dict())


def test_record_validation():
    with pytest.raises(ValueError, match="latency sample"):
        make_record(samples=[1.0, float("nan")])
    with pytest.raises(ValueError, match="negative"):
        make_record(peak_rss_bytes=-1)
    with pytest.raises(ValueError, match="2 input token counts for 3 latency samples"):
        make_record(samples=[1.0, 1.1, 0.9], input_tokens=[5, 6])
    assert make_record(samples=[1.0, 1.1, 0.9], input_tokens=[9, 5, 7]).median_input_tokens == 7
    d = make_record().to_dict()
    del d["candidate_id"]
    with pytest.raises(StoreError, match="missing field"):
        CostRecord.from_dict(d)
    d = make_record().to_dict()
    d["from_the_future"] = 1
    assert CostRecord.from_dict(d).candidate_id


def test_input_crc_is_stable_and_content_sensitive():
    a = np.arange(10, dtype=np.int64)
    assert input_crc([a, a]) == input_crc([a.copy(), a.copy()])
    assert input_crc([a]) != input_crc([a + 1])
    assert len(input_crc([a])) == 8
    torch = pytest.importorskip("torch")
    assert input_crc([torch.arange(10)]) == input_crc([a])


def test_stats_match_numpy():
    rng = np.random.default_rng(0)
    xs = list(rng.lognormal(0, 0.3, size=101))
    s = summarize(xs)
    assert s.n == 101
    assert s.median_ms == pytest.approx(np.median(xs))
    assert s.mean_ms == pytest.approx(np.mean(xs))
    assert s.p10_ms == pytest.approx(np.percentile(xs, 10))
    assert s.p90_ms == pytest.approx(np.percentile(xs, 90))
    assert s.iqr_ms == pytest.approx(np.percentile(xs, 75) - np.percentile(xs, 25))
    assert s.spread == pytest.approx((s.p90_ms - s.p10_ms) / s.median_ms)
    assert percentile([4.0], 90) == 4.0
    with pytest.raises(ValueError):
        summarize([])


def test_record_and_pooled_stats():
    a, b = make_record(samples=[1, 2, 3]), make_record(samples=[4, 5])
    assert record_stats(a).median_ms == 2
    assert pooled_stats([a, b]).median_ms == 3
    assert record_stats(make_record(samples=[])) is None
