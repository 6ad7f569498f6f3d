"""``fseg segment``: a batch of slides through one or several servers.

Order of work: check arguments and inputs (exit 2 on any problem, before any
server is contacted), start the embedded server if no ``--server`` was given,
fit the batch's bank if needed, skip completed slides, run the rest, and write
``batch-summary.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import clean_stale_temp_files
from .bankfile import BANK_FILE_NAME, BankSpec, bank_metadata
from .board import Board
from .calls import CallRegistry
from .connect import Connection, Credentials, credentials_from_args, parse_servers
from .errors import EXIT_FAILED, EXIT_OK, ClientError
from .fingerprint import HashCache
from .fit import fit_batch_bank
from .inputs import SlideInput, collect_inputs
from .job import BatchContext, SlideTask
from .local_server import connect_or_start
from .options import OUTPUT_FILES, RequestOptions, options_from_args
from .outputs import output_names, prepare_output_folder
from .plan import choose_bank, plan_tasks, with_bank_extractor
from .progress import Progress, resolve_style
from .remote_slides import SlideResolver
from .report import (
    CSV_NAME,
    FAILED,
    INTERRUPTED,
    INTERRUPTED_REASON,
    SlideOutcome,
    counts,
)
from .retry import RetryPolicy
from .scheduler import Scheduler


def local_server_args(
    args: argparse.Namespace, slides: Sequence[SlideInput], options: RequestOptions
) -> dict:
    """Keyword arguments of :func:`fseg_client.local_server.server_command`.

    The extractor is the batch's (the bank's, when the user named none), so the
    local server serves the extractor the bank was fitted on.
    """
    concepts = Path(args.concepts).expanduser() if args.concepts else None
    if concepts is not None and not concepts.is_file():
        concepts = None  # a bank name: the local server has none, the request will say so
    return {
        # Only folders that exist here: the server refuses to start on a missing
        # root. A slide that is a symlink also needs its target's folder.
        "slide_roots": slide_roots(slides),
        "extractor": options.extractor,
        "weights": args.weights or [],
        "concepts": str(concepts.resolve()) if concepts else None,
        "device": args.device,
    }


def slide_roots(slides: Sequence[SlideInput]) -> list[Path]:
    """The folders a local server must read: those of the local slides."""
    return sorted({folder for slide in slides if slide.local for folder in _folders_of(slide.path)})


def _folders_of(path: Path) -> set[Path]:
    """The folder a slide is named in and the folder it really lies in."""
    return {path.parent, Path(os.path.realpath(path)).parent}


def _check_args(args: argparse.Namespace) -> None:
    if args.concurrency < 1:
        raise ClientError(f"--concurrency must be at least 1, not {args.concurrency}")
    if args.retries < 0:
        raise ClientError(f"--retries must be at least 0, not {args.retries}")
    if args.slide_timeout is not None and not args.slide_timeout > 0:
        raise ClientError("--slide-timeout must be a number of seconds above 0")
    if args.server and (args.weights or args.device):
        raise ClientError("--weights and --device are for the embedded server (no --server)")
    if not args.server and (args.tls_ca or args.tls_cert):
        raise ClientError("the TLS options need --server (the embedded server is local, plain)")
    if not args.server and args.upload == "always":
        raise ClientError("--upload always needs --server (the local server reads files in place)")


def run_segment(args: argparse.Namespace) -> int:
    """Run ``fseg segment``; returns the exit code (0 all done, 1 some failed)."""
    _check_args(args)
    options = options_from_args(args)
    manifest = Path(args.manifest).expanduser() if args.manifest else None
    slides = collect_inputs(args.inputs, manifest, allow_remote=args.upload == "never")
    addresses = parse_servers(args.server)
    creds = credentials_from_args(args)
    out_dir = prepare_output_folder(Path(args.out).expanduser())
    bank, options = choose_bank(args.concepts, out_dir, options)
    every_output = list(OUTPUT_FILES.values())  # also leftovers of runs with other --outputs
    names = [n for s in slides for n in output_names(s.stem, every_output)]
    clean_stale_temp_files(out_dir, [*names, BANK_FILE_NAME, CSV_NAME])
    progress = Progress(len(slides), resolve_style(args.progress))
    if bank is not None and not args.concepts:  # same classes as the earlier run: say why
        progress.note(
            f"fseg: using the concept bank an earlier run fitted, {out_dir / BANK_FILE_NAME} "
            "(delete it to fit a new one on this batch)"
        )
    board = Board(out_dir, slides, progress)
    batch = _Batch(args, slides, out_dir, creds, progress, board)
    try:
        outcomes = _run(batch, options, bank, addresses)
    except KeyboardInterrupt:
        board.close(INTERRUPTED_REASON, INTERRUPTED)
        board.warn_if_unwritten()
        raise
    except ClientError as exc:  # the batch stopped (no server, no bank): say so per slide too
        board.close(str(exc).rstrip("."))
        board.warn_if_unwritten()
        raise
    finally:
        progress.close()
    return _report(outcomes, out_dir, board.csv_error)


@dataclass
class _Batch:
    """State shared by the steps of one ``fseg segment`` run."""

    args: argparse.Namespace
    slides: Sequence[SlideInput]
    out_dir: Path
    creds: Credentials
    progress: Progress
    board: Board
    registry: CallRegistry = field(default_factory=CallRegistry)
    hashes: HashCache = field(default_factory=HashCache)

    def plan(
        self, options: RequestOptions, bank: BankSpec, slides: Sequence[SlideInput]
    ) -> list[SlideTask]:
        """Which of ``slides`` are still to do; completed ones are recorded as skipped."""
        by_content = self.args.upload == "always"
        tasks, skipped = plan_tasks(slides, options, bank, self.out_dir, by_content, self.hashes)
        self.board.record_many(skipped)
        self.progress.skipped_upfront(len(skipped))
        return tasks

    def open_servers(
        self, stack: contextlib.ExitStack, addresses: list[str], options: RequestOptions
    ) -> tuple[list[Connection], Callable[[], str | None]]:
        """Connections to the servers (starting the local one if none was given), and
        what says why the local one died (None while it lives, or with no local one)."""
        conns, local = connect_or_start(
            stack,
            addresses,
            lambda: local_server_args(self.args, self.slides, options),
            self.creds,
            self.progress.note,
        )
        return conns, (local.death_reason if local is not None else lambda: None)


def _run(
    batch: _Batch, options: RequestOptions, bank: BankSpec | None, addresses: list[str]
) -> list[SlideOutcome]:
    args = batch.args
    resolver = SlideResolver(args.upload, batch.hashes, batch.registry)
    policy = RetryPolicy(retries=args.retries)
    tasks = batch.plan(options, bank, batch.slides) if bank is not None else None
    if tasks == []:  # all done already: no server needed, not even the local one
        return batch.board.close("not attempted")
    with contextlib.ExitStack() as stack:
        conns, fatal = batch.open_servers(stack, addresses, options)
        if bank is None:
            path = batch.out_dir / BANK_FILE_NAME
            try:
                bank, refused = fit_batch_bank(
                    conns, batch.slides, options, resolver, batch.progress, policy, path
                )
            except ClientError:
                reason = fatal()  # a dead local server explains every failure: say that
                if reason:
                    raise ClientError(reason, exit_code=EXIT_FAILED) from None
                raise
            options = with_bank_extractor(options, bank_metadata(bank.data, str(path)))
            for slide, reason in refused.items():  # left out of the bank: unreadable
                batch.board.record(SlideOutcome(slide, FAILED, error=reason))
            readable = [s for s in batch.slides if s not in refused]
            tasks = batch.plan(options, bank, readable)
        ctx = BatchContext(
            batch.out_dir,
            options,
            bank,
            resolver,
            batch.registry,
            batch.progress,
            args.slide_timeout,
        )
        scheduler = Scheduler(ctx, conns, policy, args.concurrency, batch.board.record, fatal)
        scheduler.run(tasks or [])
    return batch.board.close("not attempted")


def _report(outcomes: Sequence[SlideOutcome], out_dir: Path, csv_error: str) -> int:
    tally = counts(outcomes)
    csv_path = out_dir / CSV_NAME
    failed = tally[FAILED]
    one_reason = None
    if failed and len(outcomes) == 1:  # one slide: its reason is the error
        only = outcomes[0]
        one_reason = f"{only.slide.name}: {only.error.rstrip('.')}"
    if csv_error:
        told = one_reason or f"{tally['done']} done, {tally['skipped']} skipped, {failed} failed"
        raise ClientError(
            f"{told}; outputs in {out_dir}, but the batch summary {csv_path} could not be "
            f"written ({csv_error})",
            exit_code=EXIT_FAILED,
        )
    if one_reason:
        raise ClientError(one_reason, exit_code=EXIT_FAILED)
    if failed:
        raise ClientError(
            f"{failed} of {len(outcomes)} slides failed ({tally['done']} done, "
            f"{tally['skipped']} skipped); see {csv_path} for the reasons",
            exit_code=EXIT_FAILED,
        )
    print(
        f"fseg: {tally['done']} done, {tally['skipped']} skipped; outputs in {out_dir}, "
        f"summary in {csv_path}"
    )
    return EXIT_OK
