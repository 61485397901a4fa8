"""kn.figures' axis helper (the figures themselves are tested beside their concepts' tables)."""
from matplotlib.figure import Figure

from kn.figures import point_ticks


def test_point_ticks_are_the_measured_counts_only():
    ax = Figure().subplots()
    ax.plot([2, 4, 32], [1, 2, 3])
    ax.set_xscale("log")
    point_ticks(ax, [32, 2, 4, 2])
    assert list(ax.get_xticks()) == [2, 4, 32]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "32"]
    assert len(ax.xaxis.get_minorticklocs()) == 0
