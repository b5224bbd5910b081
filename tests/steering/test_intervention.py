"""Gate / controls / artifacts (coast.md §6-7, §11 items 14-19), on a toy model and on the shipped VLA."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from latentstack.kernels import conceptor_gate
from latentstack.latent import Intervention, Tap, annotate, assert_model_unchanged, module_snapshot
from latentstack.steering import conceptors as cz
from latentstack.steering.fit import fit_contrastive
from latentstack.steering.intervention import (
    SteeringArtifact,
    conceptor_edit,
    gate_diagnostics,
    linear_edit,
    make_operator,
    steer,
    steer_linear,
)

from .conftest import run_vla

D = 8


class ToyExpert(nn.Module):
    """Three layers over (B, S, d) tokens, run for ``n_steps`` annotated denoise steps."""

    def __init__(self, n_steps: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(D, D) for _ in range(3))
        self.n_steps = n_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(self.n_steps):
            with annotate(denoise_step=k):
                h = x
                for layer in self.layers:
                    h = layer(h)
                x = x + 0.1 * h
        return x


def rand_conceptor(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return cz.conceptor(cz.correlation(torch.randn(3 * d, d, generator=g, dtype=torch.float64)), 1.0).float()


def toy_fit():
    g = torch.Generator().manual_seed(1)
    s = [torch.randn(4, 3, 5, D, generator=g) for _ in range(3)]
    f = [torch.randn(4, 3, 5, D, generator=g) * torch.linspace(0.1, 2, D) for _ in range(3)]
    return fit_contrastive(s, f, [1.0], "paper", "global", site="layers.1")[1.0]


# ---------------------------------------------------------------- toy model
def test_beta_zero_bit_identical_and_model_unchanged():
    m, x = ToyExpert(), torch.randn(2, 5, D)
    ref = m(x)
    snap = module_snapshot(m)
    with steer(m, "layers.1", rand_conceptor(D, 0), 0.0):
        out = m(x)
    assert torch.equal(out, ref)
    with steer(m, "layers.1", rand_conceptor(D, 0), 0.7):
        steered = m(x)
    assert not torch.allclose(steered, ref)
    assert torch.equal(m(x), ref)  # hook removal restores exactly
    assert_model_unchanged(m, snap)


def test_edit_returns_input_object_at_beta_zero():
    v = torch.randn(3, D)
    assert conceptor_edit(rand_conceptor(D, 1), 0.0)(v, {}) is v
    assert linear_edit(torch.ones(D), 0.0)(v, {}) is v


def test_identity_and_shrinkage_and_reference_form():
    h = torch.randn(4, 5, D, dtype=torch.float64)
    for beta in (0.1, 0.5, 1.0):
        out = conceptor_edit(torch.eye(D, dtype=torch.float64), beta)(h, {})
        assert float((out - h).norm() / h.norm()) <= 1e-6
        assert torch.allclose(conceptor_edit(torch.zeros(D, D, dtype=torch.float64), beta)(h, {}), (1 - beta) * h,
                              atol=1e-12)
        C = rand_conceptor(D, 2).double()
        assert torch.allclose(conceptor_edit(C, beta)(h, {}), h + beta * (h @ C - h), atol=1e-12)
    with pytest.raises(ValueError):
        conceptor_edit(torch.eye(D), 1.5)


def test_only_chosen_layer_changes_in_toy():
    m, x = ToyExpert(n_steps=1), torch.randn(2, 5, D)
    with Tap(m, ["layers.0", "layers.1"]) as base:
        m(x)
    C = rand_conceptor(D, 3)
    with Tap(m, ["layers.0", "layers.1"]) as tap, steer(m, "layers.1", C, 0.5, mode="hook"):
        m(x)
    # hook mode: the outer Tap records the pre-edit values (layer 0 and layer 1's own computation unchanged)
    assert torch.equal(tap.stack("layers.0"), base.stack("layers.0"))
    assert torch.equal(tap.stack("layers.1"), base.stack("layers.1"))
    with Tap(m, ["layers.0", "layers.1"]) as tap_w, steer(m, "layers.1", C, 0.5):  # default: wrap mode
        m(x)
    # wrap mode: the edit happens inside forward, so the Tap on layer 1 records the steered value
    assert torch.equal(tap_w.stack("layers.0"), base.stack("layers.0"))
    assert torch.allclose(tap_w.stack("layers.1"), conceptor_gate(base.stack("layers.1"), C, 0.5), atol=1e-6)


def test_per_step_selects_M_t_and_checks_range():
    m, x = ToyExpert(n_steps=3), torch.randn(2, 5, D)
    Cs = torch.stack([rand_conceptor(D, 10 + t) for t in range(3)])
    seen = []

    def spy(v, meta):
        seen.append(meta["denoise_step"])
        return v

    with Intervention(m, {"layers.1": spy}), steer(m, "layers.1", Cs, 0.4):
        got = m(x)
    assert seen == [0, 1, 2]
    # equivalent manual computation with M_t per step
    edits = {"layers.1": lambda v, meta: v @ ((0.6 * torch.eye(D)) + 0.4 * Cs[meta["denoise_step"]]).T}
    with Intervention(m, edits):
        want = m(x)
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(IndexError), steer(m, "layers.1", Cs[:2], 0.4):
        m(x)
    with pytest.raises(KeyError):
        conceptor_edit(Cs, 0.4)(torch.randn(2, D), {})
    with pytest.raises(ValueError), steer(m, "layers.1", rand_conceptor(D + 1, 0), 0.4):
        m(x)


def test_linear_edit():
    m, x = ToyExpert(n_steps=1), torch.randn(2, 5, D)
    v = torch.zeros(D)
    v[2] = 1.0
    with steer_linear(m, "layers.1", v, 0.5), Tap(m, ["layers.1"]) as tap:
        m(x)
    with Tap(m, ["layers.1"]) as base:
        m(x)
    seen = tap.stack("layers.1") - base.stack("layers.1")
    assert torch.allclose(seen, 0.5 * v.expand_as(seen), atol=1e-6)


def test_controls():
    fit = toy_fit()
    assert torch.equal(make_operator("shrinkage", fit), torch.zeros(D, D))
    assert torch.equal(make_operator("conceptor", fit), fit.C)
    assert torch.equal(make_operator("positive_only", fit), fit.C_success)
    r1, r2 = make_operator("random_matched", fit, seed=1), make_operator("random_matched", fit, seed=1)
    assert torch.equal(r1, r2) and not torch.allclose(r1, make_operator("random_matched", fit, seed=2))
    assert torch.allclose(torch.linalg.eigvalsh(r1.double()), torch.linalg.eigvalsh(fit.C.double()), atol=1e-4)
    per = torch.stack([fit.C, fit.C])
    fit.C = per
    rp = make_operator("random_matched", fit, seed=3)
    assert rp.shape == per.shape and not torch.allclose(rp[0], rp[1])


def test_gate_diagnostics_shrinkage_dominance():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(200, D, generator=g, dtype=torch.float64)
    h[:, 0] = 0.0  # h has (almost) no overlap with range(C) = e0
    C = torch.zeros(D, D, dtype=torch.float64)
    C[0, 0] = 0.9
    d = gate_diagnostics(h, C, 0.1)
    assert d["rel_change"] == pytest.approx(0.1, abs=1e-9) and d["cos"] == pytest.approx(-1.0, abs=1e-9)
    assert abs(d["hCh"]) < 1e-12
    d2 = gate_diagnostics(h, torch.eye(D, dtype=torch.float64), 0.3)
    assert d2["rel_change"] == pytest.approx(0.0, abs=1e-12) and d2["hCh"] == pytest.approx(1.0)
    dp = gate_diagnostics(torch.stack([h, h]), torch.stack([C, torch.eye(D, dtype=torch.float64)]), 0.1)
    assert dp["rel_change"] == pytest.approx(0.05, abs=1e-9)


def test_artifact_roundtrip_and_d_mismatch(tmp_path):
    fit = toy_fit()
    art = SteeringArtifact.from_fit(fit, beta=0.3, layer=1, seeds={"fit": [0, 1, 2]})
    st, js = art.save(tmp_path / "c" / "layer1")
    assert st.suffix == ".safetensors" and js.name == "config.json" and st.parent == tmp_path / "c" / "layer1"
    doc = json.loads(js.read_text())
    card = doc["config"]
    assert doc["type"] == "conceptor" and doc["format_version"] == 2 and doc["source"] is None
    assert card["preset"]["name"] == "paper" and card["alpha"] == 1.0 and card["beta"] == 0.3
    assert card["layer"] == 1 and card["seeds"] == {"fit": [0, 1, 2]} and card["d"] == D
    assert (st.parent / "CARD.md").read_text().startswith("# COAST conceptor `layer1`")
    back = SteeringArtifact.load(tmp_path / "c" / "layer1", expected_d=D)
    assert torch.equal(back.C, fit.C) and torch.equal(back.direction, fit.direction)
    assert back.C.dtype == torch.float32
    with pytest.raises(ValueError, match="d = 8"):
        SteeringArtifact.load(st, expected_d=128)
    doc["config"]["d"] = 16  # the card no longer matches the config the tensors were saved with
    js.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="d: saved 8 vs config.json 16"):
        SteeringArtifact.load(st)
    m, x = ToyExpert(), torch.randn(2, 5, D)
    ref = m(x)
    with art.intervention(m, beta=0.0):
        assert torch.equal(m(x), ref)
    with art.intervention(m, condition="shrinkage", beta=1.0), Tap(m, ["layers.2"]) as tap:
        m(x)
    # layer 2 sees a zero input at β = 1 shrinkage: its output equals its bias
    assert torch.allclose(tap.stack("layers.2")[0], m.layers[2].bias.expand(2, 5, D))


# ---------------------------------------------------------------- the shipped VLA
SITE = "expert.layer2"


def test_vla_beta_zero_bit_identical(vla, vla_batch):
    ref = run_vla(vla, vla_batch)
    snap = module_snapshot(vla)
    C = rand_conceptor(128, 0)
    with steer(vla, SITE, C, 0.0):
        out = run_vla(vla, vla_batch)
    assert torch.equal(out, ref)
    with steer(vla, SITE, torch.stack([C] * 10), 0.0):
        assert torch.equal(run_vla(vla, vla_batch), ref)
    with steer(vla, SITE, C, 0.5):
        steered = run_vla(vla, vla_batch)
    assert not torch.equal(steered, ref)
    assert torch.equal(run_vla(vla, vla_batch), ref)
    assert_model_unchanged(vla, snap)


def test_vla_identity_conceptor_and_scope(vla, vla_batch):
    ref = run_vla(vla, vla_batch)
    with steer(vla, SITE, torch.eye(128), 0.7):
        out = run_vla(vla, vla_batch)
    assert float((out - ref).norm() / ref.norm()) <= 1e-6
    names = ["backbone.out", "expert.layer0", "expert.layer1", "expert.layer2", "expert.layer3"]
    with Tap(vla, names) as base:
        run_vla(vla, vla_batch)
    with Tap(vla, names) as tap, steer(vla, SITE, torch.zeros(128, 128), 0.5):
        run_vla(vla, vla_batch)
    assert len(tap.records[SITE]) == 10  # one call per denoise step
    assert [r.meta["denoise_step"] for r in tap.records[SITE]] == list(range(10))
    # prefix (backbone) untouched; at denoise step 0 the layers before the site are untouched
    assert torch.equal(tap.stack("backbone.out"), base.stack("backbone.out"))
    for name in ("expert.layer0", "expert.layer1"):
        assert torch.equal(tap.records[name][0].value, base.records[name][0].value)
    # wrap mode (default): the Tap on the steered site records the gated value, here (1 − β) h
    assert torch.allclose(tap.records[SITE][0].value, 0.5 * base.records[SITE][0].value, atol=1e-6)
    assert not torch.equal(tap.records["expert.layer3"][0].value, base.records["expert.layer3"][0].value)


def test_vla_per_step_and_gate_on_taps(vla, vla_batch):
    with Tap(vla, [SITE]) as base:
        run_vla(vla, vla_batch)
    H = base.stack(SITE)  # (10, B, 16, 128)
    assert H.shape == (10, 2, 16, 128)
    Cs = torch.stack([rand_conceptor(128, t) for t in range(10)])
    # a Tap entered inside the steering records the edited value: check M_t per step exactly
    with steer(vla, SITE, Cs, 0.3), Tap(vla, [SITE]) as tap:
        run_vla(vla, vla_batch)
    first = tap.records[SITE][0].value
    want = H[0] @ (0.7 * torch.eye(128) + 0.3 * Cs[0]).T
    assert torch.allclose(first, want, atol=1e-5)
    with pytest.raises(IndexError), steer(vla, SITE, Cs[:4], 0.3):
        run_vla(vla, vla_batch)
    diag = gate_diagnostics(H, Cs.double(), 0.3)
    assert 0 < diag["rel_change"] < 0.3 and -1 <= diag["cos"] <= 1
