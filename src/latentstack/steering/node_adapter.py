"""COAST in the policy node: a policy whose steering gate stays installed and can be re-set at run time.

The node owns its policy, so the hook is installed once (not per call, as in paired evaluation)
and only rebuilt when ``steering`` / ``steering_beta`` change. β = 0 removes the hook entirely:
the policy is then exactly the unsteered one (coast.md §10, "β = 0 disables").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .intervention import SteeringArtifact

__all__ = ["SteerablePolicy", "steering_adapter"]


class SteerablePolicy:
    """Wraps a Policy; ``set_steering(artifact, beta)`` swaps the gate atomically (old one kept on error)."""

    def __init__(self, policy: Any, artifact: str = "", beta: float = 0.0) -> None:
        self.policy = policy
        self.artifact_path = ""
        self.beta = 0.0
        self._art: SteeringArtifact | None = None
        self._active: Any = None
        self.set_steering(artifact, beta)

    def _site_dim(self, site: str) -> int | None:
        sites = self.policy.latent_sites() if hasattr(self.policy, "latent_sites") else {}
        if site not in sites:
            raise ValueError(f"steering artifact targets site {site!r}; the policy has {sorted(sites)}")
        cfg = getattr(self.policy, "config", None)
        return getattr(cfg, "d_model", None)

    def set_steering(self, artifact: str | None = None, beta: float | None = None) -> None:
        """Change the artifact and/or β (``None`` keeps the current value). Validates before touching the hook."""
        path = self.artifact_path if artifact is None else str(artifact)
        b = self.beta if beta is None else float(beta)
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"steering_beta must be in [0, 1], got {b}")
        if b > 0 and not path:
            raise ValueError("steering_beta > 0 needs a 'steering' artifact")
        art = self._art
        if path != self.artifact_path or art is None:
            art = None
            if path:
                if not Path(path).exists():
                    raise FileNotFoundError(f"no steering artifact {path} (a conceptor artifact folder)")
                loaded = SteeringArtifact.load(path)
                d = self._site_dim(loaded.card["site"])
                if d is not None and d != loaded.d:
                    raise ValueError(f"steering artifact has d = {loaded.d}, the policy's site has d = {d}")
                art = loaded
        new = art.intervention(self.policy, beta=b) if art is not None and b > 0 else None
        if self._active is not None:
            self._active.__exit__(None, None, None)
        self._active = new
        if new is not None:
            new.__enter__()
        self._art, self.artifact_path, self.beta = art, path, b

    @property
    def steering_card(self) -> dict[str, Any] | None:
        return None if self._art is None else dict(self._art.card)

    def close(self) -> None:
        if self._active is not None:
            self._active.__exit__(None, None, None)
            self._active = None

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed=seed)

    def select_action(self, obs: Any) -> Any:
        return self.policy.select_action(obs)

    def latent_sites(self) -> Any:
        return self.policy.latent_sites()

    def __getattr__(self, name: str) -> Any:
        if name in ("policy", "_art", "_active", "artifact_path", "beta"):
            raise AttributeError(name)
        return getattr(self.policy, name)


def steering_adapter(policy: Any, params: Any) -> SteerablePolicy:
    """The policy node's ``steering`` adapter: ``params.steering`` (artifact stem) and ``params.steering_beta``."""
    return SteerablePolicy(policy, params.steering, params.steering_beta)
