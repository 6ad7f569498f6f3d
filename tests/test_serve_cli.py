"""``fseg-server`` on bad command lines and in a crowded machine: one sentence, right exit code.

Command lines run real ``fseg-server`` processes (a real server on loopback holds
the busy port); slide roots and upload slots are checked on the objects themselves.
"""

from __future__ import annotations

import errno
import hashlib
import subprocess
import threading

import pytest
from test_e2e_support import real_server

from conftest import shared
from fseg_server.errors import InvalidInput, PermissionDenied, ResourceExhausted
from fseg_server.serve.slide_access import SlideAccess, _refusal
from fseg_server.serve.uploads import UploadStore
from servers import run_server_cli as fseg_server


def assert_one_sentence(result: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_a_second_server_on_a_busy_port_refuses_to_start(tmp_path):
    with real_server(tmp_path) as first:
        second = fseg_server("serve", "--port", str(first.port), "--log-level", "ERROR")
        assert_one_sentence(second, 2, f"cannot listen on 127.0.0.1:{first.port}")
        assert first.serving()


@pytest.mark.parametrize(
    "args,code,fragment",
    [
        (["serve", "--port", "70000"], 2, "--port must be between 0 and 65535"),
        (["serve", "--port-file", "/nonexistent-dir/port"], 2, "is not a folder"),
        (["serve", "--port", "0", "--tls-client-ca", "/etc/hostname"], 2, "needs --tls-cert"),
        (
            ["serve", "--port", "0", "--tls-cert", "/nonexistent.pem", "--tls-key", "/no.key"],
            2,
            "cannot read --tls-cert /nonexistent.pem (No such file or directory)",
        ),
        (
            ["serve", "--port", "0", "--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"],
            2,
            "--tls-cert /etc/hostname holds no PEM certificate",
        ),
        (
            [
                "import-concepts",
                str(shared("concept-banks/resnet.joblib")),
                "--extractor",
                "resnet50",
                "--out",
                "/nonexistent-dir/bank.safetensors",
            ],
            2,
            "is not a folder",
        ),
    ],
    ids=[
        "port-range",
        "port-file-folder",
        "client-ca-alone",
        "tls-files-missing",
        "tls-cert-not-pem",
        "bank-out-folder",
    ],
)
def test_bad_command_lines_get_one_sentence(args, code, fragment):
    assert_one_sentence(fseg_server(*args), code, fragment)


def test_a_key_of_another_certificate_is_refused_before_listening(certs):
    """gRPC itself only logs C-level lines and fails the bind, which read as a busy port."""
    pair = ["--tls-cert", str(certs["server_pem"]), "--tls-key", str(certs["client_key"])]
    result = fseg_server("serve", "--port", "0", *pair)
    assert_one_sentence(result, 2, "are not a usable pair: the key is not the certificate's")
    assert "cannot listen" not in result.stderr


def test_a_root_reached_through_a_symlink_may_be_named_that_way(tmp_path):
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "a.svs").write_bytes(b"x")
    (tmp_path / "data").symlink_to(tmp_path / "slides")
    access = SlideAccess([tmp_path / "data"], None)
    assert access.resolve_path(str(tmp_path / "data" / "a.svs")) == tmp_path / "slides" / "a.svs"
    assert access.resolve_path("a.svs") == tmp_path / "slides" / "a.svs"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.svs").write_bytes(b"x")
    with pytest.raises(PermissionDenied, match="outside the server's slide roots"):
        access.resolve_path(str(tmp_path / "other" / "b.svs"))


def test_uploads_beyond_the_servers_slots_are_refused_not_queued(tmp_path):
    store = UploadStore(tmp_path, 1 << 20, at_once=1)
    release, started = threading.Event(), threading.Event()
    data = b"slide bytes"
    digest = hashlib.sha256(data).hexdigest()

    def slow_chunks():
        started.set()
        release.wait(30)
        yield data

    def upload(name: str, sha256: str, size: int, chunks) -> tuple:
        with store.slot():  # as the service holds it, from before the header
            return store.receive(name, sha256, size, chunks)

    first = threading.Thread(target=upload, args=("a.svs", digest, len(data), slow_chunks()))
    first.start()
    assert started.wait(30)
    with pytest.raises(ResourceExhausted, match="1 uploads are arriving already"):
        upload("b.svs", "0" * 64, 1, iter([b"y"]))
    release.set()
    first.join(30)
    path, present = upload("a.svs", digest, len(data), iter([data]))
    assert present and path.read_bytes() == data


def test_paths_the_file_system_refuses_get_one_sentence_each(tmp_path):
    """Symlink loops, folders without rights and names too long reached INTERNAL once."""
    root = tmp_path / "slides"
    root.mkdir()
    (root / "loop-a.svs").symlink_to(root / "loop-b.svs")
    (root / "loop-b.svs").symlink_to(root / "loop-a.svs")
    access = SlideAccess([root], None)
    with pytest.raises(PermissionDenied, match="symlinks form a loop"):
        access.resolve_path("loop-a.svs")
    with pytest.raises(InvalidInput, match="name too long for the server's file system"):
        access.resolve_path("x" * 300 + ".svs")
    with pytest.raises(InvalidInput, match="5,000 characters long; at most 4,096"):
        access.resolve_path("y" * 5000)


def test_a_folder_the_server_may_not_enter_is_permission_denied():
    # Tests here run as root, whom no folder refuses, so the file system's own
    # answer (EACCES, as a non-root server gets it) is given directly.
    refusal = _refusal("a/b.svs", PermissionError(errno.EACCES, "Permission denied"))
    assert isinstance(refusal, PermissionDenied)
    assert "may not enter a folder on its path" in str(refusal)


def test_a_refusal_quotes_a_long_path_by_its_ends():
    access = SlideAccess([], None)
    path = "a" * 2000 + "/../z.svs"
    with pytest.raises(PermissionDenied) as info:
        access.resolve_path(path)
    assert len(str(info.value)) < 300 and "(2,009 characters)" in str(info.value)
