"""Regression: MuJoCo EGL rendering (Mesa's LLVM) followed by torch importing triton used to segfault.

``latentstack`` preloads triton's library on import (see ``latentstack._preload_triton``); this runs the failing
sequence in a fresh process: render, then an optimizer (torch imports triton lazily), then triton itself.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

SCRIPT = """
import latentstack, mujoco, torch
m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><light pos='0 0 3'/><geom size='.1'/></worldbody></mujoco>")
d = mujoco.MjData(m); r = mujoco.Renderer(m, 32, 32); mujoco.mj_forward(m, d); r.update_scene(d); r.render()
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
import triton
print("survived", triton.__version__)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_render_then_triton_does_not_crash():
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env,
                       check=False)
    assert r.returncode == 0 and "survived" in r.stdout, (r.returncode, r.stderr[-2000:])
