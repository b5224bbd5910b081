"""``lstack serve <artifact>`` as a user runs it: a separate process on loopback, the shipped artifact."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from latentstack.serving.client import RemotePolicy

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "policies" / "vla_metaworld_mt6"


@pytest.mark.skipif(not (ARTIFACT / "config.json").is_file(), reason="shipped artifact missing")
def test_lstack_serve_process_answers_like_the_local_policy():
    torch = pytest.importorskip("torch")
    from latentstack.policies.factory import make_policy

    cmd = [sys.executable, "-c", "from latentstack.cli import main; raise SystemExit(main())", "serve",
           "policies/vla_metaworld_mt6", "--port", "0", "--threads", "1", "--batch-max", "4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "LATENTSTACK_CUDA_GRAPH": "0"})
    try:
        line = ""
        while proc.poll() is None and not line.startswith("lstack serve:"):
            line = proc.stdout.readline()
        assert line.startswith("lstack serve:"), f"server did not start (rc {proc.poll()})"
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])  # bound to loopback by default
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read().strip() == b"OK"
        remote = RemotePolicy(f"ws://127.0.0.1:{port}")
        assert remote.n_action_steps == 8 and remote.metadata["action_horizon"] == 16
        rng = np.random.default_rng(0)
        obs = {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
               "state": rng.uniform(-1, 1, 4).astype(np.float32), "instruction": "press the coffee button"}
        remote.reset(3)
        got = np.stack([remote.select_action(obs) for _ in range(8)])
        remote.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = make_policy(ARTIFACT)
        local.reset(3)
        want = np.stack([local.select_action(obs) for _ in range(8)])
    finally:
        torch.set_num_threads(n)
    # another process, same ops and thread count: equal up to fp32 rounding
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
