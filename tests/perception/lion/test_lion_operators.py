"""Operators (spec test 10): BiMamba symmetry on the shared scan, RetNet causality, identity ablation."""
from __future__ import annotations

import copy

import pytest
import torch

from latentstack.perception.lion.operators import BiMamba, OperatorBlock, RetNetMSR


def test_bimamba_swapping_directions_flips_the_output() -> None:
    torch.manual_seed(0)
    op = BiMamba(8, d_state=4).double()
    x = torch.randn(3, 21, 8, dtype=torch.float64)
    swapped = copy.deepcopy(op)
    swapped.fwd, swapped.bwd = op.bwd, op.fwd
    torch.testing.assert_close(swapped(x.flip(1)), op(x).flip(1), rtol=1e-9, atol=1e-9)


def test_bimamba_is_bidirectional_and_groups_are_independent() -> None:
    torch.manual_seed(0)
    op = BiMamba(8, d_state=4).double()
    x = torch.randn(2, 16, 8, dtype=torch.float64)
    y = op(x)
    x2 = x.clone()
    x2[0, -1] += 1.0  # change the last token of group 0
    y2 = op(x2)
    assert (y2[0, 0] - y[0, 0]).abs().max() > 1e-8, "the first token must see the last (backward branch)"
    torch.testing.assert_close(y2[1], y[1])


def test_bimamba_init_matches_mamba_simple() -> None:
    op = BiMamba(32, d_state=16)
    a = -torch.exp(op.fwd.A_log)
    torch.testing.assert_close(a[0], -torch.arange(1, 17, dtype=torch.float32))
    dt = torch.nn.functional.softplus(op.fwd.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    assert op.fwd.dt_proj.weight.shape == (64, 2) and op.in_proj.weight.shape == (128, 32)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_retnet_causality(bidirectional: bool) -> None:
    torch.manual_seed(0)
    op = RetNetMSR(8, bidirectional=bidirectional, chunk_size=4)
    x = torch.randn(1, 10, 8)
    x2 = x.clone()
    x2[0, -1] += 1.0
    changed = (op(x2)[0, 0] - op(x)[0, 0]).abs().max()
    assert (changed > 1e-6) == bidirectional


def test_identity_block_is_exact_noop_and_unknown_rejected() -> None:
    x = torch.randn(2, 5, 4)
    assert OperatorBlock("identity", 4)(x) is x
    with pytest.raises(ValueError, match="unknown operator"):
        OperatorBlock("lstm", 4)
