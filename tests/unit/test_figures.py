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


def test_kns_figures_show_as_png_in_a_notebook():
    """A notebook shows a Figure no pyplot manager holds only through its _repr_png_ (without it the
    page gets "<Figure size ...>" as text)."""
    import pandas as pd

    from kn.figures import NotebookFigure, coverage_figure

    fig = coverage_figure(pd.DataFrame({"single_token": [1], "multi_token": [0], "no_prompt": [0],
                                        "known_share": [1.0], "probed": [1]}, index=["en"]))
    assert isinstance(fig, NotebookFigure)
    png = fig._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width = int.from_bytes(png[16:20], "big")
    assert 0 < width <= fig.get_figwidth() * fig.dpi + 1  # cropped to what is drawn, at the figure's dpi
