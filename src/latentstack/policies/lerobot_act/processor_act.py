"""Processor of the LeRobot ACT adapter: project observations -> LeRobot batches on the model's device.

Wraps LeRobot's own pre/post-processor pipelines (rename, to-batch, device, normalizer / unnormalizer, device).
The saved pipelines name a device (``"cpu"`` in the shipped artifact, written by LeRobot); here that is only
where the artifact was made: :meth:`ACTProcessor.to` points every device-bearing step at the model's device, so
the preprocessor hands the model tensors where its weights are, and the postprocessor's final device step (which
LeRobot uses to bring actions back to the host) stays on the CPU.

Host-side work lives here: validating the numpy observation, HWC uint8 -> CHW float in [0, 1] (done on the
CPU before the move, in the same ops as before, so CPU outputs are bit-identical), and action -> numpy.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentstack.policies.lerobot_act.configuration_act import IMAGE_KEY, STATE_KEY


def _steps(pipeline: Any) -> list[Any]:
    return list(getattr(pipeline, "steps", []))


def set_pipeline_device(pipeline: Any, device: torch.device | str, *, keep_last_device_step: bool = False) -> None:
    """Point the device steps (and stats-holding steps) of a LeRobot pipeline at ``device``.

    ``keep_last_device_step``: leave a trailing ``DeviceProcessorStep`` alone (a postprocessor's "to host")."""
    from lerobot.processor import DeviceProcessorStep

    steps = _steps(pipeline)
    for i, step in enumerate(steps):
        if isinstance(step, DeviceProcessorStep):
            if keep_last_device_step and i == len(steps) - 1:
                continue
            step.device = str(torch.device(device))
            step.__post_init__()  # recomputes tensor_device / non_blocking from ``device``
        elif hasattr(step, "to") and hasattr(step, "_tensor_stats"):  # normalizer / unnormalizer stats
            step.to(device=torch.device(device))


def pipeline_devices(pipeline: Any) -> list[str]:
    """Devices named by a pipeline's device steps (for checks and tests)."""
    from lerobot.processor import DeviceProcessorStep

    return [str(s.device) for s in _steps(pipeline) if isinstance(s, DeviceProcessorStep)]


class ACTProcessor:
    """Numpy observation (``image`` uint8 (H, W, 3), ``state`` (state_dim,)) -> normalized LeRobot batch on
    ``device``; normalized action chunk -> de-normalized float32 numpy."""

    def __init__(self, preprocessor: Any, postprocessor: Any, image_shape: tuple[int, int, int], state_dim: int,
                 device: torch.device | str = "cpu") -> None:
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.image_shape = tuple(image_shape)
        self.state_dim = int(state_dim)
        self._device = torch.device("cpu")  # pipelines without a device step: where their stats were built
        if torch.device(device) != self.device:
            self.to(device)

    @property
    def device(self) -> torch.device:
        """Where the preprocessor puts the model's inputs, read from its device step (pipelines may be shared
        by two adapters, e.g. a checkpoint and its untrained twin, so no cached value is trusted)."""
        from lerobot.processor import DeviceProcessorStep

        for step in _steps(self.preprocessor):
            if isinstance(step, DeviceProcessorStep):
                return step.tensor_device
        return self._device

    def to(self, device: torch.device | str) -> ACTProcessor:
        device = torch.device(device)
        set_pipeline_device(self.preprocessor, device)
        set_pipeline_device(self.postprocessor, device, keep_last_device_step=True)
        self._device = device
        return self

    def check(self, obs: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """Validated host tensors: image CHW float in [0, 1] and state float32."""
        if "image" not in obs or "state" not in obs:
            raise KeyError(f"observation needs 'image' and 'state', got {sorted(obs)}")
        image = np.asarray(obs["image"])
        c, h, w = self.image_shape
        if image.dtype != np.uint8 or image.shape != (h, w, c):
            raise ValueError(f"obs['image'] must be uint8 {(h, w, c)}, got {image.dtype} {image.shape}")
        state = np.asarray(obs["state"], dtype=np.float32)
        if state.shape != (self.state_dim,):
            raise ValueError(f"obs['state'] must have shape ({self.state_dim},), got {state.shape}")
        if not np.isfinite(state).all():
            raise ValueError("obs['state'] has non-finite values")
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0
        return img, torch.from_numpy(state)

    def __call__(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """One observation -> the model's batch (batch dim added, normalized, on ``device``)."""
        img, state = self.check(obs)
        return self.preprocessor({IMAGE_KEY: img, STATE_KEY: state})

    def postprocess(self, actions: Tensor) -> np.ndarray:
        """(1, chunk, A) normalized actions (model device) -> (chunk, A) float32 numpy."""
        out = self.postprocessor(actions)
        return out[0].detach().cpu().numpy().astype(np.float32)


__all__ = ["ACTProcessor", "pipeline_devices", "set_pipeline_device"]
