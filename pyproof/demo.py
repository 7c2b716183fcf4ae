"""The demo analysis: a toy Z->mumu dataset written with uproot, and its selector.

Each event has a jagged list of muons (pt, eta, phi, charge): an opposite-
charge pair whose invariant mass follows a Breit-Wigner around the Z, plus
zero to two soft extra muons. `DimuonMass` reconstructs the pair's mass.
"""

from __future__ import annotations

import os
from typing import Any

import awkward as ak
import hist
import numpy as np
import uproot

import pyproof

Z_MASS, Z_WIDTH = 91.1876, 2.4952
BASKET_EVENTS = 10_000


def make_events(n: int, rng: np.random.Generator) -> ak.Array:
    mass = Z_MASS + Z_WIDTH / 2 * rng.standard_cauchy(n)
    # the Breit-Wigner's far tails become a flat continuum (no pile-up at a cut)
    tails = (mass < 60.0) | (mass > 120.0)
    mass[tails] = rng.uniform(60.0, 120.0, int(tails.sum()))
    pt1 = rng.uniform(25.0, 60.0, n)
    eta1, eta2 = rng.uniform(-2.4, 2.4, n), rng.uniform(-2.4, 2.4, n)
    phi1 = rng.uniform(-np.pi, np.pi, n)
    phi2 = np.mod(phi1 + np.pi + rng.normal(0, 0.6, n) + np.pi, 2 * np.pi) - np.pi
    denom = 2.0 * pt1 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))
    pt2 = mass**2 / denom
    charge1 = rng.choice([-1, 1], n)
    extra = rng.choice([0, 1, 2], n, p=[0.7, 0.2, 0.1])
    counts = 2 + extra
    total = int(counts.sum())
    offsets = np.concatenate([[0], np.cumsum(counts)])
    pt = rng.exponential(8.0, total) + 3.0
    eta = rng.uniform(-2.4, 2.4, total)
    phi = rng.uniform(-np.pi, np.pi, total)
    charge = rng.choice([-1, 1], total)
    first = offsets[:-1]
    pt[first], pt[first + 1] = pt1, pt2
    eta[first], eta[first + 1] = eta1, eta2
    phi[first], phi[first + 1] = phi1, phi2
    charge[first], charge[first + 1] = charge1, -charge1

    def jag(values: np.ndarray) -> ak.Array:
        return ak.unflatten(values, counts)

    return ak.zip({"pt": jag(pt.astype(np.float32)), "eta": jag(eta.astype(np.float32)),
                   "phi": jag(phi.astype(np.float32)), "charge": jag(charge.astype(np.int32))})


def write_demo_dataset(directory: str, *, files: int = 4, events: int = 300_000,
                       seed: int = 1) -> list[str]:
    """Write `files` ROOT files (uneven sizes) with `events` events in all; returns specs."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = np.linspace(1.0, 2.0, files)
    sizes = np.floor(events * weights / weights.sum()).astype(int)
    sizes[-1] += events - sizes.sum()
    specs = []
    for index, size in enumerate(sizes):
        path = os.path.join(directory, f"zmumu-{index}.root")
        muons = make_events(int(size), rng)
        with uproot.recreate(path) as f:
            # flat NanoAOD-style names: nMuon, Muon_pt, Muon_eta, ...
            tree = f.mktree("events", {"Muon": muons.type.content},
                            field_name=lambda outer, inner: f"{outer}_{inner}",
                            counter_name=lambda name: f"n{name}")
            # one basket per extend: write baskets of a realistic size (~10k events)
            for start in range(0, len(muons), BASKET_EVENTS):
                tree.extend({"Muon": muons[start:start + BASKET_EVENTS]})
        specs.append(f"{path}:events")
    return specs


def pair_mass(events) -> np.ndarray:
    """Invariant mass of the first two muons, for events with an opposite-charge pair."""
    muons = events[ak.num(events["Muon_pt"]) >= 2]
    pt, eta, phi = muons["Muon_pt"], muons["Muon_eta"], muons["Muon_phi"]
    q = muons["Muon_charge"]
    opposite = ak.to_numpy(q[:, 0] * q[:, 1]) < 0
    pt1, pt2 = ak.to_numpy(pt[:, 0]), ak.to_numpy(pt[:, 1])
    deta = ak.to_numpy(eta[:, 0] - eta[:, 1])
    dphi = ak.to_numpy(phi[:, 0] - phi[:, 1])
    m2 = 2.0 * pt1 * pt2 * (np.cosh(deta) - np.cos(dphi))
    return np.sqrt(np.maximum(m2[opposite], 0.0)).astype(np.float64)


MASS_BINS, MASS_LOW, MASS_HIGH = 16, 40.0, 120.0
MASS_LABEL = r"$m_{\mu\mu}$ [GeV]"


class DimuonMass(pyproof.Selector):
    branches = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge"]

    def begin(self, ctx):
        # 5 GeV bins around the Z: below 60 GeV the toy sample has almost nothing
        ctx.outputs["mass"] = hist.Hist.new.Reg(MASS_BINS, MASS_LOW, MASS_HIGH, name="mass",
                                                label=MASS_LABEL).Double()
        ctx.outputs["events"] = 0

    def process(self, events, ctx):
        ctx.outputs["mass"].fill(pair_mass(events))
        ctx.outputs["events"] += len(events)


def render_histogram(h, *, width: int = 50, rows: int = 24) -> str:
    """A terminal drawing of a 1-D histogram (bins grouped to `rows` lines)."""
    values = h.values()
    edges = h.axes[0].edges
    group = max(1, len(values) // rows)
    lines = []
    sums = [values[i:i + group].sum() for i in range(0, len(values), group)]
    top = max(sums) if sums and max(sums) > 0 else 1.0
    for k, total in enumerate(sums):
        lo, hi = edges[k * group], edges[min((k + 1) * group, len(values))]
        bar = "#" * int(round(width * total / top))
        lines.append(f"{lo:6.1f}-{hi:6.1f} | {bar} {int(total)}")
    return "\n".join(lines)


def demo_figure(h) -> Any:
    """The dimuon mass as HEP plots look: mplhep style, Poisson error bars, LaTeX labels.

    Built on a bare `Figure` (no pyplot): the user's matplotlib backend is never
    switched. Without mplhep (`pip install 'pyproof[plot]'`) plain matplotlib
    draws the same error bars.
    """
    from matplotlib.figure import Figure

    try:
        import mplhep
    except ImportError:
        mplhep = None
    style = mplhep.style.CMS if mplhep is not None else {}
    import matplotlib

    with matplotlib.rc_context(style):
        fig = Figure(figsize=(8, 6))
        ax = fig.add_subplot()
        edges = h.axes[0].edges
        values = h.values()
        if mplhep is not None:
            mplhep.histplot(h, ax=ax, histtype="errorbar", yerr=True, color="black",
                            label="toy $Z\\to\\mu\\mu$")
        else:
            centers = 0.5 * (edges[1:] + edges[:-1])
            ax.errorbar(centers, values, yerr=np.sqrt(values), fmt="o", color="black",
                        label="toy $Z\\to\\mu\\mu$")
        width = edges[1] - edges[0]
        ax.set_xlabel(h.axes[0].label or h.axes[0].name)
        ax.set_ylabel(f"Events / {width:g} GeV")
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(0, None)
        ax.legend()
        ax.set_title("pyproof demo", loc="left", fontweight="bold")
        fig.tight_layout()
    return fig


def save_plot(h, path: str) -> str:
    """Write `demo_figure(h)` to `path` (PNG), with no pyplot and no backend switch."""
    import logging

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fonts = logging.getLogger("matplotlib.font_manager")
    level = fonts.level
    fonts.setLevel(logging.ERROR)  # mplhep's styles name fonts most machines lack: noise
    try:
        fig = demo_figure(h)
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=100)
    finally:
        fonts.setLevel(level)
    return path
