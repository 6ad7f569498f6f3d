"""Scoring of predicted label maps against annotated masks (``fseg evaluate``).

Needs only numpy and pillow: the metrics and the Hungarian solver are written here.
"""

from .matching import (
    HUNGARIAN,
    MANY_TO_ONE,
    MAPPING_METHODS,
    EvaluationReport,
    cluster_mapping,
    evaluate_arrays,
    hungarian_mapping,
    linear_sum_assignment,
    many_to_one_mapping,
    summarise,
)
from .metrics import (
    NO_LABEL,
    ClassScore,
    Contingency,
    SegmentationScores,
    ari,
    class_scores,
    contingency,
    merge_contingencies,
    mutual_information,
    nmi,
    segmentation_scores,
)
from .run import (
    EvaluationError,
    add_arguments,
    evaluate_folders,
    format_report,
    read_label_png,
    run,
    write_json_atomic,
)

__all__ = [
    "HUNGARIAN",
    "MANY_TO_ONE",
    "MAPPING_METHODS",
    "NO_LABEL",
    "ClassScore",
    "Contingency",
    "EvaluationError",
    "EvaluationReport",
    "SegmentationScores",
    "add_arguments",
    "ari",
    "class_scores",
    "cluster_mapping",
    "contingency",
    "evaluate_arrays",
    "evaluate_folders",
    "format_report",
    "hungarian_mapping",
    "linear_sum_assignment",
    "many_to_one_mapping",
    "merge_contingencies",
    "mutual_information",
    "nmi",
    "read_label_png",
    "run",
    "segmentation_scores",
    "summarise",
    "write_json_atomic",
]
