"""CoDyRA: dynamic-rank LoRA, ``y = W x + B · diag(w) · A x`` (spec stereo.md §2).

``A ∈ ℝ^{r×in}`` (kaiming), ``B ∈ ℝ^{out×r}`` (zeros ⇒ the adapter starts as the identity),
``w ∈ ℝ^r`` (ones). Training has a dense phase (first half: no sparsity) and a sparse phase:
``loss += λ‖w‖₁`` and after every optimizer step a threshold with κ ramped linearly to κ_max.

Two threshold rules, selected by ``rule`` and recorded with every result:

- ``released`` (the StereoAdapter / StereoAdapter-2 code): ``w ← w + sign(w)·κ if |w| > κ else 0`` —
  survivors are pushed *away* from zero;
- ``soft`` (textbook soft-threshold / proximal L1): ``w ← sign(w)·max(|w| − κ, 0)``.

A conv layer is adapted on its flattened kernel ``[out, in·kh·kw]`` ([inferred] in the spec).
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RULES",
    "CoDyRAConv2d",
    "CoDyRALinear",
    "add_codyra",
    "codyra_l1",
    "codyra_modules",
    "codyra_threshold_",
    "kappa_schedule",
    "merge_codyra",
]

RULES = ("released", "soft")


class _CoDyRAMixin(nn.Module):
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_w: nn.Parameter

    def _init_adapter(self, out_features: int, in_features: int, rank: int) -> None:
        if rank < 1:
            raise ValueError(f"CoDyRA rank must be >= 1, got {rank}")
        self.rank = rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.lora_w = nn.Parameter(torch.ones(rank))
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """``B · diag(w) · A`` with the flattened-kernel shape ``[out, in·k·k]``."""
        return (self.lora_B * self.lora_w[None, :]) @ self.lora_A

    def threshold_(self, kappa: float, rule: str) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown CoDyRA rule {rule!r}; choose one of {RULES}")
        with torch.no_grad():
            w = self.lora_w
            if rule == "released":
                w.copy_(torch.where(w.abs() > kappa, w + torch.sign(w) * kappa, torch.zeros_like(w)))
            else:
                w.copy_(torch.sign(w) * torch.clamp(w.abs() - kappa, min=0.0))


class CoDyRALinear(_CoDyRAMixin):
    """Frozen ``nn.Linear`` + CoDyRA adapter."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self._init_adapter(base.out_features, base.in_features, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        return self.base(x) + F.linear(x, self.delta_weight())

    def merge_(self) -> None:
        with torch.no_grad():
            self.base.weight += self.delta_weight()
        self.merged = True


class CoDyRAConv2d(_CoDyRAMixin):
    """Frozen ``nn.Conv2d`` (groups = 1) + CoDyRA adapter on the flattened kernel."""

    def __init__(self, base: nn.Conv2d, rank: int) -> None:
        super().__init__()
        if base.groups != 1:
            raise ValueError("CoDyRA on grouped/depthwise convs is not defined here (groups must be 1)")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        o, i, kh, kw = base.weight.shape
        self._init_adapter(o, i * kh * kw, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        w = self.base.weight + self.delta_weight().view_as(self.base.weight)
        return self.base._conv_forward(x, w, self.base.bias)

    def merge_(self) -> None:
        with torch.no_grad():
            self.base.weight += self.delta_weight().view_as(self.base.weight)
        self.merged = True


def add_codyra(module: nn.Module, rank: int, kinds: tuple[str, ...] = ("conv", "linear")) -> int:
    """Replaces every (non-grouped) Conv2d / Linear under ``module`` by its CoDyRA twin; returns the count."""
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and "conv" in kinds and child.groups == 1:
            setattr(module, name, CoDyRAConv2d(child, rank))
            n += 1
        elif isinstance(child, nn.Linear) and "linear" in kinds:
            setattr(module, name, CoDyRALinear(child, rank))
            n += 1
        elif not isinstance(child, _CoDyRAMixin):
            n += add_codyra(child, rank, kinds)
    return n


def codyra_modules(module: nn.Module) -> Iterator[_CoDyRAMixin]:
    return (m for m in module.modules() if isinstance(m, _CoDyRAMixin))


def kappa_schedule(step: int, total_steps: int, kappa_max: float = 0.005) -> float:
    """SA2 ramp: 0 in the dense first half, then ``κ_max · min((t − T/2)/(T/2), 1)``."""
    half = total_steps / 2.0
    if step < half or half <= 0:
        return 0.0
    return kappa_max * min((step - half) / half, 1.0)


def codyra_l1(module: nn.Module) -> torch.Tensor:
    """``Σ ‖w‖₁`` over all adapters (multiply by λ = 1e-4 in the sparse phase)."""
    terms = [m.lora_w.abs().sum() for m in codyra_modules(module)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def codyra_threshold_(module: nn.Module, kappa: float, rule: str) -> None:
    """Applies the threshold rule to every adapter (no-op at κ = 0: the dense phase)."""
    if kappa <= 0:
        return
    for m in codyra_modules(module):
        m.threshold_(kappa, rule)


def merge_codyra(module: nn.Module) -> None:
    """``W ← W + B diag(w) A`` in place (inference after training)."""
    for m in codyra_modules(module):
        m.merge_()
