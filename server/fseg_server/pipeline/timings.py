"""A stopwatch of named stages: wall seconds per stage, summed over its laps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Wall seconds per stage."""

    stages: dict[str, float] = field(default_factory=dict)

    def time(self, stage: str) -> _Lap:
        return _Lap(self, stage)


class _Lap:
    def __init__(self, timings: Timings, stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        self.timings.stages[self.stage] = self.timings.stages.get(self.stage, 0.0) + elapsed
