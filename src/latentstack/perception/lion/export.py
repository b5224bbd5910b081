"""ONNX export of the LION detector (``lstack export --format onnx policies/lion_tiny``).

The graph is the whole detector for one scan: ``points`` float32 (P, 4) = x, y, z, intensity with a **dynamic
number of points P** -> the five CenterHead maps ``hm`` (1, classes, Y, X) (logits), ``center`` (1, 2, Y, X),
``center_z`` (1, 1, Y, X), ``dim`` (1, 3, Y, X) (log dims), ``rot`` (1, 2, Y, X). Decoding (3x3 peak picking,
top-K, score threshold, class-wise rotated NMS) stays on the host, exactly as in eager
(:meth:`LionProcessor.postprocess` / :func:`heads.decode` on the five maps).

Choice: one graph, no pre-step. The data-dependent parts all have ONNX operators -- dynamic voxelisation
(range mask -> ``NonZero``; voxel keys -> ``Unique`` with inverse indices; per-voxel mean / max ->
``ScatterElements`` add / max), window partitioning (window keys -> ``TopK`` as a full sort into X/Y order, the
equal-size groups of K as index arithmetic on the voxel count), submanifold convolution of the SFD (neighbour
lookup), voxel generation (top ``floor(r*n)`` voxels by mean feature: a full descending sort, then a rank mask),
merging (``Unique`` + scatter-add) and the dense BEV (``ScatterND``). :class:`LionExport` runs the detector's own
modules and weights, with these steps written in ONNX-expressible torch ops where the eager code uses ops without
an ONNX function (``searchsorted``, ``bincount``, ``repeat_interleave``, ``topk`` with a data-dependent k, Python
ints taken from data); the eager model itself is unchanged:

- neighbour lookup: a dense key -> row table (B*Z*Y*X int64 entries; 262k for lion_tiny) instead of
  ``searchsorted`` in the sorted keys -- the same row indices;
- ``bincount`` -> scatter-add of ones (exact integer counts); the voxel max keeps ``include_self`` (the PFN
  features are ReLU outputs >= 0 and every voxel has a point, so max(0, .) changes nothing);
- the equal-size groups for one sample (``flat2win_win2flat`` with B = 1) from ``n`` as a tensor;
- the selective scan traced through its pure-torch ``chunked`` path (the C++ scan is a custom op), as for the
  SA2 stereo export.

Exporter: the TorchScript-based ``torch.onnx.export(dynamo=False)``, opset 18, with ``points`` dim 0 dynamic
(``aten::scatter_reduce`` mapped to one ``ScatterElements(reduction="max")`` during the export, see
:func:`_scatter_max_symbolic`). The dynamo exporter was tried (torch 2.13): torch.export stops at the first
data-dependent guard (``GuardOnDataDependentSymNode`` on the size after the range mask, in the VFE) and would
need ``torch._check`` hints on every data-dependent size through the backbone. Tracing instead silently bakes any
size taken as a Python int (sizes here are carried as tensors, ``_numel0``), so the check runs
onnxruntime on scans other than the export example (different P and voxel counts) against the eager model on
its default (C++ scan) path, comparing the raw head maps (max |diff|, tolerance ``tol``) and the decoded
detections (same count and labels, boxes and scores within ``box_tol``). One scan per call (B = 1).

What can differ, and why it is rare: float rounding differs (scatter-add order, the scan), so a score within
rounding of the generation cut-off could select a different voxel; the check would show it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx import symbolic_helper

from latentstack.kernels import dispatch

from .backbone import LIONBlock, LIONLayer, VoxelMerging
from .heads import decode
from .modeling_lion import LionDetector
from .sparse import SparseVoxels, SubMConv3d, coords_key, voxel_expand
from .window import window_keys

__all__ = ["CHECK_CLOUDS", "EXAMPLE_CLOUD", "HEAD_NAMES", "LionExport", "check_lion_onnx", "export_lion_onnx",
           "match_detections"]

HEAD_NAMES = ("hm", "center", "center_z", "dim", "rot")
DEFAULT_TOL = 1e-3  # on head maps (logits / offsets of O(1..10)): fp32 sums in another order through the backbone
DEFAULT_BOX_TOL = 1e-3  # on decoded box parameters (m, rad) and scores
# the clouds of ``lstack export`` (cli.export builds them from lidar_scenes; models do not import the simulator):
# (seed, points kept or None = the whole scan). Traced: a train-split scan; checked: test-split scans, the last
# subsampled so that every K=1024 LION layer is one short, cyclically padded group (full scans: several groups).
EXAMPLE_CLOUD: tuple[int, int | None] = (0, None)
CHECK_CLOUDS: tuple[tuple[int, int | None], ...] = (
    (200000, None), (200001, None), (200002, None), (200003, None), (200004, None), (200005, 400))


def _numel0(t: torch.Tensor) -> torch.Tensor:
    """``t.shape[0]`` as an int64 0-d tensor: stays a graph value when traced (a Python int would be baked)."""
    return torch._shape_as_tensor(t)[0]


def _zeros_rows(like_rows: torch.Tensor, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """(len(like_rows), cols) zeros whose row count follows ``like_rows`` in the traced graph."""
    return torch.zeros_like(like_rows, dtype=dtype)[:, None].repeat(1, cols)


def _scatter_add_rows(like_rows: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """(len(like_rows), C) sums of ``src`` rows by ``index`` (eager: ``index_add``)."""
    out = _zeros_rows(like_rows, src.shape[1], src.dtype)
    return out.scatter_add(0, index[:, None].expand(-1, src.shape[1]), src)


# ----------------------------------------------------------------------------------------------- VFE
def _vfe(model: LionDetector, points: torch.Tensor) -> SparseVoxels:
    """``DynamicVoxelVFE`` on one cloud (P, F) -> voxel features, as ``vfe.voxelize`` + ``DynamicVoxelVFE``."""
    vfe = model.vfe
    pr, vsz = vfe.point_range, vfe.voxel_size
    grid = tuple(round((pr[i + 3] - pr[i]) / vsz[i]) for i in range(3))
    pmin = points.new_tensor(pr[:3])
    vs = points.new_tensor(vsz)
    v = torch.floor((points[:, 0:3] - pmin) / vs).long()
    keep = ((v >= 0) & (v < torch.tensor(grid))).all(1)
    points, v = points[keep], v[keep]
    key = (v[:, 0] * grid[1] + v[:, 1]) * grid[2] + v[:, 2]  # batch 0
    unq, inv = torch.unique(key, sorted=True, return_inverse=True)
    xyz = points[:, 0:3]
    ones = torch.ones_like(xyz[:, :1])
    cnt = _scatter_add_rows(unq, inv, ones).clamp_min(1)  # eager: bincount (exact integers either way)
    mean = _scatter_add_rows(unq, inv, xyz) / cnt
    X, Y, Z = grid
    vz = unq % Z
    vy = (unq // Z) % Y
    vx = (unq // (Z * Y)) % X
    vcoord = torch.stack([vx, vy, vz], 1)
    center = (vcoord.to(xyz.dtype) + 0.5) * xyz.new_tensor(vsz) + xyz.new_tensor(pr[:3])
    feats = torch.cat([points, xyz - mean[inv], xyz - center[inv]], dim=1)
    for layer in vfe.pfn:
        x = torch.relu(layer.norm(layer.linear(feats)))
        # ReLU outputs >= 0 and each voxel has >= 1 point: a zero initial value equals include_self=False
        x_max = _zeros_rows(unq, x.shape[1], x.dtype).scatter_reduce(
            0, inv[:, None].expand(-1, x.shape[1]), x, reduce="amax", include_self=True)
        feats = x_max if layer.last else torch.cat([x, x_max[inv]], dim=1)
    coords = torch.stack([torch.zeros_like(vz), vz, vy, vx], 1)
    return SparseVoxels(feats, coords, (Z, Y, X), 1)


# ------------------------------------------------------------------------------------ sparse operators
def _neighbor_index(coords: torch.Tensor, spatial_shape: tuple[int, int, int], kernel: int) -> torch.Tensor:
    """``sparse._neighbor_index`` through a dense key -> row table (no ``searchsorted`` in ONNX)."""
    z, y, x = spatial_shape
    key = coords_key(coords, spatial_shape)
    rows = torch.arange(_numel0(coords))
    table = torch.full((z * y * x,), -1, dtype=torch.int64).scatter(0, key, rows)  # batch 0: keys < Z*Y*X
    r = kernel // 2
    rng = torch.arange(-r, r + 1)
    dz, dy, dx = torch.meshgrid(rng, rng, rng, indexing="ij")
    offs = torch.stack([dz.reshape(-1), dy.reshape(-1), dx.reshape(-1)], 1)  # (K³, 3)
    nb = coords[None, :, 1:] + offs[:, None, :]  # (K³, N, 3)
    inside = ((nb >= 0) & (nb < torch.tensor(spatial_shape))).all(-1)
    nkey = (nb[..., 0] * y + nb[..., 1]) * x + nb[..., 2]
    found = table[torch.where(inside, nkey, torch.zeros_like(nkey))]
    return torch.where(inside, found, torch.full_like(found, -1))


def _subm_conv(conv: SubMConv3d, x: SparseVoxels) -> SparseVoxels:
    """``SubMConv3d.forward``: the same per-offset products, added in the same offset order."""
    nbr = _neighbor_index(x.coords, x.spatial_shape, conv.kernel_size)
    w = conv.weight.flatten(2).permute(2, 1, 0)
    feats = x.features
    out = _zeros_rows(feats[:, 0], w.shape[2], feats.dtype)
    for k in range(nbr.shape[0]):  # K³ = 27, a constant
        idx = nbr[k]
        contrib = feats[idx.clamp_min(0)] @ w[k]
        out = out + torch.where((idx >= 0)[:, None], contrib, torch.zeros_like(contrib))  # eager: index_add
    if conv.bias is not None:
        out = out + conv.bias
    return x.replace(out)


def _merge(x: SparseVoxels, scale: tuple[int, int, int]) -> tuple[SparseVoxels, torch.Tensor]:
    """``sparse.voxel_merge``."""
    sx, sy, sz = scale
    c = x.coords
    new = torch.stack([c[:, 0], c[:, 1] // sz, c[:, 2] // sy, c[:, 3] // sx], 1)
    z, y, xx = x.spatial_shape
    shape = (-(-z // sz), -(-y // sy), -(-xx // sx))
    unq, inv = torch.unique(coords_key(new, shape), sorted=True, return_inverse=True)
    xs = unq % shape[2]
    ys = (unq // shape[2]) % shape[1]
    zs = (unq // (shape[2] * shape[1])) % shape[0]
    bs = unq // (shape[2] * shape[1] * shape[0])
    coords = torch.stack([bs, zs, ys, xs], 1)
    return SparseVoxels(_scatter_add_rows(unq, inv, x.features), coords, shape, 1), inv


_GEN_OFFSETS = ((-1, 1), (1, 1), (-1, -1), (1, -1))  # = sparse._GEN_OFFSETS


def _generation(x: SparseVoxels, ratio: float) -> SparseVoxels:
    """``sparse.voxel_generation`` for one sample: the top ``floor(ratio*n)`` voxels by mean feature get 4 zero
    voxels. A full descending sort + rank mask replaces ``topk(k=m)``: the same set (ties aside); only the set
    matters, the next merge deduplicates and adds zeros."""
    score = x.features.mean(1)
    n = _numel0(score)
    m = torch.floor(n.to(torch.float64) * ratio).to(torch.int64)  # eager: int(ratio * n), float64 too
    order = torch.sort(score, descending=True).indices
    c = x.coords[order[torch.arange(n) < m]]
    _z, y, xx = x.spatial_shape
    gen = torch.cat([torch.stack([c[:, 0], c[:, 1], (c[:, 2] + oy).clamp(0, y - 1), (c[:, 3] + ox).clamp(0, xx - 1)],
                                 1) for ox, oy in _GEN_OFFSETS])
    feats = torch.cat([x.features, _zeros_rows(gen[:, 0], x.features.shape[1], x.features.dtype)])
    return SparseVoxels(feats, torch.cat([x.coords, gen]), x.spatial_shape, 1)


def _voxel_merging(vm: VoxelMerging, x: SparseVoxels) -> tuple[SparseVoxels, torch.Tensor]:
    if vm.sfd is not None:
        x = x.replace(F.gelu(vm.sfd.norm(_subm_conv(vm.sfd.conv, x).features)))
    if vm.ratio > 0:
        x = _generation(x, vm.ratio)
    merged, inv = _merge(x, vm.scale)  # type: ignore[arg-type]
    return merged.replace(vm.norm(merged.features)), inv


def _lion_layer(layer: LIONLayer, x: SparseVoxels) -> SparseVoxels:
    """``LIONLayer.forward`` with ``window.group_mapping`` / ``flat2win_win2flat`` for one sample."""
    if all(b.kind == "identity" for b in layer.blocks):
        return x
    z, y, xx = x.spatial_shape
    key_x, key_y = window_keys(x.coords, (xx, y, z), layer.window, layer.shift)
    k = layer.group_size
    n = _numel0(x.coords)
    padded = (n + (k - 1)) // k * k
    r = n % k
    j = torch.arange(padded)
    # slot j reads row j, except the padding of the last group (copies the previous group's slot), or a single
    # short group (repeats its rows cyclically) -- flat2win_win2flat with one sample
    idx = torch.where((r != 0) & (padded > k) & (j >= padded - k + r), j - k, j)
    f2w = torch.where((r != 0) & (padded == k), j % n.clamp_min(1), idx)
    feats = x.features
    c = feats.shape[1]
    for key, block in zip((key_x, key_y), layer.blocks, strict=True):
        order = torch.sort(key).indices  # window keys are unique per voxel: a stable sort is not needed
        groups = block(feats[order][f2w].reshape(-1, k, c))
        flat = groups.reshape(-1, c)[torch.arange(n)]  # win2flat = the first n slots for one sample
        feats = _zeros_rows(order, c, flat.dtype).scatter(0, order[:, None].expand(-1, c), flat)
    return x.replace(feats)


def _lion_block(block: LIONBlock, x: SparseVoxels) -> SparseVoxels:
    skips, invs = [], []
    for pos, enc, down in zip(block.pos, block.enc, block.down, strict=True):
        x = x.replace(x.features + pos(x))
        x = _lion_layer(enc, x)
        skips.append(x)
        x, inv = _voxel_merging(down, x)
        invs.append(inv)
    for dec, norm in zip(block.dec, block.dec_norm, strict=True):
        x = _lion_layer(dec, x)
        skip, inv = skips.pop(), invs.pop()
        x = voxel_expand(skip, x, inv)
        x = x.replace(norm(x.features))
    return x


class LionExport(nn.Module):
    """points (P, F) of one scan -> (hm, center, center_z, dim, rot): the detector's forward in ONNX-expressible
    ops, on the detector's own modules and weights (see the module docstring)."""

    def __init__(self, model: LionDetector) -> None:
        super().__init__()
        if model.config.backbone_only:
            raise ValueError("a backbone-only LION config has no head to export")
        self.model = model

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        x = _vfe(m, points)
        x = x.replace(m.input_proj(x.features))
        bb = m.backbone_3d
        for block, down in zip(bb.blocks, bb.downs[:len(bb.blocks)], strict=True):
            x, _ = _voxel_merging(down, _lion_block(block, x))
        for down in bb.downs[len(bb.blocks):]:
            x, _ = _voxel_merging(down, x)
        x = _lion_layer(bb.linear_out, x)
        out = m.head(m.bev_backbone(m.map_to_bev(x)))
        return tuple(out[k] for k in HEAD_NAMES)


# ------------------------------------------------------------------------------------------ export
@symbolic_helper.parse_args("v", "i", "v", "v", "s", "b")
def _scatter_max_symbolic(g: Any, self: Any, dim: int, index: Any, src: Any, reduce: str, include_self: bool) -> Any:
    """aten::scatter_reduce(amax, include_self) -> one ScatterElements(reduction="max"). The stock symbolic wraps
    it in an ``If`` on the input's rank whose output is typed 1-D (onnxruntime warns on every run; TensorRT
    would have to evaluate the ``If``)."""
    if reduce != "amax" or not include_self:
        raise ValueError(f"LION export: scatter_reduce({reduce!r}, include_self={include_self}) not expected")
    return g.op("ScatterElements", self, index, src, axis_i=dim, reduction_s="max")


# ------------------------------------------------------------------------------------------- check
def match_detections(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pairs each eager detection with the onnxruntime detection of the same label nearest in BEV centre ->
    {n_eager, n_onnx, matched (same label, |box| and |score| diffs measured), max_box, max_score}."""
    n_w, n_g = len(want["scores"]), len(got["scores"])
    used: set[int] = set()
    max_box = max_score = 0.0
    matched = 0
    for i in range(n_w):
        cand = [j for j in range(n_g) if j not in used and got["labels"][j] == want["labels"][i]]
        if not cand:
            continue
        d = [float(np.hypot(*(got["boxes"][j, :2] - want["boxes"][i, :2]))) for j in cand]
        j = cand[int(np.argmin(d))]
        used.add(j)
        matched += 1
        db = np.abs(got["boxes"][j] - want["boxes"][i])
        db[6] = min(db[6], abs(db[6] - math.pi))  # sincos2 yaw is defined mod pi
        max_box = max(max_box, float(db.max()))
        max_score = max(max_score, float(abs(got["scores"][j] - want["scores"][i])))
    return {"n_eager": n_w, "n_onnx": n_g, "matched": matched, "max_box": max_box, "max_score": max_score}


def check_lion_onnx(model: LionDetector, onnx_path: str | os.PathLike, clouds: Sequence[np.ndarray], *,
                    tol: float = DEFAULT_TOL, box_tol: float = DEFAULT_BOX_TOL) -> dict[str, Any]:
    """onnxruntime (CPU) vs the eager detector (default scan path) on each cloud (P_i, 4): max |diff| per head
    map, and the decoded detections matched one to one."""
    import onnxruntime as ort

    model = model.eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    per_scan, head_max = [], dict.fromkeys(HEAD_NAMES, 0.0)
    max_ref = 0.0
    passed = True
    for cloud in clouds:
        got = dict(zip(HEAD_NAMES, sess.run(list(HEAD_NAMES), {"points": cloud}), strict=True))
        with torch.no_grad():
            want = {k: v.numpy() for k, v in model(*model.processor([cloud])).items()}
        diffs = {k: float(np.max(np.abs(got[k] - want[k]))) for k in HEAD_NAMES}
        for k in HEAD_NAMES:
            head_max[k] = max(head_max[k], diffs[k])
        max_ref = max(max_ref, float(np.max(np.abs(want["hm"]))))
        det_g = decode(model.config, {k: torch.from_numpy(v) for k, v in got.items()})[0]
        det_w = decode(model.config, {k: torch.from_numpy(v) for k, v in want.items()})[0]
        m = match_detections(det_g, det_w)
        ok = (max(diffs.values()) <= tol and m["n_eager"] == m["n_onnx"] == m["matched"]
              and m["max_box"] <= box_tol and m["max_score"] <= box_tol)
        passed &= ok
        per_scan.append({"points": len(cloud), "max_abs": max(diffs.values()), **m, "passed": ok})
    return {"max_abs": max(head_max.values()), "max_abs_per_head": head_max, "max_ref_hm": max_ref, "tol": tol,
            "box_tol": box_tol, "detections_eager": sum(s["n_eager"] for s in per_scan),
            "detections_matched": sum(s["matched"] for s in per_scan),
            "max_box_diff": max(s["max_box"] for s in per_scan),
            "max_score_diff": max(s["max_score"] for s in per_scan),
            "passed": bool(passed), "scans": per_scan,
            "onnxruntime": ort.__version__, "eager_scan": dispatch.preference("selective_scan", "cpu")[0],
            "onnx_scan": "chunked"}


def export_lion_onnx(model: LionDetector, out_dir: str | os.PathLike, example: np.ndarray,
                     check_clouds: Sequence[np.ndarray], *, opset: int = 18, tol: float = DEFAULT_TOL,
                     box_tol: float = DEFAULT_BOX_TOL, clouds_from: Any = None, source: str = "") -> dict[str, Any]:
    """Traces ``example`` (P, 4), writes ``lion.onnx`` + ``export.json`` (with the onnxruntime check on
    ``check_clouds``, which should differ in size from the example) to ``out_dir``; returns the record.
    ``clouds_from``: how the clouds were made, recorded as is."""
    model = model.eval().cpu()
    wrapper = LionExport(model).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lion.onnx"
    ex = torch.from_numpy(np.asarray(example, np.float32))
    before = dispatch.preference("selective_scan", "cpu")
    dispatch.set_preference("selective_scan", "cpu", ["chunked"])  # traceable torch ops instead of the C++ op
    torch.onnx.register_custom_op_symbolic("aten::scatter_reduce", _scatter_max_symbolic, opset)
    try:
        with torch.no_grad():
            torch.onnx.export(wrapper, (ex,), str(path), input_names=["points"], output_names=list(HEAD_NAMES),
                              opset_version=opset, dynamo=False, dynamic_axes={"points": {0: "num_points"}})
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::scatter_reduce", opset)  # the stock symbolic again
        dispatch.set_preference("selective_scan", "cpu", before)
    cfg = model.config
    ny, nx = cfg.bev_size
    nc = len(cfg.classes)
    record: dict[str, Any] = {
        "format": "onnx", "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "source": source,
        "what": "LION detector, one scan: dynamic voxelisation (Unique/scatter), VFE, LION backbone (window "
        "grouping by sort, BiMamba on the chunked scan, SFD + voxel generation, merging), BEV backbone, "
        "CenterHead -> head maps; decoding (peaks, top-K, rotated NMS) stays on the host",
        "exporter": "torchscript (dynamo=False)", "opset": opset, "example_points": int(ex.shape[0]),
        "choice": "one graph, no pre-step: voxelisation (Unique, ScatterElements), window sort (TopK), voxel "
        "generation (sort + rank mask) in the graph; the dynamo exporter stops at data-dependent guards",
        "inputs": {"points": ["P", cfg.num_point_features, "float32 x, y, z, intensity (sensor frame)"]},
        "outputs": {"hm": [1, nc, ny, nx, "float32 logits"], "center": [1, 2, ny, nx, "float32 cell offset"],
                    "center_z": [1, 1, ny, nx, "float32 m"], "dim": [1, 3, ny, nx, "float32 log m"],
                    "rot": [1, 2, ny, nx, f"float32 {cfg.rot_code}"]},
        "torch": torch.__version__,
    }
    if clouds_from is not None:
        record["clouds_from"] = clouds_from
    record["check"] = check_lion_onnx(model, path, check_clouds, tol=tol, box_tol=box_tol)
    (out / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
