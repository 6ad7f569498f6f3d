"""Shared plumbing for the benchmarks: a printed table and a JSON record.

Every benchmark in this folder measures figures in one run and compares
ratios, never absolute wall-clock thresholds, because the machines it runs on
are shared and noisy. Results land in ``bench/results/<name>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def machine() -> dict[str, Any]:
    """Describe the machine the figures were measured on."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def print_table(rows: Sequence[dict[str, Any]], title: str = "") -> None:
    """Print rows (dicts with the same keys) as an aligned text table."""
    if not rows:
        print(f"{title}: no rows")
        return
    keys = list(rows[0])
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    if title:
        print(f"\n{title}")
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with the machine description to ``bench/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine()}
    record.update(payload)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)
    print(f"\nwrote {path}")
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
