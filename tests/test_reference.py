"""Gradient-boosting reference on measured lattice descriptors: fit, predict, save/load on a tiny set."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from py4dstem_gnn.baselines.reference import GradientBoostingReference, radial_histogram  # noqa: E402
from py4dstem_gnn.geometry import descriptor_names  # noqa: E402
from py4dstem_gnn.predict import Prediction  # noqa: E402
from py4dstem_gnn.labels import SG_TO_CS  # noqa: E402

# (space group, reduced net) per class: cubic square, hexagonal, orthorhombic rectangular
CLASSES = [
    (225, (0.30, 0.0), (0.0, 0.30)),
    (194, (0.36, 0.0), (0.18, 0.36 * np.sqrt(3) / 2)),
    (62, (0.22, 0.0), (0.0, 0.35)),
]


def _pattern(a, b, rng):
    r = np.arange(-12, 13)
    h, k = (x.ravel() for x in np.meshgrid(r, r, indexing="ij"))
    q = h[:, None] * np.asarray(a) + k[:, None] * np.asarray(b)
    keep = (np.hypot(*q.T) < rng.uniform(1.0, 1.6)) & ((h != 0) | (k != 0)) & (rng.random(len(h)) > 0.1)
    q = q[keep] * (1 + rng.uniform(-0.01, 0.01))
    t = rng.uniform(0, 2 * np.pi)
    q = q @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) + rng.normal(0, 0.002, q.shape)
    inten = np.exp(-2 * np.hypot(*q.T)) * rng.uniform(0.5, 1, len(q))
    return np.vstack([[0, 0, 1.0], np.c_[q, inten]]).astype(np.float32)


def _dataset(n_per_class, seed):
    rng = np.random.default_rng(seed)
    pls, sg = [], []
    for s, a, b in CLASSES:
        for _ in range(n_per_class):
            pls.append(_pattern(a, b, rng))
            sg.append(s)
    sg = np.array(sg)
    return pls, SG_TO_CS[sg - 1], sg


@pytest.fixture(scope="module")
def fitted():
    pls, cs, sg = _dataset(25, 0)
    model = GradientBoostingReference(max_iter_cs=20, max_iter_sg=20, min_samples_leaf=5)
    return model.fit(pls, cs, sg)


def test_fit_predict(fitted):
    pls, cs, sg = _dataset(10, 1)
    pred = fitted.predict(pls)
    assert isinstance(pred, Prediction) and len(pred) == len(pls)
    assert (pred.crystal_system == cs).mean() >= 0.9
    assert (pred.space_group == sg).mean() >= 0.9
    np.testing.assert_allclose(pred.crystal_system_probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(pred.space_group_probs.sum(1), 1, atol=1e-5)
    # joint space-group probabilities marginalise to the crystal-system head
    marg = np.zeros_like(pred.crystal_system_probs)
    np.add.at(marg.T, SG_TO_CS, pred.space_group_probs.T)
    np.testing.assert_allclose(marg, pred.crystal_system_probs, atol=1e-5)
    assert np.all(SG_TO_CS[pred.space_group - 1] == pred.crystal_system)
    assert np.all(pred.n_spots == [len(p) - 1 for p in pls])


def test_save_load_roundtrip(fitted, tmp_path):
    pls, _, _ = _dataset(3, 2)
    path = fitted.save(tmp_path / "ref.joblib")
    loaded = GradientBoostingReference.load(path)
    a, b = fitted.predict(pls), loaded.predict(pls)
    np.testing.assert_array_equal(a.space_group_probs, b.space_group_probs)
    import joblib

    joblib.dump({"format": "something else"}, tmp_path / "bad.joblib")
    with pytest.raises(ValueError):
        GradientBoostingReference.load(tmp_path / "bad.joblib")


def test_features_and_errors():
    model = GradientBoostingReference(radial_bins=10, max_iter_cs=5, max_iter_sg=5)
    pls, cs, sg = _dataset(4, 3)
    X = model.featurize(pls)
    assert X.shape == (len(pls), len(descriptor_names()) + 10) == (len(pls), len(model.feature_names()))
    assert np.all(np.isfinite(X))
    with pytest.raises(RuntimeError):
        model.predict(pls)
    with pytest.raises(ValueError):
        model.fit(None, cs, sg)
    with pytest.raises(ValueError):
        model.fit(pls, cs, sg[:-1])
    with pytest.raises(ValueError):
        model.fit(pls, (cs + 1) % 7, sg)
    with pytest.raises(ValueError):
        model.fit(None, cs, sg, features=X[:, :5])
    # a single class trains (constant head) and predicts it
    one = GradientBoostingReference(max_iter_cs=5, max_iter_sg=5).fit(pls[:4], cs[:4], sg[:4])
    assert np.all(one.predict(pls[:2]).space_group == sg[0])


def test_radial_histogram():
    pls = [np.array([[0, 0, 1.0], [0.05, 0, 1], [0.3, 0.4, 1], [3.0, 0, 1]]), np.zeros((0, 3))]
    is_beam = np.array([True, False, False, False])
    H = radial_histogram(pls, is_beam, np.array([0, 4, 4]), bins=4, q_max=2.0)
    np.testing.assert_allclose(H, [[1 / 3, 1 / 3, 0, 0], [0, 0, 0, 0]])
