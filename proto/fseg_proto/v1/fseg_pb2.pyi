from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_PROJECT: _ClassVar[Mode]
    MODE_CLASSIFY: _ClassVar[Mode]
    MODE_CLUSTER: _ClassVar[Mode]

class Frame(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_UNSPECIFIED: _ClassVar[Frame]
    FRAME_BOUNDS: _ClassVar[Frame]
    FRAME_LEVEL0: _ClassVar[Frame]

class TissueDetection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TISSUE_UNSPECIFIED: _ClassVar[TissueDetection]
    TISSUE_ON: _ClassVar[TissueDetection]
    TISSUE_OFF: _ClassVar[TissueDetection]
MODE_UNSPECIFIED: Mode
MODE_PROJECT: Mode
MODE_CLASSIFY: Mode
MODE_CLUSTER: Mode
FRAME_UNSPECIFIED: Frame
FRAME_BOUNDS: Frame
FRAME_LEVEL0: Frame
TISSUE_UNSPECIFIED: TissueDetection
TISSUE_ON: TissueDetection
TISSUE_OFF: TissueDetection

class SlideRef(_message.Message):
    __slots__ = ("path", "sha256", "name", "mpp")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MPP_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    name: str
    mpp: float
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., name: _Optional[str] = ..., mpp: _Optional[float] = ...) -> None: ...

class VectorizeOptions(_message.Message):
    __slots__ = ("simplify", "min_area_um2", "split_regions", "label_upsample")
    SIMPLIFY_FIELD_NUMBER: _ClassVar[int]
    MIN_AREA_UM2_FIELD_NUMBER: _ClassVar[int]
    SPLIT_REGIONS_FIELD_NUMBER: _ClassVar[int]
    LABEL_UPSAMPLE_FIELD_NUMBER: _ClassVar[int]
    simplify: float
    min_area_um2: float
    split_regions: bool
    label_upsample: int
    def __init__(self, simplify: _Optional[float] = ..., min_area_um2: _Optional[float] = ..., split_regions: _Optional[bool] = ..., label_upsample: _Optional[int] = ...) -> None: ...

class OutputOptions(_message.Message):
    __slots__ = ("geojson", "labels", "overlay")
    GEOJSON_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_FIELD_NUMBER: _ClassVar[int]
    geojson: bool
    labels: bool
    overlay: bool
    def __init__(self, geojson: _Optional[bool] = ..., labels: _Optional[bool] = ..., overlay: _Optional[bool] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("slide", "extractor", "bank", "k", "mode", "components", "slide_mpp", "target_mpp", "frame", "roi_geojson", "tissue", "vectorize", "outputs", "bank_safetensors")
    SLIDE_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    BANK_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    SLIDE_MPP_FIELD_NUMBER: _ClassVar[int]
    TARGET_MPP_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    ROI_GEOJSON_FIELD_NUMBER: _ClassVar[int]
    TISSUE_FIELD_NUMBER: _ClassVar[int]
    VECTORIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    BANK_SAFETENSORS_FIELD_NUMBER: _ClassVar[int]
    slide: SlideRef
    extractor: str
    bank: str
    k: int
    mode: Mode
    components: int
    slide_mpp: float
    target_mpp: float
    frame: Frame
    roi_geojson: str
    tissue: TissueDetection
    vectorize: VectorizeOptions
    outputs: OutputOptions
    bank_safetensors: bytes
    def __init__(self, slide: _Optional[_Union[SlideRef, _Mapping]] = ..., extractor: _Optional[str] = ..., bank: _Optional[str] = ..., k: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., components: _Optional[int] = ..., slide_mpp: _Optional[float] = ..., target_mpp: _Optional[float] = ..., frame: _Optional[_Union[Frame, str]] = ..., roi_geojson: _Optional[str] = ..., tissue: _Optional[_Union[TissueDetection, str]] = ..., vectorize: _Optional[_Union[VectorizeOptions, _Mapping]] = ..., outputs: _Optional[_Union[OutputOptions, _Mapping]] = ..., bank_safetensors: _Optional[bytes] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("job_id", "queue_position")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    queue_position: int
    def __init__(self, job_id: _Optional[str] = ..., queue_position: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "done", "total")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("file", "offset", "data", "last", "total_bytes", "sha256")
    FILE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    file: str
    offset: int
    data: bytes
    last: bool
    total_bytes: int
    sha256: str
    def __init__(self, file: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class SegmentEvent(_message.Message):
    __slots__ = ("accepted", "progress", "chunk", "summary")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    accepted: Accepted
    progress: Progress
    chunk: ResultChunk
    summary: Summary
    def __init__(self, accepted: _Optional[_Union[Accepted, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., chunk: _Optional[_Union[ResultChunk, _Mapping]] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ...) -> None: ...

class AtlasRequest(_message.Message):
    __slots__ = ("slides", "extractor", "bank", "bank_safetensors", "k", "slide_mpp", "target_mpp", "frame", "tissue", "windows_per_concept", "tiles_per_slide", "seed")
    SLIDES_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    BANK_FIELD_NUMBER: _ClassVar[int]
    BANK_SAFETENSORS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SLIDE_MPP_FIELD_NUMBER: _ClassVar[int]
    TARGET_MPP_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TISSUE_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_PER_CONCEPT_FIELD_NUMBER: _ClassVar[int]
    TILES_PER_SLIDE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    slides: _containers.RepeatedCompositeFieldContainer[SlideRef]
    extractor: str
    bank: str
    bank_safetensors: bytes
    k: int
    slide_mpp: float
    target_mpp: float
    frame: Frame
    tissue: TissueDetection
    windows_per_concept: int
    tiles_per_slide: int
    seed: int
    def __init__(self, slides: _Optional[_Iterable[_Union[SlideRef, _Mapping]]] = ..., extractor: _Optional[str] = ..., bank: _Optional[str] = ..., bank_safetensors: _Optional[bytes] = ..., k: _Optional[int] = ..., slide_mpp: _Optional[float] = ..., target_mpp: _Optional[float] = ..., frame: _Optional[_Union[Frame, str]] = ..., tissue: _Optional[_Union[TissueDetection, str]] = ..., windows_per_concept: _Optional[int] = ..., tiles_per_slide: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class FitRequest(_message.Message):
    __slots__ = ("slides", "extractor", "k", "tiles_per_slide", "slide_mpp", "target_mpp")
    SLIDES_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TILES_PER_SLIDE_FIELD_NUMBER: _ClassVar[int]
    SLIDE_MPP_FIELD_NUMBER: _ClassVar[int]
    TARGET_MPP_FIELD_NUMBER: _ClassVar[int]
    slides: _containers.RepeatedCompositeFieldContainer[SlideRef]
    extractor: str
    k: _containers.RepeatedScalarFieldContainer[int]
    tiles_per_slide: int
    slide_mpp: float
    target_mpp: float
    def __init__(self, slides: _Optional[_Iterable[_Union[SlideRef, _Mapping]]] = ..., extractor: _Optional[str] = ..., k: _Optional[_Iterable[int]] = ..., tiles_per_slide: _Optional[int] = ..., slide_mpp: _Optional[float] = ..., target_mpp: _Optional[float] = ...) -> None: ...

class FittedBank(_message.Message):
    __slots__ = ("sha256", "k", "safetensors")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SAFETENSORS_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    k: _containers.RepeatedScalarFieldContainer[int]
    safetensors: bytes
    def __init__(self, sha256: _Optional[str] = ..., k: _Optional[_Iterable[int]] = ..., safetensors: _Optional[bytes] = ...) -> None: ...

class FitSkip(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class FitEvent(_message.Message):
    __slots__ = ("progress", "bank", "skipped")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BANK_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    bank: FittedBank
    skipped: FitSkip
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., bank: _Optional[_Union[FittedBank, _Mapping]] = ..., skipped: _Optional[_Union[FitSkip, _Mapping]] = ...) -> None: ...

class SlideStatus(_message.Message):
    __slots__ = ("readable", "reason", "size_bytes")
    READABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    readable: bool
    reason: str
    size_bytes: int
    def __init__(self, readable: _Optional[bool] = ..., reason: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("name", "sha256", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadResult(_message.Message):
    __slots__ = ("sha256", "already_present", "size_bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    already_present: bool
    size_bytes: int
    def __init__(self, sha256: _Optional[str] = ..., already_present: _Optional[bool] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class SlideFile(_message.Message):
    __slots__ = ("path", "sha256", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class SlideSet(_message.Message):
    __slots__ = ("main", "files")
    MAIN_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    main: str
    files: _containers.RepeatedCompositeFieldContainer[SlideFile]
    def __init__(self, main: _Optional[str] = ..., files: _Optional[_Iterable[_Union[SlideFile, _Mapping]]] = ...) -> None: ...

class SlideSetHeader(_message.Message):
    __slots__ = ("set", "sending")
    SET_FIELD_NUMBER: _ClassVar[int]
    SENDING_FIELD_NUMBER: _ClassVar[int]
    set: SlideSet
    sending: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, set: _Optional[_Union[SlideSet, _Mapping]] = ..., sending: _Optional[_Iterable[str]] = ...) -> None: ...

class SlideSetChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: SlideSetHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[SlideSetHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SlideSetStatus(_message.Message):
    __slots__ = ("sha256", "complete", "missing", "size_bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    complete: bool
    missing: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    def __init__(self, sha256: _Optional[str] = ..., complete: _Optional[bool] = ..., missing: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExtractorInfo(_message.Message):
    __slots__ = ("name", "feature_dim", "stride", "mpp", "weights", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    MPP_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    feature_dim: int
    stride: int
    mpp: float
    weights: str
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., feature_dim: _Optional[int] = ..., stride: _Optional[int] = ..., mpp: _Optional[float] = ..., weights: _Optional[str] = ..., is_default: _Optional[bool] = ...) -> None: ...

class BankInfo(_message.Message):
    __slots__ = ("name", "extractor", "feature_dim", "k", "sha256", "mpp")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIM_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MPP_FIELD_NUMBER: _ClassVar[int]
    name: str
    extractor: str
    feature_dim: int
    k: _containers.RepeatedScalarFieldContainer[int]
    sha256: str
    mpp: float
    def __init__(self, name: _Optional[str] = ..., extractor: _Optional[str] = ..., feature_dim: _Optional[int] = ..., k: _Optional[_Iterable[int]] = ..., sha256: _Optional[str] = ..., mpp: _Optional[float] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_queued_jobs", "upload_max_bytes", "max_message_bytes", "chunk_bytes", "max_running_jobs", "upload_idle_s", "max_slide_mm", "max_uncalibrated_px", "max_image_mpx", "max_thumbnail_mpx", "max_model_mpx", "max_components", "max_roi_vertices", "max_roi_coordinate", "max_class_name_chars")
    MAX_QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_IDLE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_SLIDE_MM_FIELD_NUMBER: _ClassVar[int]
    MAX_UNCALIBRATED_PX_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_MPX_FIELD_NUMBER: _ClassVar[int]
    MAX_THUMBNAIL_MPX_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_MPX_FIELD_NUMBER: _ClassVar[int]
    MAX_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROI_VERTICES_FIELD_NUMBER: _ClassVar[int]
    MAX_ROI_COORDINATE_FIELD_NUMBER: _ClassVar[int]
    MAX_CLASS_NAME_CHARS_FIELD_NUMBER: _ClassVar[int]
    max_queued_jobs: int
    upload_max_bytes: int
    max_message_bytes: int
    chunk_bytes: int
    max_running_jobs: int
    upload_idle_s: float
    max_slide_mm: float
    max_uncalibrated_px: int
    max_image_mpx: float
    max_thumbnail_mpx: float
    max_model_mpx: float
    max_components: int
    max_roi_vertices: int
    max_roi_coordinate: int
    max_class_name_chars: int
    def __init__(self, max_queued_jobs: _Optional[int] = ..., upload_max_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., max_running_jobs: _Optional[int] = ..., upload_idle_s: _Optional[float] = ..., max_slide_mm: _Optional[float] = ..., max_uncalibrated_px: _Optional[int] = ..., max_image_mpx: _Optional[float] = ..., max_thumbnail_mpx: _Optional[float] = ..., max_model_mpx: _Optional[float] = ..., max_components: _Optional[int] = ..., max_roi_vertices: _Optional[int] = ..., max_roi_coordinate: _Optional[int] = ..., max_class_name_chars: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "protocol", "device", "extractors", "banks", "limits", "uploads_enabled", "running_jobs", "queued_jobs", "versions")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    EXTRACTORS_FIELD_NUMBER: _ClassVar[int]
    BANKS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_ENABLED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    version: str
    protocol: str
    device: str
    extractors: _containers.RepeatedCompositeFieldContainer[ExtractorInfo]
    banks: _containers.RepeatedCompositeFieldContainer[BankInfo]
    limits: Limits
    uploads_enabled: bool
    running_jobs: int
    queued_jobs: int
    versions: _containers.ScalarMap[str, str]
    def __init__(self, version: _Optional[str] = ..., protocol: _Optional[str] = ..., device: _Optional[str] = ..., extractors: _Optional[_Iterable[_Union[ExtractorInfo, _Mapping]]] = ..., banks: _Optional[_Iterable[_Union[BankInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., uploads_enabled: _Optional[bool] = ..., running_jobs: _Optional[int] = ..., queued_jobs: _Optional[int] = ..., versions: _Optional[_Mapping[str, str]] = ...) -> None: ...
