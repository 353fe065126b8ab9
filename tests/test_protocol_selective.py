"""Selective prediction and conformal coverage in the report (evaluation.report), for any classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from py4dstem_gnn.confidence.calibration import ConfidenceCalibration, raw_score
from py4dstem_gnn.confidence.conformal import ConformalCalibration
from py4dstem_gnn.data.structures import Manifest
from py4dstem_gnn.evaluation import protocols as P
from py4dstem_gnn.evaluation import report as R
from py4dstem_gnn.evaluation.markdown import render_selective_markdown
from py4dstem_gnn.evaluation.selective import aurc
from py4dstem_gnn.predict import Prediction
from py4dstem_gnn.labels import SG_TO_CS

SG_OF_CLASS = np.array([2, 14, 62, 139, 166, 194, 221])
LEVELS = [0.5, 0.9, 0.95]


def _conformal() -> ConformalCalibration:
    """Hand-written sets: at 0.9 the top class only (q = 0), at the default 0.95 every class (q = 1)."""
    q = np.array([0.0, 0.0, 1.0])
    return ConformalCalibration(np.array(LEVELS), {1: (100, q, q)}, default_coverage=0.95,
                                info={"fitted_on": "hand-written test calibration"})


def _confidence(threshold: float) -> ConfidenceCalibration:
    """Calibrated confidence 0.1 + 0.85 * margin."""
    return ConfidenceCalibration("margin", np.array([0.0, 1.0]), np.array([0.1, 0.95]), 100, threshold=threshold,
                                 info={"fitted_on": "hand-written", "threshold_rule": {"accuracy_goal": 0.9}})


@pytest.fixture(scope="module")
def case():
    """24 materials in 12 groups, 4 patterns each (2 zone axis, 2 random), clean and corrupted copies."""
    rng = np.random.default_rng(0)
    n_mat = 24
    group = np.arange(n_mat) // 2
    cls = np.arange(n_mat) % 7
    sg = SG_OF_CLASS[cls]
    cols = {"material": np.arange(n_mat), "space_group": sg, "crystal_system": SG_TO_CS[sg - 1], "group": group,
            "split": np.full(n_mat, "train"),
            "split_type": np.where(group % 3 == 0, "test", "train"),
            "split_material": np.where(np.arange(n_mat) % 4 == 0, "test", "train")}
    m = Manifest(cols, {})
    mat1 = np.repeat(np.arange(n_mat), 4)
    reg1 = np.tile([0, 0, 1, 1], n_mat)
    material, regime = np.tile(mat1, 2), np.tile(reg1, 2)
    corrupted = np.repeat([False, True], len(mat1))
    sg_true = sg[material]
    cs_true = SG_TO_CS[sg_true - 1]
    n = len(material)
    # random patterns are right less often; the right ones tend to be more certain
    right = rng.random(n) < np.where(regime == 0, 0.8, 0.4)
    label = np.where(right, cs_true, (cs_true + 1) % 7)
    p_top = np.where(right, rng.uniform(0.4, 0.95, n), rng.uniform(0.3, 0.6, n))
    cs_p = np.full((n, 7), 1e-3)
    cs_p[np.arange(n), label] = p_top
    cs_p[np.arange(n), (label + 3) % 7] = 0.25
    cs_p /= cs_p.sum(axis=1, keepdims=True)
    sg_p = np.full((n, 230), 1e-6)
    sg_p[np.arange(n), SG_OF_CLASS[label] - 1] = 1.0
    pred = Prediction.from_probs(cs_p, sg_p, np.zeros(n))
    member = P.protocol_membership(material, m)
    return dict(m=m, material=material, regime=regime, corrupted=corrupted, sg=sg_true, cs=cs_true, pred=pred,
                member=member, correct=label == cs_true)


def _with(pred: Prediction, **meta) -> Prediction:
    out = Prediction(pred.crystal_system, pred.space_group, pred.confidence.copy(), pred.crystal_system_probs,
                     pred.space_group_probs, pred.n_spots)
    out.meta.update(meta)
    return out


def _run(case, pred, tmp_path=None, name="network", **kw):
    """The selective section of the report for one classifier: {"settings", "protocols"}."""
    c = case
    patterns = {k: c[k] for k in ("material", "regime", "corrupted")} | {"space_group": c["sg"]}
    res = R.evaluate({name: pred}, patterns, c["m"], membership=c["member"], k_views=(2,), n_draws=1, n_boot=200,
                     seed=0, detail=None, weights={name: {p: "w.safetensors" for p in P.PROTOCOLS}},
                     figure_dir=tmp_path, **kw)
    return {"settings": res["selective"]["settings"], "protocols": res["selective"]["classifiers"].get(name, [])}


def _sel(case, proto, regime, corruption):
    return (case["member"][proto] & (case["regime"] == P.REGIMES.index(regime))
            & (case["corrupted"] == (corruption == "corrupted")))


def test_threshold_zero_labels_everything_and_matches_protocol_accuracy(case, tmp_path):
    c = case
    res = _run(c, _with(c["pred"], confidence_calibration=_confidence(0.0), conformal=_conformal()), tmp_path)
    json.dumps(res, allow_nan=False)
    acc = P.evaluate_protocols({"network": c["pred"]}, c["material"], c["sg"], c["regime"], c["corrupted"], c["m"],
                               k_views=(2,), n_draws=1, n_boot=20)
    cs_1 = {(x["protocol"], x["regime"], x["corruption"]): x["classifiers"]["network"]["cs_1"]["mean"]
            for x in acc["cells"]}
    assert [p["protocol"] for p in res["protocols"]] == list(P.PROTOCOLS)
    for p in res["protocols"]:
        assert p["calibration"]["threshold"] == 0.0 and p["figure"] == f"risk_coverage_{p['protocol']}.png"
        assert (tmp_path / p["figure"]).read_bytes()[:4] == b"\x89PNG"
        assert [(r["regime"], r["corruption"]) for r in p["conditions"]] == [
            (r, k) for r in P.REGIMES for k in P.CORRUPTIONS]
        for r in p["conditions"]:
            sel = _sel(c, p["protocol"], r["regime"], r["corruption"])
            assert r["n"] == sel.sum()
            assert r["labelled"]["mean"] == r["labelled"]["low"] == r["labelled"]["high"] == 1.0
            assert r["selective_accuracy"]["mean"] == pytest.approx(r["accuracy"]["mean"])
            assert r["accuracy"]["mean"] == pytest.approx(c["correct"][sel].mean())
            assert r["accuracy"]["mean"] == pytest.approx(cs_1[(p["protocol"], r["regime"], r["corruption"])])
            conf = 0.1 + 0.85 * raw_score(c["pred"].crystal_system_probs[sel], "margin")
            assert r["aurc"]["mean"] == pytest.approx(aurc(conf, c["correct"][sel]))
            assert r["aurc"]["low"] <= r["aurc"]["mean"] <= r["aurc"]["high"]
            assert r["curve"]["accuracy"][-1] == pytest.approx(r["accuracy"]["mean"])  # coverage 1: every pattern
            met = r["accuracy"]["mean"] >= 0.9
            assert r["target"]["met"] == met  # everything labelled: only the accuracy counts
        names = [x["name"] for x in p["score_comparison"]["rows"]]
        assert sorted(names) == ["calibrated", "entropy", "margin", "max_prob"]
        aurcs = [x["aurc"]["mean"] for x in p["score_comparison"]["rows"]]
        assert aurcs == sorted(aurcs)


def test_threshold_labelled_fraction_and_conformal_coverage(case):
    c = case
    res = _run(c, _with(c["pred"], confidence_calibration=_confidence(0.5), conformal=_conformal()), levels=(0.9,))
    known = res["protocols"][0]
    conf = 0.1 + 0.85 * raw_score(c["pred"].crystal_system_probs, "margin")
    for r in known["conditions"]:
        sel = _sel(c, "known", r["regime"], r["corruption"])
        lab = sel & (conf >= np.float32(0.5))
        assert 0.0 < r["labelled"]["mean"] < 1.0
        assert r["labelled"]["mean"] == pytest.approx(lab.sum() / sel.sum(), abs=1e-6)
        assert r["selective_accuracy"]["mean"] == pytest.approx(c["correct"][lab].mean(), abs=1e-6)
        t = r["target"]
        if r["regime"] == "random":
            assert t["met"] == (r["labelled"]["mean"] <= 0.2 or r["selective_accuracy"]["mean"] >= 0.9)
    cov = known["coverage"]
    assert sorted({r["nominal"] for r in cov}) == [0.9, 0.95]  # requested 0.9 + the card's default
    for r in cov:
        sel = _sel(c, "known", r["regime"], r["corruption"])
        if r["nominal"] == 0.9:  # q = 0: the top class only, so coverage = accuracy
            assert not r["default_level"]
            assert r["coverage"]["mean"] == pytest.approx(c["correct"][sel].mean())
            assert r["mean_set_size"]["mean"] == 1.0
            assert r["below_nominal"] == (r["coverage"]["mean"] < 0.88 and r["coverage"]["high"] < 0.9)
        else:  # q = 1: every class
            assert r["default_level"] and not r["below_nominal"]
            assert r["coverage"]["mean"] == 1.0 and r["mean_set_size"]["mean"] == 7.0
            assert r["sg_coverage"]["mean"] == 1.0 and r["sg_mean_set_size"]["mean"] == 230.0
    assert any(r["below_nominal"] for r in cov)  # random patterns are right ~40 % of the time
    md = render_selective_markdown(res)
    assert "## Selective prediction (network)" in md and "### Risk–coverage and abstention" in md
    assert "### Raw scores compared by AURC" in md and "## Conformal crystal-system sets" in md
    assert "hand-written test calibration" in md and "**short**" in md and "(card default)" in md
    assert "one calibration (hand-written test calibration) serves known" in md
    # a level above the highest calibrated one is skipped, not fatal
    res = _run(c, _with(c["pred"], conformal=_conformal()), levels=(0.999,))
    assert {r["nominal"] for r in res["protocols"][0]["coverage"]} == {0.95}


def test_without_calibration(case):
    c = case
    res = _run(c, c["pred"])
    p = res["protocols"][0]
    assert p["calibration"]["threshold"] is None and "coverage" not in p
    r = p["conditions"][0]
    assert "labelled" not in r and "target" not in r and r["threshold"] is None
    sel = _sel(c, "known", r["regime"], r["corruption"])
    assert r["aurc"]["mean"] == pytest.approx(aurc(raw_score(c["pred"].crystal_system_probs[sel]), c["correct"][sel]))
    md = render_selective_markdown(res)
    assert "raw margin" in md and "No conformal calibration in the card" in md
    assert "Conformal" in md and "CS coverage" not in md


def test_cli_report_with_card_calibration(tmp_path, monkeypatch):
    pytest.importorskip("h5py")
    from test_protocols import _toy_store

    from py4dstem_gnn.cli import main
    from py4dstem_gnn.toy import tiny_model
    from py4dstem_gnn.weights import save_weights, update_card

    za, rand = _toy_store(tmp_path)
    w_cal = save_weights(tiny_model(0), tmp_path / "w", "tiny")
    update_card(w_cal, {"confidence_calibration": _confidence(0.0).to_card(), "confidence_threshold": 0.0,
                        "conformal": _conformal().to_card()})
    w_raw = save_weights(tiny_model(1), tmp_path / "w", "tiny_raw")
    monkeypatch.setattr("sys.argv", ["py4dstem-gnn", "protocols"])
    rc = main(["protocols", "--name", "toy", "--out-root", str(tmp_path / "reports"),
               "--manifest", str(tmp_path / "manifest.csv.gz"), "--zone-axis", str(za), "--random", str(rand),
               "--weights", str(w_cal), "--weights", f"unseen-type={w_raw}", "--corruption", "training",
               "--views", "2", "--draws", "1", "--boot", "50", "--no-progress"])
    assert rc == 0
    out = tmp_path / "reports" / "toy"
    payload = json.loads((out / "protocols.json").read_text())
    md = (out / "protocols.md").read_text()
    for proto in P.PROTOCOLS:
        assert (out / f"risk_coverage_{proto}.png").is_file() and f"(risk_coverage_{proto}.png)" in md
    assert "## Selective prediction (network)" in md and "## Conformal crystal-system sets" in md
    sel = {p["protocol"]: p for p in payload["selective"]["classifiers"]["network"]}
    cells = {(x["protocol"], x["regime"], x["corruption"]): x for x in payload["cells"]}
    for proto in ("known", "unseen-material"):
        assert sel[proto]["weights"] == str(w_cal) and sel[proto]["calibration"]["threshold"] == 0.0
        for r in sel[proto]["conditions"]:
            assert r["labelled"]["mean"] == 1.0
            cs_1 = cells[(proto, r["regime"], r["corruption"])]["classifiers"]["network"]["cs_1"]["mean"]
            assert r["selective_accuracy"]["mean"] == pytest.approx(cs_1)
        for r in sel[proto]["coverage"]:
            cs_1 = cells[(proto, r["regime"], r["corruption"])]["classifiers"]["network"]["cs_1"]["mean"]
            expect = (cs_1, 1.0) if r["nominal"] == 0.9 else (1.0, 7.0)
            assert (r["coverage"]["mean"], r["mean_set_size"]["mean"]) == (pytest.approx(expect[0]), expect[1])
    raw = sel["unseen-type"]
    assert "raw margin" in raw["calibration"]["confidence"] and "coverage" not in raw
    assert "No conformal calibration in the card of the weights serving: unseen-type." in md
    # --no-selective leaves it out
    rc = main(["protocols", "--name", "plain", "--out-root", str(tmp_path / "reports"),
               "--manifest", str(tmp_path / "manifest.csv.gz"), "--zone-axis", str(za), "--weights", str(w_cal),
               "--corruption", "training", "--views", "2", "--draws", "1", "--boot", "20", "--no-progress",
               "--no-selective"])
    assert rc == 0 and "selective" not in json.loads((tmp_path / "reports" / "plain" / "protocols.json").read_text())


def test_another_classifier_with_its_own_confidence(case, tmp_path):
    """A classifier is one more prediction object: labels and a confidence are enough for risk–coverage."""
    c = case
    conf = np.where(c["correct"], 0.9, 0.2)
    match = {"crystal_system": c["pred"].crystal_system, "space_group": c["pred"].space_group, "confidence": conf}
    res = _run(c, match, tmp_path, name="match")
    p = res["protocols"][0]
    assert p["calibration"]["confidence"] == "the classifier's own confidence" and "score_comparison" not in p
    assert p["figure"] == "risk_coverage_match_known.png" and (tmp_path / p["figure"]).is_file()
    for r in p["conditions"]:
        sel = _sel(c, "known", r["regime"], r["corruption"])
        assert r["aurc"]["mean"] == pytest.approx(aurc(conf[sel], c["correct"][sel]))
        assert r["aurc"]["mean"] <= 1.0 - r["accuracy"]["mean"] + 1e-12  # a confidence that knows right from wrong
    assert "## Selective prediction (match)" in render_selective_markdown(res, "match")
