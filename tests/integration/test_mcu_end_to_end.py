"""`codesign profile` on the MCU targets through the library (issue 5, option a): the run's
heads quantized to int8, uploaded to the firmware (posix port on a pty; QEMU mps2-an386),
every output bit-exact with the Python integer reference on >= 100 validation inputs,
deterministic instruction counts on QEMU, and exact-budget infeasibility with its reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from integration_helpers import needs_cc, needs_qemu, saved_heads, tiny_flash_target

from toolchain.boards.registry import open_target
from toolchain.errors import ValidationMismatchError
from toolchain.flows.profile import profile_mcu
from toolchain.mcu.budget import FIRMWARE_FLASH_BYTES
from toolchain.profiling.mcu import PRECISION
from toolchain.store.db import RecordStore

pytestmark = pytest.mark.slow


def _check_common(summary, written, records, target, n_heads):
    assert summary["target"] == target and len(summary["candidates"]) == n_heads
    assert written == summary
    assert len(records) == n_heads
    for r in records:
        assert r.precision == PRECISION and r.candidate["precision"] == PRECISION
        assert r.emulated is True and r.runtime == "firmware" and r.runtime_version == "0.1.0"
        assert r.host["bit_exact_inputs"] == "200"  # 100 inputs x 2 sessions, all bit-exact
        assert len(r.input_crc) == 8
    for row in summary["candidates"]:
        assert row["feasible"] and row["bit_exact"] and row["n_inputs"] == 100
        # Features rebuilt exactly as the search built them: the float head reproduces its
        # recorded validation accuracy.
        assert row["features_match_search"], row
        assert row["model_bytes"] == row["blob_bytes"] > row["weight_bytes"] > 0
        assert abs(row["int8_acc"] - row["float_acc"]) <= 0.05
        assert row["int8_float_agreement"] >= 0.9


@needs_cc
def test_mcu_pty_profiles_every_head_bit_exact(tiny_run):
    heads = saved_heads(tiny_run)
    assert len(heads) >= 2
    with RecordStore() as store:
        summary = profile_mcu(tiny_run, open_target("mcu-pty"), store, candidate_ids=heads)
        records = store.records(target="mcu-pty")
    written = json.loads((tiny_run / "mcu-mcu-pty.json").read_text())
    _check_common(summary, written, records, "mcu-pty", len(heads))
    for r in records:
        # The posix port counts host nanoseconds: latency samples, but no instruction count.
        assert r.host["counter_unit"] == "ns" and r.instructions == ()
        assert len(r.latency_ms_samples) == 200 and r.model_bytes > 0
    assert {row["candidate"]["head"] for row in summary["candidates"]} >= {"softmax", "elm"}


@needs_qemu
def test_mcu_qemu_instruction_counts_are_recorded_and_deterministic(tiny_run):
    # The run's selection (a softmax head) and the two ELM heads: one QEMU boot per session.
    board = json.loads((tiny_run / "leaderboard.json").read_text())
    elms = [c["id"] for c in board["candidates"] if c["head"] == "elm"]
    heads = [board["selected"]] + [h for h in saved_heads(tiny_run) if h in elms]
    assert len(heads) == 3
    target = open_target("mcu-qemu")
    spec = target.spec
    with RecordStore() as store:
        summary = profile_mcu(tiny_run, target, store, candidate_ids=heads)
        written = json.loads((tiny_run / "mcu-mcu-qemu.json").read_text())
        first = store.records(target="mcu-qemu")
        # A second, independent profile (another session: repeat=1) on fresh emulators.
        profile_mcu(tiny_run, target, store, candidate_ids=heads, repeat=1)
        second = store.records(target="mcu-qemu")[len(first):]
    _check_common(summary, written, first, "mcu-qemu", len(heads))
    by_id = {r.candidate_id: r for r in second}
    for r in first:
        assert r.host["counter_unit"] == "instructions"
        assert r.host["counts_identical_across_sessions"] == "True"
        assert len(r.instructions) == 100 and min(r.instructions) > 0
        # est latency = instructions x CPI / clock, per inference.
        expected = np.asarray(r.instructions) * spec.emulation.cpi / spec.mcu.clock_hz * 1e3
        np.testing.assert_allclose(r.latency_ms_samples, expected, rtol=1e-9)
        assert by_id[r.candidate_id].instructions == r.instructions  # two runs, same counts
    rows = {row["id"]: row for row in summary["candidates"]}
    elm = [row for row in rows.values() if row["candidate"]["head"] == "elm"]
    soft = [row for row in rows.values() if row["candidate"]["head"] == "softmax"]
    # A 64-wide ELM hidden layer costs more instructions than a 2-class softmax row.
    assert min(e["instructions_median"] for e in elm) > max(s["instructions_median"] for s in soft)


@needs_cc
def test_head_over_flash_budget_is_infeasible_and_the_report_says_why(tiny_run, tmp_path,
                                                                      monkeypatch):
    heads = saved_heads(tiny_run)
    # Room for the firmware and 1 KiB of model: the softmax heads fit, the ELM-64 ones do not.
    path = tiny_flash_target(tmp_path / "mcu-tiny.toml", FIRMWARE_FLASH_BYTES / 1024 + 1)
    target = open_target(str(path))
    uploaded = []
    real = type(target).run_head

    def spy(self, head, inputs, **kw):
        uploaded.append(head.in_dim)
        return real(self, head, inputs, **kw)

    monkeypatch.setattr(type(target), "run_head", spy)
    with RecordStore() as store:
        summary = profile_mcu(tiny_run, target, store, candidate_ids=heads)
        records = store.records(target=target.spec.name)
    rows = summary["candidates"]
    bad = [r for r in rows if not r["feasible"]]
    good = [r for r in rows if r["feasible"]]
    assert bad and good
    assert {r["candidate"]["head"] for r in bad} == {"elm"}
    for r in bad:
        assert r["flash_needed_bytes"] > r["flash_limit_bytes"] == 17 * 1024
        assert "flash" in r["reason"] and "exceeds" in r["reason"] and "mcu-tiny" in r["reason"]
        assert "record_id" not in r
    # Only feasible heads were uploaded (two sessions each) and recorded.
    assert len(uploaded) == 2 * len(good)
    assert {r.candidate_id for r in records} == {r["id"] for r in good}
    report = (tiny_run / f"mcu-{target.spec.name}.md").read_text()
    assert "Infeasible on this target" in report
    board = json.loads((tiny_run / "leaderboard.json").read_text())
    assert board["mcu"][target.spec.name] == summary
    for r in bad:
        assert r["id"] in report and r["reason"] in report


@needs_cc
def test_outputs_that_differ_from_the_reference_are_refused(tiny_run, monkeypatch):
    """A device whose int8 outputs are off by one anywhere is a ValidationMismatchError and
    leaves no record."""
    target = open_target("mcu-pty")
    real = type(target).run_head

    def off_by_one(self, head, inputs, **kw):
        run = real(self, head, inputs, **kw)
        outputs = run.outputs.copy()
        outputs[-1, 0] = np.int8(outputs[-1, 0] ^ 1)
        return type(run)(**{**run.__dict__, "outputs": outputs})

    monkeypatch.setattr(type(target), "run_head", off_by_one)
    with RecordStore() as store:
        with pytest.raises(ValidationMismatchError, match="differ from the Python integer"):
            profile_mcu(tiny_run, target, store)
        assert store.records(target="mcu-pty") == []
        store.check()
