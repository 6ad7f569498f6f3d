"""The light client never loads the server's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "scipy", "sklearn", "shapely", "openslide", "fseg_server", "timm")

# Heavy modules are made unimportable, as on a client-only install, and must not
# even be attempted: the blocker records every attempt.
CHECK = f"""
import importlib.abc, sys
heavy = {HEAVY!r}
attempts = []
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in heavy:
            attempts.append(name)
            raise ImportError(f"{{name}} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocker())
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in heavy)
import fseg_client.cli
import fseg_client.batch, fseg_client.info, fseg_client.local_server
assert not loaded(), loaded()
sys.argv = ["fseg", "--help"]
try:
    fseg_client.cli.main()
except SystemExit as exc:
    assert exc.code == 0, exc.code
for command in ("segment", "info", "health", "evaluate"):
    try:
        fseg_client.cli.main([command, "--help"])
    except SystemExit as exc:
        assert exc.code == 0, exc.code
assert not loaded(), loaded()
assert not attempts, attempts
print("light")
"""


def test_client_imports_and_help_load_nothing_heavy() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("light")
