"""``fseg-server``: serve segmentation over gRPC and manage concept banks.

This module only wires arguments to the library; each command's work lives
in the package it belongs to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import FsegError, InvalidInput

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args.handler, args, prog="fseg-server")


def run_command(handler: Callable[[argparse.Namespace], int], args: object, prog: str) -> int:
    """Run a command; a person sees one sentence for every failure, never a traceback."""
    try:
        return handler(args)
    except FsegError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return EXIT_OK
    except OSError as exc:  # a file or folder the command was given: the system says why
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # a bug: say so plainly, keep the traceback for FSEG_DEBUG
        if os.environ.get("FSEG_DEBUG"):
            traceback.print_exc()
        print(
            f"{prog}: internal error: {type(exc).__name__}: {exc} "
            "(set FSEG_DEBUG=1 for the traceback and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fseg-server",
        description="F-SEG segmentation server and concept-bank tools.",
    )
    parser.add_argument("--version", action="version", version=f"fseg-server {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from . import concepts_cli, serve_cli

    serve_cli.add_serve(commands)
    concepts_cli.add_commands(commands)
    return parser


def parse_ks(text: str) -> list[int]:
    """``"8,16,32"`` -> [8, 16, 32]."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InvalidInput(
            f"--k takes comma-separated integers such as 8,16,32, not {text!r}"
        ) from None
    if not ks or min(ks) < 1:
        raise InvalidInput(f"--k needs integers of at least 1, not {text!r}")
    return ks


def print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False))


def existing_path(text: str) -> Path:
    return Path(text).expanduser()


def output_file(text: str) -> Path:
    """A file to write: its folder must exist and be writable now, not after an hour
    of fitting."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give the name of the file to write")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {path}: {path.parent} is not a folder")
    if not os.access(path.parent, os.W_OK):  # also false on a read-only file system
        raise argparse.ArgumentTypeError(f"cannot write {path}: {path.parent} is not writable")
    return path


def describe_os_error(exc: OSError) -> str:
    """'PATH: reason' for an error about a file, else the system's message."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason
