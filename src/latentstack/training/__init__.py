"""Training: the one supervised loop (:func:`train_supervised`) every supervised trainer runs on.

The model-specific parts (batches, loss, optimizer recipe, artifact saving) stay with each model; the
RL trainer (``koopman.trainer``) keeps its own update.
"""

from __future__ import annotations

from .loop import (
    STATE_FORMAT_VERSION,
    LoopResult,
    latest_checkpoint,
    load_training_state,
    plot_history,
    save_training_state,
    train_supervised,
)
from .threads import ThreadTuner

__all__ = [
    "STATE_FORMAT_VERSION",
    "LoopResult",
    "ThreadTuner",
    "latest_checkpoint",
    "load_training_state",
    "plot_history",
    "save_training_state",
    "train_supervised",
]
