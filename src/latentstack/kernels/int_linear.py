"""Integer linear layers (W8A8, W4A8) on ``torch._int_mm``, packing, compile helper, memory.

Math (per-token activation scale ``s_x[t]``, per-output-channel weight scale ``s_w[o]``)::

    Y[t, o] = s_x[t] · s_w[o] · Σ_k X̃[t, k] W̃[o, k]  (+ b[o])

Both scales factor out of the int32 accumulation, so one int8×int8→int32 GEMM plus a rank-1
rescale is exact w.r.t. the dequantised operands. Per-*input*-channel activation scales do not
factor out; fold them into the weight first (:func:`fold_input_scale`, SmoothQuant-style).

Execution paths (``impl`` on the modules):

- ``"torch"`` — the expression above in eager torch ops; what ``torch.compile`` sees.
- ``"cpp"`` — one fused C++ op (quantise rows → ``at::_int_mm`` → epilogue); default when it
  builds, because in eager mode the small quantisation ops otherwise cost as much as the GEMM.
- ``"fake"`` — fake-quant reference in float64 (dequantise both operands, matmul); the oracle.
- ``"triton"`` — one fused Triton kernel per layer (quantise rows → int8 ``tl.dot`` → epilogue; W4A8
  unpacks the nibbles inside the GEMM), :mod:`latentstack.kernels.triton_int`; what ``auto`` picks on
  CUDA tensors when triton is installed (the torch chain of small ops measured slower than bf16 there).
  On CPU tensors it runs only under ``TRITON_INTERPRET=1`` (tests); CPU ``auto`` is unchanged.

``_int_mm`` shape rules: on CPU every shape works and is exact (checked in tests); on CUDA it
needs M > 16 and K, N multiples of 8 — :func:`int_mm` pads there.

Compilation (:func:`compile_int_model`) — what works on this torch 2.13 CPU (AMD EPYC, AVX-512
VNNI, no AMX), measured in ``benchmarks/kernels.py``: plain ``torch.compile`` fuses the
quantise/rescale ops around an extern ``_int_mm`` (about as fast as the eager C++ op for one
layer, faster for whole stacks). ``freezing=True`` rewrites the pattern to oneDNN
``qlinear_pointwise`` with signed-int8 activations, which runs 0.001–0.0015× of fp32 here, and
``max_autotune`` with freezing picks inductor's reference C++ micro-GEMM (~10–30× slower than
fp32); the kernels.md table that favours freezing + max-autotune was measured on an AMX CPU.
Freezing is therefore off by default, an explicit opt-in only. Caveat: dynamo reuses a compiled
graph across instances of the same module class and does not guard on inductor's config, so a
``freezing=True`` compile after a non-frozen one of the same class in the same process silently
stays non-frozen (call ``torch._dynamo.reset()`` first if freezing is really wanted).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._int_cpp import INT_OPS
from .dispatch import register, set_preference

__all__ = [
    "EPS",
    "MemoryReport",
    "W4A8Linear",
    "W8A8Linear",
    "compile_int_model",
    "dequantize",
    "fake_quant",
    "fold_input_scale",
    "int_cpp_available",
    "int_mm",
    "int_mm_reference",
    "pack_int4",
    "qmax",
    "quantize_linears",
    "quantize_per_channel",
    "quantize_per_token",
    "quantize_symmetric",
    "resident_bytes",
    "state_bytes",
    "triton_int_available",
    "unpack_int4",
]

#: floor of a quantisation scale's max-abs (a zero row quantises to zeros, never NaN)
EPS = 1e-8


def int_cpp_available() -> bool:
    """True if the fused C++ int ops are built/loaded (builds them on first call, ~15 s)."""
    return INT_OPS.load()


def _triton_int() -> Any:
    """The Triton kernel module, imported on first use (``None`` when triton is not installed)."""
    try:
        from . import triton_int
    except ImportError:
        return None
    return triton_int


def triton_int_available(device: torch.device | str = "cuda") -> bool:
    """True if the Triton int kernels take tensors on ``device`` here (CUDA compiled, or CPU interpreted)."""
    mod = _triton_int()
    return mod is not None and bool(mod.runs_on(device))


def _triton_why() -> str | None:
    mod = _triton_int()
    if mod is None:
        return "triton is not installed"
    if mod.INTERPRETED:
        return "triton kernels were built for the CPU interpreter (TRITON_INTERPRET=1)"
    return None if torch.cuda.is_available() else "no CUDA device"


# --------------------------------------------------------------------------- quantisers
def qmax(bits: int) -> int:
    """Largest code of a signed ``bits``-bit integer (127 for int8, 7 for int4)."""
    return 2 ** (bits - 1) - 1


def quantize_symmetric(x: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Codes ``clamp(round(x / s), −2^{b−1}, 2^{b−1}−1)`` as int8 (round half to even)."""
    q = torch.round(x / scale).clamp_(-(qmax(bits) + 1), qmax(bits))
    return q.to(torch.int8)


def quantize_per_channel(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-row symmetric weights: ``s[o] = max_k |w[o, k]| / qmax`` → (int8 codes, fp32 s)."""
    w = w.detach().to(torch.float32)
    scale = w.abs().amax(dim=1).clamp(min=EPS) / qmax(bits)
    return quantize_symmetric(w, scale[:, None], bits), scale


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-row int8 activations: ``s[t] = max_k |x[t, k]| / 127`` → (codes, s [..., 1])."""
    x = x.to(torch.float32)
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / 127.0
    return torch.round(x / scale).clamp(-127, 127).to(torch.int8), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q · s`` in float32 (``scale`` broadcast against ``q``)."""
    return q.to(torch.float32) * scale


def fake_quant(x: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Quantise–dequantise ``Q(x) = clamp(round(x/s), …)·s`` (idempotent; |Q(x)−x| ≤ s/2 in range)."""
    return quantize_symmetric(x, scale, bits).to(x.dtype) * scale


# --------------------------------------------------------------------------- int4 packing
def pack_int4(q: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Two int4 codes per byte along ``dim``: element 2r → low nibble, 2r+1 → high nibble.

    An odd length is padded with a zero code; :func:`unpack_int4` needs the original length.
    """
    if q.dtype != torch.int8:
        raise TypeError(f"pack_int4 expects int8 codes, got {q.dtype}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("int4 codes must lie in [-8, 7]")
    q = q.movedim(dim, 0)
    if q.shape[0] % 2:
        q = torch.cat([q, q.new_zeros(1, *q.shape[1:])], 0)
    u = q.to(torch.int16) & 0xF
    packed = (u[0::2] | (u[1::2] << 4)).to(torch.uint8)
    return packed.movedim(0, dim).contiguous()


def unpack_int4(packed: torch.Tensor, length: int, dim: int = 0) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int8 codes in [-8, 7], ``length`` along ``dim``."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_int4 expects uint8, got {packed.dtype}")
    p = packed.movedim(dim, 0).to(torch.int16)
    lo, hi = p & 0xF, p >> 4
    lo = lo - ((lo >= 8).to(torch.int16) << 4)
    hi = hi - ((hi >= 8).to(torch.int16) << 4)
    out = torch.stack([lo, hi], dim=1).reshape(2 * p.shape[0], *p.shape[1:])[:length]
    return out.to(torch.int8).movedim(0, dim).contiguous()


# --------------------------------------------------------------------------- int GEMM
def int_mm(a: torch.Tensor, b: torch.Tensor, pad: bool | None = None) -> torch.Tensor:
    """``a @ b`` for int8 ``a [M, K]``, ``b [K, N]`` → int32, padding where ``_int_mm`` requires.

    CPU: no shape constraints (verified exact for odd shapes, M = 1). CUDA: M > 16 and K, N
    multiples of 8 — zero padding (exact) and a slice. ``pad=None`` pads only on CUDA.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError("int_mm expects int8 operands")
    if not (a.device.type == "cuda" if pad is None else pad):
        return torch._int_mm(a, b)
    m, k = a.shape
    n = b.shape[1]
    mp, kp, np_ = max(17, m), -(-k // 8) * 8, -(-n // 8) * 8
    if (mp, kp, np_) == (m, k, n):
        return torch._int_mm(a, b)
    ap = F.pad(a, (0, kp - k, 0, mp - m))
    bp = F.pad(b, (0, np_ - n, 0, kp - k))
    return torch._int_mm(ap, bp)[:m, :n]


def int_mm_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int32 reference via float64 (exact while K·128² < 2⁵³)."""
    return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


def fold_input_scale(w: torch.Tensor, s_in: torch.Tensor) -> torch.Tensor:
    """SmoothQuant fold: a layer fed ``x / s_in`` needs ``W' = W · diag(s_in)``.

    Per-input-channel activation scales cannot be applied after an integer GEMM (they vary along
    the reduction axis), so they are folded into the weight before weight quantisation.
    """
    return w * s_in.to(w.dtype)[None, :]


# --------------------------------------------------------------------------- modules
def _resolve_impl(impl: str, x: torch.Tensor) -> str:
    if impl == "auto":
        if torch.compiler.is_compiling():  # no build attempts while tracing; plain attribute read
            return "cpp" if x.device.type == "cpu" and INT_OPS.status()[0] else "torch"
        if x.device.type == "cuda":
            return "triton" if triton_int_available(x.device) else "torch"
        return "cpp" if x.device.type == "cpu" and int_cpp_available() else "torch"
    if impl == "triton" and not triton_int_available(x.device):
        raise RuntimeError(f"Triton int kernels do not run on {x.device} here: {_triton_why()}")
    if impl == "cpp" and torch.compiler.is_compiling():
        return impl if INT_OPS.status()[0] else "torch"
    if impl == "cpp" and not int_cpp_available():
        raise RuntimeError(f"C++ int ops unavailable: {INT_OPS.status()[1]}")
    return impl


class _IntLinearBase(nn.Module):
    """Shared forward: per-token int8 activations × int8 weight codes, fp32 rescale epilogue."""

    in_features: int
    out_features: int
    bits: int
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, impl: str) -> None:
        super().__init__()
        if impl not in ("auto", "cpp", "torch", "fake", "triton"):
            raise ValueError(f"impl must be auto | cpp | torch | fake | triton, got {impl!r}")
        self.in_features, self.out_features, self.impl = in_features, out_features, impl
        if impl in ("auto", "cpp"):
            int_cpp_available()  # build/load now, never inside a torch.compile trace

    def weight_kn(self) -> torch.Tensor:
        """Weight codes as an int8 ``[K, N]`` operand for ``_int_mm`` (view or unpacked copy)."""
        raise NotImplementedError

    def weight_codes(self) -> torch.Tensor:
        """Weight codes ``[N, K]`` int8 (the nn.Linear orientation)."""
        return self.weight_kn().t()

    def dequantized_weight(self) -> torch.Tensor:
        """``W̃ · s_w`` as float32 ``[N, K]``."""
        return self.weight_codes().to(torch.float32) * self.weight_scale[:, None]

    def _forward_torch(self, x2: torch.Tensor) -> torch.Tensor:
        # written so inductor sees: reshape → _int_mm → convert → mul(x_scale) → mul(w_scale) → add
        scale = x2.abs().amax(dim=-1, keepdim=True).clamp(min=EPS) / 127.0
        xq = torch.round(x2 / scale).clamp(-127, 127).to(torch.int8)
        acc = int_mm(xq, self.weight_kn())
        y = acc.to(torch.float32) * scale * self.weight_scale
        return y if self.bias is None else y + self.bias

    def _forward_cpp(self, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward_triton(self, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_fake(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quant oracle in float64: dequantised activations @ dequantised weights."""
        xq, sx = quantize_per_token(x.reshape(-1, self.in_features))
        y = (xq.double() * sx.double()) @ (self.weight_codes().double() * self.weight_scale.double()[:, None]).t()
        if self.bias is not None:
            y = y + self.bias.double()
        return y.reshape(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantise ``x`` per token, int8 GEMM, rescale; returns ``x.dtype``."""
        return self.run(x, self.impl)

    def run(self, x: torch.Tensor, impl: str = "auto") -> torch.Tensor:
        """Forward on a chosen path: ``auto | cpp | torch | fake | triton``."""
        impl = _resolve_impl(impl, x)
        if impl == "fake":
            return self.forward_fake(x).to(x.dtype)
        if impl == "triton":  # reads x in its own dtype and writes x.dtype: no fp32 round trip outside the kernel
            y = self._forward_triton(x.reshape(-1, self.in_features))
            return y.reshape(*x.shape[:-1], self.out_features)
        x2 = x.reshape(-1, self.in_features).to(torch.float32)
        y = self._forward_cpp(x2.contiguous()) if impl == "cpp" else self._forward_torch(x2)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, impl={self.impl!r}")


def _float_weight(linear: nn.Linear, input_scale: torch.Tensor | None) -> torch.Tensor:
    """fp32 weight of ``linear``, with a per-input-channel smoothing scale folded in when given."""
    w = linear.weight.detach().to(torch.float32)
    return w if input_scale is None else fold_input_scale(w, input_scale)


def _finish_from_float(mod: nn.Module, linear: nn.Linear, weight_scale: torch.Tensor) -> nn.Module:
    """Shared tail of the ``from_float`` constructors: scales, bias, device."""
    mod.weight_scale.copy_(weight_scale)
    if linear.bias is not None:
        mod.bias.copy_(linear.bias.detach().to(torch.float32))
    return mod.to(linear.weight.device)


class W8A8Linear(_IntLinearBase):
    """int8 per-output-channel weights, dynamic per-token int8 activations, ``_int_mm``.

    ``layout="kn"`` stores the codes as a contiguous ``[K, N]`` operand, ``"nk"`` as ``[N, K]``
    passed as a transposed view. On this CPU ``kn`` measured faster (kernels.md's "transposed
    view is faster" came from another CPU); both are benchmarked.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, layout: str = "kn",
                 impl: str = "auto") -> None:
        super().__init__(in_features, out_features, impl)
        if layout not in ("kn", "nk"):
            raise ValueError("layout must be 'kn' or 'nk'")
        self.layout, self.bits = layout, 8
        shape = (in_features, out_features) if layout == "kn" else (out_features, in_features)
        self.register_buffer("weight_q", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear, layout: str = "kn", impl: str = "auto",
                   input_scale: torch.Tensor | None = None) -> W8A8Linear:
        """Quantise an ``nn.Linear`` (optionally folding a per-input-channel smoothing scale)."""
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None, layout, impl)
        q, s = quantize_per_channel(_float_weight(linear, input_scale), 8)
        mod.weight_q.copy_(q.t().contiguous() if layout == "kn" else q)
        return _finish_from_float(mod, linear, s)

    def weight_kn(self) -> torch.Tensor:
        return self.weight_q if self.layout == "kn" else self.weight_q.t()

    def _forward_cpp(self, x2: torch.Tensor) -> torch.Tensor:
        return torch.ops.latentstack_int.w8a8_linear(x2, self.weight_kn(), self.weight_scale, self.bias, EPS)

    def _forward_triton(self, x2: torch.Tensor) -> torch.Tensor:
        return _triton_int().w8a8_linear_triton(x2, self.weight_kn(), self.weight_scale, self.bias, EPS)


class W4A8Linear(_IntLinearBase):
    """int4 per-output-channel weights packed two per byte (``[ceil(K/2), N]`` uint8), int8 GEMM.

    There is no int4×int8 CPU kernel here, so the CPU forward unpacks the codes to int8 (exact:
    int8 contains [−8, 7]) and runs the W8A8 GEMM; the ``triton`` path (CUDA) reads the packed bytes
    inside its GEMM and never materialises the int8 weight. ``cache_unpacked=True`` keeps the unpacked
    int8 copy (speed of W8A8, memory of W8A8 + packed); the default keeps only the packed bytes.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, impl: str = "auto",
                 cache_unpacked: bool = False) -> None:
        super().__init__(in_features, out_features, impl)
        self.bits, self.cache_unpacked = 4, cache_unpacked
        self.register_buffer("weight_packed", torch.zeros((in_features + 1) // 2, out_features, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._unpacked: torch.Tensor | None = None

    @classmethod
    def from_float(cls, linear: nn.Linear, impl: str = "auto", cache_unpacked: bool = False,
                   input_scale: torch.Tensor | None = None) -> W4A8Linear:
        """Quantise an ``nn.Linear`` to int4 codes (symmetric per output channel) and pack them."""
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None, impl, cache_unpacked)
        q, s = quantize_per_channel(_float_weight(linear, input_scale), 4)
        mod.weight_packed.copy_(pack_int4(q.t().contiguous(), dim=0))
        return _finish_from_float(mod, linear, s)

    def weight_kn(self) -> torch.Tensor:
        if self._unpacked is not None:
            return self._unpacked
        if self.weight_packed.device.type == "cpu" and not torch.compiler.is_compiling() and int_cpp_available():
            w = torch.ops.latentstack_int.unpack_int4_rows(self.weight_packed, self.in_features)
        else:
            w = unpack_int4(self.weight_packed, self.in_features, dim=0)
        if self.cache_unpacked and not torch.compiler.is_compiling():
            self._unpacked = w
        return w

    def _forward_cpp(self, x2: torch.Tensor) -> torch.Tensor:
        if self._unpacked is not None or self.cache_unpacked:
            return torch.ops.latentstack_int.w8a8_linear(x2, self.weight_kn(), self.weight_scale, self.bias, EPS)
        return torch.ops.latentstack_int.w4a8_linear(
            x2, self.weight_packed, self.in_features, self.weight_scale, self.bias, EPS
        )

    def _forward_triton(self, x2: torch.Tensor) -> torch.Tensor:
        ti = _triton_int()
        if self._unpacked is not None or self.cache_unpacked:  # speed of W8A8 asked for: the cached int8 copy
            return ti.w8a8_linear_triton(x2, self.weight_kn(), self.weight_scale, self.bias, EPS)
        # the packed bytes are read inside the GEMM: no int8 copy of the weight is made (nor cached)
        return ti.w4a8_linear_triton(x2, self.weight_packed, self.in_features, self.weight_scale, self.bias, EPS)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._unpacked = None  # new codes invalidate the cache
        super()._load_from_state_dict(*args, **kwargs)


def quantize_linears(model: nn.Module, kind: str = "w8a8", predicate: Callable[[str, nn.Linear], bool] | None = None,
                     **kwargs: Any) -> nn.Module:
    """Replace (in place) every ``nn.Linear`` accepted by ``predicate(name, module)``."""
    cls = {"w8a8": W8A8Linear, "w4a8": W4A8Linear}[kind]
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear) and (predicate is None or predicate(name, child)):
            setattr(model, name, cls.from_float(child, **kwargs))
        else:
            quantize_linears(child, kind, None if predicate is None else
                             (lambda n, m, _p=name: predicate(f"{_p}.{n}", m)), **kwargs)
    return model


# --------------------------------------------------------------------------- compile helper
def _set_impl(model: nn.Module, impl: str) -> None:
    for m in model.modules():
        if isinstance(m, _IntLinearBase):
            m.impl = impl


class _Compiled:
    """Callable wrapper: runs the compiled model under no_grad and the inductor config it was built with."""

    def __init__(self, fn: Callable[..., Any], patch: dict[str, Any]) -> None:
        self.fn, self.patch = fn, patch

    @contextlib.contextmanager
    def _ctx(self) -> Iterator[None]:
        import torch._inductor.config as inductor_config

        with torch.no_grad(), inductor_config.patch(**self.patch):
            yield

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not any(self.patch.values()):  # default config: skip the (per-call) config patch
            with torch.no_grad():
                return self.fn(*args, **kwargs)
        with self._ctx():
            return self.fn(*args, **kwargs)


def compile_int_model(model: nn.Module, example_inputs: tuple[Any, ...], *, freezing: bool = False,
                      max_autotune: bool = False, dynamic: bool = False,
                      int_impl: str = "torch") -> Callable[..., Any]:
    """``torch.compile`` a model with integer linears for inference, warmed on ``example_inputs``.

    ``int_impl="torch"`` switches the int layers to their torch expression so inductor fuses the
    per-token quantisation and the rescale around the extern ``_int_mm``; ``"cpp"`` keeps the
    fused C++ op as an opaque call and lets inductor fuse everything around it.
    ``freezing`` / ``max_autotune`` are opt-in: on this AMD CPU (no AMX) they route the GEMM to
    oneDNN s8 ``qlinear`` / the reference C++ micro-GEMM, measured ~15× to ~1000× slower than
    fp32 (module docstring, ``reports/kernels/summary.md``). When either is set, the inductor
    config is patched around every call, because ``freezing`` only takes effect when patched
    around compilation (kernels.md) and a new input shape recompiles; see the module docstring
    for the dynamo-cache caveat. Keep the non-compiled module for the eager path.
    """
    model.eval()
    if int_impl == "cpp" and not int_cpp_available():
        int_impl = "torch"
    _set_impl(model, int_impl)
    patch: dict[str, Any] = {"freezing": freezing, "max_autotune": max_autotune}
    if max_autotune:
        patch["max_autotune_gemm_backends"] = "CPP,ATEN"
    compiled = _Compiled(torch.compile(model, dynamic=dynamic), patch)
    compiled(*example_inputs)
    return compiled


# --------------------------------------------------------------------------- memory
@dataclass
class MemoryReport:
    """Bytes of a module's state by role (exact ``numel × element_size``)."""

    int_weight: int = 0
    scales: int = 0
    bias: int = 0
    float_weight: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.int_weight + self.scales + self.bias + self.float_weight + self.other

    def as_dict(self) -> dict[str, int]:
        return {"int_weight": self.int_weight, "scales": self.scales, "bias": self.bias,
                "float_weight": self.float_weight, "other": self.other, "total": self.total}


def state_bytes(module: nn.Module) -> MemoryReport:
    """Exact bytes of parameters + buffers (what a safetensors file of the state holds).

    Int weight codes (int8 / packed uint8), fp scales, biases and remaining float weights are
    counted separately; the transient unpacked cache of ``W4A8Linear`` is not state and is
    excluded (see :func:`resident_bytes` for what the process actually holds).
    """
    rep = MemoryReport()
    seen: set[int] = set()
    for mod in module.modules():
        for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            nbytes = t.numel() * t.element_size()
            if isinstance(mod, _IntLinearBase) and name in ("weight_q", "weight_packed"):
                rep.int_weight += nbytes
            elif isinstance(mod, _IntLinearBase) and name == "weight_scale":
                rep.scales += nbytes
            elif name == "bias":
                rep.bias += nbytes
            elif name == "weight" and t.is_floating_point():
                rep.float_weight += nbytes
            else:
                rep.other += nbytes
    return rep


def resident_bytes() -> int:
    """Resident set size of this process (``VmRSS``), in bytes; 0 where /proc is missing."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _path(impl: str) -> Callable[[torch.Tensor, _IntLinearBase], torch.Tensor]:
    def fn(x: torch.Tensor, layer: _IntLinearBase) -> torch.Tensor:
        return layer.run(x, impl)

    return fn


register("int_linear", "cpp", _path("cpp"), devices=("cpu",), check=lambda: int_cpp_available(),
         why_unavailable=lambda: INT_OPS.status()[1], note="fused C++ quantise + _int_mm + epilogue")
register("int_linear", "torch", _path("torch"), note="eager torch ops around _int_mm")
register("int_linear", "reference", _path("fake"), note="fake-quant float64 oracle")
register("int_linear", "triton", _path("triton"), devices=("cuda",), check=lambda: triton_int_available("cuda"),
         why_unavailable=_triton_why, note="one fused Triton kernel: quantise rows + int8 tl.dot + epilogue")
set_preference("int_linear", "cpu", ["cpp", "torch"])
set_preference("int_linear", "cuda", ["triton", "torch"])
