"""Issue 16's campaign, part three: manifests a careless or hostile user hands
``fseg segment --manifest``, run in this process against one real server.

Manifests are generated (hypothesis, derandomized) from rows that are fine and
rows that are not: a NUL or a newline in a path or name, a name with a slash or
a leading dot or 300 characters, an mpp of "nan", "-1", "inf" or "abc", a file
that does not exist, two rows with one name. A manifest with any bad row exits 2
with one sentence, before any work: no output folder, nothing sent to the server
(its tally does not move). A manifest of good rows runs to the end and leaves
only its results. Either way the server stays unharmed (see hostile_support).
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
from hostile_support import IMAGE, campaign_for_module, examples
from hypothesis import given
from hypothesis import strategies as st
from test_e2e_support import temp_files

from fseg_client.cli import main

GOOD_NAMES = st.text(alphabet="abcdefghij-_", min_size=1, max_size=12)
BAD_NAMES = st.sampled_from(["a\x00b", "two\nlines", "a/b", ".hidden", "x" * 300, "a\\b", "\u2028"])
GOOD_MPPS = st.sampled_from(["", "0.5", "1", "2.5e-1"])
BAD_MPPS = st.sampled_from(["nan", "-1", "0", "inf", "abc", "1e400"])


@st.composite
def rows(draw) -> tuple[dict[str, str], bool]:
    """(a manifest row, whether it is fine on its own)."""
    path = draw(st.sampled_from([IMAGE, "01.png"]))
    row = {"path": path, "name": draw(GOOD_NAMES), "mpp": draw(GOOD_MPPS)}
    flaw = draw(st.sampled_from([None, None, "name", "mpp", "path-missing", "path-control"]))
    if flaw == "name":
        row["name"] = draw(BAD_NAMES)
    elif flaw == "mpp":
        row["mpp"] = draw(BAD_MPPS)
    elif flaw == "path-missing":
        row["path"] = "absent.png"
    elif flaw == "path-control":
        row["path"] = draw(st.sampled_from(["a\x00.png", "a\n.png", "\x1b[2J.png"]))
    return row, flaw is None


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    yield from campaign_for_module(tmp_path_factory, "hostile-manifests")


def segment(campaign, manifest: Path, out: Path) -> tuple[int, str]:
    """``fseg segment --manifest MANIFEST --out OUT`` against the campaign's server."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["segment", "--manifest", str(manifest), "--out", str(out), "--quiet",
                     "--server", campaign.server.address, "--concepts", "tiny"])  # fmt: skip
    campaign.statuses[f"fseg exit {code}"] += 1
    campaign.inputs.add(manifest.read_bytes().hex() if manifest.is_file() else str(manifest))
    return code, stderr.getvalue()


def write_manifest(folder: Path, table: list[dict[str, str]]) -> Path:
    path = folder / f"manifest-{len(list(folder.glob('manifest-*')))}.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "name", "mpp"])
        writer.writeheader()
        writer.writerows(table)
    return path


def assert_refused_before_work(campaign, code: int, stderr: str, out: Path, log: int) -> None:
    """Exit 2 with one sentence; no output folder; the server's log did not grow from
    ``log`` characters (it logs every job, and the refusal came before any call)."""
    assert code == 2, stderr
    assert stderr.startswith("fseg: error: ") and stderr.count("\n") == 1, stderr[:2000]
    assert "Traceback" not in stderr
    assert not out.exists()
    assert len(campaign.server.log_text()) == log
    campaign.assert_unharmed()


@examples(30)
@given(table=st.lists(rows(), min_size=1, max_size=4))
def test_manifests_with_a_bad_row_exit_2_before_any_work(campaign, table):
    folder = campaign.root  # relative paths are the manifest's folder's: the slide root
    manifest = write_manifest(folder, [row for row, _ in table])
    out = campaign.root.parent / f"out-{manifest.stem}"
    log = len(campaign.server.log_text())
    code, stderr = segment(campaign, manifest, out)
    # One file listed twice is one slide (the first row's name): what remains must
    # not give two slides one name.
    names = [row["name"].casefold() for row in _first_row_per_path(row for row, _ in table)]
    if not all(fine for _, fine in table):
        assert_refused_before_work(campaign, code, stderr, out, log)
        assert "line " in stderr
    elif len(set(names)) < len(names):
        assert_refused_before_work(campaign, code, stderr, out, log)
        assert "would both write outputs named" in stderr
    else:
        assert code == 0, stderr
        written = sorted(p.name for p in out.iterdir())
        for name in names:
            assert f"{name}.geojson" in {n.casefold() for n in written}
        assert temp_files(out) == []
        campaign.assert_unharmed()
    assert temp_files(folder) == []


def _first_row_per_path(table) -> list[dict[str, str]]:
    first: dict[str, dict[str, str]] = {}
    for row in table:
        first.setdefault(row["path"], row)
    return list(first.values())


MANIFESTS = [
    pytest.param(b"", "needs a 'path' column", id="empty-file"),
    pytest.param(b"name,mpp\na,1\n", "needs a 'path' column", id="no-path-column"),
    pytest.param(b"path\n\xff\xfe\x00garbage\n", "not a readable CSV", id="not-utf-8"),
    pytest.param(b"path,name\n" + IMAGE.encode() + b',"two\nlines"\n', "control", id="quoted-nl"),
    pytest.param(b"path\n" + b"x" * 200_000 + b"\n", "", id="200-kB-cell"),
    pytest.param(b"\xef\xbb\xbfpath,name\nabsent.png,a\n", "does not exist", id="bom"),
    pytest.param(b"path\n" + b"absent.png\n" * 50_000, "and 49995 more", id="50000-bad-rows"),
    pytest.param(b'path\n"unterminated\n', "", id="unterminated-quote"),
]


@pytest.mark.parametrize("content,fragment", MANIFESTS)
def test_manifests_that_are_not_manifests_exit_2(campaign, tmp_path, content, fragment):
    manifest = campaign.root / f"crafted-{tmp_path.name}.csv"
    manifest.write_bytes(content)
    log = len(campaign.server.log_text())
    try:
        code, stderr = segment(campaign, manifest, tmp_path / "out")
    finally:
        manifest.unlink()
    assert_refused_before_work(campaign, code, stderr, tmp_path / "out", log)
    assert fragment in stderr


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(lambda tmp: tmp / "absent.csv", id="absent"),
        pytest.param(lambda tmp: tmp, id="a-folder"),
        pytest.param(lambda tmp: Path("/dev/null"), id="dev-null"),
    ],
)
def test_manifests_that_cannot_be_read_exit_2(campaign, tmp_path, manifest):
    log = len(campaign.server.log_text())
    code, stderr = segment(campaign, manifest(tmp_path), tmp_path / "out")
    assert_refused_before_work(campaign, code, stderr, tmp_path / "out", log)
