"""examples/au_nanoparticles.py: outputs under the chosen folder, raw and filtered fractions reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

py4DSTEM = pytest.importorskip("py4DSTEM")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "au_nanoparticles.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("au_nanoparticles_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_output_is_the_ignored_top_level_folder(example):
    assert example.DEFAULT_OUTPUT == EXAMPLE.parent.parent / "outputs"
    assert "outputs/" in (EXAMPLE.parent.parent / ".gitignore").read_text().split()


def test_summary_counts_raw_and_filtered(example):
    cs_raw = np.array([[6, 6, 2], [6, 5, -1]])
    cs = np.array([[6, 6, 6], [6, 6, -1]])
    sg_raw = np.array([[225, 221, 62], [225, 194, -1]])
    sg = np.array([[225, 225, 225], [225, 221, -1]])
    data = np.stack([cs, sg, cs_raw, sg_raw]).astype(np.float32)
    maps = py4DSTEM.RealSlice(data=data, slicelabels=["crystal_system", "space_group", "crystal_system_raw", "space_group_raw"])
    particle_map = np.array([[0, 0, 0], [1, 1, -1]])
    s = example.summarise(maps, particle_map, [[1, 1, 1], [0, 0, 1]])
    assert s["valid"] == 5 and s["positions"] == 6
    assert s["crystal_system_raw_counts"] == {"cubic": 3, "orthorhombic": 1, "hexagonal": 1}
    assert s["crystal_system_filtered_counts"] == {"cubic": 5}
    assert s["space_group_filtered_counts"] == {"225 Fm-3m": 4, "221 Pm-3m": 1}
    assert s["majority_per_particle"]["0 [1, 1, 1]"] == "cubic, 225 Fm-3m"
    text = example.format_summary(s)
    assert "raw (before the majority filter)" in text
    assert "cubic" in text and "60.0 %" in text and "100.0 %" in text  # 3/5 raw, 5/5 filtered


def test_tiny_run_writes_only_into_the_output_folder(example, tmp_path):
    from py4dstem_gnn.toy import tiny_model

    before = sorted(p.name for p in EXAMPLE.parent.iterdir())
    res = example.run_example(tmp_path / "out", model=tiny_model(), scan_shape=(12, 12), qshape=(96, 96), device="cpu", progress=False)
    assert sorted(p.name for p in EXAMPLE.parent.iterdir()) == before
    for path in res["paths"].values():
        assert Path(path).parent == tmp_path / "out" and Path(path).stat().st_size > 0
    assert res["summary"]["positions"] == 144
