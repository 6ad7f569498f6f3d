"""Errors a person sees, and gRPC status codes turned into sentences.

Every failure that reaches the user is one sentence; these helpers build it from
the status code and the server's own details, so the server's advice
("use --mpp ...") is never lost.
"""

from __future__ import annotations

import grpc

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class ClientError(Exception):
    """A problem the user can fix (arguments, inputs, files); one sentence.

    ``exit_code`` is 2 for bad arguments or inputs, 1 for a failed run.
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ProtocolError(Exception):
    """The server's answer broke the protocol (missing chunk, bad checksum...).

    ``retryable`` says whether asking again may help: a transfer that was cut or
    corrupted may; an output the server never sends will not.
    """

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


_PHRASES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: "rejected the request",
    grpc.StatusCode.NOT_FOUND: "could not find it",
    grpc.StatusCode.PERMISSION_DENIED: "refused access",
    grpc.StatusCode.FAILED_PRECONDITION: "cannot do this",
    grpc.StatusCode.UNAUTHENTICATED: "refused the credentials",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "is busy",
    grpc.StatusCode.UNAVAILABLE: "is unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "did not answer within the deadline",
    grpc.StatusCode.CANCELLED: "cancelled the call",
    grpc.StatusCode.UNIMPLEMENTED: "does not offer this call",
    grpc.StatusCode.ALREADY_EXISTS: "already has it",
    grpc.StatusCode.ABORTED: "aborted the call",
    grpc.StatusCode.OUT_OF_RANGE: "rejected a value as out of range",
    grpc.StatusCode.DATA_LOSS: "lost data",
    grpc.StatusCode.INTERNAL: "failed with an internal error",
    grpc.StatusCode.UNKNOWN: "failed",
}

# Advice added after the server's words, unless they already mention the keyword.
_HINTS: dict[grpc.StatusCode, tuple[str, str]] = {
    grpc.StatusCode.UNAUTHENTICATED: ("--token-file", "pass --token-file or set FSEG_TOKEN"),
    grpc.StatusCode.UNIMPLEMENTED: ("fseg", "check that it is an fseg server speaking fseg.v1"),
}


def _clean(details: str | None) -> str:
    """Server details as a clause: stripped, without a final full stop."""
    return (details or "").strip().rstrip(".").strip()


def status_sentence(code: grpc.StatusCode | None, details: str | None, where: str) -> str:
    """One sentence for a failed call, e.g. "the server at h:1 rejected the request: k ...".

    Args:
        code: the call's status code (None when unknown).
        details: the server's message, kept verbatim.
        where: who answered, e.g. "the server at gpu1:50051".
    """
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    phrase = _PHRASES.get(code, f"failed ({code.name})")
    text = _clean(details)
    if code is grpc.StatusCode.UNAVAILABLE and text:
        sentence = f"{where} is unavailable ({text})"
    elif too_large(code, text):
        sentence = f"{where} refused a message over gRPC's size limit ({text})"
    elif text:
        sentence = f"{where} {phrase}: {text}"
    else:
        sentence = f"{where} {phrase} ({code.name})"
    keyword, hint = _HINTS.get(code, ("", ""))
    if hint and keyword not in text.lower():
        sentence += f"; {hint}"
    return sentence + "."


def too_large(code: grpc.StatusCode | None, details: str | None) -> bool:
    """Whether gRPC refused a message over its size limit (RESOURCE_EXHAUSTED, as a busy
    server says too, but the same request will never pass)."""
    return code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (details or "")


# How gRPC words a handshake in which this client refused the server's certificate
# (UNAVAILABLE, like a server that is down): BoringSSL's verdict on the chain, and
# gRPC's own host-name check (in its older and newer words).
_UNTRUSTED = "CERTIFICATE_VERIFY_FAILED"
_WRONG_NAME = ("Hostname Verification Check failed", "is not in peer certificate")


def certificate_refusal(exc: BaseException, address: str, name: str | None = None) -> str | None:
    """The sentence for a call that failed because this client does not accept the
    server's TLS certificate, or None when that is not why. Asking again cannot help.

    Args:
        exc: the failed call's error.
        address: the server as the user named it (host:port).
        name: the name the certificate must hold (``--tls-server-name``), if given.
    """
    if not refused_certificate(exc):
        return None
    details = rpc_details(exc)
    where = f"the server at {address} presented a TLS certificate"
    if any(words in details for words in _WRONG_NAME):
        host = name or address.rsplit(":", 1)[0].removeprefix("dns:///")
        return (
            f"{where} that does not name {host}; connect by a name the certificate holds, "
            "or pass --tls-server-name with one."
        )
    why = details.split(_UNTRUSTED, 1)[1].lstrip(": ").split(":", 1)[0].strip()
    if "expired" in why or "not yet valid" in why:  # trusted, but not valid today
        return (
            f"{where} that is not valid today ({why}); the server needs a renewed "
            "certificate, or this computer's clock is wrong."
        )
    return (
        f"{where} that this client does not trust ({why or 'verification failed'}); "
        "pass --tls-ca with the certificate of the CA that signed it."
    )


def refused_certificate(exc: BaseException) -> bool:
    """Whether a call failed because this client refused the server's TLS certificate."""
    if rpc_error_code(exc) is not grpc.StatusCode.UNAVAILABLE:
        return False
    details = rpc_details(exc)
    return _UNTRUSTED in details or any(words in details for words in _WRONG_NAME)


def rpc_details(exc: BaseException) -> str:
    """The details text of a gRPC error ("" when it has none)."""
    return str(getattr(exc, "details", lambda: "")() or "")


def rpc_error_code(exc: BaseException) -> grpc.StatusCode | None:
    """The status code of a gRPC error, or None for anything else."""
    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError) and callable(code):
        try:
            return code()
        except Exception:  # an RpcError that is not a Call: no code to read
            return None
    return None


def rpc_error_sentence(exc: BaseException, address: str) -> str:
    """One sentence describing any error raised while talking to ``address``."""
    if isinstance(exc, grpc.RpcError):
        details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
        return status_sentence(rpc_error_code(exc), details, f"the server at {address}")
    if isinstance(exc, ProtocolError):
        return f"the server at {address} sent a broken answer: {_clean(str(exc))}."
    if isinstance(exc, ClientError):  # already a sentence for the user
        return _clean(str(exc)) + "."
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"a local file operation failed{where}: {exc.strerror}."
    return f"talking to the server at {address} failed: {type(exc).__name__}: {_clean(str(exc))}."
