"""COAST: contrastive conceptor activation steering (spec: coast.md).

- :mod:`.conceptors` — float64 conceptor algebra (C, NOT, AND jaeger/repo, OR, aperture, diagnostics).
- :mod:`.fit` — sample builders, ``paper`` / ``repo`` presets, ``C_s ∧ ¬C_f`` fits (global, per-step).
- :mod:`.intervention` — the gate as a latent ``Intervention``, controls, safetensors artifacts.
- :mod:`.collect` — labelled, tapped rollouts on fit seeds; :mod:`.select` — heuristic / grid selection;
  :mod:`.report` — issue-5 report payload with paired McNemar counts; :mod:`.cli` — ``steer`` subcommands.
"""
from .conceptors import (
    aperture,
    conceptor,
    conceptor_and,
    conceptor_not,
    conceptor_or,
    containment,
    contrastive,
    correlation,
    quota,
    random_matched,
    similarity,
)
from .fit import (
    PRESETS,
    FitError,
    InsufficientEpisodes,
    Preset,
    SteeringFit,
    build_samples,
    fit_contrastive,
    fit_layers,
    get_preset,
    linear_direction,
    states_from_records,
)
from .intervention import (
    SteeringArtifact,
    conceptor_edit,
    gate_diagnostics,
    linear_edit,
    make_operator,
    steer,
    steer_linear,
)

__all__ = [
    "PRESETS",
    "FitError",
    "InsufficientEpisodes",
    "Preset",
    "Rollout",
    "Selection",
    "SteeredPolicy",
    "SteeringArtifact",
    "SteeringFit",
    "aperture",
    "build_samples",
    "coast_payload",
    "collect_rollouts",
    "conceptor",
    "conceptor_and",
    "conceptor_edit",
    "conceptor_not",
    "conceptor_or",
    "containment",
    "contrastive",
    "correlation",
    "fit_contrastive",
    "fit_layers",
    "gate_diagnostics",
    "get_preset",
    "grid_search",
    "heuristic_select",
    "linear_direction",
    "linear_edit",
    "load_rollouts",
    "make_operator",
    "mcnemar_exact",
    "paired_counts",
    "quota",
    "random_matched",
    "save_rollouts",
    "similarity",
    "split_by_label",
    "states_from_records",
    "steer",
    "steer_linear",
]
