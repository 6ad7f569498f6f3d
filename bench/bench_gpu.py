"""GPU throughput: UNI's architecture alone against the whole fseg server, same tiles, one run.

On a machine with a CUDA GPU:

1. write a synthetic slide (``tools/synthetic_slide.py``: procedural H&E at
   0.5 µm/px, ``--size`` pixels square) and fit a small concept bank on it;
2. start ``fseg-server serve --extractor uni --weights uni=random --device cuda``
   and segment the slide with the client (reading, tiling, the ViT in bf16,
   the factorization, stitching, vectorizing, rendering and streaming the
   results back all included), after a warm-up slide;
3. stop the server, then push tiles of the same slide, at the same size and
   the server's batch size, through the same model (random weights,
   ``fseg_server.device.inference_precision``: bf16 autocast) alone;
4. report tiles per second for both, their ratio (the goal: the server at
   80 % or more of the bare model) and the stage that limits the server,
   from the per-stage ``timings_s`` of the server's summary.

Without a GPU it says so and exits with status 0 (status 1 with
``--require-gpu``), measuring nothing. ``--device cpu --extractor stain`` runs
the same steps on the CPU as a quick check of the script itself; those
figures mean nothing.

    python bench/bench_gpu.py [--size 32768] [--batch-sizes 32,64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import print_table, write_json
from servers import ServerProcess, start_server

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 900  # building ViT-L with random weights and moving it to the GPU
GOAL = 0.8
BANK = "bench-gpu"
NO_GPU = (
    "bench_gpu: no CUDA GPU is visible to torch (torch.cuda.is_available() is False), "
    "so nothing was measured. Run it on a GPU machine "
    "(or try the script itself with --device cpu --extractor stain)."
)


def no_gpu_exit(require_gpu: bool, why: str = NO_GPU) -> None:
    print(why, file=sys.stderr)
    sys.exit(1 if require_gpu else 0)


def run(command: list[str], what: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench_gpu: {what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# -- the whole server ------------------------------------------------------------------


def start_fseg_server(workdir: Path, args: argparse.Namespace, bank: Path) -> ServerProcess:
    return start_server(
        workdir,
        "--extractor", args.extractor,
        "--weights", f"{args.extractor}=random", "--device", args.device,
        "--slide-root", str(workdir / "slides"), "--concepts", f"{BANK}={bank}",
        timeout_s=START_TIMEOUT_S,
    )  # fmt: skip


def segment(slide: Path, out: Path, address: str, k: int) -> tuple[dict, float]:
    """Segment one slide through the client; (the slide's summary JSON, wall seconds)."""
    started = time.perf_counter()
    run(
        python("fseg_client", "segment", str(slide), "--out", str(out), "--server", address,
               "--concepts", BANK, "--k", str(k), "--quiet"),
        f"segmenting {slide.name}",
    )  # fmt: skip
    wall = time.perf_counter() - started
    return json.loads((out / f"{slide.stem}.json").read_text()), wall


# -- the bare model --------------------------------------------------------------------


def read_tiles(slide_path: Path, summary: dict, count: int):
    """Up to ``count`` tiles of the slide as the server cut them: (n, S, S, 3) uint8.

    S is the tile core plus both margins at the working resolution; the
    tiles are read at the level the server read, resized when the working
    resolution differs from it, as the server does.
    """
    import numpy as np
    import openslide
    from PIL import Image

    tiles = summary.get("tiles", {})
    size = int(tiles["largest"]) + 2 * int(tiles["margin"])
    level = int(summary.get("level_read", 0))
    slide = openslide.OpenSlide(str(slide_path))
    try:
        downsample = slide.level_downsamples[level]
        mpp = summary.get("mpp") or float(slide.properties.get("openslide.mpp-x", 0.5))
        working = summary.get("working_mpp") or mpp
        read = max(1, round(size * working / (mpp * downsample)))  # level pixels per tile
        width, height = slide.level_dimensions[level]
        core = max(1, round(int(tiles["largest"]) * working / (mpp * downsample)))
        cells = [
            (x, y)
            for y in range(0, max(1, height - read), core)
            for x in range(0, max(1, width - read), core)
        ]
        step = max(1, len(cells) // count)  # spread over the whole slide
        images = []
        for x, y in cells[::step][:count]:
            region = slide.read_region(
                (int(x * downsample), int(y * downsample)), level, (read, read)
            )
            image = region.convert("RGB")
            if read != size:
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            images.append(np.asarray(image))
    finally:
        slide.close()
    return np.stack(images), size


def bare_model(
    args: argparse.Namespace, tiles_np, batch_sizes: list[int]
) -> dict[int, tuple[float, int]]:
    """(tiles per second, tiles timed) through the extractor alone, per batch size."""
    import torch

    from fseg_server.device import place, resolve_device
    from fseg_server.extract import create_extractor
    from fseg_server.pipeline.recipes import extract_features

    device = resolve_device(args.device)
    extractor = place(create_extractor(args.extractor, "random"), device)
    pool = torch.from_numpy(tiles_np).to(device)  # already on the device: no copies timed
    results = {}
    for batch_size in batch_sizes:
        whole = len(pool) // batch_size
        batches = [pool[i * batch_size : (i + 1) * batch_size] for i in range(whole)] or [pool]
        for batch in batches[: args.warmup_batches]:
            extract_features(extractor, batch)
        sync(device)
        done, started = 0, time.perf_counter()
        while done < args.bare_tiles or time.perf_counter() - started < args.bare_seconds:
            for batch in batches:
                extract_features(extractor, batch)
                done += len(batch)
        sync(device)
        results[batch_size] = (done / (time.perf_counter() - started), done)
    del extractor, pool
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- which stage limits the server -----------------------------------------------------


def stage_table(summary: dict, client_seconds: float, readers: int) -> list[dict]:
    """Seconds per stage of the timed slide, as a share of the client's wall time.

    ``read_threads`` sums the reader threads, so it is divided by their
    number; ``stream - extract - factorize`` is time the device worker did
    not spend computing while tiles streamed (waiting for tiles, batching,
    copying results back).
    """
    t = summary.get("timings_s", {})
    extract, factorize = t.get("extract", 0.0), t.get("factorize", 0.0)
    stages = {
        "read + resize (per reader thread)": t.get("read_threads", 0.0) / readers,
        "extract (model on the device)": extract,
        "factorize (on the device)": factorize,
        "stream, device not computing": max(0.0, t.get("stream", 0.0) - extract - factorize),
        "plan (tissue, tiles)": t.get("plan", 0.0),
        "vectorize (polygons)": t.get("vectorize", 0.0),
        "render (PNGs)": t.get("render", 0.0),
        "transfer + client": max(0.0, client_seconds - t.get("total", client_seconds)),
    }
    if t.get("fit"):
        stages["fit (bank on the slide)"] = t["fit"]
    return [
        {"stage": name, "seconds": seconds, "share": seconds / client_seconds}
        for name, seconds in stages.items()
    ]


def limiting_stage(summary: dict, stages: list[dict]) -> str:
    """One sentence: what bounds the server's tiles per second."""
    t = summary.get("timings_s", {})
    stream = t.get("stream", 0.0)
    device = t.get("extract", 0.0) + t.get("factorize", 0.0)
    reading = stages[0]["seconds"]
    serial = sum(s["seconds"] for s in stages[4:])  # plan, vectorize, render, transfer, fit
    if stream and device >= 0.85 * stream:
        part = "extract" if t.get("extract", 0.0) >= t.get("factorize", 0.0) else "factorize"
        why = f"the device: it computed {device / stream:.0%} of the streaming time ({part} most)"
    elif reading >= 0.85 * stream:
        why = f"reading tiles: each reader thread was busy {reading / stream:.0%} of the stream"
    else:
        why = (
            f"feeding the device: it computed only {device / stream:.0%} of the streaming "
            "time while readers were not saturated (batching, host copies, the GIL)"
            if stream
            else "unknown (no stream timing)"
        )
    top = max(stages, key=lambda s: s["seconds"])
    return (
        f"limited by {why}; the largest stage is {top['stage']} ({top['share']:.0%}); "
        f"work outside the stream (plan, vectorize, render, transfer) took {serial:.1f} s"
    )


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32768, help="slide edge in pixels (32768)")
    parser.add_argument("--warmup-size", type=int, default=4096, help="warm-up slide edge")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--extractor", default="uni", help="model architecture (uni)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--batch-sizes", default="32", help="bare-model batch sizes beyond the server's own"
    )
    parser.add_argument("--bare-tiles", type=int, default=2000, help="tiles timed at least")
    parser.add_argument("--bare-seconds", type=float, default=10.0, help="seconds timed at least")
    parser.add_argument("--max-tiles", type=int, default=256, help="distinct tiles kept on GPU")
    parser.add_argument("--warmup-batches", type=int, default=5)
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 without a GPU")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    if args.device == "cuda":
        try:
            import torch
        except ImportError:
            no_gpu_exit(args.require_gpu, "bench_gpu: torch is not installed (fseg[server]).")
        if not torch.cuda.is_available():
            no_gpu_exit(args.require_gpu)
    else:
        print("bench_gpu: a CPU run checks the script only; its figures mean nothing.")

    from fseg_server.extract import extractor_spec
    from fseg_server.pipeline.readers import available_cores

    spec = extractor_spec(args.extractor)
    readers = available_cores()
    workdir = Path(tempfile.mkdtemp(prefix="fseg-bench-gpu-"))
    try:
        slides = workdir / "slides"
        slides.mkdir()
        slide, warm = slides / "synthetic.tiff", slides / "warmup.tiff"
        for path, size in ((slide, args.size), (warm, args.warmup_size)):
            run(
                [sys.executable, str(REPO / "tools" / "synthetic_slide.py"), str(path),
                 "--size", str(size)],
                f"writing the synthetic slide {path.name}",
            )  # fmt: skip
        bank = workdir / "bank.safetensors"
        run(
            python("fseg_server", "fit-concepts", str(warm), "--extractor", args.extractor,
                   "--weights", "random", "--k", str(args.k), "--out", str(bank),
                   "--device", args.device, "--tiles-per-slide", "16"),
            "fitting the concept bank",
        )  # fmt: skip

        with start_fseg_server(workdir, args, bank) as server:
            segment(warm, workdir / "warm-out", server.address, args.k)
            summary, wall = segment(slide, workdir / "out", server.address, args.k)

        processed = int(summary["tiles"]["processed"])
        client_seconds = float(summary.get("client", {}).get("seconds", wall))
        server_total = float(summary["timings_s"]["total"])
        tiles_np, tile_px = read_tiles(slide, summary, min(args.max_tiles, processed))
        server_batch = spec.batch_size
        extra = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        batch_sizes = [server_batch] + [
            b
            for b in extra
            if b != server_batch and b <= len(tiles_np)  # whole batches only
        ]
        bare = bare_model(args, tiles_np, batch_sizes)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    # Regions differ in size, so the server is compared in model pixels per
    # second: what went through the model over the client's wall time.
    model_px = int(summary["tiles"]["model_px"])
    whole = model_px / client_seconds / (tile_px * tile_px)  # in bare-tile equivalents
    ratio = whole / bare[server_batch][0]
    rows = [
        {"what": f"bare model, batch {b}", "tiles": done, "tiles_per_s": tps}
        for b, (tps, done) in bare.items()
    ]
    for what, seconds in (("server side", server_total), ("client wall", client_seconds)):
        rows.append(
            {
                "what": f"whole server, {what} ({processed} regions, in {tile_px}-px tiles)",
                "tiles": round(model_px / tile_px**2, 1),
                "tiles_per_s": model_px / tile_px**2 / seconds,
            }
        )
    precision = "bf16 autocast" if args.device == "cuda" else "fp32"
    print_table(
        rows,
        f"{args.extractor} (random weights, {precision}) on {tile_px}-px tiles of a "
        f"{args.size}-px synthetic slide",
    )
    stages = stage_table(summary, client_seconds, readers)
    print_table(stages, "where the server's time went (timed slide)")
    verdict = limiting_stage(summary, stages)
    goal = "meets" if ratio >= GOAL else "misses"
    print(
        f"\nwhole server / bare model at the server's batch size ({server_batch}): {ratio:.0%} "
        f"({goal} the {GOAL:.0%} goal)\n{verdict}"
    )
    write_json(
        "gpu" if args.device == "cuda" else "gpu-cpu-check",
        {
            "config": {
                "extractor": args.extractor,
                "weights": "random",
                "device": args.device,
                "precision": precision,
                "slide_px": args.size,
                "tile_px": tile_px,
                "server_batch_size": server_batch,
                "readers": readers,
            },
            "tiles_processed": processed,
            "bare_tiles_per_s": {str(b): tps for b, (tps, _) in bare.items()},
            "server_tiles_per_s": whole,
            "server_side_tiles_per_s": model_px / tile_px**2 / server_total,
            "model_px": model_px,
            "ratio": ratio,
            "goal": GOAL,
            "stages": stages,
            "limit": verdict,
            "summary_timings_s": summary["timings_s"],
        },
    )


if __name__ == "__main__":
    main()
