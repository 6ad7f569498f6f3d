"""Channels to fseg servers: addresses, TLS, the bearer token.

``host:port`` gets one channel per address. ``dns:///name:port`` gets ONE channel
that gRPC itself spreads over every address the name resolves to (round_robin),
which is how a fleet behind one DNS name is used.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fseg_proto import fseg_pb2_grpc, tls_files

from .errors import (
    ClientError,
    certificate_refusal,
    rpc_details,
    rpc_error_code,
    rpc_error_sentence,
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
TOKEN_ENV = "FSEG_TOKEN"
_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to servers.

    Attributes:
        token: bearer token sent as ``authorization: Bearer <token>`` on every call.
        ca: PEM of the CA that signed the servers' certificates; its presence
            (or a client certificate's) turns TLS on.
        cert, key: PEM client certificate and key, for mutual TLS.
        server_name: expected name in the server certificate, when it differs
            from the address (test certificates).
    """

    token: str | None = None
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata; sent on plain and TLS channels alike."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def load_token(token_file: str | None) -> str | None:
    """The bearer token from ``--token-file``, else from $FSEG_TOKEN, else None."""
    if token_file:
        try:
            raw = Path(token_file).expanduser().read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot read the token file {token_file} ({exc.strerror})") from None
        token = raw.decode("utf-8", errors="replace").strip()
        if not token:
            raise ClientError(f"the token file {token_file} is empty")
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if token and any(c.isspace() or not c.isprintable() for c in token):
        raise ClientError("the token holds spaces or control characters; give it on one line")
    return token or None


def credentials_from_args(args: argparse.Namespace) -> Credentials:
    """Token and TLS files from the command line."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    ca = getattr(args, "tls_ca", None)
    if bool(cert) != bool(key):
        raise ClientError("--tls-cert and --tls-key go together (mutual TLS needs both)")
    try:
        ca_pem = tls_files.read_certificates(ca, "the --tls-ca file") if ca else None
        cert_pem, key_pem = (
            tls_files.read_key_pair(cert, key, "the --tls-cert file", "the --tls-key file")
            if cert
            else (None, None)
        )
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    return Credentials(
        token=load_token(getattr(args, "token_file", None)),
        ca=ca_pem,
        cert=cert_pem,
        key=key_pem,
        server_name=getattr(args, "tls_server_name", None) or None,
    )


def parse_servers(values: Sequence[str] | None) -> list[str]:
    """``--server`` values (repeatable, comma-separated) as a list of unique addresses."""
    addresses: list[str] = []
    for value in values or []:
        for part in value.split(","):
            address = part.strip()
            if not address:
                continue
            if not address.startswith(("dns:", "unix:", "ipv4:", "ipv6:")) and (
                ":" not in address or address.endswith(":")
            ):
                raise ClientError(f"the server address {address!r} needs a port: host:port")
            if address not in addresses:
                addresses.append(address)
    return addresses


def channel_options(address: str, creds: Credentials) -> list[tuple[str, object]]:
    """gRPC channel options for ``address``."""
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if address.startswith("dns:"):
        options.append(("grpc.service_config", _ROUND_ROBIN))
    if creds.tls and creds.server_name:
        options.append(("grpc.ssl_target_name_override", creds.server_name))
    return options


def open_channel(address: str, creds: Credentials) -> grpc.Channel:
    """A channel to ``address``, over TLS when the credentials ask for it."""
    options = channel_options(address, creds)
    if not creds.tls:
        return grpc.insecure_channel(address, options=options)
    tls = grpc.ssl_channel_credentials(
        root_certificates=creds.ca, private_key=creds.key, certificate_chain=creds.cert
    )
    return grpc.secure_channel(address, tls, options=options)


class Connection:
    """One channel and its stubs; the token goes with every call made through it."""

    def __init__(self, address: str, creds: Credentials) -> None:
        self.address = address
        self.metadata = creds.metadata
        self.tls, self.client_cert = creds.tls, creds.cert is not None
        self.server_name = creds.server_name
        self.channel = open_channel(address, creds)
        self.stub = fseg_pb2_grpc.SegmentationStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def check_health(self, timeout_s: float = 5.0) -> str:
        """The name of the server's overall health status ("SERVING", ...).

        Raises:
            grpc.RpcError: when the server cannot be asked.
        """
        request = health_pb2.HealthCheckRequest(service="")
        answer = self.health.Check(request, timeout=timeout_s, metadata=self.metadata)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def explain(self, exc: BaseException) -> str:
        """One sentence for a failed call to this server, with a hint when TLS may be why.

        gRPC reports a refused TLS handshake as UNAVAILABLE ("Socket closed"),
        exactly like a server that went away, so the hint names the TLS options.
        """
        refusal = self.certificate_refusal(exc)
        if refusal is not None:
            return refusal
        sentence = rpc_error_sentence(exc, self.address)
        details = rpc_details(exc)
        if (
            not self.tls
            or rpc_error_code(exc) is not grpc.StatusCode.UNAVAILABLE
            or "Connection refused" in details
        ):
            return sentence
        hint = "over TLS this may also be a refused handshake: check --tls-ca"
        if not self.client_cert:
            hint += ", and give --tls-cert and --tls-key if the server wants client certificates"
        return f"{sentence.rstrip('.')}; {hint}."

    def certificate_refusal(self, exc: BaseException) -> str | None:
        """Why this client refused the server's TLS certificate (a sentence), or None."""
        return certificate_refusal(exc, self.address, self.server_name) if self.tls else None

    def close(self) -> None:
        self.channel.close()


def connect_all(addresses: Sequence[str], creds: Credentials) -> list[Connection]:
    """A :class:`Connection` per address."""
    return [Connection(address, creds) for address in addresses]
