"""Charts a reader can read: y-axes fitted to the data (not from 0), a distinct colour and marker per line, and
validation dashed beside training."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

__all__ = ["lines", "bars", "PALETTE", "MARKERS"]

#: colour-blind-safe (Okabe-Ito), one per line
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
_MORE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
         "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
MARKERS = ("circle", "square", "triangle-up", "diamond", "cross", "triangle-down", "triangle-right", "triangle-left")


def _long(df: pd.DataFrame, x: str, series: Sequence[str]) -> pd.DataFrame:
    return df.melt(id_vars=[x], value_vars=list(series), var_name="series", value_name="value").dropna()


def lines(df: pd.DataFrame, x: str, series: Sequence[str], *, x_title: str, y_title: str, points: bool = True,
          height: int = 260) -> alt.LayerChart | alt.FacetChart:
    """One line per column of ``series`` against ``x``; every line has its own colour and marker (so that a
    one-point line still shows), validation series are dashed; the y-axis spans the data, not 0 to max."""
    long = _long(df, x, series)
    names = list(dict.fromkeys(series))
    colours = list(PALETTE) if len(names) <= len(PALETTE) else list(_MORE)  # more lines: 20 distinct colours
    colour = alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=320, columns=2),
                       scale=alt.Scale(domain=names, range=[colours[i % len(colours)] for i in range(len(names))]))
    dash = alt.StrokeDash("val:N", legend=None, scale=alt.Scale(domain=[False, True], range=[[1, 0], [6, 3]]))
    shape = alt.Shape("series:N", legend=None,
                      scale=alt.Scale(domain=names, range=[MARKERS[i % len(MARKERS)] for i in range(len(names))]))
    whole = pd.api.types.is_integer_dtype(df[x])  # epochs, steps: no tick at 1.5
    base = alt.Chart(long.assign(val=long["series"].str.startswith("val "))).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(zero=False, nice=False),
                axis=alt.Axis(tickMinStep=1, format="d") if whole else alt.Axis()),
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)), color=colour,
        tooltip=[alt.Tooltip(f"{x}:Q", title=x_title), alt.Tooltip("series:N", title="line"),
                 alt.Tooltip("value:Q", title=y_title, format=".4~g")])
    layers = [base.mark_line(strokeWidth=2).encode(strokeDash=dash)]
    if points:
        layers.append(base.mark_point(size=55, filled=True).encode(shape=shape))
    return alt.layer(*layers).properties(height=height)


def bars(df: pd.DataFrame, x: str, y: str, *, x_title: str, y_title: str,
         height: int = 220) -> alt.LayerChart | alt.FacetChart:
    """Bars of ``y`` by ``x`` (a category or an epoch), each labelled with its value."""
    base = alt.Chart(df).encode(x=alt.X(f"{x}:O", title=x_title, sort=None), y=alt.Y(f"{y}:Q", title=y_title),
                                tooltip=[x, alt.Tooltip(f"{y}:Q", format=".4~g")])
    return alt.layer(base.mark_bar(color=PALETTE[0]),
                     base.mark_text(dy=-6, fontSize=11).encode(text=alt.Text(f"{y}:Q", format=".3~g"))
                     ).properties(height=height)
