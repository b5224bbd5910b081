"""Suite-wide fixtures.

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
