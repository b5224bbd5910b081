"""Adapter: LeRobot's real ``ACTPolicy`` behind the project's Policy protocol, with latent sites.

``ACTAdapter`` holds ``policy`` (the unmodified ``lerobot.policies.act.modeling_act.ACTPolicy``) and LeRobot's
pre/post-processor pipelines (normalisation lives there in LeRobot 0.4.4, not in the model).

Latent sites. ACT's transformer runs sequence-first: every encoder/decoder output is ``(S, B, d)``.
The project's tools (``states_from_records``, pooling over action tokens) expect ``(B, S, d)``, so each
exposed module gets a parameter-free ``tokens`` child (``BatchFirstTokens``, an identity) that a
permanent forward hook calls on the batch-first view of the module's output; whatever a Tap or an
Intervention does at ``tokens`` is transposed back into the model. No parameter or state-dict key
changes (checkpoints stay LeRobot's), and with no edit the output is the same values.

Sites (``latent_sites()``), all ``(B, S, d)`` with ``d = dim_model``:

- ``decoder.layer{i}``: output of ACT decoder layer i = the ``chunk_size`` action-query tokens
  (post-norm layer: already LayerNorm-ed). The analogue of COAST's action-expert layer output.
- ``decoder.out``: after the decoder's final LayerNorm, right before ``action_head`` (linear in it).
- ``encoder.out``: the encoder output over [latent, state, image-cell] tokens (computed once per chunk).

Caveat measured in ``tests/steering/test_act_steering.py``: the last decoder layer is followed only by
the decoder's final LayerNorm, which is scale-invariant, so a uniform shrink ``h -> (1-β) h`` at
``decoder.layer{last}`` is (up to LayerNorm's eps) absorbed and leaves actions unchanged; shrinkage
at any earlier decoder layer (or at ``decoder.out``) does change them.

ACT is deterministic at inference (dropout off; VAE latent is zero), so there is no denoising loop:
each chunk prediction is one call, annotated ``denoise_step=0`` (COAST's D = 1) and ``step=t``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from latentstack.core.device import processor_on
from latentstack.latent.context import annotate
from latentstack.latent.site import Site
from latentstack.policies.lerobot_act.configuration_act import IMAGE_KEY, STATE_KEY
from latentstack.policies.lerobot_act.processor_act import ACTProcessor
from latentstack.policies.protocol import ActionChunkQueue, Observation


class BatchFirstTokens(nn.Identity):
    """Hookable identity that receives ``(B, S, d)``; the Site of an ACT sequence-first output."""


def _batch_first_hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    # (S, B, d) -> tokens((B, S, d)) -> (S, B, d); hooks on ``tokens`` may replace the batch-first value
    return module.tokens(output.transpose(0, 1)).transpose(0, 1)


def attach_batch_first_view(module: nn.Module) -> None:
    """Give a sequence-first module a ``tokens`` child seen batch-first by Taps / Interventions."""
    if hasattr(module, "tokens"):
        raise ValueError(f"{type(module).__name__} already has a 'tokens' attribute")
    module.tokens = BatchFirstTokens()
    module.register_forward_hook(_batch_first_hook)


def is_act_checkpoint(path: str | os.PathLike) -> bool:
    """True for an ACT adapter artifact folder (``config.json`` of type ``"lerobot_act"``, format 2)."""
    from latentstack.core.artifacts import is_artifact
    from latentstack.policies.lerobot_act.configuration_act import ACTAdapterConfig

    return is_artifact(path, ACTAdapterConfig.type)


class ACTAdapter(nn.Module):
    """LeRobot ACT as a project Policy: ``reset``, ``select_action``, ``latent_sites``."""

    # no denoising loop: one call per chunk, annotated denoise_step=0 (COAST's D = 1). Steering reads this
    # (steering.intervention.denoise_steps) to refuse a per-step conceptor fitted for another step count at attach
    num_denoise_steps: int = 1

    def __init__(self, policy: nn.Module, preprocessor: Any, postprocessor: Any) -> None:
        super().__init__()
        from lerobot.policies.act.modeling_act import ACTPolicy

        if not isinstance(policy, ACTPolicy):
            raise TypeError(f"ACTAdapter wraps a lerobot ACTPolicy, got {type(policy).__name__}")
        cfg = policy.config
        if cfg.temporal_ensemble_coeff is not None:
            raise ValueError("temporal ensembling is not supported by the adapter (it executes n_action_steps per chunk)")
        if IMAGE_KEY not in cfg.input_features or STATE_KEY not in cfg.input_features:
            raise ValueError(f"ACT config must take {IMAGE_KEY!r} and {STATE_KEY!r}; has {sorted(cfg.input_features)}")
        self.policy = policy
        self.config = cfg
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.image_shape = tuple(cfg.input_features[IMAGE_KEY].shape)  # (3, H, W)
        self.state_dim = int(cfg.input_features[STATE_KEY].shape[0])
        # not an nn.Module child: it holds LeRobot pipelines; ``processor`` moves it to the weights' device
        self._processor = ACTProcessor(preprocessor, postprocessor, self.image_shape, self.state_dim)
        self.action_dim = int(cfg.action_feature.shape[0])
        model = policy.model
        for layer in model.decoder.layers:
            attach_batch_first_view(layer)
        attach_batch_first_view(model.decoder)
        attach_batch_first_view(model.encoder)
        self._queue = ActionChunkQueue(cfg.n_action_steps)
        self._step = 0
        self.eval()

    # ---------------------------------------------------------------- construction / IO
    @classmethod
    def from_config(cls, config: Any, dataset_stats: Mapping[str, Mapping[str, Tensor]], seed: int = 0) -> ACTAdapter:
        """Fresh (untrained) ACT with LeRobot's processors built from ``dataset_stats``."""
        from lerobot.policies.act.modeling_act import ACTPolicy
        from lerobot.policies.act.processor_act import make_act_pre_post_processors

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            policy = ACTPolicy(config)
        pre, post = make_act_pre_post_processors(config, dataset_stats=dataset_stats)
        return cls(policy, pre, post)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | None = None) -> ACTAdapter:
        """Load an artifact written by :meth:`save_pretrained` on ``device`` (strict: every weight must match;
        see :func:`latentstack.policies.lerobot_act.artifact.load_act_artifact` for what is refused)."""
        from latentstack.policies.lerobot_act.artifact import load_act_artifact

        return load_act_artifact(path, device=device)

    def save_pretrained(self, path: str | os.PathLike, *, weights_dtype: str = "float32",
                        files: Mapping[str, bytes | str] | None = None) -> Path:
        """Save as a ``"lerobot_act"`` artifact (LeRobot's own files in its ``lerobot/`` folder, hashed)."""
        from latentstack.policies.lerobot_act.artifact import save_act_artifact

        # processors are saved as CPU pipelines (a saved "cuda" would not load on a CPU-only machine)
        device = self._processor.device
        self._processor.to("cpu")
        try:
            return save_act_artifact(self.policy, self.preprocessor, self.postprocessor, path,
                                     weights_dtype=weights_dtype, files=files)
        finally:
            self._processor.to(device)

    @staticmethod
    def compact_weights(path: str | os.PathLike, dtype: torch.dtype = torch.float16) -> int:
        """Re-store the artifact's weights with floating tensors in ``dtype`` and re-seal it (the ResNet18
        backbone makes the fp32 file ~47 MB); loading casts back into the fp32 model, so the policy *is* the
        rounded weights. Returns the new file size in bytes. Evaluate after compacting, never before."""
        from latentstack.policies.lerobot_act.artifact import compact_act_artifact

        return compact_act_artifact(path, str(dtype).removeprefix("torch."))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------- device / processor
    @property
    def device(self) -> torch.device:
        """Where the weights live; ``.to(device)`` moves them and the processor steps follow on the next call."""
        return next(self.policy.parameters()).device

    @property
    def processor(self) -> ACTProcessor:
        """Observation processor (LeRobot's pipelines inside) on the model's current device."""
        return processor_on(self._processor, self.device)

    # ---------------------------------------------------------------- inference
    def _check_obs(self, obs: Observation) -> tuple[Tensor, Tensor]:
        return self._processor.check(obs)

    @torch.no_grad()
    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """De-normalised action chunk ``(chunk_size, action_dim)`` float32 for one observation."""
        proc = self.processor
        batch = proc(obs)  # adds the batch dim, normalises, on the model's device
        with annotate(step=self._step, denoise_step=0):
            actions = self.policy.predict_action_chunk(batch)  # (1, chunk, A), normalised
        return proc.postprocess(actions)

    def reset(self, seed: int | None = None) -> None:
        """New episode: clear the chunk queue and step counter. ACT inference draws no noise (VAE off,
        dropout off), so ``seed`` changes nothing; it is accepted for the protocol."""
        self._queue.clear()
        self._step = 0

    def select_action(self, obs: Observation) -> np.ndarray:
        if self._queue.needs_chunk():
            self._queue.push_chunk(self.predict_action_chunk(obs))
        self._step += 1
        return self._queue.pop()

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict]:
        """LeRobot's training loss on a preprocessed batch (see ``train.py``)."""
        return self.policy.forward(dict(batch))

    def latent_sites(self) -> dict[str, Site]:
        n = self.config.n_decoder_layers
        d = self.config.dim_model
        sites = {
            f"decoder.layer{i}": Site(
                f"policy.model.decoder.layers.{i}.tokens",
                description=f"ACT decoder layer {i} output: the {self.config.chunk_size} action-query tokens, "
                f"batch-first (B, {self.config.chunk_size}, {d}); one call per chunk (denoise_step 0)"
                + (" — followed only by the final LayerNorm, which absorbs uniform shrinking" if i == n - 1 else ""),
            )
            for i in range(n)
        }
        sites["decoder.out"] = Site("policy.model.decoder.tokens",
                                    description=f"decoder output after its final LayerNorm (B, chunk, {d}), input of action_head")
        sites["encoder.out"] = Site("policy.model.encoder.tokens",
                                    description=f"encoder output (B, 2 + image cells, {d}) over [latent, state, image] tokens")
        return sites


def load_act_policy(path: str | os.PathLike, device: str | None = None) -> ACTAdapter:
    return ACTAdapter.from_pretrained(path, device=device)


def make_act_random_like(path: str | os.PathLike, seed: int = 0, device: str | None = None) -> ACTAdapter:
    """The untrained twin: same config and normalisation statistics as the checkpoint, fresh weights."""
    trained = ACTAdapter.from_pretrained(path, device=device)
    from lerobot.policies.act.modeling_act import ACTPolicy

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = ACTPolicy(trained.config)
    return ACTAdapter(policy, trained.preprocessor, trained.postprocessor).to(trained.device)


__all__ = ["ACTAdapter", "BatchFirstTokens", "attach_batch_first_view", "is_act_checkpoint", "load_act_policy",
           "make_act_random_like"]
