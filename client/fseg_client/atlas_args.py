"""Command-line options of ``fseg atlas``."""

from __future__ import annotations

import argparse

from .options import FRAMES, PROGRESS_CHOICES, TISSUE
from .remote_slides import UPLOAD_MODES
from .segment_args import add_connection_arguments


def add_atlas_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``fseg atlas`` option."""
    parser.add_argument(
        "bank",
        metavar="BANK",
        help="a concept bank file (.safetensors) or the name of a bank the server loaded",
    )
    # "+", not "*": BANK --k K INPUTS... must leave the inputs after the options.
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUTS", help="slides or images, folders of them, or globs"
    )
    parser.add_argument("--k", type=int, required=True, help="which k of the bank to show")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--extractor", metavar="NAME", help="feature extractor (the bank's)")
    parser.add_argument(
        "--windows", type=int, default=16, metavar="N", help="windows per concept, 12 to 24 (16)"
    )
    parser.add_argument(
        "--tiles-per-slide",
        type=int,
        default=16,
        metavar="N",
        help="tissue tiles read per slide the bank's provenance does not cover (16)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of tiles (0)")
    parser.add_argument("--mpp", type=float, metavar="UM", help="µm per level-0 pixel")
    parser.add_argument("--target-mpp", type=float, metavar="UM", help="working µm per pixel")
    parser.add_argument(
        "--frame",
        choices=list(FRAMES),
        default="bounds",
        help="frame of the coordinates shown: bounds (QuPath's OpenSlide server) or level0",
    )
    parser.add_argument("--tissue", choices=list(TISSUE), default="auto", help="tissue detection")
    parser.add_argument(
        "--weights", action="append", metavar="FILE", help="extractor weights (embedded server)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="embedded server's")
    parser.add_argument(
        "--upload", choices=UPLOAD_MODES, default="auto", help="auto: only what the server lacks"
    )
    parser.add_argument(
        "--progress", choices=PROGRESS_CHOICES, default="auto", help="as for fseg segment"
    )
    parser.add_argument(
        "--quiet", action="store_const", dest="progress", const="none", help="--progress none"
    )
    add_connection_arguments(parser, "an fseg server, host:port (default: start a local server)")
