"""The command line: ``info`` (card summary without torch), ``classify`` (summary, output name,
quiet), ``--help`` (every option explained, the README's command list)."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from py4dstem_gnn.cli import COMMANDS, USER_COMMANDS, main
from py4dstem_gnn.weights import available_models, read_card, resolve_weights, weights_dirs

needs_default = pytest.mark.skipif("default" not in available_models(), reason="shipped weights not installed")
ROOT = Path(__file__).resolve().parent.parent


# --- info -------------------------------------------------------------------------------------


@needs_default
def test_info_prints_a_readable_summary_of_the_default_card(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    card = read_card(resolve_weights("default"))
    assert out.splitlines()[0].startswith("default")
    assert card["sha256"][:12] in out
    assert f"{card['n_parameters']:,} parameters" in out
    assert f"default threshold {card['confidence_threshold']:.3f}" in out
    assert "crystal system" in out and "%" in out
    assert len(out.splitlines()) < 40  # a summary, not the calibration tables
    assert "[0.0025" not in out


@needs_default
def test_info_json_prints_the_whole_card(capsys):
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == read_card(resolve_weights("default"))


@needs_default
def test_info_does_not_import_torch_or_py4dstem():
    """Reading the card is JSON only: with the package's own __init__ skipped, info imports neither."""
    code = (
        "import sys, types, contextlib, io\n"
        f"pkg = types.ModuleType('py4dstem_gnn'); pkg.__path__ = [{str(ROOT / 'py4dstem_gnn')!r}]\n"
        "sys.modules['py4dstem_gnn'] = pkg\n"
        "from py4dstem_gnn.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['info']) == 0\n"
        "assert 'architecture' in out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'py4DSTEM', 'matplotlib') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


def test_info_searches_the_weights_folders_of_weights_py():
    from py4dstem_gnn import info

    assert info._weights_dirs() == weights_dirs()


def test_info_unknown_model_exits_2(capsys):
    assert main(["info", "--model", "no_such_weights"]) == 2
    assert "no_such_weights" in capsys.readouterr().err


def test_info_untrained_config(capsys):
    assert main(["info", "--untrained", '{"n_layers": 1, "feature_dim": 16, "hidden_dim": 16}', "--spots", "8"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"] is None
    assert info["config"]["n_layers"] == 1 and info["parameters"] > 0


# --- classify ---------------------------------------------------------------------------------


def _scan_file(tmp_path: Path, name: str = "scan.h5") -> Path:
    py4DSTEM = pytest.importorskip("py4DSTEM")
    from py4dstem_gnn.data.synthetic import random_braggvectors
    from py4dstem_gnn.progress import quiet_py4dstem

    bv = random_braggvectors((3, 4), spots=(8, 12), qshape=(128, 128), origin=(64.2, 63.7), q_pixel_size=0.015, seed=2)
    with quiet_py4dstem():
        py4DSTEM.save(str(tmp_path / name), bv, mode="o")
    return tmp_path / name


@needs_default
def test_classify_quiet_prints_nothing(tmp_path, capfd):
    py4DSTEM = pytest.importorskip("py4DSTEM")
    from py4dstem_gnn.progress import quiet_py4dstem

    scan = _scan_file(tmp_path)
    capfd.readouterr()
    assert main(["-q", "classify", str(scan), "-o", str(tmp_path / "out.h5"), "--phases", "none"]) == 0
    out = capfd.readouterr()
    assert out.out == "" and out.err == "", out.err[-500:]
    with quiet_py4dstem():
        maps = py4DSTEM.read(str(tmp_path / "out.h5")).tree("crystal_maps")
    assert np.asarray(maps.get_slice("crystal_system").data).shape == (3, 4)


@needs_default
def test_classify_prints_a_summary_and_writes_input_stem_maps(tmp_path, capfd):
    scan = _scan_file(tmp_path)
    capfd.readouterr()
    assert main(["classify", str(scan), "--no-progress", "--confidence-threshold", "0", "--phases", "none"]) == 0
    out = capfd.readouterr().out
    assert (tmp_path / "scan_maps.h5").is_file()
    assert not list(tmp_path.glob("*_maps_maps*"))
    assert "labelled: 12 of 12 positions (100.0 %" in out
    assert re.search(r"crystal systems \(of the labelled\): \w+ \d+\.\d %", out)
    assert "space groups (of the labelled):" in out
    assert str(tmp_path / "scan_maps.h5") in out


def test_default_output_name(tmp_path):
    from py4dstem_gnn.classify_cli import default_output

    assert default_output(tmp_path / "scan.h5") == tmp_path / "scan_maps.h5"
    assert default_output(tmp_path / "run.2.emd") == tmp_path / "run.2_maps.h5"
    # a maps file is not renamed *_maps_maps: its default would be itself, so -o is asked for
    with pytest.raises(ValueError, match="-o"):
        default_output(tmp_path / "scan_maps.h5")


@needs_default
def test_classify_refuses_to_overwrite_a_maps_file_by_default(tmp_path, capsys):
    scan = _scan_file(tmp_path, "scan_maps.h5")
    before = scan.stat().st_mtime_ns
    assert main(["classify", str(scan), "--no-progress"]) == 2
    assert "-o" in capsys.readouterr().err
    assert scan.stat().st_mtime_ns == before


def test_summary_text_states_the_denominators():
    py4DSTEM = pytest.importorskip("py4DSTEM")
    from py4dstem_gnn.classify_cli import summary_text

    cs = np.array([[6, 6, 6, -1], [6, 5, -1, -1]])
    sg = np.array([[225, 225, 221, -1], [225, 194, -1, -1]])
    maps = py4DSTEM.RealSlice(data=np.stack([cs, sg]).astype(np.float32), slicelabels=["crystal_system", "space_group"],
                              name="crystal_maps")
    text = summary_text(maps, "x_maps.h5", figure="x.png")
    assert "labelled: 5 of 8 positions (62.5 %; scan 2 x 4)" in text
    assert "cubic 80.0 %, hexagonal 20.0 %" in text
    assert "225 Fm-3m 60.0 %, 194 P6_3/mmc 20.0 %, 221 Pm-3m 20.0 %" in text  # ties: lower number first
    assert "x_maps.h5" in text and "figure: x.png" in text
    assert "phases" not in text
    from emdfile import Metadata

    phase = np.array([[0, 0, 1, -1], [0, -1, -1, -1]])
    maps = py4DSTEM.RealSlice(data=np.stack([cs, sg, phase]).astype(np.float32),
                              slicelabels=["crystal_system", "space_group", "phase"], name="crystal_maps")
    maps.metadata = Metadata(name="py4dstem_gnn", data={"phase_formula": ["Au", "Cu"], "phase_space_group": [225, 225]})
    assert "phases (of the 4 matched):   Au (225 Fm-3m) 75.0 %, Cu (225 Fm-3m) 25.0 %" in summary_text(maps, "x.h5")


def test_match_options_pass_only_what_was_given(tmp_path):
    from py4dstem_gnn.classify_cli import configure_parser, match_options

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert match_options(parser.parse_args(["x.h5"])) == {}
    assert match_options(parser.parse_args(["x.h5", "--phases", "none"])) == {"phases": None}
    assert match_options(parser.parse_args(["x.h5", "--phases", "pool", "--elements", "Au", "O"])) == {
        "phases": "pool", "elements": ["Au", "O"]}
    cif = tmp_path / "a.cif"
    cif.write_text("data_a\n")
    assert match_options(parser.parse_args(["x.h5", "--phases", str(cif)])) == {"phases": [str(cif)]}
    with pytest.raises(FileNotFoundError, match="missing.cif"):
        match_options(parser.parse_args(["x.h5", "--phases", str(tmp_path / "missing.cif")]))


def test_classify_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["classify", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("py4dstem-gnn classify: error:") and "missing.h5" in err and "\n" not in err


# --- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", USER_COMMANDS)
def test_every_option_of_the_user_commands_has_help(command):
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).configure_parser(parser)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        assert action.help and len(action.help) > 10, f"{command} {action.option_strings or action.dest}: no help"


def test_help_lists_every_command_grouped(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    user = out.index("user commands:")
    other = out.index("data, training and evaluation commands:")
    assert user < other
    for name in COMMANDS:
        where = re.search(rf"^  {re.escape(name)} ", out, flags=re.M)
        assert where, name
        assert (where.start() < other) == (name in USER_COMMANDS), name


def test_readme_lists_the_commands_of_help():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Command line")
    section = readme[start : readme.index("\n## ", start)]
    listed = set(re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.M))
    assert listed == set(COMMANDS), listed ^ set(COMMANDS)


def test_train_augment_accepts_detector_presets_and_names_the_choices(capsys):
    import argparse

    from py4dstem_gnn.training.cli import configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--library", "lib", "--augment", "detected:hybrid256"])
    assert args.augment == "detected:hybrid256"
    with pytest.raises(SystemExit):
        parser.parse_args(["--library", "lib", "--augment", "detected:nope"])
    assert "hybrid128_lowdose" in capsys.readouterr().err
