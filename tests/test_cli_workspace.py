"""pyhf's workspace commands and output layouts, compared live with pyhf 0.7.6's CLI.

Each case is a pyhf command line; ``nextstat`` runs it with ``pyhf`` replaced (in-process,
``CliRunner``) and must print (or write with ``--output-file``) the same document: the same text
for ``inspect``, ``digest`` and ``patchset inspect|verify``, equal JSON for the workspace and patch
documents, and numbers within the fits' tolerance for ``fit`` and ``cls``. pyhf runs its own CLI
code (``pyhf.cli.cli``) in one subprocess for all cases (one interpreter start instead of one per
command); ``test_pyhf_script`` checks the installed ``pyhf`` script once. Where pyhf refuses an
input, ``nextstat`` exits 1 with one line ``Error: ...``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nextstat import cli, examples, testing
from nextstat import workspace as wsmod

from conftest import needs_workspaces

pytest.importorskip("pyhf")
PYHF_SCRIPT = Path(sys.executable).with_name("pyhf")

DRIVER = r"""
import contextlib, io, json, logging, sys
logging.disable(logging.CRITICAL)
from pyhf.cli import cli
cases = json.load(open(sys.argv[1]))
out = {}
for key, args in cases.items():
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            cli.main(args, prog_name="pyhf", standalone_mode=False)
        rc = 0
    except SystemExit as exc:
        rc = exc.code or 0
    except Exception as exc:
        rc, buf = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
    out[key] = {"rc": rc, "stdout": buf.getvalue()}
json.dump(out, open(sys.argv[2], "w"))
"""

# key: (pyhf command line with {file} placeholders, how to compare)
CASES = {
    "inspect": ("inspect {simple}", "text"),
    "inspect_file": ("inspect {simple} --output-file {out}", "file"),
    "inspect_2meas": ("inspect {twomeas}", "text"),
    "prune_channel": ("prune {simple} -c CR", "json"),
    "prune_mixed": ("prune {simple} -s wjets -m jes -t staterror -t lumi", "json"),
    "prune_measurement": ("prune {twomeas} --measurement alt --output-file {out}", "file"),
    "rename": ("rename {simple} -c SR signal_region -s ttbar top -m mu mu_sig --measurement Measurement meas", "json"),
    "sort": ("sort {shuffled}", "json"),
    "sort_file": ("sort {shuffled} --output-file {out}", "file"),
    "digest": ("digest {simple}", "text"),
    "digest_many": ("digest {simple} -a sha256 -a md5 -a sha1", "text"),
    "digest_json": ("digest {simple} -j -a md5", "text"),
    "combine_none": ("combine {simple} {renamed}", "json"),
    "combine_outer": ("combine {simple} {cr_only} --join outer", "json"),
    "combine_left": ("combine {simple} {cr_changed} -j 'left outer'", "json"),
    "combine_right": ("combine {simple} {cr_changed} -j 'right outer' --output-file {out}", "file"),
    "combine_merge": ("combine {no_wjets} {no_signal} -j 'left outer' --merge-channels", "json"),
    "patchset_inspect": ("patchset inspect {ps}", "text"),
    "patchset_extract": ("patchset extract {ps} --name sig_1", "json"),
    "patchset_extract_meta": ("patchset extract {ps} --name sig_2 --with-metadata --output-file {out}", "file"),
    "patchset_apply": ("patchset apply {bkg} {ps} --name sig_2", "json"),
    "patchset_verify": ("patchset verify {bkg} {ps}", "text"),
    "fit": ("fit {simple} --value", "fit"),
    "cls": ("cls {simple}", "cls"),
    "cls_q": ("cls {simple} --test-poi 0.5 --test-stat q --backend numpy --optimizer scipy", "cls"),
    "cls_patched": ("cls {bkg} -p {patch} --test-poi 2.0 --output-file {out}", "cls_file"),
    # refusals
    "bad_prune": ("prune {simple} -c nope", "error"),
    "bad_combine": ("combine {simple} {simple}", "error"),
    "bad_verify": ("patchset verify {simple} {ps}", "error"),
    "bad_extract": ("patchset extract {ps} --name nope", "error"),
    "bad_schema": ("sort {noversion}", "error"),
}
PUBLISHED = {
    "pub_inspect": ("inspect {erjr_patched}", "text"),
    "pub_digest": ("digest {sbottom} -a sha256 -a md5", "text"),
    "pub_patchset_apply": ("patchset apply {sbottom} {sbottom_ps} --name sbottom_1300_205_60", "json"),
    "pub_cls": ("cls {sbottom} -p {sbottom_patch}", "cls"),
    "pub_fit": ("fit {sbottom} -p {sbottom_patch} --value", "fit"),  # pyhf stalls on eRJR (SLSQP)
}


def _patchset(bkg: dict, patches: dict) -> dict:
    return {"metadata": {"description": "signal grid", "references": {"hepdata": "ins1748602"},
                         "digests": {"sha256": wsmod.digest(bkg), "md5": wsmod.digest(bkg, "md5")},
                         "labels": ["point"]},
            "patches": [{"metadata": {"name": n, "values": [i]}, "patch": p} for i, (n, p) in enumerate(patches.items())],
            "version": "1.0.0"}


def _inputs() -> dict[str, object]:
    ws = examples.simple_workspace()
    twomeas = json.loads(json.dumps(ws))
    twomeas["measurements"].append({"name": "alt", "config": {"poi": "ttbar_norm", "parameters": [
        {"name": "lumi", "auxdata": [1.0], "sigmas": [0.05], "bounds": [[0.5, 1.5]], "inits": [1.0]}]}})
    shuffled = json.loads(json.dumps(ws))
    shuffled["channels"].reverse()
    for ch in shuffled["channels"]:
        ch["samples"].reverse()
        for s in ch["samples"]:
            s["modifiers"].reverse()
    shuffled["observations"].reverse()
    cr_changed = wsmod.prune(ws, channels=["SR"])
    cr_changed["channels"][0]["samples"][0]["data"][0] += 3.0
    no_signal = wsmod.prune(ws, samples=["signal"])
    signal = ws["channels"][0]["samples"][0]
    patches = {f"sig_{k}": [{"op": "add", "path": "/channels/0/samples/0",
                             "value": {**signal, "data": [x * k for x in signal["data"]]}}] for k in (1, 2, 3)}
    noversion = json.loads(json.dumps(ws))
    del noversion["version"]
    inputs = {"simple": ws, "twomeas": twomeas, "shuffled": shuffled, "cr_only": wsmod.prune(ws, channels=["SR"]),
              "renamed": wsmod.rename(ws, channels={"SR": "SR2", "CR": "CR2"}, measurements={"Measurement": "M2"}),
              "cr_changed": cr_changed, "no_wjets": wsmod.prune(ws, samples=["wjets"]), "no_signal": no_signal,
              "bkg": no_signal, "ps": _patchset(no_signal, patches), "patch": patches["sig_2"], "noversion": noversion}
    if testing.have_workspaces():
        sbottom = testing.sbottom("RegionA")
        name = "patch.sbottom_1300_205_60.json"
        erjr_patch = testing.erjr_patch_names()[0]
        inputs.update(sbottom=sbottom, sbottom_patch=testing.sbottom_patch("RegionA", name),
                      sbottom_ps=_patchset(sbottom, {"sbottom_1300_205_60": testing.sbottom_patch("RegionA", name)}),
                      erjr_patched=wsmod.apply_patches(testing.erjr(), [testing.erjr_patch(erjr_patch)]))
    return inputs


def _command(template: str, files: dict[str, Path], out: Path) -> list[str]:
    import shlex

    return shlex.split(template.format(out=out, **{k: str(v) for k, v in files.items()}))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("cli_workspace")
    files = {}
    for key, doc in _inputs().items():
        files[key] = base / f"{key}.json"
        files[key].write_text(json.dumps(doc))
    cases = dict(CASES)
    if testing.have_workspaces():
        cases.update(PUBLISHED)
    pyhf_args = {k: _command(t, files, base / f"pyhf_{k}.json") for k, (t, _) in cases.items()}
    (base / "cases.json").write_text(json.dumps(pyhf_args))
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(base / "cases.json"), str(base / "results.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"base": base, "files": files, "pyhf": json.loads((base / "results.json").read_text())}


def _numbers(doc: object) -> list[float]:
    if isinstance(doc, dict):
        return [x for k in sorted(doc) for x in _numbers(doc[k])]
    if isinstance(doc, list):
        return [x for v in doc for x in _numbers(v)]
    return [float(doc)]


def _keys(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: _keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_keys(v) for v in doc]
    return None


def _check(key: str, template: str, how: str, setup: dict) -> None:
    theirs = setup["pyhf"][key]
    out = setup["base"] / f"nextstat_{key}.json"
    args = _command(template, setup["files"], out)
    if args[0] == "fit":
        args.append("--pyhf")
    result = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    if how == "error":
        assert theirs["rc"] != 0, theirs
        assert result.exit_code == 1, (result.exit_code, result.output)
        assert result.stdout == "" and result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
        return
    assert theirs["rc"] == 0, theirs["stdout"]
    assert result.exit_code == 0, result.output
    pyhf_file = setup["base"] / f"pyhf_{key}.json"
    if how == "text":
        assert result.stdout == theirs["stdout"]
    elif how == "json":
        assert json.loads(result.stdout) == json.loads(theirs["stdout"])
        assert result.stdout == theirs["stdout"]  # the same layout: indent 4, sorted keys
    elif how == "file":
        assert json.loads(out.read_text()) == json.loads(pyhf_file.read_text())
        assert result.stdout == theirs["stdout"]
    elif how in ("fit", "cls", "cls_file"):
        ours = json.loads(out.read_text() if how == "cls_file" else result.stdout)
        ref = json.loads(pyhf_file.read_text() if how == "cls_file" else theirs["stdout"])
        assert _keys(ours) == _keys(ref)
        got, exp = _numbers(ours), _numbers(ref)
        if how == "fit":  # best-fit values (pyhf's SLSQP stops ~1e-4 short), twice_nll
            assert ours["twice_nll"] == pytest.approx(ref["twice_nll"], rel=1e-6, abs=1e-6)
            assert ours["twice_nll"] <= ref["twice_nll"] + 1e-6
            assert got == pytest.approx(exp, abs=5e-3)
        else:
            assert got == pytest.approx(exp, rel=2e-4, abs=1e-6)
    else:  # pragma: no cover
        raise AssertionError(how)


@pytest.mark.parametrize("key", sorted(CASES))
def test_like_pyhf(key, setup):
    _check(key, *CASES[key], setup)


@needs_workspaces
@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_published_like_pyhf(key, setup):
    _check(key, *PUBLISHED[key], setup)


def test_pyhf_script(setup, tmp_path):
    """The installed ``pyhf`` script itself, once: ``digest`` of the example."""
    if not PYHF_SCRIPT.exists():
        pytest.skip("no pyhf script next to the interpreter")
    proc = subprocess.run([str(PYHF_SCRIPT), "digest", str(examples.path())], capture_output=True, text=True, timeout=120)
    result = CliRunner().invoke(cli.main, ["digest", str(examples.path())], catch_exceptions=False)
    assert proc.returncode == 0 and result.stdout == proc.stdout


def test_stdin_and_usage_errors(setup):
    simple = setup["files"]["simple"]
    text = simple.read_text()
    piped = CliRunner().invoke(cli.main, ["sort"], input=text, catch_exceptions=False)
    assert piped.exit_code == 0 and json.loads(piped.stdout) == wsmod.sorted(json.loads(text))
    for args in (["prune", str(simple), "-t", "magic"], ["inspect", "missing.json"],
                 ["patchset", "extract", str(setup["files"]["ps"])], ["inspect", str(simple), "--measurement", "nope"],
                 ["cls", str(simple), "--optconf", "novalue"]):
        result = CliRunner().invoke(cli.main, args, input="", catch_exceptions=False)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: ")


def test_patch_name_applies_a_patchset_entry(setup):
    """`-p PATCHSET --patch-name NAME` applies that patch (digests verified): the CLs of pyhf's
    `cls BKG -p PATCH` for the same patch; a patchset without --patch-name, --patch-name without
    exactly one --patch, and a patchset made for another workspace are refused."""
    files = setup["files"]
    out = setup["base"] / "nextstat_cls_patch_name.json"
    args = ["cls", str(files["bkg"]), "-p", str(files["ps"]), "--patch-name", "sig_2", "--test-poi", "2.0",
            "--output-file", str(out)]
    result = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert setup["pyhf"]["cls_patched"]["rc"] == 0  # pyhf cls {bkg} -p {patch} (sig_2) --test-poi 2.0
    ref = json.loads((setup["base"] / "pyhf_cls_patched.json").read_text())
    ours = json.loads(out.read_text())
    assert _keys(ours) == _keys(ref)
    assert _numbers(ours) == pytest.approx(_numbers(ref), rel=2e-4, abs=1e-6)
    for bad, code, fragment in ((["cls", str(files["bkg"]), "-p", str(files["ps"])], 1, "--patch-name"),
                                (["cls", str(files["bkg"]), "--patch-name", "sig_2"], 2, "exactly one --patch"),
                                (["cls", str(files["simple"]), "-p", str(files["ps"]), "--patch-name", "sig_2"], 1,
                                 "metadata.digests.sha256"),
                                (["cls", str(files["bkg"]), "-p", str(files["ps"]), "--patch-name", "nope"], 1,
                                 "no patch 'nope'")):
        result = CliRunner().invoke(cli.main, bad, catch_exceptions=False)
        assert result.exit_code == code, (bad, result.output)
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: ") and fragment in result.stderr


def test_fit_layouts(setup):
    """`fit --json` is NextStat's FitResult layout; `fit --pyhf` pyhf's (also to --output-file)."""
    simple = setup["files"]["simple"]
    ours = json.loads(CliRunner().invoke(cli.main, ["fit", str(simple), "--json"], catch_exceptions=False).stdout)
    assert {"bestfit", "errors", "covariance", "parameter_names", "nll", "twice_nll", "mu", "converged"} <= set(ours)
    out = setup["base"] / "fit_pyhf_layout.json"
    result = CliRunner().invoke(cli.main, ["fit", str(simple), "--pyhf", "--output-file", str(out)], catch_exceptions=False)
    assert result.exit_code == 0 and set(json.loads(out.read_text())) == {"mle_parameters"}
    layout = json.loads(out.read_text())["mle_parameters"]
    import nextstat

    model = nextstat.from_pyhf(simple)
    assert sorted(layout) == sorted(model.par_slices)
    for name, sl in model.par_slices.items():
        assert layout[name] == ours["bestfit"][sl]
