"""Training tests run single-threaded: tiny convolutions gain nothing from threads, and
intra-op threads competing with other processes on a small machine slow them down 100-fold."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
