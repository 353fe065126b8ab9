"""The report names its input (clean / detected:<preset>) and regime, and pairs clean with detected."""

from __future__ import annotations

import json

import numpy as np
import pytest

from py4dstem_gnn.data.structures import Manifest
from py4dstem_gnn.evaluation import protocols as P
from py4dstem_gnn.evaluation import report as R
from py4dstem_gnn.labels import SG_TO_CS
from py4dstem_gnn.predict import Prediction

SG_OF_CLASS = np.array([2, 14, 62, 139, 166, 194, 221])
DETECTED = "detected:hybrid128_lowdose"


@pytest.fixture(scope="module")
def case():
    """20 materials (10 groups), 4 patterns each (2 zone axis, 2 random); the same rows as clean and detected.

    Clean: every pattern right. Detected: every zone-axis pattern of an even, not orthorhombic material called
    orthorhombic (8 of 20 materials).
    """
    n_mat = 20
    group = np.arange(n_mat) // 2
    cls = np.arange(n_mat) % 7
    sg = SG_OF_CLASS[cls]
    m = Manifest({"material": np.arange(n_mat), "space_group": sg, "crystal_system": SG_TO_CS[sg - 1], "group": group,
                  "split": np.full(n_mat, "train"), "split_type": np.where(group % 2 == 0, "test", "train"),
                  "split_material": np.where(np.arange(n_mat) % 3 == 0, "test", "train")}, {})
    mat1 = np.repeat(np.arange(n_mat), 4)
    reg1 = np.tile([0, 0, 1, 1], n_mat)
    material, regime = np.tile(mat1, 2), np.tile(reg1, 2)
    source = np.repeat(["clean", DETECTED], len(mat1))
    sg_true = sg[material]
    cs_true = SG_TO_CS[sg_true - 1]
    wrong = (source == DETECTED) & (regime == 0) & (material % 2 == 0) & (cs_true != 2)
    label = np.where(wrong, 2, cs_true)
    n = len(material)
    cs_p = np.full((n, 7), 0.02)
    cs_p[np.arange(n), label] = 0.8
    cs_p /= cs_p.sum(axis=1, keepdims=True)
    sg_p = np.full((n, 230), 1e-6)
    sg_p[np.arange(n), SG_OF_CLASS[label] - 1] = 1.0
    pred = Prediction.from_probs(cs_p, sg_p, np.zeros(n))
    patterns = {"material": material, "regime": regime, "space_group": sg_true, "input": source}
    return dict(m=m, pred=pred, patterns=patterns, wrong=wrong, source=source, regime=regime, material=material)


@pytest.fixture(scope="module")
def payload(case, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    res = R.evaluate({"hybrid": case["pred"], "network": case["pred"]}, case["patterns"], case["m"], k_views=(2,),
                     n_draws=1, n_boot=100, detail="known", figure_dir=out)
    R.write_report(res, out, "inputs")
    return res, out


def test_input_labels_order_and_checks():
    labels, order = P.input_labels(["detected:a", "clean", "detected:a"], 3)
    assert order == ["clean", "detected:a"] and list(labels) == ["detected:a", "clean", "detected:a"]
    assert P.input_labels(None, 2)[1] == ["clean"]
    assert P.input_labels("detected:b", 2)[1] == ["detected:b"]
    with pytest.raises(ValueError, match="2 input labels for 3"):
        P.input_labels(["clean", "clean"], 3)
    assert P.condition_name("detected:a", "clean") == "detected:a"
    assert P.condition_name("clean", "corrupted") == "clean+corrupted"


def test_cells_carry_input_and_regime(case, payload):
    res, _ = payload
    assert res["settings"]["inputs"] == ["clean", DETECTED]
    cells = {(c["protocol"], c["regime"], c["input"]): c for c in res["cells"]}
    assert len(cells) == len(res["cells"]) == 3 * 2 * 2
    za_det = cells[("known", "zone_axis", DETECTED)]["classifiers"]["hybrid"]["cs_1"]["mean"]
    sel = (case["source"] == DETECTED) & (case["regime"] == 0)
    assert za_det == pytest.approx(1 - case["wrong"][sel].mean())
    assert cells[("known", "zone_axis", "clean")]["classifiers"]["hybrid"]["cs_1"]["mean"] == 1.0
    assert cells[("known", "random", DETECTED)]["classifiers"]["hybrid"]["cs_1"]["mean"] == 1.0
    assert all(c["corruption"] == "clean" for c in res["cells"])


def test_input_cost_is_paired(payload):
    res, _ = payload
    cost = {(d["protocol"], d["regime"], d["classifier"]): d for d in res["input_cost"]}
    assert all(d["input"] == DETECTED for d in res["input_cost"])
    za = cost[("known", "zone_axis", "hybrid")]["cs_1"]
    assert za["mean"] == pytest.approx(0.4) and za["low"] > 0
    rnd = cost[("known", "random", "hybrid")]["cs_1"]
    assert rnd["mean"] == 0 and rnd["low"] == rnd["high"] == 0  # paired: same resamples on both inputs


def test_markdown_and_selective_name_the_input(payload):
    res, out = payload
    md = (out / "protocols.md").read_text()
    assert f"| known | zone_axis | {DETECTED} | hybrid |" in md
    assert "| known | zone_axis | clean | hybrid |" in md
    assert f"### known, random, {DETECTED}" in md
    assert f"clean − {DETECTED}" in md and "## Cost of the input" in md
    assert "`detected:<preset>`" in md  # the legend says what the input column means
    for entry in res["selective"]["classifiers"]["hybrid"]:
        conds = [(r["regime"], r["input"]) for r in entry["conditions"]]
        assert conds == [("zone_axis", "clean"), ("zone_axis", DETECTED), ("random", "clean"), ("random", DETECTED)]
    assert f"| known | random | {DETECTED} |" in md.split("## Selective prediction (hybrid)")[1]
    assert json.loads((out / "protocols.json").read_text())["settings"]["inputs"] == ["clean", DETECTED]
    # the detail reads the first (clean) input only
    assert res["detail"]["n_patterns"] == 80


def test_single_detected_input_never_says_clean(case):
    keep = case["source"] == DETECTED
    patterns = {k: np.asarray(v)[keep] for k, v in case["patterns"].items()}
    pred = case["pred"]
    sub = Prediction(*(getattr(pred, k)[keep] for k in ("crystal_system", "space_group", "confidence",
                                                         "crystal_system_probs", "space_group_probs", "n_spots")))
    res = R.evaluate({"hybrid": sub}, patterns, case["m"], k_views=(2,), n_draws=1, n_boot=20, detail=None)
    assert {c["input"] for c in res["cells"]} == {DETECTED} and res["input_cost"] == []
    from py4dstem_gnn.evaluation.markdown import render_report

    md = render_report(res, title="t")
    table = md.split("## Accuracy")[1].split("##")[0]
    assert "| clean |" not in table and f"| zone_axis | {DETECTED} |" in table
