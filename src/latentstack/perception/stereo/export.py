"""ONNX export of the SA2 stereo model (``lstack export --format onnx policies/stereo_sa2_tiny``).

The graph is the whole forward -- encoder, mono-depth initialisation, ``iters`` ConvSS2D refinement iterations
unrolled, convex upsampling -- returning the last iteration's disparity ``(B, 1, H, W)`` for ``left``/``right``
``(B, 3, H, W)`` float32 in [0, 255] and ``focal_baseline`` ``(B,)`` (f·b, px·m), at a fixed image size. The
selective scan is traced through its pure-torch ``chunked`` path (the C++ kernel is a custom op ONNX has no
function for); the check compares onnxruntime with the eager model on its default (C++) path, so it covers both
the export and the scan substitution. Written next to the ``.onnx``: ``export.json`` with the check.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentstack.kernels import dispatch

__all__ = ["DisparityExport", "export_stereo_onnx"]

DEFAULT_TOL = 1e-3  # px, on disparities of O(10) px: fp32 kernels summing in another order across iterations


class DisparityExport(nn.Module):
    """(left, right, focal_baseline) -> the final disparity (B, 1, H, W)."""

    def __init__(self, model: nn.Module, iters: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.iters = int(iters or model.config.valid_iters)

    def forward(self, left: torch.Tensor, right: torch.Tensor, focal_baseline: torch.Tensor) -> torch.Tensor:
        return self.model(left, right, focal_baseline, iters=self.iters)["disp_preds"][-1]


def _pair(h: int, w: int, seed: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    left = torch.rand(batch, 3, h, w, generator=g) * 255
    right = torch.roll(left, shifts=-3, dims=3) + torch.rand(batch, 3, h, w, generator=g) * 8  # a shifted view
    return left, right.clamp(0, 255), torch.full((batch,), 20.0)


def export_stereo_onnx(model: nn.Module, out_dir: str | os.PathLike, *, size: tuple[int, int] | None = None,
                       iters: int | None = None, opset: int = 18, tol: float = DEFAULT_TOL,
                       source: str = "") -> dict[str, Any]:
    """Writes ``stereo.onnx`` + ``export.json`` to ``out_dir`` and returns the record (with the check)."""
    import onnxruntime as ort

    model = model.eval().cpu()
    h, w = size or tuple(model.config.image_size)
    wrapper = DisparityExport(model, iters).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "stereo.onnx"
    before = dispatch.preference("selective_scan", "cpu")
    dispatch.set_preference("selective_scan", "cpu", ["chunked"])  # traceable torch ops instead of the C++ op
    try:
        with torch.no_grad():
            torch.onnx.export(wrapper, _pair(h, w, 0), str(path), input_names=["left", "right", "focal_baseline"],
                              output_names=["disparity"], opset_version=opset, dynamo=True, external_data=False)
    finally:
        dispatch.set_preference("selective_scan", "cpu", before)
    left, right, fb = _pair(h, w, 1)  # fresh inputs for the check
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["disparity"], {"left": left.numpy(), "right": right.numpy(), "focal_baseline": fb.numpy()})
    with torch.no_grad():
        want = wrapper(left, right, fb).numpy()  # the default (C++ scan) path
    max_abs = float(np.max(np.abs(got - want)))
    record = {
        "format": "onnx", "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "source": source, "what": f"SA2 stereo: encoder, mono init, {wrapper.iters} refinement iterations unrolled, "
        "convex upsampling -> final disparity", "iters": wrapper.iters, "opset": opset,
        "inputs": {"left": [1, 3, h, w, "float32 [0, 255]"], "right": [1, 3, h, w, "float32 [0, 255]"],
                   "focal_baseline": [1, "float32 px*m"]},
        "outputs": {"disparity": [1, 1, h, w, "float32 px"]}, "torch": torch.__version__,
        "check": {"max_abs": max_abs, "max_ref": float(np.max(np.abs(want))), "tol": tol,
                  "passed": bool(max_abs <= tol), "onnxruntime": ort.__version__,
                  "eager_scan": dispatch.preference("selective_scan", "cpu")[0], "onnx_scan": "chunked"},
    }
    (out / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
