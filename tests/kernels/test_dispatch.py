"""The registry the benchmark iterates over, and the GPU device checks (no GPU needed)."""
from __future__ import annotations

import pytest
import torch

import latentstack.kernels as K
from latentstack.kernels.dispatch import preference


def test_every_kernel_has_a_reference_and_a_fast_path():
    for kernel in ("selective_scan", "linear_attention", "int_linear", "conceptor_gate"):
        impls = K.implementations(kernel)
        assert "reference" in impls and len(impls) >= 2
        assert "reference" in K.available_impls(kernel, "cpu")
        assert preference(kernel, "cpu")[-1] == "reference"


def test_gpu_paths_report_unavailable_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert not K.gpu_available() and not K.triton_available()
    mamba = K.implementations("selective_scan")["mamba_ssm"]
    assert not mamba.available("cuda") and "CUDA" in (mamba.why_unavailable() or "")
    with pytest.raises(RuntimeError):
        K.resolve("selective_scan", "cpp", "cuda")


def test_unknown_names():
    with pytest.raises(KeyError):
        K.resolve("nope", "auto", "cpu")
    with pytest.raises(ValueError):
        K.resolve("selective_scan", "nope", "cpu")
