"""``fseg-server serve``: options to a ServeConfig, then serve until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from .cli import output_file
from .errors import InvalidInput
from .limits import DEFAULT_LIMITS, CostLimits
from .logs import FORMATS
from .logs import configure as configure_logging


def add_serve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "serve",
        help="serve segmentation over gRPC (fseg.v1, health and reflection)",
        description="Serve fseg.v1 over gRPC until SIGTERM, which drains running jobs.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=50051, help="port (0: a free one)")
    p.add_argument("--port-file", type=output_file, help="write the bound port here once serving")
    p.add_argument(
        "--extractor", action="append", dest="extractors", metavar="NAME",
        help="extractor to serve (repeatable; the first is the default; default: stain)",
    )  # fmt: skip
    p.add_argument(
        "--weights", action="append", default=[], metavar="[NAME=]PATH",
        help="checkpoint for an extractor (repeatable); a bare PATH goes to the one "
        "extractor that needs weights",
    )  # fmt: skip
    p.add_argument(
        "--concepts", action="append", default=[], metavar="[NAME=]BANK",
        help="concept bank file (.safetensors) to offer, named NAME or by its file stem",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--slide-root", action="append", default=[], type=Path, metavar="DIR",
        help="directory whose slides clients may name by path (repeatable)",
    )  # fmt: skip
    p.add_argument("--upload-dir", type=Path, help="accept uploads and keep them here")
    p.add_argument(
        "--upload-max-bytes", type=int, default=20 << 30, help="largest upload (default 20 GiB)"
    )
    p.add_argument(
        "--upload-idle-seconds", type=float, default=60.0,
        help="an upload that sends nothing this long is cancelled, freeing its slot (60)",
    )  # fmt: skip
    p.add_argument(
        "--feature-cache", type=Path, metavar="DIR",
        help="keep tile features (fp16) here, so re-running a slide at another k, bank "
        "or mode skips reading and extraction (opt-in)",
    )  # fmt: skip
    p.add_argument(
        "--feature-cache-bytes", type=int, default=50 << 30,
        help="size cap of the feature cache; least recently used tiles go first (50 GiB)",
    )  # fmt: skip
    p.add_argument("--max-queued-jobs", type=int, default=16, help="admitted jobs at most (16)")
    p.add_argument("--max-running-jobs", type=int, default=2, help="jobs running at once (2)")
    _add_cost_limits(p)
    p.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, help="CA of client certificates (mutual TLS)")
    p.add_argument("--token-file", type=Path, help="bearer token every call must carry")
    p.add_argument("--grace-seconds", type=float, default=30.0, help="drain time on SIGTERM")
    p.add_argument("--chunk-bytes", type=int, default=1 << 20, help="result chunk size")
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve Prometheus metrics over HTTP on this port (0: a free one; default: off)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-host", default="127.0.0.1",
        help="address of the metrics port (default 127.0.0.1; 0.0.0.0 in a pod)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-port-file", type=output_file, help="write the metrics port here once serving"
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--log-format", choices=FORMATS, default="text",
        help="text, or json: one JSON object per line with time, level, message and the "
        "job id, slide, stage and outcome where they apply",
    )  # fmt: skip
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .extract import is_network
    from .extract.stain import STAIN_SPEC
    from .memory import tune_for_server
    from .serve import ServeConfig, serve_forever

    extractors = args.extractors or [STAIN_SPEC.name]
    # Before any thread starts: the policy depends on where activations live and
    # on whether there are any worth keeping (memory.py).
    runs_networks = any(is_network(name) for name in extractors)
    tune_for_server(resolve_device(args.device).type, runs_networks)
    configure_logging(args.log_level, args.log_format)
    _check_positive(args)
    config = ServeConfig(
        host=args.host,
        port=args.port,
        extractors=extractors,
        weights=_weights(args.weights, extractors),
        banks=_banks(args.concepts),
        device=args.device,
        slide_roots=args.slide_root,
        upload_dir=args.upload_dir,
        upload_max_bytes=args.upload_max_bytes,
        upload_idle_s=args.upload_idle_seconds,
        feature_cache=args.feature_cache,
        feature_cache_bytes=args.feature_cache_bytes,
        max_queued_jobs=args.max_queued_jobs,
        max_running_jobs=args.max_running_jobs,
        cost_limits=_cost_limits(args),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        token_file=args.token_file,
        chunk_bytes=args.chunk_bytes,
        grace_seconds=args.grace_seconds,
        port_file=args.port_file,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        metrics_port_file=args.metrics_port_file,
    )
    exit_without_teardown(serve_forever(config))
    return 0  # not reached


def exit_without_teardown(code: int) -> None:
    """End the process once the server has drained: every job has finished and every
    file is closed, yet the interpreter's teardown (gRPC's and torch's) would take
    about a second more, and ``fseg segment`` waits for its embedded server."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _weights(values: list[str], extractors: list[str]) -> dict[str, str]:
    weights: dict[str, str] = {}
    for value in values:
        name, _, path = value.rpartition("=")
        if not name:
            needing = [e for e in extractors if e != "stain"]
            if len(needing) != 1:
                raise InvalidInput(f"say which extractor --weights {value} is for: NAME={value}")
            name = needing[0]
        weights[name] = path
    return weights


def _banks(values: list[str]) -> dict[str, Path]:
    banks: dict[str, Path] = {}
    for value in values:
        name, _, path = value.rpartition("=")
        path_obj = Path(path)
        banks[name or path_obj.name.split(".")[0]] = path_obj
    return banks


#: (option, CostLimits field, type, what the number is) of each cost limit a server takes.
_COST_OPTIONS = (
    ("--max-slide-mm", "max_slide_mm", float, "longest side of a slide, mm"),
    ("--max-uncalibrated-px", "max_uncalibrated_px", int,
     "longest side of a slide without µm per pixel, level-0 px"),
    ("--max-image-mpx", "max_image_mpx", float, "pixels of a plain image, decoded whole, Mpx"),
    ("--max-thumbnail-mpx", "max_thumbnail_mpx", float,
     "pixels of the slide level a thumbnail is made from, Mpx"),
    ("--max-model-mpx", "max_model_mpx", float,
     "pixels through the model per slide at the working resolution, Mpx"),
    ("--max-components", "max_components", int, "NMF rank per image in classify mode"),
    ("--max-roi-vertices", "max_roi_vertices", int, "vertices of an ROI"),
)  # fmt: skip


def _add_cost_limits(parser: argparse.ArgumentParser) -> None:
    """What one job may cost; each is refused, in one sentence, before that work starts."""
    for flag, field_name, kind, what in _COST_OPTIONS:
        default = getattr(DEFAULT_LIMITS, field_name)
        parser.add_argument(flag, type=kind, default=default, help=f"{what} ({default:,})")


def _cost_limits(args: argparse.Namespace) -> CostLimits:
    values = {}
    for flag, field_name, _kind, _what in _COST_OPTIONS:
        value = getattr(args, field_name)
        if not 0 < value < math.inf:
            raise InvalidInput(f"{flag} must be a positive number, not {value}")
        values[field_name] = value
    return CostLimits(**values)


def _check_positive(args: argparse.Namespace) -> None:
    for flag, port in (("--port", args.port), ("--metrics-port", args.metrics_port)):
        if port is not None and not 0 <= port <= 65535:
            raise InvalidInput(f"{flag} must be between 0 and 65535, not {port}")
    if args.metrics_port_file and args.metrics_port is None:
        raise InvalidInput("--metrics-port-file needs --metrics-port")
    names = ("max_queued_jobs", "max_running_jobs", "chunk_bytes", "upload_max_bytes")
    for name in (*names, "feature_cache_bytes"):
        if getattr(args, name) < 1:
            raise InvalidInput(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.upload_idle_seconds < math.inf:
        raise InvalidInput(
            f"--upload-idle-seconds must be a positive number, not {args.upload_idle_seconds}"
        )
