"""A learn killed with SIGKILL at its most delicate point (the new head fully written, the
switch not yet made) leaves the old head active; the next learn removes what it left and
switches cleanly."""

from __future__ import annotations

import subprocess
import sys
import time

from bundle_tamper import sigkill

from toolchain.bundle.deploy import status

# Runs the deployed runner's own --learn, with its HeadState.switch replaced by "say so, then
# wait to be killed": the kill lands after the new head's folder is complete.
_PAUSING_LEARN = r"""
import os, sys, time
bundle, flag = sys.argv[1], sys.argv[2]
sys.path.insert(0, bundle)
import runner
mod = runner.Bundle(bundle).personalise_module()
def pause(self, *args, **kwargs):
    open(flag, "w").close()
    time.sleep(600)
mod.HeadState.switch = pause
sys.exit(runner.main(sys.argv[3:]))
"""


def test_sigkill_mid_learn_keeps_the_old_head(deployed_host, examples, host_board, tmp_path):
    current = str(host_board / "current")
    flag = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_LEARN, current, str(flag), "--learn",
                             str(examples())], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a bound on startup, not a timing assertion
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the learn never reached the switch"
        time.sleep(0.05)
    sigkill(proc)

    state = next((host_board / "state").iterdir())
    written = [p for p in (state / "heads").iterdir()]
    assert len(written) == 1 and (written[0] / "head.npz").is_file()  # written, never switched to
    assert not (state / "active.json").exists()
    assert status(deployed_host)["head"]["active"] == "shipped"

    report = deployed_host.personalise(examples())
    assert report["switched"] and report["active_before"] == "shipped"
    assert status(deployed_host)["head"]["active"] == report["active"]
    assert not list((state / "heads").glob("*.partial"))
