"""Tests of the random-forest baseline: featurisation on hand-made patterns, fit/predict/save/load."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from py4dstem_gnn.baselines import forest as bl  # noqa: E402
from py4dstem_gnn.predict import Prediction, aggregate_views  # noqa: E402
from py4dstem_gnn.labels import SG_TO_CS  # noqa: E402


def _pattern(spots: list[tuple[float, float, float]], beam: float = 100.0) -> np.ndarray:
    """Pointlist with a direct beam at the origin followed by diffracted spots given in polar form."""
    rows = [(0.0, 0.0, beam)] + [(r * np.cos(t), r * np.sin(t), i) for r, t, i in spots]
    return np.asarray(rows, dtype=np.float64)


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * np.asarray(a)))


def test_feature_count_is_1066():
    assert bl.N_RADIAL_BINS == 41
    assert bl.N_ANGULAR_ORDERS == 13
    assert bl.N_FEATURES == 1066
    assert bl.FeaturizerConfig().n_features == 1066
    X = bl.featurize([_pattern([(0.5, 0.1, 1.0)])])
    assert X.shape == (1, 1066) and X.dtype == np.float32


@pytest.mark.parametrize("radius, theta", [(0.52, 0.3), (1.234, -2.0), (0.05 * 17 + 0.01, 3.0)])
def test_single_spot_lands_in_expected_bins_with_expected_phase(radius, theta):
    c = bl.radial_angular_coefficients([_pattern([(radius, theta, 7.0)])])[0]
    lo = int(np.floor(radius / bl.DK))
    frac = radius / bl.DK - lo
    mag = np.abs(c)
    nonzero = np.flatnonzero(mag.sum(axis=1) > 1e-12)
    assert list(nonzero) == [lo, lo + 1]
    # intensity normalised to 0.3 and split linearly between the two bins, same for every order
    np.testing.assert_allclose(mag[lo], 0.3 * (1 - frac), atol=1e-5)
    np.testing.assert_allclose(mag[lo + 1], 0.3 * frac, atol=1e-5)
    m = np.arange(bl.N_ANGULAR_ORDERS)
    np.testing.assert_allclose(np.angle(c[lo]), _wrap(m * theta), atol=1e-6)
    np.testing.assert_allclose(np.angle(c[lo + 1]), _wrap(m * theta), atol=1e-6)
    # the real features carry the same numbers: magnitudes first, then phases
    X = bl.featurize([_pattern([(radius, theta, 7.0)])])[0]
    n = bl.N_RADIAL_BINS * bl.N_ANGULAR_ORDERS
    np.testing.assert_allclose(X[:n].reshape(41, 13), mag, atol=1e-6)
    np.testing.assert_allclose(
        np.exp(1j * X[n:].reshape(41, 13)[lo]), np.exp(1j * m * theta), atol=1e-5
    )


def test_spot_on_bin_centre_and_outside_range():
    c = bl.radial_angular_coefficients([_pattern([(0.75, 0.0, 1.0), (2.2, 1.0, 1.0)])])[0]
    mag = np.abs(c[:, 0])
    # intensities: two spots normalised to 0.15 each; the one at 2.2 1/A falls outside every bin
    np.testing.assert_allclose(mag[15], 0.15, atol=1e-6)
    np.testing.assert_allclose(np.delete(mag, 15), 0.0, atol=1e-6)
    # a spot between 2.0 and 2.05 1/A feeds only the last bin, with its triangular weight
    c = bl.radial_angular_coefficients([_pattern([(2.03, 0.0, 1.0)])])[0]
    np.testing.assert_allclose(np.abs(c[40, 0]), 0.3 * (1 - 0.03 / 0.05), atol=1e-5)


def test_direct_beam_removed_and_intensity_normalised():
    base = [(0.4, 0.2, 1.0), (0.9, 1.1, 3.0), (1.5, -0.7, 2.0)]
    with_beam = bl.radial_angular_coefficients([_pattern(base, beam=1e6)])[0]
    scaled = bl.radial_angular_coefficients([_pattern([(r, t, 5 * i) for r, t, i in base], beam=1.0)])[0]
    np.testing.assert_allclose(with_beam, scaled, atol=1e-7)
    np.testing.assert_allclose(with_beam[:, 0].real.sum(), 0.3, rtol=1e-6)  # weights sum to 1
    assert np.abs(with_beam[0]).max() < 1e-12  # nothing left at k = 0


def test_rotation_changes_phases_not_magnitudes():
    rng = np.random.default_rng(1)
    r = rng.uniform(0.2, 1.9, 25)
    t = rng.uniform(-np.pi, np.pi, 25)
    inten = rng.uniform(0.1, 2.0, 25)
    alpha = 0.37
    a = bl.radial_angular_coefficients([_pattern(list(zip(r, t, inten)))])[0]
    b = bl.radial_angular_coefficients([_pattern(list(zip(r, t + alpha, inten)))])[0]
    np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-7)
    m = np.arange(bl.N_ANGULAR_ORDERS)
    np.testing.assert_allclose(b, a * np.exp(1j * m * alpha)[None, :], atol=1e-7)
    Xa, Xb = bl.featurize([_pattern(list(zip(r, t, inten))), _pattern(list(zip(r, t + alpha, inten)))])
    n = 41 * 13
    np.testing.assert_allclose(Xa[:n], Xb[:n], atol=1e-6)
    assert not np.allclose(Xa[n:], Xb[n:], atol=1e-3)


def test_batch_equals_one_by_one_and_empty_patterns():
    rng = np.random.default_rng(2)
    pls = [np.c_[rng.normal(scale=0.8, size=(k, 2)), rng.random(k)] for k in (0, 1, 5, 30)]
    pls.append(np.zeros((0, 3)))
    pls.append(np.array([[0.0, 0.0, 5.0]]))  # beam only
    batch = bl.featurize(pls, chunk_size=3)
    single = np.concatenate([bl.featurize([p]) for p in pls])
    np.testing.assert_allclose(batch, single, atol=1e-6)
    assert np.all(batch[-1] == 0) and np.all(batch[-2] == 0)


def _toy_task(n_per_class: int = 30, seed: int = 0):
    """Three space groups in three crystal systems, told apart by the ring radius of their spots."""
    rng = np.random.default_rng(seed)
    sgs = np.array([2, 14, 225])
    radii = {2: 0.4, 14: 0.9, 225: 1.5}
    pls, sg = [], []
    for s in sgs:
        for _ in range(n_per_class):
            k = rng.integers(4, 12)
            th = rng.uniform(-np.pi, np.pi, k)
            r = radii[s] + rng.normal(scale=0.02, size=k)
            pls.append(np.r_[[[0.0, 0.0, 10.0]], np.c_[r * np.cos(th), r * np.sin(th), rng.random(k) + 0.1]])
            sg.append(s)
    sg = np.asarray(sg)
    return pls, SG_TO_CS[sg - 1], sg


def test_fit_predict_save_load(tmp_path):
    pls, cs, sg = _toy_task()
    rf = bl.RandomForestBaseline(n_estimators_cs=10, n_estimators_sg=8, n_jobs=1, random_state=0)
    rf.fit(pls, cs, sg)
    pred = rf.predict(pls)
    assert isinstance(pred, Prediction)
    assert pred.crystal_system_probs.shape == (len(pls), 7)
    assert pred.space_group_probs.shape == (len(pls), 230)
    np.testing.assert_allclose(pred.space_group_probs.sum(axis=1), 1.0, atol=1e-5)
    # joint probabilities are consistent with the crystal-system probabilities
    marg = np.zeros((len(pls), 7))
    np.add.at(marg.T, SG_TO_CS, pred.space_group_probs.T)
    np.testing.assert_allclose(marg, pred.crystal_system_probs, atol=1e-5)
    assert np.all(SG_TO_CS[pred.space_group - 1] == pred.crystal_system)
    assert np.mean(pred.crystal_system == cs) > 0.95
    assert np.mean(pred.space_group == sg) > 0.95
    assert np.all(pred.n_spots >= 4)

    path = rf.save(tmp_path / "rf.joblib")
    rf2 = bl.RandomForestBaseline.load(path, n_jobs=1)
    pred2 = rf2.predict(pls)
    np.testing.assert_array_equal(pred.space_group_probs, pred2.space_group_probs)
    # the package's aggregation works on the baseline's predictions
    agg = aggregate_views(pred, np.arange(len(pls)) // 10)
    assert len(agg) == len(pls) // 10


def test_fit_rejects_inconsistent_labels():
    pls, cs, sg = _toy_task(n_per_class=3)
    cs = cs.copy()
    cs[0] = 6
    with pytest.raises(ValueError, match="contradicts"):
        bl.RandomForestBaseline(n_estimators_cs=2, n_estimators_sg=2).fit(pls, cs, sg)


def test_load_rejects_foreign_file(tmp_path):
    import joblib

    joblib.dump({"something": 1}, tmp_path / "x.joblib")
    with pytest.raises(ValueError):
        bl.RandomForestBaseline.load(tmp_path / "x.joblib")


def test_predict_before_fit_raises():
    with pytest.raises(RuntimeError):
        bl.RandomForestBaseline().predict([_pattern([(0.5, 0.0, 1.0)])])
