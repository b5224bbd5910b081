"""Processor of the VLA: raw observation batches (numpy, lists, strings) -> tensors on the model's device.

The model's forward path (``VLAPolicy.encode_prefix`` / ``sample_actions`` / ``compute_loss``) sees only the
:class:`VLAInputs` this produces; every host-side step (numpy -> tensor, tokenization, the decision whether any
language token is padded) happens here, so nothing in the model leaves the device. Conversions are done on the
host first and the tensor is then moved, in the same op order as before the processor existed, so CPU outputs
are bit-identical to the pre-processor model.

Accepted batch keys: ``observation.image``/``image`` (uint8 or float [0, 1], (B,3,H,W) or (B,H,W,3), a single
image without the batch dim is allowed), ``observation.state``/``state``, ``task``/``instruction`` (str or list)
or ``lang_tokens`` (+ optional ``lang_mask``), and for training ``action`` (B, H, A) and ``action_is_pad``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from latentstack.policies.vla.configuration_vla import VLAConfig
from latentstack.policies.vla.tokenizer import WordTokenizer

IMAGE_KEYS = ("observation.image", "image")
STATE_KEYS = ("observation.state", "state")
TEXT_KEYS = ("task", "instruction")


def first_key(batch: Mapping[str, Any], keys: Sequence[str], what: str) -> Any:
    for k in keys:
        if k in batch and batch[k] is not None:
            return batch[k]
    raise KeyError(f"batch has no {what} (looked for {list(keys)}; has {sorted(batch)})")


@dataclass
class VLAInputs:
    """Model inputs, all on one device. ``lang_mask`` is None when no language token is padded (then the
    attention runs without a mask, exactly as the model always did in that case)."""

    images: Tensor  # float (B, 3, S, S) in [0, 1]
    state: Tensor  # float (B, state_dim), raw (the model normalizes)
    lang_ids: Tensor  # long (B, L)
    lang_mask: Tensor | None  # bool (B, L), True = real token; None = nothing padded
    action: Tensor | None = None  # float (B, H, A) raw actions (training)
    action_is_pad: Tensor | None = None  # bool (B, H)

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])


def _to_tensor(x: Any, device: torch.device) -> Tensor:
    # every factory call names its device, so none depends on a default device
    return x.to(device) if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), device=device)


class VLAProcessor:
    """Owns every conversion between raw observations and the VLA's tensors; ``device`` follows the model."""

    def __init__(self, config: VLAConfig, tokenizer: WordTokenizer | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.tokenizer = tokenizer or WordTokenizer(config.vocab, max_len=config.max_lang_len)
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> VLAProcessor:
        self.device = torch.device(device)
        return self

    # ---------------------------------------------------------------- pieces
    def images(self, images: Any) -> Tensor:
        """uint8 / float[0,1], (B,3,H,W) or (B,H,W,3), numpy or torch -> float (B,3,S,S) in [0, 1] on device."""
        x = _to_tensor(images, self.device)
        if x.ndim == 3:
            x = x[None]
        if x.shape[1] != 3 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x

    def state(self, state: Any) -> Tensor:
        if isinstance(state, Tensor):
            s = state.float().to(self.device)
        else:
            s = torch.as_tensor(state, dtype=torch.float32, device=self.device)
        return s[None] if s.ndim == 1 else s

    def language(self, batch: Mapping[str, Any], batch_size: int) -> tuple[Tensor, Tensor | None]:
        """Token ids (B, L) and mask on device; the mask is None when every token is real (decided here, on
        the host side, so the model never syncs on it)."""
        if "lang_tokens" in batch:
            host = torch.device("cpu")
            ids = torch.as_tensor(batch["lang_tokens"], dtype=torch.long, device=host)
            mask = batch.get("lang_mask")
            mask = (ids != 0) if mask is None else torch.as_tensor(mask, dtype=torch.bool, device=host)
        else:
            texts = first_key(batch, TEXT_KEYS, "instruction text")
            if isinstance(texts, str):
                texts = [texts] * batch_size
            ids, mask = self.tokenizer(list(texts))
        all_real = bool(mask.all())  # host-side: ids/mask of a raw batch usually live on the CPU
        return ids.to(self.device), (None if all_real else mask.to(self.device))

    # ---------------------------------------------------------------- batches
    def __call__(self, batch: Mapping[str, Any] | VLAInputs) -> VLAInputs:
        if isinstance(batch, VLAInputs):
            return self._move(batch)
        images = self.images(first_key(batch, IMAGE_KEYS, "image"))
        state = self.state(first_key(batch, STATE_KEYS, "state"))
        ids, mask = self.language(batch, images.shape[0])
        action = batch.get("action")
        is_pad = batch.get("action_is_pad")
        dev = self.device
        return VLAInputs(
            images=images,
            state=state,
            lang_ids=ids,
            lang_mask=mask,
            action=None if action is None else torch.as_tensor(action, dtype=torch.float32, device=dev),
            action_is_pad=None if is_pad is None else torch.as_tensor(is_pad, dtype=torch.bool, device=dev),
        )

    def _move(self, x: VLAInputs) -> VLAInputs:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(self.device)

        return VLAInputs(mv(x.images), mv(x.state), mv(x.lang_ids), mv(x.lang_mask), mv(x.action),
                         mv(x.action_is_pad))  # type: ignore[arg-type]

    def observation_batch(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """One Policy-protocol observation (``image``, ``state``, ``instruction``/``task``) -> a batch of 1."""
        text = obs.get("instruction") or obs.get("task") or ""
        return {
            "image": np.asarray(obs["image"])[None],
            "state": np.asarray(obs["state"])[None],
            "instruction": [str(text)],
        }

    @staticmethod
    def postprocess(actions: Tensor) -> np.ndarray:
        """Action tensor (any device) -> float32 numpy on the host."""
        return actions.detach().cpu().numpy().astype(np.float32)


__all__ = ["IMAGE_KEYS", "STATE_KEYS", "TEXT_KEYS", "VLAInputs", "VLAProcessor", "first_key"]
