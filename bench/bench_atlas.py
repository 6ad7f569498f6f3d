"""The concept atlas: how long ``fseg atlas`` takes, beside segmenting the same inputs.

For the shared WSSS4LUAD validation patches (31 images), for
CMU-1-Small-Region.svs, and for a 16,000 px slide made of CMU-1's tissue
(``tools/synthetic_slide.py``; large enough that 16 tiles are a small part
of it): a stain bank (k = 8) is fitted on the inputs with
``fseg-server fit-concepts``; then, each as its own whole process with its
embedded local server, ``fseg atlas`` with that bank (its provenance shows the
windows k-means saw), ``fseg atlas`` with the same bank stripped of its
provenance (tiles drawn from the inputs, as for a published bank), and
``fseg segment`` of every input with the bank. The atlas should cost about
one pass over the tiles it samples, not a segmentation of every input.

    python bench/bench_atlas.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from synthetic_slide import pattern_from, write_slide

from common import SHARED_DIR, print_table, write_json
from fseg_server.concepts import load_bank

K = 8
LARGE_PX = 16_000


def timed(*command: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def case(name: str, inputs: list[Path], work: Path) -> dict:
    py = sys.executable
    bank, bare = work / "bank.safetensors", work / "bare.safetensors"
    paths = [str(p) for p in inputs]
    fit = timed(py, "-m", "fseg_server", "fit-concepts", *paths, "--k", str(K), "--out", str(bank))
    replace(load_bank(bank), provenance=None, digest="").save(bare)
    quiet = ("--progress", "none")
    atlas = timed(py, "-m", "fseg_client", "atlas", str(bank), "--k", str(K), *paths,
                  "--out", str(work / "atlas"), *quiet)  # fmt: skip
    drawn = timed(py, "-m", "fseg_client", "atlas", str(bare), "--k", str(K), *paths,
                  "--out", str(work / "drawn"), *quiet)  # fmt: skip
    segment = timed(py, "-m", "fseg_client", "segment", *paths, "--concepts", str(bank),
                    "--k", str(K), "--out", str(work / "seg"), *quiet)  # fmt: skip
    return {
        "inputs": name,
        "count": len(inputs),
        "fit_s": round(fit, 1),
        "atlas_s": round(atlas, 1),
        "atlas_no_provenance_s": round(drawn, 1),
        "segment_s": round(segment, 1),
        "atlas_over_segment": round(atlas / segment, 2),
    }


def main() -> None:
    cases = {
        "WSSS4LUAD validation patches": sorted(
            (SHARED_DIR / "wsss4luad-val" / "images").glob("*.png")
        ),
        "CMU-1-Small-Region.svs": [SHARED_DIR / "slides" / "CMU-1-Small-Region.svs"],
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="fseg-bench-atlas-") as tmp:
        cmu = cases["CMU-1-Small-Region.svs"][0]
        pattern, mpp = pattern_from(cmu, 2048)
        large = write_slide(Path(tmp) / "large.tiff", pattern, LARGE_PX, mpp)
        cases[f"{LARGE_PX:,} px slide of CMU-1 tissue"] = [large]
        for index, (name, inputs) in enumerate(cases.items()):
            work = Path(tmp) / str(index)
            work.mkdir()
            rows.append(case(name, inputs, work))
    print_table(rows, f"fseg atlas, stain, k = {K}: whole processes, local server included (s)")
    write_json("bench_atlas", {"k": K, "extractor": "stain", "rows": rows})


if __name__ == "__main__":
    main()
