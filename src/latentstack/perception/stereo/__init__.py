"""StereoAdapter-2 at CPU scale (SA2-tiny): stereo depth for synthetic underwater scenes.

- :mod:`.configuration_stereo` — ``StereoConfig`` and named presets (sa2_tiny, bidi/unidi, soft CoDyRA, ConvGRU twin)
- :mod:`.codyra` — CoDyRA dynamic-rank LoRA (``released`` and ``soft`` threshold rules)
- :mod:`.encoder` — tiny CNN encoder + monocular depth head (stands in for DA3)
- :mod:`.corr` — 1-D correlation pyramid and lookup (materialised and "alt")
- :mod:`.update` — SS2D on the shared ``kernels.selective_scan``, ConvSS2D, ConvGRU twin
- :mod:`.upsample` — convex upsampling;  :mod:`.model` — SA2Tiny + safetensors checkpoints
- :mod:`.losses`, :mod:`.metrics`, :mod:`.sgbm` (OpenCV baseline), :mod:`.data`, :mod:`.train`, :mod:`.evaluate`

Scenes are rendered by :mod:`latentstack.sim.stereo_scenes`. Spec: ``shared/specs/stereo.md``.
"""
from __future__ import annotations

from .configuration_stereo import PRESETS, StereoConfig
from .model import SA2Tiny, load_stereo_model, save_stereo_model

__all__ = ["PRESETS", "SA2Tiny", "StereoConfig", "load_stereo_model", "save_stereo_model"]
