"""A TLS certificate the client refuses ends the batch at once, in one sentence that says
which option to pass (issue 16: a verification failure was retried as if the server
were down, then reported as "no server answered").

Real fseg servers over TLS on loopback, with a CA and certificates made by openssl
(``test_e2e_support.make_certificates``), and the real client (``fseg segment``, in this
process): the client is given another CA than the one that signed the server's
certificate, or a name the certificate does not hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_e2e_support import csv_rows, finished_jobs, make_certificates, start_tls_server

from conftest import shared
from fseg_client.cli import main
from fseg_server.concepts import ConceptBank
from fseg_server.extract.stain import STAIN_SPEC

TOKEN = "tls-refusal-token"
IMAGES = shared("wsss4luad-val/images")
SLIDES = ("01", "10")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A second CA, unknown to the first, with its own certificate for the same host."""
    return make_certificates(tmp_path_factory.mktemp("other-ca"))


def tls_server(tmp_path_factory, certs: dict[str, Path]):
    work = tmp_path_factory.mktemp("tls-server")
    return start_tls_server(work, certs, "--slide-root", str(IMAGES), token=TOKEN)


@pytest.fixture(scope="module")
def server(certs, tmp_path_factory):
    with tls_server(tmp_path_factory, certs) as process:
        yield process


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bank") / "bank.safetensors"
    dim = STAIN_SPEC.feature_dim
    ConceptBank("stain", dim, {4: np.random.default_rng(0).random((4, dim), np.float32)}).save(path)
    return path


def segment(tmp_path: Path, servers: list, ca: Path, *extra: str) -> int:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    slides = [str(IMAGES / f"{name}.png") for name in SLIDES]
    return main(
        ["segment", *slides, "--out", str(tmp_path / "out"),
         "--server", ",".join(s.address for s in servers), "--tls-ca", str(ca),
         "--token-file", str(token), "--k", "4", "--quiet", *extra]
    )  # fmt: skip


def test_a_certificate_from_another_ca_stops_the_batch_at_once_naming_tls_ca(
    server, other_ca, bank, tmp_path, capsys
):
    code = segment(tmp_path, [server], other_ca["ca_pem"], "--concepts", str(bank))
    sentence = (
        f"the server at {server.address} presented a TLS certificate that this client does "
        "not trust (unable to get local issuer certificate); pass --tls-ca with the "
        "certificate of the CA that signed it."
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == f"fseg: error: {sentence}"  # not "no server answered for 30 s"
    assert not any("no server answered" in line for line in err)
    rows = csv_rows(tmp_path / "out")
    assert [(row["status"], row["error"]) for row in rows] == [("failed", sentence[:-1])] * 2
    assert finished_jobs(server) == []


def test_a_certificate_for_another_name_stops_fitting_at_once_naming_the_name_option(
    server, certs, tmp_path, capsys
):
    code = segment(tmp_path, [server], certs["ca_pem"], "--tls-server-name", "other.example")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == (
        f"fseg: error: the server at {server.address} presented a TLS certificate that does "
        "not name other.example; connect by a name the certificate holds, or pass "
        "--tls-server-name with one."
    )
    assert not any("trying again" in line for line in err)  # the fit was not retried


def test_a_server_whose_certificate_is_refused_is_left_out_and_the_others_do_the_work(
    server, other_ca, tmp_path_factory, certs, tmp_path, capsys
):
    with tls_server(tmp_path_factory, other_ca) as stranger:
        # Fitting asks the servers in the order given: the stranger first.
        code = segment(tmp_path, [stranger, server], certs["ca_pem"])
        assert finished_jobs(stranger) == []
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"fseg: leaving {stranger.address} out of the batch: the server at" in err
    segmented = sorted(job for job in finished_jobs(server) if job.endswith(".png"))
    assert segmented == [f"{name}.png" for name in SLIDES]  # and the bank's fit
    assert [row["status"] for row in csv_rows(tmp_path / "out")] == ["done"] * 2
