"""``make_policy`` on quantized artifacts (a "vla_quantized" artifact folder, ``quant:`` prefix, ``lstack eval`` name=dir)
and a smoke of ``benchmarks/quantvla.py``'s condition builders (synthetic observations, no simulator)."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from latentstack.kernels.int_linear import W4A8Linear, W8A8Linear, _IntLinearBase
from latentstack.policies.factory import is_quantized_artifact, make_policy
from latentstack.quant import calibrate_atm_ohb, load_quantized, policy_runner, quantize_model, save_quantized

from .conftest import SHIPPED, predict

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, vla_fp, obs_batch):
    """A paper-layout W4A8 artifact with ATM/OHB calibrated on the synthetic batch."""
    student = copy.deepcopy(vla_fp)
    res = quantize_model(student, "paper", "w4a8", verbose=False)
    run = policy_runner([obs_batch], seed=0)
    cal = calibrate_atm_ohb(vla_fp, student, run, preset="code")
    out = tmp_path_factory.mktemp("art") / "paper_w4a8_atm_ohb"
    save_quantized(student, res, out, source=SHIPPED, calibration=cal)
    return out


def test_make_policy_loads_artifact_dir(artifact, obs_batch):
    assert is_quantized_artifact(artifact) and not is_quantized_artifact(SHIPPED)
    pol = make_policy(artifact)
    ref, _card = load_quantized(artifact)
    assert sum(isinstance(m, W4A8Linear) for m in pol.modules()) == 32
    assert not pol.training
    assert torch.equal(predict(pol, obs_batch), predict(ref, obs_batch))
    # the float checkpoint dir is still the float policy
    assert not any(isinstance(m, (W4A8Linear, W8A8Linear)) for m in make_policy(SHIPPED).modules())


def _int_layers(model: torch.nn.Module) -> list[_IntLinearBase]:
    return [m for m in model.modules() if isinstance(m, _IntLinearBase)]


def test_quant_prefix_and_overrides(artifact, obs_batch, tmp_path):
    a = make_policy(f"quant:{artifact}")
    b = make_policy(artifact, impl="torch", source=str(SHIPPED))
    # Same artifact, same source: the integer state (codes, folded scales, biases) is bit-identical ...
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # ... and impl= only picks the kernel path. Whole-policy outputs of the C++ and torch paths are not
    # compared: their epilogues round differently (<= 1 ulp, tests/kernels), and over 8 layers x 10 denoising
    # steps one flipped activation code moves the chunk by ~1e-3 depending on the CPU's GEMM. Same path,
    # same integer state -> bit-identical.
    assert len(_int_layers(b)) == 32 and all(m.impl == "torch" for m in _int_layers(b))
    assert all(m.impl == "auto" for m in _int_layers(a))
    for m in _int_layers(a):
        m.impl = "torch"
    assert torch.equal(predict(a, obs_batch), predict(b, obs_batch))
    with pytest.raises(FileNotFoundError):
        make_policy(f"quant:{SHIPPED}")  # a float checkpoint is not an artifact
    with pytest.raises(TypeError):
        make_policy(artifact, num_inference_steps=3)


def test_lstack_eval_condition_spec(artifact):
    from latentstack.cli import _parse_conditions

    conds = _parse_conditions([f"w4a8={artifact}", f"fp32={SHIPPED}"])
    assert conds["w4a8"] == str(artifact)
    pol = make_policy(conds["w4a8"])
    assert sum(isinstance(m, W4A8Linear) for m in pol.modules()) == 32


def _bench():
    spec = importlib.util.spec_from_file_location("quantvla_bench", ROOT / "benchmarks" / "quantvla.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_condition_builders(vla_fp, obs_batch, tmp_path):
    bench = _bench()
    run = policy_runner([obs_batch], seed=0)
    pols, info = bench.build_conditions(copy.deepcopy(vla_fp), run, artifact_dir=tmp_path / "art", verbose=False)
    assert tuple(pols) == bench.CONDITIONS
    assert info["layers"]["paper/w4a8"]["replaced"] == 32
    assert info["layers"]["all_linears/w4a8"]["replaced"] == 54
    assert info["memory"]["paper/w4a8"]["saving_vs_fp32"] >= 0.70
    assert (tmp_path / "art" / "config.json").is_file()
    a = info["atm_ohb"]
    # folding on load and folding in memory are the same ops on the same int state: exactly equal
    assert a["artifact_vs_in_memory_fold_max_abs_diff"] == 0.0
    assert set(a["drift"]) == set(a["alpha"]) and len(a["drift"]) == 4
    ref = predict(pols["fp32"], obs_batch)
    for name, p in pols.items():
        out = predict(p, obs_batch)
        assert out.dtype == torch.float32 and out.shape == ref.shape, name
        assert (out - ref).abs().max() < 0.5, name
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear

    n_dyn = sum(isinstance(m, DynamicQuantLinear) for m in pols["torch_dynamic_int8"].modules())
    assert n_dyn == 54
    # chunk timer: records model calls only, and is removable
    times = bench.instrument_chunk_latency(pols["bf16"])
    pols["bf16"].reset(seed=0)
    obs = {"image": obs_batch["image"][0], "state": obs_batch["state"][0], "instruction": obs_batch["instruction"][0]}
    for _ in range(9):  # n_action_steps = 8 → two chunk predictions
        pols["bf16"].select_action(obs)
    assert len(times) == 2
    bench.remove_instrumentation(pols["bf16"])
    assert predict(pols["bf16"], obs_batch).dtype == torch.float32  # bf16 wrapper restored
    sp = bench.speedup(pols["fp32"], pols["w8a8"], obs_batch, repeats=3, compiled=False)
    assert sp["eager"]["ratio"]["rounds"] == 3 and sp["eager"]["ratio"]["median"] > 0
