"""Residual actor-critics behind one interface (spec korr.md §3): KORR, goal-KORR, ResiP, non-linear dynamics.

All take the normalized observation ``o`` and the normalized base action ``a_b`` and return the
residual mean ``μ``; the executed normalized action is ``a_b + action_scale · r`` with ``r ~ N(μ, σ²)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from latentstack.latent import Site

from .configuration_korr import ResidualConfig
from .processor_korr import module_device


def _mlp(in_dim: int, hidden: int, out_dim: int, num_layers: int, last_gain: float,
         last_bias: float | None) -> nn.Sequential:
    """``Linear–ReLU`` × num_layers then ``Linear(out)``: hidden layers kaiming_normal(fan_in, relu), bias 0;
    the last layer orthogonal(last_gain) with bias ``last_bias`` (None ⇒ no bias, as φ and g in the code)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(num_layers):
        lin = nn.Linear(d, hidden)
        nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
        d = hidden
    last = nn.Linear(d, out_dim, bias=last_bias is not None)
    nn.init.orthogonal_(last.weight, gain=last_gain)
    if last_bias is not None:
        nn.init.constant_(last.bias, last_bias)
    layers.append(last)
    return nn.Sequential(*layers)


class KoopmanOperator(nn.Module):
    """``ẑ_{t+1} = K z_t + B a_t`` in row-vector form ``z Kᵀ + a Bᵀ`` (KORR ``_predict_koopman``)."""

    def __init__(self, lift_dim: int, action_dim: int, k_init: str = "normal") -> None:
        super().__init__()
        self.K = nn.Parameter(torch.empty(lift_dim, lift_dim))
        self.B = nn.Parameter(torch.empty(lift_dim, action_dim))
        nn.init.normal_(self.B, 0.0, 1.0)
        if k_init == "normal":  # faithful: ρ(K) ≈ √lift_dim (circular law), one-step use only
            nn.init.normal_(self.K, 0.0, 1.0)
        elif k_init == "orthogonal":  # Koopa-style U Vᵀ: every |λ| = 1
            nn.init.orthogonal_(self.K)
        elif k_init == "identity":
            with torch.no_grad():
                self.K.copy_(torch.eye(lift_dim))
        else:
            raise ValueError(f"unknown k_init {k_init!r}")

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z @ self.K.T + a @ self.B.T

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``k``-step latent rollout (extensions/diagnostics only — disallowed in faithful mode).
        ``actions``: (k, ..., action_dim); returns (k, ..., lift_dim) with ẑ_1..ẑ_k."""
        out, z = [], z0
        for a in actions:
            z = self(z, a)
            out.append(z)
        return torch.stack(out)


class ResidualActorCritic(nn.Module):
    """The common interface: ``mean``, ``value``, ``sample``/``evaluate`` and the auxiliary model loss."""

    config: ResidualConfig

    def __init__(self, config: ResidualConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.critic = _mlp(c.obs_dim + c.action_dim, c.hidden_dim, 1, c.num_layers,
                           c.critic_last_std, c.critic_last_bias)
        # Fixed exploration std (KORR: log σ = −1, requires_grad False).
        self.actor_logstd = nn.Parameter(torch.full((c.action_dim,), float(c.init_logstd)), requires_grad=c.learn_std)

    @property
    def device(self) -> torch.device:
        """Where the weights live (``.to(device)`` moves them)."""
        return module_device(self)

    # --- interface -------------------------------------------------------------------------------
    def mean(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aux_loss(self, obs: torch.Tensor, executed_action: torch.Tensor, next_obs: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """Model loss trained jointly with PPO (zero for ResiP)."""
        return obs.new_zeros(()), {}

    def actor_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("critic.")]

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    def value(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        return self.critic(torch.cat([obs, base_action], -1)).squeeze(-1)

    def dist(self, mu: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(mu, self.actor_logstd.exp().expand_as(mu))

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, base_action: torch.Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Rollout step: residual ``r`` (unscaled), its log-prob (summed over dims), value, mean and
        the executed normalized action ``a_b + scale·r``."""
        mu = self.mean(obs, base_action)
        if deterministic:
            r = mu
        else:
            # drawn on the generator's device (a CPU generator keeps its stream on every device: on the CPU
            # this is the same draw as before), then moved to the model's device
            gen_device = generator.device if generator is not None else mu.device
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=gen_device).to(mu.device)
            r = mu + self.actor_logstd.exp() * noise
        return {"residual": r, "logprob": self.dist(mu).log_prob(r).sum(-1), "value": self.value(obs, base_action),
                "mean": mu, "action": base_action + self.config.action_scale * r}

    def evaluate(self, obs: torch.Tensor, base_action: torch.Tensor, residual: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PPO update: (log π(r|x), entropy, V(x)) with gradients."""
        d = self.dist(self.mean(obs, base_action))
        return d.log_prob(residual).sum(-1), d.entropy().sum(-1), self.value(obs, base_action)

    def act(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        """Deterministic executed normalized action ``a_b + scale·μ`` (evaluation / deployment)."""
        return base_action + self.config.action_scale * self.mean(obs, base_action)

    def latent_sites(self) -> dict[str, Site]:
        return {}


class KORRResidual(ResidualActorCritic):
    """``μ = g(K φ(o) + B a_b)`` (``KPMResidualPolicyWOGoal``); goal variant ``μ = g([ẑ, φ(o_goal)])``."""

    def __init__(self, config: ResidualConfig) -> None:
        super().__init__(config)
        c = config
        self.lift = _mlp(c.obs_dim, c.hidden_dim, c.lift_dim, c.num_layers, c.action_head_std, None)
        self.koopman = KoopmanOperator(c.lift_dim, c.action_dim, c.k_init)
        head_in = 2 * c.lift_dim if c.kind == "korr_goal" else c.lift_dim
        self.head = _mlp(head_in, c.hidden_dim, c.action_dim, c.num_layers, c.action_head_std, None)
        if c.register_lqr_params:  # registered in the released actor, never used in its forward
            self._q_diag_log = nn.Parameter(torch.zeros(c.lift_dim))
            self._r_diag_log = nn.Parameter(torch.zeros(c.action_dim))
        # Goal observation for korr_goal (observation after the last reward of a successful rollout).
        self.register_buffer("goal_obs", torch.zeros(c.obs_dim))

    def set_goal(self, goal_obs: torch.Tensor) -> None:
        if goal_obs.shape != (self.config.obs_dim,):
            raise ValueError(f"goal_obs must have shape ({self.config.obs_dim},), got {tuple(goal_obs.shape)}")
        self.goal_obs.copy_(goal_obs)

    def predict(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.koopman(self.lift(obs), action)

    def mean(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        z_next = self.predict(obs, base_action)  # the latent the base action alone would produce
        if self.config.kind == "korr_goal":
            zg = self.lift(self.goal_obs).expand_as(z_next)
            h = torch.cat([z_next, zg], -1)
            if not self.config.is_res_bkp_kpm:
                h = h.detach()
            return self.head(h)
        return self.head(z_next if self.config.is_res_bkp_kpm else z_next.detach())

    def aux_loss(self, obs: torch.Tensor, executed_action: torch.Tensor, next_obs: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """``L_kpm = mean((K φ(o_t) + B a_t − φ(o_{t+1}))²)`` with the EXECUTED action; no stop-grad on the target."""
        z = self.lift(obs)
        z_next = self.lift(next_obs)
        loss = F.mse_loss(self.koopman(z, executed_action), z_next)
        var_next = z_next.detach().var(0).mean()
        return self.config.kpm_coef * loss, {
            "kpm_loss": float(loss.detach()),
            "var_phi": float(z.detach().var(0).mean()),
            "rel_kpm_error": float(loss.detach() / var_next.clamp_min(1e-12)),
        }

    def latent_sites(self) -> dict[str, Site]:
        return {"koopman.z": Site("lift", description="Koopman latent z_t = φ(o_t)"),
                "koopman.z_next": Site("koopman", description="predicted latent ẑ_{t+1} = K z_t + B a")}


class ResiPResidual(ResidualActorCritic):
    """Plain ResiP residual ``μ = MLP([o, a_b])`` (``models/residual.ResidualPolicy``)."""

    def __init__(self, config: ResidualConfig) -> None:
        super().__init__(config)
        c = config
        self.actor_mean_net = _mlp(c.obs_dim + c.action_dim, c.hidden_dim, c.action_dim, c.num_layers,
                                   c.action_head_std, 0.0)

    def mean(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        return self.actor_mean_net(torch.cat([obs, base_action], -1))


class DynamicsResidual(ResidualActorCritic):
    """Non-linear dynamics baseline (``ResidualPolicyWDynamics``): ``ô = MLP([o, a_b])``, ``μ = MLP(ô)``,
    loss ``MSE(MLP([o, a_exec]), o_{t+1})``."""

    def __init__(self, config: ResidualConfig) -> None:
        super().__init__(config)
        c = config
        self.dynamics = _mlp(c.obs_dim + c.action_dim, c.hidden_dim, c.obs_dim, c.num_layers, math.sqrt(2), 0.0)
        self.head = _mlp(c.obs_dim, c.hidden_dim, c.action_dim, c.num_layers, c.action_head_std, 0.0)

    def mean(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        return self.head(self.dynamics(torch.cat([obs, base_action], -1)))

    def aux_loss(self, obs: torch.Tensor, executed_action: torch.Tensor, next_obs: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.mse_loss(self.dynamics(torch.cat([obs, executed_action], -1)), next_obs)
        return self.config.kpm_coef * loss, {"dyn_loss": float(loss.detach())}


def make_residual(config: ResidualConfig) -> ResidualActorCritic:
    if config.kind in ("korr", "korr_goal"):
        return KORRResidual(config)
    if config.kind == "resip":
        return ResiPResidual(config)
    if config.kind == "dyn":
        return DynamicsResidual(config)
    raise ValueError(f"unknown residual kind {config.kind!r}")


__all__ = ["DynamicsResidual", "KORRResidual", "KoopmanOperator", "ResiPResidual", "ResidualActorCritic",
           "make_residual"]
