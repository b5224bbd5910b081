"""QuantVLA's evaluation conditions (fp32, bf16, W8A8, W4A8, W4A8 + ATM/OHB, …) built from one float VLA artifact.

Used by ``benchmarks/quantvla.py``. :func:`make_conditions` rebuilds every condition from the artifact path and
the calibration settings alone (module-level, so a ``functools.partial`` of it pickles): a Ray worker of
:func:`latentstack.sim.evaluation.evaluate_parallel` builds its own quantized policies, and because quantizing,
calibrating (select-seed frames, seeded noise) and folding are deterministic, they are the driver's policies.
"""
from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CONDITIONS", "SHIPPED", "bf16_autocast", "build_conditions", "make_conditions", "quantvla_conditions",
           "torch_dynamic_int8"]

SHIPPED = "policies/vla_metaworld_mt6"  # checkout-relative (resolve_path): the shipped float VLA
CONDITIONS = ("fp32", "bf16", "w8a8", "w4a8", "w4a8_atm_ohb", "all_linears_w4a8", "torch_dynamic_int8")


def bf16_autocast(policy: nn.Module) -> nn.Module:
    """``policy`` (a copy) whose ``predict_action_chunk`` runs under CPU bf16 autocast, fp32 out."""
    p = copy.deepcopy(policy)
    inner = p.predict_action_chunk

    def predict_action_chunk(batch: Mapping[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = inner(batch, *args, **kwargs)
        return out.float()

    p.predict_action_chunk = predict_action_chunk  # instance attribute: select_action calls it
    p.precision = "bf16 autocast (matmul/conv weights+activations bf16, fp32 I/O)"
    return p


def torch_dynamic_int8(policy: nn.Module) -> nn.Module:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(policy), {nn.Linear}, dtype=torch.qint8)


def build_conditions(fp32: nn.Module, calib_run: Callable[[nn.Module], None], names: tuple[str, ...] = CONDITIONS,
                     artifact_dir: str | Path | None = None, calib_meta: Mapping[str, Any] | None = None,
                     verbose: bool = True, source: str | Path = SHIPPED) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """The benchmark's policies by name, plus what was measured while building them (replaced
    counts, memory of the quantized components, ATM/OHB α/β and drift before/after).

    ``calib_run(model)`` feeds the calibration observations with seeded noise (``policy_runner``).
    ``w4a8_atm_ohb`` is saved to ``artifact_dir`` (a temp dir if None) and loaded back with
    ``make_policy`` — the path ``lstack eval --policy w4a8_atm_ohb=<artifact>`` takes; ``source``: the
    float artifact ``fp32`` was loaded from (recorded in the quantized artifact, which loads on top of it).
    """
    from latentstack.policies.factory import make_policy
    from latentstack.quant import (
        calibrate_atm_ohb,
        collect_stats,
        drift,
        fold_atm_ohb,
        quantize_model,
        quantized_memory,
        save_quantized,
    )

    unknown = set(names) - set(CONDITIONS)
    if unknown:
        raise KeyError(f"unknown conditions {sorted(unknown)}; known {CONDITIONS}")
    fp32.eval()
    out: dict[str, nn.Module] = {}
    info: dict[str, Any] = {"layers": {}, "memory": {}}

    def int_model(layout: str, preset: str) -> tuple[nn.Module, Any]:
        m = copy.deepcopy(fp32)
        res = quantize_model(m, layout, preset, verbose=verbose)
        info["layers"][f"{layout}/{preset}"] = {"replaced": res.count, "total_linears": res.total_linears,
                                                "summary": res.summary}
        cfg = res.preset
        info["memory"][f"{layout}/{preset}"] = quantized_memory(m, res.replaced, cfg.w_bits, cfg.rotate,
                                                                cfg.permute, cfg.block)
        return m.eval(), res

    for name in names:
        if name == "fp32":
            out[name] = fp32
        elif name == "bf16":
            out[name] = bf16_autocast(fp32)
        elif name == "w8a8":
            out[name], _ = int_model("paper", "w8a8")
        elif name == "w4a8":
            out[name], _ = int_model("paper", "w4a8")
        elif name == "all_linears_w4a8":
            out[name], _ = int_model("all_linears", "w4a8")
        elif name == "torch_dynamic_int8":
            out[name] = torch_dynamic_int8(fp32).eval()
        elif name == "w4a8_atm_ohb":
            student, res = int_model("paper", "w4a8")
            cal = calibrate_atm_ohb(fp32, student, calib_run, preset="code", meta=dict(calib_meta or {}))
            before = drift(cal.teacher, cal.student)
            cal.meta["drift_before"] = before
            tmp = None
            if artifact_dir is None:
                tmp = tempfile.TemporaryDirectory(prefix="quantvla_artifact_")
                artifact_dir = tmp.name
            save_quantized(student, res, artifact_dir, source=source, calibration=cal)
            loaded = make_policy(str(artifact_dir)).eval()  # artifact → folded int policy
            # drift after: the same calibration pass on the folded model
            with torch.no_grad(), collect_stats(loaded, cal.scope) as st_after:
                calib_run(loaded)
            after = drift(cal.teacher, st_after)
            # the loaded artifact equals folding in memory
            fold_atm_ohb(student, cal)
            probe: list[torch.Tensor] = []
            for m in (student, loaded):
                calls: list[torch.Tensor] = []
                orig = m.predict_action_chunk
                m.predict_action_chunk = lambda b, *a, _o=orig, _c=calls, **k: _c.append(_o(b, *a, **k)) or _c[-1]
                try:
                    calib_run(m)
                finally:
                    del m.predict_action_chunk
                probe.append(torch.cat(calls))
            info["atm_ohb"] = {
                "preset": cal.preset, "scope": cal.scope,
                "alpha": {k: v.tolist() for k, v in cal.alpha.items()}, "beta": dict(cal.beta),
                "neutral_alpha_heads": int(sum(int((v == 1).sum()) for v in cal.alpha.values())),
                "total_heads": int(sum(v.numel() for v in cal.alpha.values())),
                "drift": {layer: {"logit_std_before": before[layer]["logit_std"],
                                  "logit_std_after": after[layer]["logit_std"],
                                  "rms_before": before[layer]["rms"], "rms_after": after[layer]["rms"]}
                          for layer in before},
                "artifact_vs_in_memory_fold_max_abs_diff": float((probe[0] - probe[1]).abs().max()),
                "calibration": dict(calib_meta or {}),
            }
            out[name] = loaded
            if tmp is not None:
                info["_tmp"] = tmp  # keep the artifact alive as long as the caller holds info
        if verbose:
            print(f"built {name}", flush=True)
    return out, info


def quantvla_conditions(policy: str | Path = SHIPPED, suite: str = "metaworld_mt6", calib_per_task: int = 2,
                        names: tuple[str, ...] = CONDITIONS, noise_seed: int = 0, verbose: bool = True,
                        artifact_dir: str | Path | None = None,
                        ) -> tuple[dict[str, nn.Module], dict[str, Any], list[dict[str, Any]]]:
    """The conditions from the float artifact ``policy``, calibrated on the first frames of ``calib_per_task``
    *select* seeds per task of ``suite`` with noise seed ``noise_seed``: (policies, build info, calibration
    observations). Everything here is a deterministic function of these arguments."""
    from latentstack.policies.factory import make_policy

    from .calib_data import calibration_observations, collate
    from .calibrate import policy_runner

    fp32 = make_policy(policy).eval()
    obs, prov = calibration_observations(suite, per_task=calib_per_task)
    calib_run = policy_runner([collate(obs)], seed=noise_seed)
    policies, info = build_conditions(fp32, calib_run, names, artifact_dir=artifact_dir, verbose=verbose,
                                      calib_meta={**prov, "noise_seed": noise_seed, "observations": len(obs)},
                                      source=policy)
    return policies, info, obs


def make_conditions(policy: str | Path = SHIPPED, suite: str = "metaworld_mt6", calib_per_task: int = 2,
                    names: tuple[str, ...] = CONDITIONS, noise_seed: int = 0) -> dict[str, nn.Module]:
    """:func:`quantvla_conditions`' policies only, quietly: the picklable ``make_conditions`` of
    :func:`~latentstack.sim.evaluation.evaluate_parallel` (``functools.partial(make_conditions, ...)``)."""
    return quantvla_conditions(policy, suite, calib_per_task, tuple(names), noise_seed, verbose=False)[0]
