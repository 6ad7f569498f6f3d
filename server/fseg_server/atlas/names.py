"""The names template: every concept's current name and colour, as name-concepts reads it."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..concepts.bank import ConceptClass
from ..concepts.palette import hex_color


def names_template(classes: Sequence[ConceptClass]) -> bytes:
    """``{"0": {"name": ..., "color": "#rrggbb"}, ...}``: edit, then pass it to
    ``fseg-server name-concepts BANK --k K --names FILE``."""
    entries = {
        str(index): {"name": concept.name, "color": hex_color(concept.color)}
        for index, concept in enumerate(classes)
    }
    return (json.dumps(entries, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
