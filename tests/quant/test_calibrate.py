from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from latentstack.kernels import W8A8Linear
from latentstack.latent import Site, Tap
from latentstack.policies.vla.modeling_vla import Attention
from latentstack.quant import (
    QNormError,
    apply_atm_ohb,
    calibrate_atm_ohb,
    collect_stats,
    compute_alpha,
    compute_beta,
    drift,
    fold_atm_ohb,
    logit_std_per_head,
    policy_runner,
    quantize_model,
)
from latentstack.quant.calibrate import attention_layers

NH, D = 4, 32


class Toy(nn.Module):
    """DiT-like stack: ``expert.layers.i.attn`` attention with residual adds, query tokens attend
    over themselves (random inputs seeded by ``run``)."""

    def __init__(self, n_layers: int = 2, attn_cls: type[nn.Module] = Attention) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.expert = nn.Module()
        self.expert.layers = nn.ModuleList()
        for _ in range(n_layers):
            layer = nn.Module()
            layer.attn = attn_cls(D, NH)
            layer.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
            self.expert.layers.append(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.expert.layers:
            x = x + layer.attn(x)
            x = x + layer.mlp(x)
        return x


def run_toy(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        model(torch.randn(4, 6, D, generator=g))


def scaled_student(teacher: Toy, k: torch.Tensor, rms_scale: float = 1.0) -> Toy:
    """Student whose head-h logits are teacher's / k[h] in layer 0 and whose o-proj output is scaled."""
    s = copy.deepcopy(teacher)
    a = s.expert.layers[0].attn
    with torch.no_grad():
        r = (1 / k).repeat_interleave(D // NH)
        a.q_proj.weight.mul_(r[:, None])
        a.q_proj.bias.mul_(r)
        a.o_proj.weight.mul_(rms_scale)
        a.o_proj.bias.mul_(rms_scale)
    return s


def test_logit_std_excludes_masked_entries():
    q, k = torch.randn(2, NH, 5, 8), torch.randn(2, NH, 7, 8)
    keep = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    keep[..., 5:] = False
    ref = (q @ k[:, :, :5].transpose(-1, -2) / math.sqrt(8)).flatten(2).std(-1, unbiased=False)
    assert torch.allclose(logit_std_per_head(q, k, keep), ref, atol=1e-5)
    additive = torch.zeros(2, 1, 1, 7)
    additive[..., 5:] = -1e9
    assert torch.allclose(logit_std_per_head(q, k, additive), ref, atol=1e-5)


class MaskedAttention(Attention):
    """Calls ``sdpa`` with a key-padding mask, positionally in layer 0 and by keyword elsewhere."""

    positional = True

    def forward(self, x, attn_mask=None, prefix_kv=None):
        q = self._split(self.q_proj(x))
        k, v = self.project_kv(x)
        keep = torch.ones(x.shape[0], 1, 1, x.shape[1], dtype=torch.bool)
        keep[..., -2:] = False  # the last two tokens are padding
        out = self.sdpa(q, k, v, keep) if self.positional else self.sdpa(q, k, v, attn_mask=keep)
        b, _, n, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


def _stats_with_raw_hooks(model: nn.Module, run) -> tuple[dict, dict]:
    """Reference: the statistics as raw forward hooks computed them before the latent-API port."""
    sums, rsum, calls, handles = {}, {}, {}, []
    for name, attn in attention_layers(model).items():
        def pre(_m, args, kwargs, name=name):
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            s = logit_std_per_head(args[0].detach(), args[1].detach(), mask).mean(0)
            sums[name] = sums.get(name, torch.zeros_like(s)) + s
            calls[name] = calls.get(name, 0) + 1

        def post(_m, _a, out, name=name):
            rsum[name] = rsum.get(name, 0.0) + float(torch.sqrt(out.detach().float().pow(2).mean() + 1e-12))
        handles += [attn.sdpa.register_forward_pre_hook(pre, with_kwargs=True), attn.o_proj.register_forward_hook(post)]
    with torch.no_grad():
        run(model)
    for h in handles:
        h.remove()
    return {n: s / calls[n] for n, s in sums.items()}, {n: r / calls[n] for n, r in rsum.items()}


def test_tap_statistics_equal_raw_hook_statistics_exactly():
    """The Tap-based collection reproduces the hook-based one bit for bit (masks positional and keyword)."""
    t = Toy(attn_cls=MaskedAttention)
    t.expert.layers[1].attn.positional = False
    sigma, rms = _stats_with_raw_hooks(t, run_toy)
    with torch.no_grad(), collect_stats(t) as st:
        run_toy(t)
    assert st.calls == {n: 3 for n in sigma} and sigma.keys() == st.sigma.keys() == st.rms.keys()
    assert all(torch.equal(st.sigma[n], sigma[n]) and st.rms[n] == rms[n] for n in sigma)
    # the mask is read: ignoring it changes the statistic
    unmasked = Toy()
    with torch.no_grad(), collect_stats(unmasked) as st_u:
        run_toy(unmasked)
    assert not torch.allclose(st_u.sigma["expert.layers.1.attn"], st.sigma["expert.layers.1.attn"])


def test_runtime_atm_ohb_equals_raw_hooks_exactly():
    """The Intervention-based runtime α/β computes exactly what the former raw hooks did, and leaves no trace."""
    from latentstack.latent import assert_model_unchanged, module_snapshot
    from latentstack.quant.calibrate import ATMOHBCalibration

    t = Toy()
    cal = ATMOHBCalibration({"expert.layers.0.attn": torch.tensor([0.8, 1.2, 1.0, 1.4])},
                            {"expert.layers.0.attn": 1.3, "expert.layers.1.attn": 0.8}, "code")
    x = torch.randn(3, 6, D, generator=torch.Generator().manual_seed(5))
    handles = []
    for name, attn in attention_layers(t).items():
        if name in cal.alpha:
            a = cal.alpha[name]
            handles.append(attn.sdpa.register_forward_pre_hook(
                lambda _m, args, _a=a: (args[0] * _a.to(args[0])[None, :, None, None], *args[1:])))
        if name in cal.beta:
            handles.append(attn.o_proj.register_forward_hook(lambda _m, _i, out, _b=cal.beta[name]: out * _b))
    with torch.no_grad():
        ref = t(x)
    for h in handles:
        h.remove()
    snap = module_snapshot(t)
    with torch.no_grad(), apply_atm_ohb(t, cal):
        y = t(x)
    assert torch.equal(y, ref)
    assert_model_unchanged(t, snap)
    with torch.no_grad():
        assert not torch.allclose(t(x), ref, atol=1e-3)  # α/β matter here


def test_identical_student_gives_neutral_alpha_beta():
    t = Toy()
    cal = calibrate_atm_ohb(t, copy.deepcopy(t), run_toy)
    assert all(torch.equal(a, torch.ones(NH)) for a in cal.alpha.values())
    assert all(b == 1.0 for b in cal.beta.values())


def test_alpha_recovers_temperature_and_saturates():
    t = Toy()
    k = torch.tensor([0.8, 1.25, 1.0, 2.0])  # last is outside [0.7, 1.4]
    s = scaled_student(t, k)
    cal = calibrate_atm_ohb(t, s, run_toy, preset="code")
    a0 = cal.alpha["expert.layers.0.attn"]
    assert torch.allclose(a0[:3], k[:3], atol=1e-4) and a0[3] == pytest.approx(1.4)
    with collect_stats(t) as st_t:
        run_toy(t)
    with apply_atm_ohb(s, cal, ohb=False), collect_stats(s) as st_s:
        run_toy(s)
    l0 = "expert.layers.0.attn"
    rel = (st_s.sigma[l0][:3] / st_t.sigma[l0][:3] - 1).abs()
    assert (rel < 1e-3).all()
    paper = calibrate_atm_ohb(t, s, run_toy, preset="paper").alpha[l0]
    assert paper[3] == pytest.approx(math.exp(0.30), rel=1e-5)


def test_neutral_bands_and_clamps():
    st = torch.tensor([1.0, 1.0, 1.0, 1.0])
    sq = torch.tensor([1 / 1.015, 1 / 1.025, 1 / 0.5, 1 / 1.02])
    code = compute_alpha(st, sq, "code")
    assert code[0] == 1.0 and code[1] == pytest.approx(1.025, abs=1e-5) and code[2] == pytest.approx(0.7)
    paper = compute_alpha(st, sq, "paper")  # |log α| < 0.03 → 1
    assert paper[0] == 1.0 and paper[1] == 1.0 and paper[2] == pytest.approx(math.exp(-0.3), rel=1e-5)
    assert compute_beta(torch.tensor(2.0), torch.tensor(2.0)) == 1.0
    assert float(compute_beta(torch.tensor(1.0), torch.tensor(1.0 / 1.2))) == pytest.approx(1.2, rel=1e-5)
    assert float(compute_beta(torch.tensor(1.0), torch.tensor(0.1))) == pytest.approx(math.exp(0.3), rel=1e-5)
    assert float(compute_beta(torch.tensor(1.0), torch.tensor(1 / 1.02))) == 1.0
    assert float(compute_beta(torch.tensor(1.0), torch.tensor(0.1), "paper_main")) == pytest.approx(math.exp(0.4),
                                                                                                 rel=1e-5)


def test_query_scale_only_affects_its_head():
    a = Attention(D, NH)
    x = torch.randn(2, 5, D)
    outs = {}

    def grab(m, i, o):
        outs["o"] = o

    a.sdpa.register_forward_hook(grab)
    a(x)
    base = outs["o"].clone()
    from latentstack.quant.calibrate import ATMOHBCalibration

    root = nn.Module()
    root.expert = nn.Module()
    root.expert.attn = a
    cal = ATMOHBCalibration({"expert.attn": torch.tensor([1.0, 1.3, 1.0, 1.0])}, {}, "code")
    with apply_atm_ohb(root, cal):
        a(x)
    changed = (outs["o"] - base).abs().flatten(2).amax(-1).amax(0)
    assert changed[1] > 1e-4 and torch.all(changed[[0, 2, 3]] == 0)


def test_beta_recovers_rms_and_fold_equals_runtime():
    t = Toy()
    only_rms = calibrate_atm_ohb(t, scaled_student(t, torch.ones(NH), rms_scale=0.8), run_toy)
    assert only_rms.beta["expert.layers.0.attn"] == pytest.approx(1.25, rel=1e-4)
    assert only_rms.beta["expert.layers.1.attn"] == 1.0
    s = scaled_student(t, torch.tensor([0.8, 1.25, 1.0, 1.1]), rms_scale=0.8)
    cal = calibrate_atm_ohb(t, s, run_toy)
    x = torch.randn(3, 6, D)
    with torch.no_grad(), apply_atm_ohb(s, cal):
        y_hook = s(x)
    folded = copy.deepcopy(s)
    fold_atm_ohb(folded, cal)
    with torch.no_grad():
        y_fold = folded(x)
    assert torch.allclose(y_hook, y_fold, atol=1e-5, rtol=1e-5)


def test_fold_into_int_layers_is_exact():
    """Folding α/β into int layers changes only their per-output-channel scales (codes untouched), and on
    identical inputs each folded layer equals the runtime scaling up to the epilogue's float rounding.

    Not compared end to end: runtime and folded scaling round differently by an ulp, which can flip an
    activation code in a later int layer (a CPU-dependent jump of one quantization step)."""
    t = Toy()
    s = copy.deepcopy(t)
    for layer in s.expert.layers:
        layer.attn.q_proj = W8A8Linear.from_float(layer.attn.q_proj, impl="torch")
        layer.attn.o_proj = W8A8Linear.from_float(layer.attn.o_proj, impl="torch")
    from latentstack.quant.calibrate import ATMOHBCalibration

    cal = ATMOHBCalibration({"expert.layers.0.attn": torch.tensor([0.8, 1.2, 1.0, 1.4])},
                            {"expert.layers.0.attn": 1.3, "expert.layers.1.attn": 0.8}, "code")
    x = torch.randn(3, 6, D)
    paths = [f"expert.layers.{i}.attn.{p}" for i in range(2) for p in ("q_proj", "o_proj")]
    with torch.no_grad(), apply_atm_ohb(s, cal), Tap(s, {p: Site(p, kind="input") for p in paths}) as tap:
        s(x)  # the inputs each layer sees under runtime α/β
    runtime = copy.deepcopy(s)
    fold_atm_ohb(s, cal)
    for p in paths:
        attn, proj = p.rsplit(".", 1)
        if proj == "q_proj":
            rows = cal.alpha.get(attn, torch.ones(NH)).repeat_interleave(D // NH)
        else:
            rows = torch.full((D,), cal.beta.get(attn, 1.0))
        folded, ref = s.get_submodule(p), runtime.get_submodule(p)
        assert torch.equal(folded.weight_codes(), ref.weight_codes())
        assert torch.equal(folded.weight_scale, ref.weight_scale * rows)
        xin = tap.records[p][0].value
        with torch.no_grad():
            y_fold, y_ref = folded(xin), ref(xin) * rows  # the hooks scale q (per head) and z after o-proj
        # same int codes on both sides; only (acc·s_x·(s_w·r) + b·r) vs (acc·s_x·s_w + b)·r rounding differs
        torch.testing.assert_close(y_fold, y_ref, rtol=1e-6, atol=1e-6 * float(y_ref.abs().max()))


class QNormAttention(Attention):
    """Attention with a per-head query LayerNorm between q_proj and the logits (GR00T-style)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__(d_model, num_heads)
        self.q_norm = nn.LayerNorm(d_model // num_heads)

    def _split(self, x):
        return super()._split(x)


def test_fold_refused_through_q_norm():
    t = Toy(attn_cls=QNormAttention)
    from latentstack.quant.calibrate import ATMOHBCalibration

    cal = ATMOHBCalibration({"expert.layers.0.attn": torch.tensor([0.8, 1.2, 1.0, 1.4])},
                            {"expert.layers.0.attn": 1.3}, "code")
    before = {k: v.clone() for k, v in t.state_dict().items()}
    with pytest.raises(QNormError):
        fold_atm_ohb(t, cal)
    assert all(torch.equal(before[k], v) for k, v in t.state_dict().items())  # nothing half-folded
    fold_atm_ohb(t, cal, atm=False)  # β alone folds fine
    with apply_atm_ohb(t, cal, ohb=False):  # runtime α still works
        t(torch.randn(1, 3, D))


def test_vla_calibration_reduces_logit_drift(vla_fp, obs_batch):
    """Spec test 10 analogue on the real VLA (all-linears W4A8, synthetic observations)."""
    q = copy.deepcopy(vla_fp)
    quantize_model(q, "all_linears", "w4a8", impl="torch", verbose=False)
    run = policy_runner([obs_batch], seed=3)
    cal = calibrate_atm_ohb(vla_fp, q, run)
    assert set(cal.alpha) == {f"expert.layers.{i}.attn" for i in range(4)}
    assert all(a.shape == (4,) and ((a >= 0.7) & (a <= 1.4)).all() for a in cal.alpha.values())
    before = drift(cal.teacher, cal.student)
    with torch.no_grad(), apply_atm_ohb(q, cal), collect_stats(q) as st:
        run(q)
    after = drift(cal.teacher, st)
    mean = lambda d, key: sum(v[key] for v in d.values()) / len(d)
    assert mean(after, "logit_std") <= mean(before, "logit_std") + 1e-6
    for n in before:
        assert after[n]["logit_std"] <= before[n]["logit_std"] + 0.03
        assert after[n]["rms"] <= before[n]["rms"] + 0.03
