"""Label codes and the shipped Hermann-Mauguin table."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from py4dstem_gnn.labels import (
    N_SPACE_GROUPS,
    SPACE_GROUP_SYMBOLS,
    crystal_system_of_space_group,
    hermann_mauguin,
)


def test_table_has_230_distinct_symbols_with_known_entries():
    assert len(SPACE_GROUP_SYMBOLS) == N_SPACE_GROUPS
    assert len(set(SPACE_GROUP_SYMBOLS)) == N_SPACE_GROUPS
    known = {1: "P1", 2: "P-1", 14: "P2_1/c", 62: "Pnma", 139: "I4/mmm", 166: "R-3m", 194: "P6_3/mmc",
             221: "Pm-3m", 225: "Fm-3m", 227: "Fd-3m", 230: "Ia-3d"}
    for number, symbol in known.items():
        assert hermann_mauguin(number) == symbol
    # the lattice letter agrees with the crystal system where it must: R only trigonal, F/I/C never triclinic
    for number, symbol in enumerate(SPACE_GROUP_SYMBOLS, start=1):
        assert symbol[0] in "PABCFIR"
        if symbol[0] == "R":
            assert crystal_system_of_space_group(number) == 4
        if crystal_system_of_space_group(number) == 0:
            assert symbol[0] == "P"


@pytest.mark.parametrize("bad", [0, -1, 231, 1000])
def test_hermann_mauguin_refuses_numbers_outside_1_230(bad):
    with pytest.raises(ValueError, match="1..230"):
        hermann_mauguin(bad)


def test_table_equals_spglib():
    spglib = pytest.importorskip("spglib")
    first: dict[int, str] = {}
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        first.setdefault(int(t.number), str(t.international_short))
    assert [first[n] for n in range(1, 231)] == list(SPACE_GROUP_SYMBOLS)


def test_symbols_without_spglib():
    """A plain install (no spglib) names the space groups in the figures' legends."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["spglib"] = None  # import spglib -> ImportError
        import matplotlib
        matplotlib.use("Agg")
        import numpy as np
        from py4dstem_gnn.plot import space_group_figure, space_group_symbol
        assert space_group_symbol(225) == "225 Fm-3m", space_group_symbol(225)
        sg = np.array([[225, 225], [221, -1]])
        fig = space_group_figure({"space_group": sg})
        labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
        assert labels == ["225 Fm-3m", "221 Pm-3m"], labels
        assert "spglib" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("OK")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OK" in res.stdout


def test_crystal_system_of_space_group_unchanged():
    np.testing.assert_array_equal(crystal_system_of_space_group(np.array([1, 3, 16, 75, 143, 168, 195, -1])),
                                  [0, 1, 2, 3, 4, 5, 6, -1])
