"""Server addresses, channel options, the token and TLS files."""

from __future__ import annotations

import json
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


def test_tls_files_are_read(tmp_path: Path) -> None:
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_bytes(name.encode())
    args = types.SimpleNamespace(
        token_file=None,
        tls_ca=str(tmp_path / "ca.pem"),
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
        tls_server_name=None,
    )
    creds = credentials_from_args(args)
    assert creds.tls and (creds.ca, creds.cert, creds.key) == (b"ca", b"cert", b"key")
    args.tls_ca = str(tmp_path / "missing.pem")
    with pytest.raises(ClientError, match="cannot read the CA certificate"):
        credentials_from_args(args)
