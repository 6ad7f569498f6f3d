"""``--log-format json``: a fleet's log, one JSON object per line, searchable by job id.

A real server logs in JSON while the real client segments a good slide and a
broken one (bytes that are no slide, under a slide name); the job id the
client writes into ``batch-summary.csv`` finds each slide's lines in the log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_e2e_support import client_env, csv_rows, real_server

from conftest import SLIDES, shared
from fseg_proto import fseg_pb2
from servers import ServerProcess

pytestmark = pytest.mark.slow
LINE_FIELDS = {"time", "level", "logger", "message"}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("json-logs")
    broken_root = work / "broken"
    broken_root.mkdir()
    broken = broken_root / "broken.svs"
    broken.write_bytes(b"these bytes are no slide\n" * 100)
    server = real_server(
        work, "--log-format", "json", "--extractor", "stain",
        "--slide-root", str(SLIDES), "--slide-root", str(broken_root),
    )  # fmt: skip
    with server:
        # The second run sends the first run's bank: with none, the client would fit one
        # first, and the broken slide would fail in that fit rather than in its own job.
        first = segment(server, work / "out", shared("slides/CMU-1-Small-Region.svs"))
        bank = work / "out" / "fseg-bank.safetensors"
        second = segment(server, work / "out2", broken, "--concepts", str(bank))
    rows = {r["slide"]: r for r in csv_rows(work / "out") + csv_rows(work / "out2")}
    return {"runs": (first, second), "rows": rows, "lines": server.log_text().splitlines()}


def segment(server: ServerProcess, out: Path, *args: object) -> subprocess.CompletedProcess:
    """``fseg segment`` (the real client) on ``server``, its answer kept for the tests."""
    command = [sys.executable, "-m", "fseg_client.cli", "segment", "--server", server.address,
               "--out", str(out), "--k", "4", "--progress", "none", "--retries", "0",
               *map(str, args)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=client_env(), timeout=600)


def entries(logged: dict) -> list[dict]:
    return [json.loads(line) for line in logged["lines"]]


def test_every_line_is_one_json_object_with_time_level_and_message(logged: dict) -> None:
    assert logged["lines"], "the server logged nothing"
    for entry in entries(logged):
        assert set(entry) >= LINE_FIELDS, entry
        assert entry["time"].endswith("+00:00")  # UTC, ISO 8601


def test_a_failed_slide_is_found_in_the_log_by_the_job_id_in_the_csv(logged: dict) -> None:
    row = logged["rows"]["broken"]
    assert row["status"] == "failed" and row["job_id"], row
    found = [e for e in entries(logged) if e.get("job_id") == row["job_id"]]
    assert [e["outcome"] for e in found] == ["failed"]
    (line,) = found
    assert line["level"] == "WARNING" and line["slide"] == "broken.svs"
    assert line["stage"] == "open"  # where it stopped: the file is no slide
    assert row["error"].rstrip(".").split(": ")[-1] in line["message"]


def test_a_done_slide_names_its_job_stage_and_outcome(logged: dict) -> None:
    row = logged["rows"]["CMU-1-Small-Region"]
    assert row["status"] == "done" and row["job_id"], row
    (line,) = [e for e in entries(logged) if e.get("job_id") == row["job_id"]]
    assert line["outcome"] == "done" and line["slide"] == "CMU-1-Small-Region.svs"
    assert line["level"] == "INFO"


def test_job_ids_differ_between_servers(tmp_path: Path, logged: dict) -> None:
    """A fleet pools its logs: one server's first job is not another's."""
    other = real_server(tmp_path, "--extractor", "stain", "--slide-root", str(SLIDES))
    with other:
        first = other.stub().Segment(
            fseg_pb2.SegmentRequest(slide={"path": "small.svs"}, extractor="stain", k=4),
            timeout=120,
        )
        job_id = next(first).accepted.job_id
        first.cancel()
    assert job_id not in {e.get("job_id") for e in entries(logged)}


def test_lines_logged_inside_a_job_carry_its_fields_and_a_traceback_stays_on_one_line() -> None:
    import io
    import logging

    from fseg_server.logs import JsonFormatter, job_fields, set_stage

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fseg.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with job_fields(job_id="segment-00ff00ff-3", slide="a.svs", stage="open"):
            set_stage("segment")
            try:
                raise OSError("disk full")
            except OSError:
                logger.exception("feature cache: could not store an entry")
        logger.warning("after the job")
    finally:
        logger.removeHandler(handler)
    inside, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["job_id"] == "segment-00ff00ff-3" and inside["stage"] == "segment"
    assert "OSError: disk full" in inside["error"]
    assert "job_id" not in after and after["level"] == "WARNING"
