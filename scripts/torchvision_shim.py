"""Make the CUDA-only torchvision 0.28.0 wheel importable on the CPU torch wheel.

Installed by scripts/setup.sh as a module plus a ``.pth`` line into the venv's
site-packages. On the first ``import torchvision`` it tries the real ``_C.so``;
if that cannot load (it links libcudart), it defines the ``torchvision::nms`` /
``qnms`` schemas torchvision's meta registrations expect and registers a pure-torch
greedy NMS for CPU. Nothing imports torch at interpreter start (see
shared/specs/environment.md §3).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

_LIBS: list = []  # keeps the torch.library handles alive for the process lifetime


def _nms_cpu(dets, scores, iou_threshold: float):
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        xx1 = torch.maximum(x1[idx], x1)
        yy1 = torch.maximum(y1[idx], y1)
        xx2 = torch.minimum(x2[idx], x2)
        yy2 = torch.minimum(y2[idx], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[idx] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _prepare(package_dir: str) -> bool:
    """Returns True when the shim had to register its CPU ops."""
    import torch

    if _LIBS:
        return True

    try:
        torch.ops.load_library(os.path.join(package_dir, "_C.so"))
        return False
    except (OSError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
    impl = torch.library.Library("torchvision", "IMPL", "CPU")
    impl.impl("nms", _nms_cpu)
    _LIBS.extend([lib, impl])
    return True


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Patches the loader of every spec it hands out (``importlib.util.find_spec`` may ask
    first and throw its spec away), and leaves ``sys.meta_path`` once torchvision executes."""

    _busy = False

    def find_spec(self, name, path, target=None):
        if name != "torchvision" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        finally:
            self._busy = False
        if spec is None or spec.loader is None or spec.origin is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module
        package_dir = os.path.dirname(spec.origin)
        finder = self

        def exec_module(module):
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            shimmed = _prepare(package_dir)
            original_exec(module)
            if shimmed:
                module.extension._has_ops = lambda: True

        loader.exec_module = exec_module
        return spec


def install() -> None:
    if not any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFinder())
