"""Checks that run on the JVM: GeoJSON through JTS, QuPath scripts through Groovy.

QuPath cannot run in CI, so fseg's output and scripts are checked with what
QuPath is built on: JTS (Debian's libjts-java) and the Groovy compiler
(Debian's groovy). The checkers are small Java programs in ``tests/jts/``,
compiled here once per test session into a temporary folder (never into the
checkout). ``tools/system-deps.sh`` (``make system-deps``, run by ``make test``)
installs the JDK, groovy and libjts-java when they are missing.

Other tests can check the GeoJSON they produce with :func:`check_with_jts`.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parent / "jts"
JAR_DIR = Path("/usr/share/java")
# Debian's jar names (libjts-java, libjson-simple-java, groovy).
JTS_JARS = ("jts-core", "jts-io-common", "json-simple")
GROOVY_JARS = ("groovy-all", "jts-core")
JAVA_TIMEOUT_S = 300


class JtsViolation(AssertionError):
    """A GeoJSON file breaks a rule QuPath's import (or JTS) relies on."""


def _missing(what: str) -> None:
    pytest.fail(
        f"{what} is missing; `make system-deps` (tools/system-deps.sh) installs the JDK, "
        "groovy and libjts-java",
        pytrace=False,
    )


def jar(name: str) -> Path:
    """A jar of Debian's /usr/share/java, by name without version (``jts-core``)."""
    exact = JAR_DIR / f"{name}.jar"
    if exact.exists():
        return exact
    versioned = sorted(JAR_DIR.glob(f"{name}-[0-9]*.jar"))
    if not versioned:
        _missing(f"{exact}")
    return versioned[-1]


def classpath(names: Iterable[str], extra: Path | None = None) -> str:
    parts = [str(jar(name)) for name in names]
    if extra is not None:
        parts.append(str(extra))
    return ":".join(parts)


def java() -> str:
    found = shutil.which("java")
    if found is None:
        _missing("java")
    return found


@functools.cache
def _build_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fseg-jvm-checks-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def compiled(source: str, jars: tuple[str, ...]) -> Path:
    """Compile ``tests/jts/<source>`` against ``jars``; returns the class folder."""
    javac = shutil.which("javac")
    if javac is None:
        _missing("javac")
    out = _build_dir() / Path(source).stem
    out.mkdir(exist_ok=True)  # a failed compile is not cached: a retry must say why again
    result = subprocess.run(
        [
            javac,
            "-encoding",
            "UTF-8",
            "-cp",
            classpath(jars),
            "-d",
            str(out),
            str(SOURCES / source),
        ],
        capture_output=True,
        text=True,
        timeout=JAVA_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(f"javac {source} failed:\n{result.stdout}{result.stderr}")
    return out


def run_geojson_checker(paths: Iterable[Path | str]) -> subprocess.CompletedProcess[str]:
    """Run GeoJsonCheck on the files (exit 0: all pass; 1: first violation on stderr)."""
    classes = compiled("GeoJsonCheck.java", JTS_JARS)
    command = [java(), "-cp", classpath(JTS_JARS, classes), "GeoJsonCheck"]
    command += [str(p) for p in paths]
    return subprocess.run(command, capture_output=True, text=True, timeout=JAVA_TIMEOUT_S)


def check_with_jts(paths: Iterable[Path | str]) -> list[str]:
    """Check GeoJSON files as QuPath would read them; returns the checker's "ok" lines.

    Raises:
        JtsViolation: a file breaks a rule; the message names file, feature and rule.
    """
    paths = list(paths)
    if not paths:
        raise ValueError("no GeoJSON files to check")
    result = run_geojson_checker(paths)
    if result.returncode != 0:
        raise JtsViolation(result.stderr.strip() or result.stdout.strip())
    return result.stdout.splitlines()


def run_groovy_checker(
    scripts: Iterable[Path | str], calls: bool = False
) -> subprocess.CompletedProcess[str]:
    """Compile Groovy scripts with QuPath's classes unresolved (see GroovyScriptCheck.java)."""
    classes = compiled("GroovyScriptCheck.java", GROOVY_JARS)
    command = [java(), "-cp", classpath(GROOVY_JARS, classes), "GroovyScriptCheck"]
    command += ["--calls"] if calls else []
    command += [str(s) for s in scripts]
    return subprocess.run(command, capture_output=True, text=True, timeout=JAVA_TIMEOUT_S)
