"""``--report tensorboard``: TensorBoard event files under ``<out>/tensorboard/<run>/``, one directory per run:
``train/*`` per meta-step (loss and the learner's step metrics), ``val/*`` at each meta-validation and ``test/*`` at the
final evaluation (at the last step). Needs the optional extra ``metabench[tensorboard]``;
view with ``tensorboard --logdir results/tensorboard``."""

from __future__ import annotations

import json
from typing import Any

from metabench.plugins.reporters.tracking import Tracker, run_name, scalars


class TensorBoardRun:
    def __init__(self, spec: Any, options: Any):
        from torch.utils.tensorboard import SummaryWriter  # the optional extra: imported only when enabled

        self.writer = SummaryWriter(log_dir=str(options.out / "tensorboard" / run_name(spec)))
        self.writer.add_text("config", f"```\n{json.dumps(spec.to_dict(), indent=2)}\n```")
        self.last_step = 0

    def step(self, step: int, metrics: dict[str, float]) -> None:
        self.last_step = step
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def evaluation(self, split: str, scores: dict[str, Any]) -> None:
        step = scores.get("step") or self.last_step  # the test scores come once, after the last step
        for key, value in scalars(scores).items():
            self.writer.add_scalar(f"{split}/{key}", value, step)
        self.writer.flush()

    def finish(self, record: dict[str, Any]) -> None:
        self.writer.add_text("status", f"{record['status']}: {record.get('error') or ''}", self.last_step)
        self.writer.close()


tracker = Tracker("tensorboard", TensorBoardRun)
