"""ONNX export of the VLA's chunk prediction (``lstack export --format onnx <artifact>``).

The exported graph is :meth:`VLAPolicy._chunk` -- prefix encoding, ``K`` Euler denoising steps unrolled, action
de-normalization and clipping -- with the sampling noise as an input, so the graph is deterministic and the
caller owns the noise stream (draw ``noise`` (B, H, A) from N(0, 1)). Inputs (batch dimension ``B`` dynamic):

- ``images`` float32 (B, 3, S, S) in [0, 1] (S = ``image_size``: resize and scale on the host, as
  :class:`~latentstack.policies.vla.processor_vla.VLAProcessor` does);
- ``state`` float32 (B, state_dim), raw (normalized inside);
- ``lang_ids`` int64 (B, L) and ``lang_mask`` bool (B, L) from the artifact's word tokenizer
  (:func:`host_inputs` builds all four from raw observations);
- ``noise`` float32 (B, H, A).

Output ``actions`` float32 (B, H, A). Every export is checked against the eager model with onnxruntime on fresh
inputs (a batch size other than the traced one) and the result is recorded in ``export.json`` next to the
``.onnx`` file (max |onnx - eager|, the tolerance, versions, the file's sha256).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latentstack.policies.vla.processor_vla import VLAInputs

__all__ = ["ChunkExport", "check_onnx", "export_onnx", "host_inputs"]

INPUT_NAMES = ["images", "state", "lang_ids", "lang_mask", "noise"]
DEFAULT_TOL = 1e-4  # fp32 actions in [-1, 1]: onnxruntime's kernels sum in another order than torch's


class ChunkExport(nn.Module):
    """(images, state, lang_ids, lang_mask, noise) -> actions (B, H, A): the policy's chunk, K steps unrolled."""

    def __init__(self, policy: nn.Module, num_steps: int | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.num_steps = int(num_steps or policy.config.num_inference_steps)

    def forward(self, images: torch.Tensor, state: torch.Tensor, lang_ids: torch.Tensor, lang_mask: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        inputs = VLAInputs(images=images, state=state, lang_ids=lang_ids, lang_mask=lang_mask)
        return self.policy._chunk(inputs, noise, self.num_steps)


def host_inputs(policy: nn.Module, images: Any, state: Any, texts: Sequence[str], noise: Any) -> dict[str, np.ndarray]:
    """Raw observations (uint8/float images (B, H, W, 3) or (B, 3, H, W), states, instructions, noise) -> the
    exported graph's numpy inputs, converted exactly as the eager processor converts them."""
    proc = policy.processor
    ids, mask = policy.tokenizer(list(texts))
    return {
        "images": proc.images(images).cpu().numpy().astype(np.float32),
        "state": proc.state(state).cpu().numpy().astype(np.float32),
        "lang_ids": ids.cpu().numpy().astype(np.int64),
        "lang_mask": mask.cpu().numpy().astype(bool),
        "noise": np.asarray(noise, dtype=np.float32),
    }


def _example(policy: nn.Module, batch: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """A seeded raw batch (uint8 images, states, instructions built from the vocabulary) and its noise."""
    cfg = policy.config
    rng = np.random.default_rng(seed)
    words = [w for w in cfg.vocab if not w.startswith("<")] or ["x"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 5)))) for _ in range(batch)]
    raw = {"image": rng.integers(0, 256, (batch, cfg.image_size, cfg.image_size, 3), dtype=np.uint8),
           "state": rng.normal(0, 1, (batch, cfg.state_dim)).astype(np.float32), "instruction": texts}
    noise = rng.standard_normal((batch, cfg.chunk_size, cfg.action_dim)).astype(np.float32)
    return raw, noise


def check_onnx(policy: nn.Module, onnx_path: str | os.PathLike, *, num_steps: int, batch: int = 3, seed: int = 1,
               tol: float = DEFAULT_TOL) -> dict[str, Any]:
    """Runs the ONNX file with onnxruntime (CPU) and the eager ``predict_action_chunk`` on the same fresh raw
    batch and noise -> {max_abs, tol, passed, batch, onnxruntime}."""
    import onnxruntime as ort

    raw, noise = _example(policy, batch, seed)
    feeds = host_inputs(policy, raw["image"], raw["state"], raw["instruction"], noise)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    (got,) = sess.run(["actions"], {k: v for k, v in feeds.items() if k in names})
    want = policy.predict_action_chunk(raw, noise=torch.from_numpy(noise), num_steps=num_steps, graph=False)
    want = want.detach().cpu().numpy()
    max_abs = float(np.max(np.abs(got - want)))
    return {"max_abs": max_abs, "tol": tol, "passed": bool(max_abs <= tol), "batch": batch, "seed": seed,
            "onnxruntime": ort.__version__, "shape": list(got.shape)}


def export_onnx(policy: nn.Module, out_dir: str | os.PathLike, *, num_steps: int | None = None, opset: int = 18,
                check: bool = True, tol: float = DEFAULT_TOL, source: str = "") -> dict[str, Any]:
    """Writes ``vla_chunk.onnx`` and ``export.json`` (the check's result) to ``out_dir``; returns the record."""
    policy = policy.eval().cpu()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wrapper = ChunkExport(policy, num_steps).eval()
    raw, noise = _example(policy, 2, 0)
    feeds = host_inputs(policy, raw["image"], raw["state"], raw["instruction"], noise)
    args = tuple(torch.from_numpy(feeds[k]) for k in INPUT_NAMES)
    path = out / "vla_chunk.onnx"
    b = torch.export.Dim("batch", min=1, max=1024)
    dyn = {"images": {0: b}, "state": {0: b}, "lang_ids": {0: b}, "lang_mask": {0: b}, "noise": {0: b}}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(wrapper, args, str(path), input_names=INPUT_NAMES, output_names=["actions"],
                          opset_version=opset, dynamo=True, dynamic_shapes=dyn, external_data=False)
    cfg = policy.config
    record: dict[str, Any] = {
        "format": "onnx",
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "source": source,
        "what": "VLA chunk prediction: prefix encoding, K Euler denoising steps unrolled, de-normalization, clip",
        "num_steps": wrapper.num_steps,
        "opset": opset,
        "inputs": {"images": ["B", 3, cfg.image_size, cfg.image_size, "float32 in [0, 1]"],
                   "state": ["B", cfg.state_dim, "float32 raw"], "lang_ids": ["B", cfg.max_lang_len, "int64"],
                   "lang_mask": ["B", cfg.max_lang_len, "bool"],
                   "noise": ["B", cfg.chunk_size, cfg.action_dim, "float32 N(0, 1)"]},
        "outputs": {"actions": ["B", cfg.chunk_size, cfg.action_dim, "float32"]},
        "torch": torch.__version__,
    }
    if check:
        record["check"] = check_onnx(policy, path, num_steps=wrapper.num_steps, tol=tol)
    (out / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
