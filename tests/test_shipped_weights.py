"""The shipped default weights: present, verified, and giving their recorded predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import py4dstem_gnn as pg
from py4dstem_gnn.weights import read_card, resolve_weights, sha256_of

EXPECTED = Path(__file__).parent / "data" / "default_prediction.json"


def test_default_weights_verify_and_card_is_complete():
    path = resolve_weights("default")
    card = read_card(path)
    assert sha256_of(path) == card["sha256"]
    assert path.with_suffix(".sha256").read_text().split()[0] == card["sha256"]
    for key in ("config", "feature_normalisation", "labels", "training", "licence"):
        assert key in card, key
    model = pg.load_model("default")
    assert model.num_parameters() == card["n_parameters"]


def test_default_weights_give_the_recorded_prediction():
    """A fixed pattern (stored beside its expected output) is classified as when the weights shipped."""
    expected = json.loads(EXPECTED.read_text())
    pointlists = [np.asarray(p, dtype=np.float32) for p in expected["pointlists"]]
    pred = pg.predict_pointlists(pointlists, model="default", device="cpu", phases=None)
    np.testing.assert_array_equal(pred.crystal_system, expected["crystal_system"])
    np.testing.assert_array_equal(pred.space_group, expected["space_group"])
    np.testing.assert_allclose(pred.crystal_system_probs, expected["crystal_system_probs"], atol=1e-4)


def _write_expected() -> None:  # pragma: no cover - run by hand when new weights ship
    from py4dstem_gnn.data.dataset import PatternSet

    ps = PatternSet.from_hdf5(Path(__file__).parents[1] / "data" / "bloch_test.h5")
    idx = [0, 1, 2, 3, 10, 20]
    pointlists = [ps.pointlists[i] for i in idx]
    pred = pg.predict_pointlists(pointlists, model="default", device="cpu", phases=None)
    EXPECTED.write_text(json.dumps({
        "source": "data/bloch_test.h5 patterns " + ", ".join(map(str, idx)),
        "pointlists": [p.tolist() for p in pointlists],
        "crystal_system": pred.crystal_system.tolist(),
        "space_group": pred.space_group.tolist(),
        "crystal_system_probs": pred.crystal_system_probs.tolist(),
    }) + "\n")


if __name__ == "__main__":  # pragma: no cover
    _write_expected()
