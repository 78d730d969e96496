"""tests/core: one torch thread. The suite's tensors are tiny, where a second thread only adds
synchronisation (on a loaded 2-core machine an MLP fit went from 0.07 s to 2-6 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
