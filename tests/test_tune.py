"""Tests for nextstat.tune (Optuna objectives, Ray Tune) and nextstat.infer.patchscan.

Optuna and Ray are optional (``pip install 'nextstat-hep[tune]'``): the tests that need them skip
without them. The Ray tests share one local Ray (``num_cpus=2``) started and shut down by the
module-scoped ``local_ray`` fixture. The patch-scan reference numbers come from pyhf 0.7.6
(``tests/reference/make_patchscan_reference.py``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

import nextstat
from nextstat import testing
from nextstat.builders import binning, build_workspace_from_histograms
from nextstat.infer.patchscan import COLUMNS, hypotest_patch, scan_patches
from nextstat.tune import SortedEvents, direction, score_workspace, significance_objective

REFERENCE = Path(__file__).parent / "reference" / "patchscan_sbottom_A.json"
needs_workspaces = pytest.mark.skipif(not testing.have_workspaces(),
                                      reason="published likelihoods not found ($NEXTSTAT_WORKSPACES)")
EXPECTED = ["cls_exp_m2", "cls_exp_m1", "cls_exp", "cls_exp_p1", "cls_exp_p2"]

# --- the binning study: the recipe of examples/optuna_binning.py -------------------------------
# Classifier-score-like events: background ~ Beta(2, 5) (1000 expected events), signal ~ Beta(5, 2)
# (10 expected events); n_bins equal-width bins between lo and hi, the events outside folded into
# the outer bins; 10% background normsys and staterror. Binnings with a bin of fewer than 10
# effective simulated background events are pruned.
N_SIG, W_SIG = 20_000, 0.0005
N_BKG, W_BKG = 500_000, 0.002
MIN_BKG_EVENTS = 10.0
#: The documented default binning the search has to beat: 10 equal bins over the full score range.
DEFAULT_BINNING = {"n_bins": 10, "lo": 0.0, "hi": 1.0}


@pytest.fixture(scope="module")
def events() -> tuple[SortedEvents, SortedEvents]:
    rng = np.random.default_rng(0)
    return (SortedEvents(rng.beta(5.0, 2.0, N_SIG), np.full(N_SIG, W_SIG)),
            SortedEvents(rng.beta(2.0, 5.0, N_BKG), np.full(N_BKG, W_BKG)))


def make_workspace(events: tuple[SortedEvents, SortedEvents], n_bins: int, lo: float,
                   hi: float) -> dict | None:
    edges = binning(n_bins, lo, hi)
    edges[0], edges[-1] = 0.0, 1.0
    (s, s_w2), (b, b_w2) = (e.histogram(edges) for e in events)
    if np.any(b * b < MIN_BKG_EVENTS * b_w2):
        return None
    return build_workspace_from_histograms(
        s, {"background": b}, normsys={"background": {"bkg_norm": (0.9, 1.1)}},
        staterror={"signal": np.sqrt(s_w2), "background": np.sqrt(b_w2)})


def make_build(events):
    import optuna

    def build(trial):
        ws = make_workspace(events, trial.suggest_int("n_bins", 3, 40),
                            trial.suggest_float("lo", 0.0, 0.3), trial.suggest_float("hi", 0.7, 1.0))
        if ws is None:
            raise optuna.TrialPruned("too few simulated background events in a bin")
        return ws

    return build


# --- score_workspace: closed forms ---------------------------------------------------------------


@pytest.mark.parametrize(("s", "b"), [(5.0, 10.0), (20.0, 400.0), (3.0, 0.5)])
def test_z0_asimov_is_cowan_formula(s, b):
    """One bin, no systematics: Z0 on the Asimov data is sqrt(2((s+b) ln(1+s/b) - s)) (arXiv:1007.1727 Eq. 97)."""
    ws = build_workspace_from_histograms([s], {"bkg": [b]})
    expected = math.sqrt(2.0 * ((s + b) * math.log1p(s / b) - s))
    assert np.isclose(score_workspace(ws), expected, rtol=1e-6)
    # mu scales the injected signal
    assert np.isclose(score_workspace(ws, mu=2.0),
                      math.sqrt(2.0 * ((2 * s + b) * math.log1p(2 * s / b) - 2 * s)), rtol=1e-6)


def test_asimov_ignores_observations_and_observed_uses_them():
    s, b = [5.0, 10.0], [50.0, 10.0]
    background_only = build_workspace_from_histograms(s, {"bkg": b})  # data = background total
    s_plus_b = build_workspace_from_histograms(s, {"bkg": b}, data=[55.0, 20.0])
    assert score_workspace(background_only, data="observed") == 0.0
    assert score_workspace(background_only) == score_workspace(s_plus_b)
    assert np.isclose(score_workspace(s_plus_b, data="observed"), score_workspace(s_plus_b), rtol=1e-8)


def test_cls_and_limit_asimov_closed_form():
    """One bin, no systematics, background-only Asimov data n = b: q_mu = 2 (mu s - b ln(1 + mu s / b))
    and CLs = Phi(-sqrt(q)) / Phi(0) (arXiv:1007.1727 Eqs. 16, 65)."""
    s, b, mu = 4.0, 9.0, 1.5
    ws = build_workspace_from_histograms([s], {"bkg": [b]})
    q = 2.0 * (mu * s - b * math.log1p(mu * s / b))
    assert np.isclose(score_workspace(ws, metric="cls", mu=mu), 2.0 * norm.cdf(-math.sqrt(q)), rtol=1e-6)
    model = nextstat.from_pyhf(ws)
    assert np.isclose(score_workspace(model, metric="upper_limit"),
                      nextstat.upper_limit(model).expected[2], rtol=1e-4)
    limit = score_workspace(ws, metric="upper_limit")
    assert np.isclose(score_workspace(ws, metric="cls", mu=limit), 0.05, atol=1e-5)


def test_score_workspace_rejects_bad_arguments():
    ws = build_workspace_from_histograms([1.0], {"bkg": [5.0]})
    with pytest.raises(ValueError, match="metric"):
        score_workspace(ws, metric="significance")
    with pytest.raises(ValueError, match="data"):
        score_workspace(ws, data="toys")
    with pytest.raises(ValueError, match="mu"):
        score_workspace(ws, metric="cls", mu=0.0)
    with pytest.raises(ValueError, match="mu"):
        score_workspace(ws, mu=float("nan"))
    assert direction("z0") == "maximize"
    assert direction("cls") == direction("upper_limit") == "minimize"


def test_sorted_events_match_numpy_histogram():
    rng = np.random.default_rng(3)
    values, weights = rng.beta(2, 5, 50_000), rng.uniform(0, 2, 50_000)
    values[:50] = 0.5  # ties on an edge
    events = SortedEvents(values, weights)
    for edges in (np.linspace(0, 1, 11), np.linspace(0.1, 0.9, 37), [0.2, 0.5, 0.5 + 1e-9, 1.0]):
        sumw, sumw2 = events.histogram(edges)
        np.testing.assert_allclose(sumw, np.histogram(values, edges, weights=weights)[0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(sumw2, np.histogram(values, edges, weights=weights**2)[0], rtol=0, atol=1e-9)
        counts = SortedEvents(values).histogram(edges)[0]
        np.testing.assert_array_equal(counts, np.histogram(values, edges)[0])
    with pytest.raises(ValueError, match="weights"):
        SortedEvents([0.1, 0.2], [1.0, -1.0])
    with pytest.raises(ValueError, match="bin_edges"):
        events.histogram([0.5, 0.2])


# --- Optuna --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def optuna():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def test_significance_objective_needs_optuna(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'nextstat-hep\[tune\]'"):
        significance_objective(lambda trial: {})


def test_short_study_beats_default_binning(optuna, events):
    default_z0 = score_workspace(make_workspace(events, **DEFAULT_BINNING))
    objective = significance_objective(make_build(events))
    study = optuna.create_study(direction=objective.direction,
                                sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=20)
    assert objective.direction == "maximize"
    assert len(study.trials) == 20
    assert study.best_value > default_z0 * 1.02, (study.best_params, study.best_value, default_z0)
    # the value is the expected Z0 of the best binning, recomputable outside Optuna
    best = make_workspace(events, **study.best_params)
    assert score_workspace(best) == study.best_value


def test_objective_logs_and_prunes_infinite_z0(optuna):
    logged: list[dict] = []

    def build(trial):
        n = trial.suggest_int("n", 1, 2)
        background = [10.0, 0.0] if trial.number == 1 else [10.0, 5.0]  # no background, Z0 = inf
        return build_workspace_from_histograms([1.0, 2.0], {"bkg": background}, data=[10.0, 5.0 * (n > 0)])

    objective = significance_objective(build, log_to=logged.append, log_prefix="bin/")
    study = optuna.create_study(direction=objective.direction, sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(objective, n_trials=2)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert len(logged) == 2
    assert set(logged[0]) == {"bin/z0", "bin/q0", "bin/step_time_ms", "bin/trial", "bin/param/n"}
    assert logged[0]["bin/z0"] == study.trials[0].value
    assert np.isclose(logged[0]["bin/q0"], study.trials[0].value ** 2)
    # no background: q0 is infinite, the score is refused and the trial pruned (logged as such)
    assert logged[1]["bin/pruned"] == 1.0 and "bin/z0" not in logged[1] and logged[1]["bin/trial"] == 1.0
    assert all(type(v) is float for d in logged for v in d.values())


def test_objective_cls_metric_minimises(optuna):
    objective = significance_objective(
        lambda trial: build_workspace_from_histograms([trial.suggest_float("s", 1.0, 5.0)], {"bkg": [10.0]}),
        metric="cls", mu=1.0)
    study = optuna.create_study(direction=objective.direction, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=5)
    assert objective.direction == "minimize"
    best_s = study.best_params["s"]
    assert best_s == max(t.params["s"] for t in study.trials)  # more signal, smaller CLs
    with pytest.raises(ValueError, match="mu"):
        significance_objective(lambda trial: {}, metric="cls", mu=-1.0)
    with pytest.raises(TypeError, match="log_to"):
        significance_objective(lambda trial: {}, log_to="wandb")


def test_objective_logs_to_offline_wandb_run(optuna, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for var, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
                       "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
                       "WANDB_CONFIG_DIR": str(tmp_path / "config"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                       "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(var, value)
    run = wandb.init(project="nextstat-test")
    try:
        objective = significance_objective(
            lambda trial: build_workspace_from_histograms([trial.suggest_float("s", 1.0, 5.0)], {"bkg": [10.0]}),
            log_to=run.log)
        study = optuna.create_study(direction=objective.direction, sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(objective, n_trials=3)
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
        wandb.teardown()
    records = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                             capture_output=True, text=True, check=True, timeout=60)
    history = [rec["history"]["item"] for rec in map(json.loads, records.stdout.splitlines())
               if rec.get("type") == "history"]
    rows = [row for row in history if "tune/z0" in row]
    assert [row["tune/z0"] for row in rows] == [t.value for t in study.trials]
    assert [row["tune/param/s"] for row in rows] == [t.params["s"] for t in study.trials]
    assert [row["tune/trial"] for row in rows] == [0, 1, 2]


def test_rdb_storage_shared_across_load_study(optuna, events, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    objective = significance_objective(make_build(events))
    optuna.create_study(storage=storage, study_name="binning", direction=objective.direction,
                        sampler=optuna.samplers.TPESampler(seed=0))
    first = optuna.load_study(study_name="binning", storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=1))
    first.optimize(objective, n_trials=4)
    second = optuna.load_study(study_name="binning", storage=storage,
                               sampler=optuna.samplers.TPESampler(seed=2))
    assert len(second.trials) == 4
    second.optimize(objective, n_trials=4)
    final = optuna.load_study(study_name="binning", storage=storage)
    assert [t.number for t in final.trials] == list(range(8))
    assert final.direction == optuna.study.StudyDirection.MAXIMIZE
    complete = [t for t in final.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and final.best_value == max(t.value for t in complete)
    assert score_workspace(make_workspace(events, **final.best_params)) == final.best_value


# --- patch scans ---------------------------------------------------------------------------------


def small_background() -> dict:
    return build_workspace_from_histograms([0.0, 0.0], {"bkg": [50.0, 10.0]}, data=[52.0, 11.0],
                                           normsys={"bkg": {"bkg_norm": (0.9, 1.1)}})


def signal_patch(scale: float) -> list[dict]:
    return [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [scale, 3.0 * scale]}]


def test_hypotest_patch_equals_hypotest():
    background, patch = small_background(), signal_patch(2.0)
    row = hypotest_patch(background, patch, mu=1.0)
    result = nextstat.hypotest(nextstat.from_pyhf(background, patches=[patch]), 1.0)
    assert list(row) == list(COLUMNS)
    assert row["cls_obs"] == result.cls
    assert [row[c] for c in EXPECTED] == list(result.cls_expected)
    assert row["mu_hat"] == result.mu_hat and row["converged"] is True


def test_scan_patches_input_forms_and_executors():
    background = small_background()
    entries = [{"metadata": {"name": f"s{k}", "values": [k]}, "patch": signal_patch(float(k))} for k in (1, 2, 4)]
    patchset = {"metadata": {"description": "test"}, "patches": entries, "version": "1.0.0"}
    serial = scan_patches(background, patchset, progress=False)
    assert list(serial.columns) == ["patch", *COLUMNS]
    assert serial.patch.tolist() == ["s1", "s2", "s4"]
    assert serial.converged.dtype == bool and serial.converged.all()
    assert serial.cls_obs.is_monotonic_decreasing  # more signal, smaller CLs
    assert (np.diff(serial[EXPECTED].to_numpy(), axis=1) > 0).all()  # -2 sigma band smallest
    as_mapping = scan_patches(background, {e["metadata"]["name"]: e["patch"] for e in entries}, progress=False)
    assert as_mapping.equals(serial)
    as_list = scan_patches(background, [e["patch"] for e in entries], progress=False)
    assert as_list.patch.tolist() == ["patch_0", "patch_1", "patch_2"]
    assert as_list.drop(columns="patch").equals(serial.drop(columns="patch"))
    assert scan_patches(background, json.dumps(patchset), progress=False).equals(serial)
    with ThreadPoolExecutor(2) as pool:
        assert scan_patches(background, patchset, executor=pool, progress=False).equals(serial)
    assert scan_patches(background, patchset, executor="process", n_workers=2, progress=False).equals(serial)


def test_scan_patches_errors():
    background = small_background()
    with pytest.raises(ValueError, match="single JSON Patch"):
        scan_patches(background, signal_patch(1.0), progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        scan_patches(background, [{"metadata": {"name": "a"}, "patch": signal_patch(1.0)}] * 2, progress=False)
    with pytest.raises(ValueError, match="at least one"):
        scan_patches(background, [], progress=False)
    with pytest.raises(ValueError, match="executor"):
        scan_patches(background, [signal_patch(1.0)], executor="dask", progress=False)
    with pytest.raises(ValueError, match="mu"):
        scan_patches(background, [signal_patch(1.0)], mu=0.0, progress=False)
    with pytest.raises(ValueError, match="test_stat"):
        scan_patches(background, [signal_patch(1.0)], test_stat="q0", progress=False)
    bad = [{"op": "replace", "path": "/channels/7/samples/0/data", "value": [1.0, 1.0]}]
    with pytest.raises(nextstat.WorkspaceError) as info:
        scan_patches(background, {"good": signal_patch(1.0), "broken": bad}, progress=False)
    assert "'broken'" in " ".join(getattr(info.value, "__notes__", []))


@pytest.fixture(scope="module")
def sbottom_reference() -> tuple[dict, dict, dict]:
    if not testing.have_workspaces():
        pytest.skip("published likelihoods not found ($NEXTSTAT_WORKSPACES)")
    reference = json.loads(REFERENCE.read_text())
    region = reference["region"]
    patches = {name: testing.sbottom_patch(region, name) for name in reference["patches"]}
    return testing.sbottom(region), patches, reference


# --- Ray -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for this module's Ray tests, shut down at the end."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_tune_two_workers(optuna, local_ray, events, tmp_path):
    from ray import cloudpickle, tune
    from ray.tune.search.optuna import OptunaSearch

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this file
    try:
        def trainable(config, events):
            ws = make_workspace(events, config["n_bins"], config["lo"], config["hi"])
            tune.report({"z0": 0.0 if ws is None else score_workspace(ws), "valid": ws is not None})

        searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0), metric="z0", mode="max")
        tuner = tune.Tuner(
            tune.with_parameters(trainable, events=events),
            param_space={"n_bins": tune.randint(3, 41), "lo": tune.uniform(0.0, 0.3),
                         "hi": tune.uniform(0.7, 1.0)},
            tune_config=tune.TuneConfig(num_samples=4, max_concurrent_trials=2, search_alg=searcher,
                                        metric="z0", mode="max", reuse_actors=True),
            run_config=tune.RunConfig(name="binning", storage_path=str(tmp_path), verbose=0),
        )
        results = tuner.fit()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert results.num_errors == 0 and len(results) == 4
    best = results.get_best_result()
    assert best.metrics["z0"] == max(r.metrics["z0"] for r in results)
    assert best.metrics["valid"]
    # computed in a Ray worker, recomputed here: the same number
    assert best.metrics["z0"] == score_workspace(make_workspace(events, **best.config))


def test_scan_patches_ray_matches_pyhf_and_serial(local_ray, sbottom_reference):
    background, patches, reference = sbottom_reference
    table = scan_patches(background, patches, executor="ray", progress=False)
    assert local_ray.is_initialized()  # a Ray it did not start is left running
    assert table.patch.tolist() == list(patches)
    assert table.converged.all()
    for _, row in table.iterrows():
        ref = reference["patches"][row.patch]
        assert abs(row.cls_obs - ref["cls_obs"]) < 1e-5, row.patch
        np.testing.assert_allclose(row[EXPECTED].to_numpy(float), ref["cls_exp"], rtol=0, atol=1e-5)
    assert table.equals(scan_patches(background, patches, executor="serial", progress=False))
    capped = scan_patches(background, dict(list(patches.items())[:2]), executor="ray", n_workers=1,
                          progress=False)
    assert capped.equals(table.iloc[:2])
