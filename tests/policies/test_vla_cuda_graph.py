"""The VLA chunk as a CUDA graph, and the bf16 option.

CPU: ``graph=True`` is the eager path, bit-identical, with the same noise-generator consumption; what blocks a
capture (Taps, hook-mode or unmarked edits) and what does not (the COAST gate) is decided without a GPU.
GPU twins (``gpu``, skipped in CI): graph == eager within fp32 tolerance (TF32 off), one capture per input
signature, the steering gate inside the graph, re-capture when weights are replaced, bf16 within its tolerance.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from latentstack.latent import Intervention, Tap
from latentstack.latent.context import annotate
from latentstack.policies.vla import VLAInputs, VLAPolicy, get_vla_config
from latentstack.policies.vla import cuda_graph_vla as cgv
from latentstack.policies.vla.cuda_graph_vla import graph_blocker
from latentstack.steering.intervention import steer

VOCAB = ("<pad>", "<unk>", "close", "the", "drawer", "press", "button", "top", "open", "window")
FP32 = {"rtol": 1e-4, "atol": 1e-5}  # same kernels replayed vs launched: differences only from algorithm choice
# bf16 networks (8-bit mantissa, ~0.4 % per rounding) with an fp32 flow state: actions (|a| ≲ 1) within 0.05
BF16 = {"rtol": 0.0, "atol": 5e-2}


def _vla() -> VLAPolicy:
    p = VLAPolicy(get_vla_config("vla_tiny", vocab=VOCAB, seed=3))
    g = torch.Generator().manual_seed(0)
    p.set_normalization({"state_mean": torch.randn(4, generator=g), "state_std": torch.rand(4, generator=g) + 0.5,
                         "action_mean": torch.randn(4, generator=g) * 0.1,
                         "action_std": torch.rand(4, generator=g) + 0.5})
    return p


def _batch(b: int = 3, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    texts = ["close the drawer", "press the button top", "open the window now please"]
    return {"image": rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8),
            "state": rng.normal(size=(b, 4)).astype(np.float32), "instruction": [texts[i % 3] for i in range(b)]}


def _conceptor(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return ((q * torch.rand(d, generator=g, dtype=torch.float64)) @ q.T).float()  # symmetric, eigenvalues in [0, 1)


# --------------------------------------------------------------------------- CPU
def test_graph_flag_on_cpu_is_the_eager_path_bit_identical() -> None:
    a, b = _vla(), _vla()
    b.cuda_graph = True
    batch = _batch()
    for _ in range(2):  # the policies' own generators advance identically
        assert torch.equal(a.predict_action_chunk(batch), b.predict_action_chunk(batch, graph=True))
    assert len(b._graphs) == 0 and b._graphs.captures == 0


def test_bf16_inference_option_on_cpu() -> None:
    ref = _vla()
    bf = copy.deepcopy(ref).set_inference_dtype(torch.bfloat16)
    assert bf.compute_dtype == torch.bfloat16 and bf.normalizer.action_std.dtype == torch.float32
    batch = _batch()
    a = ref.predict_action_chunk(batch, generator=torch.Generator().manual_seed(4))
    b = bf.predict_action_chunk(batch, generator=torch.Generator().manual_seed(4))
    assert b.dtype == torch.float32
    torch.testing.assert_close(b, a, **BF16)
    assert not torch.equal(a, b)  # it did run in bf16


def test_what_blocks_a_capture() -> None:
    p = _vla()
    assert graph_blocker(p)[0] is None
    with Tap(p, ["expert.layer0"]):
        assert "hooks" in graph_blocker(p)[0]
    with Intervention(p, {"expert.layer0": lambda v, meta: v}, mode="wrap"):
        assert "not marked graph-safe" in graph_blocker(p)[0]
    C = _conceptor(p.config.d_model)
    iv = steer(p, "expert.layer1", C, beta=0.5)  # wrap mode, the COAST gate: captured inside the graph
    with iv:
        reason, key, keep = graph_blocker(p)
        assert reason is None and key == (("expert.layers.1", id(iv), 0),) and keep == [iv]
    with steer(p, "expert.layer1", C, beta=0.5, mode="hook"):
        assert "hooks" in graph_blocker(p)[0]
    assert graph_blocker(p)[0] is None  # everything removed on exit


class _FakeGraph:
    """Stands in for ChunkGraph on the CPU: copies into its own static buffers and runs the chunk eagerly, so the
    cache's keying, the noise plumbing and the invalidation logic are testable without a GPU."""

    def __init__(self, chunk, inputs, noise, num_steps) -> None:
        self.chunk, self.num_steps = chunk, num_steps
        self.inputs = VLAInputs(inputs.images.clone(), inputs.state.clone(), inputs.lang_ids.clone(),
                                None if inputs.lang_mask is None else inputs.lang_mask.clone())
        self.noise = noise.clone()

    def __call__(self, inputs, noise):
        self.inputs.images.copy_(inputs.images)
        self.inputs.state.copy_(inputs.state)
        self.inputs.lang_ids.copy_(inputs.lang_ids)
        if self.inputs.lang_mask is not None:
            self.inputs.lang_mask.copy_(inputs.lang_mask)
        self.noise.copy_(noise)
        return self.chunk(self.inputs, self.noise, self.num_steps).clone()


@pytest.fixture
def fake_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgv, "ChunkGraph", _FakeGraph)


@pytest.mark.usefixtures("fake_graphs")
def test_graph_path_plumbing_equals_eager_and_keys_captures() -> None:
    eager, graphed = _vla(), _vla()
    batch3, batch1 = _batch(3), _batch(1, seed=2)

    def g(p: VLAPolicy, b: dict) -> torch.Tensor:
        with annotate(step=p._step):
            out = p._predict_graph(b, None, None, None)
        assert out is not None
        return out

    # the noise comes from the policy's generator, drawn as sample_actions draws it: bit-identical, same stream
    for b in (batch3, batch1, batch3):
        assert torch.equal(g(graphed, b), eager.predict_action_chunk(b))
    assert graphed._graphs.captures == 2  # two input signatures (masked / unmasked language)
    # .to() bumps the version: storages re-checked, unchanged here, so no new capture
    graphed.to("cpu")
    assert torch.equal(g(graphed, batch3), eager.predict_action_chunk(batch3))
    assert graphed._graphs.captures == 2
    # replacing a layer (what quantisation does) changes the storages: a new capture that uses the new layer
    new = torch.nn.Linear(graphed.config.d_model, graphed.config.action_dim)
    graphed.expert.action_out = new
    eager.expert.action_out = copy.deepcopy(new)
    assert torch.equal(g(graphed, batch3), eager.predict_action_chunk(batch3))
    assert graphed._graphs.captures == 3
    # a graph-safe gate is part of the key; a Tap makes the path refuse (None: the caller runs eager)
    C = _conceptor(graphed.config.d_model)
    with steer(graphed, "expert.layer1", C, 0.5), steer(eager, "expert.layer1", C, 0.5):
        assert torch.equal(g(graphed, batch3), eager.predict_action_chunk(batch3))
    assert graphed._graphs.captures == 4
    with Tap(graphed, ["expert.layer0"]), annotate(step=0):
        assert graphed._predict_graph(batch3, None, None, None) is None


# --------------------------------------------------------------------------- CUDA twins
@pytest.fixture
def cuda_fp32() -> Iterator[None]:
    """A CUDA device with TF32 off (fp32 tolerances hold), else skip."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (the gpu-marked twin runs on a GPU machine)")
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def _cuda_pair() -> tuple[VLAPolicy, VLAPolicy]:
    cpu = _vla()
    return copy.deepcopy(cpu).to("cuda"), copy.deepcopy(cpu).to("cuda")


@pytest.mark.gpu
@pytest.mark.usefixtures("cuda_fp32")
def test_graph_equals_eager_on_cuda() -> None:
    eager, graphed = _cuda_pair()
    eager.cuda_graph, graphed.cuda_graph = False, True
    for batch in (_batch(3), _batch(1, seed=2)):  # with and without the padded-language mask
        for _ in range(2):  # own generators: the same noise stream on both
            torch.testing.assert_close(graphed.predict_action_chunk(batch), eager.predict_action_chunk(batch), **FP32)
    assert graphed._graphs.captures == 2 and eager._graphs.captures == 0
    # default (cuda_graph None) on CUDA is the graph path too
    graphed.cuda_graph = None
    graphed.predict_action_chunk(_batch(3))
    assert graphed._graphs.captures == 2


@pytest.mark.gpu
@pytest.mark.usefixtures("cuda_fp32")
def test_graph_captures_the_steering_gate_and_follows_changes() -> None:
    eager, graphed = _cuda_pair()
    eager.cuda_graph = False
    C = _conceptor(eager.config.d_model)
    batch = _batch(2)
    g = lambda: torch.Generator().manual_seed(7)
    with steer(eager, "expert.layer1", C, 0.7):
        ref = eager.predict_action_chunk(batch, generator=g())
    iv = steer(graphed, "expert.layer1", C, 0.7)
    with iv:
        out = graphed.predict_action_chunk(batch, generator=g())
    torch.testing.assert_close(out, ref, **FP32)
    assert graphed._graphs.captures == 1
    unsteered = graphed.predict_action_chunk(batch, generator=g())  # gate removed: a new capture, no gate
    torch.testing.assert_close(unsteered, eager.predict_action_chunk(batch, generator=g()), **FP32)
    assert not torch.allclose(unsteered, out)
    assert graphed._graphs.captures == 2
    with Tap(graphed, ["expert.layer0"]) as tap:  # a Tap must see every call: eager, no new capture
        graphed.predict_action_chunk(batch, generator=g())
    assert graphed._graphs.captures == 2 and len(tap.records["expert.layer0"]) > 0
    # replacing a layer re-captures (the old graph would read the old storage)
    with torch.no_grad():
        new = torch.nn.Linear(graphed.config.d_model, graphed.config.action_dim).cuda()
        graphed.expert.action_out = new
        eager.expert.action_out = copy.deepcopy(new)
    torch.testing.assert_close(graphed.predict_action_chunk(batch, generator=g()),
                               eager.predict_action_chunk(batch, generator=g()), **FP32)
    assert graphed._graphs.captures == 3


@pytest.mark.gpu
@pytest.mark.usefixtures("cuda_fp32")
def test_bf16_graph_on_cuda() -> None:
    fp32, bf = _cuda_pair()
    fp32.cuda_graph = False
    bf.set_inference_dtype(torch.bfloat16)
    batch = _batch(3)
    ref = fp32.predict_action_chunk(batch, generator=torch.Generator().manual_seed(3))
    out = bf.predict_action_chunk(batch, generator=torch.Generator().manual_seed(3))
    assert bf._graphs.captures == 1 and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, **BF16)
