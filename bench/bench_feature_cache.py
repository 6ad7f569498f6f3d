"""The feature cache: a re-run of a slide at another k against its first run.

A server with ``--feature-cache`` segments the shared CMU-1-Small-Region.svs
with an extractor heavy enough to matter (UNI's ViT-L/16 architecture, random
weights: the model hub is out of reach here, and speed does not depend on the
weights) and the F-SEG authors' UNI concept bank at k=8, then again at k=16.
The re-run skips reading and the extractor; only factorizing, vectorizing and
rendering remain. Target: the re-run at least 20x faster.

    python bench/bench_feature_cache.py [--extractor uni]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import SHARED_DIR, print_table, write_json
from fseg_proto import fseg_pb2
from servers import start_server


def run(server, slide: str, k: int) -> tuple[float, dict]:
    started = time.perf_counter()
    request = fseg_pb2.SegmentRequest(slide=fseg_pb2.SlideRef(path=slide), bank="bank", k=k)
    events = list(server.stub().Segment(request, timeout=3600))
    return time.perf_counter() - started, json.loads(events[-1].summary.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--extractor", default="uni")
    args = parser.parse_args()
    slides = SHARED_DIR / "slides"
    with tempfile.TemporaryDirectory() as tmp:
        bank = Path(tmp) / "bank.safetensors"
        from fseg_server.concepts import import_joblib
        from fseg_server.extract import extractor_spec

        spec = extractor_spec(args.extractor)
        import_joblib(
            SHARED_DIR / "concept-banks" / "uni.joblib", spec.name, spec.feature_dim
        ).save(bank)
        server = start_server(
            Path(tmp), "--slide-root", str(slides), "--extractor", args.extractor,
            "--weights", f"{args.extractor}=random", "--concepts", f"bank={bank}",
            "--feature-cache", str(Path(tmp) / "cache"),
        )  # fmt: skip
        try:
            rows = []
            for label, k in (("first run, k=8", 8), ("re-run, k=16", 16), ("re-run, k=32", 32)):
                seconds, summary = run(server, "CMU-1-Small-Region.svs", k)
                rows.append({"run": label, "seconds": seconds,
                             "tiles": summary["tiles"]["processed"],
                             "from_cache": summary["tiles"]["from_feature_cache"],
                             "extract_s": summary["timings_s"]["extract"],
                             "factorize_s": summary["timings_s"]["factorize"]})  # fmt: skip
        finally:
            server.stop()
    print_table(rows, f"feature cache, {args.extractor} (random weights) on CMU-1-Small-Region")
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"\nre-run at another k: {speedup:.1f}x faster than the first run (target >= 20x)")
    write_json("feature_cache", {"rows": rows, "speedup": speedup, "extractor": args.extractor})


if __name__ == "__main__":
    main()
