"""ONNX export of the SA2 stereo model (refinement iterations unrolled) == eager, checked with onnxruntime."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")


def test_stereo_onnx_matches_eager(tmp_path):
    from latentstack.kernels import dispatch
    from latentstack.perception.stereo.configuration_stereo import StereoConfig
    from latentstack.perception.stereo.export import export_stereo_onnx
    from latentstack.perception.stereo.model import SA2Tiny

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        cfg = StereoConfig(enc_channels=(8, 16, 16, 16), feat_dim=16, fmap_dim=16, hidden=16, d_state=4,
                           corr_levels=2, corr_radius=2, valid_iters=2, codyra_rank=0, image_size=(32, 48))
        model = SA2Tiny(cfg).eval()
        before = dispatch.preference("selective_scan", "cpu")
        rec = export_stereo_onnx(model, tmp_path, iters=2)
    finally:
        torch.set_num_threads(n)
    assert dispatch.preference("selective_scan", "cpu") == before  # the scan substitution is undone
    assert json.loads((tmp_path / "export.json").read_text()) == rec
    chk = rec["check"]
    assert chk["max_ref"] > 0.1  # a real disparity map was compared
    assert chk["passed"] and chk["max_abs"] <= 1e-3, chk
