"""What a :class:`~nextstat.model.Model` is built from, besides the workspace: pyhf 0.7.6's order of
parameter sets, the interpolation codes that ``modifier_settings`` selects, the code4 polynomial's
coefficients, shapesys constraint scales, the parameter-set record and the choice of the POI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nextstat.engine.compiled.codes import HS_CODE0, HS_CODE2, HS_CODE4P, SC_CODE1, SC_CODE4
from nextstat.errors import WorkspaceError

# pyhf's builder order decides the order in which parameter sets are registered.
BUILDER_ORDER = ("histosys", "lumi", "normfactor", "normsys", "shapefactor", "shapesys", "staterror")
NORMSYS_CODES = {"code1": SC_CODE1, "code4": SC_CODE4}
HISTOSYS_CODES = {"code0": HS_CODE0, "code2": HS_CODE2, "code4p": HS_CODE4P}
DEFAULT_SETTINGS = {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}}
# the codes of pyhf 0.7.6's appliers (normsys_combined, histosys_combined) when modifier_settings
# does not set them: a given modifier_settings replaces DEFAULT_SETTINGS as a whole
APPLIER_CODES = {"normsys": "code1", "histosys": "code0"}

# Inverse of the boundary-condition matrix of the code4 polynomial (alpha0 = 1), as in pyhf
# (src/pyhf/interpolators/code4.py) and ROOT's PiecewiseInterpolation.
_CODE4_AINV = np.array([
    [15.0 / 16, -15.0 / 16, -7.0 / 16, -7.0 / 16, 1.0 / 16, -1.0 / 16],
    [3.0 / 2, 3.0 / 2, -9.0 / 16, 9.0 / 16, 1.0 / 16, 1.0 / 16],
    [-5.0 / 8, 5.0 / 8, 5.0 / 8, 5.0 / 8, -1.0 / 8, 1.0 / 8],
    [3.0 / -2, 3.0 / -2, -7.0 / -8, 7.0 / -8, -1.0 / 8, -1.0 / 8],
    [3.0 / 16, -3.0 / 16, -3.0 / 16, -3.0 / 16, 1.0 / 16, -1.0 / 16],
    [1.0 / 2, 1.0 / 2, -5.0 / 16, 5.0 / 16, 1.0 / 16, 1.0 / 16],
])


def code4_coefficients(hi: float, lo: float) -> np.ndarray:
    """Polynomial coefficients a_1..a_6 of normsys code4 for factors ``hi``, ``lo`` (shape (6,)).

    Not finite for factors near the float64 limit (``ln(hi)^2 hi`` overflows beyond ~1e302).
    """
    lh, ll = math.log(hi), math.log(lo)
    b = np.array([hi - 1.0, lo - 1.0, lh * hi, -ll * lo, lh * lh * hi, ll * ll * lo])
    with np.errstate(over="ignore", invalid="ignore"):
        return _CODE4_AINV @ b


def interpolation_codes(modifier_settings: Mapping | None) -> tuple[str, str]:
    """The (normsys, histosys) interpolation codes of ``modifier_settings``, as pyhf 0.7.6 reads it.

    ``None`` gives pyhf's defaults (normsys code4, histosys code4p). A given dict *replaces*
    them (``pyhf.pdf._ModelConfig``): a type it leaves out gets its applier's default, normsys
    code1 or histosys code0 (``{}`` gives both). Options go to pyhf's modifier appliers as
    keyword arguments, so only ``interpcode``, of normsys and histosys, is an option; other
    modifier types take an empty dict. pyhf accepts normsys code1 / code4 and histosys code0 /
    code2 / code4p, all implemented here.

    Raises:
        ValueError: naming ``modifier_settings[...]``: a value that is not a dict, an unknown
            modifier type (pyhf ignores those: a misspelt type would silently fall back to the
            applier default), an unknown option or code.
    """
    if modifier_settings is None:
        modifier_settings = DEFAULT_SETTINGS
    if not isinstance(modifier_settings, Mapping):
        raise ValueError(f"modifier_settings: expected a dict such as {DEFAULT_SETTINGS}, got {modifier_settings!r}")
    codes = dict(APPLIER_CODES)
    for mtype, opts in modifier_settings.items():
        where = f"modifier_settings[{mtype!r}]"
        if mtype not in BUILDER_ORDER:
            raise ValueError(f"{where}: unknown modifier type; expected one of {list(BUILDER_ORDER)}")
        if not isinstance(opts, Mapping):
            raise ValueError(f"{where}: expected a dict of options, e.g. {{'interpcode': 'code1'}}, got {opts!r}")
        for key, code in opts.items():
            valid = {"normsys": NORMSYS_CODES, "histosys": HISTOSYS_CODES}.get(mtype)
            if valid is None or key != "interpcode":
                takes = "no options" if valid is None else "only 'interpcode'"
                raise ValueError(f"{where}[{key!r}]: unknown option; {mtype} takes {takes}")
            if not isinstance(code, str) or code not in valid:
                raise ValueError(f"{where}['interpcode']: expected one of {sorted(valid)}, got {code!r}")
            codes[mtype] = code
    return codes["normsys"], codes["histosys"]


def shapesys_tau(nominal: float, unc: float, path: str) -> float:
    """The Poisson constraint scale ``tau = (nominal / unc)**2`` of a shapesys bin (nominal, unc > 0).

    pyhf 0.7.6 computes ``nominal**2 / unc**2`` (``modifiers/shapesys.py``); so does this, bit
    for bit with JSON's ints and floats. Where that raises or is not finite (a square overflows,
    or ``unc**2`` underflows to 0) ``(nominal / unc)**2`` in float64 is used, and a ``tau``
    beyond float64 is refused naming ``path``.
    """
    x = nominal if type(nominal) in (int, float) else float(nominal)
    u = unc if type(unc) in (int, float) else float(unc)
    try:
        tau = x**2 / u**2
        if math.isfinite(tau):
            return tau
    except (OverflowError, ZeroDivisionError):
        pass
    try:
        tau = (float(x) / float(u)) ** 2  # inf where x / u overflows; float ** raises where the square does
    except OverflowError:
        tau = math.inf
    if not math.isfinite(tau):
        raise WorkspaceError(path, f"shapesys constraint tau = (nominal / uncertainty)^2 = ({float(x)!r} / {float(u)!r})^2 "
                                   "overflows float64")
    return tau


class MeasurementPOI:
    """Default of ``poi_name``: the POI that the measurement names (``config.poi``)."""

    def __repr__(self) -> str:
        return "<the measurement's POI>"


MEASUREMENT_POI = MeasurementPOI()


@dataclass
class ParamSet:
    name: str
    kind: str  # "normal", "poisson" or "free"
    n: int
    inits: list[float]
    bounds: list[tuple[float, float]]
    fixed: list[bool]
    auxdata: list[float] | None = None
    sigmas: list[float] | None = None
    factors: list[float] | None = None
    types: tuple[str, ...] = ()


def resolve_poi(paramsets: Mapping[str, ParamSet], measurement: dict, index: int,
                 poi_name: str | None | MeasurementPOI) -> str | None:
    """The POI of the model: ``poi_name`` where given (None: no POI), else the measurement's
    ``config.poi`` (pyhf 0.7.6's ``Workspace.model(poi_name=...)``). It must be a scalar parameter."""
    where = f"measurements[{index}].config.poi"
    hint = ("; for a background-only model pass poi_name=None (CLI: --poi none), or name another "
            "parameter with poi_name= (CLI: --poi NAME)")
    if poi_name is MEASUREMENT_POI:
        if "poi" not in measurement["config"]:
            raise WorkspaceError(where, "required field is missing (the measurement names no POI)" + hint)
        poi = measurement["config"]["poi"]
    elif poi_name is None:
        return None
    elif isinstance(poi_name, str):
        poi, where, hint = poi_name, "poi_name", "; pass poi_name=None for a model without a POI"
    else:
        raise TypeError(f"poi_name: expected a parameter name (str) or None, got {type(poi_name).__name__}")
    if poi not in paramsets:
        known = ", ".join(sorted(n for n, ps in paramsets.items() if ps.n == 1 and ps.kind == "free")[:10])
        raise WorkspaceError(where, f"POI {poi!r} is not a parameter of the model (its free scalar parameters: "
                                    f"{known or 'none'}){hint}")
    if paramsets[poi].n != 1:
        raise WorkspaceError(where, f"POI {poi!r} has {paramsets[poi].n} components; it must be a scalar")
    return poi
