"""Command-line options of ``fseg segment`` and the options shared with info/health."""

from __future__ import annotations

import argparse

from .options import FRAMES, MODES, OUTPUT_FILES, PROGRESS_CHOICES, TISSUE
from .remote_slides import UPLOAD_MODES


def add_connection_arguments(parser: argparse.ArgumentParser, server_help: str) -> None:
    """``--server``, the token and TLS options."""
    group = parser.add_argument_group("servers and security")
    group.add_argument(
        "--server",
        action="append",
        metavar="ADDR[,ADDR...]",
        help=server_help,
    )
    group.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the bearer token sent on every call (default: $FSEG_TOKEN)",
    )
    group.add_argument("--tls-ca", metavar="FILE", help="PEM CA of the servers; turns TLS on")
    group.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate (mutual TLS)")
    group.add_argument("--tls-key", metavar="FILE", help="PEM client key (mutual TLS)")
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name expected in the server certificate, when it differs from the address",
    )


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``fseg segment`` option."""
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUTS",
        help="slide or image files, folders of them, or glob patterns",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--manifest", metavar="CSV", help="CSV file with a 'path' and an optional 'name' column"
    )
    _add_model_arguments(parser)
    _add_geometry_arguments(parser)
    add_connection_arguments(
        parser,
        "fseg server(s), host:port or dns:///name:port (round robin); repeatable; "
        "default: start a local server",
    )
    _add_batch_arguments(parser)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--extractor", metavar="NAME", help="feature extractor (server default)")
    group.add_argument(
        "--concepts",
        metavar="BANK",
        help="a concept bank the server loaded (by name), or a local .safetensors bank "
        "file; default: fit one bank on the whole batch (saved as DIR/fseg-bank.safetensors)",
    )
    group.add_argument("--k", type=int, default=8, help="number of classes (default: 8)")
    group.add_argument("--mode", choices=list(MODES), default="project", help="default: project")
    group.add_argument(
        "--components", type=int, default=0, help="NMF rank in classify mode (0: default)"
    )
    group.add_argument(
        "--weights",
        action="append",
        metavar="FILE",
        help="extractor weights (embedded server only; repeatable)",
    )
    group.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="device of the embedded server"
    )


def _add_geometry_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("resolution, region and polygons")
    group.add_argument(
        "--mpp", type=float, metavar="UM", help="µm per level-0 pixel, overriding the metadata"
    )
    group.add_argument(
        "--target-mpp", type=float, metavar="UM", help="working resolution in µm per pixel"
    )
    group.add_argument(
        "--frame",
        choices=list(FRAMES),
        default="bounds",
        help="coordinate frame: bounds (QuPath's OpenSlide server) or level0 (Bio-Formats)",
    )
    group.add_argument("--roi", metavar="FILE", help="GeoJSON region of interest (output frame)")
    group.add_argument("--tissue", choices=list(TISSUE), default="auto", help="tissue detection")
    group.add_argument(
        "--simplify", type=float, metavar="PX", help="polygon simplification in label pixels"
    )
    group.add_argument(
        "--min-area", type=float, metavar="UM2", help="merge regions smaller than this (µm²)"
    )
    group.add_argument(
        "--split-regions", action="store_true", help="one feature per region, not per class"
    )
    group.add_argument(
        "--label-upsample",
        type=int,
        default=0,
        metavar="N",
        help="label pixels per feature cell along each axis (0: server default)",
    )
    group.add_argument(
        "--outputs",
        default=",".join(OUTPUT_FILES),
        metavar="LIST",
        help="which files to write: geojson,labels,overlay (default: all)",
    )


def _add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch")
    group.add_argument(
        "--concurrency", type=int, default=2, metavar="N", help="slides in flight per server"
    )
    group.add_argument(
        "--upload",
        choices=UPLOAD_MODES,
        default="auto",
        help="auto: upload only slides the server cannot read by path (default)",
    )
    group.add_argument(
        "--retries", type=int, default=4, metavar="N", help="retries per slide (default: 4)"
    )
    group.add_argument(
        "--slide-timeout",
        type=float,
        metavar="SECONDS",
        help="deadline per slide; a slide that runs out moves to another server",
    )
    group.add_argument(
        "--progress",
        choices=PROGRESS_CHOICES,
        default="auto",
        help="auto: bars on a terminal, else a line per finished slide; bars; lines: plain "
        "lines per slide stage as well ('fseg: S segment 12/40 tiles'), for programs reading "
        "stderr; none: only failures, warnings and the closing line",
    )
    group.add_argument(
        "--quiet",
        action="store_const",
        dest="progress",
        const="none",
        help="the same as --progress none",
    )
