"""A real headless Chromium for tests of pages: what it loaded, and what it drew.

Debian's ``chromium`` (installed by ``tools/system-deps.sh``) is started by the
test itself, once to run a probe script after the page has loaded and dump
the DOM, and once to take a screenshot of the whole page.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

TIMEOUT_S = 120  # a hang guard, not a speed limit
# Appended to a copy of the page: records, once everything has loaded, each
# image's natural size and place, and each section's place, into the DOM.
_PROBE = """
<script>
window.addEventListener('load', () => {
  const box = (e) => { const r = e.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; };
  const report = {
    height: document.documentElement.scrollHeight,
    images: [...document.images].map(i => ({complete: i.complete, natural: i.naturalWidth,
      section: i.closest('section') ? i.closest('section').id : '', ...box(i)})),
    sections: [...document.querySelectorAll('section')].map(s => ({id: s.id,
      windows: Number(s.dataset.windows), text: s.innerText, ...box(s)})),
  };
  const out = document.createElement('pre');
  out.id = 'fseg-probe';
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str:
    """The browser's command; fails the test (not skips) when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: run tools/system-deps.sh"
    return found


def _run(page: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--virtual-time-budget=10000", *flags, page.resolve().as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)


def loaded_page(page: Path, work: Path, width: int) -> dict:
    """What Chromium loaded in a window ``width`` px wide: images (complete, natural
    width, box) and sections (box, text), boxes in CSS px from the page's top left."""
    probe = work / f"probe-{page.name}"
    probe.write_bytes(page.read_bytes() + _PROBE.encode())
    done = _run(probe, "--dump-dom", f"--window-size={width},1000")
    match = re.search(r'<pre id="fseg-probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the probe did not run; chromium said: {done.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def screenshot(page: Path, work: Path, width: int, height: int) -> np.ndarray:
    """The page as Chromium draws it in a ``width`` x ``height`` window, RGB."""
    shot = work / f"shot-{page.stem}.png"
    done = _run(page, f"--window-size={width},{height}", f"--screenshot={shot}")
    assert shot.is_file(), f"no screenshot; chromium said: {done.stderr[-2000:]}"
    return np.asarray(Image.open(shot).convert("RGB"))
