"""Retry decisions, back-off and outages, without threads or waiting."""

from __future__ import annotations

import time

import grpc
import pytest

from fseg_client.errors import (
    ClientError,
    ProtocolError,
    certificate_refusal,
    rpc_error_sentence,
)
from fseg_client.fit import MAX_FIT_SLIDES, fit_batch_bank
from fseg_client.inputs import SlideInput
from fseg_client.retry import Action, RetryPolicy, classify
from fseg_client.servers import ServerState


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def verdict(code: grpc.StatusCode, started=True, slide_timeout=False, cancelled=False):
    return classify(
        FakeRpcError(code),
        started=started,
        slide_timeout=slide_timeout,
        cancelled_by_us=cancelled,
    )


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INTERNAL,
    ],
)
def test_the_requests_own_faults_fail_at_once(code) -> None:
    assert verdict(code).action is Action.FAIL


def test_busy_servers_are_retried_with_back_off() -> None:
    result = verdict(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert result.action is Action.RETRY and result.counts


def test_unreachable_server_is_the_servers_fault_until_the_slide_started() -> None:
    before = verdict(grpc.StatusCode.UNAVAILABLE, started=False)
    during = verdict(grpc.StatusCode.UNAVAILABLE, started=True)
    assert before.action is during.action is Action.SERVER_DOWN
    assert not before.counts and during.counts


# gRPC's details for refused handshakes, as a real TLS server gets them
# (tests/test_client_tls_refusals.py checks the first two against real servers).
HANDSHAKE = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.7:50051: "
UNTRUSTED = (
    HANDSHAKE + "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:"
    "SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
    "certificate: OK"
)
WRONG_NAME = HANDSHAKE + (
    "Custom verification check failed with error: UNAUTHENTICATED: Hostname Verification "
    "Check failed."
)
EXPIRED = UNTRUSTED.replace("unable to get local issuer certificate", "certificate has expired")
REFUSED = HANDSHAKE + "Failed to connect to remote host: Connection refused"


@pytest.mark.parametrize("details", [UNTRUSTED, WRONG_NAME, EXPIRED])
def test_a_refused_certificate_is_no_outage_and_costs_the_slide_nothing(details) -> None:
    error = FakeRpcError(grpc.StatusCode.UNAVAILABLE, details)
    for started in (False, True):
        result = classify(error, started=started, slide_timeout=False, cancelled_by_us=False)
        assert result.action is Action.UNTRUSTED and not result.counts
    refused = FakeRpcError(grpc.StatusCode.UNAVAILABLE, REFUSED)
    kwargs = {"started": False, "slide_timeout": False, "cancelled_by_us": False}
    assert classify(refused, **kwargs).action is Action.SERVER_DOWN  # a server that is down


@pytest.mark.parametrize(
    "details,name,sentence",
    [
        (UNTRUSTED, None, "that this client does not trust (unable to get local issuer "
         "certificate); pass --tls-ca with the certificate of the CA that signed it."),
        (WRONG_NAME, None, "that does not name gpu7; connect by a name the certificate "
         "holds, or pass --tls-server-name with one."),
        (WRONG_NAME, "fseg.internal", "that does not name fseg.internal; connect by a name "
         "the certificate holds, or pass --tls-server-name with one."),
        (EXPIRED, None, "that is not valid today (certificate has expired); the server needs "
         "a renewed certificate, or this computer's clock is wrong."),
    ],
)  # fmt: skip
def test_a_refused_certificate_is_said_in_one_sentence_naming_what_to_do(
    details, name, sentence
) -> None:
    error = FakeRpcError(grpc.StatusCode.UNAVAILABLE, details)
    said = certificate_refusal(error, "gpu7:50051", name)
    assert said == f"the server at gpu7:50051 presented a TLS certificate {sentence}"
    assert certificate_refusal(FakeRpcError(grpc.StatusCode.UNAVAILABLE, REFUSED), "a:1") is None


def test_deadline_moves_the_slide_only_with_a_slide_timeout() -> None:
    assert verdict(grpc.StatusCode.DEADLINE_EXCEEDED, slide_timeout=True).action is Action.MOVE
    assert verdict(grpc.StatusCode.DEADLINE_EXCEEDED).action is Action.FAIL


def test_our_own_cancel_stops_and_broken_transfers_retry() -> None:
    assert verdict(grpc.StatusCode.CANCELLED, cancelled=True).action is Action.STOP
    assert verdict(grpc.StatusCode.CANCELLED).action is Action.RETRY  # the server cancelled
    kwargs = {"started": True, "slide_timeout": False, "cancelled_by_us": False}
    assert classify(ProtocolError("bad sha"), **kwargs).action is Action.RETRY
    never = ProtocolError("no overlay", retryable=False)
    assert classify(never, **kwargs).action is Action.FAIL
    assert classify(ClientError("unreadable"), **kwargs).action is Action.FAIL


def test_back_off_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy(retries=4, base_s=2.0, cap_s=10.0)
    assert [policy.nominal_delay(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.delay(3, rand=lambda: 0.0) == 4.0
    assert policy.delay(3, rand=lambda: 1.0) == 8.0
    assert all(4.0 <= policy.delay(3) <= 8.0 for _ in range(100))


def test_retry_budget() -> None:
    policy = RetryPolicy(retries=4, base_s=2.0, cap_s=60.0)
    assert not policy.exhausted(4) and policy.exhausted(5)
    assert policy.budget_s() == 2 + 4 + 8 + 16
    assert RetryPolicy(retries=0).budget_s() == 2.0  # never zero: a restart gets a moment


def test_an_outage_is_counted_from_the_first_failure_not_from_the_last_answer() -> None:
    """A server busy for minutes with one long upload has not answered for minutes,
    but it is down only from its first failure; any answer ends the outage."""
    server = ServerState(conn=None)  # type: ignore[arg-type]  # no call is made here
    policy = RetryPolicy(retries=2)
    assert server.down_since is None
    before = time.monotonic()
    server.mark_down(policy, "connection reset")
    first = server.down_since
    assert first is not None and first >= before
    server.mark_down(policy, "still down")
    assert server.down_since == first and server.failures == 2
    server.answered()
    assert server.down_since is None and server.failures == 0


def test_a_message_over_grpcs_size_limit_fails_at_once_not_as_busy() -> None:
    # gRPC's own words when a request passes the receiver's limit.
    words = "Received message larger than max (58000000 vs. 33554432)"
    error = FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, words)
    result = classify(error, started=True, slide_timeout=False, cancelled_by_us=False)
    assert result.action is Action.FAIL
    sentence = rpc_error_sentence(error, "gpu1:50051")
    assert "over gRPC's size limit" in sentence and "busy" not in sentence


def test_a_batch_over_the_servers_fitting_limit_is_refused_before_any_call(tmp_path) -> None:
    slides = [SlideInput(tmp_path / f"s{i}.svs", f"s{i}") for i in range(MAX_FIT_SLIDES + 1)]
    # No server, resolver or progress: the refusal comes before any of them is used.
    expected = "at most 10,000 slides and this batch has 10,001"
    with pytest.raises(ClientError, match=expected) as info:
        fit_batch_bank([], slides, None, None, None, RetryPolicy(), tmp_path / "bank.safetensors")
    assert info.value.exit_code == 2
