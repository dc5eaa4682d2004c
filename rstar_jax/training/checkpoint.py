"""Orbax checkpoints of the train state plus the data position, kept for the last k saves."""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from rstar_jax.config import TrainConfig


class Checkpoints:
    """`workdir/checkpoints/<step>/{state, data}`; saves are asynchronous where orbax can."""

    def __init__(self, workdir: str, config: TrainConfig):
        options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, position: dict[str, int]) -> None:
        """Starts saving `state` (arrays, any sharding) and the JSON `position` at `step`."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(position)))

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, int]]:
        """The state at `step`, laid out as `abstract_state` (ShapeDtypeStructs with shardings)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
