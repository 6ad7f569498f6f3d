"""``make demo``: segment one slide with the embedded defaults and say where the outputs are.

The slide is SLIDE=path when given; otherwise the shared real H&E slide
(CMU-1-Small-Region.svs) when it sits beside the checkout; otherwise a slide
this script generates. The segmentation runs through the real client and a
local server it starts on a free loopback port (the embedded default).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_SLIDE = ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


def demo_slide(out: Path) -> Path:
    if SHARED_SLIDE.exists():
        return SHARED_SLIDE
    sys.path.insert(0, str(ROOT / "tools"))
    from synthetic_slide import procedural_pattern, write_slide

    slide = out / "synthetic-he.tiff"
    if not slide.exists():
        print(f"generating a synthetic H&E slide: {slide}")
        write_slide(slide, procedural_pattern(2048), 8192, 0.5)
    return slide


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--slide", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    slide = args.slide or demo_slide(args.out)
    print(f"segmenting {slide} with the embedded defaults (stain extractor, k=8, project mode)")
    command = [sys.executable, "-m", "fseg_client", "segment", str(slide), "--out", str(args.out)]
    done = subprocess.run(command)
    if done.returncode != 0:
        return done.returncode
    stem = slide.name.rsplit(".", 1)[0]
    print(f"\noutputs in {args.out}/:")
    for suffix in ("geojson", "labels.png", "overlay.png", "json"):
        path = args.out / f"{stem}.{suffix}"
        print(f"  {path}{'' if path.exists() else '  (missing!)'}")
    print("open the .overlay.png to look at it, or import the .geojson into QuPath")
    return 0


if __name__ == "__main__":
    sys.exit(main())
