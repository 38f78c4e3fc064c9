"""The model arrays' layout (nextstat.engine.layout): named fields, packing round trip."""

from __future__ import annotations

import numpy as np
import pytest

import nextstat
from nextstat.engine import layout


@pytest.fixture(scope="module")
def model():
    from conftest import all_modifiers_workspace

    return nextstat.from_pyhf(all_modifiers_workspace())


def test_fields_and_offsets_agree(model):
    A = model.arrays
    assert len(A) == len(layout.A_FIELDS) == layout.N_BINS + 1
    fields = layout.named(A)
    assert fields.n_bins == model.n_bins == A[layout.N_BINS]
    assert fields.nom is A[layout.NOM] and fields.sc_coef.shape[1] == 6
    assert [a.dtype for a in model.aux_arrays] == [np.int64, np.int64, np.float64, np.float64]
    rebuilt = layout.model_arrays(**fields._asdict())
    for a, b in zip(A, rebuilt):
        np.testing.assert_array_equal(a, b)


def test_model_arrays_name_missing_and_unknown_fields(model):
    fields = layout.named(model.arrays)._asdict()
    del fields["hs_up"]
    with pytest.raises(TypeError, match=r"missing fields \['hs_up'\], unknown fields \['hs_upp'\]"):
        layout.model_arrays(**fields, hs_upp=np.zeros(0))


def test_pack_unpack_round_trip(model):
    FB, IB = layout.pack(model.arrays, model.aux_arrays)
    A, AUX = layout.unpack(FB, IB)
    for a, b in zip(model.arrays, A):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.aux_arrays, AUX):
        np.testing.assert_array_equal(a, b)


def test_with_nominal_and_flat_layout(model):
    A = model.arrays
    nom = A[layout.NOM] * 2.0
    B = layout.with_nominal(A, nom, A[layout.HS_UP], A[layout.HS_DN])
    np.testing.assert_array_equal(B[layout.NOM], nom)
    for k in set(range(len(A))) - {layout.NOM}:
        np.testing.assert_array_equal(B[k], A[k])
    F = layout.flat_layout(A)
    np.testing.assert_array_equal(F[layout.BLK_B0], A[layout.BLK_OFF])
    assert F[layout.N_BINS] == A[layout.NOM].shape[0]
