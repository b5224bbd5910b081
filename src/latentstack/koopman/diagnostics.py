"""Per-iteration Koopman diagnostics (spec korr.md §8): collapse and spectral radius monitors."""
from __future__ import annotations

import torch

from .modeling_korr import KORRResidual, ResidualActorCritic


@torch.no_grad()
def koopman_diagnostics(model: ResidualActorCritic, obs: torch.Tensor, executed_action: torch.Tensor,
                        next_obs: torch.Tensor) -> dict[str, float]:
    """mean var(φ), relative error ``L_kpm / mean var(φ(o'))``, ρ(K), ‖K‖₂, ‖B‖_F on a batch.
    Empty for residuals without a Koopman model."""
    if not isinstance(model, KORRResidual):
        return {}
    z, zn = model.lift(obs), model.lift(next_obs)
    loss = torch.mean((model.koopman(z, executed_action) - zn) ** 2)
    var_next = zn.var(0).mean()
    k = model.koopman.K.detach().double()
    return {
        "var_phi": float(z.var(0).mean()),
        "mean_abs_phi": float(z.abs().mean()),
        "kpm_loss": float(loss),
        "rel_kpm_error": float(loss / var_next) if var_next > 0 else float("inf"),
        "rho_K": float(torch.linalg.eigvals(k).abs().max()),
        "norm2_K": float(torch.linalg.matrix_norm(k, ord=2)),
        "fro_B": float(torch.linalg.matrix_norm(model.koopman.B.detach())),
    }


def encoder_condition(weight: torch.Tensor) -> float:
    """Condition number of a linear encoder — large ⇒ the learned spectrum is not identifiable."""
    return float(torch.linalg.cond(weight.detach().double()))


__all__ = ["encoder_condition", "koopman_diagnostics"]
