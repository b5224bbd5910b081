"""Apply a layout + quantizer preset to a model, in place.

``execution="int"`` presets replace each selected ``nn.Linear`` by the kernels' ``W8A8Linear`` /
``W4A8Linear`` (real int8 GEMMs via ``torch._int_mm``); ``execution="fake"`` presets use
:class:`FakeQuantLinear` (quantize–dequantize in float: DuQuant rotations/permutation, MSE weight
scales, static per-channel or asymmetric per-token activations — no integer kernel applies there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from latentstack.kernels.int_linear import W4A8Linear, W8A8Linear, _IntLinearBase, pack_int4
from latentstack.latent import Site, Tap

from .layouts import Layout, get_layout, layout_summary, linear_roles, select_linears
from .quantizers import (
    PercentileCalibrator,
    QuantConfig,
    apply_blocks,
    block_rotations,
    fake_quant_per_token,
    fake_quant_per_token_asym,
    fake_quant_sym,
    get_preset,
    quantize_weight,
    smoothing_scales,
    zigzag_permutation,
)

__all__ = [
    "FakeQuantLinear",
    "QuantResult",
    "RotatedIntLinear",
    "SmoothedLinear",
    "activation_calibration",
    "int_layer",
    "is_quantized",
    "quantize_model",
]


class FakeQuantLinear(nn.Module):
    """Fake-quantized linear with optional DuQuant transforms (released-code math, spec §3)::

        x' = x[..., perm] @ blockdiag(R_in)                   (permutation, input rotation)
        W' = blockdiag(R_out)ᵀ · W[:, perm] · blockdiag(R_in)   (quantized per output row)
        y  = Q_a(x') · Q_w(W')ᵀ  [@ blockdiag(R_out)ᵀ if row_rot == "restore"]  + b

    With quantization off (bits ≥ 16) this equals the original ``nn.Linear`` (orthogonal R's).
    """

    def __init__(self, linear: nn.Linear, cfg: QuantConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # W' = blockdiag(R_out)ᵀ · W[:, perm] · blockdiag(R_in)
        w, perm, r_in, r_out = _transform_weight(linear.weight.detach().to(torch.float32).clone(), cfg)
        self.register_buffer("perm", perm)
        self.r_in = r_in
        self.r_out = r_out
        if cfg.w_bits < 16:
            q, s = quantize_weight(w, cfg.w_bits, cfg.weight_scale)
            self.register_buffer("weight_q", q)
            self.register_buffer("weight_scale", s)
        else:
            self.register_buffer("weight_q", None)
            self.register_buffer("weight_scale", None)
        self.register_buffer("weight_t", None if cfg.w_bits < 16 else w)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.float32).clone())
        self.act_calib = (PercentileCalibrator(self.in_features, cfg.a_bits, cfg.act_pct, cfg.calib_batches, cfg.calib)
                          if cfg.act == "per_channel_static" else None)
        self.calibrating = False

    def dequantized_weight(self) -> torch.Tensor:
        """The (transformed) weight the forward multiplies by: ``Q_w(W')`` as float32 ``[N, K]``."""
        if self.weight_q is None:
            return self.weight_t
        return self.weight_q.to(torch.float32) * self.weight_scale[:, None]

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.perm is not None:
            x = x[..., self.perm]
        if self.r_in:
            x = apply_blocks(x, self.r_in, self.cfg.block)
        return x

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.a_bits >= 16 or cfg.act == "none":
            return x
        if cfg.act == "per_token":
            return fake_quant_per_token(x, cfg.a_bits)
        if cfg.act == "per_token_asym":
            return fake_quant_per_token_asym(x, cfg.a_bits)
        cal = self.act_calib
        assert cal is not None
        if self.calibrating or not cal.frozen:
            cal.observe(x)  # the released code's scale comes from the calibration calls themselves
        return fake_quant_sym(x, cal.scale, cfg.a_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xt = self.quantize_input(self.transform_input(x.to(torch.float32)))
        y = xt @ self.dequantized_weight().t()
        if self.r_out and self.cfg.row_rot == "restore":
            y = apply_blocks(y, [r.t() for r in self.r_out], self.cfg.block)
        if self.bias is not None:
            y = y + self.bias
        return y.to(dtype)

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"in_features={self.in_features}, out_features={self.out_features}, preset={c.name!r}, "
                f"W{c.w_bits}A{c.a_bits}, act={c.act}, rotate={c.rotate}, permute={c.permute}")


def _transform_weight(w: torch.Tensor, cfg: QuantConfig) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                   list[torch.Tensor], list[torch.Tensor]]:
    perm = zigzag_permutation(w, cfg.block, cfg.ls) if cfg.permute else None
    if perm is not None:
        w = w[:, perm]
    r_in: list[torch.Tensor] = []
    r_out: list[torch.Tensor] = []
    if cfg.rotate:
        r_in, r_out = block_rotations(w, cfg.block)
        w = apply_blocks(w, r_in, cfg.block)
        w = apply_blocks(w.t(), r_out, cfg.block).t()
    return w, perm, r_in, r_out


def int_layer(weight: torch.Tensor, bias: torch.Tensor | None, bits: int, weight_scale: str = "maxabs",
              impl: str = "auto") -> _IntLinearBase:
    """A kernels int layer (W8A8 / W4A8) holding ``weight`` quantized with ``maxabs`` or ``mse`` scales."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    mod = W8A8Linear.from_float(lin, impl=impl) if bits == 8 else W4A8Linear.from_float(lin, impl=impl)
    if weight_scale != "maxabs":
        q, s = quantize_weight(weight, bits, weight_scale)
        with torch.no_grad():
            if bits == 8:
                mod.weight_q.copy_(q.t().contiguous() if mod.layout == "kn" else q)
            else:
                mod.weight_packed.copy_(pack_int4(q.t().contiguous(), dim=0))
            mod.weight_scale.copy_(s)
    return mod


class RotatedIntLinear(nn.Module):
    """DuQuant transforms around a real int GEMM: ``x' = x[..., perm]·blockdiag(R_in)`` in float, int8
    per-token quantization of ``x'``, int GEMM with ``Q(R_outᵀ W[:, perm] R_in)``, then
    ``· blockdiag(R_out)ᵀ`` (restore) and the bias, in float. The rotations are buffers (state)."""

    def __init__(self, linear: nn.Linear, cfg: QuantConfig, impl: str = "auto") -> None:
        super().__init__()
        if cfg.row_rot != "restore":
            raise ValueError("RotatedIntLinear supports row_rot='restore' only")
        self.cfg, self.block = cfg, cfg.block
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w, perm, r_in, r_out = _transform_weight(linear.weight.detach().to(torch.float32), cfg)
        self.register_buffer("perm", perm)
        self.r_in = nn.ParameterList([nn.Parameter(r, requires_grad=False) for r in r_in])
        self.r_out = nn.ParameterList([nn.Parameter(r, requires_grad=False) for r in r_out])
        self.inner = int_layer(w, None, cfg.w_bits, cfg.weight_scale, impl)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        if self.perm is not None:
            x = x[..., self.perm]
        if len(self.r_in):
            x = apply_blocks(x, list(self.r_in), self.block)
        y = self.inner(x)
        if len(self.r_out):
            y = apply_blocks(y, [r.t() for r in self.r_out], self.block)
        if self.bias is not None:
            y = y + self.bias
        return y.to(dtype)


class SmoothedLinear(nn.Module):
    """``inner(x · inv_scale)`` where ``inner`` holds ``W·diag(Λ)`` (SmoothQuant fold, exact in float).

    ``inv_scale = 1/Λ`` is a per-input-channel multiply *before* the per-token quantization, so
    the integer GEMM still sees factorable scales (spec §9 option 2). It could be folded further into
    a preceding LayerNorm; here it stays a runtime multiply.
    """

    def __init__(self, inner: nn.Module, lam: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("inv_scale", (1.0 / lam).to(torch.float32))
        self.in_features, self.out_features = inner.in_features, inner.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * self.inv_scale.to(x.dtype))


def is_quantized(m: nn.Module) -> bool:
    return isinstance(m, (FakeQuantLinear, _IntLinearBase, RotatedIntLinear, SmoothedLinear))


def _build(lin: nn.Linear, cfg: QuantConfig, impl: str) -> nn.Module:
    if cfg.execution == "int" and (cfg.rotate or cfg.permute):
        return RotatedIntLinear(lin, cfg, impl)
    if cfg.execution == "int":
        return int_layer(lin.weight.detach().to(torch.float32), lin.bias, cfg.w_bits, cfg.weight_scale, impl)
    return FakeQuantLinear(lin, cfg)


def _channel_amax(value: torch.Tensor, _meta: dict[str, Any]) -> torch.Tensor:
    """``max |X_j|`` per input channel over all tokens of one call (float32)."""
    return value.abs().reshape(-1, value.shape[-1]).amax(0).float()


@contextlib.contextmanager
def _input_amax(model: nn.Module, paths: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Per-input-channel ``max |X_j|`` of each linear at ``paths`` over every call inside the block,
    read through a :class:`Tap` on the linears' inputs (one statistic per call); filled on exit."""
    amax: dict[str, torch.Tensor] = {}
    tap = Tap(model, {p: Site(p, kind="input") for p in paths}, reduce=_channel_amax)
    try:
        with tap:
            yield amax
    finally:
        for p in paths:
            for r in tap.records[p]:
                amax[p] = r.value if p not in amax else torch.maximum(amax[p], r.value)


@dataclass
class QuantResult:
    layout: str
    preset: QuantConfig
    replaced: list[str]
    total_linears: int
    summary: str
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.replaced)


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def quantize_model(model: nn.Module, layout: str | Layout = "paper", preset: str | QuantConfig = "w4a8", *,
                   impl: str = "auto", verbose: bool = True, calibrate: Callable[[], Any] | None = None,
                   **overrides: Any) -> QuantResult:
    """Replace the layout's linears in place and return what was done (prints the count if ``verbose``).

    ``impl`` is the int layers' path (``auto | cpp | torch | fake``). Presets with static
    per-channel activations take ``calibrate`` — a callable running the calibration forwards (e.g. a
    few ``predict_action_chunk`` calls); without it the first real call calibrates (released code).
    Presets with ``smooth`` set require it: it runs on the float model first to measure ``max|X_j|``.
    """
    cfg = get_preset(preset, **overrides)
    lay = get_layout(layout)
    roles = linear_roles(model)
    chosen = select_linears(model, lay, roles=roles)
    for path in chosen:
        lin = model.get_submodule(path)
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"{path} is {type(lin).__name__}, not nn.Linear (already quantized?)")
    amax: dict[str, torch.Tensor] = {}
    if cfg.smooth is not None:  # Λ needs activation ranges of the float model first
        if calibrate is None:
            raise ValueError(f"preset {cfg.name!r} smooths activations: pass calibrate=")
        with torch.no_grad(), _input_amax(model, chosen) as amax:
            calibrate()
    for path in chosen:
        lin = model.get_submodule(path)
        if cfg.smooth is not None:
            if path not in amax:
                raise RuntimeError(f"calibration never reached {path}")
            lam = smoothing_scales(amax[path], lin.weight, cfg.smooth)
            folded = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
            with torch.no_grad():
                folded.weight.copy_(lin.weight.detach() * lam[None, :])
                if lin.bias is not None:
                    folded.bias.copy_(lin.bias.detach())
            new: nn.Module = SmoothedLinear(_build(folded, cfg, impl), lam)
        else:
            new = _build(lin, cfg, impl)
        _replace(model, path, new)
    summary = layout_summary(roles, chosen, lay.name) + f" [{cfg.name}, {cfg.execution}]"
    if verbose:
        print(summary)
    res = QuantResult(lay.name, cfg, chosen, len(roles), summary, roles)
    if calibrate is not None and cfg.act == "per_channel_static":
        with activation_calibration(model):
            calibrate()
    return res


@contextlib.contextmanager
def activation_calibration(model: nn.Module) -> Iterator[None]:
    """Forwards inside observe static activation scales (each calibrator stops at its own rule:
    ``calib_batches`` calls for ``running_max``, one call for ``first_call``); frozen on exit."""
    mods = [m for m in model.modules() if isinstance(m, FakeQuantLinear) and m.act_calib is not None]
    for m in mods:
        m.calibrating = True
    try:
        yield
    finally:
        for m in mods:
            m.calibrating = False
            if m.act_calib is not None and m.act_calib.amax is not None:
                m.act_calib.freeze()
