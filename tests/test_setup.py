"""The environment the setup script builds: the exact pins of constraints.txt, CPU torch only, torchvision
importable through the shim."""
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def constraint_pins() -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line in constraints.txt (the only exact pins: `make`'s)."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", line.split("#")[0].strip())
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def test_make_installs_the_constraint_pins():
    pins = constraint_pins()
    assert {"torch", "torchvision", "mujoco", "lerobot", "metaworld"} <= set(pins)
    installed = {name: metadata.version(name).split("+")[0] for name in pins}
    assert installed == pins
    # requirement files name packages; the versions live in constraints.txt only
    for req in ("requirements.txt", "requirements-nodeps.txt"):
        pinned = [line for line in (ROOT / req).read_text().splitlines() if "==" in line.split("#")[0]]
        assert not pinned, f"{req}: exact pins belong in constraints.txt: {pinned}"


def test_cpu_torch_only():
    assert torch.__version__ == constraint_pins()["torch"] + "+cpu"
    out = subprocess.run([sys.executable, "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
    assert not [line for line in out.splitlines() if line.lower().startswith("nvidia")]


def test_lerobot_imports_first_in_a_fresh_interpreter():
    # lerobot probes torchvision with importlib.util.find_spec before importing it; the shim must survive that.
    code = (
        "from lerobot.datasets.lerobot_dataset import LeRobotDataset\n"
        "import torch, torchvision\n"
        "boxes = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1.1], [2, 2, 3, 3.0]])\n"
        "print(torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[0, 2]"
