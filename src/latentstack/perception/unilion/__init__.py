"""UniLION (spec lion.md §9–9.1; issue 17): LiDAR, camera and temporal tokens in one LION backbone.

Modules: ``configuration_unilion`` (config type ``"unilion"``, presets, the training-mode choice),
``view_transform`` (LSS geometry: projection, LiDAR depth images, top-k lift + scatter-add), ``temporal``
(ego-pose warp of the previous frame's voxels), ``modeling_unilion`` (model, targets, loss, artifacts),
``processor_unilion`` (host inputs ↔ tensors), ``train`` (modality-dropout batches and the step loss),
``metrics`` (BEV seg mIoU, occupancy IoU, paired bootstrap). The LION pieces come from
:mod:`latentstack.perception.lion`.
"""
from .configuration_unilion import MODES, PRESETS, UniLIONConfig, get_preset
from .modeling_unilion import UniLION, load_unilion, save_unilion

__all__ = ["MODES", "PRESETS", "UniLION", "UniLIONConfig", "get_preset", "load_unilion", "save_unilion"]
