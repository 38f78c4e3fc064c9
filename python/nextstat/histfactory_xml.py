"""HistFactory XML + ROOT histograms <-> pyhf JSON, with uproot (ROOT is not needed).

:func:`read_xml` reads a top-level combination XML, the channel XMLs it lists and their ROOT
histograms into a pyhf JSON ``dict``, as pyhf 0.7.6's ``pyhf.readxml.parse`` (``pyhf
xml2json``) does: the same document for the same input. :func:`write_xml` writes a pyhf JSON
``dict`` as XML + ``data.root``, as ``pyhf.writexml`` (``pyhf json2xml``) does, with the same
file layout, XML text and histograms. The HistFactory model is described in CERN-OPEN-2012-016
(XML reference: ROOT's ``HistFactorySchema.dtd``).

Conventions of the format (pyhf's mapping):

- ``StatError`` has no name: the staterror of a channel is called ``staterror_<channel>``; its
  histogram holds relative uncertainties (``StatError HistoName``) or, without one, the bin
  errors of the sample histogram. ``ShapeSys`` histograms hold relative uncertainties; pyhf
  JSON holds absolute ones (relative x nominal).
- ``NormalizeByTheory="True"`` is the ``lumi`` modifier; the measurement's ``Lumi`` and
  ``LumiRelErr`` give its auxiliary value ``Lumi`` and width ``Lumi * LumiRelErr``, bounds
  ``Lumi +- 5 width``.
- ``NormFactor`` carries its parameter's ``Val`` (inits), ``Low``/``High`` (bounds) and, if
  given, ``Const``; ``ParamSetting`` fixes (``Const``) or starts (``Val``) the parameters it
  names (``alpha_<name>`` for normsys/histosys, ``Lumi`` for lumi).

Where this module differs from pyhf 0.7.6, pyhf writes XML that does not describe the model:
``LumiRelErr`` is written as the relative width ``sigma / Lumi`` (pyhf writes ``sigma``, the
same number only when ``Lumi`` is 1); fixed parameters with an initial value other than the
default keep it (``ParamSetting Val``); and documents the XML cannot hold are refused
(:class:`~nextstat.WorkspaceError` naming the field) instead of written differently: a
fixed staterror/shapesys (``gamma_``) parameter, two staterror names in one channel, a
``lumi`` modifier not named ``lumi`` or another modifier named ``lumi``. The DTD written next
to the XML (``HistFactorySchema.dtd``) is NextStat's own description of the elements used.
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextstat import workspace as wsmod
from nextstat.errors import WorkspaceError

__all__ = ["HISTFACTORY_DTD", "XmlExport", "read_xml", "write_xml"]

log = logging.getLogger("nextstat")

SCHEMA_VERSION = "1.0.0"

#: Document type definition of the elements and attributes read and written here.
HISTFACTORY_DTD = """\
<!ELEMENT Combination (Function*,Input+,Measurement*)>
<!ATTLIST Combination OutputFilePrefix CDATA #REQUIRED Mode CDATA #IMPLIED>
<!ELEMENT Function EMPTY>
<!ATTLIST Function Name CDATA #REQUIRED Expression CDATA #REQUIRED Dependents CDATA #REQUIRED>
<!ELEMENT Input (#PCDATA)>
<!ELEMENT Measurement (POI,ParamSetting*,ConstraintTerm*)>
<!ATTLIST Measurement Name CDATA #REQUIRED Lumi CDATA #REQUIRED LumiRelErr CDATA #REQUIRED
          BinLow CDATA #IMPLIED BinHigh CDATA #IMPLIED Mode CDATA #IMPLIED ExportOnly CDATA #IMPLIED>
<!ELEMENT POI (#PCDATA)>
<!ELEMENT ParamSetting (#PCDATA)>
<!ATTLIST ParamSetting Val CDATA #IMPLIED Const CDATA #IMPLIED>
<!ELEMENT ConstraintTerm (#PCDATA)>
<!ATTLIST ConstraintTerm Type CDATA #REQUIRED RelativeUncertainty CDATA #IMPLIED>
<!ELEMENT Channel (Data*,StatErrorConfig*,Sample+)>
<!ATTLIST Channel Name CDATA #REQUIRED InputFile CDATA #IMPLIED HistoPath CDATA #IMPLIED
          HistoName CDATA #IMPLIED>
<!ELEMENT Data EMPTY>
<!ATTLIST Data InputFile CDATA #IMPLIED HistoPath CDATA #IMPLIED HistoName CDATA #IMPLIED>
<!ELEMENT StatErrorConfig EMPTY>
<!ATTLIST StatErrorConfig RelErrorThreshold CDATA #IMPLIED ConstraintType CDATA #IMPLIED>
<!ELEMENT Sample (StatError|HistoSys|OverallSys|ShapeSys|NormFactor|ShapeFactor)*>
<!ATTLIST Sample Name CDATA #REQUIRED InputFile CDATA #IMPLIED HistoName CDATA #IMPLIED
          HistoPath CDATA #IMPLIED NormalizeByTheory CDATA #IMPLIED>
<!ELEMENT StatError EMPTY>
<!ATTLIST StatError Activate CDATA #REQUIRED HistoName CDATA #IMPLIED InputFile CDATA #IMPLIED
          HistoPath CDATA #IMPLIED>
<!ELEMENT HistoSys EMPTY>
<!ATTLIST HistoSys Name CDATA #REQUIRED InputFile CDATA #IMPLIED HistoFileHigh CDATA #IMPLIED
          HistoPathHigh CDATA #IMPLIED HistoNameHigh CDATA #IMPLIED HistoFileLow CDATA #IMPLIED
          HistoPathLow CDATA #IMPLIED HistoNameLow CDATA #IMPLIED>
<!ELEMENT OverallSys EMPTY>
<!ATTLIST OverallSys Name CDATA #REQUIRED High CDATA #REQUIRED Low CDATA #REQUIRED>
<!ELEMENT ShapeSys EMPTY>
<!ATTLIST ShapeSys Name CDATA #REQUIRED HistoName CDATA #REQUIRED HistoPath CDATA #IMPLIED
          InputFile CDATA #IMPLIED ConstraintType CDATA #IMPLIED>
<!ELEMENT NormFactor EMPTY>
<!ATTLIST NormFactor Name CDATA #REQUIRED Val CDATA #REQUIRED High CDATA #REQUIRED
          Low CDATA #REQUIRED Const CDATA #IMPLIED>
<!ELEMENT ShapeFactor EMPTY>
<!ATTLIST ShapeFactor Name CDATA #REQUIRED>
"""

_MOD_TAGS = {"histosys": "HistoSys", "staterror": "StatError", "normsys": "OverallSys",
             "shapesys": "ShapeSys", "normfactor": "NormFactor", "shapefactor": "ShapeFactor"}
_PREFIXES = {"normsys": "alpha_", "histosys": "alpha_", "shapesys": "gamma_", "staterror": "gamma_"}


def _uproot() -> Any:
    try:
        import uproot
    except ImportError as exc:  # pragma: no cover - uproot is in the [hep] extra
        raise ImportError("HistFactory XML needs uproot: pip install 'nextstat-hep[hep]' "
                          "(or pip install uproot)") from exc
    return uproot


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


class _Histograms:
    """ROOT files opened once per :func:`read_xml` call, found through the mounts and rootdir."""

    def __init__(self, rootdir: Path, mounts: Iterable[tuple[Any, Any]]):
        self.rootdir = rootdir
        self.mounts = [(Path(h), Path(m)) for h, m in mounts]
        self.files: dict[str, tuple[Any, set[str]]] = {}

    def resolve(self, filename: str) -> Path:
        """``filename`` (as written in the XML) on this machine: mounts, then ``rootdir``."""
        path = Path(filename)
        for host, mount in self.mounts:
            if mount == path or mount in path.parents:
                path = host / path.relative_to(mount)
                break
        return self.rootdir / path

    def close(self) -> None:
        for f, _ in self.files.values():
            f.close()
        self.files.clear()

    def get(self, filename: str, path: str | None, name: str, where: str) -> tuple[list[float], list[float]]:
        """Bin contents and errors of histogram ``name`` (or ``path/name``) in ``filename``."""
        import numpy as np

        full = str(self.resolve(filename))
        if full not in self.files:
            uproot = _uproot()
            try:
                f = uproot.open(full)
                self.files[full] = (f, set(f.keys(cycle=False)))
            except Exception as exc:  # noqa: BLE001 -- missing, unreadable or not a ROOT file
                raise WorkspaceError(where, f"cannot open ROOT file {full!r}: {exc}") from exc
        f, keys = self.files[full]
        fullname = "/".join([(path or "").strip("/"), name])
        key = name if name in keys else fullname if fullname in keys else None
        if key is None:
            raise WorkspaceError(where, f"histogram {name!r} (or {fullname!r}) not found in {full!r}")
        try:
            hist = f[key]
        except Exception as exc:  # noqa: BLE001 -- an object uproot cannot read
            raise WorkspaceError(where, f"cannot read {key!r} in {full!r}: {exc}") from exc
        if not hasattr(hist, "to_numpy") or not hasattr(hist, "variances"):
            raise WorkspaceError(where, f"{key!r} in {full!r} is a {type(hist).__name__}, not a histogram")
        values = hist.to_numpy()[0]
        if values.ndim != 1:
            raise WorkspaceError(where, f"histogram {key!r} in {full!r} has {values.ndim} dimensions; "
                                        "HistFactory channels are one-dimensional")
        variance = hist.variances() if hist.weighted else values
        return values.tolist(), np.sqrt(variance).tolist()


def _parse(source: Any, what: str) -> ET.ElementTree:
    try:
        return ET.parse(source)
    except ET.ParseError as exc:
        raise WorkspaceError("", f"malformed XML in {what} {str(source)!r}: {exc}") from exc
    except OSError as exc:
        raise WorkspaceError("", f"cannot read {what} {str(source)!r}: {exc}") from exc


def _attr(elem: ET.Element, key: str, where: str) -> str:
    try:
        return elem.attrib[key]
    except KeyError:
        raise WorkspaceError(where, f"<{elem.tag}> has no {key} attribute") from None


def _float(elem: ET.Element, key: str, where: str) -> float:
    text = _attr(elem, key, where)
    try:
        return float(text)
    except ValueError:
        raise WorkspaceError(where, f"<{elem.tag} {key}={text!r}> is not a number") from None


def _progress(items: Any, enabled: bool, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, disable=not enabled, **kwargs)


def _sample(sample: ET.Element, hists: _Histograms, inputfile: str, histopath: str, channel: str,
            track_progress: bool) -> tuple[dict, list[dict]]:
    """One ``<Sample>``: the pyhf sample and the parameter configs of its NormFactors."""
    import numpy as np

    where = f"channel {channel!r}, sample {sample.attrib.get('Name', '?')!r}"
    name = _attr(sample, "Name", where)
    inputfile = sample.attrib.get("InputFile", inputfile)
    histopath = sample.attrib.get("HistoPath", histopath)
    data, err = hists.get(inputfile, histopath, _attr(sample, "HistoName", where), where)
    configs: list[dict] = []
    modifiers: list[dict] = []
    if sample.attrib.get("NormalizeByTheory", "False") == "True":
        modifiers.append({"name": "lumi", "type": "lumi", "data": None})
    tags = _progress(sample.iter(), track_progress, unit="modifier", total=len(sample))
    for tag in tags:
        tags.set_description(f"  - modifier {tag.attrib.get('Name', 'n/a'):s}({tag.tag:s})")
        if tag is sample:
            continue
        mwhere = f"{where}, <{tag.tag} Name={tag.attrib.get('Name', '')!r}>"
        if tag.tag == "OverallSys":
            modifiers.append({"name": _attr(tag, "Name", mwhere), "type": "normsys",
                              "data": {"lo": _float(tag, "Low", mwhere), "hi": _float(tag, "High", mwhere)}})
        elif tag.tag == "NormFactor":
            mname = _attr(tag, "Name", mwhere)
            modifiers.append({"name": mname, "type": "normfactor", "data": None})
            config: dict[str, Any] = {"name": mname,
                                      "bounds": [[_float(tag, "Low", mwhere), _float(tag, "High", mwhere)]],
                                      "inits": [_float(tag, "Val", mwhere)]}
            if tag.attrib.get("Const"):
                config["fixed"] = tag.attrib["Const"] == "True"
            configs.append(config)
        elif tag.tag == "HistoSys":
            lo, _ = hists.get(tag.attrib.get("HistoFileLow", inputfile), tag.attrib.get("HistoPathLow", ""),
                              _attr(tag, "HistoNameLow", mwhere), mwhere)
            hi, _ = hists.get(tag.attrib.get("HistoFileHigh", inputfile), tag.attrib.get("HistoPathHigh", ""),
                              _attr(tag, "HistoNameHigh", mwhere), mwhere)
            modifiers.append({"name": _attr(tag, "Name", mwhere), "type": "histosys",
                              "data": {"lo_data": lo, "hi_data": hi}})
        elif tag.tag == "StatError" and _attr(tag, "Activate", mwhere) == "True":
            if tag.attrib.get("HistoName", "") == "":
                staterr = err
            else:
                rel, _ = hists.get(tag.attrib.get("HistoFile", inputfile), tag.attrib.get("HistoPath", ""),
                                   tag.attrib["HistoName"], mwhere)
                staterr = np.multiply(rel, data).tolist()
            if not staterr:
                raise WorkspaceError(mwhere, "cannot determine the stat error (empty histogram)")
            modifiers.append({"name": f"staterror_{channel}", "type": "staterror", "data": staterr})
        elif tag.tag == "ShapeSys":
            if tag.attrib.get("ConstraintType", "Poisson") != "Poisson":  # pyhf's shapesys is Poisson
                log.warning("shapesys modifier %s has a non-poisson constraint", tag.attrib.get("Name"))
            rel, _ = hists.get(tag.attrib.get("InputFile", inputfile), tag.attrib.get("HistoPath", ""),
                               _attr(tag, "HistoName", mwhere), mwhere)
            modifiers.append({"name": _attr(tag, "Name", mwhere), "type": "shapesys",
                              "data": [a * b for a, b in zip(data, rel)]})
        elif tag.tag == "ShapeFactor":
            modifiers.append({"name": _attr(tag, "Name", mwhere), "type": "shapefactor", "data": None})
        else:
            log.warning("not considering modifier tag %s", tag)
    return {"name": name, "data": data, "modifiers": modifiers}, configs


def _channel(tree: ET.ElementTree, hists: _Histograms, track_progress: bool) -> tuple[str, list, list, list]:
    """One channel XML: its name, observed data, samples and NormFactor parameter configs."""
    root = tree.getroot()
    name = _attr(root, "Name", f"<{root.tag}>")
    inputfile = root.attrib.get("InputFile", "")
    histopath = root.attrib.get("HistoPath", "")
    data = root.findall("Data")
    if not data:
        raise WorkspaceError(f"channel {name!r}", "the channel has no <Data> (observed data is required)")
    dinput = data[0].attrib.get("InputFile", inputfile)
    dname = data[0].attrib.get("HistoName", "")
    if dinput == "" or dname == "":
        raise WorkspaceError(f"channel {name!r}", "<Data> names no InputFile or HistoName; workspaces "
                                                   "without observed data are not supported")
    observed, _ = hists.get(dinput, data[0].attrib.get("HistoPath", histopath), dname, f"channel {name!r}, <Data>")
    samples, configs = [], []
    bar = _progress(root.findall("Sample"), track_progress, unit="sample")
    for sample in bar:
        bar.set_description(f"  - sample {sample.attrib.get('Name')}")
        spec, sconfigs = _sample(sample, hists, inputfile, histopath, name, track_progress)
        samples.append(spec)
        configs.extend(sconfigs)
    return name, observed, samples, configs


def _dedupe(configs: Sequence[dict]) -> list[dict]:
    """One config per parameter name; configs of one name must agree."""
    by_name: dict[str, dict] = {}
    for config in configs:
        first = by_name.setdefault(config["name"], config)
        if first != config:
            raise WorkspaceError("", f"cannot import workspace due to incompatible parameter configurations "
                                     f"for {config['name']}: {first} and {config}")
    return list(by_name.values())


def _root_name(name: str) -> tuple[str, bool]:
    """pyhf's reading of a ROOT parameter name (``pyhf.compat.interpret_rootname``): the pyhf
    name and whether it is a scalar (``gamma_<name>_<i>`` are per-bin parameters)."""
    if name.startswith("gamma_"):
        match = re.search(r"^gamma_(.+)_(\d+)$", name)
        if not match:
            raise WorkspaceError("", f"ParamSetting: cannot interpret the parameter name {name!r}")
        return match.group(1), False
    if name.startswith("alpha_"):
        return name[len("alpha_"):], True
    return ("lumi" if name == "Lumi" else name), True


def _measurements(top: ET.ElementTree, configs: Sequence[dict]) -> list[dict]:
    results = []
    for meas in top.findall("Measurement"):
        mname = _attr(meas, "Name", "<Measurement>")
        where = f"measurement {mname!r}"
        lumi = _float(meas, "Lumi", where)
        lumierr = lumi * _float(meas, "LumiRelErr", where)
        poi = meas.find("POI")
        if poi is None:
            raise WorkspaceError(where, "the measurement has no <POI>")
        lumi_config = {"name": "lumi", "auxdata": [lumi], "bounds": [[lumi - 5.0 * lumierr, lumi + 5.0 * lumierr]],
                       "inits": [lumi], "sigmas": [lumierr]}
        by_name = {c["name"]: dict(c) for c in configs}
        for setting in meas.findall("ParamSetting"):
            common: dict[str, Any] = {}
            if setting.attrib.get("Const"):
                common["fixed"] = setting.attrib["Const"] == "True"
            if setting.attrib.get("Val"):
                common["inits"] = [_float(setting, "Val", where)]
            for rootname in (setting.text.strip().split(" ") if setting.text else []):
                pname, scalar = _root_name(rootname)
                if not scalar:
                    raise WorkspaceError(where, f"ParamSetting {rootname!r}: per-bin (gamma) parameters cannot be "
                                                "set constant in pyhf JSON")
                if pname == "lumi":
                    lumi_config.update(common)
                else:  # ParamSetting takes precedence; the parameter moves to the end, as in pyhf
                    config = by_name.pop(pname, {"name": pname})
                    config.update(common)
                    by_name[pname] = config
        results.append({"name": mname, "config": {"poi": poi.text.strip() if poi.text else "",
                                                  "parameters": [lumi_config, *by_name.values()]}})
    return results


def read_xml(configfile: str | os.PathLike, rootdir: str | os.PathLike = ".", *,
             mounts: Iterable[tuple[Any, Any]] | None = None, track_progress: bool = False,
             validation_as_error: bool = True) -> dict:
    """Read a HistFactory XML configuration and its ROOT histograms as a pyhf JSON workspace.

    The same document as pyhf 0.7.6's ``pyhf.readxml.parse`` (``pyhf xml2json``) for the same
    input (module docstring): channels and observations in the order of the ``<Input>``
    elements, samples and modifiers in the order of the XML, histogram contents as uproot
    reads them.

    Args:
        configfile: the top-level XML (``<Combination>``).
        rootdir: directory that relative paths in the XML (``<Input>``, ``InputFile``) start from.
        mounts: ``(local_path, path_in_xml)`` pairs: paths in the XML under ``path_in_xml`` are
            read from ``local_path`` (like Docker volume mounts; pyhf's ``-v/--mount``).
        track_progress: show progress bars (stderr).
        validation_as_error: refuse a document that breaks pyhf's workspace schema
            (:func:`nextstat.workspace.check_workspace`); False logs a warning instead.

    Returns:
        ``{"measurements", "channels", "observations", "version"}`` (pyhf JSON, version 1.0.0).

    Raises:
        WorkspaceError: malformed or unreadable XML, a missing attribute, file or histogram, a
            channel without data, a per-bin parameter in ``ParamSetting``, or conflicting
            NormFactor settings of one parameter. ImportError: uproot is not installed.
    """
    hists = _Histograms(Path(rootdir), mounts or [])
    top = _parse(configfile, "combination XML")
    inputs = [x.text.strip() for x in top.findall("Input") if x.text and x.text.strip()]
    channels, observations, configs = [], [], []
    try:
        bar = _progress(inputs, track_progress, unit="channel")
        for inp in bar:
            bar.set_description(f"Processing {inp}")
            name, observed, samples, cconfigs = _channel(_parse(hists.resolve(inp), "channel XML"), hists,
                                                         track_progress)
            channels.append({"name": name, "samples": samples})
            observations.append({"name": name, "data": observed})
            configs.extend(cconfigs)
    finally:
        hists.close()
    spec = {"measurements": _measurements(top, _dedupe(configs)), "channels": channels,
            "observations": observations, "version": SCHEMA_VERSION}
    try:
        wsmod.check_workspace(spec)  # pyhf's schema, as pyhf.readxml.parse checks it
    except WorkspaceError as exc:
        if validation_as_error:
            raise
        log.warning("the workspace read from %s is not valid: %s", configfile, exc)
    return spec


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XmlExport:
    """Files written by :func:`write_xml`.

    Attributes:
        combination: the top-level XML, ``<output_dir>/<resultprefix>.xml``.
        channels: one XML per channel, ``<output_dir>/<specroot>/<resultprefix>_<channel>.xml``.
        data: the ROOT file of all histograms, ``<output_dir>/<dataroot>/data.root``.
        dtd: ``<output_dir>/HistFactorySchema.dtd``, referenced by the XML files.
    """

    combination: Path
    channels: tuple[Path, ...]
    data: Path
    dtd: Path


def _hist_name(channel: str, sample: str, modifier: str = "", suffix: str = "") -> str:
    return "hist" + "_".join(x for x in (channel, sample, modifier) if x) + suffix


def _indent(elem: ET.Element, level: int = 0) -> None:
    """Whitespace of pyhf's ``writexml.indent``: children two spaces deeper than their parent,
    each closing tag at its last child's depth."""
    pad = "\n" + level * "  "
    if len(elem):
        if not (elem.text or "").strip():
            elem.text = pad + "  "
        if not (elem.tail or "").strip():
            elem.tail = pad
        for child in elem:
            _indent(child, level + 1)
    elif level and not (elem.tail or "").strip():
        elem.tail = pad


class _Writer:
    """Builds the XML elements of one workspace and collects the histograms to write."""

    def __init__(self, spec: dict, rootfile: str):
        self.spec = spec
        self.rootfile = rootfile  # the data file as named in the XML
        self.hists: dict[str, list[float]] = {}
        self.types = {m["name"]: m["type"] for ch in spec["channels"] for s in ch["samples"]
                      for m in sorted(s["modifiers"], key=lambda m: (m["name"], m["type"]))}

    def hist(self, name: str, data: Sequence[float], where: str) -> None:
        if name in self.hists:
            raise WorkspaceError(where, f"two histograms would be named {name!r} in data.root "
                                        "(a modifier repeated in one sample?)")
        self.hists[name] = [float(x) for x in data]

    def modifier(self, mod: dict, channel: str, sample: dict, where: str) -> ET.Element | None:
        import numpy as np

        mtype, mname = mod["type"], mod["name"]
        if (mname == "lumi") != (mtype == "lumi"):
            raise WorkspaceError(where, f"HistFactory XML has one luminosity parameter, the lumi modifier named "
                                        f"'lumi'; cannot write the {mtype} modifier {mname!r}")
        if mtype == "lumi":
            return None
        attrs = {"Name": mname}
        nominal = np.asarray(sample["data"], dtype=float)
        if mtype == "histosys":
            attrs["HistoNameLow"] = _hist_name(channel, sample["name"], mname, "Low")
            attrs["HistoNameHigh"] = _hist_name(channel, sample["name"], mname, "High")
            self.hist(attrs["HistoNameLow"], mod["data"]["lo_data"], where)
            self.hist(attrs["HistoNameHigh"], mod["data"]["hi_data"], where)
        elif mtype == "normsys":
            attrs["High"] = str(mod["data"]["hi"])
            attrs["Low"] = str(mod["data"]["lo"])
        elif mtype == "normfactor":  # the first measurement's config, as pyhf (XML has one per sample)
            val, low, high = 1, 0, 10
            for par in self.spec["measurements"][0]["config"].get("parameters", []):
                if par["name"] == mname:
                    val = par.get("inits", [val])[0]
                    low, high = par.get("bounds", [[low, high]])[0]
            attrs.update(Val=str(val), Low=str(low), High=str(high))
        elif mtype in ("staterror", "shapesys"):  # relative uncertainties in the ROOT file
            if mtype == "staterror":
                del attrs["Name"]
                attrs["Activate"] = "True"
            else:
                attrs["ConstraintType"] = "Poisson"
            attrs["HistoName"] = _hist_name(channel, sample["name"], mname)
            unc = np.asarray(mod["data"], dtype=float)
            rel = np.divide(unc, nominal, out=np.zeros_like(unc), where=nominal != 0)
            self.hist(attrs["HistoName"], rel, where)
        return ET.Element(_MOD_TAGS[mtype], **attrs)

    def channel(self, channel: dict, observations: list[dict]) -> ET.Element:
        cname = channel["name"]
        elem = ET.Element("Channel", Name=cname, InputFile=self.rootfile)
        if observations:
            obs = next((o for o in observations if o["name"] == cname), None)
            if obs is None:
                raise WorkspaceError("observations", f"no observation for channel {cname!r}")
            elem.append(ET.Element("Data", HistoName=_hist_name(cname, "data"), InputFile=self.rootfile))
            self.hist(_hist_name(cname, "data"), obs["data"], f"observations[{cname!r}]")
        staterrors = sorted({m["name"] for s in channel["samples"] for m in s["modifiers"] if m["type"] == "staterror"})
        if len(staterrors) > 1:
            raise WorkspaceError(f"channels[{cname!r}]", f"the channel has several staterror modifiers {staterrors}; "
                                                         "HistFactory XML has one staterror per channel")
        for sample in channel["samples"]:
            sname = sample["name"]
            attrs = {"Name": sname, "HistoName": _hist_name(cname, sname), "InputFile": self.rootfile,
                     "NormalizeByTheory": "False"}
            selem = ET.Element("Sample", **attrs)
            for mod in sample["modifiers"]:
                where = f"channels[{cname!r}].samples[{sname!r}].modifiers[{mod['name']!r}]"
                if mod["type"] == "lumi":
                    selem.attrib["NormalizeByTheory"] = "True"
                child = self.modifier(mod, cname, sample, where)
                if child is not None:
                    selem.append(child)
            self.hist(_hist_name(cname, sname), sample["data"], f"channels[{cname!r}].samples[{sname!r}]")
            elem.append(selem)
        return elem

    def measurement(self, meas: dict) -> ET.Element:
        where = f"measurements[{meas['name']!r}]"
        lumi, lumierr = 1.0, 0.0
        fixed: list[str] = []
        with_value: dict[str, list[str]] = {}
        for par in meas["config"].get("parameters", []):
            pname = par["name"]
            if pname == "lumi":
                if "auxdata" not in par or "sigmas" not in par:
                    raise WorkspaceError(f"{where}.config.parameters['lumi']", "lumi needs auxdata and sigmas")
                lumi, sigma = par["auxdata"][0], par["sigmas"][0]
                if not lumi > 0:
                    raise WorkspaceError(f"{where}.config.parameters['lumi'].auxdata", f"must be > 0, got {lumi!r}")
                lumierr = sigma if lumi == 1 else sigma / lumi  # XML holds the relative width
            if not par.get("fixed", False):
                continue
            mtype = self.types.get(pname, "lumi" if pname == "lumi" else None)
            if mtype is None:  # pyhf ignores configurations of parameters the model lacks (its writer fails)
                log.debug("json2xml: %s: dropping the configuration of %r, a parameter of no modifier", where, pname)
                continue
            if mtype in ("shapesys", "staterror", "shapefactor"):
                raise WorkspaceError(f"{where}.config.parameters[{pname!r}]",
                                     f"cannot write the fixed {mtype} parameter {pname!r}: per-bin parameters "
                                     "cannot be set constant in HistFactory XML as pyhf reads it")
            rootname = "Lumi" if pname == "lumi" else _PREFIXES.get(mtype, "") + pname
            if "inits" in par and mtype != "normfactor":  # XML's ParamSetting Val keeps the fixed value
                with_value.setdefault(str(par["inits"][0]), []).append(rootname)
            else:
                fixed.append(rootname)
        elem = ET.Element("Measurement", Name=meas["name"], Lumi=str(lumi), LumiRelErr=str(lumierr),
                          ExportOnly=str(True))
        poi = ET.Element("POI")
        poi.text = meas["config"]["poi"]
        elem.append(poi)
        if fixed:
            setting = ET.Element("ParamSetting", Const="True")
            setting.text = " ".join(fixed)
            elem.append(setting)
        for val, names in with_value.items():
            setting = ET.Element("ParamSetting", Const="True", Val=val)
            setting.text = " ".join(names)
            elem.append(setting)
        return elem


def _check_filename(name: str, where: str) -> None:
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise WorkspaceError(where, f"the name {name!r} cannot be part of a file name")


def write_xml(spec: Any, output_dir: str | os.PathLike = ".", *, specroot: str = "config",
              dataroot: str = "data", resultprefix: str = "FitConfig",
              patches: Sequence[Any] | None = None) -> XmlExport:
    """Write a pyhf JSON workspace as HistFactory XML + ROOT histograms (``pyhf json2xml``).

    The files and their text are those of pyhf 0.7.6's ``pyhf json2xml`` with the same
    options (see the module docstring for the differences): ``<output_dir>/<resultprefix>.xml``
    lists ``<output_dir>/<specroot>/<resultprefix>_<channel>.xml``, whose histograms are in
    ``<output_dir>/<dataroot>/data.root`` (TH1D with edges 0, 1, ..., n). As in pyhf, the
    paths in ``<Input>`` are relative to the current directory (read them back with
    ``rootdir="."`` from there) and ``InputFile`` is absolute. Each file is written
    atomically; nothing is written when the workspace is refused.

    Args:
        spec: workspace (``dict``, JSON text or path). output_dir: existing or new folder.
        specroot, dataroot: sub-folders of the channel XMLs and of ``data.root``.
        resultprefix: file name prefix (and ``OutputFilePrefix``).
        patches: JSON Patches applied first (:func:`nextstat.workspace.apply_patches`).

    Returns:
        :class:`XmlExport` naming the files written.

    Raises:
        WorkspaceError: a malformed workspace or one the XML cannot hold (module docstring).
    """
    from nextstat.cli import atomic_output, write_atomic

    spec = wsmod.apply_patches(wsmod.load(spec), patches)
    wsmod.validate(spec)
    for part in (specroot, dataroot, resultprefix):
        _check_filename(part, "output file names")
    for i, ch in enumerate(spec["channels"]):
        _check_filename(ch["name"], f"channels[{i}].name")
    out = Path(output_dir)
    specdir, datadir = out / specroot, out / dataroot
    import fsspec.core  # uproot's file system layer: the data file's name as uproot gives it to pyhf

    rootfile = fsspec.core.url_to_fs(str(datadir / "data.root"))[1]
    writer = _Writer(spec, rootfile)
    combination = ET.Element("Combination", OutputFilePrefix=str(specdir / resultprefix))
    channel_files: list[tuple[Path, bytes]] = []
    for ch in spec["channels"]:
        path = specdir / f"{resultprefix}_{ch['name']}.xml"
        elem = writer.channel(ch, spec.get("observations"))
        _indent(elem)
        text = b"<!DOCTYPE Channel SYSTEM '../HistFactorySchema.dtd'>\n\n" + ET.tostring(elem, encoding="utf-8")
        channel_files.append((path, text))
        inp = ET.Element("Input")
        inp.text = str(path)
        combination.append(inp)
    for meas in spec["measurements"]:
        combination.append(writer.measurement(meas))
    _indent(combination)
    top = b"<!DOCTYPE Combination  SYSTEM 'HistFactorySchema.dtd'>\n\n" + ET.tostring(combination, encoding="utf-8")

    uproot = _uproot()
    import numpy as np

    specdir.mkdir(parents=True, exist_ok=True)
    datadir.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "HistFactorySchema.dtd", HISTFACTORY_DTD)
    with atomic_output(datadir / "data.root") as tmp, uproot.recreate(tmp) as f:
        f.update({name: uproot.to_writable((np.asarray(values, dtype=float), np.arange(len(values) + 1)))
                  for name, values in writer.hists.items()})
    for path, text in channel_files:
        _write_bytes(path, text)
    _write_bytes(out / f"{resultprefix}.xml", top)
    return XmlExport(combination=out / f"{resultprefix}.xml", channels=tuple(p for p, _ in channel_files),
                     data=datadir / "data.root", dtd=out / "HistFactorySchema.dtd")


def _write_bytes(path: Path, data: bytes) -> None:
    from nextstat.cli import atomic_output

    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
