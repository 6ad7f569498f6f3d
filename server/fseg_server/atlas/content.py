"""What an atlas shows, independent of how it is drawn (HTML page or PNG mosaic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from ..concepts.palette import hex_color


@dataclass(frozen=True)
class ShownWindow:
    """One window of a concept, as the page labels it.

    Attributes:
        slide: the input's file name as its user knows it.
        x, y, width, height: the window in level-0 pixels of the frame QuPath
            shows (the output frame of the request).
        share: the window's mean share of the concept, 0 to 1.
        picture: the window with its context, the window outlined.
    """

    slide: str
    x: int
    y: int
    width: int
    height: int
    share: float
    picture: Image.Image = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.slide}  x {self.x:,}, y {self.y:,}"


@dataclass(frozen=True)
class ConceptEntry:
    """One concept: its class, its share of the inputs' tissue and its windows."""

    index: int
    name: str
    color: tuple[int, int, int]
    share: float
    windows: list[ShownWindow]

    @property
    def absent(self) -> bool:
        """Whether the concept labels no tissue cell of these inputs."""
        return self.share <= 0

    @property
    def hex_color(self) -> str:
        return hex_color(self.color)


@dataclass(frozen=True)
class AtlasContent:
    """Everything on the page: the bank, the inputs and one entry per concept.

    Attributes:
        frame: ``bounds`` or ``level0``, the frame of the window coordinates.
        window_um: edge of a window in µm (None when the inputs have no µm/px).
        provenance: how many inputs the bank's provenance covered.
    """

    bank: str
    extractor: str
    k: int
    frame: str
    inputs: list[str]
    concepts: list[ConceptEntry]
    window_um: float | None = None
    provenance: int = 0

    @property
    def title(self) -> str:
        return f"Concept atlas, k = {self.k}"

    @property
    def subtitle(self) -> str:
        n = len(self.inputs)
        said = f"{self.extractor} features, {n} input{'s' if n != 1 else ''}"
        if self.provenance:
            said += f" ({self.provenance} with the windows k-means saw)"
        return f"{said}; bank: {self.bank}"
