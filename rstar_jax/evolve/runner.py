"""The stage runner: `<workdir>/manifest.json` records each finished stage with its result and
seconds, so a restarted run skips what is done."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax

from rstar_jax.data.records import write_json_atomic
from rstar_jax.parallel.hosts import barrier

MANIFEST = "manifest.json"


@dataclasses.dataclass
class Manifest:
    """`<workdir>/manifest.json`: stage name -> {"result": ..., "seconds": ...}, in run order."""

    path: str
    stages: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, workdir: str) -> Manifest:
        path = os.path.join(workdir, MANIFEST)
        if not os.path.exists(path):
            return cls(path, {})
        try:
            with open(path, encoding="utf-8") as f:
                return cls(path, json.load(f)["stages"])
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not a manifest written by rstar-jax evolve ({e})") from None

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Runs a stage unless the manifest has it; every process runs it, process 0 records it."""
        if name in self.stages:
            return self.stages[name]["result"]
        start = time.perf_counter()
        result = fn()
        barrier(f"stage {name}")
        self.stages[name] = {"result": result, "seconds": round(time.perf_counter() - start, 2)}
        if jax.process_index() == 0:
            write_json_atomic(self.path, {"stages": self.stages})
        return result

    def seconds(self, prefix: str) -> dict[str, float]:
        return {name[len(prefix):]: s["seconds"] for name, s in self.stages.items() if name.startswith(prefix)}
