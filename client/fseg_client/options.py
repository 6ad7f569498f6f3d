"""The segmentation options of a batch, as the SegmentRequest carries them.

One :class:`RequestOptions` is built from the command line and shared by every
slide; :meth:`RequestOptions.canonical` is what the resume fingerprint hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from fseg_proto import fseg_pb2

from .errors import ClientError
from .roi_rings import ring_problem

# --outputs word -> ResultChunk.file suffix (also the output file's suffix).
OUTPUT_FILES = {"geojson": "geojson", "labels": "labels.png", "overlay": "overlay.png"}
MODES = {
    "project": fseg_pb2.MODE_PROJECT,
    "classify": fseg_pb2.MODE_CLASSIFY,
    "cluster": fseg_pb2.MODE_CLUSTER,
}
FRAMES = {"bounds": fseg_pb2.FRAME_BOUNDS, "level0": fseg_pb2.FRAME_LEVEL0}
TISSUE = {
    "auto": fseg_pb2.TISSUE_UNSPECIFIED,
    "on": fseg_pb2.TISSUE_ON,
    "off": fseg_pb2.TISSUE_OFF,
}
ROI_MAX_BYTES = 8 * 1024 * 1024
#: The server stores labels as one byte per cell, 255 meaning no label.
MAX_K = 255
# --progress choices (styles in fseg_client.progress).
PROGRESS_CHOICES = ("auto", "bars", "lines", "none")


def parse_outputs(text: str) -> tuple[str, ...]:
    """``"geojson,labels"`` -> ("geojson", "labels"), in a fixed order."""
    words = {w.strip().lower() for w in text.split(",") if w.strip()}
    unknown = sorted(words - set(OUTPUT_FILES))
    if unknown or not words:
        raise ClientError(
            f"--outputs takes a comma-separated subset of {','.join(OUTPUT_FILES)}, not {text!r}"
        )
    return tuple(w for w in OUTPUT_FILES if w in words)


def read_roi(path: Path) -> str:
    """The text of a GeoJSON ROI file, checked to be JSON with well-formed polygon rings
    (the server checks the rest of the geometry)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read the ROI file {path} ({exc.strerror})") from None
    if len(raw) > ROI_MAX_BYTES:
        raise ClientError(f"the ROI file {path} is over {ROI_MAX_BYTES // 2**20} MiB")
    try:
        text = raw.decode("utf-8-sig")
        problem = ring_problem(json.loads(text))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClientError(f"the ROI file {path} is not valid GeoJSON ({exc})") from None
    except RecursionError:
        raise ClientError(f"the ROI file {path} is nested too deeply to read") from None
    if problem:
        raise ClientError(f"the ROI file {path} is not valid GeoJSON: in {problem}")
    return text


@dataclass(frozen=True)
class RequestOptions:
    """What every slide of the batch is asked for (the SegmentRequest minus slide and bank).

    Units: ``slide_mpp`` and ``target_mpp`` in µm per pixel (0: unset),
    ``simplify`` in label pixels, ``min_area_um2`` in µm² (None: server default).
    """

    extractor: str = ""
    k: int = 8
    mode: str = "project"
    components: int = 0
    slide_mpp: float = 0.0
    target_mpp: float = 0.0
    frame: str = "bounds"
    roi_geojson: str = ""
    tissue: str = "auto"
    simplify: float | None = None
    min_area_um2: float | None = None
    split_regions: bool = False
    label_upsample: int = 0
    outputs: tuple[str, ...] = field(default=tuple(OUTPUT_FILES))

    @property
    def output_files(self) -> list[str]:
        """The ResultChunk suffixes requested, e.g. ["geojson", "labels.png"]."""
        return [OUTPUT_FILES[w] for w in self.outputs]

    def canonical(self) -> dict:
        """The options that change the result, as plain JSON values.

        Which outputs are requested is left out: a re-run asking for more files
        redoes a slide anyway, because a requested file is missing.
        """
        roi = hashlib.sha256(self.roi_geojson.encode()).hexdigest() if self.roi_geojson else ""
        return {
            "extractor": self.extractor,
            "k": self.k,
            "mode": self.mode,
            "components": self.components,
            "slide_mpp": self.slide_mpp,
            "target_mpp": self.target_mpp,
            "frame": self.frame,
            "roi_sha256": roi,
            "tissue": self.tissue,
            "simplify": self.simplify,
            "min_area_um2": self.min_area_um2,
            "split_regions": self.split_regions,
            "label_upsample": self.label_upsample,
        }

    def to_request(self, bank_name: str = "", bank_bytes: bytes = b"") -> fseg_pb2.SegmentRequest:
        """A SegmentRequest without its slide; the caller fills ``slide``."""
        vectorize = fseg_pb2.VectorizeOptions(
            split_regions=self.split_regions, label_upsample=self.label_upsample
        )
        if self.simplify is not None:
            vectorize.simplify = self.simplify
        if self.min_area_um2 is not None:
            vectorize.min_area_um2 = self.min_area_um2
        return fseg_pb2.SegmentRequest(
            extractor=self.extractor,
            bank="" if bank_bytes else bank_name,
            bank_safetensors=bank_bytes,
            k=self.k,
            mode=MODES[self.mode],
            components=self.components,
            slide_mpp=self.slide_mpp,
            target_mpp=self.target_mpp,
            frame=FRAMES[self.frame],
            roi_geojson=self.roi_geojson,
            tissue=TISSUE[self.tissue],
            vectorize=vectorize,
            outputs=fseg_pb2.OutputOptions(
                geojson="geojson" in self.outputs,
                labels="labels" in self.outputs,
                overlay="overlay" in self.outputs,
            ),
        )


def check_finite(value: float | None, flag: str, positive: bool) -> None:
    """Refuse a value out of range, NaN included. µm per pixel must be positive:
    0 would silently mean "not given" on the wire."""
    if value is None:
        return
    if positive and not 0 < value < math.inf:  # NaN fails every comparison
        raise ClientError(f"{flag} must be a positive, finite number of µm per pixel, not {value}")
    if not positive and not 0 <= value < math.inf:
        raise ClientError(f"{flag} must be a finite number of at least 0, not {value}")


def options_from_args(args: argparse.Namespace) -> RequestOptions:
    """Build and check the batch's options from ``fseg segment`` arguments."""
    if not 1 <= args.k <= MAX_K:
        raise ClientError(
            f"--k must be between 1 and {MAX_K}, not {args.k}: labels take one byte per cell "
            f"and {MAX_K} marks no tissue, so a bank's k = 256 cannot be used (128 can)"
        )
    if args.components < 0:
        raise ClientError(f"--components must be at least 0, not {args.components}")
    if args.label_upsample < 0:
        raise ClientError(f"--label-upsample must be at least 0, not {args.label_upsample}")
    for value, flag in ((args.mpp, "--mpp"), (args.target_mpp, "--target-mpp")):
        check_finite(value, flag, positive=True)
    for value, flag in ((args.simplify, "--simplify"), (args.min_area, "--min-area")):
        check_finite(value, flag, positive=False)
    return RequestOptions(
        extractor=args.extractor or "",
        k=args.k,
        mode=args.mode,
        components=args.components,
        slide_mpp=args.mpp or 0.0,
        target_mpp=args.target_mpp or 0.0,
        frame=args.frame,
        roi_geojson=read_roi(Path(args.roi)) if args.roi else "",
        tissue=args.tissue,
        simplify=args.simplify,
        min_area_um2=args.min_area,
        split_regions=args.split_regions,
        label_upsample=args.label_upsample,
        outputs=parse_outputs(args.outputs),
    )
