"""The ACT adapter's artifact (type ``"lerobot_act"``): LeRobot's own files inside the one artifact format.

Layout::

    config.json                     ours: type, format_version, ACTAdapterConfig, sha256 of every file below
    lerobot/config.json             LeRobot's ACTConfig ("type": "act", draccus fields), as LeRobot writes it
    lerobot/model.safetensors       LeRobot's weights (floating tensors in ``weights_dtype``)
    lerobot/policy_preprocessor.json, lerobot/policy_postprocessor.json, lerobot/policy_*processor_step_*.safetensors
    train_log.json, ...             side files (hashed)

LeRobot's files cannot carry our keys (its config is parsed strictly by draccus), so they live unchanged in a
subfolder and our ``config.json`` seals them. Loading verifies every hash, checks LeRobot's config against ours,
then goes through LeRobot's own ``ACTConfig`` / ``ACTPolicy.from_pretrained`` / ``PolicyProcessorPipeline``.
The saved pipelines name the device they were made on; they are built on the CPU and follow the model to the
device of the load call.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from latentstack.core.artifacts import ArtifactError, load_artifact, save_artifact
from latentstack.core.pretrained import config_of
from latentstack.policies.lerobot_act.configuration_act import ACT_TYPE, ACTAdapterConfig

LEROBOT_DIR = "lerobot"
WEIGHTS = "model.safetensors"
PREPROCESSOR_CONFIG = "policy_preprocessor.json"
POSTPROCESSOR_CONFIG = "policy_postprocessor.json"
# The only pipeline steps an artifact may name, by LeRobot registry name: exactly those ACT's
# ``make_act_pre_post_processors`` writes. LeRobot resolves a step's ``"class"`` by importing any module path and
# calling it with the step's config (``subprocess.Popen`` runs a command), so a step is checked here before
# LeRobot ever reads the JSON; a ``"class"`` key is refused outright, even next to an allowed registry name.
ALLOWED_PIPELINE_STEPS: dict[str, frozenset[str]] = {
    PREPROCESSOR_CONFIG: frozenset({"rename_observations_processor", "to_batch_processor", "device_processor",
                                    "normalizer_processor"}),
    POSTPROCESSOR_CONFIG: frozenset({"unnormalizer_processor", "device_processor"}),
}
_STEP_KEYS = frozenset({"registry_name", "config", "state_file"})


def check_pipeline_json(art: Any, rel_path: str, allowed: frozenset[str]) -> None:
    """Refuse (:class:`ArtifactError` naming the step) a saved LeRobot pipeline whose steps are not all in
    ``allowed`` by registry name, carry keys other than registry_name / config / state_file, or name a state
    file that is not a file of the artifact (LeRobot would fall back to downloading it from the Hub)."""
    doc = art.read_json(rel_path)
    steps = doc.get("steps") if isinstance(doc, dict) else None
    if not isinstance(steps, list):
        raise ArtifactError(f"artifact {art.path}: {rel_path} has no list of steps")
    folder = rel_path.rsplit("/", 1)[0]
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ArtifactError(f"artifact {art.path}: {rel_path} step {i} is not an object")
        name = step.get("registry_name", step.get("class"))
        if "class" in step or name not in allowed:
            raise ArtifactError(
                f"artifact {art.path}: {rel_path} step {i} names {name!r}, not an allowed processor step "
                f"(allowed registry names: {sorted(allowed)}; artifacts never name code to import)")
        extra = sorted(set(step) - _STEP_KEYS)
        if extra:
            raise ArtifactError(f"artifact {art.path}: {rel_path} step {i} ({name}) has unknown keys {extra}")
        if not isinstance(step.get("config", {}), dict):
            raise ArtifactError(f"artifact {art.path}: {rel_path} step {i} ({name}) config is not an object")
        state = step.get("state_file")
        if state is not None and (not isinstance(state, str) or f"{folder}/{state}" not in art.files):
            raise ArtifactError(f"artifact {art.path}: {rel_path} step {i} ({name}) state_file {state!r} is not "
                                "a file listed in config.json")


# Sizes of LeRobot's ACTConfig a loader accepts (inclusive), checked before ``ACTPolicy`` is built: LeRobot builds
# the model from its config.json before reading any weight, so a hostile dim_model = 8192 would otherwise
# allocate gigabytes first. Wide for this project (the shipped model: dim_model 128, 4 heads, 2 + 2 layers).
LEROBOT_ACT_BOUNDS: dict[str, tuple[int, int]] = {
    "dim_model": (1, 4096), "n_heads": (1, 256), "dim_feedforward": (1, 65536), "n_encoder_layers": (1, 64),
    "n_decoder_layers": (1, 64), "n_vae_encoder_layers": (1, 64), "latent_dim": (1, 4096), "chunk_size": (1, 1024),
    "n_action_steps": (1, 1024), "n_obs_steps": (1, 64),
}


def check_lerobot_act_sizes(lcfg: Any, where: str | os.PathLike = "") -> None:
    """Refuse (:class:`ArtifactError` naming the field) a LeRobot ACT config outside :data:`LEROBOT_ACT_BOUNDS`."""
    for name, (low, high) in LEROBOT_ACT_BOUNDS.items():
        v = getattr(lcfg, name, None)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ArtifactError(f"artifact {where}: LeRobot config {name} = {v!r} is not an int in [{low}, {high}]")
    if lcfg.dim_model % lcfg.n_heads:
        raise ArtifactError(f"artifact {where}: LeRobot config dim_model = {lcfg.dim_model} is not divisible by "
                            f"n_heads = {lcfg.n_heads}")


def _cpu_pipeline_json(path: Path) -> None:
    """A saved pipeline names the device it ran on; store "cpu" so the artifact loads on any machine."""
    doc = json.loads(path.read_text())
    changed = False
    for step in doc.get("steps", []):
        cfg = step.get("config") or {}
        if step.get("registry_name") == "device_processor" and cfg.get("device") not in (None, "cpu"):
            cfg["device"] = "cpu"
            changed = True
    if changed:
        path.write_text(json.dumps(doc, indent=2))


def _stored_float_dtype(weights: Path) -> str:
    """The dtype of the floating tensors of a safetensors file (one dtype expected)."""
    from safetensors import safe_open

    dtypes = set()
    with safe_open(str(weights), "pt") as f:
        for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            t = f.get_slice(k).get_dtype()
            if t in ("F32", "F16", "BF16", "F64"):
                dtypes.add({"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}[t])
    if len(dtypes) != 1:
        raise ArtifactError(f"{weights}: floating tensors in {sorted(dtypes) or 'no'} dtypes (expected one)")
    return dtypes.pop()


def _store_floats(weights: Path, dtype: str) -> None:
    """Re-store the floating tensors of LeRobot's weight file in ``dtype`` (loading casts them back to fp32)."""
    from safetensors.torch import load_file, save_file

    want = getattr(torch, dtype)
    tensors = load_file(str(weights))
    out = {k: (v.to(want) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(out, str(weights), metadata={"format": "pt"})  # LeRobot's own header ("format": "pt")


def seal_act_artifact(out_dir: str | os.PathLike, *, files: Mapping[str, bytes | str] | None = None,
                      existing_files: Iterable[str] = (), provenance: Mapping[str, Any] | None = None,
                      extra: Mapping[str, Any] | None = None) -> Path:
    """Write our ``config.json`` over LeRobot files already in ``out_dir/lerobot`` (hashing all of them)."""
    from lerobot.configs.policies import PreTrainedConfig

    out = Path(out_dir)
    sub = out / LEROBOT_DIR
    lcfg = PreTrainedConfig.from_pretrained(str(sub))
    if lcfg.type != ACT_TYPE:
        raise ArtifactError(f"{sub}: LeRobot config type {lcfg.type!r}, expected {ACT_TYPE!r}")
    cfg = ACTAdapterConfig.from_lerobot(lcfg, lerobot_dir=LEROBOT_DIR, weights_dtype=_stored_float_dtype(sub / WEIGHTS))
    lerobot_files = sorted(p.relative_to(out).as_posix() for p in sub.rglob("*") if p.is_file())
    return save_artifact(out, type=cfg.type, config=cfg.to_dict(), files=files,
                         existing_files=[*lerobot_files, *existing_files], provenance=provenance, extra=extra)


def save_act_artifact(policy: Any, preprocessor: Any, postprocessor: Any, out_dir: str | os.PathLike, *,
                      weights_dtype: str = "float32", files: Mapping[str, bytes | str] | None = None,
                      existing_files: Iterable[str] = (), provenance: Mapping[str, Any] | None = None,
                      extra: Mapping[str, Any] | None = None) -> Path:
    """Save LeRobot's policy and processors the LeRobot way into ``out_dir/lerobot`` and seal the artifact."""
    out = Path(out_dir)
    sub = out / LEROBOT_DIR
    if sub.exists():  # a re-save replaces LeRobot's files as a whole (no stale processor state files)
        shutil.rmtree(sub)
    sub.mkdir(parents=True)
    policy.save_pretrained(sub)
    preprocessor.save_pretrained(sub)
    postprocessor.save_pretrained(sub)
    for name in (PREPROCESSOR_CONFIG, POSTPROCESSOR_CONFIG):
        _cpu_pipeline_json(sub / name)
    if weights_dtype != "float32":
        _store_floats(sub / WEIGHTS, weights_dtype)
    return seal_act_artifact(out, files=files, existing_files=existing_files, provenance=provenance, extra=extra)


def compact_act_artifact(path: str | os.PathLike, dtype: str = "float16") -> int:
    """Re-store an artifact's weights with floating tensors in ``dtype`` and re-seal it (the ResNet18 makes the
    fp32 file ~47 MB). Loading casts back into the fp32 model, so the policy *is* the rounded weights: evaluate
    after compacting, never before. Returns the new weight file's size in bytes."""
    art = load_artifact(path, expect_type=ACTAdapterConfig.type)
    sub = art.path / art.config["lerobot_dir"]
    _store_floats(sub / WEIGHTS, dtype)
    side = [n for n in art.files if not n.startswith(art.config["lerobot_dir"] + "/")]
    seal_act_artifact(art.path, existing_files=side, provenance=art.provenance, extra=art.extra)
    return (sub / WEIGHTS).stat().st_size


def load_act_artifact(path: str | os.PathLike, device: str | None = None, dtype: str | None = None) -> Any:
    """An :class:`ACTAdapter` from a ``"lerobot_act"`` artifact, on ``device`` (default: its config's).

    Refused with an :class:`ArtifactError`: wrong type / version, any file whose sha256 differs, a processor
    step outside :data:`ALLOWED_PIPELINE_STEPS` (checked before LeRobot reads the pipeline JSON), a LeRobot
    config that disagrees with ours, weights stored in another dtype, weights that do not fit (strict)."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

    from latentstack.policies.lerobot_act.modeling_act import ACTAdapter

    art = load_artifact(path, expect_type=ACTAdapterConfig.type)
    cfg: ACTAdapterConfig = config_of(art, device=device, dtype=dtype)  # type: ignore[assignment]
    sub = art.path / cfg.lerobot_dir
    for name, allowed in ALLOWED_PIPELINE_STEPS.items():  # before LeRobot reads them, before any weights
        check_pipeline_json(art, f"{cfg.lerobot_dir}/{name}", allowed)
    lcfg = PreTrainedConfig.from_pretrained(str(sub))
    if lcfg.type != ACT_TYPE:
        raise ArtifactError(f"artifact {art.path}: LeRobot config type {lcfg.type!r}, expected {ACT_TYPE!r}")
    check_lerobot_act_sizes(lcfg, art.path)  # before anything derived from these sizes is built
    mine = ACTAdapterConfig.from_lerobot(lcfg, lerobot_dir=cfg.lerobot_dir, weights_dtype=cfg.weights_dtype)
    diff = sorted(k for k in ACTAdapterConfig.field_names() - {"device", "dtype"} if getattr(cfg, k) != getattr(mine, k))
    if diff:
        raise ArtifactError(f"artifact {art.path}: config.json disagrees with {cfg.lerobot_dir}/config.json in "
                            f"{[(k, getattr(cfg, k), getattr(mine, k)) for k in diff]}")
    stored = _stored_float_dtype(sub / WEIGHTS)
    if stored != cfg.weights_dtype:
        raise ArtifactError(f"artifact {art.path}: weights stored in {stored}, config says {cfg.weights_dtype}")
    art.check_budget()  # LeRobot's weights and processor states: headers only, before LeRobot builds anything
    lcfg.device = "cpu"  # LeRobot builds and loads on the CPU; the adapter moves below
    try:
        policy = ACTPolicy.from_pretrained(str(sub), config=lcfg, strict=True)
    except RuntimeError as exc:  # missing / unexpected / mis-shaped weights
        raise ArtifactError(f"artifact {art.path}: weights do not fit LeRobot's config: {exc}") from exc
    # The device saved in the pipelines is where the artifact was made: build them on the CPU; the adapter's
    # processor follows the model to its device.
    on_cpu = {"device_processor": {"device": "cpu"}}
    pre = PolicyProcessorPipeline.from_pretrained(str(sub), config_filename=PREPROCESSOR_CONFIG, overrides=on_cpu,
                                                  local_files_only=True)
    post = PolicyProcessorPipeline.from_pretrained(
        str(sub), config_filename=POSTPROCESSOR_CONFIG, overrides=on_cpu, local_files_only=True,
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
    adapter = ACTAdapter(policy, pre, post)
    if cfg.dtype != "float32":
        adapter.to(dtype=cfg.torch_dtype)
    adapter.to(cfg.device)
    _ = adapter.processor  # point the pipelines at the model's device now, not on the first call
    return adapter


__all__ = ["ALLOWED_PIPELINE_STEPS", "LEROBOT_ACT_BOUNDS", "LEROBOT_DIR", "check_lerobot_act_sizes", "check_pipeline_json", "compact_act_artifact", "load_act_artifact", "save_act_artifact", "seal_act_artifact"]
