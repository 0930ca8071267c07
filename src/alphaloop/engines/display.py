"""Notebook summaries (``_repr_html_``) of the engines' results: the strategy, its id,
the data and the costs, then the core metrics, formatted. Plain HTML, no scripts."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

_PERCENT = frozenset({"total_return", "cagr", "ann_volatility", "max_drawdown", "exposure",
                      "win_rate"})
_FIRST = ("sharpe", "total_return", "cagr", "max_drawdown", "n_trades")


def format_metric(key: str, value: Any) -> str:
    """``12.34%`` for returns and rates, an integer count of trades, else 3 decimals."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a" if value is None or math.isnan(value) else str(value)
    if key == "n_trades":
        return f"{int(value)}"
    if key in _PERCENT:
        return f"{100 * float(value):.2f}%"
    return f"{float(value):.3f}"


def result_html(title: str, header: Sequence[tuple[str, str]],
                metrics: Mapping[str, Any]) -> str:
    """A heading, key facts and the metrics (the main ones first) as two small tables."""
    order = [k for k in _FIRST if k in metrics] + [k for k in metrics if k not in _FIRST]
    facts = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                    f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                    for k, v in header)
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:right'>{format_metric(k, metrics[k])}</td></tr>"
                   for k in order)
    return (f"<div><strong>{html.escape(title)}</strong><table>{facts}</table>"
            f"<table><thead><tr><th>metric</th><th>value</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


def spec_facts(spec: Any) -> list[tuple[str, str]]:
    """The rows every result starts with: id, family and params, entry, exit."""
    params = " ".join(f"{k}={v}" for k, v in (spec.params or {}).items())
    rows = [("strategy_id", str(spec.strategy_id)[:16])]
    if spec.family:
        rows.append(("family", f"{spec.family} {params}".strip()))
    pf = spec.portfolio
    if pf.cross_sectional:  # a ranked book: its score and books say what it does
        books = " ".join(f"{k} {v:g}" for k, v in (("long", pf.long), ("short", pf.short),
                                                  ("buffer", pf.buffer)) if v)
        return [*rows, ("score", pf.score), ("books", f"{books}, {pf.weighting} weights, "
                f"gross {pf.gross:g} net {pf.net_exposure:g}, every "
                f"{pf.rebalance_every} bar(s)"), ("entry", spec.entry), ("exit", spec.exit)]
    return [*rows, ("entry", spec.entry), ("exit", spec.exit), ("direction", spec.direction)]
