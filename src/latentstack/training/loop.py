"""The one supervised training loop (DESIGN.md: ``training/``), used by the VLA, ACT, LION and stereo trainers.

Each model keeps only what is its own: a ``step_fn(step) -> (loss, info)`` that makes the step's batch and
computes the loss (``info``: extra scalars to log), an optimizer (and scheduler) built its own way, and
optionally an ``after_step`` hook (e.g. stereo's CoDyRA thresholding) and a model save function. The loop
owns the rest, in this order per step::

    loss, info = step_fn(step); optimizer.zero_grad(); loss.backward(); [clip]; optimizer.step();
    [scheduler.step()]; [after_step(step)]

Resumable bit for bit: every ``checkpoint_every`` steps ``out_dir/checkpoints/step_XXXXXXX/`` receives the
model (``save_model``, default ``model.safetensors``), ``training_state.safetensors`` (optimizer moments, torch
RNG states) and ``training_state.json`` (step, scheduler, optimizer hyper-parameters, numpy RNG states and
other named state, the log history and the open log window); ``latest.json`` points at the newest and only
the last ``keep_last`` are kept. With ``resume=True`` the loop continues from the newest one. No pickle: the
state is safetensors + JSON. Outputs in ``out_dir``: ``train_log.json`` (``log_extra`` + step + history) and a
loss plot PNG. The tqdm bar is drawn only when stderr is a terminal.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .threads import ThreadTuner

__all__ = [
    "STATE_FORMAT_VERSION",
    "LoopResult",
    "latest_checkpoint",
    "load_training_state",
    "plot_history",
    "save_training_state",
    "train_supervised",
]

# 1: policies/train.py's own format (same files); 2: named generators / JSON state and the open log window.
STATE_FORMAT_VERSION = 2
STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"
MODEL_FILE = "model.safetensors"

StepFn = Callable[[int], "tuple[torch.Tensor, Mapping[str, Any]]"]


@dataclass
class LoopResult:
    step: int  # optimizer steps done in total (over resumed sessions)
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False  # by session_steps / time_budget_s
    checkpoint: Path | None = None  # newest checkpoint written by this call
    wall_s: float = 0.0  # this call's time in the step loop


# --------------------------------------------------------------------------- state <-> safetensors + JSON


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    # load_state_dict casts the moments to each parameter's device and dtype
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    """Scheduler state without what JSON cannot hold (functions: rebuilt by the caller's constructor)."""
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


def _cuda_rng_states() -> list[torch.Tensor]:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(torch.cuda.get_rng_state_all())
    return []


def save_training_state(
    ckpt_dir: str | os.PathLike,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    history: Sequence[Mapping[str, Any]],
    state: Mapping[str, Any] | None = None,
    window: Mapping[str, list[float]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """``training_state.safetensors`` + ``training_state.json`` in ``ckpt_dir`` (the model is saved apart).

    ``state``: name -> ``torch.Generator`` | ``numpy.random.Generator`` | object with JSON
    ``state_dict()`` / ``load_state_dict()`` (e.g. a sampler's position)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors, opt_meta = _optimizer_to_flat(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    for i, s in enumerate(_cuda_rng_states()):
        tensors[f"rng.cuda.{i}"] = s
    numpy_rng: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    for name, obj in (state or {}).items():
        if isinstance(obj, torch.Generator):
            tensors[f"rng.{name}"] = obj.get_state()
        elif isinstance(obj, np.random.Generator):
            numpy_rng[name] = obj.bit_generator.state
        else:
            objects[name] = obj.state_dict()
    save_file(tensors, str(ckpt_dir / STATE_TENSORS))
    doc = {
        "format_version": STATE_FORMAT_VERSION,
        "step": int(step),
        "scheduler": _json_safe(scheduler.state_dict()) if scheduler is not None else None,
        "optimizer": opt_meta,
        "numpy_rng": numpy_rng,
        "state": objects,
        "window": {k: list(v) for k, v in (window or {}).items()},
        "history": list(history),
        **({"extra": dict(extra)} if extra else {}),
    }
    tmp = ckpt_dir / (STATE_JSON + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, ckpt_dir / STATE_JSON)
    return ckpt_dir


def load_training_state(
    ckpt_dir: str | os.PathLike,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: Mapping[str, Any] | None = None,
) -> tuple[int, list[dict[str, Any]], dict[str, list[float]]]:
    """Restores optimizer, scheduler, RNGs and named state in place; returns ``(step, history, window)``."""
    ckpt_dir = Path(ckpt_dir)
    doc = json.loads((ckpt_dir / STATE_JSON).read_text())
    version = doc.get("format_version")
    if version not in (1, STATE_FORMAT_VERSION):
        raise ValueError(f"{ckpt_dir}: training state format {version} unsupported "
                         f"(this loop reads 1 and {STATE_FORMAT_VERSION})")
    if version == 1:  # the VLA trainer's own checkpoints: torch generators only, no open log window
        other = sorted(k for k, v in (state or {}).items() if not isinstance(v, torch.Generator))
        if other:
            raise ValueError(f"{ckpt_dir}: a format-1 training state holds no {other}; cannot resume this run")
    tensors = load_file(str(ckpt_dir / STATE_TENSORS))
    _optimizer_from_flat(optimizer, tensors, doc["optimizer"])
    if scheduler is not None:
        if doc.get("scheduler") is None:
            raise ValueError(f"{ckpt_dir}: no scheduler state saved, but this run has a scheduler")
        scheduler.load_state_dict(doc["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                       key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    for name, obj in (state or {}).items():
        if isinstance(obj, torch.Generator):
            obj.set_state(tensors[f"rng.{name}"])
        elif isinstance(obj, np.random.Generator):
            obj.bit_generator.state = doc["numpy_rng"][name]
        else:
            obj.load_state_dict(doc["state"][name])
    window = {k: [float(x) for x in v] for k, v in doc.get("window", {}).items()}
    return int(doc["step"]), list(doc["history"]), window


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``out_dir/checkpoints/latest.json`` points at, if complete."""
    ckpts = Path(out_dir) / "checkpoints"
    pointer = ckpts / "latest.json"
    if not pointer.is_file():
        return None
    path = ckpts / json.loads(pointer.read_text())["dir"]
    return path if (path / STATE_JSON).is_file() else None


def _default_save_model(model: torch.nn.Module) -> Callable[[Path, int], None]:
    def save(directory: Path, step: int) -> None:
        # copies: tied / shared tensors become separate entries, which safetensors requires
        sd = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(directory / MODEL_FILE), metadata={"train_step": str(step)})

    return save


def _default_load_model(model: torch.nn.Module) -> Callable[[Path], None]:
    def load(directory: Path) -> None:
        model.load_state_dict(load_file(str(directory / MODEL_FILE)), strict=True)

    return load


# --------------------------------------------------------------------------- plot / log


def plot_history(history: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                 keys: Sequence[str] = ("loss", "lr"), title: str = "") -> None:
    """One panel per key of ``keys`` present in ``history`` (log scale for positive loss-like values)."""
    keys = [k for k in keys if any(k in h for h in history)]
    if not history or not keys:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys) + 1, 3.5), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(h["step"], h[k]) for h in history if k in h and h[k] is not None]
        x, y = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(x, y, lw=1, color="tab:orange" if k == "lr" else None)
        if k != "lr" and y and min(y) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate" if k == "lr" else k)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the loop


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """> 0: that many intra-op threads for the block; None / 0 (tuner) leave the count, restored after."""
    prev = torch.get_num_threads()
    if num_threads is not None and num_threads > 0:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if num_threads is not None:
            torch.set_num_threads(prev)


def train_supervised(
    model: torch.nn.Module,
    step_fn: StepFn,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    scheduler: Any = None,
    grad_clip: float | None = None,
    clip_parameters: Iterable[torch.nn.Parameter] | None = None,
    after_step: Callable[[int], Mapping[str, Any] | None] | None = None,
    state: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    log_every: int = 1,
    plot_every: int | None = None,
    checkpoint_every: int = 0,
    keep_last: int = 2,
    progress: bool = True,
    plot: bool = True,
    plot_keys: Sequence[str] = ("loss", "lr"),
    plot_name: str = "loss_curve.png",
    log_name: str = "train_log.json",
    log_extra: Mapping[str, Any] | None = None,
    desc: str = "train",
    session_steps: int | None = None,
    time_budget_s: float | None = None,
    num_threads: int | None = None,
    save_model: Callable[[Path, int], None] | None = None,
    load_model: Callable[[Path], None] | None = None,
    check_finite: bool = False,
) -> LoopResult:
    """Runs (or resumes) ``steps`` optimizer steps; see the module docstring for the order of operations.

    ``step_fn(step)``: ``step`` = optimizer steps done before this one (0-based); returns ``(loss, info)``,
    ``info`` a mapping of scalars averaged into the log. ``after_step(step)`` runs after the optimizer /
    scheduler step and may return more scalars to log. ``state``: the run's random generators and other
    resumable state by name (see :func:`save_training_state`); the global torch RNG is always saved.
    ``log_every``: a history entry (window means, lr, speed) every that many steps and at the end.
    ``plot_every``: write the log + plot (default: with each checkpoint, or only at the end).
    ``checkpoint_every`` > 0 writes rotated checkpoints (and one at the end / at an early stop); 0 none.
    ``num_threads``: None leaves torch's thread count alone, > 0 fixes it for the call, 0 re-measures
    1 vs all cores (:class:`ThreadTuner`). ``session_steps`` / ``time_budget_s`` stop early (checkpoint if
    checkpointing) so a later call resumes. ``save_model(dir, step)`` / ``load_model(dir)`` default to the
    model's state dict in ``model.safetensors``.
    """
    if steps < 0 or log_every < 1 or keep_last < 1 or checkpoint_every < 0:
        raise ValueError("need steps >= 0, log_every >= 1, keep_last >= 1, checkpoint_every >= 0")
    with _torch_threads(num_threads):
        out = Path(out_dir) if out_dir is not None else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        save_model = save_model or _default_save_model(model)
        load_model = load_model or _default_load_model(model)
        state = dict(state or {})
        plot_every = plot_every or checkpoint_every or max(steps, 1)
        clip_params = list(clip_parameters) if clip_parameters is not None else list(model.parameters())

        step, history, window = 0, [], {}
        latest = latest_checkpoint(out) if (resume and out is not None) else None
        if latest is not None:
            load_model(latest)
            step, history, window = load_training_state(latest, optimizer, scheduler, state)
            print(f"[train] resumed from {latest} at step {step}", file=sys.stderr)
        result = LoopResult(step=step, history=history)

        def write_log() -> None:
            if out is None:
                return
            _write_json_atomic(out / log_name, {**dict(log_extra or {}), "step": step, "history": history})
            if plot:
                plot_history(history, out / plot_name, plot_keys)

        def checkpoint(now: int) -> None:
            assert out is not None
            ckpts = out / "checkpoints"
            name = f"step_{now:07d}"
            d = ckpts / name
            d.mkdir(parents=True, exist_ok=True)
            save_model(d, now)
            save_training_state(d, optimizer, scheduler, now, history, state, window)
            _write_json_atomic(ckpts / "latest.json", {"dir": name, "step": now})
            old = sorted(p for p in ckpts.glob("step_*") if p.is_dir() and p.name != name)
            for p in old[: max(0, len(old) - (keep_last - 1))]:
                shutil.rmtree(p, ignore_errors=True)
            result.checkpoint = d

        cores = os.cpu_count() or 1
        tuner = ThreadTuner(sorted({1, cores})) if num_threads == 0 and cores > 1 else None
        bar = None
        if progress:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, CI, subprocesses)
            bar = tqdm(total=steps, initial=step, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0,
                       disable=None)
        recent: deque[float] = deque(maxlen=10)
        elapsed_base = float(history[-1].get("elapsed_s", 0.0)) if history else 0.0
        t_start = time.perf_counter()
        session_start = step
        model.train()
        try:
            while step < steps:
                if (session_steps is not None and step - session_start >= session_steps) or (
                    time_budget_s is not None and time.perf_counter() - t_start >= time_budget_s
                ):
                    result.stopped_early = True
                    break
                if tuner is not None:
                    tuner.before_step()
                t_step = time.perf_counter()
                loss, info = step_fn(step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(clip_params, grad_clip) if grad_clip is not None else None
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                more = after_step(step) if after_step is not None else None
                step += 1
                if tuner is not None:
                    tuner.after_step(time.perf_counter() - t_step)
                value = float(loss.detach())
                if check_finite and not math.isfinite(value):
                    raise FloatingPointError(f"non-finite loss {value} at step {step}")
                scalars = {"loss": value}
                if gn is not None:
                    scalars["grad_norm"] = float(gn)
                for src in (info, more or {}):
                    for k, v in src.items():
                        scalars[k] = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                for k, v in scalars.items():
                    window.setdefault(k, []).append(v)
                recent.append(value)
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{np.mean(recent):.4f}", refresh=False)
                if step % log_every == 0 or step == steps:
                    elapsed = time.perf_counter() - t_start
                    lr = scheduler.get_last_lr()[0] if scheduler is not None else optimizer.param_groups[0]["lr"]
                    entry: dict[str, Any] = {"step": step}
                    entry.update({k: float(np.mean(v)) for k, v in window.items()})
                    entry.update({
                        "lr": float(lr),
                        "steps_per_s": (step - session_start) / max(elapsed, 1e-9),
                        "threads": torch.get_num_threads(),
                        "elapsed_s": elapsed_base + elapsed,  # cumulative over resumed sessions
                    })
                    history.append(entry)
                    window = {}
                if step % plot_every == 0 or step == steps:
                    write_log()
                if out is not None and checkpoint_every > 0 and step % checkpoint_every == 0 and step < steps:
                    checkpoint(step)
        finally:
            if bar is not None:
                bar.close()
        result.wall_s = time.perf_counter() - t_start
        result.step = step
        if out is not None and checkpoint_every > 0:
            checkpoint(step)
        write_log()
        if result.stopped_early:
            print(f"[train] stopped at step {step}/{steps}; call again with resume to continue", file=sys.stderr)
        return result
