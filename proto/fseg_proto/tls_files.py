"""Checks of the PEM files that both ends of an fseg connection hand to gRPC.

gRPC takes certificate and key bytes without looking at them, and a wrong file
only shows later as C-level log lines and a failed bind or handshake. These
checks turn the usual mistakes (a DER file, a key where a certificate belongs,
an encrypted key, a key of another certificate) into one sentence at start-up.
Each raises ``ValueError`` with that sentence; callers wrap it in their own
error type.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

_CERTIFICATE = re.compile(rb"-----BEGIN (X509 |TRUSTED )?CERTIFICATE-----")
_PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----")
_ENCRYPTED = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


def read_certificates(path: str | Path, what: str) -> bytes:
    """The PEM certificate(s) in ``path``; ``what`` names the file in messages."""
    data = _read(path, what)
    if not _CERTIFICATE.search(data):
        raise ValueError(
            f"{what} {path} holds no PEM certificate (a '-----BEGIN CERTIFICATE-----' block; "
            f"'openssl x509 -inform der -in {path} -out cert.pem' converts a DER file)"
        )
    return data


def read_private_key(path: str | Path, what: str) -> bytes:
    """The unencrypted PEM private key in ``path``."""
    data = _read(path, what)
    if any(marker in data for marker in _ENCRYPTED):
        raise ValueError(
            f"{what} {path} is encrypted, and gRPC needs it unencrypted "
            f"('openssl pkey -in {path} -out key.pem' writes one; keep it readable only by you)"
        )
    if not _PRIVATE_KEY.search(data):
        raise ValueError(f"{what} {path} holds no PEM private key ('-----BEGIN PRIVATE KEY-----')")
    return data


def read_key_pair(
    cert_path: str | Path, key_path: str | Path, cert_what: str, key_what: str
) -> tuple[bytes, bytes]:
    """A certificate chain and its own unencrypted key, both PEM, as (certificate, key)."""
    cert = read_certificates(cert_path, cert_what)
    key = read_private_key(key_path, key_what)
    _check_key_pair(cert_path, key_path)
    return cert, key


def _check_key_pair(cert_path: str | Path, key_path: str | Path) -> None:
    """Refuse a key that is not the certificate's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password: an encrypted key fails here instead of prompting.
        context.load_cert_chain(_user(cert_path), _user(key_path), password=b"")
    except ssl.SSLError as exc:
        reason = "the key is not the certificate's" if exc.reason == "KEY_VALUES_MISMATCH" else ""
        raise ValueError(
            f"--tls-cert and --tls-key ({cert_path}, {key_path}) are not a usable pair: "
            f"{reason or 'OpenSSL cannot load them together'}"
        ) from None


def _user(path: str | Path) -> str:
    return str(Path(path).expanduser())


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(_user(path)).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path} ({exc.strerror})") from None
