from __future__ import annotations

import pytest
from torch import nn

from latentstack.kernels import W4A8Linear
from latentstack.quant import LAYOUTS, quantize_model, select_linears
from latentstack.quant.apply import is_quantized


def test_vla_paper_layout_counts(vla_fp, capsys):
    chosen = select_linears(vla_fp, "paper", verbose=True)
    roles = vla_fp.linear_roles()
    cfg = vla_fp.config
    # backbone: 4 attention projections + 2 MLP linears per layer; expert: 2 MLP linears per layer
    assert len(chosen) == 6 * cfg.backbone_layers + 2 * cfg.expert_layers == 32
    assert {roles[n] for n in chosen} == {"backbone.attn", "backbone.mlp", "expert.mlp"}
    assert "layout paper: 32/54 linears quantized" in capsys.readouterr().out


def test_vla_all_linears_count(vla_fp):
    assert len(select_linears(vla_fp, "all_linears")) == 54 == len(vla_fp.linear_roles())


def test_quantize_model_replaces_only_the_layout(vla, capsys):
    res = quantize_model(vla, "paper", "w4a8", impl="torch")
    assert res.count == 32 and "32/54" in capsys.readouterr().out
    roles = res.roles
    for name, role in roles.items():
        m = vla.get_submodule(name)
        if role in ("backbone.attn", "backbone.mlp", "expert.mlp"):
            assert isinstance(m, W4A8Linear), name
        else:  # expert attention, vision, embeddings, head stay float
            assert type(m) is nn.Linear, name
    assert all(type(m) is nn.LayerNorm for n, m in vla.named_modules() if "ln" in n.split(".")[-1])
    assert not any(is_quantized(m) for n, m in vla.named_modules() if n.startswith("vision"))


class _Mock(nn.Module):
    """π0.5- / GR00T-shaped role structure with tiny linears."""

    def __init__(self, llm_layers: int, llm_per: int, dit_layers: int, dit_mlp: int, dit_attn: int = 4) -> None:
        super().__init__()
        self._roles: dict[str, str] = {}

        def add(name: str, role: str) -> None:
            self.add_module(name, nn.Linear(2, 2))
            self._roles[name] = role

        for i in range(llm_layers):
            for j in range(llm_per):
                add(f"llm{i}_{j}", "backbone.attn" if j < 4 else "backbone.mlp")
        for i in range(dit_layers):
            for j in range(dit_mlp):
                add(f"dit{i}_mlp{j}", "expert.mlp")
            for j in range(dit_attn):
                add(f"dit{i}_attn{j}", "expert.attn")
        for n, r in [("vision_proj", "vision"), ("state_enc", "embed"), ("action_in", "embed"), ("lm_head", "head")]:
            add(n, r)

    def linear_roles(self) -> dict[str, str]:
        return dict(self._roles)


@pytest.mark.parametrize("shape,paper,full", [((18, 7, 18, 3), 180, 252), ((12, 7, 16, 2), 116, 180)])
def test_mock_layout_counts(shape, paper, full):
    m = _Mock(*shape)
    assert len(select_linears(m, "paper")) == paper  # spec Table 1: π0.5 126 + 54, GR00T 84 + 32
    assert len(select_linears(m, "backbone+expert")) == full
    assert len(select_linears(m, "all_linears")) == full + 4


def test_unknown_layout_and_missing_roles():
    with pytest.raises(KeyError):
        select_linears(_Mock(1, 7, 1, 2), "nope")

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def linear_roles(self):
            return {"a": "backbone.mlp"}

    with pytest.raises(ValueError, match="misses"):
        select_linears(Bad(), "paper")
    assert set(LAYOUTS) >= {"paper", "all_linears"}
