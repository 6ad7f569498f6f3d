"""The batch CSV, status-code sentences, and bank metadata read without safetensors."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path

import grpc
import pytest

from fseg_client.bankfile import bank_metadata, check_bank
from fseg_client.errors import ClientError, ProtocolError, rpc_error_sentence, status_sentence
from fseg_client.inputs import SlideInput
from fseg_client.report import SlideOutcome, csv_text, write_batch_csv

#: A fixed duration handed to every outcome: the CSV formats it, no clock is read.
GIVEN_DURATION_S, WRITTEN_DURATION = 2.5, "2.50"
DURATION_COLUMN = "seconds"


def outcome(
    stem: str, status: str, summary=None, error: str = "", job_id: str = ""
) -> SlideOutcome:
    slide = SlideInput(Path(f"/s/{stem}.svs"), stem)
    return SlideOutcome(slide, status, "h:1", 1, error, GIVEN_DURATION_S, summary, job_id)


def test_csv_has_one_row_per_slide_and_one_column_per_class(tmp_path: Path) -> None:
    calibrated = {
        "tissue": {"area_um2": 10.0},
        "classes": [{"name": "Stroma", "area_um2": 6.0}, {"name": "Tumour", "area_um2": 4.0}],
    }
    uncalibrated = {"tissue": {"area_px2": 8.0}, "classes": [{"name": "Stroma", "area_px2": 8.0}]}
    outcomes = [
        outcome("a", "done", calibrated),
        outcome("b", "skipped", uncalibrated),
        outcome("c", "failed", error='the server said "no", twice'),
    ]
    path = write_batch_csv(tmp_path, outcomes)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert list(rows[0])[:8] == [
        "slide",
        "path",
        "status",
        "server",
        "job_id",
        "attempts",
        "error",
        "seconds",
    ]
    assert list(rows[0])[8:] == [
        "tissue_area_um2",
        "tissue_area_px2",
        "area_um2:Stroma",
        "area_um2:Tumour",
        "area_px2:Stroma",
    ]
    assert rows[0]["area_um2:Tumour"] == "4.000" and rows[0]["area_px2:Stroma"] == ""
    assert rows[1]["area_px2:Stroma"] == "8.000"
    assert rows[2]["error"] == 'the server said "no", twice'
    assert rows[2][DURATION_COLUMN] == WRITTEN_DURATION
    assert [p.name for p in tmp_path.iterdir()] == ["batch-summary.csv"]


def test_csv_names_the_job_of_each_attempt_and_of_each_earlier_run() -> None:
    """A failed slide's row names its job, to be found in the server's log; a slide
    skipped as done names the job its summary records."""
    earlier = {"client": {"job_id": "segment-0a1b2c3d-7"}}
    rows = list(
        csv.DictReader(
            io.StringIO(
                csv_text(
                    [
                        outcome("a", "failed", error="unreadable", job_id="segment-9f8e7d6c-2"),
                        outcome("b", "skipped", earlier),
                        outcome("c", "failed", error="refused before any job"),
                    ]
                )
            )
        )
    )
    assert [r["job_id"] for r in rows] == ["segment-9f8e7d6c-2", "segment-0a1b2c3d-7", ""]


def test_csv_survives_odd_summaries() -> None:
    text = csv_text([outcome("a", "done", {"classes": [None, {"index": 3}], "tissue": 1})])
    assert text.splitlines()[0].endswith(DURATION_COLUMN)


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "k must be 8.", "rejected the request: k must be 8."),
        (grpc.StatusCode.NOT_FOUND, "no slide x", "could not find it: no slide x."),
        (grpc.StatusCode.PERMISSION_DENIED, "outside roots", "refused access: outside roots."),
        (grpc.StatusCode.FAILED_PRECONDITION, "no mpp; use --mpp", "cannot do this: no mpp;"),
        (grpc.StatusCode.UNAUTHENTICATED, "bad token", "credentials: bad token; pass --token-file"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", "is busy: queue full."),
        (grpc.StatusCode.UNAVAILABLE, "connection refused", "is unavailable (connection refused)."),
        (grpc.StatusCode.UNIMPLEMENTED, "", "does not offer this call (UNIMPLEMENTED); check"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", "did not answer within the deadline"),
    ],
)
def test_status_codes_become_one_sentence(code, details: str, expected: str) -> None:
    sentence = status_sentence(code, details, "the server at h:1")
    assert sentence.startswith("the server at h:1 ") and expected in sentence
    assert sentence.endswith(".") and not sentence.endswith("..") and "\n" not in sentence


def test_other_errors_become_sentences_too() -> None:
    assert "broken answer: bad sha." in rpc_error_sentence(ProtocolError("bad sha"), "h:1")
    assert rpc_error_sentence(ClientError("cannot read x"), "h:1") == "cannot read x."
    message = rpc_error_sentence(FileNotFoundError(2, "No such file", "/x.svs"), "h:1")
    assert message == "a local file operation failed /x.svs: No such file."


def bank_bytes(meta: dict) -> bytes:
    header = json.dumps({"__metadata__": {"fseg": json.dumps(meta)}}).encode()
    return struct.pack("<Q", len(header)) + header


def test_bank_metadata_is_read_and_checked() -> None:
    meta = bank_metadata(bank_bytes({"extractor": "uni", "k": [8, 16]}), "b")
    check_bank(meta, "b", 16, "uni")
    check_bank(meta, "b", 8, "")
    with pytest.raises(ClientError, match="has no k=32; it holds k = 8, 16"):
        check_bank(meta, "b", 32, "")
    with pytest.raises(ClientError, match="use --extractor uni"):
        check_bank(meta, "b", 8, "stain")


@pytest.mark.parametrize(
    "data", [b"", b"\xff" * 8 + b"{}", struct.pack("<Q", 2) + b"{}", b"joblib pickle bytes"]
)
def test_non_banks_are_refused(data: bytes) -> None:
    with pytest.raises(ClientError, match="is not an fseg concept bank"):
        bank_metadata(data, "b.safetensors")
