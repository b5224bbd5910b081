"""Suite-wide fixtures.

``one_torch_thread``: torch at one intra-op thread for the test, restored after it. Tiny models gain
nothing from threads, and 2 threads on a shared 2-core machine oversubscribe; directories of small-model tests
use it from an autouse fixture of their own conftest.

``device``: every model-on-device test runs once on ``"cpu"`` and once, marked ``gpu``, on ``"cuda"`` (skipped
where ``torch.cuda.is_available()`` is false; ``pytest -m gpu`` selects the CUDA twins on a GPU machine). On CUDA,
TF32 is switched off for the test so fp32 results can be held to fp32 tolerances against the CPU.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> Iterator[str]:
    import torch

    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device (the gpu-marked twin runs on a GPU machine)")
    if request.param != "cuda":
        yield request.param
        return
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield request.param
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
