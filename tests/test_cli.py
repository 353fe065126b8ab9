"""The command line: ``info`` on the shipped weights, ``classify`` quiet and its exit status."""

from __future__ import annotations

import json

import numpy as np
import pytest

from py4dstem_gnn.cli import main
from py4dstem_gnn.weights import available_models, read_card, resolve_weights

needs_default = pytest.mark.skipif("default" not in available_models(), reason="shipped weights not installed")


@needs_default
def test_info_without_arguments_describes_the_shipped_default(capsys):
    assert main(["info", "--spots", "16"]) == 0
    info = json.loads(capsys.readouterr().out)
    card = read_card(resolve_weights("default"))
    assert info["model"] == "default"
    assert info["weights"].endswith("default.safetensors")
    assert info["card"]["sha256"] == card["sha256"]
    assert info["parameters"] == card["n_parameters"]
    assert info["config"]["n_layers"] == card["config"]["n_layers"]


def test_info_untrained_config(capsys):
    assert main(["info", "--untrained", '{"n_layers": 1, "feature_dim": 16, "hidden_dim": 16}', "--spots", "8"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"] is None and info["card"] is None
    assert info["config"]["n_layers"] == 1 and info["parameters"] > 0


@needs_default
def test_classify_quiet_prints_nothing(tmp_path, capfd):
    py4DSTEM = pytest.importorskip("py4DSTEM")
    from py4dstem_gnn.data.synthetic import random_braggvectors
    from py4dstem_gnn.progress import quiet_py4dstem

    bv = random_braggvectors((3, 4), spots=(8, 12), qshape=(128, 128), origin=(64.2, 63.7), q_pixel_size=0.015, seed=2)
    with quiet_py4dstem():
        py4DSTEM.save(str(tmp_path / "scan.h5"), bv, mode="o")
    capfd.readouterr()
    assert main(["-q", "classify", str(tmp_path / "scan.h5"), "-o", str(tmp_path / "out.h5")]) == 0
    out = capfd.readouterr()
    assert out.out == "" and out.err == "", out.err[-500:]
    with quiet_py4dstem():
        maps = py4DSTEM.read(str(tmp_path / "out.h5")).tree("crystal_maps")
    assert np.asarray(maps.get_slice("crystal_system").data).shape == (3, 4)


def test_classify_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["classify", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("py4dstem-gnn classify: error:") and "missing.h5" in err and "\n" not in err
