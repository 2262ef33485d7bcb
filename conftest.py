"""Settings for the whole test session (tests, plugins, examples): one intra-op thread,
here and in every process a test starts. The tests' models and batches are tiny; on a
2-core machine a thread pool makes their steps several times slower, not faster."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_process() -> Iterator[None]:
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # subprocesses and spawned ranks start with it
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env
