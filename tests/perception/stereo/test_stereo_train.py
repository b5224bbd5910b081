"""Stereo trainers: resume bit for bit (mono pretraining cut and resumed), and training and evaluation on a device (``device`` fixture: cpu, and cuda marked ``gpu``): mono pretraining,
stage B (SA2 and its ConvGRU twin) and ``evaluate_methods``. On the CPU a short run with ``device="cpu"`` equals the
default run bit for bit; on CUDA the runs are checked to train (finite losses, weights moved) and the evaluation to
match the CPU's within fp32 tolerances. Tiny random splits (32x64), a few steps."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("cv2")  # the stereo data module renders with OpenCV

from latentstack.perception.stereo.configuration_stereo import PRESETS
from latentstack.perception.stereo.data import StereoSplit
from latentstack.perception.stereo.encoder import TinyEncoder
from latentstack.perception.stereo.model import SA2Tiny, load_stereo_model
from latentstack.perception.stereo.train import TrainRecipe, pretrain_mono, train_stereo

RECIPE = TrainRecipe(steps=3, batch_size=2, threads=1)
SMALL = {"enc_channels": (8, 16, 16, 32), "feat_dim": 16, "fmap_dim": 16, "hidden": 16, "train_iters": 2,
         "valid_iters": 2, "corr_levels": 2}


def _split(n: int = 4, h: int = 32, w: int = 64) -> StereoSplit:
    g = np.random.default_rng(0)
    depth = g.uniform(1.0, 4.0, (n, h, w)).astype(np.float32)
    return StereoSplit(left=g.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
                       right=g.integers(0, 255, (n, h, w, 3), dtype=np.uint8), depth_left=depth,
                       depth_right=depth.copy(), focal=np.full(n, 40.0), baseline=np.full(n, 0.1), seeds=np.arange(n),
                       disp=(4.0 / depth).astype(np.float32), noc=np.ones((n, h, w), bool))


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()  # the trainers set the thread count for the process
    yield
    torch.set_num_threads(threads)


def _config(name: str):
    return dataclasses.replace(PRESETS[name], **SMALL)


def _moved(got: dict[str, torch.Tensor], init: dict[str, torch.Tensor]) -> int:
    return sum(1 for k, v in init.items() if v.is_floating_point() and not torch.equal(got[k].cpu(), v))


def test_mono_pretraining_on_device(tmp_path, device):
    data, cfg = _split(), _config("sa2_tiny")
    got = load_file(str(pretrain_mono(data, tmp_path / "dev", RECIPE, cfg, progress=False, device=device)))
    hist = json.loads((tmp_path / "dev" / "mono_pretrain_log.json").read_text())["history"]
    assert len(hist) == RECIPE.steps and all(np.isfinite(h["loss"]) for h in hist)
    torch.manual_seed(RECIPE.seed)  # the trainer's seed, drawn just before it builds the encoder
    init = TinyEncoder(cfg.enc_channels, cfg.feat_dim).state_dict()
    assert _moved(got, init) > len(init) // 2  # it trained
    if device == "cpu":
        ref = load_file(str(pretrain_mono(data, tmp_path / "default", RECIPE, cfg, progress=False)))
        assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("name", ["sa2_tiny", "convgru_tiny"])
def test_stereo_training_on_device(tmp_path, device, name):
    data, cfg = _split(), _config(name)
    enc = pretrain_mono(data, tmp_path / "enc", TrainRecipe(steps=1, batch_size=2, threads=1), cfg, progress=False)
    out = train_stereo(cfg, enc, data, tmp_path / "dev", RECIPE, val=data, progress=False, device=device)
    art = json.loads((out / "training.json").read_text())
    assert art["device"] == device and np.isfinite(art["final_train_epe"]) and np.isfinite(art["val_epe_x3_first32"])
    got = load_stereo_model(out, device="cpu").state_dict()
    torch.manual_seed(RECIPE.seed)  # the trainer's seed, drawn just before it builds the model
    init_model = SA2Tiny(cfg)
    init_model.add_adapters()
    init = {k: v for k, v in init_model.state_dict().items() if not k.startswith("encoder.")}  # encoder: loaded
    assert _moved(got, init) >= 0.9 * len(init)  # it trained (on the CPU every one of them moves in 3 steps)
    if device == "cpu":
        ref_dir = train_stereo(cfg, enc, data, tmp_path / "default", RECIPE, val=data, progress=False)
        ref = load_stereo_model(ref_dir, device="cpu").state_dict()
        assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) for k in ref)
        assert json.loads((ref_dir / "training.json").read_text())["val_epe_x3_first32"] == art["val_epe_x3_first32"]


def test_evaluation_on_device(device):
    from latentstack.perception.stereo.evaluate import evaluate_methods

    data = _split()
    torch.manual_seed(0)
    model = SA2Tiny(_config("sa2_tiny")).eval()
    kw = {"sgbm": None, "iters": 2, "batch_size": 2, "progress": False, "init_control": "m"}
    ref = evaluate_methods({"m": model}, data, (0.0, 3.0), **kw)
    got = evaluate_methods({"m": model.to(device)}, data, (0.0, 3.0), **kw)
    assert ref["methods"] == got["methods"] == ["m", "m_mono_init"]
    if device == "cpu":
        assert ref["per_image_epe"] == got["per_image_epe"] and ref["tables"] == got["tables"]
    else:
        for key, per in ref["per_image_epe"].items():
            for m, vals in per.items():
                np.testing.assert_allclose(got["per_image_epe"][key][m], vals, rtol=1e-3, atol=1e-3)


def test_stereo_mono_pretraining_resumes_bit_identically(tmp_path):
    """The loop's resume with stereo's state (numpy generator, OneCycle): cut after a checkpoint, resumed."""
    data, recipe = _split(), TrainRecipe(steps=6, batch_size=2, threads=1)
    full = load_file(str(pretrain_mono(data, tmp_path / "full", recipe, progress=False)))
    cut = tmp_path / "cut"
    pretrain_mono(data, cut, recipe, progress=False, checkpoint_every=4)
    # as if the first session had died after its step-4 checkpoint
    shutil.rmtree(cut / "checkpoints" / "step_0000006")
    (cut / "checkpoints" / "latest.json").write_text(json.dumps({"dir": "step_0000004", "step": 4}))
    resumed = load_file(str(pretrain_mono(data, cut, recipe, progress=False, checkpoint_every=4, resume=True)))
    assert set(full) == set(resumed) and all(torch.equal(full[k], resumed[k]) for k in full)
    la = json.loads((tmp_path / "full" / "mono_pretrain_log.json").read_text())["history"]
    lb = json.loads((cut / "mono_pretrain_log.json").read_text())["history"]
    assert [h["loss"] for h in la] == [h["loss"] for h in lb] and len(la) == 6
