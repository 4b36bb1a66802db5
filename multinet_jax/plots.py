"""What every figure of the package shares, so that a plot cannot mislead or be unreadable:

- a constrained layout, so tick labels, axis labels and legends stay inside the image (legends go outside the
  data: `legend_below`);
- `DPI` 100, at which matplotlib's default 10 pt text is 14 px: readable at 100 % (no text is made smaller);
- one unit per value axis, named in its label (`Unit`); a bounded quantity keeps its whole range (accuracy 0 to 1,
  percent 0 to 100) and every value axis starts at 0 (lower only for a negative value), so a zero is a bar of
  height zero, not an empty panel with a -0.04..0.04 axis;
- each bar's value written at its end: a NaN says "NaN" and a value the run did not report says `MISSING`, as the
  report's tables do; neither is drawn as a silent zero. Numbers are written by `number_text`, which the tables use
  too, so a rounded value never reads as a bound it does not reach;
- labels taken from outside (run folders) are `plain_text`: a `$` in a folder name is not mathtext.

Figures are `matplotlib.figure.Figure` objects, not pyplot's: no global state, nothing to close, any backend.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence
from typing import IO, Any

DPI = 100
MISSING = "—"
# A bar reaching past this share of its axis has its value written inside it, so the text never leaves the axes.
_INSIDE_FROM = 0.8
_HEADROOM = 1.08  # an unbounded axis ends a little above its largest value


@dataclasses.dataclass(frozen=True)
class Unit:
    """What a value axis measures: its label and, for a bounded quantity, the top of its range."""

    label: str
    upper: float | None = None
    integer: bool = False


FRACTION = Unit("fraction (0 to 1)", 1.0)
PERCENT = Unit("percent (0 to 100)", 100.0)
SAMPLES = Unit("samples", integer=True)


def new_figure(width: float, height: float) -> Any:
    """A figure of `width` x `height` inches with the constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(figure: Any, target: str | pathlib.Path | IO[bytes]) -> None:
    """The figure as a PNG at `DPI` (a path's folder is created)."""
    if isinstance(target, (str, pathlib.Path)):
        pathlib.Path(target).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=DPI, format="png")


def integer_ticks(axis: Any) -> None:
    """Whole-number ticks on an x or y `matplotlib.axis.Axis` (layers, turns, counts)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def value_axis(axes: Any, unit: Unit, values: Sequence[float | None], *, horizontal: bool = False) -> None:
    """The value axis of `axes` for `values`: labelled with the unit, from 0 (or the lowest negative value) to the
    unit's top or, above it or without one, a little over the largest value (0 to 1 when nothing is above 0)."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    low = min([0.0, *finite])
    largest = max([0.0, *finite])
    high = unit.upper if unit.upper is not None and largest <= unit.upper else largest * _HEADROOM
    if high <= low:
        high = low + 1.0
    (axes.set_xlim if horizontal else axes.set_ylim)(low, high)
    (axes.set_xlabel if horizontal else axes.set_ylabel)(unit.label)
    if unit.integer:
        integer_ticks(axes.xaxis if horizontal else axes.yaxis)


def number_text(value: float, digits: int, exact: Sequence[float] = ()) -> str:
    """`value` to `digits` significant digits, and more where fewer would print a value it is not but that a reader
    takes as exact: a whole number from -100 to 100 (the bounds 0, 1, 100 of fractions and percentages, -1 of a cosine,
    2 of a Brier error) or one of `exact` (a test's alpha). So 99.996 is "99.996", never "100", 0.0041 samples/s
    never "0", and a p-value 0.0525 never "0.05". NaN is "NaN", as the report's tables and plots write it."""
    if math.isnan(value):
        return "NaN"
    text = f"{value:.{digits}g}"
    while math.isfinite(value) and digits < 17 and float(text) != value and _reads_exact(float(text), exact):
        digits += 1
        text = f"{value:.{digits}g}"
    return text


def _reads_exact(shown: float, exact: Sequence[float]) -> bool:
    return (shown.is_integer() and abs(shown) <= 100) or shown in exact


def plain_text(label: str) -> str:
    """`label` (a run folder, a domain) drawn as written: its `$` escaped, so matplotlib neither renders it as
    mathtext nor fails to parse it."""
    return label.replace("$", r"\$")


def value_text(value: float | None) -> str:
    """A bar's label: the value to 3 significant digits (`number_text`), "NaN", or `MISSING` for a value not reported."""
    return MISSING if value is None else number_text(value, 3)


def bars(axes: Any, positions: Sequence[float], values: Sequence[float | None], *, horizontal: bool = False,
         width: float = 0.8, **style: Any) -> None:
    """Bars at `positions` with their values written at their ends; NaN and None are bars of height 0 labelled
    "NaN" and `MISSING`. Call `value_axis` first: where the text goes depends on the axis range."""
    heights = [value if value is not None and math.isfinite(value) else 0.0 for value in values]
    if horizontal:
        axes.barh(positions, heights, height=width, **style)
    else:
        axes.bar(positions, heights, width=width, **style)
    low, high = axes.get_xlim() if horizontal else axes.get_ylim()
    for position, height, value in zip(positions, heights, values):
        inside = height - low > _INSIDE_FROM * (high - low)
        offset = -3 if inside else 3
        text = dict(color="white" if inside else "black", textcoords="offset points")
        if horizontal:
            axes.annotate(value_text(value), (height, position), xytext=(offset, 0), va="center",
                          ha="right" if inside else "left", **text)
        else:
            axes.annotate(value_text(value), (position, height), xytext=(0, offset), ha="center",
                          va="top" if inside else "bottom", **text)


def legend_below(figure: Any, **kwargs: Any) -> Any:
    """The figure's (or subfigure's) legend under its axes, outside the data."""
    handles, labels = [], []
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    return figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), **kwargs)
