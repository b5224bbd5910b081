"""Memory accounting of the quantized components (spec §7).

Two figures, both over the replaced linears only:
- ``formula_bytes``: the released code's analytic count (packed weights + FP16 per-row scales +
  FP32 64×64 rotation blocks + int32 permutation + FP16 bias), scale/bias widths configurable;
- ``measured``: exact ``numel × element_size`` of the int layers' state (what the artifact's
  safetensors holds: int8 / packed-uint8 codes, fp32 scales, fp32 bias).
Savings are ``1 − quantized / float`` against the fp32 (and fp16) bytes of the same layers.
:func:`resident_memory` measures VmRSS of a fresh process holding the float or quantized policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from latentstack.kernels.int_linear import state_bytes

__all__ = ["float_linear_bytes", "formula_bytes", "quantized_memory", "relative_saving"]


def formula_bytes(out_f: int, in_f: int, w_bits: int, bias: bool = True, rotate: bool = False,
                  permute: bool = False, block: int = 64, scale_bytes: int = 2, bias_bytes: int = 2) -> int:
    """Spec §7: ``out·in·b/8 + s·out + 4·64²·(⌈in/64⌉+⌈out/64⌉)·rot + 4·in·perm + b·out·bias``.

    Packed weights are counted per byte as stored (``⌈in·b/8⌉`` per row, i.e. an odd ``in`` pads).
    """
    per_row = -(-in_f * w_bits // 8)
    n = out_f * per_row + scale_bytes * out_f
    if rotate:
        n += 4 * block * block * (-(-in_f // block) + -(-out_f // block))
    if permute:
        n += 4 * in_f
    if bias:
        n += bias_bytes * out_f
    return n


def float_linear_bytes(lin_shapes: Iterable[tuple[int, int, bool]], elem: int = 4) -> int:
    """Bytes of float ``nn.Linear`` weights + biases with ``elem`` bytes per element."""
    return sum(elem * (o * i + (o if b else 0)) for o, i, b in lin_shapes)


def relative_saving(quantized: float, reference: float) -> float:
    """``1 − quantized / reference`` (the paper's 'relative memory saving')."""
    return 1.0 - quantized / reference


def quantized_memory(model: nn.Module, replaced: list[str], w_bits: int, rotate: bool = False,
                     permute: bool = False, block: int = 64) -> dict[str, Any]:
    """Measured and formula bytes of the layers ``replaced`` by :func:`~.apply.quantize_model`.

    Float baselines are computed from the layers' shapes (the float originals are gone). The
    formula's permutation term is int32 (released code); latentstack stores it as int64.
    """
    shapes: list[tuple[int, int, bool]] = []
    measured = 0
    for n in replaced:
        m = model.get_submodule(n)
        shapes.append((m.out_features, m.in_features, getattr(m, "bias", None) is not None))
        measured += state_bytes(m).total
    fp32 = float_linear_bytes(shapes, 4)
    fp16 = float_linear_bytes(shapes, 2)
    kw = {"rotate": rotate, "permute": permute, "block": block}
    f16 = sum(formula_bytes(o, i, w_bits, b, **kw) for o, i, b in shapes)
    f32 = sum(formula_bytes(o, i, w_bits, b, scale_bytes=4, bias_bytes=4, **kw) for o, i, b in shapes)
    return {"layers": len(replaced), "w_bits": w_bits, "measured_bytes": measured,
            "formula_bytes_fp16_scales": f16, "formula_bytes_fp32_scales": f32,
            "fp32_bytes": fp32, "fp16_bytes": fp16,
            "saving_vs_fp32": relative_saving(measured, fp32), "saving_vs_fp16": relative_saving(measured, fp16),
            "formula_saving_vs_fp16": relative_saving(f16, fp16)}


_RSS_SCRIPT = r"""
import json, sys, torch
from latentstack.kernels.int_linear import resident_bytes, state_bytes
torch.set_num_threads(1)
before = resident_bytes()
src, art = sys.argv[1], sys.argv[2]
if art:
    from latentstack.quant.artifact import load_quantized
    policy, _ = load_quantized(art, src)
else:
    from latentstack.policies.factory import make_policy
    policy = make_policy(src)
loaded = resident_bytes()
import numpy as np
b = {"image": np.zeros((1, 64, 64, 3), np.uint8), "state": np.zeros((1, 4), np.float32),
     "instruction": ["press the button from the top"], "task": ["button-press-topdown-v3"]}
with torch.no_grad():
    policy.predict_action_chunk(b, generator=torch.Generator().manual_seed(0))
after = resident_bytes()
print(json.dumps({"rss_after_import": before, "rss_after_load": loaded, "rss_after_call": after,
                  "state_bytes": state_bytes(policy).total}))
"""


def resident_memory(source: str, artifact: str | None = None, timeout: float = 120.0) -> dict[str, int]:
    """Resident set size (VmRSS) of a fresh process that loads the float policy (``artifact=None``)
    or the quantized artifact and runs one chunk prediction; plus the model's state bytes.

    On a small model the process RSS is dominated by the torch runtime, so compare the
    ``rss_after_load − rss_after_import`` deltas, and expect noise of a few MiB.
    """
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, source, artifact or ""], capture_output=True,
                         text=True, timeout=timeout, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
