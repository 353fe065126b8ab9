"""Training-curve lineages: runs joined end to end, and the ``curve`` command."""

from __future__ import annotations

import json

import pytest

from py4dstem_gnn.cli import main
from py4dstem_gnn.training.curve import read_lineage


def _write_run(path, steps, seconds_per_step, acc):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as fh:
        for s in steps:
            fh.write(json.dumps({"kind": "train", "step": s, "seconds": s * seconds_per_step, "loss": 5.0 - 0.001 * s}) + "\n")
        fh.write(json.dumps({"kind": "val", "step": steps[-1], "seconds": steps[-1] * seconds_per_step, "v/cs_acc": acc,
                             "v/sg_acc": acc / 2, "v/loss": 6.0 - acc}) + "\n")
        fh.write("{cut by a kill\n")


def test_lineage_offsets_steps_and_seconds(tmp_path):
    _write_run(tmp_path / "a", [10, 20, 30], 2.0, 0.3)
    _write_run(tmp_path / "b", [10, 20], 1.0, 0.4)
    lin = read_lineage("x", [tmp_path / "a", tmp_path / "b"])
    assert [r["step"] for r in lin.train] == [10, 20, 30, 40, 50]
    assert [r["seconds"] for r in lin.train] == [20.0, 40.0, 60.0, 70.0, 80.0]
    assert [(r["step"], r["v/cs_acc"]) for r in lin.val] == [(30, 0.3), (50, 0.4)]
    assert lin.boundaries == [30]


def test_lineage_cut_at_a_step_and_prior_compute(tmp_path):
    _write_run(tmp_path / "a", [10, 20, 30], 2.0, 0.3)
    _write_run(tmp_path / "b", [10, 20], 1.0, 0.4)
    lin = read_lineage("x", [f"{tmp_path / 'a'}@20", tmp_path / "b"], prior_seconds=100.0)
    assert [r["step"] for r in lin.train] == [10, 20, 30, 40]
    assert [r["seconds"] for r in lin.train] == [120.0, 140.0, 150.0, 160.0]
    assert lin.boundaries == [20]


def test_curve_command_writes_a_figure(tmp_path):
    _write_run(tmp_path / "a", [10, 20, 30], 2.0, 0.3)
    _write_run(tmp_path / "s", [10, 20], 1.0, 0.2)
    out = tmp_path / "fig" / "curve.png"
    assert main(["curve", "--lineage", f"big={tmp_path / 'a'}", "--lineage", f"small={tmp_path / 's'}",
                 "--prior", "big=50", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_curve_command_refuses_a_bad_spec(tmp_path):
    assert main(["curve", "--lineage", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    with pytest.raises(FileNotFoundError):
        read_lineage("x", [tmp_path / "missing"])
