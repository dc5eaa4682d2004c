"""The stage runner: `<workdir>/manifest.json` records each finished stage with its result,
seconds and machine, so a restarted run skips what is done."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax

from rstar_jax.data.records import write_json_atomic
from rstar_jax.parallel.hosts import barrier, machine

MANIFEST = "manifest.json"


@dataclasses.dataclass
class Manifest:
    """`<workdir>/manifest.json`: stage name -> {"result": ..., "seconds": ..., "machine": ...}
    (`hosts.machine`), in run order, and under "started" how often each unfinished stage has
    started. A stage finished on a later try records its "attempts": its seconds time the last try
    only (a kill leaves no end time)."""

    path: str
    stages: dict[str, dict[str, Any]]
    started: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, workdir: str) -> Manifest:
        path = os.path.join(workdir, MANIFEST)
        if not os.path.exists(path):
            return cls(path, {})
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            return cls(path, saved["stages"], saved.get("started", {}))
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not a manifest written by rstar-jax evolve ({e})") from None

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Runs a stage unless the manifest has it; every process runs it, process 0 records it."""
        if name in self.stages:
            return self.stages[name]["result"]
        attempt = self.started[name] = self.started.get(name, 0) + 1
        self._write()
        start = time.perf_counter()
        result = fn()
        barrier(f"stage {name}")
        del self.started[name]
        self.stages[name] = {"result": result, "seconds": round(time.perf_counter() - start, 2),
                             "machine": machine(), **({"attempts": attempt} if attempt > 1 else {})}
        self._write()
        return result

    def _write(self) -> None:
        if jax.process_index() == 0:
            write_json_atomic(self.path, {"stages": self.stages, **({"started": self.started} if self.started else {})})

    def resumed(self, prefix: str) -> list[str]:
        """The stages under `prefix` that finished on a later try than their first."""
        return [name[len(prefix):] for name, s in self.stages.items()
                if name.startswith(prefix) and s.get("attempts", 1) > 1]

    def machines(self, prefix: str) -> dict[str, str]:
        """Stage -> the machine it ran on (older manifests name none)."""
        return self._field(prefix, "machine")

    def seconds(self, prefix: str) -> dict[str, float]:
        return self._field(prefix, "seconds")

    def _field(self, prefix: str, key: str) -> dict[str, Any]:
        """Stage (less `prefix`) -> its record's `key`, for the stages under `prefix` that have one."""
        return {name[len(prefix):]: s[key] for name, s in self.stages.items() if name.startswith(prefix) and key in s}
