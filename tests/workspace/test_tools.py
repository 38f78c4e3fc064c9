"""nextstat.workspace's pyhf tooling (inspect, prune, rename, combine, sorted, digest, patchsets)
and the pyhf objects from_pyhf accepts, compared live with pyhf 0.7.6's Python API.

Results are compared as JSON documents (``json.dumps(..., sort_keys=True)`` equality); where
pyhf refuses an input, NextStat must refuse it too (WorkspaceError / ValueError / TypeError).
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import nextstat
from nextstat import examples, testing
from nextstat import workspace as wsmod
from nextstat.errors import WorkspaceError

from conftest import all_modifiers_workspace, needs_workspaces

pyhf = pytest.importorskip("pyhf")


def as_json(doc) -> str:
    return json.dumps(dict(doc) if isinstance(doc, dict) else doc, sort_keys=True)


def assert_same(ours, theirs) -> None:
    assert isinstance(ours, dict) and type(ours) is dict  # a plain dict, never a pyhf object
    assert as_json(ours) == as_json(theirs)


def two_measurements(ws: dict) -> dict:
    ws = copy.deepcopy(ws)
    second = copy.deepcopy(ws["measurements"][0])
    second["name"] = "alt"
    second["config"]["parameters"] = [p for p in second["config"]["parameters"] if p["name"] != "lumi"] + \
        [{"name": "lumi", "auxdata": [1.0], "sigmas": [0.05], "bounds": [[0.5, 1.5]], "inits": [1.0]}]
    ws["measurements"].append(second)
    return ws


GENERATED = {
    "simple": examples.simple_workspace,
    "allmods0": lambda: two_measurements(all_modifiers_workspace(0)),
    "allmods7": lambda: all_modifiers_workspace(7, n_sr=4, n_cr=1),
}


@pytest.fixture(params=sorted(GENERATED))
def ws(request) -> dict:
    return GENERATED[request.param]()


def both_refuse(ours, theirs) -> None:
    with pytest.raises((ValueError, TypeError)):
        ours()
    with pytest.raises(Exception):
        theirs()


# --------------------------------------------------------------------------- prune / rename

def test_prune_each_component_like_pyhf(ws):
    before = copy.deepcopy(ws)
    pws = pyhf.Workspace(ws)
    cases = [{"channels": [c]} for c in pws.channels[:1]]
    cases += [{"samples": [s]} for s in pws.samples]
    cases += [{"modifiers": [m]} for m, _ in pws.modifiers]
    cases += [{"modifier_types": [t]} for t in sorted({t for _, t in pws.modifiers})]
    cases += [{"measurements": pws.measurement_names[1:]},
              {"modifiers": ["lumi", "mu"] if "mu" in dict(pws.modifiers) else ["lumi"],
               "modifier_types": ["staterror"], "samples": pws.samples[-1:]}]
    for kwargs in cases:
        try:
            theirs = pws.prune(**kwargs)
        except pyhf.exceptions.InvalidWorkspaceOperation:
            # pyhf 0.7.6 looks types up in dict(Workspace.modifiers), which keeps one type per
            # name: a type whose every modifier shares its name with another type (histosys
            # "jes" next to normsys "jes") is "not in the workspace". NextStat prunes it.
            (mtype,) = kwargs["modifier_types"]
            assert mtype in {t for _, t in pws.modifiers}
            theirs = json.loads(json.dumps(dict(pws.prune())))
            for c in theirs["channels"]:
                for smp in c["samples"]:
                    smp["modifiers"] = [m for m in smp["modifiers"] if m["type"] != mtype]
        except pyhf.exceptions.InvalidSpecification:  # e.g. a channel left without samples
            with pytest.raises(WorkspaceError, match="pruned workspace would not be valid"):
                wsmod.prune(ws, **kwargs)
            continue
        assert_same(wsmod.prune(ws, **kwargs), theirs)
    assert ws == before  # the input is not modified


def test_prune_refuses_unknown_names_like_pyhf(ws):
    pws = pyhf.Workspace(ws)
    for key, bad in [("channels", "nope"), ("samples", "nope"), ("modifiers", "nope"),
                     ("measurements", "nope"), ("modifier_types", "shapefactor" if "shapefactor" not in
                                                  {t for _, t in pws.modifiers} else "nope")]:
        with pytest.raises(ValueError, match=f"^{key}: "):
            wsmod.prune(ws, **{key: [bad]})
        with pytest.raises(pyhf.exceptions.InvalidWorkspaceOperation):
            pws.prune(**{key: [bad]})
    with pytest.raises(TypeError, match="^channels: expected a list"):
        wsmod.prune(ws, channels="SR")


def test_rename_like_pyhf(ws):
    pws = pyhf.Workspace(ws)
    mods = sorted(dict(pws.modifiers))
    kwargs = {"channels": {pws.channels[0]: "renamed_channel"},
              "samples": {pws.samples[0]: "renamed_sample", pws.samples[-1]: "other"},
              "modifiers": {mods[0]: "renamed_mod", ws["measurements"][0]["config"]["poi"]: "new_poi"},
              "measurements": {pws.measurement_names[0]: "renamed_meas"}}
    ours = wsmod.rename(ws, **kwargs)
    assert_same(ours, pws.rename(**kwargs))
    assert ours["measurements"][0]["config"]["poi"] == "new_poi"
    for key in kwargs:
        assert_same(wsmod.rename(ws, **{key: kwargs[key]}), pws.rename(**{key: kwargs[key]}))
    with pytest.raises(ValueError, match="^samples: 'nope' is not one of the samples"):
        wsmod.rename(ws, samples={"nope": "x"})
    with pytest.raises(TypeError, match="^modifiers: expected a dict"):
        wsmod.rename(ws, modifiers=["a"])


# --------------------------------------------------------------------------- sorted / digest

def test_sorted_like_pyhf(ws):
    rng = np.random.default_rng(5)
    shuffled = copy.deepcopy(ws)
    for key in ("channels", "observations", "measurements"):
        rng.shuffle(shuffled[key])
    for ch in shuffled["channels"]:
        rng.shuffle(ch["samples"])
        for s in ch["samples"]:
            rng.shuffle(s["modifiers"])
    for m in shuffled["measurements"]:
        rng.shuffle(m["config"]["parameters"])
    ours = wsmod.sorted(shuffled)
    assert_same(ours, pyhf.Workspace.sorted(pyhf.Workspace(shuffled)))
    assert [c["name"] for c in ours["channels"]] == sorted(c["name"] for c in ws["channels"])


@pytest.mark.parametrize("algorithm", ["sha256", "md5", "sha1", "sha512", "blake2b"])
def test_digest_like_pyhf(ws, algorithm):
    assert wsmod.digest(ws, algorithm) == pyhf.utils.digest(pyhf.Workspace(ws), algorithm=algorithm)


def test_digest_of_files_and_bad_algorithms(tmp_path):
    ws = examples.simple_workspace()
    gz = tmp_path / "ws.json.gz"
    gz.write_bytes(gzip.compress(json.dumps(ws).encode()))
    expected = pyhf.utils.digest(ws)
    assert wsmod.digest(examples.path()) == wsmod.digest(gz) == wsmod.digest(json.dumps(ws)) == expected
    for bad in ("sha3", "shake_128", "new", 5):
        with pytest.raises(ValueError, match="^algorithm: "):
            wsmod.digest(ws, bad)


# --------------------------------------------------------------------------- inspect

def pyhf_inspect(ws: dict) -> dict:
    """What ``pyhf inspect --output-file`` writes (pyhf's CLI code, in-process)."""
    from click.testing import CliRunner
    from pyhf.cli.spec import inspect as pyhf_inspect_cmd

    with CliRunner().isolated_filesystem():
        Path("ws.json").write_text(json.dumps(ws))
        result = CliRunner().invoke(pyhf_inspect_cmd, ["ws.json", "--output-file", "out.json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(Path("out.json").read_text())


def test_inspect_like_pyhf(ws):
    assert as_json(wsmod.inspect(ws)) == as_json(pyhf_inspect(ws))


def test_inspect_refuses_incompatible_constraints():
    ws = examples.simple_workspace()
    ws["channels"][0]["samples"][0]["modifiers"].append({"name": "ttbar_norm", "type": "normsys",
                                                         "data": {"hi": 1.1, "lo": 0.9}})
    with pytest.raises(WorkspaceError, match="'ttbar_norm' is used by modifiers of types"):
        wsmod.inspect(ws)


# --------------------------------------------------------------------------- combine

def _pair(kind: str) -> tuple[dict, dict]:
    base = examples.simple_workspace()
    if kind == "disjoint":
        other = wsmod.rename(base, channels={"SR": "SR2", "CR": "CR2"}, measurements={"Measurement": "M2"})
        return base, other
    if kind == "shared":  # the same CR, the same measurement
        return base, wsmod.prune(base, channels=["SR"])
    if kind == "conflict":  # CR of the same name, other contents; measurement with other configs
        other = wsmod.prune(base, channels=["SR"])
        other["channels"][0]["samples"][0]["data"] = [x * 1.1 for x in other["channels"][0]["samples"][0]["data"]]
        other["measurements"][0]["config"]["parameters"].append({"name": "jes", "bounds": [[-3.0, 3.0]]})
        return base, other
    if kind == "clash":  # same parameter configured differently
        other = wsmod.prune(base, channels=["SR"])
        other["measurements"][0]["config"]["parameters"][1]["bounds"] = [[0.0, 9.0]]
        return base, other
    if kind == "poi":
        other = wsmod.prune(base, channels=["SR"])
        other["measurements"][0]["config"]["poi"] = "ttbar_norm"
        return base, other
    if kind == "merge":  # SR on both sides with different samples
        left = wsmod.prune(base, samples=["wjets"])
        right = wsmod.prune(base, samples=["signal"])
        right["channels"][1]["samples"][0]["data"] = [x + 1 for x in right["channels"][1]["samples"][0]["data"]]
        return left, right
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["disjoint", "shared", "conflict", "clash", "poi", "merge"])
@pytest.mark.parametrize("join", wsmod.JOINS)
@pytest.mark.parametrize("merge", [False, True])
def test_combine_like_pyhf(kind, join, merge, caplog):
    left, right = _pair(kind)
    try:
        theirs = pyhf.Workspace.combine(pyhf.Workspace(left), pyhf.Workspace(right), join=join, merge_channels=merge)
    except (pyhf.exceptions.InvalidWorkspaceOperation, pyhf.exceptions.InvalidSpecification, ValueError):
        with pytest.raises((WorkspaceError, ValueError)):
            wsmod.combine(left, right, join=join, merge_channels=merge)
        return
    assert_same(wsmod.combine(left, right, join=join, merge_channels=merge), theirs)
    if join in ("left outer", "right outer"):
        assert "unsafe" in caplog.text


def test_combine_arguments():
    ws = examples.simple_workspace()
    with pytest.raises(ValueError, match="^join: expected one of"):
        wsmod.combine(ws, ws, join="inner")
    with pytest.raises(ValueError, match="^merge_channels: "):
        wsmod.combine(ws, ws, merge_channels=True)
    with pytest.raises(WorkspaceError, match="^channels: the workspaces have channels with the same names"):
        wsmod.combine(ws, ws)


def test_schema_refusals_like_pyhf():
    good = examples.simple_workspace()
    bad_cases = []
    for mutate in (lambda w: w.pop("version"), lambda w: w.__setitem__("extra", 1),
                   lambda w: w["channels"][0]["samples"][0].__setitem__("data", []),
                   lambda w: w["channels"][0]["samples"][0]["modifiers"][0].__setitem__("type", "magic"),
                   lambda w: w["measurements"][0]["config"].pop("poi"),
                   lambda w: w["observations"].clear(),
                   lambda w: w["channels"][0]["samples"][0]["modifiers"].append({"name": "x", "type": "lumi", "data": None})):
        w = copy.deepcopy(good)
        mutate(w)
        bad_cases.append(w)
    for w in bad_cases:
        with pytest.raises(pyhf.exceptions.InvalidSpecification):
            pyhf.Workspace(w)
        with pytest.raises(WorkspaceError):
            wsmod.sorted(w)


# --------------------------------------------------------------------------- patchsets

def make_patchset(bkg: dict, patches: dict[str, list], labels=("m1", "m2", "m3")) -> dict:
    """A pyhf patchset of ``patches`` (name -> JSON Patch) for ``bkg``; values from the name."""
    def values(name: str) -> list:
        parts = name.split("_")[1:]
        return [float(p) if p.replace(".", "").isdigit() else p for p in parts][:len(labels)]

    return {"metadata": {"description": "test patchset", "references": {"hepdata": "ins1748602"},
                         "digests": {"sha256": pyhf.utils.digest(bkg), "md5": pyhf.utils.digest(bkg, "md5")},
                         "labels": list(labels)},
            "patches": [{"metadata": {"name": n, "values": values(n)}, "patch": p} for n, p in patches.items()],
            "version": "1.0.0"}


def simple_patchset() -> tuple[dict, dict]:
    bkg = wsmod.prune(examples.simple_workspace(), samples=["signal"])
    signal = examples.simple_workspace()["channels"][0]["samples"][0]  # SR signal
    assert signal["name"] == "signal"
    patches = {}
    for k, scale in enumerate((0.5, 1.0, 2.0)):
        s = copy.deepcopy(signal)
        s["data"] = [x * scale for x in s["data"]]
        patches[f"sig_{k}_{k + 1}_{k + 2}"] = [{"op": "add", "path": "/channels/0/samples/0", "value": s}]
    return bkg, make_patchset(bkg, patches)


def sbottom_patchset(n: int = 2) -> tuple[dict, dict]:
    bkg = testing.sbottom("RegionA")
    names = testing.sbottom_patch_names("RegionA")[:n]
    return bkg, make_patchset(bkg, {n.removeprefix("patch.").removesuffix(".json"): testing.sbottom_patch("RegionA", n)
                                    for n in names})


PATCHSETS = [simple_patchset, pytest.param(sbottom_patchset, marks=needs_workspaces)]


@pytest.mark.parametrize("make", PATCHSETS)
def test_patchset_like_pyhf(make, tmp_path):
    bkg, ps = make()
    pps = pyhf.PatchSet(ps)
    pws = pyhf.Workspace(bkg)
    file = tmp_path / "patchset.json"
    file.write_text(json.dumps(ps))
    assert [p["name"] for p in wsmod.inspect_patchset(file)["patches"]] == [p.name for p in pps]
    wsmod.verify_patchset(bkg, pps)
    pps.verify(pws)
    for patch in pps:
        assert wsmod.extract_patch(ps, patch.name) == patch.patch
        assert wsmod.extract_patch(pps, list(patch.values)) == patch.patch
        with_meta = wsmod.extract_patch(file, patch.name, with_metadata=True)
        assert with_meta == {"metadata": {**patch.metadata, **pps.metadata}, "patch": patch.patch}
        patched = pps.apply(pws, patch.name)
        assert_same(wsmod.apply_patchset(bkg, ps, patch.name), patched)
        # from_pyhf: the patchset (object, dict or file) with a patch name, and the Patch object
        m_obj = nextstat.from_pyhf(bkg, patches=pps, patch_name=patch.name)
        m_file = nextstat.from_pyhf(bkg, patches=file, patch_name=patch.name)
        m_patch = nextstat.from_pyhf(pws, patches=[patch])
        pm = patched.model()
        data = patched.data(pm)
        p = np.asarray(pm.config.suggested_init())
        ref = -float(pm.logpdf(p, data)[0])
        for m in (m_obj, m_file, m_patch):
            assert m.poi_name == pm.config.poi_name and m.parameter_names == pm.config.par_names
            assert m.nll(p) == pytest.approx(ref, rel=1e-12)


def test_patchset_refusals():
    bkg, ps = simple_patchset()
    other = examples.simple_workspace()
    with pytest.raises(WorkspaceError, match=r"^metadata\.digests\.\w+: the patchset was made for another"):
        wsmod.verify_patchset(other, ps)
    with pytest.raises(pyhf.exceptions.PatchSetVerificationError):
        pyhf.PatchSet(ps).verify(pyhf.Workspace(other))
    with pytest.raises(WorkspaceError, match="made for another"):
        nextstat.from_pyhf(other, patches=ps, patch_name="sig_0_1_2")
    with pytest.raises(ValueError, match="^name: no patch 'nope'"):
        wsmod.extract_patch(ps, "nope")
    with pytest.raises(WorkspaceError, match="^patches: a pyhf patchset holds 3 patches: choose one with patch_name"):
        nextstat.from_pyhf(bkg, patches=pyhf.PatchSet(ps))
    with pytest.raises(WorkspaceError, match="patch_name"):
        nextstat.from_pyhf(bkg, patches=ps)
    with pytest.raises(ValueError, match="^patch_name: pass the patchset"):
        nextstat.from_pyhf(bkg, patch_name="sig_0_1_2")
    for mutate, field in [(lambda d: d["patches"].append(copy.deepcopy(d["patches"][0])), r"patches\[3\]\.metadata\.name"),
                          (lambda d: d["patches"][0]["metadata"]["values"].pop(), r"patches\[0\]\.metadata\.values"),
                          (lambda d: d["metadata"].pop("labels"), r"metadata\.labels"),
                          (lambda d: d["metadata"]["digests"].__setitem__("sha1", "ab"), r"metadata\.digests"),
                          (lambda d: d["patches"][0]["patch"][0].pop("value"), r"patches\[0\]\.patch\[0\]\.value"),
                          (lambda d: d["patches"][1]["patch"][0].__setitem__("path", "channels/0"),
                           r"patches\[1\]\.patch\[0\]\.path: expected a JSON Pointer"),
                          (lambda d: d["patches"][2]["patch"][0].__setitem__("path", "/channels/0~2"),
                           r"patches\[2\]\.patch\[0\]\.path: expected a JSON Pointer")]:
        bad = copy.deepcopy(ps)
        mutate(bad)
        with pytest.raises(WorkspaceError, match=f"^{field}"):
            wsmod.load_patchset(bad)
        with pytest.raises(Exception):
            pyhf.PatchSet(bad)
    for pointer in ("", "/", "/channels/0/samples/-", "/a~0b~1c"):  # valid JSON Pointers: both accept
        good = copy.deepcopy(ps)
        good["patches"][0]["patch"][0]["path"] = pointer
        pyhf.PatchSet(good)
        wsmod.load_patchset(good)


# --------------------------------------------------------------------------- from_pyhf on pyhf objects

def test_from_pyhf_workspace_and_model_objects(all_mods_ws):
    pws = pyhf.Workspace(all_mods_ws)
    rng = np.random.default_rng(2)
    for kwargs in [{}, {"poi_name": None}, {"poi_name": "bkg1_norm"},
                   {"modifier_settings": {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}}]:
        pm = pws.model(**kwargs)
        data = pws.data(pm)
        ours = [nextstat.from_pyhf(pws, **kwargs),
                nextstat.from_pyhf(pm, data=data),
                nextstat.from_pyhf(pm, data=pws.data(pm, include_auxdata=False))]
        lo, hi = np.asarray(pm.config.suggested_bounds()).T
        points = [np.asarray(pm.config.suggested_init())] + [rng.uniform(np.maximum(lo, -2), np.minimum(hi, 3)) for _ in range(2)]
        for m in ours:
            assert m.poi_name == pm.config.poi_name and m.poi_index == pm.config.poi_index
            assert m.parameter_names == pm.config.par_names
            assert m.modifier_settings == {**{"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}},
                                           **kwargs.get("modifier_settings", {})}
            for p in points:
                assert m.nll(p) == pytest.approx(-float(pm.logpdf(p, data)[0]), rel=1e-11)


def test_from_pyhf_model_refusals(all_mods_ws):
    pws = pyhf.Workspace(all_mods_ws)
    pm = pws.model()
    data = np.asarray(pws.data(pm))
    with pytest.raises(ValueError, match="^data: a pyhf.Model carries no observed data"):
        nextstat.from_pyhf(pm)
    with pytest.raises(ValueError, match=r"^data: expected shape"):
        nextstat.from_pyhf(pm, data=data[:-1])
    bad = data.copy()
    bad[-1] += 0.5
    with pytest.raises(ValueError, match="^data: auxiliary data other than the model's"):
        nextstat.from_pyhf(pm, data=bad)
    with pytest.raises(ValueError, match="^measurement: a pyhf.Model"):
        nextstat.from_pyhf(pm, data=data, measurement="meas")
    with pytest.raises(ValueError, match="^data: only for a pyhf.Model"):
        nextstat.from_pyhf(all_mods_ws, data=data)


def _published_tools(ws: dict) -> None:
    pws = pyhf.Workspace(ws)
    assert wsmod.digest(ws) == pyhf.utils.digest(pws)
    assert_same(wsmod.sorted(ws), pyhf.Workspace.sorted(pws))
    types = [t for t in ("shapesys", "staterror", "lumi") if t in {t for _, t in pws.modifiers}]
    assert_same(wsmod.prune(ws, modifier_types=types), pws.prune(modifier_types=types))
    chan = pws.channels[0]
    assert_same(wsmod.rename(ws, channels={chan: "X"}), pws.rename(channels={chan: "X"}))
    assert_same(wsmod.combine(ws, wsmod.prune(ws, channels=[chan]), join="outer"),
                pyhf.Workspace.combine(pws, pws.prune(channels=[chan]), join="outer"))


@needs_workspaces
def test_tools_on_published_workspaces():
    for ws in (testing.erjr(), testing.sbottom("RegionB")):
        _published_tools(ws)


@pytest.mark.slow
@needs_workspaces
def test_tools_on_tttt():  # pyhf takes ~4 s to validate this workspace at each step
    tttt = testing.tttt()
    _published_tools(tttt)
    assert as_json(wsmod.inspect(tttt)) == as_json(pyhf_inspect(tttt))
