r"""The INFERNO "3D synthetic mixture" problem (de Castro & Dorigo, arXiv:1806.04743, sec. 5.2):
data, nuisance transforms, the HistFactory model of its benchmarks 0-4, networks, training and
the figures of merit. Used by ``benchmarks/bench_inferno.py`` (the published comparison) and
``nextstat demo --benchmark inferno`` (a short run of benchmark 2).

* **Data**: signal (x0, x1) ~ N((0, 0), I), x2 ~ Exp(rate 2); background (x0, x1) ~
  N((r, 0), diag(5, 9)) with r = 2, x2 ~ Exp(rate lambda = 3); 50 signal and 1000 background
  events expected. Nuisances act on background events as INFERNO's input transforms:
  x0 -> x0 - 2 + r, x2 -> x2 * 3 / lambda; templates at r in {1.8, 2.0, 2.2}, lambda in
  {2.5, 3.0, 3.5}.
* **Model** (pyhf JSON, one channel, 10 bins, histosys code2 = INFERNO's quadratic-inside /
  linear-outside interpolation): ``signal`` with normfactor ``mu`` (``sigma(s) = 50 sigma(mu)``);
  ``background`` with histosys ``r`` (alpha = (r - 2) / 0.2) and ``lam`` (alpha = (lambda - 3) /
  0.5) where the benchmark lets them float, and the ``lumi``-type modifier ``b_norm`` (auxdata 1,
  sigma 0.1: b ~ N(1000, 100) exactly) in benchmark 4. Free nuisances without a constraint get
  ``sigmas: [1e4]`` (:mod:`nextstat.torch.variance`); INFERNO's r ~ N(2, 0.4) and lambda ~ N(3, 1)
  are N(0, 2) on alpha.
* **Networks**: 3 -> 100 ReLU -> 100 ReLU -> 10 (the bins) or 2 (BCE), He-normal weights.
* **Figure of merit**: ``sigma(s)`` from the Hesse error of ``mu`` (:func:`nextstat.fit`) on the
  Asimov data (mu = 1, nominal nuisances) of hard 10-bin test histograms; also the median
  expected Z0 and CLs (mu = 1) from :func:`nextstat.hypotest`.

>>> x = shifted(torch.tensor([[2.0, 0.0, 1.0]]), r=2.2, lam=2.5)
>>> [round(v, 6) for v in x[0].tolist()]
[2.2, 0.0, 1.2]
"""

from __future__ import annotations

import json
import statistics
import sys
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["BENCHMARKS", "PUBLISHED", "Benchmark", "Metrics", "Settings", "background_variants", "dataset",
           "evaluate", "hard_histograms", "load_model", "loss_session", "make_data", "make_network", "shifted",
           "soft_mapping", "train_bce", "train_summary", "workspace"]

N_BINS = 10
S_EXP, B_EXP = 50.0, 1000.0
R0, LAM0 = 2.0, 3.0
R_SHIFT = {"hi": 2.2, "lo": 1.8}
LAM_SHIFT = {"hi": 3.5, "lo": 2.5}
UNCONSTRAINED = 1e4  # sigma of alpha for a free nuisance (nextstat.torch.variance module doc)
MODIFIER_SETTINGS = {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code2"}}
SOFT_FLOOR = 1e-6  # per-bin fraction added to the soft histograms in training (a softmax underflows to 0)
SEEDS = {"train": 27, "test": 47}
SIZES = {"train": 100_000, "test": 500_000}


@dataclass(frozen=True)
class Benchmark:
    """Free nuisances and the sigma of their alpha constraint (``None``: unconstrained)."""

    nuisances: dict[str, float | None]
    b_norm: bool


BENCHMARKS = {
    0: Benchmark({}, False),
    1: Benchmark({"r": None}, False),
    2: Benchmark({"r": None, "lam": None}, False),
    3: Benchmark({"r": 2.0, "lam": 2.0}, False),
    4: Benchmark({"r": 2.0, "lam": 2.0}, True),
}
PUBLISHED = {  # INFERNO paper/table.tex, medians over 100 initialisations
    "bce": [14.99, 18.94, 23.94, 21.54, 26.71],
    "inferno": [15.51, 16.79, 16.95, 16.89, 18.68],
    "floor": [14.71, 15.52, 15.65, 15.62, 16.89],
}


@dataclass(frozen=True)
class Settings:
    """Training settings (the defaults are INFERNO's; module doc)."""

    epochs: int = 200
    batch: int = 2000
    lr: float = 1e-6
    optimizer: str = "sgd"
    schedule: str = "constant"
    temperature: float = 0.1
    bce_epochs: int = 200
    bce_batch: int = 64
    bce_lr: float = 1e-3
    bce_optimizer: str = "sgd"
    z0_epochs: int = 200
    z0_lr: float = 1e-3
    n_train: int = SIZES["train"]
    n_test: int = SIZES["test"]

    def key(self) -> str:
        """The settings as a canonical JSON string (runs with equal keys are pooled)."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Metrics:
    """The figures of merit of one trained network on one benchmark (:func:`evaluate`):
    ``sigma_s`` (events), ``z0``, ``cls``, and whether every fit of the two hypotests converged."""

    sigma_s: float
    z0: float | None
    cls: float | None
    hypotest_converged: bool


# ------------------------------------------------------------------------------------------------
# Data, nuisances, networks
# ------------------------------------------------------------------------------------------------


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal, background) ``[n, 3]`` float32 at the nominal r = 2, lambda = 3."""
    rng = np.random.default_rng(seed)
    sig = np.column_stack([rng.normal(0.0, 1.0, n), rng.normal(0.0, 1.0, n), rng.exponential(1 / 2.0, n)])
    bkg = np.column_stack([rng.normal(R0, np.sqrt(5.0), n), rng.normal(0.0, 3.0, n), rng.exponential(1 / LAM0, n)])
    return torch.as_tensor(sig, dtype=torch.float32), torch.as_tensor(bkg, dtype=torch.float32)


@lru_cache(maxsize=2)
def dataset(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``make_data(n, seed)`` with INFERNO's seed of ``split`` ("train": 27, "test": 47), cached."""
    return make_data(n, SEEDS[split])


def shifted(x: torch.Tensor, r: float = R0, lam: float = LAM0) -> torch.Tensor:
    """Background events at nuisance values (r, lambda): INFERNO's input transforms."""
    out = x.clone()
    out[:, 0] += r - R0
    out[:, 2] *= LAM0 / lam
    return out


def background_variants(bench: Benchmark, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"nominal": x, "<nuisance>_hi": ..., "<nuisance>_lo": ...}`` for the free shape nuisances."""
    out = {"nominal": x}
    for name in bench.nuisances:
        for side in ("hi", "lo"):
            out[f"{name}_{side}"] = shifted(x, r=R_SHIFT[side]) if name == "r" else shifted(x, lam=LAM_SHIFT[side])
    return out


def make_network(n_out: int, seed: int) -> nn.Module:
    """INFERNO's network 3 -> 100 ReLU -> 100 ReLU -> ``n_out`` (He-normal weights, zero biases)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, n_out))
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return net


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


def workspace(signal: np.ndarray, bkg: dict[str, np.ndarray], bench: Benchmark) -> dict[str, Any]:
    """pyhf JSON of a benchmark (module doc); ``bkg`` as :func:`background_variants` names them.
    The observations are the nominal background (the figures of merit do not use them)."""
    lst = lambda a: [float(v) for v in a]  # noqa: E731
    mods: list[dict[str, Any]] = []
    params: list[dict[str, Any]] = [{"name": "mu", "bounds": [[0.0, 10.0]], "inits": [1.0]}]
    for name, sigma in bench.nuisances.items():
        mods.append({"name": name, "type": "histosys",
                     "data": {"hi_data": lst(bkg[f"{name}_hi"]), "lo_data": lst(bkg[f"{name}_lo"])}})
        params.append({"name": name, "sigmas": [UNCONSTRAINED if sigma is None else sigma]})
    if bench.b_norm:
        mods.append({"name": "b_norm", "type": "lumi", "data": None})
        params.append({"name": "b_norm", "auxdata": [1.0], "sigmas": [0.1], "bounds": [[0.5, 1.5]], "inits": [1.0]})
    return {
        "channels": [{"name": "sr", "samples": [
            {"name": "signal", "data": lst(signal), "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": lst(bkg["nominal"]), "modifiers": mods}]}],
        "observations": [{"name": "sr", "data": lst(bkg["nominal"])}],
        "measurements": [{"name": "inferno", "config": {"poi": "mu", "parameters": params}}],
        "version": "1.0.0",
    }


def load_model(ws: dict[str, Any]):
    """:func:`nextstat.from_pyhf` with histosys code2 (INFERNO's interpolation)."""
    import nextstat

    return nextstat.from_pyhf(ws, modifier_settings=MODIFIER_SETTINGS)


def evaluate(signal: np.ndarray, bkg: dict[str, np.ndarray], bench: Benchmark) -> Metrics:
    """The figures of merit of histograms ``[10]`` (module doc): ``sigma(s) = 50 sigma(mu)``
    (events; Hesse on the Asimov data at mu = 1), the median expected Z0 and CLs at mu = 1
    (``None`` where :func:`nextstat.hypotest` refuses: a bin with signal and no background)."""
    import nextstat

    model = load_model(workspace(signal, bkg, bench))
    asimov = model.expected_data(model.suggested_init())
    fit = nextstat.fit(model, data=asimov)
    if not fit.converged:
        raise RuntimeError(f"the Asimov fit did not converge: {fit}")
    z0: float | None = None
    cls: float | None = None
    converged = True
    try:  # refused (ValueError) where a bin has signal but no background: Z0 is infinite there
        with warnings.catch_warnings():  # carried by ``converged`` instead
            warnings.simplefilter("ignore", nextstat.ConvergenceWarning)
            h0, h1 = nextstat.hypotest(model, 0.0), nextstat.hypotest(model, 1.0)
        z0, cls, converged = float(h0.significance_expected), float(h1.cls_expected[2]), h0.converged and h1.converged
    except ValueError as exc:
        print(f"hypotest refused ({exc}); Z0 and CLs not reported for this network", file=sys.stderr)
    return Metrics(S_EXP * float(fit.errors[model.poi_index]), z0, cls, bool(converged))


def hard_histograms(net: nn.Module, bench: Benchmark, n_test: int, bce: bool) -> tuple[np.ndarray, dict]:
    """Test-set yields ``[10]`` (events) of the signal and of :func:`background_variants`: the
    argmax bin (10 outputs) or the signal probability in 10 bins on [0, 1] (BCE)."""
    sig, bkg = dataset("test", n_test)

    def hist(x: torch.Tensor, total: float) -> np.ndarray:
        with torch.no_grad():
            out = net(x)
            if bce:
                p = torch.softmax(out, 1)[:, 1].double().numpy()
                idx = np.minimum((p * N_BINS).astype(np.int64), N_BINS - 1)
            else:
                idx = out.argmax(1).numpy()
        return np.bincount(idx, minlength=N_BINS) * (total / len(x))

    return hist(sig, S_EXP), {k: hist(v, B_EXP) for k, v in background_variants(bench, bkg).items()}


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def _batches(n: int, size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, size):
        yield perm[i:i + size]


def soft_mapping(net: nn.Module, xs: torch.Tensor, xb: torch.Tensor, bench: Benchmark, temperature: float) -> Any:
    """The losses' mapping input (:mod:`nextstat.torch.inputs`): soft histograms ``[10]`` (float64,
    events) of the signal, the background and its shape templates, each the batch mean of
    ``softmax(net(x) / temperature)`` plus a floor of 1e-6, times the sample's yield."""

    def h(x: torch.Tensor, total: float) -> torch.Tensor:
        return ((torch.softmax(net(x) / temperature, 1).double().mean(0) + SOFT_FLOOR) * total)

    variants = background_variants(bench, xb)
    bkg = h(xb, B_EXP)
    if not bench.nuisances:
        return {"signal": h(xs, S_EXP), "background": bkg}
    systs = {name: {"hi_data": h(variants[f"{name}_hi"], B_EXP), "lo_data": h(variants[f"{name}_lo"], B_EXP)}
             for name in bench.nuisances}
    return {"signal": h(xs, S_EXP), "background": {"nominal": bkg, "histosys": systs}}


def loss_session(bench: Benchmark, kind: str):
    """What the training loss of ``kind`` needs, on the benchmark's model with flat templates
    (every call replaces them with the network's): a
    :class:`~nextstat.torch.ProfiledSession` for "variance"
    (:func:`~nextstat.torch.profiled_poi_variance_loss`), a
    :class:`~nextstat.torch.SignificanceLoss` for "z0". Both fit with Numba (thousands of
    small steps: the fast CPU path, compiled here on a first use rather than served by the PyTorch
    fitter meanwhile)."""
    from nextstat.torch import ProfiledSession, SignificanceLoss

    flat_b = np.full(N_BINS, B_EXP / N_BINS)
    bkg = {"nominal": flat_b}
    for i, name in enumerate(bench.nuisances):
        bkg[f"{name}_hi"], bkg[f"{name}_lo"] = flat_b * (1.02 + 0.01 * i), flat_b * (0.98 - 0.01 * i)
    model = load_model(workspace(np.full(N_BINS, S_EXP / N_BINS), bkg, bench))
    if kind == "z0":
        return SignificanceLoss(model, "signal", device="cpu", fit_backend="numba")
    return ProfiledSession(model, "signal", device="cpu", data="expected", fit_backend="numba")


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name not in ("sgd", "adam"):
        raise ValueError(f'optimizer: expected "sgd" or "adam", got {name!r}')
    return torch.optim.SGD(params, lr=lr) if name == "sgd" else torch.optim.Adam(params, lr=lr)


def train_summary(kind: str, bench: Benchmark, seed: int, st: Settings, *,
                  progress: bool | None = False) -> tuple[nn.Module, list[float]]:
    """Train the 10-bin network (seed ``seed``) on ``kind``: "variance" (the loss ``var(s) =
    2500 var(mu)``, :func:`nextstat.torch.profiled_poi_variance_loss`; INFERNO's Algorithm 1) or
    "z0" (``-Z0``, :class:`nextstat.torch.SignificanceLoss`), with soft histograms of batches of
    ``st.batch`` signal + ``st.batch`` background events (:func:`soft_mapping`).

    Returns:
        the network and the mean training loss of each epoch (``var(s)`` in events squared, or
        ``-Z0``).
    """
    from nextstat.progress import bar
    from nextstat.torch import profiled_poi_variance_loss

    if kind not in ("variance", "z0"):
        raise ValueError(f'kind: expected "variance" or "z0", got {kind!r}')

    net = make_network(N_BINS, seed)
    if kind == "variance":
        opt, epochs = _optimizer(st.optimizer, net.parameters(), st.lr), st.epochs
    else:
        opt, epochs = _optimizer("adam", net.parameters(), st.z0_lr), st.z0_epochs
    if st.schedule not in ("constant", "cosine"):
        raise ValueError(f'schedule: expected "constant" or "cosine", got {st.schedule!r}')
    # cosine: the learning rate falls from lr to 0 over the epochs (stepped once per epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if st.schedule == "cosine" else None
    loss_obj = loss_session(bench, kind)
    xs_all, xb_all = dataset("train", st.n_train)
    gen = torch.Generator().manual_seed(seed)
    curve: list[float] = []
    for _ in bar(range(epochs), progress=progress, desc=f"{kind} training", leave=False):
        losses = []
        for idx in _batches(st.n_train, st.batch, gen):
            mapping = soft_mapping(net, xs_all[idx], xb_all[idx], bench, st.temperature)
            if kind == "variance":
                loss = S_EXP ** 2 * profiled_poi_variance_loss(mapping, loss_obj)
            else:
                loss = loss_obj(mapping)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        curve.append(statistics.fmean(losses))
        if sched is not None:
            sched.step()
    return net, curve


def train_bce(seed: int, st: Settings, *, progress: bool | None = False) -> tuple[nn.Module, list[float]]:
    """Train the 2-class baseline (seed ``seed``) on cross-entropy, signal vs nominal background,
    batches of ``st.bce_batch`` + ``st.bce_batch`` events. Returns the network and the mean loss
    of each epoch."""
    from nextstat.progress import bar

    net = make_network(2, seed)
    opt = _optimizer(st.bce_optimizer, net.parameters(), st.bce_lr)
    xs_all, xb_all = dataset("train", st.n_train)
    gen = torch.Generator().manual_seed(seed)
    ce = nn.CrossEntropyLoss()
    curve: list[float] = []
    for _ in bar(range(st.bce_epochs), progress=progress, desc="BCE training", leave=False):
        total, n = 0.0, 0
        for idx in _batches(st.n_train, st.bce_batch, gen):
            x = torch.cat([xs_all[idx], xb_all[idx]])
            y = torch.cat([torch.ones(len(idx), dtype=torch.long), torch.zeros(len(idx), dtype=torch.long)])
            loss = ce(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        curve.append(total / n)
    return net, curve
