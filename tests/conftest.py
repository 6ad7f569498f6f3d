"""Shared fixtures: where the shared data lives and small synthetic inputs.

The real data (slides, annotated H&E, the F-SEG authors' concept banks) sits
in ``../shared/data`` beside the checkout; see ``../shared/README.md``. Tests
read it in place and never copy it into the repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SLIDES = SHARED / "slides"
BANKS = SHARED / "concept-banks"
WSSS = SHARED / "wsss4luad-val"


def shared(relative: str) -> Path:
    """A file of the shared data; the test is skipped, saying why, if it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data {path} is not present (see ../shared/README.md)")
    return path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for localhost and a client certificate, made with openssl."""
    from test_e2e_support import make_certificates  # it imports this module

    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def cmu_slide() -> Path:
    """Real H&E (skin), Aperio SVS, 2220 x 2967 px, 0.499 µm/px, one level."""
    return shared("slides/CMU-1-Small-Region.svs")


@pytest.fixture
def he_like_image(tmp_path: Path) -> Path:
    """A 300 x 260 PNG with glass, a pink (eosin-rich) and a purple (nuclear) region."""
    rng = np.random.default_rng(0)
    image = np.full((260, 300, 3), 245, np.uint8)
    image[40:220, 30:150] = (225, 140, 190)  # stroma-like pink
    image[40:220, 150:270] = (120, 60, 150)  # nuclei-dense purple
    noisy = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    from PIL import Image

    path = tmp_path / "he_like.png"
    Image.fromarray(noisy).save(path)
    return path


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client back-offs of tens of milliseconds, so retry tests take no time."""
    import functools

    from fseg_client import batch
    from fseg_client.retry import RetryPolicy

    monkeypatch.setattr(
        batch, "RetryPolicy", functools.partial(RetryPolicy, base_s=0.02, cap_s=0.1)
    )
