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
