"""The Atlas call: check the request, run the atlas as a job, stream its three files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc

from fseg_proto import fseg_pb2

from .. import __version__
from ..atlas import AtlasInput, AtlasSettings, make_atlas
from ..atlas.build import DEFAULT_TILES_PER_INPUT, DEFAULT_WINDOWS
from ..concepts import ConceptBank
from ..errors import InvalidInput
from ..extract import Extractor
from ..pipeline.options import SegmentOptions
from .admission import Ticket
from .naming import as_the_user_names
from .requests import DEFAULT_K, FRAMES, TISSUE, checked_mpp, lookup, slide_mpp
from .streaming import CallStopper, ProgressEvents, file_chunks, run_job

if TYPE_CHECKING:
    from .service import SegmentationService

#: Slides one atlas reads at most: it plans every one before reading any tile.
MAX_ATLAS_SLIDES = 1000


def atlas_events(
    service: SegmentationService,
    request: fseg_pb2.AtlasRequest,
    context: grpc.ServicerContext,
    name_of: Callable[[fseg_pb2.SlideRef], str],
) -> Iterator[fseg_pb2.SegmentEvent]:
    """The Atlas stream of ``service``; errors raise FsegError.

    ``name_of(ref)``: a slide's display name ("" when the file's own name serves).
    """
    if not request.bank and not request.bank_safetensors:
        raise InvalidInput("an atlas needs a concept bank: name one the server holds or send one")
    bank, bank_name = service.resources.bank(request.bank, request.bank_safetensors)
    extractor = service.resources.extractor(request.extractor or bank.extractor)
    settings = AtlasSettings(
        k=request.k or DEFAULT_K,
        windows=request.windows_per_concept or DEFAULT_WINDOWS,
        tiles_per_input=request.tiles_per_slide or DEFAULT_TILES_PER_INPUT,
        seed=request.seed,
        bank_label=bank_name if request.bank else (bank.source or bank_name),
    )
    settings.check()
    bank.check_extractor(extractor.spec.name, extractor.spec.feature_dim)
    bank.concepts(settings.k)
    if not 1 <= len(request.slides) <= MAX_ATLAS_SLIDES:
        raise InvalidInput(f"give between 1 and {MAX_ATLAS_SLIDES} slides for an atlas")
    inputs = [_input(service, ref, request, name_of) for ref in request.slides]
    pairs = zip(request.slides, inputs, strict=True)
    named = [(ref, item.path, item.name) for ref, item in pairs]
    # Logged (one line at its end, in JSON logs with its job id) as every job is;
    # not counted among slides, since it segments none.
    described = f"atlas of {len(inputs)} inputs"
    with (
        service.admitted("atlas", described, counts_as_slide=False) as (ticket, _),
        as_the_user_names(named),
    ):
        yield from _atlas_job(service, ticket, inputs, extractor, bank, settings, context)


def _atlas_job(
    service: SegmentationService,
    ticket: Ticket,
    inputs: list[AtlasInput],
    extractor: Extractor,
    bank: ConceptBank,
    settings: AtlasSettings,
    context: grpc.ServicerContext,
) -> Iterator[fseg_pb2.SegmentEvent]:
    """An admitted atlas: wait for a slot, make it, stream its files and summary."""
    yield fseg_pb2.SegmentEvent(
        accepted=fseg_pb2.Accepted(job_id=ticket.job_id, queue_position=ticket.queue_position)
    )
    stop = CallStopper(context)
    service.wait_for_slot(ticket, stop)

    def work(emit: Callable[[object], None]) -> object:
        progress = ProgressEvents(lambda p: emit(fseg_pb2.SegmentEvent(progress=p)))
        return make_atlas(inputs, extractor, bank, settings, service.worker, progress, stop)

    result = yield from run_job(work, ticket.job_id)
    for name, data in result.files.items():
        for chunk in file_chunks(name, data, service.limits.chunk_bytes):
            yield fseg_pb2.SegmentEvent(chunk=chunk)
    summary = {**result.summary, "server": {"version": __version__, "job_id": ticket.job_id}}
    yield fseg_pb2.SegmentEvent(summary=fseg_pb2.Summary(json=json.dumps(summary)))


def _input(
    service: SegmentationService,
    ref: fseg_pb2.SlideRef,
    request: fseg_pb2.AtlasRequest,
    name_of: Callable[[fseg_pb2.SlideRef], str],
) -> AtlasInput:
    """One slide of the request, resolved and with its own options (its µm/px)."""
    path = service.slide_path(ref)
    options = SegmentOptions(
        k=request.k or DEFAULT_K,
        slide_mpp=slide_mpp(ref, request.slide_mpp)[0],
        target_mpp=checked_mpp(request.target_mpp, "target_mpp (--target-mpp)"),
        frame=lookup(FRAMES, request.frame, "frame"),
        tissue=lookup(TISSUE, request.tissue, "tissue"),
        limits=service.limits.cost,
    )
    return AtlasInput(path, name_of(ref) or path.name, options)
