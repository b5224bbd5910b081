"""Device strings: one syntax check (no torch import) and one availability check (with torch).

Every ``--device`` flag and every node core's ``device`` parameter goes through here, so a typo or a
``cuda`` request on a machine without CUDA fails early with one clear message instead of a stack trace
from deep inside a model. Accepted: ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DEVICE_HELP", "DeviceError", "call_with_device", "check_device", "cpu_model_name", "device_kwargs",
           "parse_device", "processor_on", "to_torch_device"]

_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
DEVICE_HELP = "cpu | cuda | cuda:N | mps (default cpu)"


class DeviceError(ValueError):
    """A device string is malformed or names a device this machine does not have."""


def parse_device(device: Any) -> str:
    """Normalized device string (``"CUDA:0"`` -> ``"cuda:0"``); syntax only, never imports torch.

    Used where torch must not be imported yet (CLI parsing, graph-file validation)."""
    if not isinstance(device, str):
        raise DeviceError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    d = device.strip().lower()
    if not _DEVICE_RE.match(d):
        raise DeviceError(f"unknown device {device!r}; expected {DEVICE_HELP}")
    return d


def check_device(device: Any) -> str:
    """``parse_device`` plus: the device exists on this machine (imports torch). Returns the normalized string."""
    d = parse_device(device)
    if d == "cpu":
        return d
    import torch

    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            built = torch.version.cuda
            why = (f"this torch {torch.__version__} was built without CUDA" if built is None
                   else f"torch {torch.__version__} (CUDA {built}) sees no GPU (driver / CUDA_VISIBLE_DEVICES)")
            raise DeviceError(f"device {d!r} requested but {why}; use device 'cpu' here")
        index = int(d.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device {d!r} requested but only {count} CUDA device(s) are visible")
    elif d == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("device 'mps' requested but the MPS backend is not available here; use 'cpu'")
    return d


def to_torch_device(device: Any) -> Any:
    """``torch.device`` for a checked device string (what model loaders and trainers receive)."""
    import torch

    return torch.device(check_device(device))


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform`` elsewhere): benchmarks record it beside their numbers."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def processor_on(processor: Any, device: Any) -> Any:
    """``processor`` placed on ``device`` (moved only when it is elsewhere): every model's ``processor`` property
    follows its weights this way, so ``model.to(device)`` is the one call that moves a model."""
    if processor.device != device:
        processor.to(device)
    return processor


def device_kwargs(config_cls: type, device: str, what: str) -> dict[str, str]:
    """``{"device": device}`` for a trainer/model config dataclass that has a ``device`` field; ``{}`` for one
    that has none when ``device`` is ``cpu``; otherwise a :class:`DeviceError` — a requested device is never
    silently ignored by a component that still runs on the CPU only."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)} if dataclasses.is_dataclass(config_cls) else set()
    if "device" in names:
        return {"device": device}
    if parse_device(device) == "cpu":
        return {}
    raise DeviceError(f"{what} does not take a device yet (its {config_cls.__name__} has no 'device' field); "
                      "it runs on the CPU: use --device cpu")


def call_with_device(fn: Any, device: str, what: str, *args: Any, **kw: Any) -> Any:
    """``fn(*args, device=device, **kw)`` when ``fn`` takes a ``device`` keyword; ``fn(*args, **kw)`` when it does
    not and ``device`` is ``cpu``; otherwise a :class:`DeviceError` (never a silently ignored device)."""
    import inspect

    if "device" in inspect.signature(fn).parameters:
        return fn(*args, device=device, **kw)
    if parse_device(device) != "cpu":
        raise DeviceError(f"{what} does not take a device yet; it runs on the CPU: use --device cpu")
    return fn(*args, **kw)
