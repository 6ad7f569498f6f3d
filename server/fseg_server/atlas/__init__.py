"""The concept atlas: what each concept of a bank looks like on some slides.

``sampling`` reads the inputs once, ``windows`` scores and chooses windows,
``crops`` reads the chosen ones, ``page`` and ``mosaic`` draw the atlas, and
``names`` writes the names template; ``build`` runs them in that order.
"""

from .build import AtlasResult, AtlasSettings, file_names, make_atlas
from .sampling import AtlasInput

__all__ = ["AtlasInput", "AtlasResult", "AtlasSettings", "file_names", "make_atlas"]
