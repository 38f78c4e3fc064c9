"""Pre- and post-fit yields per channel, sample and bin, with their uncertainties.

The uncertainty of a yield ``y`` follows cabinetry 0.6.0 (``cabinetry.model_utils.prediction``
and ``yield_stdev``): each parameter ``i`` is varied by its uncertainty ``sigma_i``, the
symmetrised variation ``v_i = (y(theta + sigma_i e_i) - y(theta - sigma_i e_i)) / 2`` is taken,
and the variance is propagated linearly with the parameters' correlations ``rho``::

    var(y) = sum_ij v_i rho_ij v_j

for every sample and bin, for the sum over samples (the total prediction), and for the sums
over the bins of a channel. Post-fit, ``theta`` is the best fit, ``sigma`` its Hesse errors and
``rho`` its correlation matrix. Pre-fit (cabinetry's conventions: ``asimov_parameters``,
``prefit_uncertainties``), ``theta`` is the nominal point: normfactors and shapefactors at their
initial values, normsys and histosys at 0, staterror, lumi and shapesys at 1 (custom auxiliary
data are ignored, as in cabinetry); ``sigma`` is the constraint width (Gaussian sigma, shapesys
``1/sqrt(tau)``), 0 for unconstrained (normfactor, shapefactor) and for fixed parameters; ``rho``
is the identity. So pre-fit bands contain no normalisation uncertainty of free-floating factors.

``method="jacobian"`` replaces the finite variation by the linearisation ``v_i = sigma_i dy /
d theta_i`` (the analytic Jacobian of the compiled rates): the same for parameters that enter the
rates linearly (normfactor, lumi, staterror, shapesys, shapefactor), the tangent instead of the
secant for normsys and histosys.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nextstat._html import html_summary, html_table, pdg_round
from nextstat.engine.layout import BLK_B0, BLK_NB, BLK_OFF, NOM
from nextstat.errors import ConvergenceWarning
from nextstat.model import Model, require_model
from nextstat.results import FitResult, _ToDict

__all__ = ["ChannelPrediction", "PredictionResult", "prediction", "prefit_parameters"]

METHODS = ("variations", "jacobian")
FORMATS = ("text", "markdown", "latex")


# ----------------------------------------------------------------------------- containers

@dataclass(frozen=True, repr=False)
class ChannelPrediction:
    """The prediction of one channel (:meth:`PredictionResult.channel`).

    Attributes:
        name: channel name. samples: sample names, length ``S``.
        yields, stdev: per sample and bin, shape ``(S, n_bins)`` (events).
        total, total_stdev: the sum over samples per bin, shape ``(n_bins,)``.
        data: observed counts, shape ``(n_bins,)``.
        sample_sums, sample_sums_stdev: each sample summed over the channel's bins, ``(S,)``.
        sum, sum_stdev: the total prediction summed over the channel's bins.
        label: "pre-fit" or "post-fit".
    """

    name: str
    samples: tuple[str, ...]
    yields: np.ndarray
    stdev: np.ndarray
    total: np.ndarray
    total_stdev: np.ndarray
    data: np.ndarray
    sample_sums: np.ndarray
    sample_sums_stdev: np.ndarray
    sum: float
    sum_stdev: float
    label: str

    def __repr__(self) -> str:
        return (f"ChannelPrediction(name={self.name!r}, label={self.label!r}, bins={self.total.shape[0]}, "
                f"sum={self.sum:.6g} +- {self.sum_stdev:.3g}, data={float(self.data.sum()):g})")


@dataclass(frozen=True, repr=False)
class PredictionResult(_ToDict):
    """Yields of a model per channel, sample and bin with their standard deviations.

    Arrays run over all main bins in the model's order (channels sorted by name, as
    ``model.channel_slices``); :meth:`channel` cuts out one channel.

    Attributes:
        label: "pre-fit" or "post-fit".
        channels: channel names, length ``C``; ``channel_bins``: ``(start, stop)`` of each
            channel's bins. samples: sample names, length ``S`` (a sample absent from a channel
            has yield 0 there).
        yields, stdev: shape ``(S, B)``. total, total_stdev: sum over samples, shape ``(B,)``.
        channel_yields, channel_stdev: each sample summed over each channel's bins, ``(C, S)``.
        channel_total, channel_total_stdev: the total prediction per channel, ``(C,)``.
        data: observed main-bin counts, shape ``(B,)``.
        parameters: the parameter values the yields are evaluated at, shape ``(P,)``;
            uncertainties: the ``sigma`` varied, ``(P,)`` (see the module docstring).
        method: "variations" (cabinetry's) or "jacobian".
        converged: the fit the post-fit prediction is built on converged (True pre-fit).
    """

    label: str
    channels: tuple[str, ...]
    channel_bins: tuple[tuple[int, int], ...]
    samples: tuple[str, ...]
    yields: np.ndarray
    stdev: np.ndarray
    total: np.ndarray
    total_stdev: np.ndarray
    channel_yields: np.ndarray
    channel_stdev: np.ndarray
    channel_total: np.ndarray
    channel_total_stdev: np.ndarray
    data: np.ndarray
    parameters: np.ndarray
    uncertainties: np.ndarray
    method: str = "variations"
    converged: bool = True

    def channel(self, name: str) -> ChannelPrediction:
        """The prediction of channel ``name``; ``KeyError`` naming it if there is none."""
        try:
            c = self.channels.index(name)
        except ValueError:
            raise KeyError(f"no channel named {name!r}; channels: {list(self.channels)}") from None
        sl = slice(*self.channel_bins[c])
        return ChannelPrediction(name, self.samples, self.yields[:, sl], self.stdev[:, sl], self.total[sl],
                                 self.total_stdev[sl], self.data[sl], self.channel_yields[c],
                                 self.channel_stdev[c], float(self.channel_total[c]),
                                 float(self.channel_total_stdev[c]), self.label)

    # ------------------------------------------------------------------ tables
    def to_dataframe(self, level: str = "bin") -> Any:
        """A long-format ``pandas.DataFrame``.

        ``level="bin"``: one row per channel, bin and sample, and a row ``sample="total"`` per
        bin; columns ``channel, bin, sample, yield, stdev, data`` (``data``: the bin's observed
        count). ``level="channel"``: the same summed over each channel's bins (no ``bin``).
        """
        import pandas as pd

        rows = []
        names = [*self.samples, "total"]
        if level == "bin":
            for c, ch in enumerate(self.channels):
                start, stop = self.channel_bins[c]
                for b in range(start, stop):
                    ys = [*self.yields[:, b], self.total[b]]
                    ss = [*self.stdev[:, b], self.total_stdev[b]]
                    rows += [(ch, b - start, s, float(y), float(e), float(self.data[b]))
                             for s, y, e in zip(names, ys, ss)]
            return pd.DataFrame(rows, columns=["channel", "bin", "sample", "yield", "stdev", "data"])
        if level == "channel":
            for c, ch in enumerate(self.channels):
                start, stop = self.channel_bins[c]
                ys = [*self.channel_yields[c], self.channel_total[c]]
                ss = [*self.channel_stdev[c], self.channel_total_stdev[c]]
                d = float(self.data[start:stop].sum())
                rows += [(ch, s, float(y), float(e), d) for s, y, e in zip(names, ys, ss)]
            return pd.DataFrame(rows, columns=["channel", "sample", "yield", "stdev", "data"])
        raise ValueError(f"level: expected 'bin' or 'channel', got {level!r}")

    def table(self, fmt: str = "text", *, bins: bool = True) -> str:
        """Yield tables as text: one per channel (rows: samples, total, data; columns: bins)
        when ``bins``, then one of the channel sums (columns: channels). Values are
        ``yield +- stdev`` rounded by the PDG rule (:func:`nextstat._html.pdg_round`).

        Args:
            fmt: "text" (aligned columns), "markdown" (GitHub tables) or "latex" (``tabular``
                environments, booktabs rules).
        """
        if fmt not in FORMATS:
            raise ValueError(f"fmt: expected one of {FORMATS}, got {fmt!r}")
        parts = []
        rows_of = [*self.samples, "total", "data"]
        if bins:
            for c, ch in enumerate(self.channels):
                start, stop = self.channel_bins[c]
                header = ["sample", *[f"bin {b}" for b in range(stop - start)]]
                body = []
                for s, name in enumerate(rows_of):
                    if name == "data":
                        cells = [f"{v:g}" for v in self.data[start:stop]]
                    elif name == "total":
                        cells = [_pm(self.total[b], self.total_stdev[b], fmt) for b in range(start, stop)]
                    else:
                        cells = [_pm(self.yields[s, b], self.stdev[s, b], fmt) for b in range(start, stop)]
                    body.append([name, *cells])
                parts.append(_render(f"{self.label} yields in {ch}", header, body, fmt))
        header = ["sample", *self.channels]
        body = []
        for s, name in enumerate(rows_of):
            if name == "data":
                cells = [f"{float(self.data[a:b].sum()):g}" for a, b in self.channel_bins]
            elif name == "total":
                cells = [_pm(y, e, fmt) for y, e in zip(self.channel_total, self.channel_total_stdev)]
            else:
                cells = [_pm(y, e, fmt) for y, e in zip(self.channel_yields[:, s], self.channel_stdev[:, s])]
            body.append([name, *cells])
        parts.append(_render(f"{self.label} yields per channel", header, body, fmt))
        return "\n\n".join(parts)

    def to_markdown(self, *, bins: bool = True) -> str:
        """:meth:`table` as Markdown."""
        return self.table("markdown", bins=bins)

    def to_latex(self, *, bins: bool = True) -> str:
        """:meth:`table` as LaTeX."""
        return self.table("latex", bins=bins)

    def __str__(self) -> str:
        return self.table("text", bins=False)

    def __repr__(self) -> str:
        return (f"PredictionResult(label={self.label!r}, channels={len(self.channels)}, samples={len(self.samples)}, "
                f"bins={self.total.shape[0]}, method={self.method!r}, converged={self.converged})")

    def _repr_html_(self) -> str:
        rows = []
        for s, name in enumerate([*self.samples, "total"]):
            if name == "total":
                cells = [_pm(y, e, "text") for y, e in zip(self.channel_total, self.channel_total_stdev)]
            else:
                cells = [_pm(y, e, "text") for y, e in zip(self.channel_yields[:, s], self.channel_stdev[:, s])]
            rows.append((name, *cells))
        rows.append(("data", *[float(self.data[a:b].sum()) for a, b in self.channel_bins]))
        table = html_table(rows, ["sample", *self.channels], caption=f"{self.label} yields per channel")
        summary = {"label": self.label, "channels": len(self.channels), "samples": len(self.samples),
                   "bins": int(self.total.shape[0]), "method": self.method, "converged": self.converged}
        return html_summary("PredictionResult", summary, table, ok=self.converged)


# ----------------------------------------------------------------------------- formatting

def _pm(value: float, error: float, fmt: str) -> str:
    v, e = pdg_round(float(value), float(error))
    return f"${v} \\pm {e}$" if fmt == "latex" else f"{v} ± {e}"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def _render(title: str, header: Sequence[str], body: Sequence[Sequence[str]], fmt: str) -> str:
    if fmt == "markdown":
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
                 "| " + " | ".join(["---"] * len(header)) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    if fmt == "latex":
        cols = "l" + "r" * (len(header) - 1)
        lines = [f"% {title}", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
                 " & ".join(_latex_escape(h) for h in header) + r" \\", "\\midrule"]
        for i, row in enumerate(body):
            if row[0] in ("total", "data") and body[i - 1][0] not in ("total", "data"):
                lines.append("\\midrule")
            lines.append(" & ".join([_latex_escape(row[0]), *row[1:]]) + r" \\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines)
    widths = [max(len(str(r[k])) for r in [header, *body]) for k in range(len(header))]
    lines = [title, "  ".join(h.ljust(widths[0]) if k == 0 else h.rjust(widths[k]) for k, h in enumerate(header))]
    lines += ["  ".join(c.ljust(widths[0]) if k == 0 else c.rjust(widths[k]) for k, c in enumerate(row))
              for row in body]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- computation

def prefit_parameters(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """cabinetry's pre-fit point and widths (``asimov_parameters``, ``prefit_uncertainties``).

    Returns ``(values, widths)``, each of shape ``(n_params,)``: values are the initial values
    of unconstrained parameters (normfactor, shapefactor), 0 for normsys and histosys, 1 for the
    other constrained ones (staterror, lumi, shapesys); widths are the constraint widths
    (:meth:`nextstat.Model.prior_widths`), 0 for unconstrained and fixed parameters.

    >>> import nextstat
    >>> m = nextstat.from_pyhf(nextstat.examples.simple_workspace())
    >>> values, widths = prefit_parameters(m)
    >>> values.shape == widths.shape == (m.n_params,)
    True
    """
    init = model.suggested_init()
    values = np.empty(model.n_params)
    for name, ps in model._paramsets.items():
        sl = model.par_slices[name]
        if ps.kind == "free":
            values[sl] = init[sl]
        elif any(t in ("normsys", "histosys") for t in ps.types):
            values[sl] = 0.0
        else:
            values[sl] = 1.0
    widths = np.nan_to_num(model.prior_widths(), nan=0.0, posinf=np.inf)
    widths[model.fixed_params | ~model.constrained] = 0.0
    return values, widths


def _block_variations(model: Model, theta: np.ndarray, sigma: np.ndarray, idx: np.ndarray,
                      method: str) -> np.ndarray:
    """Symmetrised variations of every flat block bin, shape ``(len(idx), F)``."""
    if method == "jacobian":
        jac = model.rates_jacobian(theta, per_block=True)
        return (jac[:, idx] * sigma[idx]).T.copy()
    out = np.empty((idx.size, model.arrays[NOM].shape[0]))
    for a, i in enumerate(idx):
        up = theta.copy()
        up[i] += sigma[i]
        dn = theta.copy()
        dn[i] -= sigma[i]
        out[a] = (model.expected_blocks(up) - model.expected_blocks(dn)) / 2.0
    return out


def _variance(v: np.ndarray, corr: np.ndarray | None) -> np.ndarray:
    """``sum_ij v_i corr_ij v_j`` per column of ``v`` (K, M); ``corr=None``: the identity."""
    if corr is None:
        return np.sum(v * v, axis=0)
    return np.sum(v * (corr @ v), axis=0)


def prediction(model: Model, fit_result: FitResult | None = None, *, data: Any = None,
               method: str = "variations") -> PredictionResult:
    """Yields per channel, sample and bin, and their standard deviations (cabinetry 0.6.0's
    ``model_utils.prediction``; formulas in the module docstring).

    Args:
        model: the model.
        fit_result: a fit of ``model`` (:func:`nextstat.fit`, with Hesse errors): post-fit
            yields at its best fit, uncertainties from its errors and correlations. None:
            pre-fit yields and uncertainties.
        data: the observed main data carried along for tables and plots (main + auxiliary or
            main only; default the model's observed data).
        method: "variations" (cabinetry's +-1 sigma variations) or "jacobian" (the analytic
            linearisation).

    Returns:
        PredictionResult. A fit that did not converge gives ``converged=False`` and a
        :class:`nextstat.errors.ConvergenceWarning`.

    Raises:
        ValueError: a fit of another model, a fit without Hesse errors, an unknown ``method``,
            or a free constrained parameter of infinite width pre-fit.
        TypeError: ``model`` not a Model or ``fit_result`` not a FitResult.

    >>> import nextstat
    >>> m = nextstat.from_pyhf(nextstat.examples.simple_workspace())
    >>> pre = nextstat.prediction(m)
    >>> bool(np.allclose(pre.total, pre.yields.sum(axis=0)))
    True
    """
    require_model(model)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    converged = True
    if fit_result is None:
        label = "pre-fit"
        theta, sigma = prefit_parameters(model)
        bad = np.flatnonzero(~np.isfinite(sigma))
        if bad.size:
            raise ValueError(f"model: parameter {model.parameter_names[int(bad[0])]!r} has an infinite constraint "
                             "width (a shapesys with tau = 0); its pre-fit uncertainty is not defined")
        corr = None
    else:
        if not isinstance(fit_result, FitResult):
            raise TypeError(f"fit_result: expected a nextstat FitResult, got {type(fit_result).__name__}")
        if tuple(fit_result.parameter_names) != tuple(model.parameter_names):
            raise ValueError("fit_result: its parameter names differ from the model's (a fit of another model?)")
        label = "post-fit"
        theta = np.asarray(fit_result.bestfit, dtype=np.float64).copy()
        errors = getattr(fit_result, "errors", None)
        cov = getattr(fit_result, "covariance", None)
        if errors is None or cov is None:
            raise ValueError("fit_result: has no Hesse errors (fit with hesse=True)")
        sigma = np.asarray(errors, dtype=np.float64).copy()
        free = ~np.asarray(fit_result.fixed, dtype=bool)
        if free.any() and not np.any(sigma[free] > 0):
            raise ValueError("fit_result: all errors of the free parameters are 0 (fit with hesse=True)")
        corr = np.asarray(fit_result.correlation, dtype=np.float64)
        if not (np.all(np.isfinite(sigma)) and np.all(np.isfinite(corr)) and np.all(np.isfinite(theta))):
            raise ValueError("fit_result: non-finite best fit, errors or correlations")
        converged = bool(fit_result.converged)
        if not converged:
            warnings.warn(f"prediction: the fit did not converge ({fit_result.message}); post-fit yields are built "
                          "on it", ConvergenceWarning, stacklevel=2)
    theta = np.ascontiguousarray(theta)
    main = model._data(data)[: model.n_bins].copy()

    A = model.arrays
    blk_b0, blk_nb, blk_off = A[BLK_B0], A[BLK_NB], A[BLK_OFF]
    nblk = blk_b0.shape[0]
    S, B, C = len(model.samples), model.n_bins, len(model.channels)
    s_of = {s: k for k, s in enumerate(model.samples)}
    c_of = {c: k for k, c in enumerate(model.channels)}
    blk_s = np.array([s_of[s] for s in model.block_sample], dtype=np.int64)
    blk_c = np.array([c_of[c] for c in model.block_channel], dtype=np.int64)

    nominal = model.expected_blocks(theta)
    idx = np.flatnonzero(sigma != 0.0)
    v = _block_variations(model, theta, sigma, idx, method)
    K = idx.size
    # linear images of the variations: per flat bin (= sample x bin), per bin total, per block sum,
    # per channel total
    v_tot = np.zeros((K, B))
    v_blk = np.zeros((K, nblk))
    for k in range(nblk):
        o, n, b0 = blk_off[k], blk_nb[k], blk_b0[k]
        v_tot[:, b0:b0 + n] += v[:, o:o + n]
        v_blk[:, k] = v[:, o:o + n].sum(axis=1)
    v_ch = np.zeros((K, C))
    for k in range(nblk):
        v_ch[:, blk_c[k]] += v_blk[:, k]
    rho = None if corr is None else np.ascontiguousarray(corr[np.ix_(idx, idx)])
    var_flat, var_tot, var_blk, var_ch = (_variance(x, rho) for x in (v, v_tot, v_blk, v_ch))

    yields = np.zeros((S, B))
    stdev = np.zeros((S, B))
    ch_yields = np.zeros((C, S))
    ch_stdev = np.zeros((C, S))
    for k in range(nblk):
        o, n, b0, s, c = blk_off[k], blk_nb[k], blk_b0[k], blk_s[k], blk_c[k]
        yields[s, b0:b0 + n] = nominal[o:o + n]
        stdev[s, b0:b0 + n] = np.sqrt(np.maximum(var_flat[o:o + n], 0.0))
        ch_yields[c, s] = nominal[o:o + n].sum()
        ch_stdev[c, s] = math.sqrt(max(var_blk[k], 0.0))
    bins = tuple((model.channel_slices[c].start, model.channel_slices[c].stop) for c in model.channels)
    result = PredictionResult(
        label=label, channels=tuple(model.channels), channel_bins=bins, samples=tuple(model.samples),
        yields=yields, stdev=stdev, total=yields.sum(axis=0), total_stdev=np.sqrt(np.maximum(var_tot, 0.0)),
        channel_yields=ch_yields, channel_stdev=ch_stdev, channel_total=ch_yields.sum(axis=1),
        channel_total_stdev=np.sqrt(np.maximum(var_ch, 0.0)), data=main, parameters=theta,
        uncertainties=sigma, method=method, converged=converged,
    )
    for what in ("yields", "stdev", "total_stdev", "channel_stdev", "channel_total_stdev"):
        if not np.all(np.isfinite(getattr(result, what))):
            raise ValueError(f"prediction: non-finite {what} (a parameter variation leaves the model's domain)")
    return result
