"""Shared inference kernels: readable references, fast CPU paths, device dispatch.

- :func:`selective_scan` — Mamba-1 / SS2D selective scan (``mamba_ssm`` signature); C++ kernel on
  CPU with a C++ backward, reference fallback; on CUDA the Triton kernel (:mod:`.triton_scan`).
- :func:`chunked_linear_attention` — scalar-decay (RetNet / simple-GLA) linear attention; Triton
  chunk kernel on CUDA (:mod:`.triton_linear_attention`).
- :class:`W8A8Linear`, :class:`W4A8Linear` — integer linears on ``torch._int_mm``.
- :func:`conceptor_gate` — COAST's ``h ← h Mᵀ``, exact no-op at β = 0.

Every path is registered in :mod:`latentstack.kernels.dispatch`; ``benchmarks/kernels.py``
times them against their references. Triton paths are preferred on CUDA tensors; CI checks them
on CPU tensors through Triton's interpreter (``TRITON_INTERPRET=1``), where ``auto`` never picks them.
"""

from .conceptor import (
    ConceptorGate,
    LowRankGate,
    apply_gate,
    conceptor_gate,
    conceptor_gate_lowrank,
    fold_gate_into_linear,
    gate_matrix,
    lowrank_factors,
)
from .dispatch import available_impls, gpu_available, implementations, resolve, triton_available
from .int_linear import (
    MemoryReport,
    W4A8Linear,
    W8A8Linear,
    compile_int_model,
    dequantize,
    fake_quant,
    int_mm,
    pack_int4,
    quantize_linears,
    quantize_per_channel,
    quantize_per_token,
    resident_bytes,
    state_bytes,
    unpack_int4,
)
from .linear_attention import chunked_linear_attention, retnet_log_decay
from .scan import cpp_available, selective_scan, selective_scan_ref

__all__ = [
    "ConceptorGate",
    "LowRankGate",
    "MemoryReport",
    "W4A8Linear",
    "W8A8Linear",
    "apply_gate",
    "available_impls",
    "chunked_linear_attention",
    "compile_int_model",
    "conceptor_gate",
    "conceptor_gate_lowrank",
    "cpp_available",
    "dequantize",
    "fake_quant",
    "fold_gate_into_linear",
    "gate_matrix",
    "gpu_available",
    "implementations",
    "int_mm",
    "lowrank_factors",
    "pack_int4",
    "quantize_linears",
    "quantize_per_channel",
    "quantize_per_token",
    "resident_bytes",
    "resolve",
    "retnet_log_decay",
    "selective_scan",
    "selective_scan_ref",
    "state_bytes",
    "triton_available",
    "unpack_int4",
]
