"""Grouped impacts: the breakdown of the POI's uncertainty by groups of nuisance parameters.

For a group ``G`` of parameters, the impact is the part of the POI's uncertainty that goes
away when ``G`` is frozen at its best-fit values (the "breakdown" of CMS Combine's
``--freezeNuisanceGroups``, ATLAS's "uncertainty decomposition")::

    impact_G = sqrt(sigma_total^2 - sigma_without_G^2)
    stat     = sigma with every nuisance parameter frozen (the POI alone is free)
    syst     = sqrt(sigma_total^2 - stat^2)

``sigma`` is the Hesse error of the POI. With ``G`` frozen at the best fit ``theta_hat`` the
other free parameters are still at their conditional minimum (the gradient vanishes there), so
the frozen fit is the nominal one and ``sigma_without_G^2`` is the POI element of the inverse
of the Hessian restricted to the remaining free parameters,
``[(H_{F\\G, F\\G})^-1]_{mu mu}``: one Hessian for all groups, one factorisation per group, no
refit. It equals the Schur complement ``C_mumu - C_muG C_GG^-1 C_Gmu`` of the covariance (the
variance of ``mu`` conditional on ``theta_G`` in the Gaussian approximation), so impacts of
correlated groups do not add in quadrature to ``syst``. Parameters on a bound are frozen with
the rest of their group as they are.

Default groups (``groups=None``) are the modifier types of the free parameters other than the
POI: ``normsys``, ``histosys``, ``lumi``, ``staterror``, ``shapesys``, ``normfactor``,
``shapefactor``; a parameter shared by modifiers of several types (a systematic with both
normsys and histosys, as HistFitter writes them) is in the group named by its types joined
with ``+`` (``histosys+normsys``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nextstat._html import html_summary, html_table, pdg_round
from nextstat.infer.fit import _fixed_mask, hesse
from nextstat.interpret.ranking import nominal_fit
from nextstat.model import Model
from nextstat.results import FitResult, _ToDict

__all__ = ["GroupedImpactResult", "grouped_impacts", "modifier_groups"]

#: group names the breakdown uses for itself
RESERVED = ("stat", "syst", "total")


@dataclass(frozen=True, repr=False)
class GroupedImpactResult(_ToDict):
    """Breakdown of the POI's Hesse uncertainty by groups of nuisance parameters (module docstring).

    Attributes:
        poi_name, mu_hat: the POI and its best fit.
        total: the POI's Hesse error with every parameter free, ``sigma_total``.
        stat: the POI's error with every nuisance parameter frozen at its best fit.
        groups: group names, sorted by decreasing impact.
        members: the parameter names of each group (same order).
        impacts: ``sqrt(total^2 - sigma_without^2)`` per group, shape (n_groups,).
        sigma_without: the POI's error with the group frozen, shape (n_groups,).
        converged: the nominal fit converged (always True: a failed fit is refused).
        posdef: every restricted Hessian was positive definite (otherwise its inverse was
            approximated as in :func:`nextstat.infer.fit.hesse` and the numbers are doubtful).
    """

    _derived = ("syst",)

    poi_name: str
    mu_hat: float
    total: float
    stat: float
    groups: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    impacts: np.ndarray
    sigma_without: np.ndarray
    converged: bool = True
    posdef: bool = True

    @property
    def syst(self) -> float:
        """``sqrt(total^2 - stat^2)``: the part of the uncertainty from all nuisance parameters."""
        return float(np.sqrt(max(self.total**2 - self.stat**2, 0.0)))

    def impact(self, group: str) -> float:
        """Impact of ``group`` (also ``"stat"``, ``"syst"``, ``"total"``); KeyError if unknown."""
        if group in RESERVED:
            return float(getattr(self, group))
        try:
            return float(self.impacts[self.groups.index(group)])
        except ValueError:
            raise KeyError(f"no group named {group!r} (groups: {', '.join(self.groups)})") from None

    def _rows(self) -> list[tuple[str, float, float, int | None]]:
        """(group, impact, impact^2 / total^2, number of parameters): the groups, then stat,
        syst and total."""
        tot2 = self.total**2 if self.total > 0 else 1.0
        rows = [(g, float(v), float(v * v / tot2), len(m)) for g, v, m in zip(self.groups, self.impacts, self.members)]
        rows += [("stat", self.stat, self.stat**2 / tot2, None), ("syst", self.syst, self.syst**2 / tot2, None),
                 ("total", self.total, 1.0, None)]
        return rows

    def to_dataframe(self):
        """One row per group, then ``stat``, ``syst`` and ``total``: ``group``, ``impact``,
        ``fraction`` (``impact^2 / total^2``), ``n_parameters``. Needs pandas."""
        import pandas as pd

        df = pd.DataFrame(self._rows(), columns=["group", "impact", "fraction", "n_parameters"])
        df["n_parameters"] = df["n_parameters"].astype("Int64")
        return df

    def to_markdown(self, digits: int = 4) -> str:
        """The table of :meth:`to_dataframe` as GitHub-flavoured Markdown (no pandas needed)."""
        lines = [f"| group | impact on {self.poi_name} | fraction of the variance | parameters |",
                 "|:--|--:|--:|--:|"]
        for g, v, frac, n in self._rows():
            lines.append(f"| {g} | {v:.{digits}g} | {frac:.3f} | {'' if n is None else n} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        width = max(9, *(len(g) for g in self.groups)) if self.groups else 9
        v, e = pdg_round(self.mu_hat, self.total)
        lines = [f"{self.poi_name} = {v} +- {e}", f"{'group':<{width}}  {'impact':>10}  {'fraction':>8}  parameters"]
        for g, imp, frac, n in self._rows():
            lines.append(f"{g:<{width}}  {imp:>10.4g}  {frac:>8.3f}  {'' if n is None else n}".rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"GroupedImpactResult(poi={self.poi_name!r}, mu_hat={self.mu_hat:.6g}, total={self.total:.6g}, "
                f"stat={self.stat:.6g}, groups={len(self.groups)})")

    def _repr_html_(self) -> str:
        table = html_table(self._rows(), ["group", "impact", "fraction of the variance", "parameters"])
        v, e = pdg_round(self.mu_hat, self.total)
        items = {"POI": self.poi_name, "best fit": f"{v} \u00b1 {e}", "posdef": self.posdef}
        return html_summary("Grouped impacts on the POI", items, table, ok=self.posdef)


def modifier_groups(model: Model, *, fixed_params: Any = None) -> dict[str, list[str]]:
    """The default groups: free parameters other than the POI by modifier type (module docstring).

    >>> import nextstat
    >>> from nextstat.builders import build_workspace_from_histograms
    >>> model = nextstat.from_pyhf(build_workspace_from_histograms(
    ...     [5.0, 8.0], {"b": [50.0, 40.0]}, normsys={"b": {"b_xsec": (0.9, 1.1)}}, staterror={"b": [3.0, 2.0]}))
    >>> modifier_groups(model)
    {'normsys': ['b_xsec'], 'staterror': ['staterror_SR[0]', 'staterror_SR[1]']}
    """
    fixed = _fixed_mask(model, fixed_params)
    groups: dict[str, list[str]] = {}
    names = model.parameter_names
    for name, sl in model.par_slices.items():
        key = "+".join(sorted(set(model._paramsets[name].types)))
        for i in range(sl.start, sl.stop):
            if i != model.poi_index and not fixed[i]:
                groups.setdefault(key, []).append(names[i])
    return groups


def _resolve(model: Model, groups: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """``{group: parameter indices}``; a member is a parameter name or a parameter set's name
    (``staterror_SR`` for all its bins)."""
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError(f"groups: expected a non-empty mapping {{group name: [parameter names]}}, got {groups!r}")
    index = {n: i for i, n in enumerate(model.parameter_names)}
    out: dict[str, list[int]] = {}
    for group, members in groups.items():
        if not isinstance(group, str) or group in RESERVED:
            raise ValueError(f"groups: {group!r} cannot name a group (a string other than {', '.join(RESERVED)})")
        if isinstance(members, str) or not isinstance(members, Sequence) or not members:
            raise ValueError(f"groups[{group!r}]: expected a non-empty list of parameter names, got {members!r}")
        idx: list[int] = []
        for m in members:
            if m in index:
                idx.append(index[m])
            elif m in model.par_slices:
                sl = model.par_slices[m]
                idx.extend(range(sl.start, sl.stop))
            else:
                raise ValueError(f"groups[{group!r}]: the model has no parameter named {m!r}")
        if model.poi_index in idx:
            raise ValueError(f"groups[{group!r}]: holds the POI {model.poi_name!r}, which is never frozen")
        out[group] = sorted(set(idx))
    return out


def grouped_impacts(model: Model, groups: Mapping[str, Sequence[str]] | None = None, *, data: Any = None,
                    fit_result: FitResult | None = None, init_pars: Any = None, fixed_params: Any = None,
                    par_bounds: Any = None) -> GroupedImpactResult:
    """Break the POI's uncertainty down by groups of nuisance parameters (module docstring).

    Args:
        model: compiled model; its POI must be free.
        groups: ``{group name: [parameter names]}`` (a name may be a parameter set's, e.g.
            ``"staterror_SR"`` for all its bins; groups may overlap); default
            :func:`modifier_groups`. ``"stat"``, ``"syst"`` and ``"total"`` are reserved.
        data: main + auxiliary data, or main only; default observed.
        fit_result: the nominal fit with Hesse errors (same ``data``, ``fixed_params``,
            ``par_bounds``); default: fitted here.
        init_pars, fixed_params, par_bounds: as in :func:`nextstat.fit`.

    Returns:
        :class:`GroupedImpactResult`, groups sorted by decreasing impact.

    Raises:
        ValueError: a model without a free POI, a nominal fit that did not converge or has no
            covariance, unknown parameter names, a group holding the POI.
        TypeError: ``model`` not a Model or ``fit_result`` not a FitResult.

    >>> import nextstat
    >>> from nextstat.builders import build_workspace_from_histograms
    >>> model = nextstat.from_pyhf(build_workspace_from_histograms(
    ...     [5.0, 8.0], {"b": [50.0, 40.0]}, normsys={"b": {"b_xsec": (0.9, 1.1)}}))
    >>> res = grouped_impacts(model)
    >>> res.groups, bool(np.isclose(res.total**2, res.stat**2 + res.impact("normsys")**2))
    (('normsys',), True)
    """
    nominal = nominal_fit(model, data=data, fit_result=fit_result, init_pars=init_pars, fixed_params=fixed_params,
                          par_bounds=par_bounds, what="grouped impacts")
    poi, d, fixed, fit_result = nominal.poi, nominal.data, nominal.fixed, nominal.fit
    names = model.parameter_names
    resolved = _resolve(model, modifier_groups(model, fixed_params=fixed) if groups is None else groups)
    theta = fit_result.bestfit
    total = float(fit_result.errors[poi])

    def sigma(frozen: np.ndarray) -> tuple[float, bool]:
        cov, posdef = hesse(model, theta, d, frozen)
        return float(np.sqrt(max(cov[poi, poi], 0.0))), bool(posdef)

    all_frozen = np.ones(model.n_params, dtype=bool)
    all_frozen[poi] = False
    stat, posdef = sigma(all_frozen)
    rows = []
    for g, idx in resolved.items():
        frozen = fixed.copy()
        frozen[idx] = True
        s, ok = sigma(frozen)
        posdef &= ok
        rows.append((g, tuple(names[i] for i in idx), float(np.sqrt(max(total**2 - s**2, 0.0))), s))
    rows.sort(key=lambda r: -r[2])
    return GroupedImpactResult(
        poi_name=model.poi_name, mu_hat=float(theta[poi]), total=total, stat=stat,
        groups=tuple(r[0] for r in rows), members=tuple(r[1] for r in rows),
        impacts=np.array([r[2] for r in rows]), sigma_without=np.array([r[3] for r in rows]),
        converged=bool(fit_result.converged), posdef=bool(posdef and fit_result.posdef),
    )
