"""``save_pretrained`` / ``load_pretrained`` for a torch module whose whole state is one ``state_dict``.

The shared body of the per-model pairs (LION, stereo, KORR heads and base, ...): the config is a registered
:class:`~latentstack.core.config.ModelConfig`, the weights one safetensors file, and everything goes through
:func:`~latentstack.core.artifacts.save_artifact` / :func:`~latentstack.core.artifacts.load_artifact`, so every
such artifact is refused the same way (wrong type or version, tampered file, config edited outside its free
fields, tensors whose names / shapes / dtypes do not fit the model, a different source artifact).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from latentstack.core.artifacts import Artifact, ArtifactError, check_state_dict, load_artifact, save_artifact
from latentstack.core.config import PLACEMENT_FIELDS, ModelConfig, config_class

M = TypeVar("M")
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(
    model: Any,
    out_dir: str | os.PathLike,
    config: ModelConfig,
    *,
    weights: str = WEIGHTS_NAME,
    state_dict: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes | str] | None = None,
    existing_files: Iterable[str] = (),
    source: str | os.PathLike | None = None,
    provenance: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (or ``state_dict``, e.g. a best checkpoint) as an artifact of ``config.type``."""
    if not config.type:
        raise ArtifactError(f"{type(config).__name__} is not registered under a type name")
    sd = model.state_dict() if state_dict is None else state_dict
    return save_artifact(out_dir, type=config.type, config=config.to_dict(), tensors={weights: dict(sd)},
                         files=files, existing_files=existing_files, source=source, provenance=provenance,
                         extra=extra)


def config_of(art: Artifact, *, device: str | None = None, dtype: str | None = None,
              expect: ModelConfig | None = None) -> ModelConfig:
    """The artifact's config object (placement overridden by ``device`` / ``dtype``); ``expect``: refuse a
    stored config that differs from it outside the placement fields."""
    config = config_class(art.type).from_dict(art.config)
    if expect is not None:
        if type(expect) is not type(config):
            raise ArtifactError(f"artifact {art.path} holds a {type(config).__name__}, expected {type(expect).__name__}")
        mine, want = config.to_dict(), expect.to_dict()
        diff = sorted(k for k in want if k not in PLACEMENT_FIELDS and mine.get(k) != want[k])
        if diff:
            raise ArtifactError(f"artifact {art.path}: config mismatch in {diff} "
                                f"(stored {[mine.get(k) for k in diff]}, expected {[want[k] for k in diff]})")
    changes = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    return config.replace(**changes) if changes else config


def load_pretrained(
    path: str | os.PathLike,
    build: Callable[[Any], M],
    *,
    expect_type: str | Iterable[str],
    weights: str = WEIGHTS_NAME,
    free_fields: Iterable[str] = (),
    device: str | None = None,
    dtype: str | None = None,
    expect: ModelConfig | None = None,
    source: str | os.PathLike | None = None,
    prepare: Callable[[M, Artifact], None] | None = None,
) -> tuple[M, Artifact]:
    """(model in eval mode on its config's device, the verified artifact).

    ``build(config)`` makes the untrained module; ``prepare(model, artifact)`` may change its structure first
    (e.g. add adapters the artifact says it has); ``source``: the artifact this one must derive from."""
    import torch

    art = load_artifact(path, expect_type=expect_type)
    if source is not None:
        art.check_source(source)
    config = config_of(art, device=device, dtype=dtype, expect=expect)  # ranges checked (ModelConfig.BOUNDS)
    # the weights first: within the memory budget (header only) and saved with this very config, so the model
    # built from it is as small as they are (a config.json edited to d_model 8192 never gets built)
    tensors = art.tensors(weights, free_fields=set(free_fields) | PLACEMENT_FIELDS)
    model = build(config)
    if prepare is not None:
        prepare(model, art)
    problems = check_state_dict(model.state_dict(), tensors)
    if problems:
        raise ArtifactError(f"artifact {art.path}: {weights} does not fit its {art.type!r} config: "
                            + "; ".join(problems))
    model.load_state_dict(tensors, strict=True)
    if config.dtype != "float32":
        model.to(dtype=getattr(torch, config.dtype))
    model.to(config.device)
    model.eval()
    return model, art


__all__ = ["WEIGHTS_NAME", "config_of", "load_pretrained", "save_pretrained"]
