"""COAST in the policy node: artifact + β as node parameters, β changeable at run time, bad changes refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentstack.nodes.policy_node import PolicyNodeCore, PolicyNodeParams
from latentstack.transport import InProcTransport

ROOT = Path(__file__).resolve().parents[2]
WEAK = ROOT / "policies" / "vla_metaworld_mt6_weak"
ART = WEAK / "conceptors" / "all__expert.layer2__global__a10__paper"

OBS = {"image": np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8),
       "state": np.array([0.0, 0.6, 0.2, 1.0], np.float32), "instruction": "press the button from the top", "task": "t"}


@pytest.fixture(scope="module")
def weak_policy():
    from latentstack.policies.factory import make_policy

    if not (ART / "config.json").exists():  # a conceptor artifact is a folder
        pytest.skip("shipped weak VLA / conceptor artifact not present")
    p = make_policy(str(WEAK))
    p.eval()
    return p


def _chunk_action(node: PolicyNodeCore, seed: int = 3) -> np.ndarray:
    node.policy.reset(seed=seed)
    return np.asarray(node.policy.select_action(OBS))


def test_steering_parameters_and_runtime_beta(weak_policy):
    import torch

    with torch.inference_mode():
        plain = PolicyNodeCore(InProcTransport(), PolicyNodeParams(policy=str(WEAK)), policy=weak_policy)
        a0 = _chunk_action(plain)
        plain.close()
        node = PolicyNodeCore(InProcTransport(), PolicyNodeParams(policy=str(WEAK), steering=str(ART),
                                                                  steering_beta=0.0), policy=weak_policy)
        assert np.array_equal(_chunk_action(node), a0)  # β = 0: no hook, bit-identical
        assert not any(m._forward_hooks for m in weak_policy.modules())
        ok, _ = node.on_set_parameters({"steering_beta": 0.5})
        assert ok and node.params.steering_beta == 0.5 and node.policy.beta == 0.5
        a_half = _chunk_action(node)
        assert not np.array_equal(a_half, a0)
        # refused changes leave the gate as it was
        for bad in ({"steering_beta": 1.5}, {"steering": str(ART) + "_missing"}, {"policy": "x"}):
            ok, reason = node.on_set_parameters(bad)
            assert not ok and reason
            assert node.policy.beta == 0.5 and np.array_equal(_chunk_action(node), a_half)
        # issue 14: a string β used to switch the gate and then raise (gate 0.5, parameter 0.0); now it is
        # coerced like a start-up value, so parameter and gate agree
        ok, _ = node.on_set_parameters({"steering_beta": 0.0})
        assert ok and node.policy.beta == 0.0
        ok, reason = node.on_set_parameters({"steering_beta": "0.5"})
        assert ok, reason
        assert node.params.steering_beta == node.policy.beta == 0.5 and type(node.params.steering_beta) is float
        assert np.array_equal(_chunk_action(node), a_half)
        ok, _ = node.on_set_parameters({"steering_beta": 0.0})
        assert ok and np.array_equal(_chunk_action(node), a0)
        assert not any(m._forward_hooks for m in weak_policy.modules())  # hook removed at β = 0
        node.policy.close()
        node.close()


def test_node_without_steering_refuses_runtime_steering(weak_policy):
    node = PolicyNodeCore(InProcTransport(), PolicyNodeParams(policy=str(WEAK)), policy=weak_policy)
    ok, reason = node.on_set_parameters({"steering_beta": 0.3})
    assert not ok and "steering" in reason
    node.close()
