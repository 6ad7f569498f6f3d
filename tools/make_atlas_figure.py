"""Make the README's atlas picture from the shared slides and patches.

Fits a stain concept bank (k = 8) on CMU-1-Small-Region.svs and the 31
WSSS4LUAD validation patches with ``fseg-server fit-concepts``, draws its atlas
on the same inputs with ``fseg atlas`` (so it shows windows k-means saw) and
copies the mosaic to ``docs/images/atlas-k8.png``.

    python tools/make_atlas_figure.py [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIGURE = ROOT / "docs" / "images" / "atlas-k8.png"


def run(*args: str) -> float:
    """Run a command to its end; its wall seconds. Stops the script when it fails."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed: {done.stderr.strip()}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the bank and the atlas here")
    args = parser.parse_args()
    inputs = [SHARED / "slides" / "CMU-1-Small-Region.svs"]
    inputs += sorted((SHARED / "wsss4luad-val" / "images").glob("*.png"))
    missing = [p for p in inputs[:2] if not p.exists()]
    if missing:
        raise SystemExit(f"the shared data is not beside the checkout: {missing[0]}")
    work = args.work or Path(tempfile.mkdtemp(prefix="fseg-atlas-figure-"))
    work.mkdir(parents=True, exist_ok=True)
    bank = work / "bank.safetensors"
    paths = [str(p) for p in inputs]
    fit = run("fseg_server", "fit-concepts", *paths, "--k", "8", "--out", str(bank))
    atlas = run("fseg_client", "atlas", str(bank), "--k", "8", *paths, "--out", str(work),
                "--progress", "none")  # fmt: skip
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "atlas-k8.png", FIGURE)
    print(f"fit {fit:.1f} s, atlas {atlas:.1f} s; wrote {FIGURE} (page and names in {work})")


if __name__ == "__main__":
    main()
