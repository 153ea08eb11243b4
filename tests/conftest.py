"""Shared test settings.

Tests use one intra-op thread: their tensors are tiny, and a two-thread OpenMP pool on a machine
whose other core is busy (CI beside other work) can be slower by orders of magnitude.
"""

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def data_dir():
    """The corpus mirror named by RNNLAB_DATA_DIR, or a skip that says why."""
    path = os.environ.get("RNNLAB_DATA_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("real corpora need RNNLAB_DATA_DIR pointing at a corpus mirror (CI sets it)")
    return path
