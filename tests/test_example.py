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
    res = example.run_example(tmp_path / "out", model=tiny_model(), scan_shape=(12, 12), qshape=(96, 96), device="cpu",
                              progress=False, phases=None)
    assert sorted(p.name for p in EXAMPLE.parent.iterdir()) == before
    for path in res["paths"].values():
        assert Path(path).parent == tmp_path / "out" and Path(path).stat().st_size > 0
    assert res["summary"]["positions"] == 144


def test_figures_as_png_and_pdf_and_the_phase_map_when_the_maps_have_phases(example, tmp_path, monkeypatch):
    """When classify_braggvectors returns the match stage's slices, the example also draws the phase map."""
    import py4dstem_gnn.classify as classify_module
    from emdfile import Metadata
    from py4dstem_gnn.toy import tiny_model

    original = classify_module.classify_braggvectors

    def with_phases(bv, **kwargs):
        maps = original(bv, **kwargs)
        labels = list(maps.slicelabels)
        phase = np.where(maps.get_slice("n_spots").data >= 5, 0, -1).astype(np.float32)
        out = py4DSTEM.RealSlice(data=np.concatenate([maps.data, phase[None]]), slicelabels=labels + ["phase"],
                                 name=maps.name)
        # a table of columns: py4DSTEM.save refuses a list of dicts in Metadata
        out.metadata = Metadata(name="py4dstem_gnn", data={"phases": {"formula": ["Au"], "space_group": [225],
                                                                       "crystal_system": [6], "source": ["test"]}})
        return out

    monkeypatch.setattr(classify_module, "classify_braggvectors", with_phases)
    res = example.run_example(tmp_path, model=tiny_model(), scan_shape=(12, 12), qshape=(96, 96), device="cpu", progress=False,
                              phases=None)
    names = sorted(Path(p).name for p in res["paths"].values())
    assert names == sorted([
        "au_nanoparticles_fig2.png", "au_nanoparticles_fig2.pdf",
        "au_nanoparticles_space_groups.png", "au_nanoparticles_space_groups.pdf",
        "au_nanoparticles_phases.png", "au_nanoparticles_phases.pdf", "au_nanoparticles_maps.h5",
    ])
    assert Path(res["paths"]["phases_pdf"]).read_bytes()[:4] == b"%PDF"
