"""The README quick start, executed cell by cell on a small synthetic scan.

``py4DSTEM.read`` is replaced by a function returning a synthetic Au-nanoparticle DataCube
(vacuum in the ROI the README uses), the shipped weights classify it, and every cell that
ends on an expression must give a figure Jupyter can display.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

py4DSTEM = pytest.importorskip("py4DSTEM")

from py4dstem_gnn.weights import available_models  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


def _bank_installed() -> bool:
    """Whether the shipped template bank is there (the README's classify_braggvectors(bv) matches against it)."""
    try:
        from py4dstem_gnn.matching.bank import BANK_DIR
    except ImportError:  # a package without the match stage
        return True
    package = Path(__file__).resolve().parent.parent / "py4dstem_gnn" / "_weights"
    return (Path(BANK_DIR) / "bank_pool.npz").is_file() or (package / "bank_pool.npz").is_file()


def quickstart_cells() -> list[str]:
    """The python code blocks of the README section "Quick start (Jupyter)", in order."""
    text = README.read_text()
    start = text.index("## Quick start (Jupyter)")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def run_cell(source: str, namespace: dict) -> object:
    """Run a cell as Jupyter does: its value is that of its last line, if an expression."""
    tree = ast.parse(source)
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body = tree.body[:-1]
    exec(compile(tree, "<README cell>", "exec"), namespace)  # noqa: S102 - the README's own code
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), "<README cell>", "eval"), namespace)  # noqa: S307


def test_readme_has_the_quickstart_cells():
    cells = quickstart_cells()
    assert len(cells) >= 3
    assert any("datacube=datacube" in c for c in cells), "the figure should show a virtual dark-field image"
    assert any("pg.classify_braggvectors(bv)" in c for c in cells)  # what the run below adjusts
    # every cell that draws a figure ends on it (or saves it)
    for cell in cells:
        lines = [ln for ln in cell.strip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if any("_figure(" in ln for ln in lines) and "save_figure" not in cell:
            assert "_figure(" in lines[-1] or "display(" in lines[-1], cell


@pytest.mark.skipif("default" not in available_models(), reason="shipped weights not installed")
def test_readme_quickstart_runs_and_shows_its_figures(tmp_path, monkeypatch):
    from py4dstem_gnn.data.synthetic import Particle, au_nanoparticle_scan
    from py4dstem_gnn.progress import quiet_py4dstem

    particles = [Particle((16.0, 7.0), 5.0, (1, 1, 0), 10.0), Particle((12.0, 17.0), 6.0, (0, 0, 1), 25.0)]
    scan = au_nanoparticle_scan(scan_shape=(22, 24), qshape=(96, 96), q_pixel_size=0.0213, particles=particles, seed=3)
    monkeypatch.setattr(py4DSTEM, "read", lambda *args, **kwargs: scan.datacube)
    monkeypatch.chdir(tmp_path)

    namespace: dict = {"__name__": "__readme__"}
    figures = []
    with quiet_py4dstem():
        for cell in quickstart_cells():
            # no bank installed (a checkout before `py4dstem-gnn bank build`): the network alone
            options = "progress=False" if _bank_installed() else "progress=False, phases=None"
            value = run_cell(cell.replace("pg.classify_braggvectors(bv)", f"pg.classify_braggvectors(bv, {options})"),
                             namespace)
            if value is not None:
                assert isinstance(value, Figure), f"cell ends on {type(value).__name__}, not a figure:\n{cell}"
                png = value._repr_png_()  # what Jupyter shows
                assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
                figures.append(value)
    assert len(figures) >= 2
    maps = namespace["maps"]
    assert maps.get_slice("crystal_system").data.shape == (22, 24)
    assert figures[0].axes[0].get_title().startswith("Virtual dark field")
    for name in ("scan_crystal_systems.png", "scan_crystal_systems.pdf", "scan_phases.h5"):
        assert (tmp_path / name).stat().st_size > 1000, name
