"""Build HistFactory workspaces (pyhf JSON) from histograms or from raw events.

The builders return a plain ``dict`` following the pyhf 0.7.6 workspace schema
(``channels``, ``observations``, ``measurements``, ``version``), ready for
``nextstat.from_pyhf``, ``pyhf.Workspace`` or ``json.dump``.

One channel is built per call; :func:`combine_workspaces` joins channels built
separately. Every per-sample option (``normsys``, ``histosys``, ``staterror``,
``shapesys``) is a mapping keyed by sample name, the signal included, mirroring
the JSON nesting channel -> sample -> modifiers.

Example: a physicist's scores and weights, binned for a search, in one call:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ws = build_workspace_from_events(
...     signal=(rng.beta(5, 2, 1000), np.full(1000, 0.01)),
...     backgrounds={"ttbar": (rng.beta(2, 5, 5000), np.full(5000, 0.2))},
...     bin_edges=binning(4, 0.0, 1.0),
...     staterror=True,
...     normsys={"ttbar": {"ttbar_xsec": (0.95, 1.05)}},
...     lumi=0.017,
... )
>>> [s["name"] for s in ws["channels"][0]["samples"]]
['signal', 'ttbar']
>>> len(ws["observations"][0]["data"])
4
"""

from __future__ import annotations

import copy
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "binning",
    "build_workspace_from_events",
    "build_workspace_from_histograms",
    "combine_workspaces",
]

#: Events of one sample: ``values`` ``[N]`` (unit weights) or ``(values, weights)``.
Events: TypeAlias = ArrayLike | tuple[ArrayLike, ArrayLike | None]

_WORKSPACE_VERSION = "1.0.0"
_LUMI = "lumi"


def binning(n_bins: int, lo: float, hi: float) -> np.ndarray:
    """Equal-width bin edges: ``n_bins`` bins covering ``[lo, hi]``.

    Args:
        n_bins: Number of bins, ``>= 1``.
        lo: Lower edge of the first bin (score units).
        hi: Upper edge of the last bin, ``> lo``.

    Returns:
        Float64 array of shape ``[n_bins + 1]``, ``numpy.linspace(lo, hi, n_bins + 1)``.

    Example:
        >>> binning(4, 0.0, 1.0)
        array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins: expected an integer >= 1, got {n_bins!r}")
    for name, value in (("lo", lo), ("hi", hi)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{name}: expected a finite float, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite float, got {value!r}")
    if not hi > lo:
        raise ValueError(f"hi: expected a value > lo = {lo!r}, got {hi!r}")
    return np.linspace(float(lo), float(hi), int(n_bins) + 1)


def build_workspace_from_histograms(
    signal: ArrayLike,
    backgrounds: Mapping[str, ArrayLike],
    *,
    data: ArrayLike | None = None,
    channel: str = "SR",
    poi: str = "mu",
    poi_bounds: tuple[float, float] | None = None,
    signal_name: str = "signal",
    normsys: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    histosys: Mapping[str, Mapping[str, tuple[ArrayLike, ArrayLike]]] | None = None,
    staterror: Mapping[str, ArrayLike] | None = None,
    shapesys: Mapping[str, ArrayLike] | None = None,
    lumi: float | None = None,
    measurement: str = "meas",
) -> dict[str, Any]:
    """One-channel HistFactory workspace from signal and background histograms.

    The signal sample is scaled by the unconstrained parameter of interest
    ``poi`` (a ``normfactor``, nominal 1); backgrounds are fixed up to their
    systematics. All yields are expected event counts per bin.

    Args:
        signal: Signal yields, shape ``[B]``, non-negative.
        backgrounds: Background name -> yields ``[B]``, non-negative; at least one.
            Names must be unique and differ from ``signal_name``.
        data: Observed counts ``[B]``, non-negative (need not be integers). Default:
            the total background (sum of ``backgrounds``, without signal), i.e. the
            background-only Asimov data set, so fits and discovery tests on the
            result give the *expected* (median) sensitivity.
        channel: Channel name.
        poi: Name of the parameter of interest (the signal ``normfactor``).
        poi_bounds: ``(lo, hi)`` bounds for ``poi``; ``None`` keeps the pyhf
            default ``(0, 10)``.
        signal_name: Name of the signal sample.
        normsys: Sample name -> {systematic name -> ``(lo, hi)``}: yield factors
            (> 0) at -1 and +1 sigma, e.g. ``{"ttbar": {"ttbar_xsec": (0.9, 1.1)}}``.
            The same systematic name in several samples (or channels) is one,
            correlated nuisance parameter.
        histosys: Sample name -> {systematic name -> ``(lo_hist, hi_hist)``}: the
            sample's yields ``[B]`` at -1 and +1 sigma. May share names with
            ``normsys`` (one parameter then drives both).
        staterror: Sample name -> absolute MC statistical uncertainty per bin
            ``[B]`` (usually ``sqrt(sum w^2)``). The listed samples share one
            Barlow-Beeston-lite parameter per bin, named ``staterror_<channel>``;
            pyhf adds their uncertainties in quadrature.
        shapesys: Sample name -> absolute uncorrelated shape uncertainty per bin
            ``[B]`` (Poisson-constrained), one parameter per bin named
            ``shapesys_<channel>_<sample>``. Bins with zero uncertainty get no
            parameter.
        lumi: Relative luminosity uncertainty (e.g. ``0.017``) applied to every
            sample as one parameter ``lumi`` (nominal 1, bounds 1 +- 5 sigma,
            clipped at 0); ``None`` for none.
        measurement: Name of the measurement.

    Returns:
        pyhf workspace ``dict`` with one channel, one observation and one
        measurement. Sample order: signal, then backgrounds in mapping order.
        Modifier order per sample: normfactor (signal), lumi, normsys, histosys,
        staterror, shapesys.

    Raises:
        ValueError: an argument has the wrong length, a negative or non-finite
            entry, an unknown sample name, or a name clash; the message names the
            argument.

    Example:
        >>> ws = build_workspace_from_histograms(
        ...     [1.0, 4.0], {"bkg": [50.0, 20.0]}, staterror={"bkg": [5.0, 3.0]}
        ... )
        >>> ws["observations"]
        [{'name': 'SR', 'data': [50.0, 20.0]}]
        >>> [m["type"] for m in ws["channels"][0]["samples"][1]["modifiers"]]
        ['staterror']
    """
    _check_name("channel", channel)
    _check_name("poi", poi)
    _check_name("signal_name", signal_name)
    _check_name("measurement", measurement)

    signal_yields = _as_yields("signal", signal)
    n_bins = signal_yields.shape[0]
    if not isinstance(backgrounds, Mapping):
        raise ValueError(
            f"backgrounds: expected a mapping name -> yields, got {type(backgrounds).__name__}"
        )
    if not backgrounds:
        raise ValueError("backgrounds: expected at least one background sample, got none")
    yields: dict[str, np.ndarray] = {signal_name: signal_yields}
    for name, hist in backgrounds.items():
        _check_name("backgrounds", name)
        if name == signal_name:
            raise ValueError(
                f"backgrounds: sample name {name!r} clashes with signal_name={signal_name!r}"
            )
        yields[name] = _as_yields(f"backgrounds[{name!r}]", hist, n_bins)

    if data is None:
        observed = np.sum([y for name, y in yields.items() if name != signal_name], axis=0)
    else:
        observed = _as_yields("data", data, n_bins)

    if isinstance(staterror, bool):
        raise ValueError(
            f"staterror: expected a mapping sample -> uncertainties [{n_bins}] or None, got "
            f"{staterror!r}; sqrt(sum w^2) needs event weights: use build_workspace_from_events"
        )
    normsys = _sample_options("normsys", normsys, yields)
    histosys = _sample_options("histosys", histosys, yields)
    staterror = _sample_options("staterror", staterror, yields)
    shapesys = _sample_options("shapesys", shapesys, yields)

    staterror_name = f"staterror_{channel}"
    reserved = {poi: "poi", staterror_name: "staterror"}
    if lumi is not None:
        reserved[_LUMI] = "lumi"
    reserved.update({f"shapesys_{channel}_{sample}": "shapesys" for sample in shapesys})

    samples = []
    for sample, nominal in yields.items():
        modifiers: list[dict[str, Any]] = []
        if sample == signal_name:
            modifiers.append({"name": poi, "type": "normfactor", "data": None})
        if lumi is not None:
            modifiers.append({"name": _LUMI, "type": "lumi", "data": None})
        for sys_name, factors in _systematics("normsys", sample, normsys, reserved):
            lo, hi = _as_pair(f"normsys[{sample!r}][{sys_name!r}]", factors)
            modifiers.append(
                {
                    "name": sys_name,
                    "type": "normsys",
                    "data": {
                        "hi": _positive_float(f"normsys[{sample!r}][{sys_name!r}] hi", hi),
                        "lo": _positive_float(f"normsys[{sample!r}][{sys_name!r}] lo", lo),
                    },
                }
            )
        for sys_name, templates in _systematics("histosys", sample, histosys, reserved):
            where = f"histosys[{sample!r}][{sys_name!r}]"
            lo_hist, hi_hist = _as_pair(where, templates)
            modifiers.append(
                {
                    "name": sys_name,
                    "type": "histosys",
                    "data": {
                        "hi_data": _as_yields(f"{where} hi", hi_hist, n_bins).tolist(),
                        "lo_data": _as_yields(f"{where} lo", lo_hist, n_bins).tolist(),
                    },
                }
            )
        if sample in staterror:
            uncertainty = _as_yields(f"staterror[{sample!r}]", staterror[sample], n_bins)
            modifiers.append(
                {"name": staterror_name, "type": "staterror", "data": uncertainty.tolist()}
            )
        if sample in shapesys:
            uncertainty = _as_yields(f"shapesys[{sample!r}]", shapesys[sample], n_bins)
            modifiers.append(
                {
                    "name": f"shapesys_{channel}_{sample}",
                    "type": "shapesys",
                    "data": uncertainty.tolist(),
                }
            )
        samples.append({"name": sample, "data": nominal.tolist(), "modifiers": modifiers})

    parameters: list[dict[str, Any]] = []
    if poi_bounds is not None:
        lo, hi = _as_pair("poi_bounds", poi_bounds)
        lo, hi = _finite_float("poi_bounds lo", lo), _finite_float("poi_bounds hi", hi)
        if not hi > lo:
            raise ValueError(f"poi_bounds: expected lo < hi, got ({lo!r}, {hi!r})")
        parameters.append({"name": poi, "bounds": [[lo, hi]]})
    if lumi is not None:
        sigma = _positive_float("lumi", lumi)
        parameters.append(
            {
                "name": _LUMI,
                "auxdata": [1.0],
                "sigmas": [sigma],
                "bounds": [[max(0.0, 1.0 - 5.0 * sigma), 1.0 + 5.0 * sigma]],
                "inits": [1.0],
            }
        )

    return {
        "channels": [{"name": channel, "samples": samples}],
        "observations": [{"name": channel, "data": observed.tolist()}],
        "measurements": [{"name": measurement, "config": {"poi": poi, "parameters": parameters}}],
        "version": _WORKSPACE_VERSION,
    }


def build_workspace_from_events(
    signal: Events,
    backgrounds: Mapping[str, Events],
    bin_edges: ArrayLike,
    *,
    data: ArrayLike | None = None,
    channel: str = "SR",
    poi: str = "mu",
    poi_bounds: tuple[float, float] | None = None,
    signal_name: str = "signal",
    normsys: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    histosys: Mapping[str, Mapping[str, tuple[Events, Events]]] | None = None,
    staterror: bool | Collection[str] | Mapping[str, ArrayLike] = False,
    shapesys: Mapping[str, ArrayLike] | None = None,
    lumi: float | None = None,
    measurement: str = "meas",
) -> dict[str, Any]:
    """One-channel HistFactory workspace from per-event scores and weights.

    Each sample's events are histogrammed with
    ``numpy.histogram(values, bin_edges, weights=weights)`` (yields) and the same
    with ``weights**2`` (sum of squared weights, for ``staterror=True``), then
    :func:`build_workspace_from_histograms` is called. Events outside
    ``[bin_edges[0], bin_edges[-1]]`` are dropped (no under/overflow); as in
    NumPy, the last bin includes its upper edge. Negative weights are allowed as
    long as every bin's yield stays non-negative.

    Args:
        signal: Signal events: ``values`` ``[N]`` (unit weights) or a tuple
            ``(values, weights)`` with ``weights`` ``[N]`` or ``None``.
        backgrounds: Background name -> events, same forms as ``signal``.
        bin_edges: Bin edges ``[B + 1]``, strictly increasing, e.g.
            ``binning(n_bins, lo, hi)``.
        data: Observed events: unweighted ``values`` ``[M]``, histogrammed with
            ``bin_edges``. Default: the total background yields (see
            :func:`build_workspace_from_histograms`).
        histosys: Sample name -> {systematic name -> ``(lo_events, hi_events)``}:
            the sample's events under the -1 and +1 sigma variations (same forms as
            ``signal``), histogrammed like the nominal.
        staterror: ``True`` gives every sample a ``staterror`` with uncertainty
            ``sqrt(sum w^2)`` per bin; a collection of sample names restricts it to
            those; a mapping name -> ``[B]`` gives the uncertainties explicitly;
            ``False`` (default) for none.
        channel, poi, poi_bounds, signal_name, normsys, shapesys, lumi, measurement:
            As in :func:`build_workspace_from_histograms`.

    Returns:
        pyhf workspace ``dict`` (see :func:`build_workspace_from_histograms`).

    Raises:
        ValueError: events and weights of different lengths, non-finite values,
            invalid ``bin_edges``, negative bin yields, or any error of
            :func:`build_workspace_from_histograms`.
    """
    edges = _as_edges(bin_edges)
    if not isinstance(backgrounds, Mapping):
        raise ValueError(
            f"backgrounds: expected a mapping name -> events, got {type(backgrounds).__name__}"
        )
    signal_hist, signal_sumw2 = _histogram_events("signal", signal, edges)
    yields = {}
    sumw2 = {signal_name: signal_sumw2}
    for name, events in backgrounds.items():
        yields[name], sumw2[name] = _histogram_events(f"backgrounds[{name!r}]", events, edges)

    observed = None
    if data is not None:
        values = _as_1d_finite("data", data)
        observed = np.histogram(values, edges)[0].astype(np.float64)

    histosys_hists = None
    if histosys is not None:
        if not isinstance(histosys, Mapping):
            raise ValueError(
                f"histosys: expected a mapping sample -> {{name: (lo, hi)}}, "
                f"got {type(histosys).__name__}"
            )
        histosys_hists = {}
        for sample, variations in histosys.items():
            if not isinstance(variations, Mapping):
                raise ValueError(
                    f"histosys[{sample!r}]: expected a mapping name -> (lo_events, hi_events), "
                    f"got {type(variations).__name__}"
                )
            histosys_hists[sample] = {}
            for sys_name, pair in variations.items():
                where = f"histosys[{sample!r}][{sys_name!r}]"
                lo_events, hi_events = _as_pair(where, pair)
                histosys_hists[sample][sys_name] = (
                    _histogram_events(f"{where} lo", lo_events, edges)[0],
                    _histogram_events(f"{where} hi", hi_events, edges)[0],
                )

    if isinstance(staterror, Mapping):
        staterror_hists: Mapping[str, ArrayLike] | None = staterror
    elif staterror is True:
        staterror_hists = {name: np.sqrt(s) for name, s in sumw2.items()}
    elif staterror is False or staterror is None:
        staterror_hists = None
    elif isinstance(staterror, Collection) and not isinstance(staterror, str):
        unknown = [name for name in staterror if name not in sumw2]
        if unknown:
            raise ValueError(
                f"staterror: unknown sample(s) {unknown}; expected names among {list(sumw2)}"
            )
        staterror_hists = {name: np.sqrt(sumw2[name]) for name in staterror}
    else:
        raise ValueError(
            "staterror: expected a bool, a collection of sample names or a mapping "
            f"name -> uncertainties, got {staterror!r}"
        )

    return build_workspace_from_histograms(
        signal_hist,
        yields,
        data=observed,
        channel=channel,
        poi=poi,
        poi_bounds=poi_bounds,
        signal_name=signal_name,
        normsys=normsys,
        histosys=histosys_hists,
        staterror=staterror_hists,
        shapesys=shapesys,
        lumi=lumi,
        measurement=measurement,
    )


def combine_workspaces(*workspaces: Mapping[str, Any]) -> dict[str, Any]:
    """Join single- or multi-channel workspaces into one multi-channel workspace.

    Channels and observations are concatenated in order. Measurements are
    matched by name: every workspace must define the same measurement names
    with the same ``poi``; their parameter configurations are merged, and a
    parameter configured in several workspaces must be configured identically
    (e.g. the same ``lumi`` uncertainty). Nuisance parameters with the same name
    in different channels become one correlated parameter; ``staterror`` and
    ``shapesys`` names from the builders include the channel, so they stay
    uncorrelated. The inputs are not modified.

    Args:
        *workspaces: One or more pyhf workspace dicts with distinct channel names.

    Returns:
        New pyhf workspace ``dict``.

    Raises:
        ValueError: no workspace, duplicate channel names, or
            inconsistent measurements.

    Example:
        >>> sr = build_workspace_from_histograms([5.0], {"bkg": [10.0]}, channel="SR")
        >>> cr = build_workspace_from_histograms([0.1], {"bkg": [100.0]}, channel="CR")
        >>> [c["name"] for c in combine_workspaces(sr, cr)["channels"]]
        ['SR', 'CR']
    """
    if not workspaces:
        raise ValueError("workspaces: expected at least one workspace, got none")
    for i, ws in enumerate(workspaces):
        if not isinstance(ws, Mapping) or not all(
            key in ws for key in ("channels", "observations", "measurements")
        ):
            raise ValueError(
                f"workspaces[{i}]: expected a pyhf workspace dict with channels, "
                "observations and measurements"
            )

    channels: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, ws in enumerate(workspaces):
        for chan in ws["channels"]:
            if chan["name"] in seen:
                raise ValueError(
                    f"workspaces[{i}]: channel {chan['name']!r} already defined in "
                    f"workspaces[{seen[chan['name']]}]"
                )
            seen[chan["name"]] = i
            channels.append(copy.deepcopy(dict(chan)))
        observations.extend(copy.deepcopy(list(ws["observations"])))

    names = [m["name"] for m in workspaces[0]["measurements"]]
    measurements = []
    for meas_name in names:
        poi = None
        params: dict[str, dict[str, Any]] = {}
        for i, ws in enumerate(workspaces):
            matches = [m for m in ws["measurements"] if m["name"] == meas_name]
            if not matches:
                raise ValueError(f"workspaces[{i}]: missing measurement {meas_name!r}")
            config = matches[0]["config"]
            if poi is None:
                poi = config["poi"]
            elif config["poi"] != poi:
                raise ValueError(
                    f"workspaces[{i}]: measurement {meas_name!r} has poi {config['poi']!r}, "
                    f"expected {poi!r} as in workspaces[0]"
                )
            for par in config.get("parameters", []):
                if par["name"] in params and params[par["name"]] != par:
                    raise ValueError(
                        f"workspaces[{i}]: measurement {meas_name!r} configures parameter "
                        f"{par['name']!r} as {par}, conflicting with {params[par['name']]}"
                    )
                params[par["name"]] = copy.deepcopy(dict(par))
        measurements.append(
            {"name": meas_name, "config": {"poi": poi, "parameters": list(params.values())}}
        )
    for i, ws in enumerate(workspaces[1:], start=1):
        extra = {m["name"] for m in ws["measurements"]} - set(names)
        if extra:
            raise ValueError(
                f"workspaces[{i}]: measurement(s) {sorted(extra)} not in workspaces[0]"
            )

    return {
        "channels": channels,
        "observations": observations,
        "measurements": measurements,
        "version": _WORKSPACE_VERSION,
    }


# --- validation helpers -------------------------------------------------------


def _check_name(arg: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{arg}: expected a non-empty string name, got {name!r}")


def _to_numpy(arg: str, value: object) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{arg}: expected an array of numbers, got {type(value).__name__} ({err})"
        ) from err
    return array


def _as_1d_finite(
    arg: str, value: object, n_bins: int | None = None, *, dim: str = "N"
) -> np.ndarray:
    array = _to_numpy(arg, value)
    if array.ndim != 1:
        expected = f"[{n_bins}]" if n_bins is not None else f"[{dim}]"
        raise ValueError(f"{arg}: expected shape {expected}, got {list(array.shape)}")
    if n_bins is not None and array.shape[0] != n_bins:
        raise ValueError(
            f"{arg}: expected shape [{n_bins}] (one entry per bin), got {list(array.shape)}"
        )
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(
            f"{arg}: expected finite values, got {array[bad[0]]} at index {int(bad[0])}"
        )
    return array


def _as_yields(arg: str, value: object, n_bins: int | None = None) -> np.ndarray:
    """Validate a per-bin array: 1-D, ``n_bins`` long (if given, else >= 1), finite, >= 0."""
    array = _as_1d_finite(arg, value, n_bins, dim="B")
    if array.shape[0] == 0:
        raise ValueError(f"{arg}: expected at least one bin, got shape [0]")
    bad = np.flatnonzero(array < 0)
    if bad.size:
        raise ValueError(
            f"{arg}: expected non-negative values, got {array[bad[0]]} in bin {int(bad[0])}"
        )
    return array


def _as_pair(arg: str, value: object) -> tuple[Any, Any]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{arg}: expected a pair (lo, hi), got {value!r}")
    return value[0], value[1]


def _finite_float(arg: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{arg}: expected a finite float, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{arg}: expected a finite float, got {value!r}")
    return result


def _positive_float(arg: str, value: object) -> float:
    result = _finite_float(arg, value)
    if not result > 0:
        raise ValueError(f"{arg}: expected a value > 0, got {value!r}")
    return result


def _sample_options(
    arg: str, option: Mapping[str, Any] | None, samples: Mapping[str, np.ndarray]
) -> Mapping[str, Any]:
    """Check that a per-sample option is a mapping over known sample names."""
    if option is None:
        return {}
    if not isinstance(option, Mapping):
        raise ValueError(
            f"{arg}: expected a mapping keyed by sample name, got {type(option).__name__}"
        )
    unknown = [name for name in option if name not in samples]
    if unknown:
        raise ValueError(
            f"{arg}: unknown sample(s) {unknown}; expected names among {list(samples)}"
        )
    return option


def _systematics(
    arg: str, sample: str, option: Mapping[str, Any], reserved: Mapping[str, str]
) -> list[tuple[str, Any]]:
    """``(name, value)`` pairs of a sample's normsys/histosys entries, names checked."""
    if sample not in option:
        return []
    entries = option[sample]
    if not isinstance(entries, Mapping):
        raise ValueError(
            f"{arg}[{sample!r}]: expected a mapping systematic name -> (lo, hi), "
            f"got {type(entries).__name__}"
        )
    for name in entries:
        _check_name(f"{arg}[{sample!r}]", name)
        if name in reserved:
            raise ValueError(
                f"{arg}[{sample!r}]: systematic name {name!r} clashes with the "
                f"{reserved[name]} parameter of the same name"
            )
    return list(entries.items())


def _as_edges(bin_edges: object) -> np.ndarray:
    edges = _as_1d_finite("bin_edges", bin_edges, dim="B + 1")
    if edges.shape[0] < 2:
        raise ValueError(f"bin_edges: expected shape [B + 1] with B >= 1, got {list(edges.shape)}")
    if not np.all(np.diff(edges) > 0):
        raise ValueError(f"bin_edges: expected strictly increasing values, got {edges.tolist()}")
    return edges


def _histogram_events(arg: str, events: object, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sum w, sum w^2)`` per bin, each ``[B]``, for ``values`` or ``(values, weights)``."""
    if isinstance(events, tuple):
        if len(events) != 2:
            raise ValueError(
                f"{arg}: expected values [N] or a tuple (values, weights), "
                f"got a tuple of length {len(events)}"
            )
        values_in, weights_in = events
    else:
        values_in, weights_in = events, None
    values = _as_1d_finite(f"{arg} values", values_in)
    if weights_in is None:
        weights = np.ones_like(values)
    else:
        weights = _as_1d_finite(f"{arg} weights", weights_in, None)
        if weights.shape != values.shape:
            raise ValueError(
                f"{arg} weights: expected shape {list(values.shape)} (same as values), "
                f"got {list(weights.shape)}"
            )
    sumw = np.histogram(values, edges, weights=weights)[0]
    sumw2 = np.histogram(values, edges, weights=weights**2)[0]
    return sumw, sumw2
