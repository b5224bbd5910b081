from __future__ import annotations

import contextlib

import pytest
import torch

from latentstack.latent import (
    Intervention,
    Site,
    Tap,
    annotate,
    assert_model_unchanged,
    module_snapshot,
    sites_from_prefix,
)

ALL = ["block0", "block1", "pair_first", "pair_sum", "head_in"]


def _run(model, x, steps=2):
    outs = []
    for t in range(steps):
        with annotate(step=t):
            outs.append(model(x))
    return torch.stack(outs)


def test_identity_intervention_is_exact_noop(toy, x):
    base = _run(toy, x)
    with Intervention(toy, {name: (lambda v, m: v) for name in ALL}):
        same = _run(toy, x)
    with Intervention(toy, {name: (lambda v, m: v.clone()) for name in ALL}):  # a copy is also exact
        copy = _run(toy, x)
    assert torch.equal(base, same) and torch.equal(base, copy)


@pytest.mark.parametrize("name", ALL)
def test_zeroing_changes_downstream_outputs(toy, x, name):
    base = _run(toy, x)
    with Intervention(toy, {name: lambda v, m: torch.zeros_like(v)}):
        edited = _run(toy, x)
    assert not torch.equal(base, edited)
    assert torch.equal(_run(toy, x), base)  # and stops at exit


def test_edit_sees_annotations_and_call_index(toy, x):
    metas = []

    def at_last_denoise_step(v, m):
        metas.append(m)
        return v * 0 if m["denoise_step"] == 1 else v

    with Intervention(toy, {"block1": at_last_denoise_step}):
        _run(toy, x)
    assert metas == [{"step": t, "denoise_step": k, "call_index": 2 * t + k} for t in range(2) for k in range(2)]


def test_site_keys_and_explicit_sites(toy, x):
    base = _run(toy, x)
    with Intervention(toy, {Site("blocks.1"): lambda v, m: v + 1}):
        a = _run(toy, x)
    with Intervention(toy, {"mid": lambda v, m: v + 1}, sites={"mid": Site("blocks.1")}):
        b = _run(toy, x)
    assert torch.equal(a, b) and not torch.equal(a, base)


@pytest.mark.parametrize(("bad", "err"), [(lambda v, m: v[..., :2], ValueError), (lambda v, m: v.double(), ValueError),
                                          (lambda v, m: v.tolist(), TypeError)])
def test_shape_or_dtype_mismatch_raises(toy, x, bad, err):
    snap = module_snapshot(toy)
    with pytest.raises(err, match="block0"), Intervention(toy, {"block0": bad}):
        toy(x)
    assert_model_unchanged(toy, snap)


def test_unknown_site_is_a_helpful_key_error(toy):
    with pytest.raises(KeyError, match="declared sites.*block0"):
        Intervention(toy, {"blok0": lambda v, m: v})
    assert all(not m._forward_hooks for m in toy.modules())


@pytest.mark.parametrize("raise_inside", [False, True])
def test_model_unchanged_after_intervention(toy, x, raise_inside):
    snap = module_snapshot(toy)
    expect = pytest.raises(RuntimeError) if raise_inside else contextlib.nullcontext()
    with expect, Intervention(toy, {n: (lambda v, m: v * 3) for n in ALL}):
        toy(x)
        if raise_inside:
            raise RuntimeError("boom")
    assert_model_unchanged(toy, snap)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in toy.modules())


@pytest.mark.parametrize("name", ["block0", "pair_first", "head_in"])
def test_composition_follows_registration_order(toy, x, name):
    """Documented: hooks run in registration order, so the context entered first acts first."""
    double = {name: lambda v, m: v * 2}
    with Tap(toy, [name]) as clean:
        toy(x)
    with Intervention(toy, double), Tap(toy, [name]) as inner:  # Tap registered after: sees the edit
        toy(x)
    with Tap(toy, [name]) as outer, Intervention(toy, double):  # Tap registered before: sees the original
        toy(x)
    first = clean.records[name][0].value  # first call: nothing upstream was edited yet
    assert torch.equal(inner.records[name][0].value, first * 2)
    assert torch.equal(outer.records[name][0].value, first)


def test_sites_from_prefix(toy):
    assert list(sites_from_prefix(toy, "blocks.*")) == ["blocks.0", "blocks.1", "blocks.2"]
    assert list(sites_from_prefix(toy, "blocks.*.fc2")) == ["blocks.0.fc2", "blocks.1.fc2", "blocks.2.fc2"]
    assert sites_from_prefix(toy, "head", kind="input") == {"head": Site("head", kind="input")}


@pytest.mark.parametrize("name", ALL)
def test_wrap_mode_equals_hook_mode(toy, x, name):
    """Same edits, same outputs, same meta; the module is restored exactly after a wrap-mode block."""
    snap = module_snapshot(toy)
    seen = {"hook": [], "wrap": []}
    outs = {}
    for mode in ("hook", "wrap"):
        def edit(v, m, _mode=mode):
            seen[_mode].append((m.get("step"), m["call_index"], tuple(v.shape)))
            return v * 0.5 + 1.0
        with Intervention(toy, {name: edit}, mode=mode):
            outs[mode] = _run(toy, x)
    assert torch.equal(outs["hook"], outs["wrap"]) and seen["hook"] == seen["wrap"] and seen["wrap"]
    assert_model_unchanged(toy, snap)
    assert all("forward" not in m.__dict__ for m in toy.modules())
    with Intervention(toy, {name: lambda v, m: v}, mode="wrap"):
        assert torch.equal(_run(toy, x), _run_plain(toy, x))
    with pytest.raises(ValueError, match="mode"):
        Intervention(toy, {name: lambda v, m: v}, mode="patch")


def _run_plain(model, x):
    # what the unedited model computes (wrap-mode identity must equal it bit for bit)
    with Intervention(model, {}):
        return _run(model, x)


def test_wrap_mode_refuses_double_wrap_and_cleans_up_on_error(toy, x):
    a = Intervention(toy, {"block0": lambda v, m: v}, mode="wrap")
    b = Intervention(toy, {"block0": lambda v, m: v}, mode="wrap")
    with a, pytest.raises(RuntimeError, match="instance-level forward"), b:
        pass
    assert all("forward" not in m.__dict__ for m in toy.modules())
