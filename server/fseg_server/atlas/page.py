"""The atlas as one self-contained HTML page: pictures inline, no script, no network."""

from __future__ import annotations

import base64
import io
from html import escape

from .content import AtlasContent, ConceptEntry, ShownWindow

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{margin:0 0 4px}header p{margin:2px 0;color:#555}
table.legend{border-collapse:collapse;margin:16px 0}
table.legend td{padding:3px 10px;border-bottom:1px solid #eee}
.swatch{display:inline-block;width:14px;height:14px;border:1px solid #000;
vertical-align:middle;margin-right:6px}
section.concept{margin:24px 0;padding-top:8px;border-top:3px solid var(--c)}
section.concept h2{font-size:1.15em;margin:4px 0 8px}
.share{font-weight:normal;color:#555;margin-left:8px}
.absent{color:#a00;font-style:italic}
.windows{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:160px}figure img{display:block;width:160px;height:160px}
figcaption{font-size:11px;line-height:1.3;color:#333;word-break:break-all}
footer{margin-top:32px;color:#555;font-size:.9em}code{background:#f4f4f4;padding:1px 4px}
"""


def atlas_html(content: AtlasContent, names_file: str) -> bytes:
    """The page, UTF-8; ``names_file`` names the names template in its footer."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(content.title)}</title><style>{_STYLE}</style></head><body>",
        _header(content),
        _legend(content.concepts),
        *(_section(entry) for entry in content.concepts),
        _footer(content, names_file),
        "</body></html>",
    ]
    return "\n".join(parts).encode("utf-8")


def _header(content: AtlasContent) -> str:
    window = f"{content.window_um:g} µm windows" if content.window_um else "windows"
    frame = (
        "the frame QuPath's OpenSlide image server shows (cropped to the scanned bounds)"
        if content.frame == "bounds"
        else "raw level 0, as QuPath's Bio-Formats image server shows it"
    )
    return (
        f"<header><h1>{escape(content.title)}</h1><p>{escape(content.subtitle)}</p>"
        f"<p>Inputs: {escape(', '.join(content.inputs))}</p>"
        f"<p>Each picture shows one of the {escape(window)} (outlined) with some context; "
        "its label gives the slide and the window's top-left corner in level-0 pixels of "
        f"{escape(frame)}. Shares are of the tissue of these inputs.</p></header>"
    )


def _legend(concepts: list[ConceptEntry]) -> str:
    rows = []
    for entry in concepts:
        share = "absent" if entry.absent else f"{100 * entry.share:.1f}% of tissue"
        rows.append(
            f'<tr><td><a href="#concept-{entry.index}"><span class="swatch" '
            f'style="background:{entry.hex_color}"></span>#{entry.index}</a></td>'
            f"<td>{escape(entry.name)}</td><td>{share}</td></tr>"
        )
    return f'<table class="legend">{"".join(rows)}</table>'


def _section(entry: ConceptEntry) -> str:
    head = (
        f'<h2><span class="swatch" style="background:{entry.hex_color}"></span>'
        f"#{entry.index} {escape(entry.name)}"
    )
    if entry.absent:
        body = (
            '<p class="absent">Absent: this concept labels no tissue on these inputs, '
            "so there is nothing to show.</p>"
        )
        head += '<span class="share">absent</span></h2>'
    else:
        head += f'<span class="share">{100 * entry.share:.1f}% of tissue</span></h2>'
        figures = "".join(_figure(entry, w) for w in entry.windows)
        body = f'<div class="windows">{figures}</div>'
    return (
        f'<section class="concept" id="concept-{entry.index}" data-concept="{entry.index}" '
        f'data-windows="{len(entry.windows)}" style="--c:{entry.hex_color}">{head}{body}</section>'
    )


def _figure(entry: ConceptEntry, window: ShownWindow) -> str:
    alt = f"{entry.name}: {window.label}"
    return (
        f'<figure><img src="{_data_uri(window)}" width="160" height="160" alt="{escape(alt)}">'
        f"<figcaption>{escape(window.slide)}<br>x {window.x:,}, y {window.y:,} "
        f"({window.width:,} × {window.height:,} px)<br>{100 * window.share:.0f}% "
        f"{escape(entry.name)}</figcaption></figure>"
    )


def _data_uri(window: ShownWindow) -> str:
    buffer = io.BytesIO()
    window.picture.convert("RGB").save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _footer(content: AtlasContent, names_file: str) -> str:
    return (
        f"<footer><p>To name the classes, edit <code>{escape(names_file)}</code> beside this "
        f"page, run <code>fseg-server name-concepts BANK --k {content.k} --names "
        f"{escape(names_file)}</code> (BANK: the bank file this atlas was made from) and "
        "segment again: QuPath, the overlays and the summaries then carry the new names.</p>"
        "</footer>"
    )
