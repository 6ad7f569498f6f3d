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


#: Characters of a sentence sent back as a call's status. gRPC carries it in a
#: header that clients refuse above 16 KiB (percent-encoded: up to 12 bytes a
#: character), and a client's own text quoted whole (a 100 kB bank name) would
#: turn the refusal into "received metadata size exceeds hard limit".
MAX_STATUS_CHARS = 1000


def clipped(text: str, limit: int = MAX_STATUS_CHARS) -> str:
    """``text`` when at most ``limit`` characters, else its start and end around a note
    of how much was cut (what was quoted from the client is mostly in the middle)."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    cut = len(text) - limit
    return f"{text[: limit - tail]} [... {cut:,} characters cut ...] {text[-tail:]}"


def one_line(text: str) -> str:
    """``text`` with its control characters (see CONTROL_CATEGORIES) escaped as Python
    writes them (a newline as \\n), so that quoting a client's text keeps a sentence
    on one line; printable text is returned as it is."""
    if first_control_character(text) is None:
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in CONTROL_CATEGORIES
        else ch
        for ch in text
    )
