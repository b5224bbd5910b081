"""Quantization layouts: which ``nn.Linear`` layers get replaced, selected by module role.

Roles come from the model's ``linear_roles()`` (module path → ``backbone.attn``, ``backbone.mlp``,
``expert.attn``, ``expert.mlp``, ``vision``, ``embed``, ``head``), never from name regexes.

- ``paper`` (QuantVLA's selective layout, spec §2): every backbone (LLM) linear + the action
  expert's MLP linears; expert attention q/k/v/o, vision, embeddings, norms and heads stay float.
- ``all_linears``: every ``nn.Linear`` (the ablation).
- ``backbone`` / ``expert_mlp`` / ``backbone+expert``: the paper's Table-1 ablation rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

__all__ = ["LAYOUTS", "Layout", "get_layout", "linear_roles", "select_linears"]


@dataclass(frozen=True)
class Layout:
    name: str
    roles: frozenset[str] | None  # None = every nn.Linear
    description: str = ""

    def accepts(self, role: str) -> bool:
        return self.roles is None or role in self.roles


LAYOUTS: dict[str, Layout] = {
    "paper": Layout("paper", frozenset({"backbone.attn", "backbone.mlp", "expert.mlp"}),
                    "backbone linears + action-expert MLP linears (QuantVLA)"),
    "all_linears": Layout("all_linears", None, "every nn.Linear"),
    "backbone": Layout("backbone", frozenset({"backbone.attn", "backbone.mlp"}), "backbone (LLM) linears only"),
    "expert_mlp": Layout("expert_mlp", frozenset({"expert.mlp"}), "action-expert MLP linears only"),
    "backbone+expert": Layout("backbone+expert",
                              frozenset({"backbone.attn", "backbone.mlp", "expert.attn", "expert.mlp"}),
                              "backbone + whole action expert (DuQuant LLM+DiT row)"),
}


def get_layout(layout: str | Layout) -> Layout:
    if isinstance(layout, Layout):
        return layout
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise KeyError(f"unknown layout {layout!r}; known: {sorted(LAYOUTS)}") from None


def linear_roles(model: nn.Module) -> dict[str, str]:
    """The model's ``linear_roles()``; a model without it gets role ``"linear"`` for every Linear."""
    fn = getattr(model, "linear_roles", None)
    if callable(fn):
        roles = dict(fn())
    else:
        roles = {n: "linear" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in roles]
    if missing:
        raise ValueError(f"linear_roles() misses {len(missing)} nn.Linear modules, e.g. {missing[:3]}")
    return roles


def select_linears(model: nn.Module, layout: str | Layout = "paper", *, verbose: bool = False,
                   roles: Mapping[str, str] | None = None) -> list[str]:
    """Module paths of the ``nn.Linear`` layers ``layout`` quantizes (in ``named_modules`` order).

    ``verbose`` prints ``layout <name>: <k>/<n> linears quantized`` and the per-role counts.
    """
    lay = get_layout(layout)
    roles = dict(roles) if roles is not None else linear_roles(model)
    chosen = [n for n, r in roles.items() if lay.accepts(r)]
    if verbose:
        print(layout_summary(roles, chosen, lay.name))
    return chosen


def layout_summary(roles: Mapping[str, str], chosen: list[str], name: str) -> str:
    per_role: dict[str, list[int]] = {}
    sel = set(chosen)
    for n, r in roles.items():
        c = per_role.setdefault(r, [0, 0])
        c[1] += 1
        c[0] += n in sel
    parts = ", ".join(f"{r} {k}/{t}" for r, (k, t) in sorted(per_role.items()))
    return f"layout {name}: {len(chosen)}/{len(roles)} linears quantized ({parts})"
