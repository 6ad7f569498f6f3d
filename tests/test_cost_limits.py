"""What one job may cost: server options, reported by GetServerInfo, each refused in one
sentence with the figure and the limit before the work it bounds; and planning that a
cancelled job leaves at once.

The server here is real (loopback) and started with limits far below the defaults, so
that the shared CMU-1-Small-Region slide and small PNGs cross them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from test_e2e_support import real_server

from conftest import shared
from fseg_client.cli import main as fseg_main
from fseg_proto import fseg_pb2
from fseg_server.errors import Cancelled, InvalidInput
from fseg_server.extract.stain import STAIN_SPEC
from fseg_server.limits import DEFAULT_LIMITS, CostLimits
from fseg_server.pipeline.options import SegmentOptions
from fseg_server.pipeline.plan import plan_slide
from fseg_server.slide.reader import open_slide
from fseg_server.slide.regions import RegionGeometry, plan_regions
from fseg_server.slide.tiles import choose_resolution, plan_tiles

TIGHT = {
    "--max-model-mpx": "0.5",  # CMU-1-Small-Region's tissue needs several Mpx
    "--max-image-mpx": "0.1",  # a 400 x 400 PNG is 0.16 Mpx; the real patch under 0.08
    "--max-components": "4",
    "--max-roi-vertices": "10",
    "--max-thumbnail-mpx": "2",  # CMU-1-Small-Region is one 2220 x 2967 level: 6.6 Mpx
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("cost-limits")
    root = base / "slides"
    root.mkdir()
    shutil.copy(shared("slides/CMU-1-Small-Region.svs"), root / "cmu.svs")
    Image.new("RGB", (400, 400), (200, 120, 160)).save(root / "big.png")
    shutil.copy(shared("wsss4luad-val/images/00.png"), root / "small.png")  # real H&E
    flags = [item for pair in TIGHT.items() for item in pair]
    with real_server(base, "--slide-root", str(root), *flags) as server:
        yield {"server": server, "root": root}


def segment(env, **fields) -> None:
    stub = env["server"].stub()
    request = fseg_pb2.SegmentRequest(**fields)
    for _ in stub.Segment(request, timeout=120):
        pass


def refusal(env, **fields) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        segment(env, **fields)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    details = caught.value.details()
    assert "Traceback" not in details and "\n" not in details
    return details


def path(env, name: str) -> fseg_pb2.SlideRef:
    return fseg_pb2.SlideRef(path=str(env["root"] / name))


def test_server_info_reports_every_limit(env) -> None:
    limits = env["server"].stub().GetServerInfo(fseg_pb2.ServerInfoRequest(), timeout=30).limits
    assert limits.max_model_mpx == 0.5 and limits.max_image_mpx == 0.1
    assert limits.max_components == 4 and limits.max_roi_vertices == 10
    assert limits.max_thumbnail_mpx == 2
    assert limits.max_slide_mm == DEFAULT_LIMITS.max_slide_mm
    assert limits.max_roi_coordinate == 10_000_000 and limits.max_class_name_chars == 100


def test_fseg_info_prints_the_limits(env, capsys) -> None:
    assert fseg_main(["info", "--server", env["server"].address]) == 0
    out = capsys.readouterr().out
    assert "0 Mpx through the model" in out or "1 Mpx through the model" in out
    assert "classify rank up to 4" in out


def test_a_plain_image_above_the_pixel_limit_is_refused_from_its_header(env) -> None:
    details = refusal(env, slide=path(env, "big.png"))
    assert "400 x 400 px" in details and "0 Mpx on this server" in details


def test_a_classify_rank_above_the_limit_is_refused(env) -> None:
    details = refusal(env, slide=path(env, "small.png"), mode=fseg_pb2.MODE_CLASSIFY, components=5)
    assert "between 1 and 4 (this server's limit), not 5" in details


def test_an_roi_with_more_vertices_than_allowed_is_refused(env) -> None:
    ring = [[10 * np.cos(a), 10 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 20)]
    ring[-1] = ring[0]
    roi = json.dumps({"type": "Polygon", "coordinates": [ring]})
    details = refusal(env, slide=path(env, "small.png"), roi_geojson=roi)
    assert "20 vertices, more than this server's limit of 10" in details


def test_a_thumbnail_from_too_many_pixels_is_refused(env) -> None:
    details = refusal(env, slide=path(env, "cmu.svs"))
    assert "2,220 x 2,967 px" in details and "limit of 2 Mpx" in details


def test_the_server_is_still_serving_and_takes_a_small_image(env) -> None:
    segment(env, slide=path(env, "small.png"))


# -- the same limits in the pipeline, without a server -------------------------------------


def test_model_pixels_above_the_limit_are_refused_before_any_tile_is_read() -> None:
    options = SegmentOptions(limits=CostLimits(max_model_mpx=0.5))
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        with pytest.raises(InvalidInput, match=r"Mpx through the model .* limit of 0 Mpx"):
            plan_slide(slide, STAIN_SPEC, None, options)
        # The default limits plan the same slide.
        assert plan_slide(slide, STAIN_SPEC, None, SegmentOptions()).tiles


def test_a_cancelled_job_stops_reading_the_thumbnail() -> None:
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        with pytest.raises(Cancelled, match="thumbnail"):
            slide.thumbnail(1024, should_stop=lambda: True)
        with pytest.raises(Cancelled):
            plan_slide(slide, STAIN_SPEC, None, SegmentOptions(), should_stop=lambda: True)


def test_a_cancelled_job_stops_planning_its_regions() -> None:
    """A checkerboard of tissue blocks makes the cutter explore many boxes."""
    occupied = np.indices((200, 200)).sum(axis=0) % 2 == 0
    with open_slide(shared("slides/CMU-1-Small-Region.svs")) as slide:
        resolution = choose_resolution(slide.info, 0.5, None)
        grid = plan_tiles(slide.info, resolution, 512, 64)
    geometry = RegionGeometry(16, 64, 32, 16, 16)
    looks = []

    def stop_at_the_third_look() -> bool:
        looks.append(1)
        return len(looks) >= 3

    with pytest.raises(Cancelled, match="regions"):
        plan_regions(occupied, grid, geometry, stop_at_the_third_look)
    assert len(looks) == 3


def test_plain_images_beyond_a_servers_limit_are_refused_by_open_slide(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (100, 100)).save(image)
    with pytest.raises(InvalidInput, match="up to 0 Mpx on this server"):
        open_slide(image, max_image_pixels=9_999)
    open_slide(image, max_image_pixels=10_000).close()
