"""Text a client or a file hands the server, checked before it names anything."""

from __future__ import annotations

import unicodedata

#: Unicode categories that do not belong in a name: control and format characters
#: (newline, NUL, bidirectional marks) and line or paragraph separators.
CONTROL_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def first_control_character(text: str) -> str | None:
    """The first character of ``text`` that would break a line, a file name or a log
    line (see CONTROL_CATEGORIES); None when it is one line of printable text."""
    return next((ch for ch in text if unicodedata.category(ch) in CONTROL_CATEGORIES), None)
