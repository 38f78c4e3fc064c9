"""``nextstat xml2json / json2xml / json2hs3 / hs3tojson``: pyhf 0.7.6's CLI live for the XML
commands (same arguments, same output), and the CLI's error policy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from nextstat import cli, examples, hs3

pyhf = pytest.importorskip("pyhf")
pytest.importorskip("uproot")
from pyhf.cli import cli as pyhf_cli  # noqa: E402

EXAMPLE = examples.path("simple")


def _run(args: list[str], *, app=cli.main, input: str | None = None):  # noqa: A002
    return CliRunner().invoke(app, args, input=input, catch_exceptions=False)


def _in(path: Path, args: list[str], app=cli.main):
    cwd = os.getcwd()
    os.chdir(path)
    try:
        if app is pyhf_cli:
            from pyhf import readxml

            readxml.clear_filecache()
        return _run(args, app=app)
    finally:
        os.chdir(cwd)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pyhf leaves -p files open
def test_json2xml_then_xml2json_as_pyhf(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps([{"op": "replace", "path": "/channels/0/samples/0/data",
                                  "value": [1.0, 2.0, 3.0, 4.0]}]))
    args = ["json2xml", str(EXAMPLE), "--output-dir", "out", "--specroot", "xml", "--dataroot", "root",
            "--resultprefix", "Fit", "-p", str(patch)]
    (tmp_path / "a/out").mkdir()
    (tmp_path / "b/out").mkdir()
    theirs, ours = _in(tmp_path / "a", args, pyhf_cli), _in(tmp_path / "b", args)
    assert theirs.exit_code == ours.exit_code == 0, ours.output
    assert ours.output == theirs.output == ""
    for rel in ("out/Fit.xml", "out/xml/Fit_SR.xml", "out/xml/Fit_CR.xml"):
        assert ((tmp_path / "b" / rel).read_text().replace(str(tmp_path / "b"), "")
                == (tmp_path / "a" / rel).read_text().replace(str(tmp_path / "a"), ""))
    # xml2json on either: the text pyhf prints
    reference = _in(tmp_path / "a", ["xml2json", "out/Fit.xml", "--basedir", ".", "--hide-progress"], pyhf_cli)
    assert reference.exit_code == 0
    for where in "ab":
        result = _in(tmp_path / where, ["xml2json", "out/Fit.xml", "--hide-progress"])
        assert result.exit_code == 0
        assert result.output == reference.output
    assert json.loads(reference.output)["channels"][0]["samples"][0]["data"] == [1.0, 2.0, 3.0, 4.0]


def test_xml2json_options(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert _in(tmp_path, ["json2xml", str(EXAMPLE), "--output-dir", "out"]).exit_code == 0
    # the XML names config/... relative to where it was written: --basedir from elsewhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    printed = _in(tmp_path, ["xml2json", "out/FitConfig.xml", "--hide-progress"]).output
    result = _in(elsewhere, ["xml2json", str(tmp_path / "out/FitConfig.xml"), "--basedir", str(tmp_path),
                             "--output-file", "ws.json", "--hide-progress"])
    assert result.exit_code == 0 and result.output == ""
    assert (elsewhere / "ws.json").read_text() == printed
    # -v/--mount, as pyhf: the XML's paths under MOUNT are read from HOST
    moved = tmp_path / "moved"
    (tmp_path / "out").rename(moved)
    text = (moved / "config/FitConfig_SR.xml").read_text()
    assert str(tmp_path / "out") in text  # InputFile is absolute
    result = _in(tmp_path, ["xml2json", "moved/FitConfig.xml", "-v", f"{moved}:{tmp_path / 'out'}",
                            "-v", f"{moved}:out", "--hide-progress"])
    assert result.exit_code == 0, result.output
    assert result.output == printed


def test_xml2json_errors(tmp_path: Path) -> None:
    missing = _run(["xml2json", str(tmp_path / "nope.xml")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_mount = _run(["xml2json", str(EXAMPLE), "-v", "nocolon"])
    assert bad_mount.exit_code == 2 and "colon-separated" in bad_mount.output
    broken = tmp_path / "broken.xml"
    broken.write_text("<Combination><Input>")
    result = _run(["xml2json", str(broken)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "malformed XML" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_json2xml_refusal_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    spec = examples.simple_workspace()
    spec["measurements"][0]["config"]["parameters"].append({"name": "wjets_shape", "fixed": True})
    (tmp_path / "ws.json").write_text(json.dumps(spec))
    (tmp_path / "out").mkdir()
    result = _run(["json2xml", str(tmp_path / "ws.json"), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "per-bin" in result.output
    assert list((tmp_path / "out").iterdir()) == []


def test_json2hs3_hs3tojson(tmp_path: Path) -> None:
    spec = examples.simple_workspace()
    result = _run(["json2hs3", str(EXAMPLE)])
    assert result.exit_code == 0
    assert json.loads(result.output) == hs3.to_hs3(spec)
    out = tmp_path / "h.json"
    assert _run(["json2hs3", "-", "--output-file", str(out)], input=json.dumps(spec)).exit_code == 0
    back = _run(["hs3tojson", str(out)])
    assert back.exit_code == 0
    assert back.output == json.dumps(hs3.from_hs3(out), indent=4, sort_keys=True) + "\n"
    assert pyhf.Workspace.sorted(pyhf.Workspace(json.loads(back.output))) == \
        pyhf.Workspace.sorted(pyhf.Workspace(spec))
    unknown = _run(["hs3tojson", str(out), "--analysis", "nope"])
    assert unknown.exit_code == 1 and "no analysis named 'nope'" in unknown.output
    not_hs3 = _run(["hs3tojson", str(EXAMPLE)])
    assert not_hs3.exit_code == 1 and not_hs3.output.startswith("Error: ")
