"""The package's one progress bar: widget in notebooks with ipywidgets, quiet text bar otherwise."""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import pytest
from tqdm.std import tqdm as std_tqdm

from py4dstem_gnn import progress


def test_terminal_gets_the_text_bar():
    assert not progress.in_notebook()
    assert progress.progress_class() is std_tqdm
    bar = progress.tqdm(range(3), disable=True)
    assert list(bar) == [0, 1, 2]


@pytest.fixture
def fake_notebook(monkeypatch):
    """A Jupyter kernel as tqdm.autonotebook detects it (ipykernel's shell loaded)."""
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(__import__("sys").modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: shell
    monkeypatch.setitem(__import__("sys").modules, "IPython", fake_ipython)
    for key in list(__import__("os").environ):
        if key == "QT_API" or key.startswith("SPYDER"):
            monkeypatch.delenv(key)
    progress._widget_bar_available.cache_clear()
    yield


def test_notebook_without_ipywidgets_falls_back_quietly(fake_notebook, monkeypatch):
    monkeypatch.setattr(progress, "_widget_bar_available", lambda: False)
    assert progress.in_notebook()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "IProgress not found" would be a TqdmWarning
        cls = progress.progress_class()
        bar = progress.tqdm(range(2), disable=True)
        list(bar)
    assert cls is std_tqdm
    # a cleared text bar would leave an empty stderr block in the cell: keep it
    assert progress.tqdm(range(2), leave=False, disable=True).leave


def test_notebook_with_ipywidgets_gets_the_widget_bar(fake_notebook, monkeypatch):
    monkeypatch.setattr(progress, "_widget_bar_available", lambda: True)
    from tqdm.notebook import tqdm as notebook_tqdm

    assert progress.progress_class() is notebook_tqdm


def test_quiet_py4dstem_disables_and_restores_emdfile_bars():
    pytest.importorskip("emdfile")
    emdfile_tqdmnd = __import__("sys").modules["emdfile.tqdmnd"]
    original = emdfile_tqdmnd.tqdm
    with progress.quiet_py4dstem():
        bar = emdfile_tqdmnd.tqdmnd(3, 2)
        assert bar.disable and len(list(bar)) == 6
    assert emdfile_tqdmnd.tqdm is original
    with progress.quiet_py4dstem(False):
        assert emdfile_tqdmnd.tqdm is original


def test_the_package_uses_only_this_helper():
    root = Path(progress.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "progress.py" and ("tqdm.auto" in p.read_text() or "from tqdm import" in p.read_text())
    ]
    assert offenders == []
