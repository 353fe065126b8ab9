"""Torch sampler on the training device: same spots as the numpy (py4DSTEM-checked) sampler, augmentations
with the same statistics, padded model input equal to the numpy collate, orientations, tables on file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from py4dstem_gnn.data import kinematic as kinematic_
from py4dstem_gnn.data import orientations as orientations_
from py4dstem_gnn.data.augment import AugmentConfig, augment_pointlists
from py4dstem_gnn.data.kinematic_torch import (KinematicTables, augment_padded, padded_to_pointlists,
                                               random_rotations_torch, rotation_with_beam_along_torch,
                                               sample_kinematic_torch)
from py4dstem_gnn.features import collate, collate_padded, split_direct_beam
from _crystals import CELLS


def _sorted(p):
    p = np.asarray(p, dtype=np.float64)
    return p[np.lexsort((p[:, 1].round(6), p[:, 0].round(6)))]


@pytest.fixture(scope="module")
def tables(library):
    return KinematicTables.from_library(library)


def _orientations(n: int, seed: int, lat_inv: np.ndarray) -> np.ndarray:
    """Half uniform, half near zone axes (where many reflections sit on the Ewald sphere)."""
    rng = np.random.default_rng(seed)
    za = orientations_.zone_axis_rotations(np.repeat(lat_inv[None], n - n // 2, 0), rng, tilt_deg=0.5)
    return np.concatenate([kinematic_.random_rotations(n // 2, rng), za])


SELECTIONS = [
    dict(),
    dict(sigma_excitation_error=0.035, k_max=1.5),
    dict(max_spots=12),
    dict(envelope="lorentzian", sigma_excitation_error=0.002, tol_excitation_error_mult=10.0, max_spots=40),
]


@pytest.mark.parametrize("material", sorted(CELLS))
@pytest.mark.parametrize("kw", SELECTIONS, ids=["default", "kmax", "cap", "lorentzian"])
def test_torch_sampler_gives_the_numpy_spots(library, tables, material, kw):
    R = _orientations(8, material, library.lat_inv[library.row_of(material)])
    mats = [material] * len(R)
    ref = kinematic_.sample_kinematic(library, mats, R, **kw)
    for dtype, atol, rtol in [(torch.float64, 1e-6, 1e-6), (torch.float32, 1e-4, 1e-3)]:  # float32 outputs
        spots, mask = sample_kinematic_torch(tables, tables.rows(mats), torch.as_tensor(R), dtype=dtype, **kw)
        assert spots.dtype == torch.float32 and mask.dtype == torch.bool
        for p, r in zip(padded_to_pointlists(spots, mask), ref):
            assert np.array_equal(p[0], r[0])  # the direct beam first, at q = 0
            if dtype == torch.float32 and len(p) != len(r):  # a spot at a threshold's edge may flip
                assert abs(len(p) - len(r)) <= 1
                continue
            a, b = _sorted(p), _sorted(r)
            assert a.shape == b.shape
            np.testing.assert_allclose(a[:, :2], b[:, :2], atol=atol)
            np.testing.assert_allclose(a[:, 2], b[:, 2], rtol=rtol, atol=1e-12)


def test_batch_mixing_materials_and_sigmas(library, tables):
    rng = np.random.default_rng(3)
    mats = rng.choice(sorted(CELLS), 40)
    R = kinematic_.random_rotations(40, rng)
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(0.04), 40))
    ref = kinematic_.sample_kinematic(library, mats, R, sigma_excitation_error=sigma)
    spots, mask = sample_kinematic_torch(tables, tables.rows(mats), R, sigma_excitation_error=torch.as_tensor(sigma),
                                         dtype=torch.float64)
    assert spots.shape[1] == 1 + max(len(r) - 1 for r in ref)
    for p, r in zip(padded_to_pointlists(spots, mask), ref):
        np.testing.assert_allclose(_sorted(p), _sorted(r), rtol=1e-6, atol=1e-9)


def test_cap_keeps_the_brightest_in_order(library, tables):
    R = kinematic_.random_rotations(6, np.random.default_rng(9))
    spots, mask = sample_kinematic_torch(tables, tables.rows([1] * 6), R, max_spots=5, dtype=torch.float64)
    full, fmask = sample_kinematic_torch(tables, tables.rows([1] * 6), R, dtype=torch.float64)
    for p, f in zip(padded_to_pointlists(spots, mask), padded_to_pointlists(full, fmask)):
        assert len(p) == 1 + min(5, len(f) - 1)
        assert np.all(np.diff(p[1:, 2]) <= 0)  # brightest first
        np.testing.assert_allclose(p[1:, 2], np.sort(f[1:, 2])[::-1][: len(p) - 1])


def test_tables_file_roundtrip_and_exact_pruning(library, tables, tmp_path):
    path = tables.save(tmp_path / "tables.npz")
    back = KinematicTables.load(path)
    assert torch.equal(back.hkl, tables.hkl) and torch.equal(back.intensity, tables.intensity)
    assert np.array_equal(back.to_library().hkl, library.hkl)
    pruned = KinematicTables.from_library(library, min_intensity=1e-3, min_relative=1e-3)
    assert len(pruned.intensity) < len(tables.intensity)
    R = kinematic_.random_rotations(6, np.random.default_rng(2))
    rows = [0, 1, 2, 0, 1, 2]
    a = sample_kinematic_torch(tables, rows, R, tol_intensity=1e-3, rel_threshold=1e-3, dtype=torch.float64)
    b = sample_kinematic_torch(pruned, rows, R, tol_intensity=1e-3, rel_threshold=1e-3, dtype=torch.float64)
    for p, q in zip(padded_to_pointlists(*a), padded_to_pointlists(*b)):
        np.testing.assert_array_equal(_sorted(p), _sorted(q))
    with pytest.raises(ValueError, match="tol_intensity"):
        sample_kinematic_torch(pruned, rows, R, tol_intensity=1e-5, rel_threshold=1e-3)
    with pytest.raises(ValueError, match="rel_threshold"):
        sample_kinematic_torch(pruned, rows, R, tol_intensity=1e-3)


def test_orientation_helpers_match_numpy():
    gen = torch.Generator().manual_seed(0)
    R = random_rotations_torch(20000, gen).numpy()
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-10) and np.allclose(np.linalg.det(R), 1)
    assert np.all(np.abs(R.mean(0)) < 0.02) and np.allclose(R.var(0), 1 / 3, atol=0.02)
    rng = np.random.default_rng(1)
    d, ang = rng.normal(size=(50, 3)), rng.uniform(0, 2 * np.pi, 50)
    np.testing.assert_allclose(rotation_with_beam_along_torch(torch.as_tensor(d), torch.as_tensor(ang)).numpy(),
                               orientations_.rotation_with_beam_along(d, ang), atol=1e-12)


def _stats(pls):
    n = np.array([len(p) for p in pls], float)
    r = np.concatenate([np.hypot(p[1:, 0], p[1:, 1]) for p in pls])
    li = np.concatenate([np.log10(np.maximum(p[1:, 2], 1e-9) / max(p[1:, 2].max(), 1e-9)) for p in pls if len(p) > 1])
    return {"count": n, "radius": r, "log_rel_intensity": li}


def test_augmentations_have_the_numpy_distributions(library, tables):
    rng = np.random.default_rng(0)
    mats = np.tile(sorted(CELLS), 700)
    R = kinematic_.random_rotations(len(mats), rng)
    spots, mask = sample_kinematic_torch(tables, tables.rows(mats), R, max_spots=80)
    cfg = AugmentConfig.preset("legacy") if hasattr(AugmentConfig, "preset") else AugmentConfig()
    a = augment_pointlists(padded_to_pointlists(spots, mask), np.random.default_rng(1), cfg)
    s2, m2 = augment_padded(spots, mask, torch.Generator().manual_seed(1), cfg)
    b = padded_to_pointlists(s2, m2)
    assert all(np.array_equal(p[0, :2], [0, 0]) or np.hypot(*p[0, :2]) < 0.05 for p in b)  # the beam stays
    sa, sb = _stats(a), _stats(b)
    for key in sa:
        x, y = sa[key], sb[key]
        se = np.sqrt(x.var() / len(x) + y.var() / len(y))
        assert abs(x.mean() - y.mean()) < 5 * se, key
        assert abs(x.std() - y.std()) < 0.05 * x.std() + 1e-9, key
    assert not all(len(p) == len(q) and np.allclose(p, q) for p, q in zip(a, b))  # different random streams


def test_calibration_error_distribution():
    """One spot at (1, 0) and nothing dropped: the radius follows the scale and ellipticity draws."""
    cfg = AugmentConfig(weak_threshold=(0.0, 0.0), dropout=0.0, q_max_range=None, spurious_rate=0.0, jitter=0.0,
                        scale_error=0.03, ellipticity=0.02)
    n = 20000
    pl = np.array([[0, 0, 10.0], [1.0, 0, 1.0]], np.float32)
    a = augment_pointlists([pl] * n, np.random.default_rng(0), cfg)
    spots = torch.as_tensor(np.stack([pl] * n))
    s, m = augment_padded(spots, torch.ones(n, 2, dtype=torch.bool), torch.Generator().manual_seed(0), cfg)
    ra = np.array([np.hypot(*p[1, :2]) for p in a])
    rb = torch.linalg.norm(s[:, 1, :2], dim=-1).numpy()
    assert m.all()
    assert abs(ra.mean() - rb.mean()) < 5 * np.sqrt(2 * ra.var() / n)
    assert abs(ra.std() - rb.std()) < 0.03 * ra.std()


NEUTRAL = dict(scale_error=0.0, ellipticity=0.0, rotation_deg=0.0, jitter=0.0, gamma_range=(1.0, 1.0),
               intensity_noise=0.0, weak_threshold=(0.0, 0.0), dropout=0.0, q_max_range=None, spurious_rate=0.0)


def _per_pattern(pls):
    count = np.array([len(p) for p in pls], float)
    radius = np.array([np.hypot(p[1:, 0], p[1:, 1]).mean() for p in pls])
    log_i = [np.log(np.maximum(p[1:, 2], 1e-12)) for p in pls]
    return {"count": count, "mean radius": radius, "mean log intensity": np.array([x.mean() for x in log_i]),
            "spread of log intensity": np.array([x.std() for x in log_i])}


@pytest.mark.parametrize("knob", [dict(dropout=0.2), dict(weak_threshold=(1e-3, 1e-1)), dict(q_max_range=(1.0, 1.8)),
                                  dict(spurious_rate=1.5), dict(gamma_range=(0.5, 1.0), intensity_noise=0.3),
                                  dict(scale_error=0.03, ellipticity=0.02, rotation_deg=5.0, jitter=0.01)],
                         ids=["dropout", "weak", "qmax", "spurious", "intensity", "calibration"])
def test_each_augmentation_step_has_the_numpy_distribution(knob):
    """One step at a time on one fixed pattern: per-pattern statistics agree in mean and spread."""
    rng = np.random.default_rng(5)
    q = rng.uniform(-1.4, 1.4, (40, 2))
    pl = np.vstack([[0, 0, 10.0], np.c_[q, np.exp(rng.uniform(-9, 0, 40))]]).astype(np.float32)
    cfg = AugmentConfig(**{**NEUTRAL, **knob})
    n = 4000
    a = augment_pointlists([pl] * n, np.random.default_rng(0), cfg)
    spots = torch.as_tensor(np.stack([pl] * n))
    b = padded_to_pointlists(*augment_padded(spots, torch.ones(n, 41, dtype=torch.bool),
                                             torch.Generator().manual_seed(0), cfg))
    for key, x in _per_pattern(a).items():
        y = _per_pattern(b)[key]
        if x.std() == 0:
            assert y.std() == 0 and np.isclose(x.mean(), y.mean(), rtol=1e-5), key
            continue
        assert abs(x.mean() - y.mean()) < 5 * np.sqrt((x.var() + y.var()) / n), key
        assert abs(x.std() - y.std()) < 0.06 * x.std(), key


def test_collate_padded_equals_numpy_collate(library, tables):
    R = kinematic_.random_rotations(30, np.random.default_rng(4))
    mats = np.tile(sorted(CELLS), 10)
    spots, mask = sample_kinematic_torch(tables, tables.rows(mats), R)
    spots, mask = augment_padded(spots, mask, torch.Generator().manual_seed(0), AugmentConfig())
    pls = padded_to_pointlists(spots, mask)
    for cap in (8, 64):
        x, xm = collate([split_direct_beam(p)[0] for p in pls], cap)
        y, ym = collate_padded(spots, mask, cap)
        assert x.shape == y.shape and torch.equal(xm.sum(1), ym.sum(1))
        for i in range(len(pls)):
            np.testing.assert_allclose(_sorted(x[i][xm[i]].numpy()), _sorted(y[i][ym[i]].numpy()))
    z, zm = collate_padded(spots, mask, 8, pad_to=16)
    assert z.shape == (30, 16, 3) and not zm[:, 8:].any()


# ----------------------------------------------------------------------------- the training source
def write_tiny_manifest(path):
    """A manifest of the three test crystals (all in every split column's ``train``, NaCl also ``val``)."""
    from py4dstem_gnn.data.structures import Manifest, write_manifest
    from py4dstem_gnn.labels import SG_TO_CS

    sg = np.array([CELLS[m][1] for m in sorted(CELLS)])
    split = np.array(["train", "val", "train"])
    cols = {"material": np.arange(3), "formula": np.array(["Au", "NaCl", "Mg"]), "space_group": sg,
            "crystal_system": SG_TO_CS[sg - 1], "group": np.arange(3), "split": split, "split_type": split,
            "split_material": split}
    return write_manifest(Manifest(cols, {}), path)


def _source(tables, tmp_path, **kw):
    from py4dstem_gnn.data.sources_torch import TorchKinematicSource

    manifest = write_tiny_manifest(tmp_path / "manifest.csv.gz")
    return TorchKinematicSource(tables, manifest, split=["train", "val"], **{"axes": "primitive", **kw})


def test_source_batches_are_model_input_and_reproducible(tables, tmp_path):
    from py4dstem_gnn.labels import SG_TO_CS

    src = _source(tables, tmp_path)
    spots, mask, cs, sg = src.sample_tensors(src.generator([0, 7, 0]), 32, max_spots=24)
    assert spots.shape[0] == 32 and spots.shape[1] <= 24 and mask.shape == spots.shape[:2]
    assert (mask.sum(1) > 0).all() and not (torch.linalg.norm(spots[..., :2], dim=-1)[mask] < 0.02).any()  # no beam
    assert set(sg.tolist()) <= {194, 225} and torch.equal(cs, torch.as_tensor(SG_TO_CS[sg.numpy() - 1]))
    again = src.sample_tensors(src.generator([0, 7, 0]), 32, max_spots=24)
    assert torch.equal(spots, again[0]) and torch.equal(sg, again[3])
    other = src.sample_tensors(src.generator([0, 8, 0]), 32, max_spots=24)
    assert not (other[0].shape == spots.shape and torch.equal(other[0], spots))
    pls, cs_np, sg_np = src.fixed_set(per_material=2, seed=3)
    assert len(pls) == 6 and np.array_equal(sg_np, [225, 225, 225, 225, 194, 194])
    assert src.describe()["n_materials"] == 3 and np.isclose(src.sampled_prior().sum(), 1)


def test_zone_axes_are_drawn_as_the_numpy_source_draws_them(tables, tmp_path):
    """Conventional axes (identity maps: the test cells are conventional) with the weights of orientations."""
    from py4dstem_gnn.data.conventional import ConventionalTable

    table = ConventionalTable(np.arange(3), np.repeat(np.eye(3)[None], 3, 0))
    src = _source(tables, tmp_path, axes="conventional", conventional=table, tilt_deg=0.0)
    n = 6000
    uvw, _ = orientations_.zone_axis_candidates(3)
    for m in (0, 2):  # cubic Au, hexagonal Mg
        pick = torch.full((n,), int(np.flatnonzero(src.materials == m)[0]))
        beam_t = src.rotations(pick, src.generator([m]))[:, :, 2].numpy()
        lat_inv = tables.lat_inv[m].numpy()
        beam_n = orientations_.zone_axis_rotations(np.repeat(lat_inv[None], n, 0), np.random.default_rng(m),
                                                   tilt_deg=0.0, conv_map=np.eye(3))[:, :, 2]
        dirs = uvw @ np.linalg.inv(lat_inv).T
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        freq = [np.bincount(np.abs(b @ dirs.T).argmax(1), minlength=len(uvw)) / n for b in (beam_t, beam_n)]
        assert np.abs(beam_t @ dirs.T).max(1).min() > 1 - 1e-9  # exactly on an axis
        assert np.abs(freq[0] - freq[1]).max() < 0.025
    mixed = _source(tables, tmp_path, axes="conventional", conventional=table, tilt_deg=0.0, random_fraction=0.3)
    beam = mixed.rotations(torch.zeros(n, dtype=torch.long), mixed.generator([1]))[:, :, 2].numpy()
    dirs = uvw @ np.linalg.inv(tables.lat_inv[int(mixed.materials[0])].numpy()).T
    on_axis = np.abs(beam @ (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).T).max(1) > 1 - 1e-9
    assert abs((~on_axis).mean() - 0.3) < 0.03


def test_draw_batch_mixes_device_and_numpy_sources(tables, tmp_path):
    from py4dstem_gnn.data.sources import MixedSource
    from py4dstem_gnn.data.sources_torch import draw_batch
    from py4dstem_gnn.toy import TOY_CLASSES, ToyLatticeSource

    src = _source(tables, tmp_path)
    mixed = MixedSource(src, ToyLatticeSource(), 0.25)
    spots, mask, cs, sg = draw_batch(mixed, np.random.default_rng(0), src.generator([1]), 16, 24, torch.device("cpu"))
    assert spots.shape[0] == mask.shape[0] == 16 and spots.shape[1] <= 24 and (mask.sum(1) > 0).all()
    assert set(sg[:12].tolist()) <= {194, 225} and set(sg[12:].tolist()) <= {t[1] for t in TOY_CLASSES}
    toy = draw_batch(ToyLatticeSource(), np.random.default_rng(0), None, 8, 24, torch.device("cpu"), pad_to=24)
    assert toy[0].shape == (8, 24, 3) and toy[2].dtype == torch.long
