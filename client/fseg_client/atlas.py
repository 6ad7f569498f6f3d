"""``fseg atlas``: what each concept of a bank looks like, on the given slides.

The server does the work (one Atlas call: it reads the sampled tiles once and
draws the page); the client checks the bank and the arguments first (exit 2,
before any server is started), starts the embedded server when no
``--server`` is given, and puts the three files in place together, each
under a temporary name first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from fseg_proto import fseg_pb2

from .atomic import clean_stale_temp_files
from .bankfile import BankSpec, named_bank
from .batch import slide_roots
from .calls import CallRegistry
from .connect import Connection, credentials_from_args, parse_servers
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ClientError, ProtocolError, rpc_error_code
from .fingerprint import HashCache
from .inputs import SlideInput, collect_inputs
from .job import AttemptState, consume_events
from .local_server import LocalServer, connect_or_start
from .options import FRAMES, MAX_K, TISSUE, check_finite
from .outputs import prepare_output_folder
from .progress import Progress, resolve_style
from .remote_slides import SlideResolver
from .results import ResultAssembler

#: Windows per concept the server accepts, and tiles per slide it reads at most.
WINDOWS_RANGE = (12, 24)
MAX_TILES_PER_SLIDE = 1024
# Refusals that mean the inputs or the bank are at fault, not the server: exit 2.
_BAD_INPUT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


def atlas_files(k: int) -> dict[str, str]:
    """The server's name of each file (all three are sent under their final names)."""
    names = (f"atlas-k{k}.html", f"atlas-k{k}.png", f"names-k{k}.json")
    return {name: name for name in names}


def run_atlas(args: argparse.Namespace) -> int:
    """Run ``fseg atlas``; returns the exit code."""
    _check_args(args)
    slides = collect_inputs(args.inputs, None, allow_remote=args.upload == "never")
    bank, extractor = _bank(args)
    out_dir = prepare_output_folder(Path(args.out).expanduser())
    files = atlas_files(args.k)
    clean_stale_temp_files(out_dir, files)
    progress = Progress(1, resolve_style(args.progress))
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            conn, fatal = _open_server(stack, args, slides, extractor, progress)
            summary = _atlas_on(conn, args, slides, bank, extractor, out_dir, progress, fatal)
    finally:
        progress.close()
    absent = [c["name"] for c in summary.get("concepts", []) if c.get("absent")]
    said = f"; absent on these inputs: {', '.join(absent)}" if absent else ""
    print(
        f"fseg: atlas of k={args.k} on {len(slides)} input{'s' if len(slides) != 1 else ''} "
        f"in {time.monotonic() - started:.1f} s: {', '.join(str(out_dir / n) for n in files)}"
        f"{said}"
    )
    return EXIT_OK


def _check_args(args: argparse.Namespace) -> None:
    if not 1 <= args.k <= MAX_K:
        raise ClientError(f"--k must be between 1 and {MAX_K}, not {args.k}")
    low, high = WINDOWS_RANGE
    if not low <= args.windows <= high:
        raise ClientError(f"--windows must be between {low} and {high}, not {args.windows}")
    if not 1 <= args.tiles_per_slide <= MAX_TILES_PER_SLIDE:
        raise ClientError(
            f"--tiles-per-slide must be between 1 and {MAX_TILES_PER_SLIDE}, "
            f"not {args.tiles_per_slide}"
        )
    for value, flag in ((args.mpp, "--mpp"), (args.target_mpp, "--target-mpp")):
        check_finite(value, flag, positive=True)
    if args.server and (args.weights or args.device):
        raise ClientError("--weights and --device are for the embedded server (no --server)")


def _bank(args: argparse.Namespace) -> tuple[BankSpec, str]:
    """The bank (a local file, checked here, or a server's bank by name) and the extractor."""
    spec, meta = named_bank(args.bank, args.k, args.extractor or "")
    return spec, args.extractor or str(meta.get("extractor", ""))


def _open_server(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    slides: Sequence[SlideInput],
    extractor: str,
    progress: Progress,
) -> tuple[Connection, LocalServer | None]:
    """A connection to the first ``--server``, or to an embedded server started here."""
    command = {
        "slide_roots": slide_roots(slides),
        "extractor": extractor,
        "weights": args.weights or [],
        "device": args.device,
    }
    addresses = parse_servers(args.server)[:1]
    creds = credentials_from_args(args)
    conns, local = connect_or_start(stack, addresses, lambda: command, creds, progress.note)
    return conns[0], local


def _atlas_on(
    conn: Connection,
    args: argparse.Namespace,
    slides: Sequence[SlideInput],
    bank: BankSpec,
    extractor: str,
    out_dir: Path,
    progress: Progress,
    local: LocalServer | None,
) -> dict:
    """One Atlas call; the files are renamed into place only when all three arrived whole."""
    registry = CallRegistry()
    bar = progress.slide_bar(f"atlas k={args.k}")
    assembler = ResultAssembler(out_dir, f"atlas-k{args.k}", atlas_files(args.k))
    try:
        resolver = SlideResolver(args.upload, HashCache(), registry)
        request = fseg_pb2.AtlasRequest(
            slides=[resolver.slide_ref(conn, slide, bar.uploading) for slide in slides],
            extractor=extractor,
            bank="" if bank.data else bank.name,
            bank_safetensors=bank.data,
            k=args.k,
            slide_mpp=args.mpp or 0.0,
            target_mpp=args.target_mpp or 0.0,
            frame=FRAMES[args.frame],
            tissue=TISSUE[args.tissue],
            windows_per_concept=args.windows,
            tiles_per_slide=args.tiles_per_slide,
            seed=args.seed,
        )
        call = conn.stub.Atlas(request, metadata=conn.metadata)
        with registry.track(call):
            text = consume_events(call, assembler, bar, AttemptState())
        assembler.require(list(atlas_files(args.k)))
        assembler.commit_all()
    except KeyboardInterrupt:
        registry.cancel_all()
        raise
    except (grpc.RpcError, ProtocolError) as exc:
        reason = local.death_reason() if local is not None else None
        if reason:
            raise ClientError(reason, exit_code=EXIT_FAILED) from None
        bad_input = rpc_error_code(exc) in _BAD_INPUT
        raise ClientError(
            f"the atlas was not made: {conn.explain(exc)}",
            exit_code=EXIT_USAGE if bad_input else EXIT_FAILED,
        ) from None
    finally:
        assembler.discard_all()
        bar.close()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}
