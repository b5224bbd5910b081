"""Device/dtype dispatch and a registry of kernel implementations.

Why a registry: every kernel has a readable reference and one or more fast paths; tests compare
each registered path to the reference and ``benchmarks/kernels.py`` iterates over the same
registry, so a new path is tested and benchmarked by registering it once.

``impl="auto"`` picks the first *available* path in the per-device preference order; asking for
a named path that is unavailable raises (so a test never silently compares the reference with
itself). GPU paths are registered behind a device check and report why they are unavailable.

Triton paths run on CUDA tensors, and on CPU tensors only while Triton's interpreter is on
(``TRITON_INTERPRET=1``): that is how CI tests them without a GPU. They are never in the CPU
preference order, so ``impl="auto"`` on CPU is unaffected by the interpreter.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "KernelImpl",
    "available_impls",
    "gpu_available",
    "implementations",
    "preference",
    "register",
    "resolve",
    "set_preference",
    "triton_available",
    "triton_interpreting",
    "triton_runs_on",
]


@dataclass
class KernelImpl:
    """One implementation of a kernel: the callable, where it runs, and how to tell it works."""

    kernel: str
    name: str
    fn: Callable[..., Any]
    devices: tuple[str, ...]
    check: Callable[[], bool] = field(default=lambda: True)
    why_unavailable: Callable[[], str | None] = field(default=lambda: None)
    note: str = ""
    # per-device condition on top of ``check`` (a Triton path runs on CPU only under the interpreter)
    device_check: Callable[[str], bool] | None = None

    def available(self, device: str = "cpu") -> bool:
        """True if this path runs on ``device`` type here (may trigger a one-time build)."""
        if device not in self.devices or not self.check():
            return False
        return self.device_check is None or bool(self.device_check(device))


_REGISTRY: dict[str, dict[str, KernelImpl]] = {}
_PREFERENCE: dict[str, dict[str, list[str]]] = {}


def register(
    kernel: str,
    name: str,
    fn: Callable[..., Any],
    devices: tuple[str, ...] = ("cpu", "cuda"),
    check: Callable[[], bool] | None = None,
    why_unavailable: Callable[[], str | None] | None = None,
    note: str = "",
    device_check: Callable[[str], bool] | None = None,
) -> KernelImpl:
    """Register ``fn`` as implementation ``name`` of ``kernel``."""
    impl = KernelImpl(
        kernel,
        name,
        fn,
        tuple(devices),
        check or (lambda: True),
        why_unavailable or (lambda: None),
        note,
        device_check,
    )
    _REGISTRY.setdefault(kernel, {})[name] = impl
    return impl


def set_preference(kernel: str, device: str, order: list[str]) -> None:
    """Order in which ``impl="auto"`` tries implementations on a device type."""
    _PREFERENCE.setdefault(kernel, {})[device] = list(order)


def preference(kernel: str, device: str) -> list[str]:
    """The auto-dispatch order for ``kernel`` on ``device`` (reference last if not listed)."""
    order = list(_PREFERENCE.get(kernel, {}).get(device, []))
    if "reference" not in order:
        order.append("reference")
    return order


def implementations(kernel: str) -> dict[str, KernelImpl]:
    """All registered implementations of ``kernel`` (available or not)."""
    return dict(_REGISTRY.get(kernel, {}))


def available_impls(kernel: str, device: str = "cpu") -> list[str]:
    """Names of the implementations of ``kernel`` that run on ``device`` here."""
    return [n for n, i in _REGISTRY.get(kernel, {}).items() if i.available(device)]


def resolve(kernel: str, impl: str, device: torch.device | str) -> KernelImpl:
    """Pick the implementation for a call: ``auto`` → first available in preference order."""
    dev = torch.device(device).type
    table = _REGISTRY.get(kernel)
    if not table:
        raise KeyError(f"unknown kernel {kernel!r}")
    if impl == "auto":
        for name in preference(kernel, dev):
            cand = table.get(name)
            if cand is not None and cand.available(dev):
                return cand
        raise RuntimeError(f"no implementation of {kernel} runs on {dev}")
    if impl not in table:
        raise ValueError(f"unknown impl {impl!r} for {kernel}; known: {sorted(table)}")
    cand = table[impl]
    if dev not in cand.devices:
        raise RuntimeError(f"{kernel}[{impl}] does not run on {dev} (runs on {cand.devices})")
    if not cand.available(dev):
        raise RuntimeError(f"{kernel}[{impl}] unavailable: {cand.why_unavailable() or 'check failed'}")
    return cand


def gpu_available() -> bool:
    """A CUDA device is visible to torch."""
    return torch.cuda.is_available()


def triton_available() -> bool:
    """Triton imports and a CUDA device exists (there is no Triton CPU backend here)."""
    return gpu_available() and importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """Triton is installed and its interpreter is requested (``TRITON_INTERPRET=1``).

    ``triton.jit`` reads the variable when a kernel is *decorated*, i.e. when the module defining
    it is first imported, so set it before importing a Triton kernel module.
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1" and importlib.util.find_spec("triton") is not None


def triton_runs_on(device: str) -> bool:
    """A Triton kernel can run on tensors of this device type: CUDA, or CPU under the interpreter."""
    if device == "cuda":
        return triton_available()
    return device == "cpu" and triton_interpreting()
