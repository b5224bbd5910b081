"""The environment the setup script builds: CPU torch only, torchvision importable through the shim."""
import subprocess
import sys

import torch


def test_cpu_torch_only():
    assert torch.__version__ == "2.13.0+cpu"
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
