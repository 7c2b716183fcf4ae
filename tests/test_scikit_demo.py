"""The demo plot: mplhep style, error bars, HEP labels, and the user's backend untouched."""

from __future__ import annotations

import hist
import matplotlib
import numpy as np
from matplotlib.container import ErrorbarContainer

from pyproof.demo import MASS_BINS, MASS_HIGH, MASS_LABEL, MASS_LOW, demo_figure, save_plot


def mass_histogram() -> hist.Hist:
    h = hist.Hist.new.Reg(MASS_BINS, MASS_LOW, MASS_HIGH, name="mass", label=MASS_LABEL).Double()
    return h.fill(np.random.default_rng(5).normal(91.2, 3.0, 4000))


def test_the_demo_plot_has_error_bars_and_labels_in_the_z_window(tmp_path):
    h = mass_histogram()
    ax = demo_figure(h).axes[0]
    assert ax.get_xlabel() == r"$m_{\mu\mu}$ [GeV]"
    assert ax.get_ylabel() == "Events / 5 GeV"
    assert ax.get_xlim() == (40.0, 120.0)
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1 and bars[0].has_yerr
    path = save_plot(h, str(tmp_path / "mass.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_saving_the_plot_does_not_switch_the_users_backend(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        save_plot(mass_histogram(), str(tmp_path / "mass.png"))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
