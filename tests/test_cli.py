"""The CLI's contract at the edges (reliability cases 19-27 and the classes they stand for).

Usage errors (bad option values, unknown choices, missing inputs, output paths that cannot be
written) exit 2 with one line before anything is computed; runtime errors (malformed or corrupt
workspaces, values the library refuses, bugs) exit 1 with one line ``Error: ...`` and no traceback
unless ``-v``; JSON output is strict; output files are written atomically. Most tests run the
CLI in-process with ``CliRunner``; the crash-class cases run the installed script in a subprocess.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from click.testing import CliRunner, Result

import nextstat
from nextstat import cli
from nextstat.errors import ConvergenceWarning

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "python" / "nextstat" / "data" / "simple.json"
SCRIPT = Path(sys.executable).with_name("nextstat")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "nextstat.cli"]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON token {name}")


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses NaN / Infinity (strict RFC 8259 JSON)."""
    return json.loads(text, parse_constant=_refuse_constant)


def run_cli(args: list[Any], input: Any = None) -> Result:
    """Run the CLI in-process; exceptions that escape it fail the test (catch_exceptions=False)."""
    return CliRunner().invoke(cli.main, [str(a) for a in args], input=input, catch_exceptions=False)


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> str:
    """Exit status ``exit_code``, nothing on stdout, one line ``Error: ...`` on stderr that
    contains each of ``fragments``, and no traceback; returns that line."""
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def run_script(args: list[Any], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``nextstat`` script in a subprocess (a native crash cannot kill pytest)."""
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def model() -> nextstat.Model:
    return nextstat.from_pyhf(str(EXAMPLE))


@pytest.fixture(scope="module")
def fit_result(model: nextstat.Model) -> nextstat.FitResult:
    return nextstat.fit(model)


def write_bad_gzip(path: Path) -> Path:
    """A gzip header followed by garbage (case 19)."""
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256)) * 4)
    return path


def write_deep_array(path: Path, depth: int = 100_000) -> Path:
    """A JSON array nested ``depth`` levels (case 20)."""
    path.write_text("[" * depth + "]" * depth)
    return path


def write_deep_in_object(path: Path, depth: int = 100_000) -> Path:
    """A workspace object whose ``channels`` is a deeply nested array (case 21)."""
    path.write_text('{"channels": ' + "[" * depth + "]" * depth + ', "observations": [], "measurements": []}')
    return path


class StubResult:
    """Stands in for a result: ``to_dict`` with non-finite and numpy values."""

    def __init__(self, payload: dict):
        self.payload = payload

    def to_dict(self) -> dict:
        return self.payload

    def __str__(self) -> str:
        return "stub summary"


# --------------------------------------------------------------------------- usage errors: exit 2

USAGE_ERRORS = [
    (["limit", "{ws}", "--alpha", "0"], "--alpha"),  # case 25
    (["limit", "{ws}", "--alpha", "1"], "--alpha"),
    (["limit", "{ws}", "--alpha", "1.5"], "--alpha"),
    (["limit", "{ws}", "--alpha", "-0.1"], "--alpha"),
    (["limit", "{ws}", "--alpha", "nan"], "--alpha"),
    (["hypotest", "{ws}", "--mu", "nan"], "--mu"),  # case 24
    (["hypotest", "{ws}", "--mu", "inf"], "--mu"),
    (["hypotest", "{ws}", "--mu", "-inf"], "--mu"),
    (["hypotest", "{ws}", "--mu", "1e400"], "--mu"),
    (["hypotest", "{ws}", "--mu", "one"], "--mu"),
    (["hypotest", "{ws}", "--test-stat", "tmu"], "--test-stat"),
    (["rank", "{ws}", "--top", "0"], "--top"),
    (["rank", "{ws}", "--top", "-3"], "--top"),
    (["limit", "{ws}", "--scan", "2:1:5"], "--scan"),
    (["limit", "{ws}", "--scan", "0:1:1"], "--scan"),
    (["limit", "{ws}", "--scan", "0:nan:5"], "--scan"),
    (["limit", "{ws}", "--scan", "0:inf:5"], "--scan"),
    (["limit", "{ws}", "--scan", "a:b:c"], "--scan"),
    (["limit", "{ws}", "--scan", "0:1"], "--scan"),
    (["plot", "bogus", "{ws}", "-o", "{tmp}/p.png"], "bogus"),
    (["plot", "pulls", "{ws}", "-o", "{tmp}/p.xyz"], "--output"),
    (["plot", "pulls", "{ws}", "-o", "{tmp}/no_dir/p.png"], "--output"),
    (["rank", "{ws}", "--plot", "{tmp}/no_dir/r.png"], "--plot"),
    (["fit", "{ws}", "--output-file", "{tmp}/no_dir/x.json"], "--output-file"),  # case 26
    (["fit", "{ws}", "--output-file", "{tmp}"], "--output-file"),
    (["fit", "{ws}", "--output-file", "{tmp}/a_file/x.json"], "--output-file"),
    (["fit", "{tmp}/missing.json"], "WORKSPACE"),
    (["fit", "{tmp}"], "WORKSPACE"),
    (["fit", "{ws}", "--patch", "{tmp}/missing.json"], "--patch"),
    (["fit", "{ws}", "--no-such-option"], "--no-such-option"),
    (["frobnicate", "{ws}"], "frobnicate"),
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--benchmark", "higgs"], "--benchmark"),
]


def _usage_id(args: list[str]) -> str:
    return " ".join(a.replace("{ws}", "WS").replace("{tmp}", "TMP") for a in args)


@pytest.mark.parametrize(("args", "names"), USAGE_ERRORS, ids=[_usage_id(a) for a, _ in USAGE_ERRORS])
def test_usage_error_exits_2_with_one_line_before_any_work(tmp_path: Path, args: list[str], names: str) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    args = [a.format(ws=EXAMPLE, tmp=tmp_path) for a in args]
    with mock.patch("nextstat.from_pyhf", autospec=True) as from_pyhf:
        result = run_cli(args)
    assert_one_line_error(result, 2, names)
    from_pyhf.assert_not_called()  # refused while parsing: the workspace was not even read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written


def test_hypotest_nan_mu_writes_nothing(tmp_path: Path) -> None:
    """Case 24: ``--mu nan`` used to exit 0 with a NaN token in the output file."""
    out = tmp_path / "out.json"
    result = run_cli(["hypotest", EXAMPLE, "--mu", "nan", "--output-file", out])
    line = assert_one_line_error(result, 2, "--mu", "finite")
    assert "nan" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_output_file_existing_but_read_only_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write read-only files")
    out = tmp_path / "out.json"
    out.write_text("old")
    out.chmod(0o444)
    assert_one_line_error(run_cli(["fit", EXAMPLE, "--output-file", out]), 2, "--output-file", "not writable")
    assert out.read_text() == "old"


def test_output_directory_not_writable_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write read-only directories")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_one_line_error(run_cli(["fit", EXAMPLE, "--output-file", locked / "x.json"]), 2,
                              "--output-file", "not writable")
    finally:
        locked.chmod(0o755)


def test_output_directory_refused_when_access_says_not_writable(tmp_path: Path) -> None:
    """As the last test, for root too: os.access decides (mocked for that one directory)."""
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        return False if Path(path) == locked else real_access(path, mode, **kwargs)

    with mock.patch("nextstat.cli.os.access", side_effect=access), \
            mock.patch("nextstat.from_pyhf", autospec=True) as from_pyhf:
        result = run_cli(["fit", EXAMPLE, "--output-file", locked / "x.json"])
    assert_one_line_error(result, 2, "--output-file", "is not writable")
    from_pyhf.assert_not_called()
    assert list(locked.iterdir()) == []


def test_stdin_terminal_without_workspace_is_a_usage_error() -> None:
    with mock.patch.object(cli.click, "get_binary_stream") as stream:
        stream.return_value.isatty.return_value = True
        result = run_cli(["fit"])
    assert_one_line_error(result, 2, "standard input is a terminal")
    stream.return_value.read.assert_not_called()


def test_bare_command_shows_help_and_version_and_cite_still_work() -> None:
    result = run_cli([])
    assert result.exit_code == 2 and "Commands:" in result.output and "fit" in result.output
    result = run_cli(["--version"])
    assert result.exit_code == 0 and nextstat.__version__ in result.stdout
    result = run_cli(["--cite"])
    assert result.exit_code == 0 and result.stdout.startswith("@software{nextstat,")
    result = run_cli(["limit", "-h"])
    assert result.exit_code == 0 and "--no-progress" in result.stdout and "0.0<x<1.0" in result.stdout


# --------------------------------------------------------------------------- runtime errors: exit 1

def test_corrupt_gzip_exits_1_with_one_line(tmp_path: Path) -> None:
    """Case 19: a gzip header and garbage printed a zlib traceback."""
    bad = write_bad_gzip(tmp_path / "bad.json.gz")
    out = tmp_path / "out.json"
    line = assert_one_line_error(run_cli(["fit", bad, "--output-file", out]), 1, "bad.json.gz")
    assert "gzip" in line.lower() or "compressed" in line.lower()
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.json.gz"]


@pytest.mark.parametrize("writer", [write_deep_array, write_deep_in_object], ids=["array", "in-object"])
def test_deeply_nested_json_exits_1_with_one_line(tmp_path: Path, writer: Any) -> None:
    """Cases 20 and 21: RecursionError tracebacks from the JSON decoder."""
    deep = writer(tmp_path / "deep.json")
    out = tmp_path / "out.json"
    line = assert_one_line_error(run_cli(["fit", deep, "--output-file", out]), 1)
    assert "nested too deeply" in line and "internal error" not in line
    assert not out.exists()


def test_recursion_error_from_anywhere_is_one_line() -> None:
    """Whatever the loading layer lets through, RecursionError is reported on one line."""
    with mock.patch("nextstat.from_pyhf", autospec=True, side_effect=RecursionError("maximum recursion depth exceeded")):
        line = assert_one_line_error(run_cli(["fit", EXAMPLE]), 1, "nested too deeply")
    assert "internal error" not in line


@pytest.mark.parametrize(("text", "fragment"), [
    ("{", "malformed"),
    ("[1, 2, 3]", "JSON object"),
    ('{"channels": []}', "channels"),
], ids=["truncated", "array", "no-channels"])
def test_malformed_workspace_file_exits_1_with_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    ws = tmp_path / "ws.json"
    ws.write_text(text)
    line = assert_one_line_error(run_cli(["fit", ws]), 1)
    assert fragment in line and "internal error" not in line


def test_unknown_measurement_exits_1_naming_it() -> None:
    assert_one_line_error(run_cli(["fit", EXAMPLE, "--measurement", "no_such_measurement"]), 1, "no_such_measurement")


@pytest.mark.parametrize(("data", "fragment"), [
    (b"", "empty"),
    (b"not json at all", "JSON workspace"),
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
], ids=["empty", "text", "bad-gzip", "not-utf8", "deep"])
def test_bad_standard_input_exits_1_with_one_line(data: bytes, fragment: str) -> None:
    assert_one_line_error(run_cli(["fit", "-"], input=data), 1, fragment)


def test_library_refusal_is_its_message_on_one_line() -> None:
    with mock.patch("nextstat.upper_limit", autospec=True,
                    side_effect=ValueError("scan: expected an increasing 1-D array\nof finite values")):
        line = assert_one_line_error(run_cli(["limit", EXAMPLE]), 1)
    assert line == "Error: scan: expected an increasing 1-D array of finite values"


def test_library_type_error_and_os_error_are_one_line() -> None:
    with mock.patch("nextstat.fit", autospec=True, side_effect=TypeError("data: expected an array")):
        assert run_cli(["fit", EXAMPLE]).stderr == "Error: data: expected an array\n"
    with mock.patch("nextstat.fit", autospec=True, side_effect=OSError(5, "Input/output error")):
        assert run_cli(["fit", EXAMPLE]).stderr == "Error: [Errno 5] Input/output error\n"


def test_unexpected_exception_is_an_internal_error_line() -> None:
    with mock.patch("nextstat.fit", autospec=True, side_effect=ZeroDivisionError("float division by zero")):
        line = assert_one_line_error(run_cli(["fit", EXAMPLE]), 1)
    assert line == ("Error: internal error: ZeroDivisionError: float division by zero "
                    "(run with -v for the traceback)")


def test_internal_error_names_the_module_of_a_non_builtin_exception() -> None:
    with mock.patch("nextstat.hypotest", autospec=True, side_effect=ConvergenceWarning("boom")):
        line = assert_one_line_error(run_cli(["hypotest", EXAMPLE]), 1)
    assert line == "Error: internal error: nextstat.errors.ConvergenceWarning: boom (run with -v for the traceback)"


@pytest.mark.parametrize("where", ["group", "command"])
def test_verbose_shows_the_traceback_then_the_error_line(tmp_path: Path, where: str) -> None:
    bad = write_bad_gzip(tmp_path / "bad.json.gz")
    args = ["-v", "fit", bad] if where == "group" else ["fit", bad, "--verbose"]
    result = run_cli(args)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "WorkspaceError" in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("Error: ") and "bad.json.gz" in last


def test_verbose_traceback_for_an_internal_error() -> None:
    with mock.patch("nextstat.fit", autospec=True, side_effect=ZeroDivisionError("float division by zero")):
        result = run_cli(["-v", "fit", EXAMPLE])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError: float division by zero" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: internal error: ZeroDivisionError")


def test_describe_error_messages() -> None:
    import zlib

    assert cli.describe_error(nextstat.WorkspaceError("channels[0]", "bad")) == "channels[0]: bad"
    assert cli.describe_error(ValueError("")) == "ValueError"
    assert cli.describe_error(zlib.error("invalid code lengths set")) == "corrupt compressed data (invalid code lengths set)"
    assert cli.describe_error(EOFError()) == "unexpected end of compressed input (truncated)"
    assert cli.describe_error(MemoryError()) == "out of memory"
    assert cli.describe_error(KeyError("x")) == "internal error: KeyError: 'x' (run with -v for the traceback)"
    long = cli.describe_error(ValueError("x" * 10_000))
    assert len(long) == cli.MAX_MESSAGE + 3 and long.endswith("...")


# --------------------------------------------------------------------------- output: values and strict JSON

def test_fit_json_matches_the_api(model: nextstat.Model, fit_result: nextstat.FitResult, tmp_path: Path) -> None:
    result = run_cli(["fit", EXAMPLE, "--json"])
    assert result.exit_code == 0 and result.stderr == ""
    payload = strict_loads(result.stdout)
    poi = model.poi_index
    assert payload["poi_index"] == poi
    assert payload["bestfit"][poi] == pytest.approx(fit_result.bestfit[poi], abs=1e-10)
    assert payload["errors"][poi] == pytest.approx(fit_result.errors[poi], abs=1e-10)
    assert payload["nll"] == pytest.approx(fit_result.nll, abs=1e-10)
    assert payload["converged"] is True
    out = tmp_path / "fit.json"
    result = run_cli(["fit", EXAMPLE, "--output-file", out])
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    written = strict_loads(out.read_text())
    assert {k: v for k, v in written.items() if k != "time_ms"} == {k: v for k, v in payload.items() if k != "time_ms"}
    assert [p.name for p in tmp_path.iterdir()] == ["fit.json"]  # no temporary file left behind


def test_fit_summary_text(fit_result: nextstat.FitResult) -> None:
    result = run_cli(["fit", EXAMPLE])
    assert result.exit_code == 0
    def stable(text: str) -> list[str]:  # all but the time the fit took
        return [line for line in text.splitlines() if "time =" not in line]

    assert stable(result.stdout) == stable(str(fit_result)) and len(stable(result.stdout)) > 10


def test_workspace_on_standard_input_plain_and_gzip(model: nextstat.Model, fit_result: nextstat.FitResult) -> None:
    poi = model.poi_index
    for data in (EXAMPLE.read_bytes(), gzip.compress(EXAMPLE.read_bytes())):
        result = run_cli(["fit", "--json"], input=data)
        assert result.exit_code == 0, result.output
        assert strict_loads(result.stdout)["bestfit"][poi] == pytest.approx(fit_result.bestfit[poi], abs=1e-10)


def test_hypotest_json_matches_the_api(model: nextstat.Model) -> None:
    expected = nextstat.hypotest(model, 1.0)
    payload = strict_loads(run_cli(["hypotest", EXAMPLE, "--json"]).stdout)
    assert payload["test_stat"] == "qtilde"
    assert payload["cls"] == pytest.approx(expected.cls, abs=1e-10)
    assert payload["cls_expected"] == pytest.approx(list(expected.cls_expected), abs=1e-10)
    discovery = nextstat.hypotest(model, 0.0)
    result = run_cli(["hypotest", EXAMPLE, "--mu", "0"])
    assert result.exit_code == 0
    assert f"Z0 = {discovery.significance:.4f} sigma" in result.stdout


def test_limit_json_matches_the_api(model: nextstat.Model) -> None:
    expected = nextstat.upper_limit(model, alpha=0.1)
    payload = strict_loads(run_cli(["limit", EXAMPLE, "--alpha", "0.1", "--json"]).stdout)
    assert payload["observed"] == pytest.approx(expected.observed, abs=1e-10)
    assert payload["expected"] == pytest.approx(list(expected.expected), abs=1e-10)
    grid = np.linspace(0.0, 3.0, 7)
    scanned = nextstat.upper_limit(model, scan=grid)
    payload = strict_loads(run_cli(["limit", EXAMPLE, "--scan", "0:3:7", "--json"]).stdout)
    assert payload["mu_values"] == pytest.approx(list(grid), abs=0)
    assert payload["observed"] == pytest.approx(scanned.observed, abs=1e-10)


def test_rank_json_and_plot_match_the_api(model: nextstat.Model, tmp_path: Path) -> None:
    from nextstat.interpret import rank_impact

    expected = rank_impact(model, top_n=3)
    plot = tmp_path / "rank.png"
    result = run_cli(["rank", EXAMPLE, "--top", "3", "--json", "--plot", plot])
    assert result.exit_code == 0, result.output
    table = strict_loads(result.stdout)["ranking"]
    assert [r["name"] for r in table] == [r["name"] for r in expected]
    assert [r["total_impact"] for r in table] == pytest.approx([r["total_impact"] for r in expected], abs=1e-10)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank.png"]


def test_plot_writes_the_image(tmp_path: Path) -> None:
    out = tmp_path / "pulls.pdf"
    result = run_cli(["plot", "pulls", EXAMPLE, "-o", out])
    assert result.exit_code == 0 and result.stdout == f"wrote {out}\n"
    assert out.read_bytes()[:5] == b"%PDF-"
    assert [p.name for p in tmp_path.iterdir()] == ["pulls.pdf"]


def test_non_finite_values_become_null_in_json_output(tmp_path: Path) -> None:
    stub = StubResult({"nll": float("nan"), "bestfit": np.array([1.5, np.inf, -np.inf]),
                       "n": np.int64(3), "ok": np.bool_(False), "pairs": (np.float32(0.5), None)})
    expected = {"nll": None, "bestfit": [1.5, None, None], "n": 3, "ok": False, "pairs": [0.5, None]}
    out = tmp_path / "out.json"
    with mock.patch("nextstat.fit", autospec=True, return_value=stub):
        stdout = run_cli(["fit", EXAMPLE, "--json"])
        written = run_cli(["fit", EXAMPLE, "--output-file", out])
    assert stdout.exit_code == 0 and written.exit_code == 0
    assert strict_loads(stdout.stdout) == expected
    assert strict_loads(out.read_text()) == expected
    assert "NaN" not in out.read_text() and "Infinity" not in out.read_text()


def test_to_strict_json() -> None:
    text = cli.to_strict_json({"a": [np.nan, 1.0], 2: np.arange(2), "b": {"c": np.float64(-np.inf)},
                               "p": Path("x/y"), "r": StubResult({"z": np.float16(2.0)})}, indent=None)
    assert text == '{"a": [null, 1.0], "2": [0, 1], "b": {"c": null}, "p": "x/y", "r": {"z": 2.0}}'
    assert cli.to_strict_json(float("nan")) == "null"
    with pytest.raises(TypeError, match="complex"):
        cli.to_strict_json({"x": 1j})


# --------------------------------------------------------------------------- atomic output

def test_failed_json_write_leaves_no_partial_or_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text("old")
    with mock.patch("nextstat.cli.os.fsync", autospec=True, side_effect=OSError(28, "No space left on device")):
        result = run_cli(["fit", EXAMPLE, "--output-file", out])
    assert_one_line_error(result, 1, "No space left on device")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_figure_write_leaves_no_partial_or_temporary_file(tmp_path: Path) -> None:
    class HalfWrittenFigure:
        def savefig(self, fname: Any, **kwargs: Any) -> None:
            Path(fname).write_bytes(b"\x89PNG partial")
            raise OSError(28, "No space left on device")

    out = tmp_path / "p.png"
    with mock.patch("nextstat.plots.plot_from_model", autospec=True, return_value=HalfWrittenFigure()):
        result = run_cli(["plot", "pulls", EXAMPLE, "-o", out])
    assert_one_line_error(result, 1, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_the_replaced_file_mode(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text("old")
    out.chmod(0o640)
    cli.write_atomic(out, "new")
    assert out.read_text() == "new" and (out.stat().st_mode & 0o777) == 0o640
    fresh = tmp_path / "fresh.json"
    cli.write_atomic(fresh, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (fresh.stat().st_mode & 0o777) == 0o666 & ~umask


# --------------------------------------------------------------------------- logging, warnings, progress

def _fit_that_logs(model: Any, **kwargs: Any) -> StubResult:
    log = logging.getLogger("nextstat.infer.fit")
    log.debug("debug-message")
    log.info("info-message")
    log.warning("warning-message")
    return StubResult({"x": 1.0})


def test_verbose_shows_nextstat_logging_and_quiet_shows_only_warnings() -> None:
    logger = logging.getLogger("nextstat")
    before = (list(logger.handlers), logger.level, logger.propagate, list(logging.getLogger().handlers))
    with mock.patch("nextstat.fit", autospec=True, side_effect=_fit_that_logs):
        quiet = run_cli(["fit", EXAMPLE])
        loud = run_cli(["-v", "fit", EXAMPLE])
        loud_cmd = run_cli(["fit", EXAMPLE, "-v"])
    assert quiet.exit_code == 0 and quiet.stderr == "WARNING nextstat.infer.fit: warning-message\n"
    for result in (loud, loud_cmd):
        assert result.exit_code == 0
        assert result.stderr.splitlines() == ["DEBUG nextstat.infer.fit: debug-message",
                                              "INFO nextstat.infer.fit: info-message",
                                              "WARNING nextstat.infer.fit: warning-message"]
    assert (list(logger.handlers), logger.level, logger.propagate, list(logging.getLogger().handlers)) == before


def test_importing_and_running_the_cli_configures_no_root_logging() -> None:
    code = ("import logging, nextstat.cli as c; n = len(logging.getLogger().handlers); "
            "print(n, logging.getLogger().level == logging.WARNING, len(logging.getLogger('nextstat').handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["0", "True", "0"]


def test_warnings_are_one_line_on_stderr() -> None:
    def warn_then_return(model: Any, **kwargs: Any) -> StubResult:
        warnings.warn("fit: the fit did not converge\n(line search)", ConvergenceWarning, stacklevel=2)
        return StubResult({"converged": False})

    with warnings.catch_warnings(), mock.patch("nextstat.fit", autospec=True, side_effect=warn_then_return):
        warnings.simplefilter("always")
        result = run_cli(["fit", EXAMPLE, "--json"])
    assert result.exit_code == 0
    assert result.stderr == "Warning: ConvergenceWarning: fit: the fit did not converge (line search)\n"
    assert strict_loads(result.stdout) == {"converged": False}


def test_resolve_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert cli.resolve_progress(True) is True and cli.resolve_progress(False) is False
    with mock.patch.object(cli.sys, "stderr") as stderr:
        stderr.isatty.return_value = True
        assert cli.resolve_progress(None) is True
        monkeypatch.setenv("TQDM_DISABLE", "1")
        assert cli.resolve_progress(None) is False
        assert cli.resolve_progress(True) is True  # an explicit flag wins
        monkeypatch.setenv("TQDM_DISABLE", "0")
        assert cli.resolve_progress(None) is True
        stderr.isatty.return_value = False
        assert cli.resolve_progress(None) is False


@pytest.mark.parametrize(("flag", "expected"), [([], False), (["--no-progress"], False), (["--progress"], True)])
def test_progress_flags_reach_limit_and_rank(flag: list[str], expected: bool, model: nextstat.Model) -> None:
    limit_result = nextstat.upper_limit(model, scan=np.linspace(0, 3, 4))
    with mock.patch("nextstat.upper_limit", autospec=True, return_value=limit_result) as upper_limit:
        assert run_cli(["limit", EXAMPLE, *flag]).exit_code == 0
    assert upper_limit.call_args.kwargs["progress"] is expected
    with mock.patch("nextstat.interpret.rank_impact", autospec=True, return_value=[]) as rank_impact:
        assert run_cli(["rank", EXAMPLE, "--json", *flag]).exit_code == 0
    assert rank_impact.call_args.kwargs["progress"] is expected


# --------------------------------------------------------------------------- real subprocess runs

SCRIPT_CASES = {
    "19-bad-gzip": (["fit", "{tmp}/bad.json.gz", "--output-file", "{tmp}/out.json"], 1, "bad.json.gz"),
    "20-deep-array": (["fit", "{tmp}/deep.json", "--output-file", "{tmp}/out.json"], 1, "nested too deeply"),
    "21-deep-in-object": (["fit", "{tmp}/deep_obj.json", "--output-file", "{tmp}/out.json"], 1, "nested too deeply"),
    "24-hypotest-nan-mu": (["hypotest", "{ws}", "--mu", "nan", "--output-file", "{tmp}/out.json"], 2, "--mu"),
    "25-limit-alpha-zero": (["limit", "{ws}", "--alpha", "0", "--output-file", "{tmp}/out.json"], 2, "--alpha"),
    "26-output-dir-missing": (["fit", "{ws}", "--output-file", "{tmp}/no_dir/x.json"], 2, "--output-file"),
}


@pytest.mark.parametrize("case", list(SCRIPT_CASES))
def test_script_reliability_cases_exit_cleanly(tmp_path: Path, case: str) -> None:
    args, code, fragment = SCRIPT_CASES[case]
    write_bad_gzip(tmp_path / "bad.json.gz")
    write_deep_array(tmp_path / "deep.json")
    write_deep_in_object(tmp_path / "deep_obj.json")
    out = run_script([a.format(ws=EXAMPLE, tmp=tmp_path) for a in args])
    assert out.returncode == code, out.stderr[-2000:]
    assert out.stdout == "" and "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], out.stderr
    assert not (tmp_path / "out.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files


def test_script_fit_json_output_matches_the_api(tmp_path: Path, model: nextstat.Model,
                                                fit_result: nextstat.FitResult) -> None:
    out = tmp_path / "fit.json"
    proc = run_script(["fit", EXAMPLE, "--output-file", out])
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    payload = strict_loads(out.read_text())
    assert payload["bestfit"][model.poi_index] == pytest.approx(fit_result.bestfit[model.poi_index], abs=1e-10)


def test_script_fit_of_a_2050_bin_model_does_not_crash(tmp_path: Path) -> None:
    """Case 27: a 2,050-bin model crashed the engine (SIGSEGV, a freed Hessian buffer). Run under
    MALLOC_PERTURB_ so freed memory is poisoned. By symmetry every gamma is 1 and mu = 2; the mu
    error is analytic: var = 1 / (N (1/52 - (50/52)^2 / (2500/52 + 1/0.04^2)))."""
    n = 2050
    ws = {"channels": [{"name": "SR", "samples": [
        {"name": "signal", "data": [1.0] * n, "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": [50.0] * n, "modifiers": [{"name": "st", "type": "staterror", "data": [2.0] * n}]}]}],
        "observations": [{"name": "SR", "data": [52.0] * n}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}]}
    big = tmp_path / "big_2050_bins.json"
    big.write_text(json.dumps(ws))
    out = tmp_path / "out.json"
    proc = run_script(["fit", big, "--output-file", out], env={"MALLOC_PERTURB_": "165"}, timeout=900)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    payload = strict_loads(out.read_text())
    poi = payload["poi_index"]
    assert payload["converged"] is True
    assert payload["bestfit"][poi] == pytest.approx(2.0, abs=1e-4)
    expected_error = 1.0 / math.sqrt(n * (1 / 52 - (50 / 52) ** 2 / (2500 / 52 + 1 / 0.04 ** 2)))
    assert payload["errors"][poi] == pytest.approx(expected_error, rel=1e-6)
