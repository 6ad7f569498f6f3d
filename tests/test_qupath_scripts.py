"""The QuPath scripts compile, call only what QuPath and the fseg client offer, and agree.

QuPath cannot run in CI. Each script in ``qupath-scripts/`` is compiled by the
Groovy compiler with QuPath's own classes left unresolved
(``tests/jts/GroovyScriptCheck.java``): syntax errors, classes used without
their import, misspelt JDK or JTS classes and undeclared names fail. The
unqualified calls that go to QuPath's scripting helpers (QP, through
``import static qupath.lib.gui.scripting.QPEx.*``) are compared with the
helpers QuPath 0.5 and 0.6 have, and the client options the script passes
with the options ``fseg segment`` has. Broken copies of a script show that
each check fails when it should.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from jts_check import run_groovy_checker

from conftest import ROOT
from fseg_client.cli import build_parser
from fseg_client.inputs import SLIDE_SUFFIXES

SCRIPTS_DIR = ROOT / "qupath-scripts"
SCRIPTS = sorted(SCRIPTS_DIR.glob("*.groovy"))
SEGMENT = SCRIPTS_DIR / "fseg_segment.groovy"
IMPORT = SCRIPTS_DIR / "fseg_import.groovy"

# Static helpers of qupath.lib.scripting.QP (inherited by QPEx) that the scripts
# call unqualified. Each exists with the arguments used in QuPath 0.5 and 0.6:
# getCurrentImageData(), getProject(), buildFilePath(String...),
# getPathClass(String), addObjects(Collection), removeObjects(Collection, boolean).
QP_METHODS = {
    "getCurrentImageData",
    "getProject",
    "buildFilePath",
    "getPathClass",
    "addObjects",
    "removeObjects",
}
QP_FIELDS = {"PROJECT_BASE_DIR"}
SHARED_START = "// ===== fseg import: shared by fseg_import.groovy and fseg_segment.groovy"
SHARED_END = "// ===== end of the shared import code ====="
SETTINGS_START = "// ================================ settings ================================"
SETTINGS_END = "// " + "=" * 74
# Image server arguments the script reads from QuPath (not fseg client options).
QUPATH_SERVER_ARGS = {"--series", "--no-crop"}


def problems(script: Path) -> list[str]:
    """Everything wrong with a script: compiler errors, or calls QuPath does not offer."""
    result = run_groovy_checker([script], calls=True)
    if result.returncode != 0:
        return [result.stderr.strip()]
    found = []
    for line in result.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        name, _, where = rest.partition(" ")
        if kind == "method" and name not in QP_METHODS:
            found.append(f"line {where}: {name}() is neither in the script nor a QuPath helper")
        if kind == "field" and name not in QP_FIELDS:
            found.append(f"line {where}: {name} is neither declared, imported nor a QuPath field")
    return found


def broken_copy(tmp_path: Path, script: Path, old: str, new: str) -> Path:
    text = script.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {script.name}: update this test"
    copy = tmp_path / script.name
    copy.write_text(text.replace(old, new, 1), encoding="utf-8")
    return copy


def test_the_segment_and_import_scripts_are_there():
    assert {s.name for s in SCRIPTS} >= {"fseg_segment.groovy", "fseg_import.groovy"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.name)
def test_every_script_compiles_and_calls_only_qupath_helpers(script):
    assert problems(script) == []


@pytest.mark.parametrize(
    ("script", "old", "new", "complaint"),
    [
        (SEGMENT, "    return file\n}", "    return file\n", "expecting '}'"),
        (
            IMPORT,
            "addObjects(created + remainders)",
            "addObjects(created + remainders))",
            "found ')'",
        ),
    ],
    ids=["missing brace", "extra parenthesis"],
)
def test_a_syntax_error_fails_the_check(tmp_path, script, old, new, complaint):
    assert problems(script) == []
    [message] = problems(broken_copy(tmp_path, script, old, new))
    assert message.startswith("Groovy check failed") and complaint in message
    assert re.search(r"@ line \d+, column \d+", message)


def test_a_class_used_without_its_import_fails_the_check(tmp_path):
    copy = broken_copy(tmp_path, SEGMENT, "import org.locationtech.jts.geom.Geometry\n", "")
    [message] = problems(copy)
    assert "unable to resolve class Geometry" in message


def test_a_class_used_for_its_static_members_without_import_fails_the_check(tmp_path):
    copy = broken_copy(tmp_path, SEGMENT, "import java.nio.charset.StandardCharsets\n", "")
    assert any("StandardCharsets is neither declared" in p for p in problems(copy))


def test_a_misspelt_jdk_or_jts_class_fails_the_check(tmp_path):
    copy = broken_copy(tmp_path, SEGMENT, "UnaryUnionOp.union(", "UnaryUnionOps.union(")
    assert any("UnaryUnionOps" in p for p in problems(copy))
    copy = broken_copy(tmp_path, IMPORT, "new File(fsegOutputDir()", "new Fille(fsegOutputDir()")
    assert any("unable to resolve class Fille" in p for p in problems(copy))


def test_a_misspelt_qupath_helper_or_setting_fails_the_check(tmp_path):
    copy = broken_copy(tmp_path, IMPORT, "getCurrentImageData()", "getCurrentImage()")
    assert any("getCurrentImage() is neither in the script" in p for p in problems(copy))
    copy = broken_copy(tmp_path, SEGMENT, "if (FSEG_BANK) {", "if (FSEG_BANKS) {")
    assert any("FSEG_BANKS is neither declared" in p for p in problems(copy))


def test_qupath_classes_are_left_unresolved_but_only_when_imported_one_by_one(tmp_path):
    script = tmp_path / "probe.groovy"
    script.write_text(
        "import qupath.lib.not.yet.Invented\n"
        "def thing = new Invented()\n"
        "Invented.doSomething(thing)\n",
        encoding="utf-8",
    )
    assert problems(script) == []  # QuPath's classes cannot be known here: accepted
    script.write_text("import qupath.lib.objects.*\nPathObjct o = null\n", encoding="utf-8")
    [message] = problems(script)
    assert "import QuPath classes one by one" in message


def shared_part(script: Path) -> str:
    text = script.read_text(encoding="utf-8")
    assert text.count(SHARED_START) == 1 and text.count(SHARED_END) == 1, script.name
    return text[text.index(SHARED_START) : text.index(SHARED_END)]


def test_the_import_code_is_the_same_in_both_scripts():
    assert shared_part(SEGMENT) == shared_part(IMPORT)
    assert "int fsegImport(" in shared_part(IMPORT)


@pytest.mark.parametrize("script", [SEGMENT, IMPORT], ids=lambda s: s.name)
def test_each_script_says_which_qupath_versions_it_is_for_and_what_differs(script):
    header = script.read_text(encoding="utf-8").split("*/", 1)[0]
    assert "Written for QuPath 0.5 and 0.6" in header
    assert "What differs between the two versions" in header


@pytest.mark.parametrize("script", [SEGMENT, IMPORT], ids=lambda s: s.name)
def test_settings_sit_in_one_block_before_any_code(script):
    text = script.read_text(encoding="utf-8")
    before, _, rest = text.partition(SETTINGS_START)
    block, _, code = rest.partition(SETTINGS_END)
    assert block and code, f"{script.name} has no settings block"
    code_lines = [
        line for line in before.split("*/", 1)[1].splitlines()
        if line.strip() and not line.startswith(("import ", "//"))
    ]  # fmt: skip
    assert code_lines == []  # only the header comment and imports come first
    assigned = set(re.findall(r"^(FSEG_[A-Z_]+) = ", block, re.MULTILINE))
    used = set(re.findall(r"\b(FSEG_[A-Z_]+)\b", code))
    assert used <= assigned, f"settings used but not in the block: {sorted(used - assigned)}"
    assert re.findall(r"^(FSEG_[A-Z_]+) = ", code, re.MULTILINE) == []  # set only in the block


def subcommand(name: str) -> argparse.ArgumentParser:
    """The parser of ``fseg NAME``."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


def options_of(name: str) -> set[str]:
    return {flag for action in subcommand(name)._actions for flag in action.option_strings}


def test_the_segment_script_passes_only_options_the_client_has():
    text = SEGMENT.read_text(encoding="utf-8")
    used = set(re.findall(r"'(--[a-z][a-z0-9-]*)'", text)) - QUPATH_SERVER_ARGS
    known = options_of("segment") | options_of("health")
    assert used, "no client options found: update this test"
    assert used <= known, f"options fseg does not have: {sorted(used - known)}"
    assert {"--frame", "--roi", "--progress", "--server", "--token-file"} <= used
    assert "FSEG_CLIENT, 'segment', " in text and "FSEG_CLIENT, 'health', " in text


def test_the_segment_script_defaults_are_values_the_client_accepts():
    choices = {a.dest: set(a.choices) for a in subcommand("segment")._actions if a.choices}
    text = SEGMENT.read_text(encoding="utf-8")
    assert re.search(r"^FSEG_MODE = '(\w+)'", text, re.MULTILINE)[1] in choices["mode"]
    assert re.search(r"^FSEG_PROGRESS = '(\w+)'", text, re.MULTILINE)[1] in choices["progress"]
    assert {"bounds", "level0"} == choices["frame"]
    assert "['bounds', 'level0']" in text  # the frames the script accepts


def test_the_scripts_accept_the_files_the_client_takes():
    listed = re.search(r"READABLE = \[(.*?)\]", shared_part(IMPORT), re.DOTALL)[1]
    assert set(re.findall(r"'(\.[a-z]+)'", listed)) == set(SLIDE_SUFFIXES)
