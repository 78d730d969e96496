"""Fixtures shared by the profiling tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def single_combination_run(tiny_bert, toy_spec, codesign_home) -> Path:
    """A tiny-BERT run with one sampled layer combination and a softmax head: the cheapest run
    whose kept candidates a host profile can measure."""
    from toolchain.flows.run import RunConfig, run

    run_dir = codesign_home / "runs" / "tiny"
    run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_combinations=1,
                  heads=(("softmax", 3),), run_dir=str(run_dir)))
    return run_dir
