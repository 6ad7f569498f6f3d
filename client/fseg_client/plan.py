"""Before sending anything: which slides are already done, and the bank to use."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .bankfile import BANK_FILE_NAME, BankSpec, check_bank, load_bank_file, named_bank
from .errors import ClientError
from .fingerprint import HashCache, request_fingerprint, slide_identity
from .inputs import SlideInput
from .job import SlideTask
from .options import RequestOptions
from .outputs import client_section, read_summary, summary_path, vouches_for
from .report import SKIPPED, SlideOutcome

HASH_THREADS = 4
T, R = TypeVar("T"), TypeVar("R")


def with_bank_extractor(options: RequestOptions, meta: dict) -> RequestOptions:
    """Fill in the bank's extractor when none was asked for.

    The server's default extractor may not be the one the bank was fitted on;
    naming it keeps requests right on every server, and keeps the fingerprint
    the same whether the bank was just fitted or reused.
    """
    if options.extractor or not meta.get("extractor"):
        return options
    return dataclasses.replace(options, extractor=str(meta["extractor"]))


def choose_bank(
    concepts: str | None, out_dir: Path, options: RequestOptions
) -> tuple[BankSpec | None, RequestOptions]:
    """The bank of the batch, or None when one must be fitted on the batch first.

    ``--concepts`` names a local bank file or a bank the server loaded; without
    it, a bank fitted by an earlier run of this batch (``DIR/fseg-bank.safetensors``)
    is reused.
    """
    if concepts:
        spec, meta = named_bank(concepts, options.k, options.extractor)
        return spec, with_bank_extractor(options, meta) if meta else options
    saved = out_dir / BANK_FILE_NAME
    if not saved.is_file():
        return None, options
    spec, meta = load_bank_file(saved)
    try:
        check_bank(meta, str(saved), options.k, options.extractor)
    except ClientError as exc:
        raise ClientError(
            f"{str(exc).rstrip('.')}; it was fitted by an earlier run into {out_dir}: use "
            "another --out, or delete it to fit a new one"
        ) from None
    return spec, with_bank_extractor(options, meta)


def _remember_digest(slide: SlideInput, summary: dict, hashes: HashCache) -> None:
    """Reuse the SHA-256 an earlier run's ``summary`` recorded for this very file version."""
    client = client_section(summary)
    identity, info = client.get("slide") or {}, client.get("file") or {}
    try:
        if identity.get("sha256") and info.get("size") is not None:
            hashes.remember(
                slide.path, int(info["size"]), int(info["mtime_ns"]), str(identity["sha256"])
            )
    except (AttributeError, KeyError, TypeError, ValueError):
        return


def plan_tasks(
    slides: Sequence[SlideInput],
    options: RequestOptions,
    bank: BankSpec,
    out_dir: Path,
    by_content: bool,
    hashes: HashCache,
) -> tuple[list[SlideTask], list[SlideOutcome]]:
    """Split the batch into slides to send and slides already complete.

    Args:
        by_content: identify slides by SHA-256 (``--upload always``); digests
            are computed in a few threads, or reused from earlier summaries.

    Returns:
        (tasks to run, outcomes of the skipped slides), each in input order.
    """

    bank_digest = bank.digest  # hashes the bank file: once per batch, not per slide

    # One listing instead of a failed open per slide of a fresh batch.
    present = _names_casefolded(out_dir)

    def one(slide: SlideInput) -> SlideTask | SlideOutcome:
        path = summary_path(out_dir, slide.stem)
        earlier = read_summary(path) if path.name.casefold() in present else None
        if by_content and slide.local and earlier is not None:
            _remember_digest(slide, earlier, hashes)
        try:
            identity = slide_identity(slide, by_content, hashes)
        except OSError as exc:
            raise ClientError(f"cannot read {slide.path} ({exc.strerror})") from None
        asked = options  # a manifest's mpp is part of what the slide was asked for
        if slide.mpp is not None:
            asked = dataclasses.replace(options, slide_mpp=slide.mpp)
        fingerprint = request_fingerprint(asked, bank_digest, identity)
        suffixes = options.output_files
        if earlier is not None and vouches_for(earlier, out_dir, slide.stem, fingerprint, suffixes):
            server = str(client_section(earlier).get("server", ""))
            return SlideOutcome(slide, SKIPPED, server=server, summary=earlier)
        return SlideTask(slide, fingerprint, identity)

    if by_content:
        results = _in_threads(one, slides, HASH_THREADS)
    else:  # a stat per slide: a pool's hand-over would cost more than the work
        results = [one(slide) for slide in slides]
    tasks = [r for r in results if isinstance(r, SlideTask)]
    skipped = [r for r in results if isinstance(r, SlideOutcome)]
    return tasks, skipped


def _names_casefolded(folder: Path) -> set[str]:
    """Names in ``folder``, without case (a folder on macOS or Windows ignores it)."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name.casefold() for entry in entries}
    except OSError:
        return set()


def _in_threads(work: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """``[work(item) for item in items]`` on ``threads`` threads. On Ctrl-C or SIGTERM
    the items not yet started are dropped at once, so the batch stops within one
    item's time rather than after every slide of the batch was hashed."""
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        return list(pool.map(work, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
