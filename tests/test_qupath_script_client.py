"""The parts of fseg_segment.groovy that need no QuPath, run for real.

The functions that find the slide file through the image server's URIs, pick
the coordinate frame from the server type, start the fseg client, stream its
output into the log, turn its failures into one sentence, write the region of
interest as GeoJSON and name outputs use only Groovy, the JDK and JTS. They are
cut out of the script verbatim and run by Debian's Groovy, with stand-ins for
QuPath's logger and image servers (same method names), against the real fseg
client: the messages a QuPath user reads in the log are the ones asserted here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import shapely
from jts_check import JAVA_TIMEOUT_S, classpath, java
from shapely.geometry import shape
from test_e2e_support import dead_address, start_tls_server

from conftest import ROOT
from fseg_client.inputs import stem_of

SEGMENT = ROOT / "qupath-scripts" / "fseg_segment.groovy"
CLIENT = str(Path(sys.executable).with_name("fseg"))
FUNCTIONS = (
    "fsegSlideFile",
    "fsegImageUri",
    "fsegImageFileName",
    "fsegBuilderArgument",
    "fsegServerFrame",
    "fsegTokenArgs",
    "fsegStart",
    "fsegCheckServer",
    "fsegConnectionArgs",
    "fsegRunClient",
    "fsegMultiPolygonJson",
    "fsegAppendRing",
    "fsegStem",
    "fsegSuffix",
)

HARNESS = """
import java.nio.charset.StandardCharsets
import java.nio.file.Paths
import org.locationtech.jts.geom.GeometryFactory
import org.locationtech.jts.io.WKTReader

/** Stands in for QuPath's slf4j logger: every line is printed with its level. */
class FakeLog {
    void info(Object m) { println "INFO " + m }
    void warn(Object m) { println "WARN " + m }
    void error(Object m) { println "ERROR " + m }
}

def fsegLog() { return new FakeLog() }

/** Stand in for QuPath's image servers and their builders (same method names). */
class FakeBuilder {
    String[] args
    String[] getArgs() { return args }
}
class FakeServer {
    String type
    List<URI> uris
    FakeBuilder builder
    String getServerType() { return type }
    Collection<URI> getURIs() { return uris }
    FakeBuilder getBuilder() { return builder }
}
class FakeWrapper {
    FakeServer inner
    FakeServer getWrappedServer() { return inner }
    Collection<URI> getURIs() { return inner.getURIs() }
}

FakeServer server(String type, List<String> uris, List<String> builderArgs) {
    return new FakeServer(type: type, uris: uris.collect { new URI(it) },
            builder: new FakeBuilder(args: builderArgs as String[]))
}

FSEG_CLIENT = args[0]
FSEG_SERVER = args[1]
FSEG_TOKEN_FILE = ''
FSEG_PROGRESS = 'lines'
FSEG_EXTRA_ARGS = []

try {
    switch (args[2]) {
        case 'run': fsegRunClient(args[3..-1] as List); println 'RETURNED'; break
        case 'health': fsegCheckServer(); println 'RETURNED'; break
        case 'health-with':  // FSEG_EXTRA_ARGS from the command line
            FSEG_EXTRA_ARGS = args[3..-1] as List; fsegCheckServer(); println 'RETURNED'; break
        case 'geojson':
            def geometry = new WKTReader(new GeometryFactory()).read(args[3])
            def polygons = (0..<geometry.getNumGeometries()).collect { geometry.getGeometryN(it) }
            println 'JSON ' + fsegMultiPolygonJson(polygons); break
        case 'stem':
            args[3..-1].each { println 'STEM ' + fsegStem(it) + ' ' + fsegSuffix(it) }; break
        case 'frame':
            def viewed = server(args[3], ['file:/slides/a.svs'], args[4..<args.size()] as List)
            if (args[3] == 'wrapped') {
                viewed = new FakeWrapper(inner: server('OpenSlide', ['file:/slides/a.svs'], []))
            }
            println 'FRAME ' + fsegServerFrame(viewed).join(' | '); break
        case 'file':
            List<String> builderArgs = args.size() > 5 ? args[5..-1] as List : []
            def opened = server(args[3], args[4].split(' ') as List, builderArgs)
            println 'FILE ' + fsegSlideFile(opened); break
    }
} catch (FsegError error) {
    fsegLog().error(error.getMessage())
}
"""


def cut(text: str, signature: str) -> str:
    """A top-level method or class of the script: its first line to the next '}' line."""
    match = re.search(rf"^(?=\S)[^\n]*\b{signature}\b[^\n]*\{{\n", text, re.MULTILINE)
    assert match, f"{signature} is not in {SEGMENT.name}: update this test"
    end = text.index("\n}\n", match.end())
    return text[match.start() : end + 3]


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    text = SEGMENT.read_text(encoding="utf-8")
    parts = [HARNESS, cut(text, "class FsegError"), cut(text, "class FsegFormats")]
    parts += [cut(text, name) for name in FUNCTIONS]
    path = tmp_path_factory.mktemp("harness") / "harness.groovy"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def run(harness: Path, client: str, server: str, *args: str, locale: str = "en") -> list[str]:
    """The harness's log: 'INFO ...', 'ERROR ...' lines, and what it printed itself."""
    command = [java(), f"-Duser.language={locale}", "-cp", classpath(("groovy-all", "jts-core"))]
    command += ["groovy.ui.GroovyMain", str(harness), client, server, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=JAVA_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def stand_in_client(path: Path, *said: str, status: int = 0) -> Path:
    """A shell script playing the fseg client: prints ``said`` on stderr, exits ``status``."""
    echoes = "".join(f"echo '{line}' >&2\n" for line in said)
    path.write_text(f"#!/bin/sh\n{echoes}exit {status}\n")
    path.chmod(0o755)
    return path


def errors(lines: list[str]) -> list[str]:
    return [line.removeprefix("ERROR ") for line in lines if line.startswith("ERROR ")]


def test_a_missing_client_is_one_clear_error(harness, tmp_path):
    missing = str(tmp_path / "no-such" / "fseg")
    lines = run(harness, missing, "", "run", missing, "segment", "x.svs")
    [message] = errors(lines)
    assert message.startswith(f"cannot start the fseg client '{missing}'")
    assert "set FSEG_CLIENT at the top of this script to its full path" in message
    assert "RETURNED" not in lines


def test_an_unreachable_server_is_one_clear_error_before_any_work(harness):
    lines = run(harness, CLIENT, "127.0.0.1:1", "health")
    [message] = errors(lines)
    assert message.startswith("cannot reach the fseg server at 127.0.0.1:1: ")
    assert "UNREACHABLE" in message and "Check FSEG_SERVER" in message


def test_the_health_check_speaks_tls_and_needs_one_answering_server(harness, tmp_path, certs):
    """TLS options reach the health check from FSEG_EXTRA_ARGS, and a list of
    servers with one down still passes (the client fails over)."""
    with start_tls_server(tmp_path / "server", certs, token="t") as server:  # health: no token
        servers = f"{dead_address()},{server.address}"
        extra = ["--split-regions", "--tls-ca", str(certs["ca_pem"])]
        lines = run(harness, CLIENT, servers, "health-with", *extra)
        assert not errors(lines) and "RETURNED" in lines
        lines = run(harness, CLIENT, server.address, "health-with", "--split-regions")
        assert errors(lines) and "RETURNED" not in lines  # no CA: TLS cannot be spoken


def test_a_refused_request_names_the_clients_reason(harness, tmp_path):
    missing = tmp_path / "gone.svs"
    lines = run(harness, CLIENT, "", "run", CLIENT, "segment", str(missing), "--out", str(tmp_path))
    [message] = errors(lines)
    assert message.startswith("fseg failed on this image (exit status 2): fseg: error: ")
    assert f"{missing} does not exist" in message


def test_a_client_without_progress_lines_gets_advice(harness, tmp_path):
    old = stand_in_client(
        tmp_path / "old-fseg",
        "usage: fseg [-h] COMMAND ...",
        "fseg: error: unrecognized arguments: --progress lines",
        status=2,
    )
    lines = run(harness, str(old), "", "run", str(old), "segment", "x.svs", "--progress", "lines")
    assert errors(lines) == [
        "this fseg client has no --progress option: upgrade it, or set FSEG_PROGRESS = ''"
    ]
    assert "INFO fseg: error: unrecognized arguments: --progress lines" in lines  # streamed too


@pytest.mark.slow
def test_a_run_streams_the_clients_progress_lines_into_the_log(harness, he_like_image, tmp_path):
    out = tmp_path / "out"
    command = [CLIENT, "segment", str(he_like_image), "--out", str(out), "--k", "3"]
    lines = run(harness, CLIENT, "", "run", *command, "--progress", "lines")
    assert errors(lines) == [] and lines[-1] == "RETURNED"
    logged = [line.removeprefix("INFO ") for line in lines if line.startswith("INFO ")]
    assert logged[0].startswith("fseg: running ") and " segment " in logged[0]
    assert any(re.fullmatch(r"fseg: he_like segment \d+/\d+ tiles", line) for line in logged)
    assert logged[-1].startswith("fseg: 1 done, 0 skipped")
    assert (out / "he_like.geojson").is_file()


@pytest.mark.parametrize("locale", ["en", "de"])
def test_the_region_of_interest_is_written_as_valid_geojson_in_any_locale(harness, locale):
    wkt = (
        "MULTIPOLYGON (((0.5 0, 1000.25 0, 1000.25 800, 0.5 800, 0.5 0), "
        "(100 100, 100 200, 200 200, 200 100, 100 100)), ((2000 0, 2100 0, 2050 10000000, 2000 0)))"
    )
    [line] = [
        x for x in run(harness, CLIENT, "", "geojson", wkt, locale=locale) if x.startswith("JSON ")
    ]
    geometry = shape(json.loads(line.removeprefix("JSON ")))
    expected = shapely.from_wkt(wkt)
    assert geometry.geom_type == "MultiPolygon" and geometry.is_valid
    assert geometry.equals(expected)  # holes kept, decimal points whatever the locale


def test_outputs_are_named_like_the_client_names_them(harness):
    names = ["CMU-1.svs", "scan.ome.tiff", "noext", ".hidden", "Slide 7.NDPI"]
    lines = [x for x in run(harness, CLIENT, "", "stem", *names) if x.startswith("STEM ")]
    got = [line.removeprefix("STEM ").rsplit(" ", 1) for line in lines]
    assert [stem for stem, _ in got] == [stem_of(Path(n)) for n in names]
    assert [suffix for _, suffix in got] == [".svs", ".tiff", "", "", ".ndpi"]


def printed(lines: list[str], prefix: str) -> list[str]:
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


@pytest.mark.parametrize(
    ("server", "builder_args", "frame"),
    [
        ("OpenSlide", [], "bounds"),
        ("OpenSlide", ["--no-crop"], "level0"),
        ("Bio-Formats", ["--series", "0"], "level0"),
        ("ImageJ", [], "level0"),
    ],
)
def test_the_frame_follows_the_image_server(harness, server, builder_args, frame):
    [line] = printed(run(harness, CLIENT, "", "frame", server, *builder_args), "FRAME ")
    assert line.split(" | ")[0] == frame


def test_a_wrapped_server_is_unwrapped_and_the_user_warned(harness):
    lines = run(harness, CLIENT, "", "frame", "wrapped")
    assert printed(lines, "FRAME ")[0].startswith("bounds | ")
    assert any("shown through FakeWrapper" in w for w in printed(lines, "WARN "))


def test_the_slide_file_comes_from_the_servers_uri(harness, tmp_path):
    slide = tmp_path / "with space" / "CMU 1.svs"
    slide.parent.mkdir()
    slide.write_bytes(b"stand-in")
    lines = run(harness, CLIENT, "", "file", "OpenSlide", slide.as_uri())
    assert printed(lines, "FILE ") == [str(slide)]


@pytest.mark.parametrize(
    ("uris", "builder_args", "complaint"),
    [
        (
            "https://example.org/a.svs",
            [],
            "this image is not a local file (https://example.org/a.svs)",
        ),
        ("file:/nowhere/a.svs", [], "the image file /nowhere/a.svs does not exist"),
        ("file:/a.svs file:/b.svs", [], "this image combines 2 files"),
        ("{vsi}", [], "a.vsi is not a file OpenSlide reads (.vsi)"),
        ("{svs}", ["--series", "2"], "this image is series 2 of a.svs"),
    ],
    ids=["url", "missing", "two files", "not openslide", "series"],
)
def test_an_image_fseg_cannot_read_is_one_clear_error(
    harness, tmp_path, uris, builder_args, complaint
):
    for suffix in ("vsi", "svs"):
        (tmp_path / f"a.{suffix}").write_bytes(b"stand-in")
        uris = uris.replace(f"{{{suffix}}}", (tmp_path / f"a.{suffix}").as_uri())
    lines = run(harness, CLIENT, "", "file", "Bio-Formats", uris, *builder_args)
    [message] = errors(lines)
    assert message.startswith(complaint) or complaint in message
    assert printed(lines, "FILE ") == []


def test_the_clients_warnings_reach_qupaths_log_as_warnings(harness, tmp_path):
    # A stand-in client (a shell script) prints what the real one prints on a warning.
    client = stand_in_client(
        tmp_path / "fseg",
        "fseg: [1/1] done a (127.0.0.1:1, 2.0 s)",
        "fseg: warning: a: no tissue was found, so the outputs hold no class",
    )
    lines = run(harness, str(client), "", "run", str(client), "segment", "a.svs")
    assert "WARN fseg: warning: a: no tissue was found, so the outputs hold no class" in lines
    assert "INFO fseg: [1/1] done a (127.0.0.1:1, 2.0 s)" in lines and "RETURNED" in lines
