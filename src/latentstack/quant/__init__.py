"""QuantVLA for latentstack: layouts, quantizers, integer execution, ATM / OHB calibration.

- :mod:`.layouts` — which linears are quantized, by module role (``paper``, ``all_linears``, …).
- :mod:`.quantizers` — RTN / MSE / percentile / DuQuant quantizers and named presets.
- :mod:`.apply` — :func:`quantize_model` (int layers from :mod:`latentstack.kernels` or fake quant).
- :mod:`.calibrate` — ATM α per head, OHB β per layer, runtime hooks or exact folding.
- :mod:`.memory` — analytic (spec §7) and measured bytes of the quantized components.
- :mod:`.artifact` — save / load int artifacts (safetensors + card), refusing mismatches.
- :mod:`.calib_data` — calibration observations from the suite's *select* seeds.
- :mod:`.cli` — ``add_quantize_parser(subparsers)`` for ``lstack quantize``.
"""

from .apply import (
    FakeQuantLinear,
    QuantResult,
    RotatedIntLinear,
    activation_calibration,
    int_layer,
    is_quantized,
    quantize_model,
)
from .artifact import ArtifactMismatch, load_quantized, save_quantized
from .calibrate import (
    CLAMP_PRESETS,
    ATMOHBCalibration,
    ClampPreset,
    QNormError,
    apply_atm_ohb,
    calibrate_atm_ohb,
    collect_stats,
    compute_alpha,
    compute_beta,
    drift,
    fold_alpha,
    fold_atm_ohb,
    fold_beta,
    has_q_norm,
    logit_std_per_head,
    policy_runner,
)
from .layouts import LAYOUTS, Layout, get_layout, select_linears
from .memory import formula_bytes, quantized_memory, relative_saving
from .quantizers import PRESETS, PercentileCalibrator, QuantConfig, get_preset

__all__ = [
    "CLAMP_PRESETS",
    "LAYOUTS",
    "PRESETS",
    "ATMOHBCalibration",
    "ArtifactMismatch",
    "ClampPreset",
    "FakeQuantLinear",
    "Layout",
    "PercentileCalibrator",
    "QNormError",
    "QuantConfig",
    "QuantResult",
    "RotatedIntLinear",
    "activation_calibration",
    "apply_atm_ohb",
    "calibrate_atm_ohb",
    "collect_stats",
    "compute_alpha",
    "compute_beta",
    "drift",
    "fold_alpha",
    "fold_atm_ohb",
    "fold_beta",
    "formula_bytes",
    "get_layout",
    "get_preset",
    "has_q_norm",
    "int_layer",
    "is_quantized",
    "load_quantized",
    "logit_std_per_head",
    "policy_runner",
    "quantize_model",
    "quantized_memory",
    "relative_saving",
    "save_quantized",
    "select_linears",
]
