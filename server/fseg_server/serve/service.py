"""The fseg.v1 Segmentation service: requests in, jobs run, results streamed out."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import grpc

from fseg_proto import fseg_pb2, fseg_pb2_grpc

from .. import __version__
from ..device import describe_device
from ..errors import Cancelled, FsegError, InvalidInput, NotFound, PermissionDenied
from ..extract import Extractor
from ..pipeline.device_worker import DeviceWorker
from ..pipeline.feature_cache import FeatureCache
from ..pipeline.fit import fit_bank, provenance_reservoir, sample_slides
from ..pipeline.options import SegmentOptions
from ..pipeline.segment import SegmentResult, segment_slide
from ..slide.reader import Slide, open_slide
from ..text import clipped, first_control_character
from .admission import Admission, Ticket
from .atlas_call import atlas_events
from .info import Limits, server_info
from .metrics import NO_METRICS, NoMetrics
from .naming import as_the_user_names, named_as_the_user_does
from .outcomes import JobRecord, recorded
from .requests import requested_outputs, segment_options, slide_mpp
from .resources import Resources
from .slide_access import NotAFile, SlideAccess
from .slide_sets import SetManifest, SlideSets, checked_manifest
from .streaming import CallStopper, ProgressEvents, file_chunks, idle_limited, run_job
from .uploads import UploadStore

log = logging.getLogger("fseg.server")
OUTPUT_ORDER = ("geojson", "labels.png", "overlay.png")
MAX_FIT_SLIDES = 10_000
MAX_NAME_CHARS = 255  # a slide's display name: a file name on every common file system


class SegmentationService(fseg_pb2_grpc.SegmentationServicer):
    def __init__(
        self,
        resources: Resources,
        access: SlideAccess,
        uploads: UploadStore | None,
        worker: DeviceWorker,
        admission: Admission,
        limits: Limits,
        draining: threading.Event,
        cache: FeatureCache | None = None,
        metrics: NoMetrics = NO_METRICS,
    ) -> None:
        self.resources = resources
        self.access = access
        self.uploads = uploads
        self.worker = worker
        self.admission = admission
        self.limits = limits
        self.draining = draining
        self.cache = cache
        self.metrics = metrics

    # -- Segment -------------------------------------------------------------------------

    def Segment(self, request: fseg_pb2.SegmentRequest, context: grpc.ServicerContext):
        with _status(context):
            self._refuse_if_draining()
            options = segment_options(request, self.limits.cost)
            extractor = self.resources.extractor(request.extractor)
            bank, bank_name = self.resources.bank(request.bank, request.bank_safetensors)
            if bank is not None:
                bank.check_extractor(extractor.spec.name, extractor.spec.feature_dim)
                bank.concepts(options.k)
            path = self.slide_path(request.slide)
            # Uploads are stored under their hash: the log names them as the user does.
            slide_name = _display_name(request.slide) or path.name
            outputs = requested_outputs(request)
            with self.admitted("segment", slide_name) as (ticket, record):
                yield fseg_pb2.SegmentEvent(
                    accepted=fseg_pb2.Accepted(
                        job_id=ticket.job_id, queue_position=ticket.queue_position
                    )
                )
                stop = CallStopper(context)
                queued = time.perf_counter()
                self.wait_for_slot(ticket, stop)
                waited = time.perf_counter() - queued

                def work(emit):
                    events = ProgressEvents(lambda p: emit(fseg_pb2.SegmentEvent(progress=p)))
                    progress = record.following(self.metrics.count_tiles(events))
                    with (
                        as_the_user_names([(request.slide, path, slide_name)]),
                        record.job_thread("open"),
                        self.open_slide(path) as slide,
                    ):
                        return segment_slide(
                            slide, extractor, bank, options, self.worker,
                            bank_name=bank_name, name=slide_name,
                            cache=self.cache, progress=progress,
                            should_stop=stop,
                        )  # fmt: skip

                result = yield from run_job(work, ticket.job_id)
                yield from self._results(result, outputs)
                record.summary = {
                    **result.summary,
                    "server": {
                        "version": __version__,
                        "device": describe_device(self.worker.device),
                        "job_id": ticket.job_id,
                        "queued_s": round(waited, 4),
                    },
                }
                yield fseg_pb2.SegmentEvent(
                    summary=fseg_pb2.Summary(json=json.dumps(record.summary))
                )

    def _results(self, result: SegmentResult, outputs: set[str]) -> Iterator[object]:
        """The result files asked for, in chunks, in OUTPUT_ORDER."""
        for name in OUTPUT_ORDER:
            if name in outputs:
                for chunk in file_chunks(name, result.files[name], self.limits.chunk_bytes):
                    yield fseg_pb2.SegmentEvent(chunk=chunk)

    # -- FitConcepts ---------------------------------------------------------------------

    def FitConcepts(self, request: fseg_pb2.FitRequest, context: grpc.ServicerContext):
        with _status(context):
            self._refuse_if_draining()
            extractor = self.resources.extractor(request.extractor)
            ks = sorted(set(request.k)) or [8]
            if min(ks) < 1:
                raise InvalidInput("every k must be at least 1")
            if not request.slides or len(request.slides) > MAX_FIT_SLIDES:
                raise InvalidInput(f"give between 1 and {MAX_FIT_SLIDES} slides to fit on")
            per_slide = [
                SegmentOptions(
                    k=max(ks),
                    slide_mpp=slide_mpp(slide, request.slide_mpp)[0],
                    target_mpp=request.target_mpp or None,
                    limits=self.limits.cost,
                )
                for slide in request.slides
            ]
            described = f"{len(request.slides)} slides"
            with self.admitted("fit", described, counts_as_slide=False) as (ticket, record):
                yield from self._fit(request, context, ticket, record, extractor, ks, per_slide)

    def _fit(
        self,
        request: fseg_pb2.FitRequest,
        context: grpc.ServicerContext,
        ticket: Ticket,
        record: JobRecord,
        extractor: Extractor,
        ks: list[int],
        per_slide: list[SegmentOptions],
    ) -> Iterator[fseg_pb2.FitEvent]:
        """A FitConcepts job once admitted: sample the slides, fit, send the bank."""
        stop = CallStopper(context)
        self.wait_for_slot(ticket, stop)
        total = len(request.slides)
        names = [_display_name(ref) for ref in request.slides]
        paths: dict[int, Path] = {}  # the slides resolved so far (a refused one is not)

        def open_input(index: int) -> Slide:
            paths[index] = self.slide_path(request.slides[index])
            return self.open_slide(paths[index])

        def work(emit):
            reservoir = provenance_reservoir(200_000, extractor.spec.feature_dim)

            def report(index: int, outcome: int | FsegError) -> None:
                if isinstance(outcome, FsegError):
                    reason = str(outcome)
                    if index in paths:
                        named = [(request.slides[index], paths[index], names[index])]
                        reason = named_as_the_user_does(reason, named)
                    skip = fseg_pb2.FitSkip(index=index, reason=reason)
                    emit(fseg_pb2.FitEvent(skipped=skip))
                progress = fseg_pb2.Progress(stage="fit", done=index + 1, total=total)
                emit(fseg_pb2.FitEvent(progress=progress))

            with record.job_thread("fit"):
                sampled = sample_slides(
                    total, open_input, extractor, self.worker, reservoir, per_slide.__getitem__,
                    max_tiles=request.tiles_per_slide or 64, report=report, should_stop=stop,
                    name_of=names.__getitem__,
                )  # fmt: skip
                source = f"fitted on {sampled.count} slides by fseg {__version__}"
                mpp = request.target_mpp or extractor.spec.mpp
                return fit_bank(reservoir, ks, extractor, mpp, source, inputs=sampled.inputs)

        bank = yield from run_job(work, ticket.job_id)
        data = bank.to_bytes()
        yield fseg_pb2.FitEvent(
            bank=fseg_pb2.FittedBank(
                sha256=hashlib.sha256(data).hexdigest(), k=bank.ks, safetensors=data
            )
        )

    # -- Atlas ---------------------------------------------------------------------------

    def Atlas(self, request: fseg_pb2.AtlasRequest, context: grpc.ServicerContext):
        with _status(context):
            self._refuse_if_draining()
            yield from atlas_events(self, request, context, _display_name)

    # -- Slides --------------------------------------------------------------------------

    def StatSlide(self, request: fseg_pb2.SlideRef, context: grpc.ServicerContext):
        with _status(context):
            try:
                path = self.slide_path(request)
            except (NotFound, PermissionDenied, NotAFile) as exc:
                return fseg_pb2.SlideStatus(readable=False, reason=str(exc))
            return fseg_pb2.SlideStatus(readable=True, size_bytes=path.stat().st_size)

    def UploadSlide(self, request_iterator: Iterator[fseg_pb2.UploadChunk], context):
        with _status(context):
            opening = "an upload must start with its header (name, sha256, size)"
            with self._upload_stream(request_iterator, context, opening) as (store, header, data):
                path, present = store.receive(header.name, header.sha256, header.size_bytes, data)
            return fseg_pb2.UploadResult(
                sha256=header.sha256, already_present=present, size_bytes=path.stat().st_size
            )

    def StatSlideSet(self, request: fseg_pb2.SlideSet, context: grpc.ServicerContext):
        with _status(context):
            store = self._upload_store()
            manifest = checked_manifest(request, store.max_bytes)
            return self._set_status(manifest, SlideSets(store).missing(manifest))

    def UploadSlideSet(self, request_iterator: Iterator[fseg_pb2.SlideSetChunk], context):
        with _status(context):
            opening = "a slide set's upload must start with its manifest"
            with self._upload_stream(request_iterator, context, opening) as (store, header, data):
                manifest = checked_manifest(header.set, store.max_bytes)
                SlideSets(store).receive(manifest, list(header.sending), data)
            return self._set_status(manifest, [])

    @contextlib.contextmanager
    def _upload_stream(self, request_iterator: Iterator, context, opening: str) -> Iterator[tuple]:
        """(store, header, data chunks) of an upload stream, read in one of the store's
        slots and cancelled when idle; ``opening`` says what must come first."""
        self._refuse_if_draining()
        store = self._upload_store()
        with store.slot():
            messages = idle_limited(request_iterator, context, self.limits.upload_idle_s)
            first = next(messages, None)
            if first is None or not first.HasField("header"):
                raise InvalidInput(opening)
            yield store, first.header, (part.data for part in messages if part.HasField("data"))

    def _upload_store(self) -> UploadStore:
        if self.uploads is None:
            raise PermissionDenied("this server takes no uploads (started without --upload-dir)")
        return self.uploads

    @staticmethod
    def _set_status(manifest: SetManifest, missing: list[str]) -> fseg_pb2.SlideSetStatus:
        return fseg_pb2.SlideSetStatus(
            sha256=manifest.sha256, complete=not missing, missing=missing, size_bytes=manifest.size
        )

    # -- Info ----------------------------------------------------------------------------

    def GetServerInfo(self, request: fseg_pb2.ServerInfoRequest, context):
        with _status(context):
            return server_info(
                self.resources,
                self.worker.device,
                self.limits,
                self.uploads is not None,
                self.admission.counts,
            )

    # -- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def admitted(
        self, kind: str, described: str, *, counts_as_slide: bool = True
    ) -> Iterator[tuple[Ticket, JobRecord]]:
        """A job admitted (RESOURCE_EXHAUSTED when the queue is full), recorded (its
        closing log line and metrics) and released however it ends."""
        ticket = self.admission.admit(kind)
        try:
            with recorded(
                ticket.job_id, described, self.metrics, counts_as_slide=counts_as_slide
            ) as record:
                yield ticket, record
        finally:
            self.admission.release(ticket)

    def open_slide(self, path: Path) -> Slide:
        """``path`` opened under this server's limit on plain images' pixels."""
        return open_slide(path, self.limits.cost.max_image_pixels)

    def slide_path(self, ref: fseg_pb2.SlideRef) -> Path:
        source = ref.WhichOneof("source")
        if source == "path":
            return self.access.resolve_path(ref.path)
        if source == "sha256":
            return self.access.resolve_upload(ref.sha256)
        raise InvalidInput("the request names no slide: give a path or the sha256 of an upload")

    def wait_for_slot(self, ticket: Ticket, stop: CallStopper) -> None:
        """Wait to run; a job that has not started when the server begins to drain
        is sent away at once (UNAVAILABLE: the client retries elsewhere) rather
        than started during the grace period and cut at its end."""
        try:
            self.admission.wait_for_slot(ticket, lambda: stop() or self.draining.is_set())
        except Cancelled:
            if not self.draining.is_set():
                raise
        self._refuse_if_draining()

    def _refuse_if_draining(self) -> None:
        if self.draining.is_set():
            raise _Unavailable("the server is shutting down; send the job to another server")


def _display_name(ref: fseg_pb2.SlideRef) -> str:
    """The slide's file name as the client knows it ("": the file's own name serves;
    uploads are stored under their hash, so they send one). It names outputs and
    log lines, so it is one line of at most MAX_NAME_CHARS characters."""
    name = PurePosixPath(ref.name.replace("\\", "/")).name if ref.name else ""
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"the slide's name is {len(name):,} characters long; at most {MAX_NAME_CHARS}"
        )
    if first_control_character(name) is not None:
        raise InvalidInput(f"the slide's name {name!r} holds a control character")
    return name


class _Unavailable(FsegError):
    status = "UNAVAILABLE"


@contextlib.contextmanager
def _status(context: grpc.ServicerContext) -> Iterator[None]:
    """Map errors to status codes with their one sentence; log the unexpected ones."""
    try:
        yield
    except FsegError as exc:
        context.abort(getattr(grpc.StatusCode, exc.status), clipped(str(exc)))
    except Exception as exc:
        log.exception("internal error")
        context.abort(
            grpc.StatusCode.INTERNAL,
            clipped(f"internal error ({type(exc).__name__}: {exc}); the server keeps serving"),
        )
