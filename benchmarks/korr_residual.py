"""KORR speed: per-control-step latency of the residual inside a Policy (base alone vs + ResiP vs + KORR)
and one PPO(+L_kpm) gradient step per residual kind, all in one run so the ratios compare like with like.

    .venv/bin/python benchmarks/korr_residual.py --out reports/korr/bench

Writes bench.json + bench.png. Numbers are from a shared, loaded 2-core CPU: read the ratios.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from latentstack.koopman.base_policy import ChunkBaseConfig, ChunkBasePolicy, ChunkMLPBase, MinMaxNormalizer
from latentstack.koopman.configuration_korr import residual_config
from latentstack.koopman.modeling_korr import make_residual
from latentstack.koopman.ppo import ppo_losses
from latentstack.koopman.residual_policy import ResidualPolicy
from latentstack.stats import percentile_ms


def step_latency(policy, n: int, d_o: int) -> list[float]:
    rng = np.random.default_rng(0)
    obs = [{"state": rng.normal(size=d_o).astype(np.float32)} for _ in range(n)]
    policy.reset(0)
    for o in obs[:20]:
        policy.select_action(o)
    out = []
    for o in obs:
        t = time.perf_counter()
        policy.select_action(o)
        out.append(time.perf_counter() - t)
    return out


def update_time(kind: str, batch: int, d_o: int, d_a: int, reps: int) -> list[float]:
    torch.manual_seed(0)
    m = make_residual(residual_config(d_o, d_a, kind, action_head_std=1.0))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    o, ab, r, o2 = torch.randn(batch, d_o), torch.randn(batch, d_a), torch.randn(batch, d_a), torch.randn(batch, d_o)
    old, adv, ret = torch.randn(batch), torch.randn(batch), torch.randn(batch)
    out = []
    for i in range(reps + 1):
        t = time.perf_counter()
        lp, ent, v = m.evaluate(o, ab, r)
        L = ppo_losses(lp, old, adv, v, ret, ent)
        aux, _ = m.aux_loss(o, ab + 0.1 * r, o2)
        opt.zero_grad()
        (L.policy + L.value + aux).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if i:
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/korr/bench")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d_o, d_a = 19, 4  # robosuite Lift state / action
    torch.manual_seed(0)
    base_model = ChunkMLPBase(ChunkBaseConfig(obs_dim=d_o, action_dim=d_a), MinMaxNormalizer(-torch.ones(d_o), torch.ones(d_o), 3.0),
                              MinMaxNormalizer(-torch.ones(d_a), torch.ones(d_a)))
    res: dict = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                 "torch": torch.__version__, "step_latency_ms": {}, "update_s": {}}
    conds = {"base": ChunkBasePolicy(base_model)}
    for kind in ("resip", "korr", "dyn"):
        conds[kind] = ResidualPolicy(ChunkBasePolicy(base_model), make_residual(residual_config(d_o, d_a, kind)),
                                     base_model.obs_norm, base_model.action_norm)
    for name, pol in conds.items():
        lat = step_latency(pol, args.steps, d_o)
        res["step_latency_ms"][name] = {"p50": percentile_ms(lat, 50), "p90": percentile_ms(lat, 90),
                                        "p99": percentile_ms(lat, 99)}
    for kind in ("resip", "korr", "dyn"):
        ts = update_time(kind, args.batch, d_o, d_a, args.reps)
        res["update_s"][kind] = {"median": float(np.median(ts)), "batch": args.batch}
    b50 = res["step_latency_ms"]["base"]["p50"]
    r50 = res["step_latency_ms"]["resip"]["p50"]
    # base p50 is a queue pop on 7 of 8 steps, so compare residual kinds with each other
    res["ratios"] = {"step_p50_vs_base": {k: v["p50"] / b50 for k, v in res["step_latency_ms"].items()},
                     "step_p50_vs_resip": {k: v["p50"] / r50 for k, v in res["step_latency_ms"].items()},
                     "update_vs_resip": {k: v["median"] / res["update_s"]["resip"]["median"]
                                         for k, v in res["update_s"].items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(res["step_latency_ms"])
    ax[0].bar(names, [res["step_latency_ms"][n]["p50"] for n in names],
              yerr=[[0] * len(names), [res["step_latency_ms"][n]["p90"] - res["step_latency_ms"][n]["p50"]
                                       for n in names]], capsize=3)
    ax[0].set_ylabel("ms per control step (p50, bar to p90)")
    ax[0].set_title("select_action (chunk 16 / execute 8)")
    kinds = list(res["update_s"])
    ax[1].bar(kinds, [res["update_s"][k]["median"] for k in kinds])
    ax[1].set_ylabel(f"s per gradient step (batch {args.batch})")
    ax[1].set_title("PPO + model loss update")
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=90)
    print(json.dumps(res["ratios"], indent=1))


if __name__ == "__main__":
    main()
