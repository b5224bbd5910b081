"""Training on a tiny synthetic LeRobotDataset: frame cache, action chunks, outputs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latentstack.policies.checkpoint import load_policy
from latentstack.policies.train import ThreadTuner, TrainConfig, build_policy, load_frames, main, train

TASKS = ["close the drawer", "open the door", "press the button"]
EPISODE_LENGTHS = [12, 9, 14, 10]
IMAGE = 32


def make_synthetic_dataset(root: Path) -> Path:
    """Same features as the MetaWorld recorder's dataset, at 32² for speed."""
    import torchvision  # noqa: F401  (see train._import_lerobot_dataset)
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.image": {
            "dtype": "image",
            "shape": (IMAGE, IMAGE, 3),
            "names": ["height", "width", "channel"],
        },
        "observation.state": {"dtype": "float32", "shape": (4,), "names": None},
        "action": {"dtype": "float32", "shape": (4,), "names": None},
    }
    ds = LeRobotDataset.create("test/synthetic", fps=80, features=features, root=root, use_videos=False)
    for ep, length in enumerate(EPISODE_LENGTHS):
        task = TASKS[ep % len(TASKS)]
        for i in range(length):
            img = np.zeros((IMAGE, IMAGE, 3), dtype=np.uint8)
            img[..., ep % 3] = 60
            img[4 + i : 8 + i, 10:14] = 255  # a moving block
            state = np.array([i / length, ep / 4, 0.5, 1.0 - i / length], dtype=np.float32)
            action = np.array(
                [ep * 100 + i, np.sin(i), -0.5, 1.0 if i < length / 2 else -1.0], dtype=np.float32
            )
            action[0] = (ep * 100 + i) / 1000.0  # encodes (episode, frame) for the chunk checks
            ds.add_frame(
                {"observation.image": img, "observation.state": state, "action": action, "task": task}
            )
        ds.save_episode()
    ds.finalize()
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def frames(dataset):
    return load_frames(dataset, "test/synthetic")


def tiny_cfg(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = {
        "dataset_root": str(dataset),
        "repo_id": "test/synthetic",
        "out_dir": str(out),
        "policy": "vla_tiny",
        "steps": 12,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_steps": 2,
        "log_every": 2,
        "plot_every": 6,
        "checkpoint_every": 6,
        "num_threads": 1,
        "progress": False,
    }
    base.update(kw)
    return TrainConfig(**base)


def test_frame_cache_and_action_chunks(frames):
    n = sum(EPISODE_LENGTHS)
    assert len(frames) == n and frames.num_episodes == len(EPISODE_LENGTHS)
    assert frames.images.shape == (n, 3, IMAGE, IMAGE) and frames.images.dtype == torch.uint8
    assert frames.states.shape == (n, 4) and frames.actions.shape == (n, 4)
    assert frames.fps == 80
    assert sorted(frames.tasks) == sorted(TASKS)
    assert [frames.tasks[i] for i in frames.task_index[[0, 12, 21, 35]].tolist()] == [
        TASKS[0],
        TASKS[1],
        TASKS[2],
        TASKS[0],
    ]
    # a frame 3 steps before the end of episode 1 (rows 12..20): chunk of 8 = 3 real + 5 padded
    tokens = torch.zeros(len(frames.tasks), 4, dtype=torch.long)
    b = frames.batch(torch.tensor([12 + 6]), chunk_size=8, task_tokens=tokens)
    assert b["action_is_pad"][0].tolist() == [False] * 3 + [True] * 5
    ep_frame = (b["action"][0, :, 0] * 1000).round().long().tolist()
    assert (
        ep_frame == [106, 107, 108] + [108] * 5
    )  # padded with the episode's last action, never the next episode's
    assert b["observation.image"].dtype == torch.uint8
    stats = frames.stats()
    assert torch.allclose(stats["action_mean"], frames.actions.mean(0))


def test_train_outputs_and_loss_decrease(dataset, frames, tmp_path):
    out = tmp_path / "run"
    final = train(tiny_cfg(dataset, out, steps=40, checkpoint_every=20, plot_every=20), data=frames)
    assert final == out / "policy"
    assert (out / "train_log.json").is_file() and (out / "loss_curve.png").stat().st_size > 1000
    log = json.loads((out / "train_log.json").read_text())
    hist = log["history"]
    assert [h["step"] for h in hist] == list(range(2, 41, 2))
    assert np.mean([h["loss"] for h in hist[-4:]]) < np.mean([h["loss"] for h in hist[:2]])
    assert log["dataset"]["frames"] == sum(EPISODE_LENGTHS)
    assert all(h["steps_per_s"] > 0 and h["lr"] > 0 for h in hist)
    policy = load_policy(final)
    assert policy.config.vocab == (
        "<pad>",
        "<unk>",
        "button",
        "close",
        "door",
        "drawer",
        "open",
        "press",
        "the",
    )
    assert torch.allclose(policy.normalizer.action_mean, frames.actions.mean(0))
    obs = {
        "image": np.zeros((IMAGE, IMAGE, 3), np.uint8),
        "state": np.zeros(4, np.float32),
        "instruction": "open the door",
    }
    policy.reset(0)
    assert policy.select_action(obs).shape == (4,)
    # no pickle anywhere in the outputs
    assert not [p for p in out.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]


def test_train_on_device(dataset, frames, tmp_path, device):
    """--device: the policy and its optimizer live on the device. On the CPU the run equals the default run bit for
    bit; on CUDA the noise and augmentation draws come from the device's generator, so it is checked to train
    (finite losses, weights moved), not to equal the CPU run."""
    got = load_policy(train(tiny_cfg(dataset, tmp_path / "dev", steps=4, checkpoint_every=0, device=device),
                            data=frames))
    log = json.loads((tmp_path / "dev" / "train_log.json").read_text())
    assert log["train_config"]["device"] == device
    assert all(np.isfinite(h["loss"]) for h in log["history"])
    if device == "cpu":
        ref = load_policy(train(tiny_cfg(dataset, tmp_path / "default", steps=4, checkpoint_every=0), data=frames))
        assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), got.state_dict().values()))
    else:
        torch.manual_seed(0)
        init = build_policy(tiny_cfg(dataset, tmp_path / "x"), frames)
        moved = [k for k, v in got.state_dict().items()
                 if v.is_floating_point() and not torch.equal(v.cpu(), init.state_dict()[k])]
        assert len(moved) > len(got.state_dict()) // 2


def test_resume_continues_step_count_bit_identically(dataset, frames, tmp_path):
    full = train(tiny_cfg(dataset, tmp_path / "full"), data=frames)

    out = tmp_path / "cut"
    partial = train(tiny_cfg(dataset, out, session_steps=6), data=frames)  # a session cut at step 6
    assert partial == out / "checkpoints" / "step_0000006"
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 6
    assert not (out / "policy").exists()
    assert sorted(p.name for p in partial.iterdir()) == [
        "config.json",
        "model.safetensors",
        "training_state.json",
        "training_state.safetensors",
    ]
    load_policy(partial)  # an intermediate checkpoint is a loadable policy

    resumed = train(tiny_cfg(dataset, out), data=frames)
    log = json.loads((out / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == list(range(2, 13, 2))
    elapsed = [h["elapsed_s"] for h in log["history"]]
    assert elapsed == sorted(elapsed)  # wall time accumulates over the resumed sessions
    a, b = load_policy(full).state_dict(), load_policy(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same weights as the uninterrupted run

    # resuming a finished run does no more steps
    again = train(tiny_cfg(dataset, out), data=frames)
    assert json.loads((out / "train_log.json").read_text())["step"] == 12 and again == resumed


def test_cli_entry_point(dataset, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "--dataset",
            str(dataset),
            "--repo-id",
            "test/synthetic",
            "--out",
            str(out),
            "--steps",
            "2",
            "--policy",
            "vla_tiny",
            "--batch-size",
            "4",
            "--num-threads",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out.strip().endswith("policy")
    assert load_policy(out / "policy").config.name == "vla_tiny"


def test_thread_tuner_picks_the_faster_setting():
    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner([1, 2], every=5, probe=2)
        fake = {1: 0.5, 2: 2.0}  # two threads oversubscribed: slower
        for _ in range(6):
            tuner.before_step()
            tuner.after_step(fake[torch.get_num_threads()])
        assert tuner.current == 1 and torch.get_num_threads() == 1
        fake = {1: 0.5, 2: 0.3}  # machine became idle: re-probed after `every` steps
        for _ in range(5 + 6):
            tuner.before_step()
            tuner.after_step(fake[torch.get_num_threads()])
        assert tuner.current == 2
    finally:
        torch.set_num_threads(before)
