"""Protocol tables (evaluation.protocols) on a synthetic pool with known answers, and the report CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from py4dstem_gnn.data.structures import Manifest
from py4dstem_gnn.evaluation import protocols as P
from py4dstem_gnn.evaluation.markdown import render_protocols_markdown
from py4dstem_gnn.predict import Prediction
from py4dstem_gnn.labels import SG_TO_CS

SG_OF_CLASS = np.array([2, 14, 62, 139, 166, 194, 221])
N_VIEWS = 4


def _manifest() -> Manifest:
    """4 groups of 20 materials (classes cubic, tetragonal, orthorhombic, monoclinic) and 20 pairs."""
    group = np.r_[np.repeat(np.arange(4), 20), np.repeat(np.arange(4, 24), 2)]
    cls = np.r_[np.repeat([6, 3, 2, 1], 20), np.repeat(np.arange(20) % 7, 2)]
    sg = SG_OF_CLASS[cls].copy()
    sg[(cls == 6) & (np.arange(len(cls)) % 2 == 1)] = 225  # half the cubic materials Fm-3m
    n = len(group)
    split_type = np.where(np.isin(group, [0, 1]) | ((group >= 4) & (group % 2 == 0)), "test", "train")
    split_material = np.where(np.arange(n) % 4 == 0, "test", "train")
    cols = {"material": np.arange(n), "space_group": sg, "crystal_system": SG_TO_CS[sg - 1], "group": group,
            "split": np.full(n, "train"), "split_type": split_type, "split_material": split_material}
    return Manifest(cols, {})


def _probs(cs_label, sg_label, cs_true, p_label):
    """Probabilities whose argmax is (cs_label, sg_label), with p_label on the label and 0.4 on the truth."""
    n = len(cs_label)
    cs = np.full((n, 7), 1e-3)
    sg = np.full((n, 230), 1e-5)
    rows = np.arange(n)
    cs[rows, cs_true] = 0.4
    cs[rows, cs_label] = p_label
    sg[rows, sg_label - 1] = 1.0
    return cs / cs.sum(1, keepdims=True), sg / sg.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def case():
    m = _manifest()
    n_mat = len(m)
    # every material: 4 zone-axis and 4 random patterns, clean and corrupted
    material = np.tile(np.repeat(np.arange(n_mat), N_VIEWS), 4)
    regime = np.repeat([0, 1, 0, 1], n_mat * N_VIEWS)
    corrupted = np.repeat([False, False, True, True], n_mat * N_VIEWS)
    sg_true = m["space_group"][material]
    cs_true = SG_TO_CS[sg_true - 1]
    view = np.tile(np.arange(N_VIEWS), n_mat * 4)
    gsize = np.bincount(m["group"])[m["group"][material]]
    # network: right everywhere except (a) corrupted random patterns: the first view of every material
    # wrong (outvoted by the three others) and (b) corrupted zone-axis patterns of small groups: all wrong
    wrong = corrupted & (((regime == 1) & (view == 0)) | ((regime == 0) & (gsize < 20)))
    cs_lab = np.where(wrong, (cs_true + 1) % 7, cs_true)
    sg_lab = np.where(wrong, SG_OF_CLASS[cs_lab], sg_true)
    net = Prediction.from_probs(*_probs(cs_lab, sg_lab, cs_true, np.where(wrong, 0.5, 0.9)), np.zeros(len(material)))
    # forest: cubic Pm-3m everywhere, as plain arrays in a mapping
    forest = {"crystal_system": np.full(len(material), 6), "space_group": np.full(len(material), 221)}
    return dict(m=m, material=material, regime=regime, corrupted=corrupted, sg=sg_true, cs=cs_true,
                net=net, forest=forest, gsize=gsize)


def _cell(res, protocol, regime, corruption):
    hits = [c for c in res["cells"] if (c["protocol"], c["regime"], c["corruption"]) == (protocol, regime, corruption)]
    assert len(hits) == 1
    return hits[0]


@pytest.fixture(scope="module")
def result(case):
    c = case
    return P.evaluate_protocols({"network": c["net"], "forest": c["forest"]}, c["material"], c["sg"], c["regime"],
                                c["corrupted"], c["m"], k_views=(N_VIEWS,), n_draws=2, n_boot=300, seed=0)


def test_cells_and_membership(case, result):
    m = case["m"]
    assert len(result["cells"]) == 3 * 2 * 2
    n_type = int(np.sum(m["split_type"] == "test"))
    n_mat = int(np.sum(m["split_material"] == "test"))
    for proto, n in (("known", len(m)), ("unseen-type", n_type), ("unseen-material", n_mat)):
        for reg in P.REGIMES:
            for corr in P.CORRUPTIONS:
                cell = _cell(result, proto, reg, corr)
                assert cell["n_materials"] == n and cell["n_patterns"] == n * N_VIEWS
                assert cell["views_per_material"] == {"median": 4.0, "min": 4, "max": 4}
    assert _cell(result, "unseen-type", "zone_axis", "clean")["n_groups"] == 2 + 10
    assert _cell(result, "known", "random", "clean")["n_groups"] == 24


def test_known_answers(case, result):
    clean = _cell(result, "known", "zone_axis", "clean")["classifiers"]
    for stat in ("cs_1", "sg_1", f"cs_k{N_VIEWS}", f"sg_k{N_VIEWS}"):
        assert clean["network"][stat]["mean"] == clean["network"][stat]["low"] == clean["network"][stat]["high"] == 1.0
    # forest: cubic everywhere -> accuracy = share of cubic patterns; SG right on the Pm-3m half only
    cubic = np.mean(case["cs"] == 6)
    assert clean["forest"]["cs_1"]["mean"] == pytest.approx(cubic)
    assert clean["forest"]["sg_1"]["mean"] == pytest.approx(np.mean(case["sg"] == 221))
    lo, hi = clean["forest"]["cs_1"]["low"], clean["forest"]["cs_1"]["high"]
    assert lo < cubic < hi  # a real interval: groups differ
    by_cs = {r["crystal_system"]: r for r in clean["forest"]["by_crystal_system"]}
    assert by_cs["cubic"]["cs_1"]["mean"] == 1.0 and by_cs["cubic"]["sg_1"]["mean"] == pytest.approx(0.5)
    assert by_cs["tetragonal"]["cs_1"]["mean"] == 0.0
    # random regime, corrupted: one view in four wrong, outvoted when the four are combined
    rnd = _cell(result, "known", "random", "corrupted")["classifiers"]["network"]
    assert rnd["cs_1"]["mean"] == pytest.approx(0.75) and rnd["sg_1"]["mean"] == pytest.approx(0.75)
    assert rnd[f"cs_k{N_VIEWS}"]["mean"] == 1.0 and rnd[f"sg_k{N_VIEWS}"]["mean"] == 1.0
    # zone axes, corrupted: right on groups of >= 20 materials only
    za = _cell(result, "known", "zone_axis", "corrupted")["classifiers"]["network"]
    sizes = {r["group_size"]: r for r in za["by_group_size"]}
    assert set(sizes) == {"1-4", "5-19", ">= 20"}
    assert sizes[">= 20"]["cs_1"]["mean"] == 1.0 and sizes["1-4"]["cs_1"]["mean"] == 0.0
    assert sizes["5-19"]["cs_1"]["mean"] is None and sizes["5-19"]["cs_1"]["n"] == 0
    assert za["cs_1"]["mean"] == pytest.approx(np.mean(case["gsize"] >= 20))


def test_paired_differences_and_corruption_cost(case, result):
    cost = {(r["protocol"], r["regime"], r["classifier"]): r for r in result["corruption_cost"]}
    rnd = cost[("known", "random", "network")]
    # every material loses exactly one pattern in four: the cost is 25 points in every resample
    assert rnd["cs_1"]["mean"] == pytest.approx(0.25)
    assert rnd["cs_1"]["low"] == pytest.approx(0.25) and rnd["cs_1"]["high"] == pytest.approx(0.25)
    assert rnd[f"cs_k{N_VIEWS}"]["mean"] == 0.0
    assert cost[("known", "zone_axis", "forest")]["cs_1"]["mean"] == 0.0
    diffs = {(d["protocol"], d["regime"], d["corruption"], d["b"]): d for d in result["differences"]}
    d = diffs[("unseen-type", "zone_axis", "clean", "forest")]
    assert d["a"] == "network"
    sel = (case["m"]["split_type"][case["material"]] == "test") & (case["regime"] == 0) & ~case["corrupted"]
    assert d["cs_1"]["mean"] == pytest.approx(1.0 - np.mean(case["cs"][sel] == 6))
    assert d["cs_1"]["low"] <= d["cs_1"]["mean"] <= d["cs_1"]["high"]


def test_per_protocol_predictions_and_json(case):
    c = case
    other = Prediction.from_probs(*_probs(c["cs"], c["sg"], c["cs"], np.full(len(c["cs"]), 0.9)), np.zeros(len(c["cs"])))
    res = P.evaluate_protocols({"network": {"known": c["net"], "unseen-type": other}}, c["material"], c["sg"],
                               c["regime"], c["corrupted"], c["m"], k_views=(2, N_VIEWS), n_draws=1, n_boot=50)
    assert "network" not in _cell(res, "unseen-material", "zone_axis", "clean")["classifiers"]
    assert _cell(res, "unseen-type", "zone_axis", "corrupted")["classifiers"]["network"]["cs_1"]["mean"] == 1.0
    assert _cell(res, "known", "zone_axis", "corrupted")["classifiers"]["network"]["cs_1"]["mean"] < 1.0
    assert res["differences"] == []
    json.dumps(res, allow_nan=False)  # strict JSON: nan -> None
    md = render_protocols_markdown(res, title="t", info={"weights": "x"})
    assert md.startswith("# t") and "| known | zone_axis | clean | network |" in md
    assert "## By crystal system" in md and "## By group size" in md and "Cost of corruption" in md
    assert "CS 2 views" in md and "CS 4 views" in md


def test_membership_options_and_errors(case):
    c = case
    mem = P.protocol_membership(c["material"], c["m"], known="material_test")
    assert np.array_equal(mem["known"], mem["unseen-material"])
    with pytest.raises(ValueError):
        P.protocol_membership(c["material"], c["m"], known="nope")
    bad = Manifest({k: v for k, v in c["m"].columns.items() if k != "split_type"}, {})
    with pytest.raises(KeyError):
        P.protocol_membership(c["material"], bad)
    with pytest.raises(ValueError):
        P.evaluate_protocols({"f": c["forest"]}, c["material"][:-1], c["sg"], c["regime"], c["corrupted"], c["m"])
    # labels only (no probabilities): single-pattern figures, no multi-view
    res = P.evaluate_protocols({"f": c["forest"]}, c["material"], c["sg"], c["regime"], c["corrupted"], c["m"],
                               k_views=(2,), n_draws=1, n_boot=20)
    r = _cell(res, "known", "random", "clean")["classifiers"]["f"]
    assert "cs_1" in r and "cs_k2" not in r


# ----------------------------------------------------------------------------- command line, end to end
def _toy_store(tmp_path):
    """A toy manifest (12 materials of the four toy lattices) and a zone-axis and a random set of them."""
    from py4dstem_gnn.data.dataset import PatternSet
    from py4dstem_gnn.data.structures import write_manifest
    from py4dstem_gnn.toy import TOY_CLASSES, toy_pattern

    n = 12
    kind = np.arange(n) % 4
    sg = np.array([TOY_CLASSES[k][1] for k in kind])
    group = np.array([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    cols = {"material": np.arange(n), "formula": np.array([f"X{i}" for i in range(n)]), "space_group": sg,
            "crystal_system": SG_TO_CS[sg - 1], "proto_name": np.array([f"p{g}" for g in group]), "group": group,
            "split": np.full(n, "train"),
            "split_type": np.where(np.isin(group, [0, 2, 4, 6]), "test", "train"),
            "split_material": np.where(np.arange(n) % 3 == 0, "test", "train")}
    write_manifest(Manifest(cols, {"protocol_split_seed": "0"}), tmp_path / "manifest.csv.gz")
    rng = np.random.default_rng(0)
    paths = []
    for name in ("za", "rand"):
        mats = np.repeat(np.arange(n), 3)
        pls = [toy_pattern(int(kind[m]), rng) for m in mats]
        paths.append(PatternSet.from_pointlists(pls, mats, sg[mats]).to_hdf5(tmp_path / f"{name}.h5"))
    return paths


def test_cli_end_to_end_with_tiny_model_and_forest(tmp_path, monkeypatch, capsys):
    pytest.importorskip("h5py")
    pytest.importorskip("sklearn")
    from py4dstem_gnn.cli import main
    from py4dstem_gnn.baselines.forest import RandomForestBaseline
    from py4dstem_gnn.toy import ToyLatticeSource, tiny_model
    from py4dstem_gnn.weights import save_weights

    za, rand = _toy_store(tmp_path)
    w_all = save_weights(tiny_model(0), tmp_path / "w", "tiny")
    w_type = save_weights(tiny_model(1), tmp_path / "w", "tiny_type")
    pls, cs, sg = ToyLatticeSource().sample(np.random.default_rng(3), 80)
    rf = RandomForestBaseline(n_estimators_cs=4, n_estimators_sg=3, max_depth_cs=5, max_depth_sg=4).fit(pls, cs, sg)
    rf_path = rf.save(tmp_path / "rf.joblib")
    monkeypatch.setattr("sys.argv", ["py4dstem-gnn", "protocols", "--name", "toy"])
    rc = main(["protocols", "--name", "toy", "--out-root", str(tmp_path / "reports"),
               "--manifest", str(tmp_path / "manifest.csv.gz"), "--zone-axis", str(za), "--random", str(rand),
               "--weights", str(w_all), "--weights", f"unseen-type={w_type}", "--rf", str(rf_path),
               "--corruption", "training", "--views", "2,3", "--draws", "2", "--boot", "50", "--no-progress",
               "--update-card"])
    assert rc == 0
    from py4dstem_gnn.weights import read_card

    card_type = read_card(w_type)["evaluation_protocols"]
    assert set(k.split("/")[0] for k in card_type["figures"]) == {"unseen-type"}
    fig = card_type["figures"]["unseen-type/zone_axis/clean"]
    assert fig["weights"] == str(w_type) and fig["cs_1"][1] <= fig["cs_1"][0] <= fig["cs_1"][2]
    card_all = read_card(w_all)["evaluation_protocols"]["figures"]
    assert {k.split("/")[0] for k in card_all} == {"known", "unseen-material"}
    out = tmp_path / "reports" / "toy"
    payload = json.loads((out / "protocols.json").read_text())
    md = (out / "protocols.md").read_text()
    assert payload["classifiers"] == ["network", "forest"]
    assert len(payload["cells"]) == 3 * 2 * 2
    cell = [c for c in payload["cells"] if (c["protocol"], c["regime"], c["corruption"]) == ("unseen-type", "random", "corrupted")][0]
    assert cell["n_materials"] == 5 and cell["n_patterns"] == 15 and cell["n_groups"] == 4  # materials 0, 1, 4, 6, 8
    assert set(cell["classifiers"]) == {"network", "forest"}
    assert payload["corruption"]["preset"] == "training"
    assert f"unseen-type: {w_type}" in payload["info"]["network per protocol"]
    assert "unseen-material: " + str(w_all) in payload["info"]["network per protocol"]
    assert "| unseen-type | random | clean+corrupted | network |" in md and "network − forest" in md
    # one report: selective prediction for every classifier with a confidence, and the detail section
    assert set(payload["selective"]["classifiers"]) == {"network", "forest"}
    assert "## Selective prediction (forest)" in md and (out / "risk_coverage_forest_known.png").is_file()
    assert "## Detail: `known`, clean patterns" in md and "Table 2 layout" in md and "Time per pattern" in md
    assert set(payload["detail"]["classifiers"]) == {"network", "forest"}
    for f in ("confusion_crystal_system.png", "confidence_histogram.png", "reliability_crystal_system.png",
              "accuracy_vs_views.png", "accuracy_by_crystal_system.png"):
        assert (out / f).stat().st_size > 1000 and f in payload["figures"]
    for c in payload["cells"]:
        for r in c["classifiers"].values():
            assert 0.0 <= r["cs_1"]["mean"] <= 1.0 and r["cs_1"]["low"] <= r["cs_1"]["mean"] <= r["cs_1"]["high"]
    # nothing to score / unknown protocol / a set without a regime / a preset that does not exist
    common = ["protocols", "--name", "x", "--out-root", str(tmp_path / "reports"), "--manifest",
              str(tmp_path / "manifest.csv.gz"), "--corruption", "training"]
    for extra, message in ((["--zone-axis", str(za), "--weights", "none"], "nothing to score"),
                           (["--zone-axis", str(za), "--weights", "unseen-types=x"], "unknown protocol"),
                           (["--set", str(za), "--weights", str(w_all)], "regime"),
                           (["--zone-axis", str(za), "--weights", str(w_all), "--corruption", "nope"], "no preset")):
        capsys.readouterr()
        assert main(common + extra) == 2
        assert message in capsys.readouterr().err


def test_parse_specs():
    from py4dstem_gnn.evaluation.cli import parse_specs

    assert parse_specs([], {"known": "default"}) == {"known": "default"}
    assert parse_specs(["a.safetensors"]) == {p: "a.safetensors" for p in P.PROTOCOLS}
    assert parse_specs(["a", "unseen-type=b", "known=none"]) == {"unseen-material": "a", "unseen-type": "b"}
