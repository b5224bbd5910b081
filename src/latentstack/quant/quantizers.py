"""Quantizers (spec §3): RTN weight/activation quantizers, MSE weight-scale search, percentile
activation calibrator (``running_max`` / ``first_call``), DuQuant-style block rotations and
zigzag permutation, and the named presets.

Integer-GEMM-friendly default: symmetric per-output-channel weights × dynamic per-token int8
activations (the kernels' ``W8A8Linear`` / ``W4A8Linear``). Variants whose activation scale varies
along the reduction axis (static per-input-channel, released code) or carry a zero-point
(paper App. A per-token asymmetric) run fake-quantized (quantize–dequantize in float).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from latentstack.kernels.int_linear import EPS, qmax

__all__ = [
    "MSE_GRID",
    "PRESETS",
    "PercentileCalibrator",
    "QuantConfig",
    "block_rotations",
    "fake_quant_per_token",
    "fake_quant_per_token_asym",
    "fake_quant_sym",
    "get_preset",
    "quantize_weight",
    "smoothing_scales",
    "weight_scales_maxabs",
    "weight_scales_mse",
    "zigzag_permutation",
]

#: multipliers of ``max|row|/qmax`` searched by the released code's MSE weight-scale search
MSE_GRID = (0.5, 0.75, 1.0, 1.25, 1.5)


# --------------------------------------------------------------------------- elementwise
def fake_quant_sym(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """``clamp(round(x/s), −2^{b−1}, 2^{b−1}−1)·s`` (idempotent; ``|Q(x)−x| ≤ s/2`` in range)."""
    return torch.round(x / scale).clamp(-(qmax(bits) + 1), qmax(bits)) * scale


def fake_quant_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Dynamic symmetric per-token (last dim) fake quant; codes in [−qmax, qmax] like the int kernel."""
    s = x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / qmax(bits)
    return torch.round(x / s).clamp(-qmax(bits), qmax(bits)) * s


def fake_quant_per_token_asym(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Paper App. A: asymmetric unsigned per token, ``X̃ = clip(round(X/Δ)+z, 0, 2^b−1)``, ``X̂ = Δ(X̃−z)``."""
    lo = x.amin(dim=-1, keepdim=True).clamp(max=0.0)
    hi = x.amax(dim=-1, keepdim=True).clamp(min=0.0)
    levels = 2**bits - 1
    delta = ((hi - lo) / levels).clamp(min=EPS)
    z = torch.round(-lo / delta)
    q = (torch.round(x / delta) + z).clamp(0, levels)
    return (q - z) * delta


# --------------------------------------------------------------------------- weights
def weight_scales_maxabs(w: torch.Tensor, bits: int) -> torch.Tensor:
    """One scale per output row: ``max|row| / qmax``."""
    return w.abs().amax(dim=1).clamp(min=EPS) / qmax(bits)


def weight_scales_mse(w: torch.Tensor, bits: int, grid: tuple[float, ...] = MSE_GRID) -> torch.Tensor:
    """Per-row scale minimising ``‖Q(row) − row‖²`` over ``grid × max|row|/qmax`` (released code).

    1.0 is always in the grid, so the chosen MSE is ≤ the plain max-abs MSE.
    """
    base = weight_scales_maxabs(w, bits)
    best_s, best_e = base.clone(), torch.full_like(base, float("inf"))
    for g in grid:
        s = base * g
        e = (fake_quant_sym(w, s[:, None], bits) - w).pow(2).sum(dim=1)
        better = e < best_e
        best_s = torch.where(better, s, best_s)
        best_e = torch.where(better, e, best_e)
    return best_s


def quantize_weight(w: torch.Tensor, bits: int, method: str = "maxabs") -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel codes (int8 tensor, values in the ``bits`` range) and fp32 scales."""
    w = w.detach().to(torch.float32)
    s = weight_scales_mse(w, bits) if method == "mse" else weight_scales_maxabs(w, bits)
    q = torch.round(w / s[:, None]).clamp(-(qmax(bits) + 1), qmax(bits)).to(torch.int8)
    return q, s


# --------------------------------------------------------------------------- activations
class PercentileCalibrator:
    """Static symmetric per-input-channel activation scale ``s_c = P_pct(|x_c|) / qmax``.

    ``mode="running_max"`` (documented intent): running max of the per-batch percentile over exactly
    ``calib_batches`` calls, then frozen. ``mode="first_call"`` (released behaviour, spec §6): the
    first call's scale is frozen immediately.
    """

    def __init__(self, channels: int, bits: int = 8, pct: float = 99.9, calib_batches: int = 32,
                 mode: str = "running_max") -> None:
        if mode not in ("running_max", "first_call"):
            raise ValueError(f"mode must be running_max | first_call, got {mode!r}")
        self.channels, self.bits, self.pct = channels, bits, pct
        self.calib_batches, self.mode = calib_batches, mode
        self.calls = 0
        self.amax: torch.Tensor | None = None
        self.frozen = False

    def observe(self, x: torch.Tensor) -> None:
        if self.frozen:
            return
        a = x.detach().reshape(-1, self.channels).abs().to(torch.float32)
        p = torch.quantile(a, self.pct / 100.0, dim=0) if a.shape[0] > 1 else a[0]
        self.amax = p if self.amax is None else torch.maximum(self.amax, p)
        self.calls += 1
        if self.mode == "first_call" or self.calls >= self.calib_batches:
            self.frozen = True

    def freeze(self) -> None:
        if self.amax is None:
            raise RuntimeError("activation calibrator saw no data")
        self.frozen = True

    @property
    def scale(self) -> torch.Tensor:
        if self.amax is None:
            raise RuntimeError("activation calibrator saw no data")
        return self.amax.clamp(min=EPS) / qmax(self.bits)


# --------------------------------------------------------------------------- DuQuant transforms
def smoothing_scales(act_amax: torch.Tensor, w: torch.Tensor, a: float) -> torch.Tensor:
    """SmoothQuant Λ: ``Λ_j = max|X_{:,j}|^a / max|W_{:,j}|^{1−a}`` (``Y = (X/Λ)(ΛW)``, W as [out, in])."""
    wmax = w.detach().abs().amax(dim=0).to(torch.float32).clamp(min=1e-5)
    lam = act_amax.to(torch.float32).clamp(min=1e-5).pow(a) / wmax.pow(1 - a)
    return lam.clamp(min=1e-5)


def zigzag_permutation(w: torch.Tensor, block: int = 64, ls: float = 0.15) -> torch.Tensor:
    """Input-channel permutation from channel energy ``e = mean_o W[o, c]²`` blended
    ``e ← (1−ls)·e + ls·mean(e)``; channels sorted by energy are dealt to blocks in zigzag order so
    each block gets a similar energy mix. Returns ``perm`` with ``x[..., perm]``."""
    k = w.shape[1]
    e = w.detach().to(torch.float32).pow(2).mean(dim=0)
    e = (1 - ls) * e + ls * e.mean()
    order = torch.argsort(e, descending=True)
    nb = max(1, -(-k // block))
    buckets: list[list[int]] = [[] for _ in range(nb)]
    for i, c in enumerate(order.tolist()):
        r, j = divmod(i, nb)
        b = j if r % 2 == 0 else nb - 1 - j
        if len(buckets[b]) >= min(block, k - b * block):  # the last block may be short
            b = next(bb for bb in range(nb) if len(buckets[bb]) < min(block, k - bb * block))
        buckets[b].append(c)
    return torch.tensor([c for bk in buckets for c in bk], dtype=torch.long)


def _blocks(n: int, block: int) -> list[tuple[int, int]]:
    return [(i, min(i + block, n)) for i in range(0, n, block)]


def block_rotations(w: torch.Tensor, block: int = 64) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Released code's SVD rotations: per input block ``R_in`` = left singular vectors of
    ``W[:, blk]ᵀ``; per output block ``R_out`` = left singular vectors of ``W[blk, :]``. Orthogonal."""
    w = w.detach().to(torch.float64)
    r_in = [torch.linalg.svd(w[:, a:b].t(), full_matrices=True)[0] for a, b in _blocks(w.shape[1], block)]
    r_out = [torch.linalg.svd(w[a:b, :], full_matrices=True)[0] for a, b in _blocks(w.shape[0], block)]
    return [r.to(torch.float32) for r in r_in], [r.to(torch.float32) for r in r_out]


def apply_blocks(x: torch.Tensor, mats: list[torch.Tensor], block: int) -> torch.Tensor:
    """``x @ blockdiag(mats)`` on the last dim."""
    outs = [x[..., a:b] @ m for (a, b), m in zip(_blocks(x.shape[-1], block), mats)]
    return torch.cat(outs, dim=-1)


# --------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class QuantConfig:
    """One quantization recipe.

    ``act``: ``per_token`` (dynamic symmetric, int-GEMM friendly) | ``per_token_asym`` (paper App. A,
    zero-point) | ``per_channel_static`` (released code) | ``none`` (weight-only fake quant).
    ``execution``: ``int`` (kernels' W8A8/W4A8 layers) or ``fake`` (quantize–dequantize in float);
    ``int`` needs ``act="per_token"`` (the only activation scale that factors out of an int GEMM);
    rotations/permutation run in float around the int GEMM (:class:`~.apply.RotatedIntLinear`) and
    MSE weight scales are written into the int layer's codes.
    """

    name: str = "w4a8"
    w_bits: int = 4
    a_bits: int = 8
    act: str = "per_token"
    weight_scale: str = "maxabs"
    rotate: bool = False
    row_rot: str = "restore"
    permute: bool = False
    block: int = 64
    act_pct: float = 99.9
    calib: str = "running_max"
    calib_batches: int = 32
    ls: float = 0.15
    smooth: float | None = None  # SmoothQuant/DuQuant migration strength a (paper App. B); None = off
    execution: str = "int"

    def __post_init__(self) -> None:
        if self.act not in ("per_token", "per_token_asym", "per_channel_static", "none"):
            raise ValueError(f"unknown act granularity {self.act!r}")
        if self.execution not in ("int", "fake"):
            raise ValueError(f"execution must be int | fake, got {self.execution!r}")
        if self.execution == "int":
            why = []
            if self.act != "per_token":
                why.append(f"act={self.act} (scale not factorable out of an int GEMM)")
            if self.w_bits not in (4, 8) or self.a_bits != 8:
                why.append(f"W{self.w_bits}A{self.a_bits} (int kernels are W8A8 / W4A8)")
            if why:
                raise ValueError(f"preset {self.name!r} cannot run on the int path: " + "; ".join(why))

    def needs_calibration(self) -> bool:
        return self.act == "per_channel_static" or self.smooth is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, QuantConfig] = {
    # integer execution, per-token activations (default)
    "w8a8": QuantConfig("w8a8", w_bits=8),
    "w4a8": QuantConfig("w4a8", w_bits=4),
    # same recipes, fake-quantized (reference for the int path)
    "w8a8_fake": QuantConfig("w8a8_fake", w_bits=8, execution="fake"),
    "w4a8_fake": QuantConfig("w4a8_fake", w_bits=4, execution="fake"),
    # DuQuant transforms (released-code rotations, zigzag permutation, MSE weight scales) on the int path:
    # block rotation / permutation in float on the activations, int8 GEMM on the rotated weight
    "duquant_int_w4a8": QuantConfig("duquant_int_w4a8", rotate=True, permute=True, weight_scale="mse"),
    "duquant_int_w8a8": QuantConfig("duquant_int_w8a8", w_bits=8, rotate=True, permute=True, weight_scale="mse"),
    # paper App. A RTN: per-token asymmetric activations with zero-point, per-channel weights
    "paper_rtn_w4a8": QuantConfig("paper_rtn_w4a8", act="per_token_asym", execution="fake"),
    # paper App. B/D DuQuant: rotations + permutation, block 64, per-token activations
    "paper_duquant_w4a8": QuantConfig("paper_duquant_w4a8", act="per_token_asym", rotate=True, permute=True,
                                      weight_scale="mse", execution="fake"),
    # paper App. B with smoothing Λ (migration a = 0.15, App. D's coefficient) on the int path:
    # x/Λ applied in float before per-token int8 quantization, Λ folded into W (spec §9 option 2)
    "paper_smooth_duquant_int_w4a8": QuantConfig("paper_smooth_duquant_int_w4a8", rotate=True, permute=True,
                                                 weight_scale="mse", smooth=0.15),
    "smooth_int_w8a8": QuantConfig("smooth_int_w8a8", w_bits=8, smooth=0.5),
    # released code (run_quantvla.sh): PERMUTE=0 ROW_ROT=restore ACT_PCT=99.9 CALIB_STEPS=32 LS=0.15,
    # MSE weight scales, static per-input-channel activations frozen after the FIRST call
    "code_duquant_w4a8": QuantConfig("code_duquant_w4a8", act="per_channel_static", rotate=True, permute=False,
                                     weight_scale="mse", calib="first_call", execution="fake"),
    # same with the documented intent (running max over 32 calls)
    "code_duquant_w4a8_running_max": QuantConfig("code_duquant_w4a8_running_max", act="per_channel_static",
                                                 rotate=True, weight_scale="mse", calib="running_max",
                                                 execution="fake"),
}


def get_preset(preset: str | QuantConfig, **overrides: Any) -> QuantConfig:
    cfg = preset if isinstance(preset, QuantConfig) else PRESETS.get(preset)
    if cfg is None:
        raise KeyError(f"unknown quant preset {preset!r}; known: {sorted(PRESETS)}")
    return replace(cfg, **overrides) if overrides else cfg
