"""Tests of the evaluation report on a tiny random model, a tiny RF and a tiny synthetic set."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

import numpy as np
import pytest

pytest.importorskip("sklearn")

from py4dstem_gnn.evaluation import evaluate as ev  # noqa: E402
from py4dstem_gnn.evaluation import scoring  # noqa: E402
from py4dstem_gnn.evaluation.baseline import RandomForestBaseline  # noqa: E402
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


def test_report_model_and_rf(tmp_path, tiny_rf, tiny_model):
    test = _tiny_set(seed=2)
    val = _tiny_set(n_materials=4, seed=3)
    payload = ev.evaluate(test, model=tiny_model, rf=tiny_rf, out_dir=tmp_path, validation=val,
                          k_views=5, n_draws=3, seed=0, device="cpu", progress=False)
    report = (tmp_path / "report.md").read_text()
    for needle in ("PE-AG-GMoE", "Random forest", "89.2", "74.2", "85.5", "Table 2", "Table 4",
                   "ECE", "validation set", "Time per pattern", "cubic"):
        assert needle in report, needle
    for f in payload["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    res = json.loads((tmp_path / "results.json").read_text())["results"]
    assert set(res) == {"model", "rf"}
    for r in res.values():
        assert 0.0 <= r["cs_accuracy"] <= 1.0
        assert len(r["multiview_log"]["cs_accuracy_draws"]) == 3
        assert r["n_patterns"] == len(test)
        assert r["timings"]["per_pattern_ms"] > 0
    # the RF separates this easy task; after aggregation over 5 views it is right
    assert res["rf"]["multiview_log"]["cs_mean"] == pytest.approx(1.0)


def test_rf_only_report_with_cross_fitted_temperature(tmp_path, tiny_rf):
    test = _tiny_set(seed=4)
    payload = ev.evaluate(test, model=None, rf=tiny_rf, out_dir=tmp_path, k_views=10, n_draws=2,
                          progress=False, max_patterns=60)
    assert set(payload["results"]) == {"rf"}
    assert payload["results"]["rf"]["n_patterns"] <= 60
    report = (tmp_path / "report.md").read_text()
    assert "cross-fitting" in report and "PE-AG-GMoE" not in report.split("## Headline")[1].split("##")[0]


def test_cli_trains_saves_and_reuses_rf(tmp_path, monkeypatch):
    pytest.importorskip("h5py")
    train, test = _tiny_set(seed=5), _tiny_set(seed=6)
    fake = lambda src, group=None: {"train.h5": train, "test.h5": test}[str(src)]  # noqa: E731
    monkeypatch.setattr(ev, "load_pattern_set", fake)
    monkeypatch.setattr(scoring, "load_pattern_set", fake)
    parser = argparse.ArgumentParser()
    ev.configure_parser(parser)
    rf_path = tmp_path / "rf.joblib"
    args = parser.parse_args(["--train-rf-only", "--rf", str(tmp_path / "only.joblib"), "--rf-train-set", "train.h5",
                              "--no-progress"])
    assert ev.run_cli(args) == 0
    assert (tmp_path / "only.joblib").is_file()
    assert ev.run_cli(parser.parse_args(["--weights", "none"])) == 2  # no test set
    args = parser.parse_args(["--test", "test.h5", "--weights", "none", "--rf", str(rf_path),
                              "--rf-train-set", "train.h5", "--out", str(tmp_path / "rep"),
                              "--views", "4", "--draws", "2", "--no-progress"])
    assert ev.run_cli(args) == 0
    assert rf_path.is_file() and (tmp_path / "rep" / "report.md").is_file()
    info = json.loads((tmp_path / "rep" / "results.json").read_text())["info"]["rf_info"]
    assert info["data"][0]["kind"] == "stored pattern set"
    # second run reuses the saved forest
    args = parser.parse_args(["--test", "test.h5", "--weights", "none", "--rf", str(rf_path),
                              "--out", str(tmp_path / "rep2"), "--no-progress"])
    assert ev.run_cli(args) == 0
    assert (tmp_path / "rep2" / "report.md").is_file()


def test_nothing_to_evaluate_raises(tmp_path):
    with pytest.raises(ValueError):
        ev.evaluate(_tiny_set(), model=None, rf=None, out_dir=tmp_path)


def test_cli_writes_the_headline_into_the_weights_card(tmp_path, monkeypatch, tiny_model, tiny_rf):
    from py4dstem_gnn.weights import load_model, save_weights, sha256_of

    test = _tiny_set(seed=7)
    monkeypatch.setattr(ev, "load_pattern_set", lambda src, group=None: test)
    path = save_weights(tiny_model, tmp_path / "w", "tiny")
    digest = sha256_of(path)
    tiny_rf.save(tmp_path / "rf.joblib")
    parser = argparse.ArgumentParser()
    ev.configure_parser(parser)
    args = parser.parse_args(["--test", "test.h5", "--weights", str(path), "--rf", str(tmp_path / "rf.joblib"),
                              "--out", str(tmp_path / "rep"), "--views", "4", "--draws", "1", "--no-progress",
                              "--update-card"])
    assert ev.run_cli(args) == 0
    card = json.loads(path.with_suffix(".json").read_text())["evaluation"]
    res = json.loads((tmp_path / "rep" / "results.json").read_text())["results"]
    assert card["accuracy_percent"]["crystal_system_1_pattern"] == round(100 * res["model"]["cs_accuracy"], 1)
    assert card["random_forest_same_data_percent"]["space_group_4_views"] == round(100 * res["rf"]["multiview_log"]["sg_mean"], 1)
    assert card["targets_met"] is False and card["gap_to_paper_points"]["crystal_system_1_pattern"] < 0
    assert sha256_of(path) == digest
    load_model(path)  # the card still matches the tensors


def test_recorded_command_keeps_global_options_before_the_command():
    assert ev._command_line(["/bin/py4dstem-gnn", "-v", "evaluate", "--weights", "default", "--out", "a b"]) == \
        "py4dstem-gnn -v evaluate --weights default --out 'a b'"
    assert ev._command_line(["/bin/py4dstem-gnn", "evaluate", "--test", "t.h5"]) == "py4dstem-gnn evaluate --test t.h5"
    assert ev._command_line(["python", "-c"]) is None
