"""Server addresses, channel options, the token and TLS files."""

from __future__ import annotations

import json
import subprocess
import types
from pathlib import Path

import pytest

from fseg_client.connect import (
    MAX_MESSAGE_BYTES,
    Credentials,
    channel_options,
    credentials_from_args,
    load_token,
    parse_servers,
)
from fseg_client.errors import ClientError


def test_servers_are_split_deduplicated_and_need_ports() -> None:
    assert parse_servers(["a:1,b:2", "a:1", " c:3 ", "dns:///fleet:50051"]) == [
        "a:1",
        "b:2",
        "c:3",
        "dns:///fleet:50051",
    ]
    assert parse_servers(["[::1]:50051"]) == ["[::1]:50051"]
    assert parse_servers(None) == []
    with pytest.raises(ClientError, match="needs a port"):
        parse_servers(["gpu1"])


def test_dns_names_get_one_round_robin_channel() -> None:
    options = dict(channel_options("dns:///fleet:50051", Credentials()))
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES == 64 * 2**20
    assert "grpc.service_config" not in dict(channel_options("gpu1:50051", Credentials()))


def test_tls_name_override_only_with_tls() -> None:
    tls = Credentials(ca=b"pem", server_name="fseg-test")
    assert dict(channel_options("h:1", tls))["grpc.ssl_target_name_override"] == "fseg-test"
    plain = Credentials(server_name="fseg-test")
    assert "grpc.ssl_target_name_override" not in dict(channel_options("h:1", plain))


def test_token_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSEG_TOKEN", "from-env")
    assert load_token(None) == "from-env"
    token = tmp_path / "token"
    token.write_text("  from-file\n")
    assert load_token(str(token)) == "from-file"
    assert Credentials(token="t").metadata == (("authorization", "Bearer t"),)
    monkeypatch.delenv("FSEG_TOKEN")
    assert load_token(None) is None and Credentials().metadata == ()
    token.write_text("\n")
    with pytest.raises(ClientError, match="is empty"):
        load_token(str(token))
    token.write_text("two words")
    with pytest.raises(ClientError, match="spaces"):
        load_token(str(token))


def tls_args(**files: Path) -> types.SimpleNamespace:
    names = {f"tls_{name}": str(path) for name, path in files.items()}
    return types.SimpleNamespace(token_file=None, tls_server_name=None, **names)


def test_tls_files_are_read(certs: dict[str, Path]) -> None:
    args = tls_args(ca=certs["ca_pem"], cert=certs["client_pem"], key=certs["client_key"])
    creds = credentials_from_args(args)
    assert creds.tls
    assert creds.ca == certs["ca_pem"].read_bytes()
    assert creds.cert == certs["client_pem"].read_bytes()
    assert creds.key == certs["client_key"].read_bytes()


def _der_copy(pem: Path) -> Path:
    der = pem.with_suffix(".der")
    command = ["openssl", "x509", "-in", str(pem), "-outform", "der", "-out", str(der)]
    subprocess.run(command, check=True, capture_output=True)
    return der


def _encrypted_copy(key: Path) -> Path:
    encrypted = key.with_name("encrypted.key")
    command = ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:x"]
    subprocess.run([*command, "-out", str(encrypted)], check=True, capture_output=True)
    return encrypted


@pytest.mark.parametrize(
    "files,message",
    [
        (lambda c: {"ca": c["ca_pem"].with_name("missing.pem")}, "cannot read the --tls-ca file"),
        (lambda c: {"ca": _der_copy(c["ca_pem"])}, "holds no PEM certificate"),
        (lambda c: {"ca": c["ca_pem"].with_name("ca.key")}, "holds no PEM certificate"),
        (
            lambda c: {"cert": c["client_pem"], "key": _encrypted_copy(c["client_key"])},
            "is encrypted, and gRPC needs it unencrypted",
        ),
        (
            lambda c: {"cert": c["client_pem"], "key": c["client_pem"]},
            "holds no PEM private key",
        ),
        (
            lambda c: {"cert": c["client_pem"], "key": c["server_key"]},
            "the key is not the certificate's",
        ),
    ],
    ids=["missing", "der", "key-as-ca", "encrypted-key", "cert-as-key", "key-of-another"],
)
def test_wrong_tls_files_are_refused_in_one_sentence(certs, files, message) -> None:
    """gRPC would take any bytes and fail later, in the handshake, with C-level log lines."""
    with pytest.raises(ClientError, match=message):
        credentials_from_args(tls_args(**files(certs)))
