"""Device strings: syntax without torch, availability with a clear error (the ``--device`` / ``device`` contract)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from latentstack.core.device import DeviceError, check_device, parse_device


@pytest.mark.parametrize("raw,norm", [("cpu", "cpu"), ("CUDA", "cuda"), (" cuda:1 ", "cuda:1"), ("mps", "mps")])
def test_parse_device_normalizes(raw, norm):
    assert parse_device(raw) == norm


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "cpu:0", "", None, 0])
def test_parse_device_refuses(bad):
    with pytest.raises(DeviceError, match="device"):
        parse_device(bad)


def test_parse_device_imports_no_torch():
    code = ("import sys; from latentstack.core.device import parse_device; parse_device('cuda:0'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_check_device_cpu_and_missing_cuda():
    import torch

    assert check_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert check_device("cuda") == "cuda"
        with pytest.raises(DeviceError, match="visible"):
            check_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(DeviceError, match="requested but"):
            check_device("cuda")


def test_device_kwargs_and_call_with_device_never_ignore_a_device():
    from dataclasses import dataclass

    from latentstack.core.device import call_with_device, device_kwargs

    @dataclass
    class WithDevice:
        device: str = "cpu"

    @dataclass
    class CpuOnly:
        steps: int = 1

    assert device_kwargs(WithDevice, "cuda:1", "x") == {"device": "cuda:1"}
    assert device_kwargs(CpuOnly, "cpu", "x") == {}
    with pytest.raises(DeviceError, match="the trainer does not take a device yet .*use --device cpu"):
        device_kwargs(CpuOnly, "cuda", "the trainer")

    def takes(a, device="cpu"):
        return a, device

    def cpu_only(a):
        return a

    assert call_with_device(takes, "cuda", "t", 1) == (1, "cuda")
    assert call_with_device(cpu_only, "cpu", "c", 2) == 2
    with pytest.raises(DeviceError, match="evaluation does not take a device yet"):
        call_with_device(cpu_only, "mps", "evaluation", 3)
