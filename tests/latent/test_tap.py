from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from latentstack.latent import Site, Tap, annotate, assert_model_unchanged, load_tap_shards, module_snapshot


def _hook_all_calls(module, kind="output"):
    """Reference: a hand-written hook keeping clones of what the module produced / received."""
    seen = []
    if kind == "input":
        h = module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    else:
        h = module.register_forward_hook(lambda m, a, o: seen.append((a[0].detach().clone(), o)))
    return seen, h


def test_tap_value_is_exactly_the_layer_output(toy, x):
    seen, h = _hook_all_calls(toy.blocks[1])
    refs = []
    h2 = toy.blocks[1].register_forward_hook(lambda m, a, o: refs.append(o.detach().clone()))
    with Tap(toy, ["block1"]) as tap:
        toy(x)
    h.remove(), h2.remove()
    assert len(tap.records["block1"]) == len(refs) == toy.n_denoise
    for rec, ref, (inp, _) in zip(tap.records["block1"], refs, seen):
        assert torch.equal(rec.value, ref)
        assert torch.equal(rec.value, toy.blocks[1](inp))  # recomputation from the recorded input
        assert not torch.equal(rec.value, ref + 0.25)  # the model's later in-place add_ did not leak in
    assert tap.stack("block1").shape == (toy.n_denoise, 3, 8)


def test_tap_records_annotations_per_call(toy, x):
    with Tap(toy) as tap:
        for t in range(3):
            with annotate(step=t):
                toy(x)
    expected = [{"step": t, "denoise_step": k, "call_index": 2 * t + k} for t in range(3) for k in range(2)]
    for name in toy.latent_sites():
        assert tap.meta(name) == expected
        assert [r.call_index for r in tap.records[name]] == list(range(6))


def test_when_filter_records_matching_calls_only(toy, x):
    with Tap(toy, ["block0"], when=lambda m: m["denoise_step"] == 1) as tap:
        for t in range(2):
            with annotate(step=t):
                toy(x)
    assert tap.meta("block0") == [{"step": 0, "denoise_step": 1, "call_index": 1},
                                  {"step": 1, "denoise_step": 1, "call_index": 3}]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shard_mode_round_trips_memory_mode(toy, x, tmp_path, dtype):
    toy, x = toy.to(dtype), x.to(dtype)
    with Tap(toy) as mem, Tap(toy, to=tmp_path, shard_size=4) as disk:
        for t in range(3):
            with annotate(step=np.int64(t), task="reach"):  # numpy scalars come back as ints
                toy(x)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 * len(toy.latent_sites())  # 4 + 2 records per site
    loaded = load_tap_shards(tmp_path)
    assert set(loaded) == set(mem.records)
    for name, recs in mem.records.items():
        assert len(loaded[name]) == len(recs) == 6
        for a, b in zip(recs, loaded[name]):
            assert (a.site, a.call_index, a.meta) == (b.site, b.call_index, b.meta)
            assert a.value.dtype == b.value.dtype
            assert torch.equal(a.value, b.value)
        assert torch.equal(disk.stack(name), mem.stack(name)) and disk.meta(name) == mem.meta(name)


def test_shard_mode_refuses_a_used_directory(toy, x, tmp_path):
    with Tap(toy, ["block0"], to=tmp_path):
        toy(x)
    with pytest.raises(FileExistsError):
        Tap(toy, ["block0"], to=tmp_path).__enter__()
    assert not toy.blocks[0]._forward_hooks


def test_input_kind_site(toy, x):
    seen, h = _hook_all_calls(toy.head, kind="input")
    with Tap(toy, ["head_in"]) as tap:
        toy(x)
    h.remove()
    assert len(seen) == 2 and all(torch.equal(r.value, s) for r, s in zip(tap.records["head_in"], seen))


def test_tuple_output_index(toy, x):
    outs = []
    h = toy.pair.register_forward_hook(lambda m, a, o: outs.append(tuple(t.clone() for t in o)))
    with Tap(toy, ["pair_first", "pair_sum"]) as tap:
        toy(x)
    h.remove()
    assert all(torch.equal(r.value, o[0]) for r, o in zip(tap.records["pair_first"], outs))
    assert all(torch.equal(r.value, o[1]) for r, o in zip(tap.records["pair_sum"], outs))


def test_site_forms_and_names(toy, x):
    with Tap(toy, [Site("blocks.2"), Site("head", kind="input"), Site("pair", index=1)]) as a, \
            Tap(toy, {"e": "embed", "b0": "block0", "s": Site("blocks.2")}) as b:
        toy(x)
    assert list(a.records) == ["blocks.2", "head:input", "pair[1]"]
    assert torch.equal(a.stack("blocks.2"), b.stack("s"))
    assert b.sites["e"] == Site("embed") and b.sites["b0"] == toy.latent_sites()["block0"]


@pytest.mark.parametrize("raise_inside", [False, True])
def test_model_unchanged_after_tap(toy, x, tmp_path, raise_inside):
    snap = module_snapshot(toy)
    expect = pytest.raises(RuntimeError) if raise_inside else contextlib.nullcontext()
    with expect, Tap(toy, to=tmp_path, shard_size=1000):
        toy(x)
        if raise_inside:
            raise RuntimeError("boom")
    assert_model_unchanged(toy, snap)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in toy.modules())
    assert len(load_tap_shards(tmp_path)["block0"]) == 2  # buffered records flushed even on error


def test_unknown_site_is_a_helpful_key_error(toy):
    with pytest.raises(KeyError, match="block0"):  # the message lists the declared sites
        Tap(toy, ["blok0"])
    with pytest.raises(KeyError, match="not found"):
        Tap(toy, [Site("blocks.9")])


def test_assert_model_unchanged_detects_changes(toy):
    snap = module_snapshot(toy)
    with torch.no_grad():
        toy.blocks[0].fc1.weight[0, 0] += 1e-6
    with pytest.raises(AssertionError, match="blocks.0.fc1.weight"):
        assert_model_unchanged(toy, snap)
    snap = module_snapshot(toy)
    h = toy.head.register_forward_hook(lambda *a: None)
    with pytest.raises(AssertionError, match="hooks"):
        assert_model_unchanged(toy, snap)
    h.remove()
    assert_model_unchanged(toy, snap)
