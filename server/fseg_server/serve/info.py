"""GetServerInfo: what a server offers, so clients and operators can check before sending."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import torch

from fseg_proto import PROTOCOL, fseg_pb2

from .. import __version__
from ..device import describe_device
from ..limits import DEFAULT_LIMITS, MAX_CLASS_NAME_CHARS, MAX_ROI_COORDINATE, CostLimits
from .resources import Resources


@dataclass(frozen=True)
class Limits:
    """Limits a server enforces (bytes are bytes, counts are jobs)."""

    max_queued_jobs: int
    max_running_jobs: int
    upload_max_bytes: int
    max_message_bytes: int
    chunk_bytes: int
    #: Seconds an upload stream may send nothing before it is cancelled.
    upload_idle_s: float = 60.0
    #: What one job may cost (slide size, pixels, rank, ROI).
    cost: CostLimits = DEFAULT_LIMITS


def server_info(
    resources: Resources,
    device: torch.device,
    limits: Limits,
    uploads_enabled: bool,
    jobs: tuple[int, int],
) -> fseg_pb2.ServerInfo:
    """The ServerInfo message; ``jobs`` is (running, waiting)."""
    extractors = [
        fseg_pb2.ExtractorInfo(
            name=name,
            feature_dim=extractor.spec.feature_dim,
            stride=extractor.spec.stride,
            mpp=extractor.spec.mpp,
            weights=extractor.weights_state,
            is_default=name == resources.default_extractor,
        )
        for name, extractor in resources.extractors.items()
    ]
    banks = [
        fseg_pb2.BankInfo(
            name=name,
            extractor=bank.extractor,
            feature_dim=bank.feature_dim,
            k=bank.ks,
            sha256=bank.digest,
            mpp=bank.mpp or 0.0,
        )
        for name, bank in resources.banks.items()
    ]
    return fseg_pb2.ServerInfo(
        version=__version__,
        protocol=PROTOCOL,
        device=describe_device(device),
        extractors=extractors,
        banks=banks,
        limits=fseg_pb2.Limits(
            max_queued_jobs=limits.max_queued_jobs,
            upload_max_bytes=limits.upload_max_bytes,
            max_message_bytes=limits.max_message_bytes,
            chunk_bytes=limits.chunk_bytes,
            max_running_jobs=limits.max_running_jobs,
            upload_idle_s=limits.upload_idle_s,
            max_slide_mm=limits.cost.max_slide_mm,
            max_uncalibrated_px=limits.cost.max_uncalibrated_px,
            max_image_mpx=limits.cost.max_image_mpx,
            max_thumbnail_mpx=limits.cost.max_thumbnail_mpx,
            max_model_mpx=limits.cost.max_model_mpx,
            max_components=limits.cost.max_components,
            max_roi_vertices=limits.cost.max_roi_vertices,
            max_roi_coordinate=MAX_ROI_COORDINATE,
            max_class_name_chars=MAX_CLASS_NAME_CHARS,
        ),
        uploads_enabled=uploads_enabled,
        running_jobs=jobs[0],
        queued_jobs=jobs[1],
        versions={"fseg": __version__, "torch": torch.__version__, "grpcio": grpc.__version__},
    )
