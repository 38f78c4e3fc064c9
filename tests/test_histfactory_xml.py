"""HistFactory XML + ROOT <-> pyhf JSON (nextstat.histfactory_xml) against pyhf 0.7.6 live.

Every workspace is written with pyhf's ``writexml`` and with ours, and each XML is read back with
``pyhf.readxml.parse`` and with ours: the four documents must be equal (and equal to pyhf's
own round trip), the XML text and the histograms identical, and the model's NLL the same.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import all_modifiers_workspace, needs_workspaces, nll_pair
from nextstat import examples, from_pyhf, testing
from nextstat.errors import WorkspaceError

pyhf = pytest.importorskip("pyhf")
uproot = pytest.importorskip("uproot")
from nextstat import histfactory_xml as hx  # noqa: E402

from pyhf import readxml, writexml  # noqa: E402


def _pyhf_write(spec: dict, where: Path) -> None:
    """``pyhf json2xml --output-dir out`` run in ``where``."""
    cwd = os.getcwd()
    os.chdir(where)
    try:
        for sub in ("out/config", "out/data"):
            os.makedirs(sub, exist_ok=True)
        Path("out/FitConfig.xml").write_bytes(writexml.writexml(copy.deepcopy(spec), Path("out/config"),
                                                                Path("out/data"), "FitConfig"))
    finally:
        os.chdir(cwd)


def _ours_write(spec: dict, where: Path) -> hx.XmlExport:
    cwd = os.getcwd()
    os.chdir(where)
    try:
        return hx.write_xml(copy.deepcopy(spec), "out")
    finally:
        os.chdir(cwd)


def _read(where: Path, reader: str, config: str = "out/FitConfig.xml") -> dict:
    cwd = os.getcwd()
    os.chdir(where)
    try:
        if reader == "pyhf":
            readxml.clear_filecache()  # pyhf caches open ROOT files by path across calls
            return readxml.parse(config, ".")
        return hx.read_xml(config, ".")
    finally:
        os.chdir(cwd)


def _histograms(path: Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        return {k: f[k].values() for k in f.keys(cycle=False)}


def _published(name: str) -> dict:
    """A published background-only workspace with its first signal patch applied."""
    import jsonpatch

    if name == "erjr":  # it fixes mu_BG, a parameter of no modifier, which pyhf's writexml cannot write
        spec = jsonpatch.apply_patch(testing.erjr(), testing.erjr_patch(testing.erjr_patch_names()[0]))
        config = spec["measurements"][0]["config"]
        config["parameters"] = [p for p in config["parameters"] if p["name"] != "mu_BG"]
        return spec
    patch = testing.sbottom_patch("RegionA", testing.sbottom_patch_names("RegionA")[0])
    return jsonpatch.apply_patch(testing.sbottom("RegionA"), patch)


WORKSPACES = {"simple": examples.simple_workspace, "all_modifiers": all_modifiers_workspace}


@pytest.mark.parametrize("name", list(WORKSPACES))
def test_round_trip_matches_pyhf(name: str, tmp_path: Path) -> None:
    spec = WORKSPACES[name]()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _pyhf_write(spec, tmp_path / "a")
    export = _ours_write(spec, tmp_path / "b")
    # the same files, XML text and histograms as pyhf json2xml
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert export.combination == Path("out/FitConfig.xml")
    for rel in files_a:
        if rel.suffix == ".xml":
            text_a = (tmp_path / "a" / rel).read_text().replace(str(tmp_path / "a"), "<dir>")
            text_b = (tmp_path / "b" / rel).read_text().replace(str(tmp_path / "b"), "<dir>")
            assert text_a == text_b, rel
    hists_a, hists_b = _histograms(tmp_path / "a/out/data/data.root"), _histograms(tmp_path / "b/out/data/data.root")
    assert hists_a.keys() == hists_b.keys()
    for key in hists_a:
        np.testing.assert_array_equal(hists_a[key], hists_b[key], err_msg=key)
    # read either XML with either reader: one document, identical to pyhf's round trip
    docs = {(w, r): _read(tmp_path / w, r) for w in "ab" for r in ("pyhf", "ours")}
    reference = docs[("a", "pyhf")]
    for key, doc in docs.items():
        assert doc == reference, key
    assert json.dumps(docs[("b", "ours")]) == json.dumps(reference)  # same key order too
    # the model is the one pyhf builds from its own conversion, and the original one
    ours, theirs = nll_pair(docs[("b", "ours")], reference)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    original = nll_pair(spec, spec)[1]
    np.testing.assert_allclose(ours, original, rtol=1e-9)


@needs_workspaces
@pytest.mark.parametrize("name", ["erjr", pytest.param("sbottom", marks=pytest.mark.slow)])
def test_published_workspace_round_trip(name: str, tmp_path: Path) -> None:
    """ATLAS eRJR (382 histograms, shapesys, fixed lumi); sbottom RegionA (1750 histograms, slow)."""
    spec = _published(name)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _pyhf_write(spec, tmp_path / "a")
    _ours_write(spec, tmp_path / "b")
    reference = _read(tmp_path / "a", "pyhf")
    ours_doc = _read(tmp_path / "b", "ours")
    assert ours_doc == reference
    assert _read(tmp_path / "a", "ours") == reference
    ours, theirs = nll_pair(ours_doc, reference)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


# --------------------------------------------------------------------------- hand-made XML


def _handmade(tmp_path: Path) -> Path:
    """An XML configuration with what pyhf's validation inputs use: weighted TH1F histograms in a
    sub-directory, channel / sample / modifier level files and paths, external StatError and
    ShapeSys histograms, a Const NormFactor, ParamSettings with Val and Const, Lumi != 1."""
    import hist

    def weighted(values: list[float], errors: list[float]) -> hist.Hist:
        h = hist.Hist(hist.axis.Regular(len(values), 0, 1), storage=hist.storage.Weight())
        h.view().value = values
        h.view().variance = np.square(errors)
        return h

    (tmp_path / "data").mkdir()
    with uproot.recreate(tmp_path / "data/main.root") as f:
        f["SR/data"] = uproot.to_writable((np.array([22.0, 17.0, 9.0], dtype=np.float32), np.arange(4.0)))
        f["SR/sig"] = weighted([3.0, 5.5, 2.25], [0.5, 0.75, 0.4])
        f["SR/bkg"] = weighted([18.0, 11.0, 6.5], [1.5, 1.25, 0.8])
        f["SR/bkg_jes_up"] = uproot.to_writable((np.array([19.0, 11.5, 6.0]), np.arange(4.0)))
        f["bkg_shape_rel"] = uproot.to_writable((np.array([0.1, 0.05, 0.2]), np.arange(4.0)))
        f["CR/data"] = uproot.to_writable((np.array([105.0, 98.0]), np.arange(3.0)))
        f["CR/bkg"] = uproot.to_writable((np.array([100.0, 95.0]), np.arange(3.0)))
        f["CR/stat_rel"] = uproot.to_writable((np.array([0.02, 0.03]), np.arange(3.0)))
    with uproot.recreate(tmp_path / "data/down.root") as f:
        f["sys/bkg_jes_down"] = uproot.to_writable((np.array([17.0, 10.25, 7.0]), np.arange(4.0)))
    (tmp_path / "config").mkdir()
    (tmp_path / "config/SR.xml").write_text("""<!DOCTYPE Channel SYSTEM 'HistFactorySchema.dtd'>
<Channel Name="SR" InputFile="/mnt/inputs/main.root" HistoPath="SR">
  <Data HistoName="data" />
  <StatErrorConfig RelErrorThreshold="0.05" ConstraintType="Gaussian" />
  <Sample Name="signal" HistoName="sig" NormalizeByTheory="True">
    <NormFactor Name="mu" Val="1" Low="0" High="20" />
    <OverallSys Name="sig_xsec" High="1.1" Low="0.92" />
    <StatError Activate="True" />
  </Sample>
  <Sample Name="background" HistoName="bkg" NormalizeByTheory="True">
    <NormFactor Name="bkg_norm" Val="1.2" Low="0.5" High="3" Const="False" />
    <HistoSys Name="jes" HistoNameHigh="bkg_jes_up" HistoPathHigh="SR" HistoFileLow="/mnt/inputs/down.root"
              HistoPathLow="sys" HistoNameLow="bkg_jes_down" />
    <OverallSys Name="jes" High="1.05" Low="0.96" />
    <ShapeSys Name="bkg_shape" HistoName="bkg_shape_rel" />
    <StatError Activate="True" />
  </Sample>
</Channel>
""")
    (tmp_path / "config/CR.xml").write_text("""<!DOCTYPE Channel SYSTEM 'HistFactorySchema.dtd'>
<Channel Name="CR" InputFile="/mnt/inputs/main.root">
  <Data HistoName="data" HistoPath="CR" />
  <Sample Name="background" HistoName="bkg" HistoPath="CR" NormalizeByTheory="True">
    <NormFactor Name="bkg_norm" Val="1.2" Low="0.5" High="3" Const="False" />
    <StatError Activate="True" HistoName="stat_rel" HistoPath="CR" />
    <ShapeFactor Name="cr_free" />
    <StatError Activate="False" />
  </Sample>
</Channel>
""")
    (tmp_path / "combination.xml").write_text("""<!DOCTYPE Combination SYSTEM 'HistFactorySchema.dtd'>
<Combination OutputFilePrefix="results/example">
  <Input>config/SR.xml</Input>
  <Input>
    config/CR.xml
  </Input>
  <Measurement Name="meas" Lumi="2.0" LumiRelErr="0.05" ExportOnly="True">
    <POI>mu</POI>
    <ParamSetting Const="True">alpha_sig_xsec Lumi</ParamSetting>
    <ParamSetting Val="0.5">alpha_jes</ParamSetting>
  </Measurement>
  <Measurement Name="free_lumi" Lumi="2.0" LumiRelErr="0.05">
    <POI> mu </POI>
  </Measurement>
</Combination>
""")
    return tmp_path / "combination.xml"


def test_handmade_xml_matches_pyhf(tmp_path: Path) -> None:
    config = _handmade(tmp_path)
    mounts = [(tmp_path / "data", Path("/mnt/inputs"))]
    # pyhf reads <Input> text as it is: give it the stripped name
    config_pyhf = tmp_path / "combination_pyhf.xml"
    config_pyhf.write_text(config.read_text().replace("<Input>\n    config/CR.xml\n  </Input>",
                                                      "<Input>config/CR.xml</Input>"))
    readxml.clear_filecache()
    theirs = readxml.parse(config_pyhf, tmp_path, mounts=mounts)
    ours = hx.read_xml(config, tmp_path, mounts=mounts)
    assert ours == theirs
    assert json.dumps(ours) == json.dumps(theirs)
    # what the document holds, by hand: TH1F contents are float32, the staterror of a
    # weighted histogram is its sumw2, a ShapeSys is relative x nominal
    sr = ours["channels"][0]["samples"]
    assert sr[0]["modifiers"][-1] == {"name": "staterror_SR", "type": "staterror", "data": [0.5, 0.75, 0.4]}
    assert sr[1]["modifiers"][4]["data"] == pytest.approx([1.8, 0.55, 1.3], rel=1e-15)
    assert ours["measurements"][0]["config"]["parameters"][0] == {
        "name": "lumi", "auxdata": [2.0], "bounds": [[1.5, 2.5]], "inits": [2.0], "sigmas": [0.1], "fixed": True}
    ours_nll, theirs_nll = nll_pair(ours, theirs)
    np.testing.assert_allclose(ours_nll, theirs_nll, rtol=1e-12)


def test_validation_as_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _handmade(tmp_path)
    text = config.read_text().replace("<Input>config/SR.xml</Input>", "").replace(
        "<Input>\n    config/CR.xml\n  </Input>", "")
    config.write_text(text + "\n")  # no channels: breaks the schema (channels: at least 1)
    with pytest.raises(WorkspaceError, match="channels"):
        hx.read_xml(config, tmp_path)
    spec = hx.read_xml(config, tmp_path, validation_as_error=False)
    assert spec["channels"] == [] and "not valid" in caplog.text


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace('HistoName="sig"', 'HistoName="nope"'), "histogram 'nope'"),
    (lambda t: t.replace('<Data HistoName="data" />', ''), "no <Data>"),
    (lambda t: t.replace('High="1.1"', 'High="x"'), "not a number"),
    (lambda t: t.replace('<OverallSys Name="sig_xsec"', '<OverallSys'), "no Name attribute"),
    (lambda t: t.replace("</Channel>", ""), "malformed XML"),
])
def test_bad_channel_xml_is_refused(tmp_path: Path, edit, message: str) -> None:
    config = _handmade(tmp_path)
    sr = tmp_path / "config/SR.xml"
    sr.write_text(edit(sr.read_text()))
    with pytest.raises(WorkspaceError, match=message):
        hx.read_xml(config, tmp_path, mounts=[(tmp_path / "data", Path("/mnt/inputs"))])


def test_gamma_param_setting_is_refused(tmp_path: Path) -> None:
    config = _handmade(tmp_path)
    config.write_text(config.read_text().replace("alpha_sig_xsec Lumi", "gamma_bkg_shape_0"))
    with pytest.raises(WorkspaceError, match="per-bin"):
        hx.read_xml(config, tmp_path, mounts=[(tmp_path / "data", Path("/mnt/inputs"))])


def test_missing_file_is_refused(tmp_path: Path) -> None:
    config = _handmade(tmp_path)
    with pytest.raises(WorkspaceError, match="cannot open ROOT file"):
        hx.read_xml(config, tmp_path)  # without the mount, /mnt/inputs does not exist


# --------------------------------------------------------------------------- writing


def test_lumi_width_and_fixed_values_survive(tmp_path: Path) -> None:
    """Where pyhf's writer loses information (LumiRelErr for Lumi != 1, fixed values), ours keeps it."""
    spec = examples.simple_workspace()
    params = spec["measurements"][0]["config"]["parameters"]
    lumi = next(p for p in params if p["name"] == "lumi")
    lumi.update(auxdata=[2.0], sigmas=[0.1], inits=[2.0], bounds=[[1.5, 2.5]])
    params.append({"name": "jes", "fixed": True, "inits": [0.5]})
    _ours_write(spec, tmp_path)
    for reader in ("pyhf", "ours"):
        doc = _read(tmp_path, reader)
        config = {p["name"]: p for p in doc["measurements"][0]["config"]["parameters"]}
        assert config["lumi"]["sigmas"] == [pytest.approx(0.1, rel=1e-15)]
        assert config["jes"] == {"name": "jes", "fixed": True, "inits": [0.5]}
    model, reference = from_pyhf(_read(tmp_path, "ours")), from_pyhf(spec)
    pars = reference.suggested_init()
    assert model.nll(pars) == pytest.approx(reference.nll(pars), rel=1e-12)


def _spec_with(edit) -> dict:
    spec = examples.simple_workspace()
    edit(spec)
    return spec


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s["measurements"][0]["config"]["parameters"].append({"name": "wjets_shape", "fixed": True}),
     "per-bin parameters"),
    (lambda s: s["channels"][0]["samples"][1]["modifiers"].__setitem__(
        -1, {**s["channels"][0]["samples"][1]["modifiers"][-1], "name": "other_stat"}), "several staterror"),
    (lambda s: s["channels"][0]["samples"][0]["modifiers"][1].__setitem__("name", "luminosity"),
     "one luminosity parameter"),
    (lambda s: (s["channels"][0].__setitem__("name", "a/b"), s["observations"][0].__setitem__("name", "a/b")),
     "file name"),
])
def test_unwritable_workspaces_are_refused_before_writing(tmp_path: Path, edit, message: str) -> None:
    spec = _spec_with(edit)
    with pytest.raises(WorkspaceError, match=message):
        hx.write_xml(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_patches_and_layout_options(tmp_path: Path) -> None:
    patch = [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [1.0, 2.0, 3.0, 4.0]}]
    export = hx.write_xml(examples.simple_workspace(), tmp_path, specroot="xml", dataroot="root",
                          resultprefix="Fit", patches=[patch])
    assert export.combination == tmp_path / "Fit.xml"
    assert export.channels == (tmp_path / "xml/Fit_SR.xml", tmp_path / "xml/Fit_CR.xml")
    assert export.data == tmp_path / "root/data.root" and export.dtd.read_text() == hx.HISTFACTORY_DTD
    doc = hx.read_xml(export.combination, "/")  # <Input> holds absolute paths here
    assert doc["channels"][0]["samples"][0]["data"] == [1.0, 2.0, 3.0, 4.0]


def test_import_nextstat_stays_cheap() -> None:
    code = ("import sys, nextstat, nextstat.histfactory_xml, nextstat.hs3; "
            "assert 'uproot' not in sys.modules and 'awkward' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
