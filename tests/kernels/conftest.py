"""Shared inputs for the kernel tests (Mamba-style scan initialisation)."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from latentstack.kernels import cpp_available


def _scan_inputs(bt: int, d: int, n: int, length: int, g: int = 1, dtype: torch.dtype = torch.float64,
                 seed: int = 0, full: bool = True) -> dict[str, torch.Tensor | None]:
    """Δ = softplus(N(−2, 1)) (via delta_softplus), A = −[1..N]; optional D, z, bias, h0."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    return {
        "u": r(bt, d, length),
        "delta": r(bt, d, length) - 2.0,
        "A": -torch.arange(1, n + 1, dtype=dtype).repeat(d, 1),
        "B": r(bt, g, n, length),
        "C": r(bt, g, n, length),
        "D": r(d) if full else None,
        "z": r(bt, d, length) if full else None,
        "delta_bias": 0.5 * r(d) if full else None,
        "initial_state": r(bt, d, n) if full else None,
    }


@pytest.fixture
def scan_inputs() -> Callable[..., dict[str, torch.Tensor | None]]:
    return _scan_inputs


@pytest.fixture(scope="session")
def has_cpp() -> bool:
    return cpp_available()
