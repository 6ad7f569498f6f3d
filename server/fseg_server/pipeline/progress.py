"""How a job reports its progress, from the pipeline up to the client's progress bars.

``progress(stage, done, total)``: ``stage`` names a step as the user sees it
("plan", "fit", "segment", "vectorize", "atlas" ...), and ``done`` of ``total``
count that step's units (tiles, windows, slides).
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
