"""`codesign personalise` end to end on the host: --bundle deploys first, the JSON report holds
what the issue lists, `codesign status` names the active head, --rollback returns to it."""

from __future__ import annotations

import json

from click.testing import CliRunner

from toolchain.cli import main


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_personalise_command_deploys_learns_and_reports(bundle_run, host_board, examples, tmp_path):
    out = tmp_path / "report.json"
    res = _cli("personalise", "--target", "host", "--examples", examples(), "--bundle", bundle_run.host,
               "--json", out)
    assert res.exit_code == 0, res.output
    assert "switched     to head" in res.output and "new classes  colour" in res.output
    report = json.loads(out.read_text())
    for key in ("before", "after", "anchor_before", "anchor_after", "n_examples", "new_classes",
                "switched", "learn_ms", "peak_rss_bytes", "emulated", "truncated"):
        assert key in report, key
    assert report["deployed"]["bundle_id"] and report["before"]["per_class"]
    st = _cli("status", "--target", "host")
    assert st.exit_code == 0 and f"head     personalised {report['active']}" in st.output
    back = _cli("personalise", "--target", "host", "--rollback")
    assert back.exit_code == 0 and "head is now shipped" in back.output
    assert "head     shipped" in _cli("status", "--target", "host").output
    # The same bundle again: not redeployed.
    again = _cli("personalise", "--target", "host", "--examples", examples(), "--bundle", bundle_run.host,
                 "--json", out)
    assert again.exit_code == 0 and "deployed" not in json.loads(out.read_text())


def test_personalise_needs_examples_or_rollback(host_board):
    res = _cli("personalise", "--target", "host")
    assert res.exit_code != 0 and "error: give exactly one of --examples FILE or --rollback" in res.output
