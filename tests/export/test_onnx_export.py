"""ONNX export of the VLA chunk (K steps unrolled, noise an input) == eager, checked with onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_vla():
    from latentstack.policies.vla import VLAPolicy, get_vla_config

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    vocab = ("<pad>", "<unk>", "press", "the", "coffee", "button", "open", "drawer")
    yield VLAPolicy(get_vla_config("vla_tiny", vocab=vocab, num_inference_steps=4)).eval()
    torch.set_num_threads(n)


def test_onnx_chunk_matches_eager(tiny_vla, tmp_path):
    from latentstack.policies.vla.export import check_onnx, export_onnx, host_inputs

    rec = export_onnx(tiny_vla, tmp_path, num_steps=3)
    saved = json.loads((tmp_path / "export.json").read_text())
    assert saved == rec and rec["num_steps"] == 3 and (tmp_path / rec["file"]).is_file()
    chk = rec["check"]
    # traced at batch 2, checked at batch 3 (dynamic batch) against eager predict_action_chunk with the same noise
    assert chk["passed"] and chk["batch"] == 3 and chk["max_abs"] <= 1e-4

    # the noise input really drives the output, and K=3 is what was unrolled (not the config's 4)
    cfg = tiny_vla.config
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (1, 40, 40, 3), dtype=np.uint8)  # resized on the host like the processor does
    state = rng.normal(size=(1, cfg.state_dim)).astype(np.float32)
    n1, n2 = (rng.standard_normal((1, cfg.chunk_size, cfg.action_dim)).astype(np.float32) for _ in range(2))
    sess = ort.InferenceSession(str(tmp_path / rec["file"]), providers=["CPUExecutionProvider"])
    outs = [sess.run(["actions"], host_inputs(tiny_vla, img, state, ["press the coffee button"], n))[0]
            for n in (n1, n2)]
    eager = [tiny_vla.predict_action_chunk({"image": img, "state": state, "instruction": ["press the coffee button"]},
                                           noise=torch.from_numpy(n), num_steps=k).numpy() for n in (n1,) for k in (3, 4)]
    np.testing.assert_allclose(outs[0], eager[0], rtol=0, atol=1e-4)
    assert not np.allclose(outs[0], outs[1], atol=1e-3)
    assert not np.allclose(outs[0], eager[1], atol=1e-3)
    # a second check (another seed) passes too
    assert check_onnx(tiny_vla, tmp_path / rec["file"], num_steps=3, seed=7)["passed"]
