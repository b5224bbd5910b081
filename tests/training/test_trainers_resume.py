"""Trainers on the loop resume bit for bit: stereo mono pretraining (numpy generator, OneCycle) cut and resumed."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("cv2")  # the stereo data module renders with OpenCV


def _split(n: int = 4, h: int = 32, w: int = 64):
    from latentstack.perception.stereo.data import StereoSplit

    g = np.random.default_rng(0)
    depth = g.uniform(1.0, 4.0, (n, h, w)).astype(np.float32)
    return StereoSplit(left=g.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
                       right=g.integers(0, 255, (n, h, w, 3), dtype=np.uint8), depth_left=depth,
                       depth_right=depth.copy(), focal=np.full(n, 40.0), baseline=np.full(n, 0.1), seeds=np.arange(n),
                       disp=(4.0 / depth).astype(np.float32), noc=np.ones((n, h, w), bool))


def test_stereo_mono_pretraining_resumes_bit_identically(tmp_path):
    from latentstack.perception.stereo.train import TrainRecipe, pretrain_mono

    threads = torch.get_num_threads()
    try:
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
    finally:
        torch.set_num_threads(threads)
