"""LION / UniLION 3-D LiDAR detection in pure PyTorch (spec lion.md; issue 8).

Modules: ``sparse`` (SparseVoxels, SubMConv3d, SFD, merge/expand, generation), ``vfe``
(DynamicVoxelVFE), ``window`` (window keys, flat2win/win2flat), ``operators`` (BiMamba on the
shared selective scan, RetNet on chunked linear attention, identity), ``backbone`` (LION blocks),
``heads`` (CenterPoint-style BEV head), ``eval`` (rotated IoU, AP R40), ``clustering``
(non-learned baseline), ``train`` (training/evaluation), ``modeling_lion`` (detector + checkpoints).
"""
from .configuration_lion import PRESETS, LionConfig, get_preset
from .modeling_lion import LionDetector, load_detector, save_detector

__all__ = ["PRESETS", "LionConfig", "LionDetector", "get_preset", "load_detector", "save_detector"]
