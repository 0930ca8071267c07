"""Reports (MOD-433): one self-contained HTML page per strategy, and one per run.

A **strategy report** (:func:`strategy_report`) shows, for one
:class:`~alphaloop.engines.BacktestResult` on the :class:`~alphaloop.data.bars.Bars`
it was run on:

- a header: strategy id, entry/exit rules, direction, risk and sizing, costs, the data
  it ran on (``data_ref``, period, symbols) and the core metrics, with the annualization
  (``bars.periods_per_year``) stated;
- equity, drawdown and rolling Sharpe (half a year of bars by default) against the
  benchmark (:mod:`alphaloop.evaluation.benchmark`: by default the causal equal-weight
  buy-and-hold of the universe, run through engine A with the strategy's costs), a
  monthly returns heatmap (years × months, compounded);
- a relative panel: beta, alpha with its t, information ratio, tracking error, capture
  ratios and the excess DSR, as the evaluation recorded them (selection window and
  holdout);
- the trade list (an HTML table, at most :data:`MAX_TRADE_ROWS` rows);
- a robustness panel: any mapping (e.g. ``RobustnessReport.model_dump()``); a
  report's parts (holdout, bootstrap interval, cost stress, neighbours, sub-periods,
  the split inside the selection window) as small tables with headings, anything else
  flattened to key/value rows. Every value cell carries its key (``data-key``) and
  exact value (``data-value``).

Given a :class:`Recorded` (what ``alphaloop report --strategy`` passes, from a recorded
run), the page shows the numbers the evaluation recorded instead of the drawn backtest's
own metrics, with a "Source" section naming the run, its holdout and its trial count,
and a line on the charts where the holdout starts. One number, one source: the charts
are the only thing computed for the page.

A **run report** (:func:`run_report`) shows an orchestrator run iteration by
iteration: best score, candidates tried vs passed, failure codes and constraints.

The pages need nothing from the network. The ``write_*`` functions put plotly.js once in
the page's folder (``plotly.min.js``, about 4.5 MB, shared by every report there) and
reference it relatively, so a page is a few hundred kB and opens offline next to it;
``self_contained=True`` (and the string functions) inline it instead, for a page that
travels alone. Each figure is a ``<div class="alphaloop-figure" id="figure-<name>">``
followed by its figure as JSON in ``<script type="application/json" id="figure-<name>-data">`` (plain
lists; NaN written as ``null``), which a small script at the end of the page hands to
``Plotly.newPlot``. The JSON is exactly what is drawn, so tests (and other tools) can
read a chart's data back from the page. The ``*_figure`` functions build each chart
as a plotly figure on their own.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from alphaloop.engines.metrics import CORE_METRICS, return_metrics
from alphaloop.evaluation.benchmark import Benchmark, resolve_benchmark
from alphaloop.fsutil import atomic_write

if TYPE_CHECKING:
    from alphaloop.data.bars import Bars
    from alphaloop.engines.engine_a import BacktestResult

__all__ = [
    "DEFAULT_ROLLING_WINDOW",
    "MAX_TRADE_ROWS",
    "PLOTLY_FILE",
    "RUN_COLUMNS",
    "MetricColumn",
    "Recorded",
    "benchmark_equity",
    "constraints_figure",
    "drawdown_figure",
    "drawdown_series",
    "equity_figure",
    "failure_codes_figure",
    "flatten_mapping",
    "monthly_heatmap_figure",
    "monthly_returns",
    "rolling_sharpe",
    "rolling_sharpe_figure",
    "run_best_score_figure",
    "run_figures",
    "run_report",
    "run_tried_passed_figure",
    "strategy_figures",
    "strategy_report",
    "write_run_report",
    "write_strategy_report",
]

PLOTLY_FILE = "plotly.min.js"
"""plotly.js, written once per reports folder next to the pages that load it."""
DEFAULT_ROLLING_WINDOW = 126
"""Bars in the rolling-Sharpe window of daily bars (about six months)."""


def rolling_window(periods_per_year: float, n_bars: int) -> int:
    """The strategy page's rolling-Sharpe window: half a year of the data's own bars
    (126 daily, 4,380 hourly on a 24/7 market), at most a quarter of the panel so that
    a short intraday panel still draws a curve, and at least 2 bars."""
    half_year = round(periods_per_year * DEFAULT_ROLLING_WINDOW / 252)
    return max(2, min(half_year, n_bars // 4))
MAX_TRADE_ROWS = 500
"""The trade table shows at most this many trades (the first ones, in time order)."""
RUN_COLUMNS: tuple[str, ...] = ("iteration", "best_score", "tried", "passed")
"""Columns :func:`run_report` requires (``failure:<CODE>`` and ``constraints`` optional)."""
FAILURE_PREFIX = "failure:"
MONTHS: tuple[str, ...] = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                           "Oct", "Nov", "Dec")
_TEMPLATE = "plotly_white"
_PERCENT_METRICS = frozenset({"total_return", "cagr", "ann_volatility", "max_drawdown",
                              "win_rate", "exposure"})
_METRIC_LABELS = {
    "total_return": "Total return", "cagr": "CAGR", "ann_volatility": "Annualized volatility",
    "sharpe": "Sharpe (annualized, rf = 0)", "sortino": "Sortino (annualized, target 0)",
    "max_drawdown": "Max drawdown", "calmar": "Calmar", "turnover": "Turnover (per year)",
    "exposure": "Exposure", "n_trades": "Trades", "win_rate": "Win rate",
    "profit_factor": "Profit factor", "effective_history_years": "Effective history (years)",
}


@dataclass(frozen=True)
class MetricColumn:
    """One column of the metrics table: ``key`` (the cells' ``data-column``), a header
    and the values by metric key (a missing key is shown as "—")."""

    key: str
    label: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Recorded:
    """The numbers a recorded evaluation gave, shown instead of the backtest's own.

    ``source``: plain-text key/value rows saying where they come from (run, holdout,
    trial count); ``metrics``: the metrics table's columns (e.g. selection window and
    holdout); ``holdout_start``: the first bar of the holdout, marked on the charts
    (None: no holdout)."""

    source: Sequence[tuple[str, str]]
    metrics: Sequence[MetricColumn]
    holdout_start: pd.Timestamp | None = None


# --------------------------------------------------------------------------- series

def benchmark_equity(benchmark: Benchmark, index: pd.DatetimeIndex) -> pd.Series:
    """The benchmark's equity, starting at 1.0 before its first return."""
    return pd.Series(np.cumprod(1.0 + benchmark.returns), index=index, name="benchmark")


def drawdown_series(equity: pd.Series) -> pd.Series:
    """``equity / running peak - 1`` (<= 0), the starting capital 1.0 counting as a peak
    (as in :mod:`alphaloop.engines.metrics`), floored at -1."""
    values = equity.to_numpy(dtype=np.float64)
    peak = np.maximum(np.maximum.accumulate(values), 1.0) if values.size else values
    dd = np.clip(values / peak - 1.0, -1.0, 0.0)
    return pd.Series(dd, index=equity.index, name="drawdown")


def monthly_returns(returns: pd.Series) -> pd.DataFrame:
    """Compounded return per calendar month (UTC): ``prod(1 + r) - 1`` over the month's bars.

    A frame with one row per year and columns 1..12; NaN where a month has no bars.
    """
    index = pd.DatetimeIndex(returns.index)
    if len(index) == 0:
        return pd.DataFrame(columns=range(1, 13), dtype=float)
    growth = (1.0 + returns.astype(float)).groupby([index.year, index.month]).prod() - 1.0
    table = growth.unstack()
    table = table.reindex(index=range(int(index.year.min()), int(index.year.max()) + 1),
                          columns=range(1, 13))
    table.index.name, table.columns.name = "year", "month"
    return table.astype(float)


def rolling_sharpe(returns: pd.Series, periods_per_year: float,
                   window: int = DEFAULT_ROLLING_WINDOW) -> pd.Series:
    """Annualized Sharpe over the trailing ``window`` bars ending at each bar.

    Same definition as the core metric (``mean / std(ddof=1) · sqrt(ppy)``, rf = 0,
    NaN when the window's returns do not vary, e.g. flat out of the market); NaN for the
    first ``window - 1`` bars.
    """
    if window < 2:
        raise ValueError(f"rolling Sharpe window must be >= 2 bars, got {window}")
    r = returns.to_numpy(dtype=np.float64)
    out = np.full(r.shape[0], np.nan)
    if r.shape[0] >= window:
        windows = np.lib.stride_tricks.sliding_window_view(r, window)
        out[window - 1:] = np.asarray(return_metrics(windows, periods_per_year)["sharpe"])
    return pd.Series(out, index=returns.index, name="rolling_sharpe")


# --------------------------------------------------------------------------- figures

def _dates(index: pd.Index) -> list[str]:
    """Timestamps as plotly date strings (UTC, no offset: plotly.js reads them as is)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    midnight = bool(len(idx)) and bool((idx == idx.normalize()).all())
    return list(idx.strftime("%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M:%S"))


def _values(values: Any) -> list[float | None]:
    """Floats as a plain list, None where not finite (plotly draws a gap)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    return [float(v) if math.isfinite(v) else None for v in arr.tolist()]


def _layout(title: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"title": {"text": title}, "template": _TEMPLATE, "height": 420,
                            "margin": {"l": 60, "r": 30, "t": 60, "b": 50},
                            "hovermode": "x unified",
                            "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom",
                                       "x": 1.0, "xanchor": "right"}}
    base.update(kw)
    return base


def equity_figure(equity: pd.Series, benchmark: pd.Series | None = None, *,
                  name: str = "strategy", benchmark_name: str = "benchmark") -> go.Figure:
    """The strategy's equity curve (trace 0) and, if given, the benchmark's (trace 1)."""
    fig = go.Figure(layout=_layout("Equity vs the benchmark",
                                   yaxis={"title": {"text": "equity (start = 1.0)"}},
                                   xaxis={"title": {"text": "date (UTC)"}}))
    fig.add_trace(go.Scatter(x=_dates(equity.index), y=_values(equity), mode="lines",
                             name=name, line={"width": 1.6}))
    if benchmark is not None:
        fig.add_trace(go.Scatter(x=_dates(benchmark.index), y=_values(benchmark),
                                 mode="lines", name=benchmark_name,
                                 line={"width": 1.2, "dash": "dot"}))
    return fig


def drawdown_figure(drawdown: pd.Series, benchmark: pd.Series | None = None) -> go.Figure:
    """Drawdown of the strategy (trace 0, filled) and of the benchmark (trace 1, if given)."""
    fig = go.Figure(layout=_layout("Drawdown", yaxis={"title": {"text": "drawdown"},
                                                      "tickformat": ".0%"},
                                   xaxis={"title": {"text": "date (UTC)"}}))
    fig.add_trace(go.Scatter(x=_dates(drawdown.index), y=_values(drawdown), mode="lines",
                             name="strategy", fill="tozeroy", line={"width": 1.0}))
    if benchmark is not None:
        fig.add_trace(go.Scatter(x=_dates(benchmark.index), y=_values(benchmark),
                                 mode="lines", name="benchmark",
                                 line={"width": 1.0, "dash": "dot"}))
    return fig


def monthly_heatmap_figure(table: pd.DataFrame) -> go.Figure:
    """Heatmap of :func:`monthly_returns`: ``z[i][j]`` is year ``y[i]``, month ``j + 1``."""
    z = [_values(row) for row in table.to_numpy(dtype=np.float64)]
    finite = table.to_numpy(dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    bound = float(np.abs(finite).max()) if finite.size else 0.01
    fig = go.Figure(layout=_layout("Monthly returns (compounded)", hovermode="closest",
                                   height=max(300, 26 * len(table) + 120),
                                   xaxis={"side": "top", "title": {"text": "month"}},
                                   yaxis={"type": "category", "autorange": "reversed",
                                          "title": {"text": "year"}}))
    fig.add_trace(go.Heatmap(
        z=z, x=list(MONTHS), y=[str(y) for y in table.index],
        zmin=-bound, zmax=bound, zmid=0.0, colorscale="RdYlGn",
        texttemplate="%{z:.1%}", hovertemplate="%{y} %{x}: %{z:.2%}<extra></extra>",
        colorbar={"tickformat": ".0%", "title": {"text": "return"}}, xgap=1, ygap=1))
    return fig


def rolling_sharpe_figure(sharpe: pd.Series, window: int,
                          benchmark: pd.Series | None = None) -> go.Figure:
    """Rolling annualized Sharpe (trace 0) and the benchmark's (trace 1, if given), with
    a zero line."""
    fig = go.Figure(layout=_layout(f"Rolling Sharpe ({window} bars, annualized)",
                                   yaxis={"title": {"text": "Sharpe"}},
                                   xaxis={"title": {"text": "date (UTC)"}}))
    fig.add_trace(go.Scatter(x=_dates(sharpe.index), y=_values(sharpe), mode="lines",
                             name=f"Sharpe, {window} bars", line={"width": 1.2}))
    if benchmark is not None:
        fig.add_trace(go.Scatter(x=_dates(benchmark.index), y=_values(benchmark),
                                 mode="lines", name="benchmark",
                                 line={"width": 1.0, "dash": "dot"}))
    fig.add_hline(y=0.0, line={"color": "#888", "width": 1})
    return fig


def run_best_score_figure(frame: pd.DataFrame) -> go.Figure:
    """Best score per iteration (trace 0) and best so far (trace 1: the frame's
    ``best_score_so_far`` where the run recorded it, else the running maximum, carried
    over iterations that scored nothing)."""
    it = frame["iteration"].tolist()
    best = frame["best_score"].astype(float)
    so_far = (frame["best_score_so_far"].astype(float) if "best_score_so_far" in frame
              else best.cummax().ffill())
    fig = go.Figure(layout=_layout("Best score per iteration",
                                   xaxis={"title": {"text": "iteration"}},
                                   yaxis={"title": {"text": "score_total"}}))
    fig.add_trace(go.Scatter(x=it, y=_values(best), mode="lines+markers",
                             name="best this iteration"))
    fig.add_trace(go.Scatter(x=it, y=_values(so_far), mode="lines",
                             name="best so far", line={"dash": "dot"}))
    return fig


def run_tried_passed_figure(frame: pd.DataFrame) -> go.Figure:
    """Candidates tried (trace 0) and passed (trace 1) per iteration, grouped bars."""
    it = frame["iteration"].tolist()
    fig = go.Figure(layout=_layout("Candidates tried vs passed", barmode="group",
                                   xaxis={"title": {"text": "iteration"}},
                                   yaxis={"title": {"text": "candidates"}}))
    fig.add_trace(go.Bar(x=it, y=_values(frame["tried"]), name="tried"))
    fig.add_trace(go.Bar(x=it, y=_values(frame["passed"]), name="passed"))
    return fig


def failure_codes_figure(frame: pd.DataFrame) -> go.Figure:
    """Failure-code counts per iteration, one stacked-bar trace per ``failure:<CODE>`` column."""
    it = frame["iteration"].tolist()
    fig = go.Figure(layout=_layout("Failure codes over iterations", barmode="stack",
                                   xaxis={"title": {"text": "iteration"}},
                                   yaxis={"title": {"text": "rejected candidates"}}))
    for col in _failure_columns(frame):
        fig.add_trace(go.Bar(x=it, y=_values(frame[col]), name=col[len(FAILURE_PREFIX):]))
    return fig


def constraints_figure(frame: pd.DataFrame) -> go.Figure:
    """Active constraints per iteration (trace 0)."""
    fig = go.Figure(layout=_layout("Constraints over iterations",
                                   xaxis={"title": {"text": "iteration"}},
                                   yaxis={"title": {"text": "active constraints"}}))
    fig.add_trace(go.Scatter(x=frame["iteration"].tolist(), y=_values(frame["constraints"]),
                             mode="lines+markers", name="constraints", line={"shape": "hv"}))
    return fig


LEARNING_COLUMNS = ("rejected_share", "forbidden_share", "best_verified_so_far")


def learning_figure(frame: pd.DataFrame) -> go.Figure:
    """What learning from failure does, per iteration (issue 10): the share of the
    candidates rejected (trace 0) and of the parameter space the rules forbid (trace 1),
    on the left axis; the best score verified by engine B so far (trace 2), right."""
    fig = go.Figure(layout=_layout(
        "Learning over iterations", xaxis={"title": {"text": "iteration"}},
        yaxis={"title": {"text": "share"}, "range": [0, 1.02]},
        yaxis2={"title": {"text": "best verified score"}, "overlaying": "y",
                "side": "right"}))
    x = frame["iteration"].tolist()
    for name, label in (("rejected_share", "rejected share"),
                        ("forbidden_share", "space forbidden by the rules")):
        fig.add_trace(go.Scatter(x=x, y=_values(frame[name]), mode="lines+markers",
                                 name=label))
    fig.add_trace(go.Scatter(x=x, y=_values(frame["best_verified_so_far"]), yaxis="y2",
                             mode="lines+markers", name="best verified score",
                             line={"dash": "dot", "shape": "hv"}))
    return fig


# --------------------------------------------------------------------------- page parts

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 color:#222;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5em;margin:.4em 0}h2{font-size:1.2em;margin:1.6em 0 .4em;
 border-bottom:1px solid #ddd;padding-bottom:.2em}
section{background:#fff;border:1px solid #e4e4e4;border-radius:6px;padding:8px 16px 12px;
 margin:14px 0}
table{border-collapse:collapse;font-size:.86em;margin:.4em 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px;word-break:break-all}
.caption,.note{color:#555;font-size:.88em;margin:.3em 0}.pass{color:#17803d;font-weight:600}
.fail{color:#b42318;font-weight:600}.scroll{max-height:520px;overflow:auto}
.alphaloop-figure{width:100%;min-height:300px}h3{font-size:1em;margin:1em 0 .2em}
"""

_RENDER_JS = """
(function () {
  var nodes = document.querySelectorAll("div.alphaloop-figure");
  for (var i = 0; i < nodes.length; i++) {
    var div = nodes[i];
    try {
      var fig = JSON.parse(document.getElementById(div.id + "-data").textContent);
      Plotly.newPlot(div, fig.data, fig.layout, {responsive: true, displaylogo: false});
    } catch (err) {
      div.classList.add("alphaloop-figure-error");
      div.textContent = "This chart could not be drawn: " + err;
    }
  }
})();
"""


@dataclass(frozen=True)
class _Figure:
    name: str
    figure: go.Figure
    caption: str = ""


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: lists for arrays, None for NaN/inf, strings for timestamps."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, pd.Timestamp | datetime):
        return obj.isoformat()
    return obj


def _figure_json(fig: go.Figure) -> str:
    spec = fig.to_plotly_json()
    text = json.dumps({"data": _jsonable(spec["data"]), "layout": _jsonable(spec["layout"])},
                      allow_nan=False, separators=(",", ":"))
    # inside <script>: no "</script>" and no "<!--" may appear in the text
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def _figure_block(fig: _Figure) -> str:
    fid = f"figure-{fig.name}"
    caption = f'<p class="caption">{fig.caption}</p>' if fig.caption else ""
    return (f'<div class="alphaloop-figure" id="{fid}" data-figure="{fig.name}"></div>\n'
            f'<script type="application/json" id="{fid}-data">{_figure_json(fig.figure)}'
            f"</script>\n{caption}")


def _section(sid: str, title: str, body: str) -> str:
    return (f'<section id="section-{sid}" data-section="{sid}">\n'
            f"<h2>{html.escape(title)}</h2>\n{body}\n</section>")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, *, percent: bool = False) -> str:
    """A value for a table cell."""
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+inf" if v > 0 else "-inf"
        return f"{v:.2%}" if percent else f"{v:.6g}"
    if isinstance(value, pd.Timestamp | datetime):
        if pd.isna(value):
            return "—"
        return pd.Timestamp(value).isoformat()
    return str(value)


def _kv_table(rows: Sequence[tuple[str, Any]], *, cls: str = "kv") -> str:
    """Key/value rows; values are HTML already (escape them first)."""
    body = "\n".join(
        f'<tr><th scope="row">{_esc(k)}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<table class="{cls}" id="{cls}-table">\n{body}\n</table>'


def flatten_mapping(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``[("a.b", 1), ("c", "1; 2")]``.

    Nested mappings become dotted keys; a list of scalars is joined with ``"; "`` (an
    empty one is ``""``); a list holding mappings or lists is flattened item by item
    with its position as a key (``"folds.0.sharpe"``). Keys keep their order.
    """
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            nested = flatten_mapping(value, f"{name}.")
            rows.extend(nested if nested else [(name, "")])
        elif isinstance(value, list | tuple | np.ndarray):
            items = list(value)
            if any(isinstance(v, Mapping | list | tuple | np.ndarray) for v in items):
                rows.extend(flatten_mapping({str(i): v for i, v in enumerate(items)},
                                            f"{name}."))
            else:
                rows.append((name, "; ".join(_fmt(v) for v in items)))
        else:
            rows.append((name, value))
    return rows


def _page(title: str, subtitle: str, sections: Sequence[str],
          plotly_src: str | None = None) -> str:
    """The page; plotly.js inlined, or with ``plotly_src`` loaded from that relative
    file (which the ``write_*`` functions put next to the page)."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if plotly_src is None:
        script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
        offline = "is self-contained (plotly.js is inlined) and needs no network"
    else:
        script = f'<script type="text/javascript" src="{_esc(plotly_src)}"></script>'
        offline = (f"needs no network: it loads plotly.js from {_esc(plotly_src)} in its "
                   "folder (keep the two together)")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="alphaloop.evaluation.reports">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        script,
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="note">{subtitle} Generated {generated} by alphaloop. This page '
        f"{offline}.</p>",
        *sections,
        "</main>",
        f"<script>{_RENDER_JS}</script>",
        "</body>",
        "</html>",
        "",
    ])


# --------------------------------------------------------------------------- strategy report

def _check_inputs(result: BacktestResult, bars: Bars) -> None:
    idx = pd.DatetimeIndex(result.returns.index)
    if len(idx) != bars.n_bars or not idx.equals(bars.index):
        raise ValueError(
            f"result.returns.index ({len(idx)} bars) is not bars.index ({bars.n_bars} bars): "
            "pass the Bars the backtest ran on")
    if not pd.DatetimeIndex(result.equity.index).equals(idx):
        raise ValueError("result.equity.index differs from result.returns.index")
    if result.data_ref and result.data_ref != bars.data_ref:
        raise ValueError(f"result.data_ref {result.data_ref} is not bars.data_ref "
                         f"{bars.data_ref}: pass the Bars the backtest ran on")


def _header(result: BacktestResult, bars: Bars, recorded: Recorded | None = None) -> str:
    spec = result.spec
    costs = result.costs
    risk = {k: v for k, v in spec.risk.model_dump().items() if v is not None}
    rows: list[tuple[str, Any]] = [
        ("strategy_id", f"<code>{_esc(spec.strategy_id)}</code>"),
        ("entry", f"<code>{_esc(spec.entry)}</code>"),
        ("exit", f"<code>{_esc(spec.exit)}</code>"),
        ("direction", _esc(spec.direction)),
        ("family", _esc(spec.family or "—")),
        ("params", _esc(json.dumps(_jsonable(spec.params), sort_keys=True)) if spec.params
         else "—"),
        ("risk", _esc(json.dumps(_jsonable(risk), sort_keys=True)) if risk else "none"),
        ("sizing", _esc(json.dumps(_jsonable(spec.sizing.model_dump()), sort_keys=True))),
        ("costs", f"{_esc(_fmt(costs.fees_bps))} bps commission + "
                  f"{_esc(_fmt(costs.slippage_bps))} bps slippage per side "
                  f"(<code>{_esc(costs.policy_version)}</code>)"),
        ("engine", _esc(result.engine_version)),
        ("data_ref", f"<code>{_esc(result.data_ref)}</code>"),
        ("data", _esc(f"{bars.name or 'bars'}: {bars.n_bars} bars × {bars.n_symbols} "
                      f"symbols ({', '.join(bars.symbols[:20])}"
                      f"{', …' if bars.n_symbols > 20 else ''}), "
                      f"{_fmt_time(bars.index[0]) if bars.n_bars else '—'} .. "
                      f"{_fmt_time(bars.index[-1]) if bars.n_bars else '—'} (UTC)")),
        ("periods_per_year", _esc(_fmt(bars.periods_per_year))),
    ]
    columns = (list(recorded.metrics) if recorded is not None
               else [MetricColumn("value", "value", result.metrics)])
    ppy = _fmt(bars.periods_per_year)
    whose = ("These are the numbers the evaluation recorded (see Source), not recomputed "
             "for this page. " if recorded is not None else "")
    metrics = (
        _metrics_table(columns) +
        f'<p class="caption">{whose}Annualization: {ppy} bars per year '
        f"(<code>periods_per_year</code> of the data); volatility, Sharpe and Sortino scale "
        f"by sqrt({ppy}), CAGR by years = bars / {ppy}. Risk-free rate 0. Returns are net "
        "of the costs above; a signal at a bar's close fills at the next bar's open.</p>")
    source = ([_section("source", "Source of the numbers",
                        _kv_table([(k, _esc(v)) for k, v in recorded.source], cls="source"))]
              if recorded is not None else [])
    return "\n".join([_section("header", "Strategy", _kv_table(rows, cls="spec")), *source,
                      _section("metrics", "Metrics", metrics)])


def _metrics_table(columns: Sequence[MetricColumn]) -> str:
    """Metric rows (core metrics first), one value cell per column; each cell carries its
    exact value in ``data-value`` so that tools can read the page back."""
    keys = {k for c in columns for k in c.values}
    rows = []
    for key in (*[k for k in CORE_METRICS if k in keys], *sorted(keys - set(CORE_METRICS))):
        cells = "".join(_metric_cell(c, key) for c in columns)
        rows.append(f'<tr data-metric="{_esc(key)}"><th scope="row">'
                    f"{_esc(_METRIC_LABELS.get(key, key))}</th><td><code>{_esc(key)}</code>"
                    f"</td>{cells}</tr>")
    head = "".join(f"<th>{_esc(c.label)}</th>" for c in columns)
    return ('<table class="metrics" id="metrics-table"><thead><tr><th>metric</th><th>key</th>'
            f"{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n")


def _exact(value: Any) -> str:
    """The value's repr as plain Python (``0.5``, not ``np.float64(0.5)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _metric_cell(column: MetricColumn, key: str) -> str:
    value = column.values.get(key)
    exact = "" if value is None else f' data-value="{_esc(_exact(value))}"'
    return (f'<td class="num" data-column="{_esc(column.key)}"{exact}>'
            f"{_esc(_fmt(value, percent=key in _PERCENT_METRICS))}</td>")


def _trades_table(trades: pd.DataFrame, limit: int = MAX_TRADE_ROWS) -> str:
    n = len(trades)
    if n == 0:
        return '<p class="note">No trades.</p>'
    shown = trades.iloc[:limit]
    cols = list(shown.columns)
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["#", *cols])
    rows = []
    for pos, row in enumerate(shown.itertuples(index=False)):
        cells = [f'<td class="num">{pos + 1}</td>']
        for col, value in zip(cols, row, strict=True):
            if col in ("entry_time", "exit_time"):
                text = "open at end" if pd.isna(value) else _fmt_time(value)
                cells.append(f"<td>{_esc(text)}</td>")
            elif col in ("pnl", "return"):
                cells.append(f'<td class="num">{_esc(_fmt(value, percent=col == "return"))}'
                             "</td>")
            elif isinstance(value, float | np.floating):
                cells.append(f'<td class="num">{_esc(_fmt(value))}</td>')
            else:
                cells.append(f"<td>{_esc(_fmt(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = (f'<p class="note" id="trades-truncated">Showing the first {limit} of {n} trades; '
            "the complete list is in the backtest's trade frame.</p>" if n > limit else
            f'<p class="note">{n} trade{"s" if n != 1 else ""}.</p>')
    reasons = trades["reason"].value_counts() if "reason" in trades else pd.Series(dtype=int)
    why = ", ".join(f"{_esc(k)}: {int(v)}" for k, v in reasons.items())
    caption = ('<p class="caption">pnl is in units of the starting capital (1.0), after '
               "costs; return is the trade's pnl over its sleeve's equity at entry; "
               "a trade still open at the end is valued at the last close, with no exit "
               "cost (as the equity curve values it). "
               f"Exit reasons: {why or '—'}.</p>")
    return (f'{note}\n<div class="scroll"><table class="trades" id="trades-table"><thead>'
            f"<tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) +
            f"\n</tbody></table></div>\n{caption}")


def _fmt_time(value: Any) -> str:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime(
        "%Y-%m-%d %H:%M")


def _robustness_panel(robustness: Mapping[str, Any] | None) -> str:
    """The summary (every plain value, and whatever has no table of its own, flattened)
    then one small table per part of a robustness report that has the expected shape."""
    if robustness is None:
        return '<p class="note">No robustness results were given for this report.</p>'
    status = ""
    if "passed" in robustness:
        ok = bool(robustness["passed"])
        # the scoring policy's verdict (its gates), not a verdict of the checks below
        status = (f'<p class="{"pass" if ok else "fail"}" id="robustness-status">'
                  f'Policy verdict: {"passed every gate" if ok else "failed a gate"} (the '
                  'checks below are evidence; the gates decide)</p>')
    parts: list[str] = []
    rest: dict[str, Any] = {}
    for key, value in robustness.items():
        render = _PARTS.get(key)
        html_part = render(key, value) if render is not None and value is not None else None
        if html_part is None:
            rest[key] = value
        else:
            parts.append(html_part)
    rows = flatten_mapping(rest)
    body = "\n".join(
        f'<tr data-key="{_esc(k)}"><th scope="row"><code>{_esc(k)}</code></th>'
        f"{_robustness_cell(v)}</tr>" for k, v in rows)
    summary = ("<h3>Summary</h3>" if parts else "") + (
        f'<table class="robustness" id="robustness-table"><thead><tr><th>key'
        f"</th><th>value</th></tr></thead><tbody>\n{body}\n</tbody></table>")
    return status + summary + "".join(parts)


def _robustness_cell(value: Any, key: str | None = None, *, percent: bool = False) -> str:
    """A value cell; a number also carries its exact value in ``data-value``, and with
    ``key`` the cell names its flattened key in ``data-key``."""
    attr = f' data-key="{_esc(key)}"' if key is not None else ""
    if isinstance(value, float | int | np.number) and not isinstance(value, bool | np.bool_):
        return (f'<td class="num"{attr} data-value="{_esc(_exact(value))}">'
                f"{_esc(_fmt(value, percent=percent))}</td>")
    return f'<td class=""{attr}>{_esc(_fmt(value))}</td>'


def _grid(tid: str, title: str, heads: Sequence[str], rows: Sequence[Sequence[str]],
          note: str = "") -> str:
    """A headed table of cells already rendered (``<td>``)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in heads)
    body = "\n".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    extra = f'<p class="note">{note}</p>' if note else ""
    return (f"<h3>{_esc(title)}</h3>{extra}<table class=\"robustness-part\" "
            f'id="robustness-{tid}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n'
            "</tbody></table>")


def _metric_rows(key: str, metrics: Mapping[str, Any], columns: Sequence[tuple[str, Any]]
                 ) -> list[list[str]]:
    """One row per metric: its label, then one cell per (key prefix, metrics) column."""
    rows = []
    for m in metrics:
        cells = [f"<th scope=\"row\">{_esc(_METRIC_LABELS.get(m, m))}</th>"]
        cells += [_robustness_cell(vals.get(m), f"{prefix}.{m}", percent=m in _PERCENT_METRICS)
                  for prefix, vals in columns]
        rows.append(cells)
    return rows


def _holdout_part(key: str, value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return None
    return _grid("holdout", "Holdout (untouched by the selection)", ["metric", "holdout"],
                 _metric_rows(key, value, [(key, value)]))


def _ci_part(key: str, value: Any) -> str | None:
    names = ("estimate", "lower", "upper", "level", "block_size")
    if not isinstance(value, Mapping) or any(n not in value for n in names):
        return None
    cells = [_robustness_cell(value[n], f"{key}.{n}") for n in names]
    return _grid("bootstrap", "Bootstrap interval of the Sharpe ratio",
                 ["estimate", "lower", "upper", "level", "block size"], [cells],
                 "Stationary bootstrap of the selection window's returns.")


def _cost_part(key: str, value: Any) -> str | None:
    levels = value.get("levels") if isinstance(value, Mapping) else None
    if not isinstance(levels, list) or not all(isinstance(v, Mapping) for v in levels):
        return None
    shown = ("sharpe", "total_return", "cagr", "max_drawdown")
    rows = []
    for i, lvl in enumerate(levels):
        k = f"{key}.levels.{i}"
        metrics = lvl.get("metrics") or {}
        rows.append([_robustness_cell(lvl.get("multiplier"), f"{k}.multiplier"),
                     _robustness_cell(lvl.get("fees_bps"), f"{k}.fees_bps"),
                     _robustness_cell(lvl.get("slippage_bps"), f"{k}.slippage_bps")]
                    + [_robustness_cell(metrics.get(m), f"{k}.metrics.{m}",
                                        percent=m in _PERCENT_METRICS) for m in shown])
    verdict = ("survives" if value.get("survives") else "does not survive")
    note = (f"Costs multiplied; the strategy {verdict} {_fmt(value.get('survive_multiplier'))}"
            f"× costs (Sharpe there {_fmt(value.get('sharpe_at_survive'))}).")
    return _grid("cost-stress", "Cost stress", ["× costs", "fees bps", "slippage bps",
                                                 "Sharpe", "total return", "CAGR",
                                                 "max drawdown"], rows, _esc(note))


def _neighbours_part(key: str, value: Any) -> str | None:
    nbrs = value.get("neighbours") if isinstance(value, Mapping) else None
    if not isinstance(nbrs, list) or not all(isinstance(v, Mapping) for v in nbrs):
        return None
    rows = [[f"<td>{_esc(n.get('changed'))} {'+' if n.get('direction') == 1 else '−'}1 "
             "step</td>",
             f"<td>{_esc(' '.join(f'{a}={b}' for a, b in (n.get('params') or {}).items()))}"
             "</td>", _robustness_cell(n.get("value"), f"{key}.neighbours.{i}.value")]
            for i, n in enumerate(nbrs)]
    stable = "stable" if value.get("stable") else "not stable"
    why = f" ({value.get('reason')})" if value.get("reason") else ""
    note = (f"{value.get('metric', 'metric')} at the centre {_fmt(value.get('centre_value'))}; "
            f"{_share(value.get('fraction_ok'))} of the neighbours hold at least "
            f"{_fmt(value.get('threshold'))}× of it: {stable}{why}.")
    return _grid("neighbours", "Parameter neighbours (±1 grid step)",
                 ["changed", "params", str(value.get("metric", "value"))], rows, _esc(note))


def _share(value: Any) -> str:
    """A fraction as a percentage (0.75 -> '75%'); as given when it is no number."""
    return f"{value:.0%}" if isinstance(value, (int, float)) and math.isfinite(value) \
        else _fmt(value)


def _subperiods_part(key: str, value: Any) -> str | None:
    parts = value.get("parts") if isinstance(value, Mapping) else None
    if not isinstance(parts, list) or not all(isinstance(v, Mapping) for v in parts):
        return None
    rows = []
    for i, part in enumerate(parts):
        w = part.get("window") or {}
        k = f"{key}.parts.{i}"
        rows.append([f"<td>{i + 1}</td>", f"<td>{_esc(_day(w.get('first')))}</td>",
                     f"<td>{_esc(_day(w.get('last')))}</td>",
                     _robustness_cell((w.get("stop") or 0) - (w.get("start") or 0),
                                      f"{k}.bars"),
                     _robustness_cell(part.get("sharpe"), f"{k}.sharpe"),
                     _robustness_cell(part.get("total_return"), f"{k}.total_return",
                                      percent=True)])
    agree = "same sign in every part" if value.get("sign_agreement") else "signs differ"
    note = f"Sharpe of each contiguous part of the selection window: {agree}; min/max " \
           f"ratio {_fmt(value.get('ratio'))}."
    return _grid("subperiods", "Sub-periods", ["part", "first", "last", "bars", "Sharpe",
                                               "total return"], rows, _esc(note))


def _split_part(key: str, value: Any) -> str | None:
    names = ("is_metrics", "oos_metrics", "in_sample", "out_of_sample")
    if not isinstance(value, Mapping) or any(n not in value for n in names):
        return None
    ins, oos = value["in_sample"] or {}, value["out_of_sample"] or {}
    rows = _metric_rows(key, value["is_metrics"], [(f"{key}.is_metrics", value["is_metrics"]),
                                                   (f"{key}.oos_metrics", value["oos_metrics"])])
    note = (f"Both parts lie inside the selection window (the selection saw them): "
            f"{_esc(_day(ins.get('first')))} .. {_esc(_day(ins.get('last')))} and "
            f"{_esc(_day(oos.get('first')))} .. {_esc(_day(oos.get('last')))}; decay ratio "
            f"{_esc(_fmt(value.get('decay_ratio')))}.")
    return _grid("selection-split", "Split inside the selection window",
                 ["metric", "first part", "second part"], rows, note)


def _day(value: Any) -> str:
    """An ISO timestamp as its date (``—`` when there is none)."""
    return str(value)[:10] if value else "—"


# a robustness report's parts (old recorded runs call the inner split out_of_sample)
_PARTS: dict[str, Any] = {
    "holdout_metrics": _holdout_part, "sharpe_ci": _ci_part, "cost_stress": _cost_part,
    "stability": _neighbours_part, "subperiods": _subperiods_part,
    "selection_split": _split_part, "out_of_sample": _split_part,
}


def strategy_figures(result: BacktestResult, bars: Bars, *,
                     window: int | None = None,
                     holdout_start: pd.Timestamp | None = None,
                     benchmark: Benchmark | None = None) -> dict[str, go.Figure]:
    """The strategy report's charts by name: ``equity``, ``drawdown``, ``monthly``,
    ``rolling_sharpe``, each time chart with the ``benchmark`` (default: the equal-weight
    buy-and-hold with the result's costs); with ``holdout_start``, the time charts mark
    where it begins. ``window``: the rolling Sharpe's, in bars (default
    :func:`rolling_window`)."""
    _check_inputs(result, bars)
    bench = benchmark or resolve_benchmark(None, bars, result.costs)
    eq = benchmark_equity(bench, bars.index)
    ppy = bars.periods_per_year
    window = window or rolling_window(ppy, bars.n_bars)
    figs = {
        "equity": equity_figure(result.equity, eq, benchmark_name=bench.label),
        "drawdown": drawdown_figure(drawdown_series(result.equity), drawdown_series(eq)),
        "monthly": monthly_heatmap_figure(monthly_returns(result.returns)),
        "rolling_sharpe": rolling_sharpe_figure(
            rolling_sharpe(result.returns, ppy, window), window,
            rolling_sharpe(pd.Series(bench.returns, index=bars.index), ppy, window)),
    }
    if holdout_start is not None:
        x = _dates(pd.DatetimeIndex([holdout_start]))[0]
        for name in ("equity", "drawdown", "rolling_sharpe"):
            _mark_holdout(figs[name], x)
    return figs


def _mark_holdout(fig: go.Figure, x: str) -> None:
    # a layout shape, not a trace: the traces stay exactly the drawn series
    fig.add_shape(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="paper",
                  line={"color": "#b42318", "width": 1, "dash": "dash"})
    fig.add_annotation(x=x, y=1, xref="x", yref="paper", text="holdout →", showarrow=False,
                       xanchor="left", yanchor="bottom", font={"color": "#b42318"})


def strategy_report(result: BacktestResult, bars: Bars, *,
                    robustness: Mapping[str, Any] | None = None, title: str | None = None,
                    window: int | None = None,
                    recorded: Recorded | None = None, plotly_src: str | None = None,
                    benchmark: Benchmark | None = None) -> str:
    """A self-contained HTML page for one backtest ``result`` on the ``bars`` it ran on
    (with ``plotly_src``, one that loads plotly.js from that relative file), drawn
    against ``benchmark`` (default: the equal-weight buy-and-hold of ``bars``).

    ``robustness`` is any mapping (for a pydantic model, pass ``model.model_dump()``;
    an object with ``model_dump`` is accepted too) shown as key/value rows. ``window``
    is the rolling-Sharpe window in bars (default :func:`rolling_window`).
    ``recorded``: the numbers an evaluation recorded, shown instead of
    ``result.metrics`` (see :class:`Recorded`). Raises ``ValueError`` when ``bars`` is
    not the panel the result was computed on.
    """
    if robustness is not None and not isinstance(robustness, Mapping):
        dump = getattr(robustness, "model_dump", None)
        if not callable(dump):
            raise TypeError(f"robustness must be a mapping, got {type(robustness).__name__}")
        robustness = dump()
    start = recorded.holdout_start if recorded is not None else None
    bench = benchmark or resolve_benchmark(None, bars, result.costs)
    window = window or rolling_window(bars.periods_per_year, bars.n_bars)
    figs = strategy_figures(result, bars, window=window, holdout_start=start,
                            benchmark=bench)
    ppy = _fmt(bars.periods_per_year)
    parts = [
        _Figure("equity", figs["equity"],
                f"Strategy equity (net of costs) against the benchmark, {_esc(bench.label)}. "
                "The equal-weight benchmark is a strategy run through the same engine with "
                "the same costs: always long every tradable symbol, capital split equally "
                "among the symbols tradable at each bar, a symbol listed late entering at the "
                "open after its first bar, each sleeve held between universe changes."),
        _Figure("drawdown", figs["drawdown"],
                "Equity over its running peak, minus 1 (the starting capital counts as a "
                "peak); the dotted line is the benchmark's."),
        _Figure("monthly", figs["monthly"],
                "Compounded return of each calendar month (UTC), prod(1 + r) − 1 over the "
                "month's bars; blank where the data has no bars."),
        _Figure("rolling_sharpe", figs["rolling_sharpe"],
                f"Sharpe of the trailing {window} bars, mean / std (ddof = 1) × sqrt({ppy}), "
                "risk-free 0; gaps where the window is incomplete or its returns do not vary "
                "(flat, out of the market). The dotted line is the benchmark's."),
    ]
    titles = {"equity": "Equity vs the benchmark", "drawdown": "Drawdown",
              "monthly": "Monthly returns", "rolling_sharpe": "Rolling Sharpe"}
    sections = [_header(result, bars, recorded)]
    sections += [_section(p.name, titles[p.name], _figure_block(p)) for p in parts]
    sections.append(_section("relative", "Against the benchmark",
                             _relative_panel(robustness, bench)))
    span = ("" if recorded is None else
            '<p class="note" id="trades-span">Every trade over all the bars of the charts, '
            "holdout included: the Metrics table's trade count is the evaluation's own "
            "window's.</p>\n")
    sections.append(_section("trades", "Trades", span + _trades_table(result.trades)))
    sections.append(_section("robustness", "Robustness", _robustness_panel(robustness)))
    spec = result.spec
    page_title = title or f"Strategy report — {spec.name or spec.family or 'strategy'} " \
                          f"{spec.strategy_id[:12]}"
    return _page(page_title, f"Strategy <code>{_esc(spec.strategy_id)}</code> on "
                             f"<code>{_esc(result.data_ref)}</code>.", sections, plotly_src)


_RELATIVE_ROWS: tuple[tuple[str, str, bool], ...] = (
    ("beta", "Beta (OLS on the benchmark)", False),
    ("alpha_ann", "Alpha (a year)", True),
    ("alpha_t", "Alpha t-statistic", False),
    ("information_ratio", "Information ratio", False),
    ("tracking_error", "Tracking error", True),
    ("up_capture", "Up capture", False),
    ("down_capture", "Down capture", False),
    ("excess_psr", "PSR of the excess returns", False),
    ("excess_dsr", "DSR of the excess returns (all trials)", False),
    ("benchmark_sharpe", "Benchmark Sharpe", False),
    ("benchmark_cagr", "Benchmark CAGR", True),
    ("benchmark_max_drawdown", "Benchmark max drawdown", True),
)


def _relative_panel(robustness: Mapping[str, Any] | None, bench: Benchmark) -> str:
    """Beta, alpha with its t, IR, capture ratios and excess DSR as the evaluation
    recorded them: the selection window and, when there is one, the holdout."""
    if robustness is None or robustness.get("beta", robustness.get("excess_dsr")) is None:
        return (f'<p class="note">Charted against {_esc(bench.label)}; no recorded '
                "evaluation measured this strategy against a benchmark.</p>")
    sel = {**robustness, **{f"benchmark_{k}": v for k, v in
                            (robustness.get("benchmark_metrics") or {}).items()}}
    columns: list[tuple[str, Mapping[str, Any]]] = [("selection", sel)]
    held = robustness.get("holdout_relative")
    if isinstance(held, Mapping):
        columns.append(("holdout", held))
    rows = [[f'<th scope="row">{_esc(label)}</th>',
             *(_robustness_cell(vals.get(key), f"{name}.{key}", percent=pct)
               for name, vals in columns)] for key, label, pct in _RELATIVE_ROWS]
    label = robustness.get("benchmark_label") or bench.label
    return _grid("relative", f"Against {label}", ["", *(n for n, _ in columns)], rows,
                 note="Excess returns are the strategy's minus the benchmark's, bar by bar; "
                      "on the holdout the excess PSR is not deflated (one read, no "
                      "selection there).")


def factor_report(report: Any, *, title: str | None = None,
                  plotly_src: str | None = None) -> str:
    """A page for one factor (:class:`alphaloop.evaluation.factors.FactorReport`): its
    numbers, the per-bar IC and rank IC (with a rolling mean), the rank IC decay over
    horizons and the mean forward return of each score quantile."""
    r = report
    rows = [("expression", f"<code>{_esc(r.expression)}</code>"),
            ("horizon (bars)", _esc(r.horizon)), ("bars with an IC", _esc(r.n_bars)),
            ("IC mean (t)", _esc(f"{_fmt(r.ic_mean)} ({_fmt(r.ic_t)})")),
            ("rank IC mean (t)", _esc(f"{_fmt(r.rank_ic_mean)} ({_fmt(r.rank_ic_t)})")),
            ("ICIR / rank ICIR", _esc(f"{_fmt(r.icir)} / {_fmt(r.rank_icir)}")),
            ("Newey-West lags", _esc(r.lags)),
            ("top - bottom quantile", _esc(_fmt(r.spread))),
            ("turnover top / bottom", _esc(f"{_fmt(r.turnover_top)} / "
                                           f"{_fmt(r.turnover_bottom)}"))]
    x = list(range(len(r.ic)))
    ic = go.Figure(layout=_layout("IC per bar", xaxis={"title": {"text": "bar"}},
                                  yaxis={"title": {"text": "correlation"}}))
    for name, series in (("IC", r.ic), ("rank IC", r.rank_ic)):
        ic.add_trace(go.Scatter(x=x, y=_values(series), mode="lines", name=name,
                                opacity=0.5))
    rolling = pd.Series(_values(r.rank_ic), dtype=float).rolling(63, min_periods=20).mean()
    ic.add_trace(go.Scatter(x=x, y=_values(rolling), mode="lines",
                            name="rank IC, 63-bar mean"))
    decay = go.Figure(layout=_layout("Rank IC by horizon", xaxis={"title": {"text": "bars"}},
                                     yaxis={"title": {"text": "mean rank IC"}}))
    decay.add_trace(go.Bar(x=[str(h) for h in r.decay], y=_values(list(r.decay.values()))))
    quant = go.Figure(layout=_layout("Mean forward return by score quantile",
                                     xaxis={"title": {"text": "quantile (1 = lowest)"}},
                                     yaxis={"title": {"text": f"{r.horizon}-bar return"}}))
    quant.add_trace(go.Bar(x=[str(q + 1) for q in range(len(r.quantile_returns))],
                           y=_values(r.quantile_returns)))
    sections = [_section("factor", "Factor", _kv_table(rows)),
                _section("ic", "IC", _figure_block(_Figure("ic", ic, (
                    "Per decision bar: the correlation across symbols of the score with the "
                    "forward return from the next open, H bars on.")))),
                _section("decay", "Decay", _figure_block(_Figure("decay", decay))),
                _section("quantiles", "Quantiles", _figure_block(_Figure("quantiles", quant)))]
    return _page(title or f"factor {r.expression}", "Cross-sectional factor evaluation.",
                 sections, plotly_src)


def write_factor_report(path: str | os.PathLike[str], report: Any, *,
                        self_contained: bool = False) -> Path:
    """Write :func:`factor_report` atomically, plotly.js beside it unless inlined."""
    src = None if self_contained else _shared_plotly(Path(path).parent)
    return _atomic_write(Path(path), factor_report(report, plotly_src=src))


def write_strategy_report(path: str | os.PathLike[str], result: BacktestResult, bars: Bars,
                          *, robustness: Mapping[str, Any] | None = None,
                          title: str | None = None, window: int | None = None,
                          recorded: Recorded | None = None,
                          self_contained: bool = False,
                          benchmark: Benchmark | None = None) -> Path:
    """Write :func:`strategy_report` to ``path`` atomically (temporary file, then rename),
    with plotly.js in :data:`PLOTLY_FILE` next to it (``self_contained``: inlined)."""
    src = None if self_contained else _shared_plotly(Path(path).parent)
    text = strategy_report(result, bars, robustness=robustness, title=title, window=window,
                           recorded=recorded, plotly_src=src, benchmark=benchmark)
    return _atomic_write(Path(path), text)


# --------------------------------------------------------------------------- run report

def _failure_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if isinstance(c, str) and c.startswith(FAILURE_PREFIX)]


def _check_run_frame(iterations: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(iterations, pd.DataFrame):
        raise TypeError(f"iterations must be a pandas DataFrame, got "
                        f"{type(iterations).__name__}")
    missing = [c for c in RUN_COLUMNS if c not in iterations.columns]
    if missing:
        raise ValueError(f"iterations is missing column(s) {missing}; expected "
                         f"{list(RUN_COLUMNS)} plus optional 'failure:<CODE>' and "
                         "'constraints' columns")
    if iterations.empty:
        raise ValueError("iterations has no rows")
    numeric = [c for c in (*RUN_COLUMNS, *_failure_columns(iterations), "constraints")
               if c in iterations.columns]
    for col in numeric:
        if not pd.api.types.is_numeric_dtype(iterations[col]):
            raise ValueError(f"iterations[{col!r}] must be numeric, got {iterations[col].dtype}")
    if iterations["iteration"].duplicated().any():
        dup = iterations.loc[iterations["iteration"].duplicated(), "iteration"].tolist()
        raise ValueError(f"iterations['iteration'] has duplicates: {dup[:5]}")
    return iterations.sort_values("iteration", kind="stable").reset_index(drop=True)


def run_figures(iterations: pd.DataFrame) -> dict[str, go.Figure]:
    """The run report's charts by name: ``best_score``, ``tried_passed`` and, when their
    columns exist, ``failure_codes`` and ``constraints``."""
    frame = _check_run_frame(iterations)
    figs = {"best_score": run_best_score_figure(frame),
            "tried_passed": run_tried_passed_figure(frame)}
    if _failure_columns(frame):
        figs["failure_codes"] = failure_codes_figure(frame)
    if "constraints" in frame.columns:
        figs["constraints"] = constraints_figure(frame)
    if all(c in frame.columns for c in LEARNING_COLUMNS):
        figs["learning"] = learning_figure(frame)
    return figs


def run_report(iterations: pd.DataFrame, *, title: str = "alphaloop run report",
               plotly_src: str | None = None, survivors: pd.DataFrame | None = None,
               passed_label: str = "passed the gates") -> str:
    """A self-contained HTML page for one research run, iteration by iteration.

    ``iterations`` has one row per iteration and these columns:

    ========================  ========================================================
    ``iteration``             iteration number (unique; rows are sorted by it)
    ``best_score``            best ``score_total`` among the iteration's candidates,
                              rejected ones included (NaN when none was scored)
    ``best_score_so_far``     optional: the best score up to the iteration as the run
                              recorded it (default: the running maximum of
                              ``best_score``, carried over iterations without one)
    ``tried``                 candidates of the iteration: backtested, or reused from
                              earlier runs on the same data
    ``passed``                candidates that passed the gates (``passed_label`` says
                              which: a research loop counts its survivors here)
    ``failure:<CODE>``        optional, one per failure code (``failure:TOO_FEW_TRADES``):
                              rejected candidates with that code in the iteration (a
                              loop: the primary code; evaluate: every failed gate)
    ``constraints``           optional: constraints in force in the iteration
    ``rejected_share``        optional, all three: the learning chart (share of
    ``forbidden_share``       candidates rejected, share of the space the rules forbid,
    ``best_verified_so_far``  best score engine B verified so far)
    ========================  ========================================================

    Other columns are shown in the table only. Raises ``ValueError`` naming a missing,
    non-numeric or duplicated column. ``survivors`` (one row per strategy that passed
    every gate, its id as the index) is listed as given, after the summary.
    """
    frame = _check_run_frame(iterations)
    figs = run_figures(frame)
    fails = _failure_columns(frame)
    tried, passed = _count(frame["tried"].sum()), _count(frame["passed"].sum())
    best = frame["best_score"].astype(float)
    summary = _kv_table([
        ("iterations", _esc(len(frame))),
        ("candidates tried", _esc(_fmt(tried) + " (backtested by this run, or reused from "
                                  "earlier runs on the same data)")),
        (f"candidates that {passed_label}", _esc(_fmt(passed))),
        *([("beat the benchmark significantly",
            _esc(_fmt(_count(frame["beat_benchmark"].sum()))))]
          if "beat_benchmark" in frame.columns else []),
        ("pass rate", _esc(_fmt(passed / tried, percent=True) if tried else "—")),
        ("best score of any candidate",
         _esc(_fmt(float(best.max())) if best.notna().any() else "—")),
        ("best at iteration", _esc(frame["iteration"].iloc[int(np.nanargmax(best.to_numpy()))])
         if best.notna().any() else "—"),
    ], cls="summary")
    sections = [
        _section("summary", "Run", summary),
        *([_section("survivors", "Survivors", _frame_table(
            survivors.reset_index(), MAX_TRADE_ROWS, "survivors-table")
            if len(survivors) else '<p class="note">No strategy passed every gate.</p>')]
          if survivors is not None else []),
        _section("best_score", "Best score per iteration", _figure_block(_Figure(
            "best_score", figs["best_score"],
            "The best score_total of each iteration's candidates (markers; gaps where none "
            "was scored) and the best so far (dotted)."))),
        _section("tried_passed", "Candidates tried vs passed", _figure_block(_Figure(
            "tried_passed", figs["tried_passed"],
            f"Candidates tried (backtested, or reused from earlier runs on the same "
            f"data) and candidates that {_esc(passed_label)}, per iteration."))),
        _section("failure_codes", "Failure codes over iterations", _figure_block(_Figure(
            "failure_codes", figs["failure_codes"],
            "Failure codes of the rejected candidates (columns failure:&lt;CODE&gt;), "
            "stacked: a research loop counts each candidate's primary code (one each); an "
            "<code>evaluate</code> run every gate it failed (one candidate can add to "
            "several)."))
            if fails else '<p class="note">No failure:&lt;CODE&gt; columns were given.</p>'),
        _section("constraints", "Constraints over iterations", _figure_block(_Figure(
            "constraints", figs["constraints"],
            "Constraints in force per iteration (learned rules the samplers obey; in a "
            "loop run, the set in force after the iteration)."))
            if "constraints" in figs else
            '<p class="note">No constraints column was given.</p>'),
        *([_section("learning", "Learning from failure", _figure_block(_Figure(
            "learning", figs["learning"],
            "Per iteration: the share of candidates rejected, the share of the families' "
            "parameter space the rules in force forbid (Monte Carlo over the samplers' "
            "prior) and the best score engine B verified so far.")))]
          if "learning" in figs else []),
        _section("iterations", "Iterations", _frame_table(frame, MAX_TRADE_ROWS)),
    ]
    return _page(title, f"{len(frame)} iterations.", sections, plotly_src)


def _count(value: Any) -> int | float:
    """A sum of counts, as an int when it is a whole number."""
    v = float(value)
    return int(v) if v.is_integer() else v


def write_run_report(path: str | os.PathLike[str], iterations: pd.DataFrame, *,
                     title: str = "alphaloop run report", self_contained: bool = False,
                     survivors: pd.DataFrame | None = None,
                     passed_label: str = "passed the gates") -> Path:
    """Write :func:`run_report` to ``path`` atomically (temporary file, then rename),
    with plotly.js in :data:`PLOTLY_FILE` next to it (``self_contained``: inlined)."""
    src = None if self_contained else _shared_plotly(Path(path).parent)
    return _atomic_write(Path(path), run_report(iterations, title=title, plotly_src=src,
                                                survivors=survivors,
                                                passed_label=passed_label))


def _frame_table(frame: pd.DataFrame, limit: int, table_id: str = "iterations-table") -> str:
    cols = list(frame.columns)
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    rows = []
    for row in frame.iloc[:limit].itertuples(index=False):
        cells = "".join(
            f'<td class="num">{_esc(_fmt(v))}</td>' if isinstance(v, int | float | np.number)
            else f"<td>{_esc(_fmt(v))}</td>" for v in row)
        rows.append(f"<tr>{cells}</tr>")
    note = (f'<p class="note">Showing the first {limit} of {len(frame)} rows.</p>'
            if len(frame) > limit else "")
    return (f'{note}<div class="scroll"><table class="iterations" id="{table_id}"><thead><tr>{head}</tr>'
            "</thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>")


# --------------------------------------------------------------------------- io

def _shared_plotly(folder: Path) -> str:
    """Put plotly.js in ``folder`` unless the same file is there already; its name,
    relative to the pages in that folder."""
    target = folder / PLOTLY_FILE
    text = get_plotlyjs()
    try:
        same = target.stat().st_size == len(text.encode("utf-8")) and \
            target.read_text(encoding="utf-8") == text
    except OSError:
        same = False
    if not same:  # missing, or another plotly version's: pages here use this one
        _atomic_write(target, text)
    return PLOTLY_FILE


def _atomic_write(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file in the same folder and
    ``os.replace``: readers see the old file or the new one, never half of one."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data), mode=0o644)  # meant to be read
