"""The app's charts: Altair (Vega-Lite) charts that ``gr.Plot`` draws as SVG.

Every field has an explicit type, so numbers are never ticked as text; counts start at zero; a series
with few points shows its points as markers (a single evaluation is a dot, not an invisible line);
histograms bin numbers in numeric order. An empty table gives ``None`` (an empty plot box).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

HEIGHT = 200
WIDTH = 300  # gr.Plot does not size an Altair chart to its box: "container" would be 0 px wide there
MARKED_UP_TO = 30  # series with at most this many points show a marker on each
# vega-embed reads embed options from the spec: SVG marks are elements of the page (tests count them)
SVG = {"embedOptions": {"renderer": "svg"}}


def line_chart(df: pd.DataFrame, title: str, y_title: str = "value", width: int = WIDTH) -> alt.Chart | None:
    """Long table (step, value, series) as one line per series; few points get markers."""
    if df is None or df.empty:
        return None
    df = df.astype({"step": "int64", "value": "float64", "series": "str"})
    x = alt.X("step:Q", title="step", axis=alt.Axis(tickMinStep=1, format="d"))
    y = alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g"))
    color = alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom"))
    tooltip = [alt.Tooltip("series:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", format=".4g")]
    base = alt.Chart(df).encode(x=x, y=y, color=color, tooltip=tooltip)
    sizes = df.groupby("series")["step"].transform("size")
    points = (
        alt.Chart(df[sizes <= MARKED_UP_TO])
        .mark_point(filled=True, size=50)
        .encode(x=x, y=y, color=color, tooltip=tooltip)
    )
    return alt.layer(base.mark_line(), points).properties(
        title=title, width=width, height=HEIGHT, usermeta=SVG
    )


def bar_chart(df: pd.DataFrame, x: str, y: str, title: str, width: int = WIDTH) -> alt.Chart | None:
    """Counts per category, from zero, in the table's order."""
    if df is None or df.empty:
        return None
    df = df.astype({x: "str", y: "int64"})
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X(f"{x}:N", title=x, sort=list(df[x]), axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{y}:Q", title=y, scale=alt.Scale(zero=True)),
            tooltip=[alt.Tooltip(f"{x}:N"), alt.Tooltip(f"{y}:Q")],
        )
        .properties(title=title, width=width, height=HEIGHT, usermeta=SVG)
    )


def histogram(
    values: list[float],
    title: str,
    x_title: str,
    y_title: str = "texts",
    width: int = WIDTH,
    whole: bool = True,
) -> alt.Chart | None:
    """A histogram of numbers: about 20 numeric bins, in numeric order, counts from zero; ``whole``
    numbers (token counts) get whole bins."""
    if not values:
        return None
    df = pd.DataFrame({"value": pd.Series(values, dtype="int64" if whole else "float64")})
    bins = alt.Bin(maxbins=20, minstep=1) if whole else alt.Bin(maxbins=20)
    axis = alt.Axis(format="d") if whole else alt.Axis()
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("value:Q", bin=bins, title=x_title, axis=axis),
            y=alt.Y("count():Q", title=y_title, scale=alt.Scale(zero=True)),
            tooltip=[
                alt.Tooltip("value:Q", bin=True, title=x_title),
                alt.Tooltip("count():Q", title=y_title),
            ],
        )
        .properties(title=title, width=width, height=HEIGHT, usermeta=SVG)
    )
