"""Privacy: per cut the latest dCor and, when `medsplit privacy` wrote one, the run's report card and figures."""

from __future__ import annotations

import streamlit as st

from dashboard import privacy, runs
from dashboard.settings import Places
from dashboard.views.common import pick_run

__all__ = ["render", "compare_chart"]


def render(places: Places) -> None:
    """The Privacy section."""
    st.header("Privacy")
    picked = pick_run(places.runs, key="run")
    if picked is None:
        return
    name, path = picked
    run = runs.load_run(path, name)
    st.subheader("Distance correlation of each cut with its raw input (latest epoch)")
    latest = privacy.latest_dcor(run.privacy)
    if latest.empty:
        st.caption("No cut has been measured yet (dCor is computed on validation patients after each epoch).")
    else:
        st.dataframe(latest, hide_index=True)
        st.caption("1: the cut determines the input; near 0: little relation. dCor alone does not say what an "
                   "attacker can rebuild: the report card does.")
    card = privacy.load_card(path)
    if card is None:
        st.info("No report card for this run. `medsplit privacy --preset PRESET --run-dir DIR` trains a topology on "
                "synthetic patients, attacks it and writes one into DIR (see docs/privacy.md).")
        return
    st.subheader("Report card: what an attacker rebuilt from each cut")
    st.dataframe(privacy.cut_table(card), hide_index=True)
    st.subheader("Labels")
    st.dataframe(privacy.label_table(card), hide_index=True)
    defenses = card["privacy"].get("defenses", {})
    st.caption("Defenses: " + "; ".join(f"{s}: {', '.join(d) or 'none'}" for s, d in sorted(defenses.items())))
    shown = privacy.figures(path, card)
    if shown:
        st.caption("Figures from the card: synthetic patients only (the card never reads a site's data).")
        cols = st.columns(2)
        for i, (title, png) in enumerate(sorted(shown.items())):
            cols[i % 2].image(str(png), caption=title)


def compare_chart(loaded: list[runs.RunData]) -> None:
    """Privacy against AUC across the compared runs (Compare's hook)."""
    points = privacy.privacy_points(loaded)
    if points.empty or "max dCor" not in points:
        return
    st.subheader("Privacy against AUC")
    y = [c for c in ("worst SSIM", "worst leak AUC", "max dCor") if c in points and points[c].notna().any()]
    if y:
        long = points.melt(id_vars=["run", "val AUC"], value_vars=y, var_name="leakage", value_name="value").dropna()
        st.scatter_chart(long, x="val AUC", y="value", color="leakage", x_label="val AUC",
                         y_label="leakage (lower is more private)")
    st.dataframe(points, hide_index=True)
