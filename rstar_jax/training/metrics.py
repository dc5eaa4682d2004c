"""Metrics of training, search and evaluation to `metrics.jsonl` and TensorBoard in a workdir
(process 0 only)."""

from __future__ import annotations

import json
import os

import jax
from tensorboardX import SummaryWriter

from rstar_jax.data.records import read_jsonl


class MetricsWriter:
    """Appends one JSON line per logged step and mirrors scalars to TensorBoard.

    On resume from step k, lines of steps after k (written before the interruption) are dropped,
    so the file reads like one uninterrupted run.
    """

    def __init__(self, workdir: str, resume_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._next_step = resume_step + 1  # what `append` writes next
        if not self.enabled:
            return
        if os.path.exists(self.path):
            self._truncate_after(resume_step)
        self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

    @classmethod
    def appending(cls, workdir: str) -> MetricsWriter:
        """A writer that keeps every line already written and numbers its own steps after them
        (stages that log per chunk or batch of work, resumed or not)."""
        written = max((line["step"] for line in read_jsonl(os.path.join(workdir, "metrics.jsonl"))), default=0)
        return cls(workdir, resume_step=written)

    def _truncate_after(self, step: int) -> None:
        """Keeps the lines up to `step` (a torn last line, killed mid-write, goes too)."""
        kept = [line for line in read_jsonl(self.path) if line["step"] <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(line) + "\n" for line in kept)
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self._next_step = step + 1
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)
        self.tensorboard.flush()

    def append(self, metrics: dict[str, float]) -> None:
        """Writes `metrics` as the step after the last one (stages that count chunks or batches)."""
        self.write(self._next_step, metrics)

    def close(self) -> None:
        if self.enabled:
            self.tensorboard.close()
