from __future__ import annotations

import numpy as np

from latentstack.quant.calib_data import calibration_observations, collate
from latentstack.sim.suites import load_suite


def test_calibration_frames_use_select_seeds_only():
    obs, prov = calibration_observations("metaworld_mt6", per_task=1)
    suite = load_suite("metaworld_mt6")
    assert len(obs) == len(suite.tasks) and prov["split"] == "select"
    used = {s for seeds in prov["seeds"].values() for s in seeds}
    assert used <= set(suite.seeds["select"]) and not used & set(suite.seeds["test"])
    b = collate(obs)
    assert b["image"].shape == (len(obs), 64, 64, 3) and b["image"].dtype == np.uint8
    assert b["state"].shape == (len(obs), 4) and len(b["instruction"]) == len(obs)
