"""``fseg``: segment slides on fseg servers, ask servers about themselves, score results.

Only the standard library, grpcio, protobuf, numpy, pillow and tqdm are
imported here, and the heavy parts of the client only when a command needs them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from . import __version__
from .atlas_args import add_atlas_arguments
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ClientError
from .segment_args import add_connection_arguments, add_segment_arguments

PROG = "fseg"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fseg`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stop_like_ctrl_c_on_termination()
    return run_command(args.handler, args)


def stop_like_ctrl_c_on_termination() -> None:
    """SIGTERM (QuPath's cancel, ``kill``) takes Ctrl-C's way out, so the batch CSV is
    finalised and an embedded server is stopped instead of left running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
        if hasattr(signal, "SIGBREAK"):  # Ctrl-Break on Windows
            signal.signal(signal.SIGBREAK, interrupt)


def run_command(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; every failure is one sentence on stderr, never a traceback.

    Exit codes: 0 success, 1 a failed run (some slide failed, a server refused),
    2 bad arguments or inputs, 130 interrupted (Ctrl-C). ``FSEG_DEBUG=1`` shows
    tracebacks.
    """
    debug = bool(os.environ.get("FSEG_DEBUG"))
    try:
        return handler(args)
    except ClientError as exc:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {str(exc).rstrip('.')}.", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished slides are kept, re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # a bug: say so plainly, keep the traceback for FSEG_DEBUG
        if debug:
            traceback.print_exc()
        print(
            f"{PROG}: error: internal error: {type(exc).__name__}: {exc} "
            "(set FSEG_DEBUG=1 for the traceback and please report it).",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _segment(args: argparse.Namespace) -> int:
    from .batch import run_segment

    return run_segment(args)


def _atlas(args: argparse.Namespace) -> int:
    from .atlas import run_atlas

    return run_atlas(args)


def _info(args: argparse.Namespace) -> int:
    from .info import run_info

    return run_info(args)


def _health(args: argparse.Namespace) -> int:
    from .info import run_health

    return run_health(args)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate.run import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``fseg`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Unsupervised segmentation of whole-slide images on fseg servers (F-SEG).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    segment = commands.add_parser(
        "segment",
        help="segment slides (a batch, resumable) and write GeoJSON, label and overlay files",
        description="Segment slides on one or several fseg servers (or a local one). Outputs "
        "per slide: DIR/<stem>.geojson, .labels.png, .overlay.png and .json; a batch summary "
        "in DIR/batch-summary.csv. Re-running the same command skips finished slides.",
    )
    add_segment_arguments(segment)
    segment.set_defaults(handler=_segment)

    atlas = commands.add_parser(
        "atlas",
        help="show what each concept of a bank looks like, and write a names template",
        description="For every concept of one k of a bank: its share of the inputs' tissue "
        "and the windows that most typify it. Writes DIR/atlas-k<K>.html (one page, pictures "
        "inline), DIR/atlas-k<K>.png (a mosaic) and DIR/names-k<K>.json (edit it, then "
        "`fseg-server name-concepts BANK --k K --names DIR/names-k<K>.json`).",
    )
    add_atlas_arguments(atlas)
    atlas.set_defaults(handler=_atlas)

    info = commands.add_parser("info", help="show a server's extractors, banks and limits")
    add_connection_arguments(info, "the server(s) to ask (host:port)")
    info.add_argument("--json", action="store_true", help="print the raw ServerInfo as JSON")
    info.set_defaults(handler=_info)

    health = commands.add_parser("health", help="check that a server is serving (exit 0)")
    add_connection_arguments(health, "the server(s) to check (host:port)")
    health.set_defaults(handler=_health)

    from .evaluate.run import add_arguments as add_evaluate_arguments

    evaluate = commands.add_parser(
        "evaluate", help="score predicted label PNGs against ground-truth masks"
    )
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(handler=_evaluate)
    return parser


if __name__ == "__main__":
    sys.exit(main())
