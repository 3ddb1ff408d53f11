"""Shared fixtures: tiny random diffusers checkpoints saved to disk, like diffusers' dummy parts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# One intra-op thread: the tiny models gain nothing from two, and on a shared 2-core machine
# two spinning OpenMP threads slow training steps down by 10x or more when a core is busy.
torch.set_num_threads(1)

from helpers import save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=1234)


@pytest.fixture(scope="session")
def tiny_components():
    from pahi_rt.components import load_components

    return load_components("tiny")
