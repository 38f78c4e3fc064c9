"""Toys at scale: runs split over jobs (``first_toy``) merge into one run, travel as files, and
run on a Ray cluster with the serial run's numbers.

The oracle is the single serial run with the same seed: a split run must reproduce it array by
array (so CLs, CLsb, CLb and the expected band are identical, not just close).
"""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest

import nextstat
from nextstat.builders import build_workspace_from_histograms
from nextstat.infer.toys import (
    RNG_BLOCK,
    fit_toys,
    hypotest_from_toys,
    hypotest_toys,
    sample_toys,
    toy_distributions,
)
from nextstat.results import HypotestResult, ToyDistributions, ToyFitResults


@pytest.fixture(scope="module")
def model():
    ws = build_workspace_from_histograms([6.0, 9.0], {"b": [40.0, 30.0]}, data=[46.0, 37.0],
                                         normsys={"b": {"b_norm": (0.9, 1.1)}})
    return nextstat.from_pyhf(ws)


def _equal_results(a: HypotestResult, b: HypotestResult) -> None:
    for f in dataclasses.fields(HypotestResult):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


# --- fit_toys ------------------------------------------------------------------------------------


def test_split_fit_toys_equal_one_run(model, tmp_path) -> None:
    pars = model.suggested_init()
    # ranges not aligned to the random-number blocks, merged out of order
    edges = [0, 100, RNG_BLOCK + 7, 600]
    parts = [fit_toys(model, pars, n_toys=b - a, first_toy=a, seed=11, progress=False, return_data=True)
             for a, b in zip(edges[:-1], edges[1:])]
    whole = fit_toys(model, pars, n_toys=600, seed=11, progress=False, return_data=True)
    merged = ToyFitResults.concatenate(parts[::-1])
    for name in ("bestfit", "nll", "converged", "n_iter", "toy_data", "toy_index", "pars"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(whole.toy_index, np.arange(600))
    np.testing.assert_array_equal(sample_toys(model, pars, 50, seed=11, first_toy=100), whole.toy_data[100:150])
    assert merged.seed == 11 and merged.n_toys == 600 and merged.parameter_names == whole.parameter_names
    assert merged.time_s == pytest.approx(sum(p.time_s for p in parts))

    path = tmp_path / "toys.part"  # saved under the name given, no suffix added
    merged.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["toys.part"]
    back = ToyFitResults.load(path)
    for f in dataclasses.fields(ToyFitResults):
        x, y = getattr(back, f.name), getattr(merged, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name
    with np.load(path, allow_pickle=False) as npz:  # the documented layout
        meta = json.loads(str(npz["__metadata__"]))
        assert (meta["format"], meta["version"], meta["kind"], meta["seed"]) == ("nextstat-result", 1, "ToyFitResults", 11)
        assert npz["bestfit"].shape == (600, model.n_params)


def test_fits_of_given_datasets_append_in_order(model) -> None:
    data = sample_toys(model, model.suggested_init(), 30, seed=2)
    a = fit_toys(model, model.suggested_init(), data=data[:10], progress=False)
    b = fit_toys(model, model.suggested_init(), data=data[10:], progress=False)
    assert a.toy_index is None and a.pars is None
    merged = ToyFitResults.concatenate([a, b])
    whole = fit_toys(model, model.suggested_init(), data=data, progress=False)
    np.testing.assert_array_equal(merged.bestfit, whole.bestfit)
    assert merged.toy_index is None
    with pytest.raises(ValueError, match="first_toy"):
        fit_toys(model, model.suggested_init(), data=data, first_toy=3, progress=False)


def test_concatenate_refuses_what_is_not_one_run(model) -> None:
    pars = model.suggested_init()
    a = fit_toys(model, pars, n_toys=20, seed=1, progress=False)
    with pytest.raises(ValueError, match="toy 5 .* more than one part"):
        ToyFitResults.concatenate([a, fit_toys(model, pars, n_toys=20, first_toy=5, seed=1, progress=False)])
    with pytest.raises(ValueError, match=r"parts\[1\].seed"):
        ToyFitResults.concatenate([a, fit_toys(model, pars, n_toys=20, first_toy=20, seed=2, progress=False)])
    with pytest.raises(ValueError, match=r"parts\[1\].pars"):
        ToyFitResults.concatenate([a, fit_toys(model, pars * 1.1, n_toys=20, first_toy=20, seed=1, progress=False)])
    with pytest.raises(ValueError, match="toy_data is kept by some parts only"):
        ToyFitResults.concatenate([a, fit_toys(model, pars, n_toys=5, first_toy=20, seed=1, progress=False,
                                               return_data=True)])
    with pytest.raises(ValueError, match="given datasets"):
        ToyFitResults.concatenate([a, fit_toys(model, pars, data=sample_toys(model, pars, 3), progress=False)])
    with pytest.raises(TypeError, match="non-empty sequence"):
        ToyFitResults.concatenate([])
    with pytest.raises(TypeError, match=r"parts\[0\]"):
        ToyFitResults.concatenate([object()])
    with pytest.raises(ValueError, match="first_toy"):
        fit_toys(model, pars, n_toys=5, first_toy=-1, progress=False)


def test_load_refuses_other_files(model, tmp_path) -> None:
    a = fit_toys(model, model.suggested_init(), n_toys=5, seed=1, progress=False)
    path = tmp_path / "a.npz"
    a.save(path)
    with pytest.raises(ValueError, match="holds a 'ToyFitResults', not a 'ToyDistributions'"):
        ToyDistributions.load(path)
    text = tmp_path / "b.npz"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="not a NextStat result file"):
        ToyFitResults.load(text)
    plain = tmp_path / "c.npz"
    np.savez(plain, x=np.zeros(3))
    with pytest.raises(ValueError, match="no '__metadata__' entry"):
        ToyFitResults.load(plain)
    with pytest.raises(FileNotFoundError):
        ToyFitResults.load(tmp_path / "missing.npz")
    # a newer format version is refused
    newer = tmp_path / "d.npz"
    with zipfile.ZipFile(path) as z:
        arrays = {n[:-4]: np.load(z.open(n)) for n in z.namelist()}
    meta = json.loads(str(arrays.pop("__metadata__")))
    meta["version"] = 99
    np.savez(newer, __metadata__=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(ValueError, match="format version 99"):
        ToyFitResults.load(newer)


# --- toy-based hypothesis test -----------------------------------------------------------------


def test_split_hypotest_equals_one_run(model, tmp_path) -> None:
    kw = dict(test_stat="qtilde", seed=5, progress=False)
    whole = hypotest_toys(model, 1.0, n_toys=400, **kw)
    parts = [toy_distributions(model, 1.0, n_toys=n, first_toy=a, **kw) for a, n in ((0, 150), (150, 250))]
    paths = []
    for k, p in enumerate(parts):
        paths.append(tmp_path / f"job{k}.npz")
        p.save(paths[k])
    loaded = [ToyDistributions.load(p) for p in paths[::-1]]
    merged = ToyDistributions.concatenate(loaded)
    assert merged.n_toys == (400, 400) and merged.seed == 5 and merged.n_failed == 0
    np.testing.assert_array_equal(merged.index_sb, np.arange(400))
    _equal_results(hypotest_from_toys(merged), whole)
    assert whole.cls_expected is not None and 0 < whole.cls < 1
    # the distributions of one call are what hypotest_toys turns into CLs
    one = toy_distributions(model, 1.0, n_toys=400, **kw)
    np.testing.assert_array_equal(one.q_b, merged.q_b)
    _equal_results(hypotest_from_toys(one, return_expected=False),
                   hypotest_toys(model, 1.0, n_toys=400, return_expected=False, **kw))
    df = merged.to_dataframe()
    assert list(df.columns) == ["hypothesis", "toy", "q", "converged"] and len(df) == 800


def test_discovery_split_equals_one_run(model) -> None:
    kw = dict(test_stat="q0", seed=9, progress=False)
    whole = hypotest_toys(model, 0.0, n_toys=300, **kw)
    parts = [toy_distributions(model, 0.0, n_toys=150, first_toy=a, **kw) for a in (150, 0)]
    _equal_results(hypotest_from_toys(ToyDistributions.concatenate(parts)), whole)


def test_distributions_concatenate_refusals(model) -> None:
    kw = dict(n_toys=20, progress=False)
    a = toy_distributions(model, 1.0, seed=1, **kw)
    for other, match in [(toy_distributions(model, 2.0, seed=1, first_toy=20, **kw), "mu_test"),
                         (toy_distributions(model, 1.0, seed=2, first_toy=20, **kw), "seed"),
                         (toy_distributions(model, 1.0, seed=1, first_toy=20, test_stat="q", **kw), "test_stat"),
                         (toy_distributions(model, 1.0, seed=1, first_toy=10, **kw), "more than one part"),
                         (toy_distributions(model, 1.0, seed=1, first_toy=20, data=[50.0, 40.0], **kw), "q_obs")]:
        with pytest.raises(ValueError, match=match):
            ToyDistributions.concatenate([a, other])
    with pytest.raises(TypeError, match="ToyDistributions"):
        hypotest_from_toys(fit_toys(model, model.suggested_init(), n_toys=3, progress=False))
    with pytest.raises(ValueError, match="executor"):
        hypotest_toys(model, 1.0, n_toys=3, executor="dask", progress=False)
    with pytest.raises(ValueError, match="n_workers"):
        hypotest_toys(model, 1.0, n_toys=3, executor="ray", n_workers=0, progress=False)


# --- Ray ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_executor_equals_serial(model, local_ray) -> None:
    kw = dict(n_toys_sb=2 * RNG_BLOCK + 10, n_toys_b=RNG_BLOCK, seed=4, first_toy=3, progress=False)
    serial = toy_distributions(model, 1.0, **kw)
    on_ray = toy_distributions(model, 1.0, executor="ray", **kw)
    assert local_ray.is_initialized()  # a Ray it did not start is left running
    for name in ("q_sb", "ok_sb", "index_sb", "q_b", "ok_b", "index_b", "pars_sb", "pars_b"):
        np.testing.assert_array_equal(getattr(on_ray, name), getattr(serial, name), err_msg=name)
    assert (on_ray.q_obs, on_ray.mu_hat) == (serial.q_obs, serial.mu_hat)
    _equal_results(hypotest_toys(model, 1.0, executor="ray", n_workers=1, **kw), hypotest_from_toys(serial))
