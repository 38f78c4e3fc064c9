"""Diagnose the ``known`` local minima of ``contract_violations.json`` (the strict xfails of
``tests/test_fuzz_regressions.py``): for each one, our fit's NLL next to pyhf's (SciPy), and the
NLL that each candidate retry reaches, as the gap above pyhf's minimum:

- a Newton fit started at pyhf's best fit (is pyhf's point a minimum for our fitter too?);
- the first-order path of ``nextstat.infer.fit.first_order_start`` (SLSQP) polished by Newton;
- the alternative starts of ``retry_starts`` and 8 seeded ``spread_starts``;

then the parameters on which our minimum and pyhf's differ. A survey for choosing a retry policy,
not a test: ``python tests/reference/fuzz/diagnose_known_minima.py`` (with
``NEXTSTAT_FITTER=compiled`` and a warm cache; about a minute)."""

from __future__ import annotations


def main() -> None:
    import json
    import pathlib
    import sys

    import numpy as np
    import pyhf

    here = pathlib.Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parents[1]))
    import test_properties as tp

    import nextstat
    from nextstat.engine.fitter import resolve_fitter
    from nextstat.infer import fit as policy

    tp.event = tp.note = lambda *a, **k: None  # the contract helpers record Hypothesis events
    pyhf.set_backend("numpy", "scipy")
    engine = resolve_fitter("compiled", "fit_with_errors")
    for case in json.loads((here / "contract_violations.json").read_text()):
        if not case.get("known"):
            continue
        ws, settings = case["workspace"], case["modifier_settings"]
        model = tp.check_from_pyhf(ws, settings)
        ours = nextstat.fit(model)
        _, _, pyhf_bf, pyhf_nll = tp._pyhf_fit(pyhf, ws, settings)
        lo, hi, fixed, d, init = model._lo, model._hi, model.fixed_params, model.data, model._init

        def gap(start):
            if start is None:
                return float("nan")
            return engine.fit(model, np.ascontiguousarray(start), d, lo, hi, fixed, 200, 1e-10, False).nll - pyhf_nll

        print(f"{case['id']} (settings {settings}): ours {ours.nll - pyhf_nll:+.4g} above pyhf "
              f"({ours.n_iter} iterations, {ours.message})")
        print(f"  from pyhf's best fit {gap(np.clip(pyhf_bf, lo, hi)):+.3g}; first-order path + Newton "
              f"{gap(policy.first_order_start(model, d, init, fixed, lo, hi, engine)):+.3g}")
        print("  retry starts", np.round([gap(s) for s in policy.retry_starts(model, init, fixed, lo, hi)], 4))
        print("  spread starts", np.round([gap(s) for s in policy.spread_starts(model, init, fixed, lo, hi, 8)], 4))
        for i, name in enumerate(model.parameter_names):
            if abs(ours.bestfit[i] - pyhf_bf[i]) > 1e-3 * (1 + abs(pyhf_bf[i])):
                print(f"    {name:20s} init {init[i]:9.4f}  ours {ours.bestfit[i]:10.4f}  pyhf {pyhf_bf[i]:10.4f}")


if __name__ == "__main__":
    main()
