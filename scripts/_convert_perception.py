"""Legacy -> format-2 converters for LION, stereo, KORR (base + residual heads) and the LeRobot ACT adapter.

Each converter reads an artifact folder in its old per-component format *with the old loading logic* (kept here,
the only place it still exists), computes outputs on fixed inputs, rewrites the folder in place through the
package's one save path, loads it back through the package's one loader, and proves the conversion:

- ``tensors_equal``: the sha256 of every tensor (dtype, shape and bytes) is the same before and after;
- ``outputs_equal``: outputs on the fixed inputs from the old-format load and the new-format load, in the same
  process, are bit-identical (``torch.equal``).

Anything else raises. Used by ``scripts/convert_artifacts.py`` (``CONVERTERS``) or directly::

    python scripts/_convert_perception.py [NAME ...]      # default: every artifact listed in ARTIFACTS

The record of each conversion is merged, by artifact name, into ``reports/artifacts/conversion.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parents[1]
# LATENTSTACK_ROOT: convert a copy of the checkout (a dry run); the code always comes from this checkout
ROOT = Path(os.environ.get("LATENTSTACK_ROOT", HERE)).resolve()
RECORD = ROOT / "reports" / "artifacts" / "conversion.json"


# ------------------------------------------------------------------------------------------- shared helpers
def tensor_digests(path: Path) -> dict[str, str]:
    """sha256 over dtype, shape and raw bytes of every tensor of a safetensors file."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), "pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k).contiguous()
            h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            out[k] = h.hexdigest()
    return out


def _flat(outputs: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return {prefix or "out": outputs}
    if isinstance(outputs, Mapping):
        items = outputs.items()
    elif isinstance(outputs, (list, tuple)):
        items = enumerate(outputs)
    else:
        import numpy as np

        return {prefix or "out": torch.from_numpy(np.asarray(outputs))}
    flat: dict[str, torch.Tensor] = {}
    for k, v in items:
        flat.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def compare_outputs(old: Any, new: Any) -> dict[str, Any]:
    a, b = _flat(old), _flat(new)
    if set(a) != set(b):
        raise AssertionError(f"output names differ: {sorted(set(a) ^ set(b))}")
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    if bad:
        raise AssertionError(f"outputs differ after conversion: {bad}")
    return {"outputs_equal": True, "outputs_compared": {k: list(a[k].shape) for k in sorted(a)}}


def legacy_copy(path: Path) -> Path:
    """A temporary copy of the old folder (the old-format loads read it; the conversion rewrites ``path``)."""
    tmp = Path(tempfile.mkdtemp(prefix="legacy_")) / path.name
    shutil.copytree(path, tmp)
    return tmp


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _load_strict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    from latentstack.core.artifacts import check_state_dict

    problems = check_state_dict(model.state_dict(), sd)
    if problems:
        raise ValueError("; ".join(problems))
    model.load_state_dict(sd, strict=True)
    model.eval()


def _legacy_doc(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text())


def _provenance(old_doc_path: Path, fmt: str) -> dict[str, Any]:
    from latentstack.core.artifacts import sha256_file

    return {"converted_from": {"format": fmt, "config_sha256": sha256_file(old_doc_path)}}


def _with_provenance(path: Path, provenance: Mapping[str, Any]) -> None:
    """Add the conversion record to the new ``config.json`` (not hashed itself; the weights' headers are)."""
    cfg = path / "config.json"
    doc = json.loads(cfg.read_text())
    doc["provenance"] = {**doc.get("provenance", {}), **provenance}
    cfg.write_text(json.dumps(doc, indent=2) + "\n")


# ------------------------------------------------------------------------------------------- LION
def _lion_inputs() -> tuple[torch.Tensor, int]:
    from latentstack.perception.lion.modeling_lion import batch_points
    from latentstack.sim.lidar_scenes import SPLIT_SEEDS, generate_scan

    return batch_points([generate_scan(s).points for s in list(SPLIT_SEEDS["test"])[:2]]), 2


def convert_lion(path: Path) -> dict[str, Any]:
    from latentstack.perception.lion import LionConfig, LionDetector, load_detector, save_detector

    doc = _legacy_doc(path)
    if doc.get("format") != "latentstack.lion" or doc.get("format_version") != 1:
        raise ValueError(f"{path}: not a legacy latentstack.lion v1 checkpoint")
    old_dir = legacy_copy(path)
    # old loader: config from config.json, every tensor strictly into LionDetector
    old = LionDetector(LionConfig.from_dict(doc["config"]))
    _load_strict(old, _state(old_dir / "model.safetensors"))
    before = tensor_digests(old_dir / "model.safetensors")
    pts, b = _lion_inputs()
    with torch.no_grad():
        out_old = old(pts, b)
    files = {"train_log.json": (old_dir / "train_log.json").read_bytes()} if (old_dir / "train_log.json").is_file() else None
    (path / "config.json").unlink()
    save_detector(old, path, extra=doc.get("extra", {}), files=files)
    _with_provenance(path, _provenance(old_dir / "config.json", "latentstack.lion/1"))
    new = load_detector(path)
    with torch.no_grad():
        out_new = new(pts, b)
    return _finish(path, before, tensor_digests(path / "model.safetensors"), out_old, out_new, "latentstack.lion/1")


# ------------------------------------------------------------------------------------------- stereo
def _stereo_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, 3, 64, 128, generator=g) * 255, torch.rand(1, 3, 64, 128, generator=g) * 255,
            torch.tensor([20.0]))


def convert_stereo(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    from latentstack.perception.stereo.configuration_stereo import StereoConfig
    from latentstack.perception.stereo.model import SA2Tiny, load_stereo_model, save_stereo_model

    doc = _legacy_doc(path)
    if "type" in doc or "updater" not in doc:
        raise ValueError(f"{path}: not a legacy stereo checkpoint (a bare StereoConfig JSON)")
    old_dir = legacy_copy(path)
    # old loader: StereoConfig JSON, "adapted" from the safetensors metadata, strict load
    with safe_open(str(old_dir / "model.safetensors"), "pt") as fh:
        adapted = (fh.metadata() or {}).get("adapted") == "True"
    old = SA2Tiny(StereoConfig.from_dict(doc))
    if adapted:
        old.add_adapters()
    _load_strict(old, _state(old_dir / "model.safetensors"))
    before = tensor_digests(old_dir / "model.safetensors")
    args = _stereo_inputs()
    with torch.no_grad():
        out_old = old(*args, iters=old.config.valid_iters)
    training = json.loads((old_dir / "training.json").read_text()) if (old_dir / "training.json").is_file() else None
    (path / "config.json").unlink()
    save_stereo_model(old, path, training)
    _with_provenance(path, _provenance(old_dir / "config.json", "stereo StereoConfig JSON (unversioned)"))
    new = load_stereo_model(path)
    with torch.no_grad():
        out_new = new(*args, iters=new.config.valid_iters)
    return _finish(path, before, tensor_digests(path / "model.safetensors"), out_old, out_new,
                   "stereo (unversioned)")


# ------------------------------------------------------------------------------------------- KORR
def convert_korr_base(path: Path) -> dict[str, Any]:
    from latentstack.koopman.base_policy import (
        ChunkBaseConfig,
        ChunkMLPBase,
        MinMaxNormalizer,
        load_chunk_base,
        save_chunk_base,
    )

    doc = _legacy_doc(path)
    fmt = "latentstack.korr.chunk_mlp_base/1"
    if doc.get("format") != fmt:
        raise ValueError(f"{path}: not a legacy {fmt} artifact")
    old_dir = legacy_copy(path)
    cfg = ChunkBaseConfig(**doc["config"], obs_clamp=doc.get("obs_clamp"))
    d_o, d_a = cfg.obs_dim, cfg.action_dim
    old = ChunkMLPBase(cfg, MinMaxNormalizer(torch.zeros(d_o), torch.ones(d_o), doc.get("obs_clamp")),
                       MinMaxNormalizer(torch.zeros(d_a), torch.ones(d_a)))
    _load_strict(old, _state(old_dir / "model.safetensors"))
    before = tensor_digests(old_dir / "model.safetensors")
    obs = torch.randn(16, d_o, generator=torch.Generator().manual_seed(0)) * 2

    def run(m: ChunkMLPBase) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            chunk = m(m.obs_norm(obs))
            return {"chunk": chunk, "actions": m.action_norm.inverse(chunk)}

    out_old = run(old)
    (path / "config.json").unlink()
    save_chunk_base(old, path, meta=doc.get("meta", {}))
    _with_provenance(path, _provenance(old_dir / "config.json", fmt))
    new, _ = load_chunk_base(path)
    return _finish(path, before, tensor_digests(path / "model.safetensors"), out_old, run(new), fmt)


def convert_korr_residual(path: Path) -> dict[str, Any]:
    from latentstack.core.paths import resolve_path
    from latentstack.koopman.artifact import load_residual, save_residual
    from latentstack.koopman.configuration_korr import ResidualConfig
    from latentstack.koopman.modeling_korr import make_residual

    doc = _legacy_doc(path)
    fmt = "latentstack.korr.residual/1"
    if doc.get("format") != fmt:
        raise ValueError(f"{path}: not a legacy {fmt} artifact")
    old_dir = legacy_copy(path)
    old = make_residual(ResidualConfig.from_dict(doc["residual"]))
    _load_strict(old, _state(old_dir / "residual.safetensors"))
    before = tensor_digests(old_dir / "residual.safetensors")
    c = old.config
    g = torch.Generator().manual_seed(0)
    obs, base_action = torch.randn(16, c.obs_dim, generator=g), torch.randn(16, c.action_dim, generator=g)

    def run(m: Any) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"act": m.act(obs, base_action), "value": m.value(obs, base_action)}

    out_old = run(old)
    meta = doc.get("meta", {})
    # a residual trained on a saved base names it (repo-relative path in meta.base): that becomes its source
    base = meta.get("base")
    source = resolve_path(base) if isinstance(base, str) else None
    if source is not None and not (source / "config.json").is_file():
        raise FileNotFoundError(f"{path}: its base {base!r} is not there (convert it first)")
    (path / "config.json").unlink()
    save_residual(old, path, meta=meta, source=source)
    _with_provenance(path, _provenance(old_dir / "config.json", fmt))
    new, _ = load_residual(path, source=source)
    rec = _finish(path, before, tensor_digests(path / "residual.safetensors"), out_old, run(new), fmt)
    if source is not None:
        rec["source"] = json.loads((path / "config.json").read_text())["source"]
    return rec


# ------------------------------------------------------------------------------------------- ACT
def _act_obs() -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8),
            "state": rng.normal(size=4).astype(np.float32)}


def convert_act(path: Path) -> dict[str, Any]:
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

    from latentstack.policies.lerobot_act.artifact import LEROBOT_DIR, load_act_artifact, seal_act_artifact
    from latentstack.policies.lerobot_act.modeling_act import ACTAdapter

    doc = _legacy_doc(path)
    if doc.get("type") != "act" or "format_version" in doc:
        raise ValueError(f"{path}: not a legacy LeRobot ACT checkpoint (LeRobot's config.json at the top)")
    old_dir = legacy_copy(path)
    # old loader: LeRobot's own from_pretrained on the flat folder (processors built on the CPU)
    policy = ACTPolicy.from_pretrained(str(old_dir), strict=True)
    on_cpu = {"device_processor": {"device": "cpu"}}
    pre = PolicyProcessorPipeline.from_pretrained(str(old_dir), config_filename="policy_preprocessor.json",
                                                  overrides=on_cpu)
    post = PolicyProcessorPipeline.from_pretrained(str(old_dir), config_filename="policy_postprocessor.json",
                                                   overrides=on_cpu, to_transition=policy_action_to_transition,
                                                   to_output=transition_to_policy_action)
    old = ACTAdapter(policy, pre, post)
    lerobot_files = ["config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"]
    lerobot_files += sorted(p.name for p in old_dir.glob("policy_*processor_step_*.safetensors"))
    before = {f"{name}:{k}": v for name in lerobot_files if name.endswith(".safetensors")
              for k, v in tensor_digests(old_dir / name).items()}
    obs = _act_obs()
    out_old = old.predict_action_chunk(obs)
    # LeRobot's own files move, unchanged, into the artifact's LeRobot subfolder; our config.json seals them
    sub = path / LEROBOT_DIR
    sub.mkdir(exist_ok=False)
    for name in lerobot_files:
        shutil.move(str(path / name), str(sub / name))
    side = [n for n in ("train_log.json",) if (path / n).is_file()]
    seal_act_artifact(path, existing_files=side)
    _with_provenance(path, _provenance(old_dir / "config.json", "LeRobot ACT folder (unversioned)"))
    new = load_act_artifact(path)
    after = {f"{name}:{k}": v for name in lerobot_files if name.endswith(".safetensors")
             for k, v in tensor_digests(sub / name).items()}
    return _finish(path, before, after, torch.from_numpy(out_old), torch.from_numpy(new.predict_action_chunk(obs)),
                   "LeRobot ACT (unversioned)")


# ------------------------------------------------------------------------------------------- driver
def recard(path: Path) -> None:
    """The card keeps its text and numbers (nothing was re-measured); its ``## Artifact`` block is rendered from
    the new ``config.json`` by the one card renderer (type, version, source, provenance, file hashes)."""
    from latentstack.core.card import with_provenance

    card = path / "CARD.md"
    if card.is_file():
        card.write_text(with_provenance(card.read_text(), json.loads((path / "config.json").read_text())))


def _finish(path: Path, before: dict[str, str], after: dict[str, str], out_old: Any, out_new: Any, fmt: str
            ) -> dict[str, Any]:
    from latentstack.core.artifacts import artifact_fingerprint
    from latentstack.core.paths import portable_path

    if before != after:
        raise AssertionError(f"{path}: tensors changed in conversion: "
                             f"{sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))[:8]}")
    recard(path)
    doc = json.loads((path / "config.json").read_text())
    return {"artifact": portable_path(path), "type": doc["type"], "from_format": fmt,
            "format_version": doc["format_version"], "fingerprint": artifact_fingerprint(path),
            "tensors": len(before), "tensors_equal": True,
            "tensor_sha256": hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest(),
            **compare_outputs(out_old, out_new), "torch": torch.__version__}


# artifact name -> converter; order matters (a residual's base is converted before the residual)
ARTIFACTS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "lion_tiny": convert_lion,
    "lion_tiny_identity": convert_lion,
    "stereo_sa2_tiny": convert_stereo,
    "stereo_convgru_tiny": convert_stereo,
    "korr_lift_base": convert_korr_base,
    "korr_lift_korr": convert_korr_residual,
    "korr_lift_resip": convert_korr_residual,
    "korr_toy_insertion_korr": convert_korr_residual,
    "act_metaworld_mt6": convert_act,
}


def is_converted(path: Path) -> bool:
    from latentstack.core.artifacts import is_artifact

    return is_artifact(path)


def merge_record(entries: Mapping[str, Mapping[str, Any]], record: Path = RECORD) -> None:
    """Merge entries by artifact name into the shared record (entries of other converters are kept)."""
    record.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(record.read_text()) if record.is_file() else {}
    doc.update({k: dict(v) for k, v in entries.items()})
    record.write_text(json.dumps(dict(sorted(doc.items())), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"artifacts under policies/ (default: {' '.join(ARTIFACTS)})")
    ap.add_argument("--policies", default=str(ROOT / "policies"))
    ap.add_argument("--recard", action="store_true", help="only refresh the cards' artifact blocks")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    done: dict[str, dict[str, Any]] = {}
    for name in a.names or list(ARTIFACTS):
        path = Path(a.policies) / name
        if a.recard:
            recard(path)
            continue
        if is_converted(path):
            print(f"{name}: already format 2, skipped")
            continue
        done[name] = ARTIFACTS[name](path)
        print(f"{name}: {done[name]['tensors']} tensors equal, outputs bit-identical "
              f"({', '.join(done[name]['outputs_compared'])[:80]})")
    if done:
        merge_record(done)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE / "src"))
    raise SystemExit(main())
