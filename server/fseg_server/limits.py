"""What one request may cost, checked before the work it bounds begins.

A shared server is only as good as its worst request: a slide whose header
lies about its size, a plain image that decodes to gigabytes, a classify rank
in the billions. Each bound here is refused with the figure and the limit in
one sentence. They are server options (``fseg-server serve --max-...``) and
GetServerInfo reports them, so a client can check before it sends.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest |x| or |y| of an ROI vertex, level-0 px (fixed: 10 m at 1 µm/px; beyond it
#: a coordinate is a unit mistake, and 1e308 would overflow to NaN on the way).
MAX_ROI_COORDINATE = 10_000_000
#: Characters of a class name in a concept bank (fixed: names label outputs and legends).
MAX_CLASS_NAME_CHARS = 100


@dataclass(frozen=True)
class CostLimits:
    """Bounds on one job, each checked before the work it bounds.

    Attributes:
        max_slide_mm: longest side of a slide at its µm per pixel, mm; large-format
            whole-mount glass is 75 x 50 mm, so a larger slide is a lie or a wrong mpp.
        max_uncalibrated_px: longest side, level-0 px, of a slide without µm per pixel.
        max_image_mpx: pixels of a plain image (PNG, JPEG, untiled TIFF), Mpx: such
            images are decoded whole, at 3 bytes a pixel.
        max_thumbnail_mpx: pixels of the slide level a thumbnail is made from, Mpx:
            a slide without a pyramid is read whole for its thumbnail.
        max_model_mpx: pixels that go through the model for one slide, Mpx, at the
            working resolution (tissue regions and their context).
        max_components: NMF rank per image in classify mode.
        max_roi_vertices: vertices of an ROI, all polygons together.
    """

    max_slide_mm: float = 160.0
    max_uncalibrated_px: int = 640_000
    max_image_mpx: float = 100.0
    max_thumbnail_mpx: float = 2_500.0
    max_model_mpx: float = 50_000.0
    max_components: int = 64
    max_roi_vertices: int = 200_000

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_mpx * 1e6)


#: The limits of a server started without ``--max-...`` options.
DEFAULT_LIMITS = CostLimits()
