"""Tissue throughput: mm² of tissue segmented per minute, as a user sees it.

Each case runs the real client (``fseg segment``) with its embedded server on
one slide, as a new user would, and is timed from process start to exit
(start-up, model loading, planning, streaming, vectorizing and writing
included). The slide's summary gives the tissue area, the pixels that went
through the model against the tissue's pixels, and the stages inside the
server. Cases:

* an 8,000 x 8,000 px pyramidal JPEG TIFF made from the shared
  CMU-1-Small-Region.svs (real H&E, 0.499 µm/px) with tools/synthetic_slide.py;
* CMU-1-Small-Region.svs itself;

each with ``timm:resnet50`` (random weights saved as a checkpoint, a bank
fitted at 0.5 µm/px beforehand) and with ``stain`` at its default (bank
fitted beforehand). Two torch threads, as the peers were measured with.

``--peers CMD`` also runs another tool set on the same slides in the same
run, alternating with fseg round by round. CMD is a command that accepts
``--slide PATH --tissue-mm2 X --json OUT`` and writes
``{"results": [{"tool", "ok", "wall_s", "own_tissue_mm2", "model_px", ...}]}``
(the scratch script that drives TIAToolbox, LazySlide and WSInfer lives
outside this repository: they are never project dependencies).

    python bench/bench_tissue_rate.py [--rounds 1] [--cases 8k-resnet50,cmu-stain]
        [--peers "/work/peers/venv/bin/python /work/peers/run_peers.py"]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))
from common import SHARED_DIR, print_table, write_json  # noqa: E402

BIN = Path(sys.executable).parent
CMU = SHARED_DIR / "slides" / "CMU-1-Small-Region.svs"
THREADS = "2"
STAGES = ("plan", "stream", "extract", "factorize", "read_threads", "vectorize")


def prepare(work: Path) -> dict[str, Path]:
    """The 8k slide, random ResNet-50 weights and the two banks (not timed)."""
    import timm
    import torch
    from synthetic_slide import pattern_from, write_slide

    pattern, mpp = pattern_from(CMU, 2048)
    slide = write_slide(work / "slide8k.tiff", pattern, 8000, mpp)
    torch.manual_seed(0)
    weights = work / "resnet50-random.pth"
    torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), weights)
    files = {"8k": slide, "cmu": CMU, "weights": weights}
    for name, args in {
        "bank-resnet50": ["--extractor", "timm:resnet50", "--weights", str(weights),
                          "--target-mpp", "0.5"],
        "bank-stain": ["--extractor", "stain"],
    }.items():  # fmt: skip
        files[name] = work / f"{name}.safetensors"
        subprocess.run(
            [str(BIN / "fseg-server"), "fit-concepts", str(slide), "--k", "8",
             "--out", str(files[name]), *args],
            check=True, capture_output=True, env=_env(),
        )  # fmt: skip
    return files


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS}


def run_fseg(files: dict[str, Path], slide: str, extractor: str, out: Path) -> dict:
    """One ``fseg segment`` process, timed from start to exit."""
    model = (
        ["--extractor", "timm:resnet50", "--weights", str(files["weights"]),
         "--concepts", str(files["bank-resnet50"])]
        if extractor == "resnet50"
        else ["--extractor", "stain", "--concepts", str(files["bank-stain"])]
    )  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "fseg"), "segment", str(files[slide]), "--out", str(out), *model,
         "--progress", "none", "--device", "cpu"],
        capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"fseg segment failed: {done.stderr.strip()}")
    summary = json.loads(next(out.glob("*.json")).read_text())
    tissue_mm2 = summary["tissue"]["area_um2"] / 1e6
    timings, tiles = summary["timings_s"], summary["tiles"]
    return {
        "case": f"{slide}-{extractor}",
        "tool": "fseg",
        "wall_s": wall,
        "server_s": timings["total"],
        "tissue_mm2": tissue_mm2,
        "mm2_per_min": tissue_mm2 / wall * 60,
        "mm2_per_min_in_server": tissue_mm2 / timings["total"] * 60,
        "regions": tiles["processed"],
        "model_px_per_tissue_px": tiles["model_px_per_tissue_px"],
        "model_mpx": tiles["model_px"] / 1e6,
        **{f"{stage}_s": timings.get(stage, 0.0) for stage in STAGES},
    }


def run_peers(command: str, slide: Path, tissue_mm2: float, case: str, work: Path) -> list[dict]:
    """The peer tools on the same slide, each timed by the peer script from start to exit."""
    out = work / f"peers-{case}.json"
    subprocess.run(
        [*shlex.split(command), "--slide", str(slide), "--tissue-mm2", str(tissue_mm2),
         "--json", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    rows = []
    for result in json.loads(out.read_text())["results"]:
        if not result.get("ok"):
            continue
        rows.append({
            "case": case,
            "tool": result["tool"],
            "wall_s": result["wall_s"],
            "tissue_mm2": tissue_mm2,  # fseg's tissue, so every tool is judged on one area
            "mm2_per_min": tissue_mm2 / result["wall_s"] * 60,
            "own_tissue_mm2": result.get("own_tissue_mm2"),
            "model_px_per_tissue_px": result["model_px"] / (tissue_mm2 / 0.25e-6),
            "model_mpx": result["model_px"] / 1e6,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--cases",
        default="8k-resnet50,cmu-resnet50,8k-stain,cmu-stain",
        help="slide-extractor pairs: slide 8k or cmu, extractor resnet50 or stain",
    )
    parser.add_argument("--peers", help="a peer-tool command (see the module docstring)")
    args = parser.parse_args()
    cases = [tuple(case.split("-")) for case in args.cases.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = prepare(work)
        for round_ in range(args.rounds):
            for slide, extractor in cases:
                out = work / f"out-{round_}-{slide}-{extractor}"
                row = run_fseg(files, slide, extractor, out)
                rows.append({"round": round_, **row})
                if args.peers and extractor == "resnet50":
                    peers = run_peers(args.peers, files[slide], row["tissue_mm2"],
                                      row["case"], work)  # fmt: skip
                    rows.extend({"round": round_, **peer} for peer in peers)
    brief = [
        {k: r.get(k) for k in ("round", "case", "tool", "wall_s", "tissue_mm2", "mm2_per_min",
                               "mm2_per_min_in_server", "model_px_per_tissue_px", "regions")}
        for r in rows
    ]  # fmt: skip
    print_table(brief, "tissue throughput (whole process, start-up included; CPU, 2 threads)")
    stages = [
        {"case": r["case"], **{s: r[f"{s}_s"] for s in ("server", *STAGES)}}
        for r in rows
        if r["tool"] == "fseg"
    ]
    print_table(
        stages, "fseg stages inside the server, seconds (read_threads: summed over readers)"
    )
    print(
        "\ntargets: timm:resnet50 on the 8k slide >= 20 mm²/min (whole process) and >= 24 "
        "inside the server; model px per tissue px <= 1.2"
    )
    write_json("tissue_rate", {"rows": rows})


if __name__ == "__main__":
    main()
