"""Tests for nextstat.mlops: the metric dicts, the timer, and round trips through real trackers.

The W&B and MLflow tests log to a real offline W&B run and a real MLflow (SQLite) store in
``tmp_path`` and read the values back with those libraries' own readers; they are skipped when
``wandb`` / ``mlflow`` are not installed (``pip install nextstat[mlops]``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nextstat
from nextstat.mlops import StepTimer, metrics_dict, significance_metrics
from nextstat.results import FitResult

NAMES = ("mu", "lumi", "staterror_SR[0]", "staterror_SR[1]", "alpha_JES")


def make_fit(
    names: tuple[str, ...] = NAMES, *, poi_index: int | None = 0, converged: bool = True
) -> FitResult:
    n = len(names)
    bestfit = np.linspace(1.25, 0.5, n)
    errors = np.linspace(0.5, 0.05, n)
    corr = np.eye(n)
    if n > 1:
        corr[0, 1] = corr[1, 0] = -0.3
    return FitResult(
        bestfit=bestfit,
        errors=errors,
        covariance=corr * np.outer(errors, errors),
        correlation=corr,
        parameter_names=names,
        poi_index=poi_index,
        nll=np.float64(42.375),  # a NumPy scalar on purpose: the dict must hold plain floats
        edm=1.5e-7,
        converged=converged,
        n_iter=7,
        time_ms=3.25,
        message="converged" if converged else "max iterations reached",
        fixed=np.zeros(n, dtype=bool),
        at_limit=np.zeros(n, dtype=bool),
    )


EXPECTED_KEYS = [
    "mu",
    "nll",
    "edm",
    "converged",
    "time_ms",
    "param/mu",
    "param/lumi",
    "param/staterror_SR_0",
    "param/staterror_SR_1",
    "param/alpha_JES",
    "error/mu",
    "error/lumi",
    "error/staterror_SR_0",
    "error/staterror_SR_1",
    "error/alpha_JES",
]


# --- metrics_dict ---------------------------------------------------------------------------


def test_metrics_dict_keys_values_and_types() -> None:
    fit = make_fit()
    m = metrics_dict(fit)
    assert list(m) == EXPECTED_KEYS
    assert all(type(v) is float for v in m.values())
    assert m["mu"] == fit.bestfit[0] == m["param/mu"]
    assert m["nll"] == 42.375
    assert m["edm"] == 1.5e-7
    assert m["converged"] == 1.0
    assert m["time_ms"] == 3.25
    for i, name in enumerate(["mu", "lumi", "staterror_SR_0", "staterror_SR_1", "alpha_JES"]):
        assert m[f"param/{name}"] == fit.bestfit[i]
        assert m[f"error/{name}"] == fit.errors[i]


def test_metrics_dict_prefix_is_prepended_verbatim() -> None:
    m = metrics_dict(make_fit(), prefix="fit/")
    assert list(m) == [f"fit/{k}" for k in EXPECTED_KEYS]


def test_metrics_dict_not_converged_and_no_poi() -> None:
    m = metrics_dict(make_fit(("a", "b"), poi_index=None, converged=False))
    assert m["converged"] == 0.0
    assert "mu" not in m  # omitted, never NaN
    assert list(m) == ["nll", "edm", "converged", "time_ms", "param/a", "param/b", "error/a",
                       "error/b"]


def test_metrics_dict_names_are_tracker_safe() -> None:
    m = metrics_dict(make_fit(("mu", "shape(up)", "a b", "x[2][3]")))
    assert [k for k in m if k.startswith("param/")] == [
        "param/mu", "param/shape_up_", "param/a b", "param/x_2_3"
    ]


def test_metrics_dict_colliding_names_raise() -> None:
    with pytest.raises(ValueError, match=r"'a\[0\]' and 'a_0'"):
        metrics_dict(make_fit(("a[0]", "a_0")))


def test_metrics_dict_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="FitResult"):
        metrics_dict({"mu": 1.0})  # type: ignore[arg-type]


# --- significance_metrics -------------------------------------------------------------------


def _z0_inputs() -> list:
    torch = pytest.importorskip("torch")
    return [
        2.5,
        np.float64(2.5),
        np.float32(2.5),
        np.array(2.5),
        np.array([2.5]),
        torch.tensor(2.5, dtype=torch.float64, requires_grad=True) * 1.0,
        torch.tensor(2.5, dtype=torch.float32),
    ]


@pytest.mark.parametrize("index", range(7))
def test_significance_metrics_accepts_scalars(index: int) -> None:
    z0 = _z0_inputs()[index]
    m = significance_metrics(z0)
    assert m == {"z0": 2.5, "q0": 6.25}
    assert all(type(v) is float for v in m.values())


def test_significance_metrics_prefix_and_step_time() -> None:
    m = significance_metrics(2.0, prefix="train/", step_time_ms=np.float32(48.5))
    assert m == {"train/z0": 2.0, "train/q0": 4.0, "train/step_time_ms": 48.5}
    assert type(m["train/step_time_ms"]) is float
    assert "train/step_time_ms" not in significance_metrics(2.0, prefix="train/")


def test_significance_metrics_q0_is_zero_below_zero() -> None:
    assert significance_metrics(-1.5) == {"z0": -1.5, "q0": 0.0}
    assert significance_metrics(0) == {"z0": 0.0, "q0": 0.0}
    m = significance_metrics(float("nan"))
    assert math.isnan(m["z0"]) and math.isnan(m["q0"])


@pytest.mark.parametrize("bad", [np.array([1.0, 2.0]), "2.0", None])
def test_significance_metrics_rejects_non_scalars(bad: object) -> None:
    with pytest.raises(TypeError, match="z0"):
        significance_metrics(bad)


# --- StepTimer -----------------------------------------------------------------------------


def test_step_timer_start_stop() -> None:
    timer = StepTimer()
    assert timer.last_ms is None and not timer.running
    timer.start()
    assert timer.running
    time.sleep(0.02)
    elapsed = timer.stop()
    assert type(elapsed) is float
    assert 20.0 <= elapsed < 2000.0
    assert timer.last_ms == elapsed and not timer.running
    assert "last_ms=" in repr(timer)


def test_step_timer_stop_before_start_raises() -> None:
    timer = StepTimer()
    with pytest.raises(RuntimeError, match="before start"):
        timer.stop()
    timer.start()
    timer.stop()
    with pytest.raises(RuntimeError):  # each stop needs its own start
        timer.stop()


def test_step_timer_context_manager() -> None:
    timer = StepTimer()
    with timer as t:
        assert t is timer and timer.running
        time.sleep(0.005)
    assert not timer.running
    assert timer.last_ms is not None and timer.last_ms >= 5.0
    first = timer.last_ms
    with timer:
        pass
    assert timer.last_ms < first


# --- real trackers ---------------------------------------------------------------------------


def _read_wandb_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(summary, history rows) of an offline run, read with wandb's own transaction-log reader.

    ``wandb leet inspect --json`` prints the run's records; the summary is the run's
    ``summary`` updates applied in order (what ``--summary`` reports, without a second
    process start).
    """
    records = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    summary: dict = {}
    history: list[dict] = []
    for rec in map(json.loads, records.stdout.splitlines()):
        if rec.get("type") == "summary":
            summary.update(rec["summary"].get("update", {}))
        elif rec.get("type") == "history":
            history.append(rec["history"]["item"])
    return summary, history


def test_wandb_offline_run_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")
    for var, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(var, value)
    fit = make_fit()
    run = wandb.init(project="nextstat-test", config={"lr": 1e-3})
    try:
        run.log(metrics_dict(fit, prefix="fit/"))
        timer = StepTimer()
        for z0 in (0.5, 1.25, 2.0):
            with timer:
                pass
            run.log(significance_metrics(z0, prefix="train/", step_time_ms=timer.last_ms))
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
        wandb.teardown()  # stop the background service this test started

    summary, history = _read_wandb_run(run_dir)
    expected_fit = {f"fit/{k}": v for k, v in metrics_dict(fit).items()}
    assert {k: summary[k] for k in expected_fit} == expected_fit
    assert summary["train/z0"] == 2.0 and summary["train/q0"] == 4.0
    assert [row["train/z0"] for row in history if "train/z0" in row] == [0.5, 1.25, 2.0]
    assert [row["train/q0"] for row in history if "train/q0" in row] == [0.25, 1.5625, 4.0]
    assert all(row["train/step_time_ms"] >= 0.0 for row in history if "train/z0" in row)


def test_mlflow_run_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    # The file store is in "maintenance mode" since MLflow 3 and refused unless opted in; it
    # starts in ~0.1 s where SQLite's schema migrations take ~10 s. Fall back to SQLite if a
    # later MLflow refuses it outright.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    previous = mlflow.get_tracking_uri()
    try:
        uri = (tmp_path / "mlruns").as_uri()
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.set_experiment("nextstat-test")
        except MlflowException:
            uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("nextstat-test")
        fit = make_fit()
        with mlflow.start_run() as run:
            mlflow.log_metrics(metrics_dict(fit))  # staterror_SR[0] must be accepted
            for step, z0 in enumerate((0.5, 2.0)):
                mlflow.log_metrics(significance_metrics(z0, prefix="train/", step_time_ms=1.5),
                                   step=step)
            mlflow.log_param("model_type", "histfactory")
        client = MlflowClient(tracking_uri=uri)
        stored = client.get_run(run.info.run_id).data.metrics
        q0_history = client.get_metric_history(run.info.run_id, "train/q0")
    finally:
        mlflow.set_tracking_uri(previous)

    assert {k: stored[k] for k in EXPECTED_KEYS} == metrics_dict(fit)
    assert stored["train/z0"] == 2.0 and stored["train/step_time_ms"] == 1.5
    assert [(m.step, m.value) for m in sorted(q0_history, key=lambda m: m.step)] == [
        (0, 0.25),
        (1, 4.0),
    ]


def test_metrics_dict_of_a_real_fit() -> None:
    pyhf = pytest.importorskip("pyhf")
    model = pyhf.simplemodels.uncorrelated_background([5.0, 10.0], [50.0, 60.0], [5.0, 12.0])
    spec = {
        "channels": model.spec["channels"],
        "observations": [{"name": "singlechannel", "data": [53.0, 65.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    result = nextstat.fit(nextstat.from_pyhf(spec))
    m = metrics_dict(result, prefix="fit/")
    assert m["fit/mu"] == result.mu
    assert m["fit/converged"] == 1.0
    assert m["fit/param/uncorr_bkguncrt_0"] == result.value("uncorr_bkguncrt[0]")
    assert m["fit/error/uncorr_bkguncrt_1"] == result.error("uncorr_bkguncrt[1]")
    assert all(type(v) is float for v in m.values())
