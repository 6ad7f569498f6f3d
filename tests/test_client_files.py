"""Output files: atomic writes, chunk reassembly, and what counts as complete."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fseg_client.atomic import atomic_write, clean_stale_temp_files, write_json_atomic
from fseg_client.errors import ProtocolError
from fseg_client.outputs import completed_summary, finish_slide
from fseg_client.results import ResultAssembler


def test_exception_mid_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "a.geojson"
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash")
    assert not target.exists() and os.listdir(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"new but unfinished")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old"


def test_killed_process_leaves_only_a_dot_tmp_that_the_next_run_removes(tmp_path: Path) -> None:
    target = tmp_path / "a.labels.png"
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from fseg_client.atomic import atomic_write
        with atomic_write(Path({str(target)!r})) as handle:
            handle.write(b"x" * 1000)
            handle.flush()
            os._exit(9)  # killed mid-write: no cleanup runs
        """
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    (leftover,) = tmp_path.iterdir()
    assert leftover.name.startswith(".a.labels.png.") and leftover.name.endswith(".tmp")
    assert not target.exists()
    mine = tmp_path / f".other.json.{os.getpid()}.tmp"  # a live writer's file stays
    mine.write_bytes(b"")
    removed = clean_stale_temp_files(tmp_path, ["a.labels.png", "other.json"])
    assert removed == [leftover] and mine.exists()


def chunks(data: bytes, size: int) -> list[tuple[int, bytes, bool]]:
    if not data:
        return [(0, b"", True)]
    return [(o, data[o : o + size], o + size >= len(data)) for o in range(0, len(data), size)]


def feed(assembler: ResultAssembler, suffix: str, data: bytes, size: int = 7, sha=None) -> None:
    digest = sha or hashlib.sha256(data).hexdigest()
    for offset, piece, last in chunks(data, size):
        total = len(data) if last else 0
        assembler.add(suffix, offset, piece, last, total, digest if last else "")


def test_chunks_reassemble_and_commit(tmp_path: Path) -> None:
    assembler = ResultAssembler(tmp_path, "s")
    data = os.urandom(100)
    feed(assembler, "geojson", data)
    feed(assembler, "labels.png", b"")  # an empty file is one last chunk
    assembler.require(["geojson", "labels.png"])
    assert not (tmp_path / "s.geojson").exists()  # nothing visible before commit
    assembler.commit_all()
    assert (tmp_path / "s.geojson").read_bytes() == data
    assert (tmp_path / "s.labels.png").read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.geojson", "s.labels.png"]


@pytest.mark.parametrize(
    ("sequence", "message"),
    [
        ([(0, b"abc", False), (5, b"def", True)], "does not follow"),  # a gap
        ([(0, b"abc", False), (0, b"abc", False)], "does not follow"),  # a repeat
        ([(0, b"abc", True), (3, b"d", True)], "after its last"),
    ],
)
def test_out_of_order_chunks_are_refused(tmp_path: Path, sequence, message: str) -> None:
    assembler = ResultAssembler(tmp_path, "s")
    with pytest.raises(ProtocolError, match=message):
        for offset, data, last in sequence:
            digest = hashlib.sha256(b"abc").hexdigest()
            assembler.add("geojson", offset, data, last, 3 if last else 0, digest)
    assembler.discard_all()
    assert list(tmp_path.iterdir()) == []


def test_checksum_and_size_mismatches_are_refused(tmp_path: Path) -> None:
    assembler = ResultAssembler(tmp_path, "s")
    with pytest.raises(ProtocolError, match="SHA-256"):
        feed(assembler, "geojson", b"some bytes", sha="0" * 64)
    other = ResultAssembler(tmp_path, "t")
    with pytest.raises(ProtocolError, match="announced"):
        other.add("geojson", 0, b"abc", True, 4, hashlib.sha256(b"abc").hexdigest())
    assembler.discard_all()
    other.discard_all()
    assert list(tmp_path.iterdir()) == []


def test_unsafe_names_cut_streams_and_missing_files_are_refused(tmp_path: Path) -> None:
    assembler = ResultAssembler(tmp_path, "s")
    with pytest.raises(ProtocolError, match="named a result file"):
        assembler.add("../evil", 0, b"", True, 0, hashlib.sha256(b"").hexdigest())
    assembler.add("geojson", 0, b"abc", False, 0, "")
    with pytest.raises(ProtocolError, match="before geojson was complete"):
        assembler.require(["geojson"])
    done = ResultAssembler(tmp_path, "u")
    feed(done, "geojson", b"abc")
    with pytest.raises(ProtocolError, match=r"sent no overlay\.png") as info:
        done.require(["geojson", "overlay.png"])
    assert not info.value.retryable


def test_summary_goes_last_and_decides_completeness(tmp_path: Path) -> None:
    assembler = ResultAssembler(tmp_path, "s")
    feed(assembler, "geojson", b"{}")
    assert completed_summary(tmp_path, "s", "fp", ["geojson"]) is None
    summary = finish_slide(assembler, tmp_path, "s", {"classes": []}, "fp", {"server": "h:1"})
    assert summary["request_fingerprint"] == "fp" and summary["client"]["files"] == ["s.geojson"]
    assert completed_summary(tmp_path, "s", "fp", ["geojson"]) == summary
    assert completed_summary(tmp_path, "s", "other", ["geojson"]) is None
    assert completed_summary(tmp_path, "s", "fp", ["geojson", "labels.png"]) is None
    write_json_atomic(tmp_path / "s.json", [1, 2])  # not an object: not complete
    assert completed_summary(tmp_path, "s", "fp", ["geojson"]) is None


def test_a_file_from_an_earlier_run_does_not_complete_a_later_one(tmp_path: Path) -> None:
    # An overlay from a run with other options, then a run that asked only for GeoJSON:
    # its summary vouches for the GeoJSON alone, so a run wanting both is not done.
    (tmp_path / "s.overlay.png").write_bytes(b"old")
    assembler = ResultAssembler(tmp_path, "s")
    feed(assembler, "geojson", b"{}")
    finish_slide(assembler, tmp_path, "s", {"classes": []}, "fp", {"server": "h:1"})
    assert completed_summary(tmp_path, "s", "fp", ["geojson"]) is not None
    assert completed_summary(tmp_path, "s", "fp", ["geojson", "overlay.png"]) is None


def test_an_output_of_another_size_is_not_complete(tmp_path: Path) -> None:
    # A re-run must redo a slide whose GeoJSON was cut short (a copy that died, a full
    # disk on a share): the summary records each file's size and the check compares it.
    geojson_bytes = b'{"type": "FeatureCollection", "features": []}'
    assembler = ResultAssembler(tmp_path, "s")
    feed(assembler, "geojson", geojson_bytes)
    summary = finish_slide(assembler, tmp_path, "s", {"classes": []}, "fp", {"server": "h:1"})
    assert summary["client"]["file_bytes"] == {"s.geojson": len(geojson_bytes)}
    assert completed_summary(tmp_path, "s", "fp", ["geojson"]) is not None
    geojson = tmp_path / "s.geojson"
    geojson.write_bytes(geojson.read_bytes()[:20])
    assert completed_summary(tmp_path, "s", "fp", ["geojson"]) is None


def test_a_summary_without_sizes_is_trusted_on_names(tmp_path: Path) -> None:
    # Output folders written before sizes were recorded are not redone wholesale.
    (tmp_path / "s.geojson").write_bytes(b"{}")
    summary = {"request_fingerprint": "fp", "client": {"files": ["s.geojson"]}}
    write_json_atomic(tmp_path / "s.json", summary)
    assert completed_summary(tmp_path, "s", "fp", ["geojson"]) == summary


def test_the_folder_is_synced_after_the_renames_and_before_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsync on the folder itself is what makes a rename survive a power cut; a real
    # power cut cannot be staged here, so the order of the calls is what is checked.
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("sync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "sync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(f"rename {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assembler = ResultAssembler(tmp_path, "s")
    feed(assembler, "geojson", b"{}")
    assert events == ["sync file"]  # the file is flushed when its last chunk arrives
    events.clear()
    finish_slide(assembler, tmp_path, "s", {"classes": []}, "fp", {"server": "h:1"})
    assert events == [
        "rename s.geojson",
        "sync folder",
        "sync file",
        "rename s.json",
        "sync folder",
    ]
