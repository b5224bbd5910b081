"""The one supervised training loop: bit-identical resume, checkpoint rotation, log + plot, quiet progress."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from latentstack.training import latest_checkpoint, train_supervised

STEPS = 10


class _Order:
    """A resumable sampler position (JSON state), like LION's epoch-shuffled scan order."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.rng, self.n = rng, n
        self.order, self.pos = rng.permutation(n), 0

    def next(self) -> int:
        if self.pos == self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        self.pos += 1
        return int(self.order[self.pos - 1])

    def state_dict(self) -> dict[str, Any]:
        return {"order": [int(i) for i in self.order], "pos": self.pos}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.order, self.pos = np.asarray(d["order"]), int(d["pos"])


def _run(out: Path | None, *, scheduler: str = "onecycle", **kw: Any):
    """A tiny regression model whose batches use every kind of resumable state: the global torch RNG
    (dropout), a torch.Generator, a numpy Generator and a JSON-state sampler."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    x = torch.linspace(-1, 1, 60).reshape(20, 3)
    y = x.sum(1, keepdim=True) ** 2
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    if scheduler == "onecycle":  # momentum cycling rewrites betas in param_groups: must survive JSON
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=STEPS, pct_start=0.3)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    gen = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(2)
    order = _Order(len(x), rng)

    def step_fn(step: int):
        rows = torch.tensor([order.next() for _ in range(3)] + torch.randint(0, 20, (3,), generator=gen).tolist())
        noise = torch.from_numpy(rng.normal(0, 0.01, (6, 1)).astype(np.float32))
        err = model(x[rows]) - y[rows] - noise
        return (err**2).mean(), {"abs_err": err.abs().mean()}

    res = train_supervised(model, step_fn, opt, steps=STEPS, scheduler=sched, grad_clip=1.0,
                           state={"gen": gen, "rng": rng, "order": order}, out_dir=out, progress=False, **kw)
    return model, res


def _losses(res) -> list[float]:
    return [h["loss"] for h in res.history]


@pytest.mark.parametrize("scheduler", ["onecycle", "lambda"])
def test_resume_equals_uninterrupted_bit_for_bit(tmp_path, scheduler):
    full, full_res = _run(tmp_path / "full", scheduler=scheduler, checkpoint_every=3)
    out = tmp_path / "cut"
    _, first = _run(out, scheduler=scheduler, checkpoint_every=3, session_steps=4)  # cut between checkpoints
    assert first.stopped_early and first.step == 4 and first.checkpoint == out / "checkpoints" / "step_0000004"
    model, second = _run(out, scheduler=scheduler, checkpoint_every=3, resume=True)  # as a fresh process would
    assert second.step == STEPS and not second.stopped_early
    assert _losses(second) == _losses(full_res) and len(_losses(full_res)) == STEPS
    assert [h["abs_err"] for h in second.history] == [h["abs_err"] for h in full_res.history]
    assert [h["lr"] for h in second.history] == [h["lr"] for h in full_res.history]
    a, b = full.state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # without resume the same folder starts over and gives the uninterrupted run's first losses
    _, again = _run(out, scheduler=scheduler, checkpoint_every=3, resume=False, session_steps=2)
    assert _losses(again) == _losses(full_res)[:2]


def test_resume_of_a_finished_run_does_no_more_steps(tmp_path):
    _, done = _run(tmp_path, checkpoint_every=5)
    _, again = _run(tmp_path, checkpoint_every=5, resume=True)
    assert again.step == STEPS and again.history == done.history and again.wall_s < 5


def test_checkpoint_rotation_keeps_the_last_n(tmp_path):
    _, res = _run(tmp_path, checkpoint_every=2, keep_last=3)
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == ["step_0000006", "step_0000008", "step_0000010"]
    assert latest_checkpoint(tmp_path) == ckpts / "step_0000010" == res.checkpoint
    assert json.loads((ckpts / "latest.json").read_text()) == {"dir": "step_0000010", "step": 10}
    # safetensors + JSON only
    assert sorted(p.name for p in (ckpts / "step_0000010").iterdir()) == [
        "model.safetensors", "training_state.json", "training_state.safetensors"]
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]
    _run(tmp_path / "one", checkpoint_every=2, keep_last=1)
    assert [p.name for p in (tmp_path / "one" / "checkpoints").iterdir() if p.is_dir()] == ["step_0000010"]


def test_no_checkpoints_unless_asked(tmp_path):
    _run(tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    assert (tmp_path / "train_log.json").is_file()
    _, res = _run(None)  # no folder at all: nothing written, history returned
    assert len(res.history) == STEPS


def test_log_and_plot_written(tmp_path):
    _, res = _run(tmp_path, log_every=3, log_extra={"run": "tiny"}, plot_keys=("loss", "abs_err", "lr"),
                  plot_name="curve.png")
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["run"] == "tiny" and log["step"] == STEPS
    assert [h["step"] for h in log["history"]] == [3, 6, 9, 10]  # every log_every and the last step
    assert log["history"] == res.history
    for h in log["history"]:
        assert {"loss", "grad_norm", "abs_err", "lr", "steps_per_s", "elapsed_s", "threads"} <= set(h)
    # window means: the entry at step 3 averages steps 1..3 of a log_every=1 run
    _, per_step = _run(tmp_path / "every")
    assert res.history[0]["loss"] == pytest.approx(np.mean([h["loss"] for h in per_step.history[:3]]), rel=1e-12)
    png = (tmp_path / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step_fn(step: int):
        return model(torch.ones(4, 2)).pow(2).mean(), {}

    train_supervised(model, step_fn, opt, steps=3, progress=True, desc="quiet-run")
    assert "quiet-run" not in capsys.readouterr().err  # stderr captured by pytest: not a terminal

    tty = _FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    train_supervised(model, step_fn, opt, steps=3, progress=True, desc="tty-run")
    assert "tty-run" in tty.getvalue()  # the same call draws its bar on a terminal


def test_non_finite_loss_is_refused_and_threads_restored():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = torch.get_num_threads()

    def step_fn(step: int):
        return model(torch.ones(1, 2)).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="step 1"):
        train_supervised(model, step_fn, opt, steps=3, progress=False, check_finite=True, num_threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        train_supervised(model, step_fn, opt, steps=3, keep_last=0)


def _torch_only(out: Path, **kw: Any):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(5))

    def step_fn(step: int):
        rows = torch.randint(0, 20, (4,), generator=gen)
        return model(x[rows]).pow(2).mean(), {}

    res = train_supervised(model, step_fn, opt, steps=STEPS, state={"sampler": gen}, out_dir=out, progress=False,
                           checkpoint_every=4, **kw)
    return model, res


def test_format_1_checkpoints_of_the_old_vla_trainer_resume(tmp_path):
    """The VLA trainer's own format (v1: no numpy state, no log window) still resumes; a run that needs
    more state than v1 holds is refused."""
    full, full_res = _torch_only(tmp_path / "full")
    _torch_only(tmp_path / "cut", session_steps=4)
    state = tmp_path / "cut" / "checkpoints" / "step_0000004" / "training_state.json"
    doc = json.loads(state.read_text())
    v1 = {k: doc[k] for k in ("step", "scheduler", "optimizer", "history")} | {"format_version": 1}
    state.write_text(json.dumps(v1))
    model, res = _torch_only(tmp_path / "cut", resume=True)
    assert [h["loss"] for h in res.history] == [h["loss"] for h in full_res.history]
    assert torch.equal(model.weight, full.weight)

    _run(tmp_path / "np", checkpoint_every=3, session_steps=3)
    state = tmp_path / "np" / "checkpoints" / "step_0000003" / "training_state.json"
    doc = json.loads(state.read_text())
    state.write_text(json.dumps({**doc, "format_version": 1}))
    with pytest.raises(ValueError, match="format-1"):
        _run(tmp_path / "np", checkpoint_every=3, resume=True)
    state.write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(ValueError, match="unsupported"):
        _run(tmp_path / "np", checkpoint_every=3, resume=True)
