"""The per-classifier detail of the report (paper tables, figures, calibration) on a tiny model, a tiny RF
and a tiny synthetic set; the command line recorded in the report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

pytest.importorskip("sklearn")

from py4dstem_gnn.baselines.forest import RandomForestBaseline  # noqa: E402
from py4dstem_gnn.data.structures import Manifest  # noqa: E402
from py4dstem_gnn.evaluation import cli as ev  # noqa: E402
from py4dstem_gnn.evaluation.report import evaluate, write_report  # noqa: E402
from py4dstem_gnn.labels import SG_TO_CS  # noqa: E402


@dataclass
class TinySet:
    """Minimal pattern set with the attributes evaluate() reads."""

    pointlists: list
    space_group: np.ndarray
    crystal_system: np.ndarray
    material: np.ndarray
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pointlists)

    def subset(self, idx):
        idx = np.asarray(idx)
        return TinySet([self.pointlists[i] for i in idx], self.space_group[idx], self.crystal_system[idx],
                       self.material[idx], self.attrs)


def _tiny_set(n_materials: int = 8, views: int = 12, seed: int = 0) -> TinySet:
    rng = np.random.default_rng(seed)
    sgs = np.array([2, 14, 62, 139, 166, 194, 225, 221])
    radius = {s: 0.3 + 0.18 * i for i, s in enumerate(sgs)}
    pls, sg, mat = [], [], []
    for m in range(n_materials):
        s = sgs[m % len(sgs)]
        for _ in range(views):
            k = int(rng.integers(3, 15))
            th = rng.uniform(-np.pi, np.pi, k)
            r = radius[s] + rng.normal(scale=0.05, size=k)
            spots = np.c_[r * np.cos(th), r * np.sin(th), rng.random(k) + 0.05]
            pls.append(np.r_[[[0.001, -0.002, 50.0]], spots].astype(np.float32))
            sg.append(s)
            mat.append(m)
    sg = np.asarray(sg)
    return TinySet(pls, sg, SG_TO_CS[sg - 1], np.asarray(mat), {"method": "synthetic", "thickness": 200})


@pytest.fixture(scope="module")
def tiny_rf():
    train = _tiny_set(seed=1)
    return RandomForestBaseline(n_estimators_cs=6, n_estimators_sg=4, max_depth_cs=8, max_depth_sg=6).fit(
        train.pointlists, train.crystal_system, train.space_group
    )


@pytest.fixture(scope="module")
def tiny_model():
    torch = pytest.importorskip("torch")
    from py4dstem_gnn.model import ModelConfig, PEAGGMoE

    torch.manual_seed(0)
    cfg = ModelConfig(feature_dim=16, encoder_layers=1, hidden_dim=16, n_layers=1, n_heads=2, ffn_dim=16,
                      n_experts=2, top_k=1, max_spots=16)
    return PEAGGMoE(cfg).eval()


def _report(tmp_path, test, preds, **kw):
    """evaluate() with only the known protocol populated (every material in the pool), written to tmp_path."""
    n_mat = int(test.material.max()) + 1
    sg = np.zeros(n_mat, dtype=np.int64)
    sg[test.material] = test.space_group
    m = Manifest({"material": np.arange(n_mat), "space_group": sg, "group": np.arange(n_mat),
                  "split_type": np.full(n_mat, "train"), "split_material": np.full(n_mat, "train")}, {})
    patterns = {"material": test.material, "space_group": test.space_group, "regime": np.zeros(len(test), int)}
    payload = evaluate(preds, patterns, m, n_boot=50, figure_dir=tmp_path, **kw)
    return payload, write_report(payload, tmp_path, "t").read_text()


def test_detail_of_model_and_rf(tmp_path, tiny_rf, tiny_model):
    from py4dstem_gnn.predict import predict_pointlists

    test = _tiny_set(seed=2)
    val = _tiny_set(n_materials=4, seed=3)
    net = predict_pointlists(test.pointlists, model=tiny_model, device="cpu", phases=None)
    net.meta["timings"] = {"per_pattern_ms": 0.5, "n": len(test), "threads": 1}
    validation = {"space_group": val.space_group, "network": predict_pointlists(val.pointlists, model=tiny_model, phases=None),
                  "forest": tiny_rf.predict(val.pointlists)}
    payload, md = _report(tmp_path, test, {"network": net, "forest": tiny_rf.predict(test.pointlists)},
                          k_views=(5,), n_draws=3, validation=validation)
    for needle in ("PE-AG-GMoE", "random forest (Gleason", "89.2", "74.2", "85.5", "Table 2", "Table 4",
                   "ECE", "validation set", "Time per pattern", "cubic", "soft vote"):
        assert needle in md, needle
    for f in payload["detail"]["figures"]:
        assert (tmp_path / f).stat().st_size > 1000 and f"({f})" in md
    det = payload["detail"]["classifiers"]
    assert set(det) == {"network", "forest"}
    cells = {(c["protocol"], c["regime"]): c["classifiers"] for c in payload["cells"]}
    for name, r in det.items():
        # the detail and the protocol table agree on the same patterns
        assert r["cs_accuracy"] == pytest.approx(cells[("known", "zone_axis")][name]["cs_1"]["mean"])
        assert [e["k"] for e in r["views_curve"]] == [1, 5]
        assert np.sum(r["cs_confusion"]) == len(test) and np.sum(r["cs_confusion_k"]) == 8
        assert r["calibration"]["temperature_source"] == "validation set"
    assert det["network"]["timings"]["per_pattern_ms"] == 0.5 and det["forest"]["timings"] is None
    # the RF separates this easy task; after aggregation over 5 views it is right
    assert det["forest"]["views_curve"][-1]["cs"] == pytest.approx(1.0)


def test_detail_cross_fits_the_temperature_and_takes_labels_only(tmp_path, tiny_rf):
    test = _tiny_set(seed=4)
    rf = tiny_rf.predict(test.pointlists)
    labels = {"crystal_system": rf.crystal_system, "space_group": rf.space_group}
    payload, md = _report(tmp_path, test, {"forest": rf, "labels": labels}, k_views=(10,), n_draws=2)
    assert "cross-fitting" in md
    assert "calibration" not in payload["detail"]["classifiers"]["labels"]
    assert payload["detail"]["classifiers"]["labels"]["cs_accuracy"] == payload["detail"]["classifiers"]["forest"]["cs_accuracy"]
    no_detail, _ = _report(tmp_path / "x", test, {"forest": rf}, detail=None)
    assert "detail" not in no_detail


def test_recorded_command_keeps_global_options_before_the_command():
    assert ev._command_line(["/bin/py4dstem-gnn", "-v", "evaluate", "--weights", "default", "--name", "a b"]) == \
        "py4dstem-gnn -v evaluate --weights default --name 'a b'"
    assert ev._command_line(["/bin/py4dstem-gnn", "protocols", "--name", "t"]) == "py4dstem-gnn protocols --name t"
    assert ev._command_line(["python", "-c"]) is None
