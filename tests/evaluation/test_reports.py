"""Reports (MOD-433): the strategy page on real data (S&P 500, SMA 10/50) and the run page
on a synthetic iteration frame. The pages are parsed back and every chart's embedded data
is checked against numbers computed here; then each page is rendered in a real headless
Chromium (installed by the ``chromium`` fixture when missing) to prove plotly.js ran and
drew every chart."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from alphaloop.data import load_bars
from alphaloop.data.bars import Bars
from alphaloop.engines import BacktestResult, backtest
from alphaloop.engines.metrics import CORE_METRICS
from alphaloop.evaluation import reports
from alphaloop.evaluation.reports import (
    MAX_TRADE_ROWS,
    MetricColumn,
    Recorded,
    flatten_mapping,
    learning_figure,
    run_report,
    strategy_report,
    write_run_report,
    write_strategy_report,
)
from alphaloop.strategy.spec import StrategySpec

STRATEGY_SECTIONS = ("header", "metrics", "equity", "drawdown", "monthly", "rolling_sharpe",
                     "relative", "trades", "robustness")
STRATEGY_FIGURES = ("equity", "drawdown", "monthly", "rolling_sharpe")
RUN_FIGURES = ("best_score", "tried_passed", "failure_codes", "constraints")
ROBUSTNESS = {
    "psr": 0.973, "dsr": 0.41, "n_trials": 174, "pbo": 0.38, "passed": False,
    "reasons": ["DSR 0.41 < 0.95", "OOS_DECAY"], "score_total": 61.5,
    "oos": {"sharpe": 0.52, "split": {"train_end": "2012-12-31", "ratio": 0.7}},
    "cost_stress": {"x2": {"sharpe": 0.01}, "x3": {"sharpe": float("nan")}},
    "folds": [{"sharpe": 0.4}, {"sharpe": -0.1}],
    "note": None,
}


# ----------------------------------------------------------------------------- parsing

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Page(HTMLParser):
    """What the tests read from a page: sections, figures and their JSON, tables, tags."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.figure_divs: list[str] = []
        self.plotly_divs: list[str] = []       # divs plotly.js turned into plots
        self.main_svgs = 0
        self.errors: list[str] = []             # figures whose Plotly.newPlot threw
        self.json: dict[str, Any] = {}
        self.scripts: list[dict[str, str | None]] = []
        self.links = 0
        self.rows: dict[str, list[list[str]]] = {}   # table id -> rows of cell text
        self.attrs_by_id: dict[str, dict[str, str | None]] = {}
        self._script: dict[str, str | None] | None = None
        self._script_text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = dict(attrs_list)
        classes = (attrs.get("class") or "").split()
        if attrs.get("id"):
            self.attrs_by_id[str(attrs["id"])] = attrs
        if tag == "section" and attrs.get("data-section"):
            self.sections.append(str(attrs["data-section"]))
        if tag == "div" and "alphaloop-figure" in classes:
            self.figure_divs.append(str(attrs.get("data-figure")))
        if tag == "div" and "js-plotly-plot" in classes:
            self.plotly_divs.append(str(attrs.get("id")))
        if tag == "div" and "alphaloop-figure-error" in classes:
            self.errors.append(str(attrs.get("id")))
        if tag == "svg" and "main-svg" in classes:
            self.main_svgs += 1
        if tag == "link":
            self.links += 1
        if tag == "script":
            self._script, self._script_text = attrs, []
            self.scripts.append(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = str(attrs["id"])
            self.rows[self._table] = []
        if tag == "tr" and self._table:
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            if self._script.get("type") == "application/json":
                self.json[str(self._script.get("id"))] = json.loads("".join(self._script_text))
            self._script = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.rows[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script_text.append(data)
        elif self._cell is not None:
            self._cell.append(data)

    def figure(self, name: str) -> dict[str, Any]:
        fig: dict[str, Any] = self.json[f"figure-{name}-data"]
        return fig


def ys(trace: dict[str, Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in trace["y"]], dtype=float)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def sp500() -> Bars:
    return load_bars("sp500")


@pytest.fixture(scope="module")
def result(sp500: Bars) -> BacktestResult:
    spec = StrategySpec(entry="sma(close, 10) > sma(close, 50)",
                        exit="sma(close, 10) < sma(close, 50)",
                        family="sma_cross", params={"fast": 10, "slow": 50})
    return backtest(spec, sp500)


@pytest.fixture(scope="module")
def page_html(result: BacktestResult, sp500: Bars) -> str:
    return strategy_report(result, sp500, robustness=ROBUSTNESS)


@pytest.fixture(scope="module")
def page(page_html: str) -> Page:
    return Page(page_html)


@pytest.fixture(scope="module")
def run_frame() -> pd.DataFrame:
    rng = np.random.default_rng(433)
    n = 12
    tried = rng.integers(40, 80, n)
    passed = np.minimum(tried, rng.integers(0, 6, n))
    best = np.round(rng.uniform(20, 70, n), 3)
    best[0] = np.nan                          # nothing scored in the first iteration
    frame = pd.DataFrame({
        "iteration": np.arange(1, n + 1), "best_score": best, "tried": tried,
        "passed": passed,
        "failure:TOO_FEW_TRADES": rng.integers(0, 30, n),
        "failure:COST_DOMINATED": rng.integers(0, 20, n),
        "failure:DRAWDOWN_BREACH": rng.integers(0, 10, n),
        "constraints": np.minimum(np.arange(n) // 2, 4),
        "branch": ["main"] * n,
    })
    return frame.iloc[::-1].reset_index(drop=True)   # given out of order on purpose


# ----------------------------------------------------------------------------- strategy page

def test_sections_figures_and_self_contained(page: Page, page_html: str) -> None:
    assert page.sections == list(STRATEGY_SECTIONS)
    assert page.figure_divs == list(STRATEGY_FIGURES)
    for name in STRATEGY_FIGURES:
        fig = page.figure(name)
        assert fig["data"], name
        for trace in fig["data"]:
            values = trace.get("y") if trace["type"] != "heatmap" else trace["z"]
            assert values, (name, trace.get("name"))
    # offline: no external script or stylesheet, plotly.js inlined exactly once
    assert all(s.get("src") is None for s in page.scripts)
    assert page.links == 0
    assert page_html.count(get_plotlyjs()) == 1
    assert page_html.count("Plotly.newPlot(") == 1    # the one render loop
    # nothing plotly would add exists before plotly.js runs
    assert page.plotly_divs == [] and page.main_svgs == 0


def test_header_names_spec_costs_data_and_annualization(page: Page, page_html: str,
                                                        result: BacktestResult,
                                                        sp500: Bars) -> None:
    spec = result.spec
    assert spec.strategy_id in page_html
    assert result.data_ref in page_html
    assert "sma(close, 10) &gt; sma(close, 50)" in page_html     # escaped, not raw
    assert "sma(close, 10) &lt; sma(close, 50)" in page_html
    assert "sma(close, 10) < sma(close, 50)" not in page_html
    assert result.costs.policy_version in page_html
    assert "252 bars per year" in page_html and sp500.periods_per_year == 252.0
    metric_rows = page.rows["metrics-table"][1:]
    assert [row[1] for row in metric_rows] == list(CORE_METRICS)
    assert dict((row[1], row[2]) for row in metric_rows)["n_trades"] == str(
        result.metrics["n_trades"])
    spec_rows = dict(page.rows["spec-table"])
    assert spec_rows["entry"] == spec.entry and spec_rows["exit"] == spec.exit
    assert spec_rows["periods_per_year"] == "252"
    sharpe_cell = page_html.split('data-metric="sharpe"', 1)[1]
    value = sharpe_cell.split('data-value="', 1)[1].split('"', 1)[0]
    assert float(value) == result.metrics["sharpe"]


def test_equity_matches_result_and_hand_computed_buy_and_hold(page: Page, result: BacktestResult,
                                                              sp500: Bars) -> None:
    fig = page.figure("equity")
    strat, bench = fig["data"]
    y = ys(strat)
    assert len(y) == len(result.equity) == sp500.n_bars
    np.testing.assert_allclose(y, result.equity.to_numpy(), rtol=0, atol=1e-12)
    assert strat["x"][0] == "1999-01-04" and strat["x"][-1] == "2018-12-31"
    # one symbol: the benchmark's signal at the first close buys at the second open,
    # with the strategy's slippage and commission, and holds it, marked to the close
    c = result.costs
    qty = 1.0 / (sp500.open[1, 0] * (1 + c.slippage) * (1 + c.fee))
    expected = np.r_[1.0, qty * sp500.close[1:, 0]]
    yb = ys(bench)
    assert np.isfinite(yb).all()
    np.testing.assert_allclose(yb, expected, rtol=1e-12)
    assert bench["x"] == strat["x"]
    assert bench["name"] == "equal-weight buy-and-hold of sp500 (1 symbol)"


def test_drawdown_trace_agrees_with_core_metric(page: Page, result: BacktestResult) -> None:
    strat, bench = page.figure("drawdown")["data"]
    dd = ys(strat)
    assert np.isfinite(dd).all() and (dd <= 0).all()
    assert dd.min() == pytest.approx(result.metrics["max_drawdown"], abs=1e-9)
    eq = result.equity.to_numpy()
    np.testing.assert_allclose(dd, eq / np.maximum(np.maximum.accumulate(eq), 1.0) - 1,
                               atol=1e-15)
    assert np.isfinite(ys(bench)).all() and ys(bench).min() < -0.4   # 2000-02 and 2008


def test_monthly_heatmap_matches_pandas_compounding(page: Page, result: BacktestResult) -> None:
    (heat,) = page.figure("monthly")["data"]
    assert heat["type"] == "heatmap"
    assert heat["y"] == [str(y) for y in range(1999, 2019)]
    assert heat["x"][0] == "Jan" and len(heat["x"]) == 12
    z = np.array([[np.nan if v is None else v for v in row] for row in heat["z"]])
    assert z.shape == (20, 12) and np.isfinite(z).all()   # every month 1999-01..2018-12
    r = result.returns
    idx = pd.DatetimeIndex(r.index)
    for year, month in ((2008, 10), (2003, 4), (2018, 12)):
        bars_in_month = r[(idx.year == year) & (idx.month == month)]
        assert len(bars_in_month) > 15
        expected = float((1.0 + bars_in_month).to_numpy().prod()) - 1.0  # compounded
        assert z[year - 1999, month - 1] == pytest.approx(expected, abs=1e-12)
    # every month, against pandas' month-end resampling
    by_month = (1.0 + r).resample("ME").prod().to_numpy() - 1.0
    np.testing.assert_allclose(z.ravel(), by_month, rtol=0, atol=1e-12)
    # the months compound back to the total return
    assert np.prod(1 + z) - 1 == pytest.approx(result.metrics["total_return"], rel=1e-9)


def test_rolling_sharpe_trace(page: Page, page_html: str, result: BacktestResult,
                              sp500: Bars) -> None:
    trace, bench = page.figure("rolling_sharpe")["data"]
    assert bench["name"] == "benchmark" and len(bench["y"]) == sp500.n_bars
    y = ys(trace)
    w = reports.DEFAULT_ROLLING_WINDOW
    assert len(y) == sp500.n_bars
    assert np.isnan(y[: w - 1]).all()
    assert np.isfinite(y[w - 1:]).mean() > 0.9   # gaps only where flat for a whole window
    r = result.returns
    for t in (w - 1, 1000, 2500, sp500.n_bars - 1):
        win = r.iloc[t - w + 1: t + 1]
        expected = win.mean() / win.std(ddof=1) * math.sqrt(sp500.periods_per_year)
        assert y[t] == pytest.approx(expected, rel=1e-9), t
    assert f"Sharpe of the trailing {w} bars" in page_html


def test_trade_table_lists_every_trade(page: Page, result: BacktestResult) -> None:
    rows = page.rows["trades-table"]
    header, body = rows[0], rows[1:]
    assert header[1:] == list(result.trades.columns)
    assert len(body) == len(result.trades) == result.metrics["n_trades"] > 0
    first = result.trades.iloc[0]
    assert body[0][1] == "SPX" and body[0][2] == "long"
    assert body[0][3] == first["entry_time"].strftime("%Y-%m-%d")
    assert "trades-truncated" not in page.attrs_by_id


def test_trade_table_capped(result: BacktestResult, sp500: Bars) -> None:
    many = pd.concat([result.trades] * 10, ignore_index=True)
    assert len(many) > MAX_TRADE_ROWS
    html = strategy_report(dataclasses.replace(result, trades=many), sp500)
    page = Page(html)
    assert len(page.rows["trades-table"]) - 1 == MAX_TRADE_ROWS
    assert f"Showing the first {MAX_TRADE_ROWS} of {len(many)} trades" in html


def test_robustness_panel_flattens(page: Page) -> None:
    rows = {k: v for k, v in page.rows["robustness-table"][1:]}
    assert rows["psr"] == "0.973" and rows["n_trials"] == "174"
    assert rows["passed"] == "false"
    assert rows["reasons"] == "DSR 0.41 < 0.95; OOS_DECAY"
    assert rows["oos.split.train_end"] == "2012-12-31"
    assert rows["cost_stress.x3.sharpe"] == "NaN"
    assert rows["folds.1.sharpe"] == "-0.1"
    assert rows["note"] == "—"
    assert "robustness-status" in page.attrs_by_id


def test_the_status_line_names_the_policy_and_neighbours_are_a_share(
        result: BacktestResult, sp500: Bars) -> None:
    # a black-box report: "Robustness failed" over checks that all passed (it is the
    # gates' verdict), and "1 of the neighbours" for a fraction of 1.0
    robustness = {"passed": False, "stability": {
        "metric": "sharpe", "centre_value": 1.2, "fraction_ok": 0.75, "threshold": 0.5,
        "stable": True, "neighbours": [
            {"changed": "fast", "direction": 1, "params": {"fast": 12}, "value": 1.0}]}}
    html_text = " ".join(strategy_report(result, sp500, robustness=robustness).split())
    assert "Policy verdict: failed a gate" in html_text and "Robustness failed" not in html_text
    assert "75% of the neighbours hold at least 0.5× of it: stable" in html_text


def test_robustness_absent_and_model_like(result: BacktestResult, sp500: Bars) -> None:
    page = Page(strategy_report(result, sp500))
    assert "robustness" in page.sections and "robustness-table" not in page.rows

    class Model:
        def model_dump(self) -> dict[str, Any]:
            return {"pbo": 0.2, "passed": True}

    page = Page(strategy_report(result, sp500, robustness=Model()))  # type: ignore[arg-type]
    assert dict(page.rows["robustness-table"][1:])["pbo"] == "0.2"


class Cells(HTMLParser):
    """``data-value`` of every cell, by (row's data-metric or data-key, data-column)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.values: dict[tuple[str, str], str | None] = {}
        self._row = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = dict(attrs_list)
        if tag == "tr":
            self._row = str(attrs.get("data-metric") or attrs.get("data-key") or "")
        elif tag == "td" and self._row and ("data-value" in attrs or "data-column" in attrs):
            self.values[(self._row, str(attrs.get("data-column") or ""))] = \
                attrs.get("data-value")


def test_recorded_numbers_replace_the_backtests_own(result: BacktestResult,
                                                    sp500: Bars) -> None:
    """Given what an evaluation recorded, the page shows exactly those numbers, says
    where they come from, and marks the holdout on the charts; the drawn series stay
    the backtest's."""
    selection = {"sharpe": 0.123456789012345, "n_trades": 17, "total_return": np.float64(0.5)}
    held = {"sharpe": -0.987654321, "max_drawdown": -0.25}
    start = sp500.index[3000]
    recorded = Recorded(
        source=[("run", "abc123 <run>"), ("holdout", "last 30%"), ("trial count", "40")],
        metrics=[MetricColumn("selection", "selection (recorded)", selection),
                 MetricColumn("holdout", "holdout (recorded)", held)],
        holdout_start=start)
    robustness = {"dsr": 0.9123456789012, "rank": 3, "passed": True, "pbo": None}
    text = strategy_report(result, sp500, robustness=robustness, recorded=recorded)
    page, cells = Page(text), Cells(text).values
    assert page.sections == ["header", "source", *STRATEGY_SECTIONS[1:]]
    assert dict(page.rows["source-table"]) == {"run": "abc123 <run>", "holdout": "last 30%",
                                               "trial count": "40"}
    assert "abc123 &lt;run&gt;" in text  # escaped
    # the recorded values, exactly, and nothing of the backtest's own metrics
    assert cells[("sharpe", "selection")] == "0.123456789012345"
    assert cells[("n_trades", "selection")] == "17"
    assert cells[("total_return", "selection")] == "0.5"
    assert cells[("sharpe", "holdout")] == "-0.987654321"
    assert cells[("max_drawdown", "holdout")] == "-0.25"
    assert cells[("n_trades", "holdout")] is None  # shown as "—"
    assert repr(result.metrics["sharpe"]) not in text
    # the trade list spans every bar; the page says its count is not the table's
    assert "trades-span" in page.attrs_by_id
    assert "trades-span" not in Page(strategy_report(result, sp500)).attrs_by_id
    metric_rows = page.rows["metrics-table"]
    assert metric_rows[0] == ["metric", "key", "selection (recorded)", "holdout (recorded)"]
    assert [r[1] for r in metric_rows[1:]] == ["total_return", "sharpe", "max_drawdown",
                                               "n_trades"]
    # the robustness panel carries exact values too
    assert cells[("dsr", "")] == "0.9123456789012" and cells[("rank", "")] == "3"
    # charts: the traces are the backtest's; a dashed line where the holdout starts
    eq = page.figure("equity")
    np.testing.assert_allclose(ys(eq["data"][0]), result.equity.to_numpy(), rtol=0, atol=1e-12)
    for name in ("equity", "drawdown", "rolling_sharpe"):
        shapes = page.figure(name)["layout"].get("shapes", [])
        marks = [sh for sh in shapes if sh.get("x0") == start.strftime("%Y-%m-%d")]
        assert len(marks) == 1 and marks[0]["x1"] == marks[0]["x0"], name
    assert "shapes" not in page.figure("monthly")["layout"]


def test_without_recorded_numbers_nothing_is_marked(page: Page) -> None:
    assert "source-table" not in page.rows
    for name in ("equity", "drawdown"):
        assert "shapes" not in page.figure(name)["layout"]


def test_flatten_mapping() -> None:
    assert flatten_mapping({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": [], "f": {}}) == [
        ("a.b", 1), ("a.c.d", "1; 2"), ("e", ""), ("f", "")]


def test_wrong_bars_is_a_clear_error(result: BacktestResult) -> None:
    with pytest.raises(ValueError, match="bars"):
        strategy_report(result, load_bars("us_indices"))


def test_write_is_atomic(result: BacktestResult, sp500: Bars, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "reports" / "strategy.html"
    out = write_strategy_report(target, result, sp500, title="SMA 10/50 <SPX>")
    # plotly.js once per folder, next to the page
    assert out == target and sorted(os.listdir(target.parent)) == ["plotly.min.js",
                                                                   "strategy.html"]
    text = target.read_text(encoding="utf-8")
    assert "<title>SMA 10/50 &lt;SPX&gt;</title>" in text
    assert Page(text).figure_divs == list(STRATEGY_FIGURES)

    def boom(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(reports.os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        write_strategy_report(target, result, sp500, title="second")
    assert sorted(os.listdir(target.parent)) == ["plotly.min.js", "strategy.html"]  # no tmp
    assert target.read_text(encoding="utf-8") == text           # old report intact


# ----------------------------------------------------------------------------- run page

def test_run_report_synthetic_frame(run_frame: pd.DataFrame, tmp_path: Path) -> None:
    html = run_report(run_frame, title="run r-433")
    page = Page(html)
    assert page.sections == ["summary", *RUN_FIGURES, "iterations"]
    assert page.figure_divs == list(RUN_FIGURES)
    frame = run_frame.sort_values("iteration").reset_index(drop=True)
    it = frame["iteration"].tolist()

    best, best_so_far = page.figure("best_score")["data"]
    assert best["x"] == it
    np.testing.assert_array_equal(ys(best), frame["best_score"].to_numpy())
    np.testing.assert_array_equal(ys(best_so_far), frame["best_score"].cummax().to_numpy())

    tried, passed = page.figure("tried_passed")["data"]
    assert ys(tried).tolist() == frame["tried"].tolist()
    assert ys(passed).tolist() == frame["passed"].tolist()

    fails = page.figure("failure_codes")["data"]
    assert [t["name"] for t in fails] == ["TOO_FEW_TRADES", "COST_DOMINATED",
                                          "DRAWDOWN_BREACH"]
    for t in fails:
        assert ys(t).tolist() == frame[f"failure:{t['name']}"].tolist()
    assert page.figure("failure_codes")["layout"]["barmode"] == "stack"

    (cons,) = page.figure("constraints")["data"]
    assert ys(cons).tolist() == frame["constraints"].tolist()

    summary = dict(page.rows["summary-table"])
    assert summary["iterations"] == "12"
    assert summary["candidates tried"].split(" (")[0] == str(int(frame["tried"].sum()))
    assert summary["candidates that passed the gates"] == str(int(frame["passed"].sum()))
    assert float(summary["best score of any candidate"]) == frame["best_score"].max()
    assert summary["best at iteration"] == str(it[int(np.nanargmax(frame["best_score"]))])
    table = page.rows["iterations-table"]
    assert table[0] == list(frame.columns)
    assert [int(row[0]) for row in table[1:]] == it          # sorted by iteration
    assert "<title>run r-433</title>" in html

    out = write_run_report(tmp_path / "run.html", run_frame, title="run r-433")
    assert Page(out.read_text(encoding="utf-8")).figure_divs == list(RUN_FIGURES)


def test_the_best_so_far_is_carried_over_an_iteration_that_scored_nothing() -> None:
    """A black-box report: the last iteration of a run scored nothing (all reused) and
    its "best so far" point was missing, although the run had recorded 100."""
    frame = pd.DataFrame({"iteration": [1, 2, 3], "best_score": [60.0, 100.0, np.nan],
                          "tried": [5, 5, 5], "passed": [0, 1, 0]})
    _, so_far = Page(run_report(frame, title="t")).figure("best_score")["data"]
    assert ys(so_far).tolist() == [60.0, 100.0, 100.0]  # by hand: max so far
    recorded = frame.assign(best_score_so_far=[60.0, 100.0, 100.0])
    _, so_far = Page(run_report(recorded, title="t")).figure("best_score")["data"]
    assert ys(so_far).tolist() == [60.0, 100.0, 100.0]



def test_run_report_optional_columns_and_errors(run_frame: pd.DataFrame) -> None:
    core = run_frame[["iteration", "best_score", "tried", "passed"]]
    page = Page(run_report(core, title="core only"))
    assert page.figure_divs == ["best_score", "tried_passed"]
    assert "failure_codes" in page.sections and "constraints" in page.sections
    with pytest.raises(ValueError, match=r"missing column\(s\) \['passed'\]"):
        run_report(core.drop(columns="passed"), title="x")
    with pytest.raises(ValueError, match="duplicates"):
        run_report(pd.concat([core, core]), title="x")
    with pytest.raises(ValueError, match="no rows"):
        run_report(core.iloc[:0], title="x")


def test_run_report_draws_the_learning_curves_when_given(run_frame: pd.DataFrame) -> None:
    core = run_frame[["iteration", "best_score", "tried", "passed"]]
    n = len(core)
    frame = core.assign(rejected_share=np.linspace(0.9, 0.5, n),
                        forbidden_share=np.linspace(0.0, 0.4, n),
                        best_verified_so_far=[np.nan, *np.linspace(40, 60, n - 1)])
    page = Page(run_report(frame, title="learning"))
    assert "learning" in page.figure_divs and "learning" in page.sections
    fig = learning_figure(frame)
    assert [t.name for t in fig.data] == ["rejected share", "space forbidden by the rules",
                                          "best verified score"]
    assert list(fig.data[0].y) == pytest.approx(list(np.linspace(0.9, 0.5, n)))
    assert fig.data[2].yaxis == "y2" and fig.data[2].y[0] is None  # a gap, not a zero
    # all three columns or no chart: a partial set is only shown in the table
    assert "learning" not in Page(run_report(frame.drop(columns="forbidden_share"),
                                             title="x")).figure_divs


# ----------------------------------------------------------------------------- Chromium

def render(chromium: str, page_file: Path, profile: Path) -> str:
    """The DOM after a real headless Chromium has loaded ``page_file`` and run its scripts."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--window-size=1280,2000", "--virtual-time-budget=10000", "--dump-dom",
           page_file.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "</html>" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def figure_markup(dom: str, name: str) -> str:
    """The rendered markup of figure ``name``: from its div to its JSON script."""
    start = dom.index(f'id="figure-{name}"')
    return dom[start: dom.index(f'id="figure-{name}-data"', start)]


def assert_rendered(dom: str, figures: tuple[str, ...]) -> None:
    page = Page(dom)
    assert sorted(page.plotly_divs) == sorted(f"figure-{f}" for f in figures)
    assert len(page.plotly_divs) == len(page.figure_divs) == len(figures)
    assert 'class="main-svg"' in dom and page.main_svgs >= len(figures)
    assert page.errors == []
    for name in figures:
        markup = figure_markup(dom, name)
        assert 'class="main-svg"' in markup, name


def line_points(markup: str) -> int:
    """Segments of the longest drawn line (``<path class="js-line" d="M..L..">``; a step
    line draws with H and V)."""
    counts = [sum(seg.split('"', 1)[0].count(c) for c in "LHV")
              for part in markup.split('class="js-line"')[1:]
              for seg in [part.split(' d="', 1)[1] if ' d="' in part.split(">", 1)[0] else ""]]
    return max(counts, default=0)


def test_strategy_page_renders_in_headless_chromium(chromium: str, page_html: str,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "strategy.html"
    path.write_text(page_html, encoding="utf-8")
    dom = render(chromium, path, tmp_path / "profile")
    assert_rendered(dom, STRATEGY_FIGURES)
    for name in ("equity", "drawdown", "rolling_sharpe"):
        assert line_points(figure_markup(dom, name)) > 100, name
    heat = figure_markup(dom, "monthly")
    assert 'class="hm"' in heat and "data:image/png;base64," in heat


def test_run_page_renders_in_headless_chromium(chromium: str, run_frame: pd.DataFrame,
                                               tmp_path: Path) -> None:
    path = write_run_report(tmp_path / "run.html", run_frame, title="run")
    dom = render(chromium, path, tmp_path / "profile")
    assert_rendered(dom, RUN_FIGURES)
    assert line_points(figure_markup(dom, "best_score")) >= 5
    assert line_points(figure_markup(dom, "constraints")) >= 5
    for name in ("tried_passed", "failure_codes"):
        bars = figure_markup(dom, name).count('class="point"')
        assert bars >= len(run_frame), name


# ------------------------------------------------- issue 14: robustness as small tables
REPORT_PARTS = {
    "rank": 1, "passed": False, "sharpe_sel": 0.5,
    "sharpe_ci": {"estimate": 0.5, "lower": 0.1, "upper": 0.9, "level": 0.95,
                  "block_size": 12},
    "cost_stress": {"levels": [
        {"multiplier": 1.0, "fees_bps": 10.0, "slippage_bps": 5.0, "cost_policy": "x",
         "metrics": {"sharpe": 0.5, "total_return": 0.1234, "cagr": 0.02,
                     "max_drawdown": -0.25}},
        {"multiplier": 2.0, "fees_bps": 20.0, "slippage_bps": 10.0, "cost_policy": "x",
         "metrics": {"sharpe": 0.3, "total_return": 0.05, "cagr": 0.01,
                     "max_drawdown": -0.3}}],
        "survive_multiplier": 2.0, "sharpe_at_survive": 0.3, "survives": True},
    "subperiods": {"parts": [
        {"part": 0, "window": {"start": 0, "stop": 100, "first": "2001-01-02T00:00:00+00:00",
                               "last": "2001-05-25T00:00:00+00:00"},
         "mean_return": 0.001, "total_return": 0.1, "sharpe": 0.7},
        {"part": 1, "window": {"start": 100, "stop": 200, "first": "2001-05-29T00:00:00+00:00",
                               "last": "2001-10-17T00:00:00+00:00"},
         "mean_return": 0.0, "total_return": -0.02, "sharpe": -0.1}],
        "sign_agreement": False, "ratio": None},
}


def test_robustness_parts_are_headed_tables(result: BacktestResult, sp500: Bars) -> None:
    page = Page(strategy_report(result, sp500, robustness=REPORT_PARTS))
    cost = page.rows["robustness-cost-stress"]
    assert cost[0] == ["× costs", "fees bps", "slippage bps", "Sharpe", "total return",
                       "CAGR", "max drawdown"]
    assert cost[1] == ["1", "10", "5", "0.5", "12.34%", "2.00%", "-25.00%"]
    sub = page.rows["robustness-subperiods"]
    assert sub[1] == ["1", "2001-01-02", "2001-05-25", "100", "0.7", "10.00%"]
    assert sub[2][:3] == ["2", "2001-05-29", "2001-10-17"]
    assert page.rows["robustness-bootstrap"][1] == ["0.5", "0.1", "0.9", "0.95", "12"]
    summary = dict(page.rows["robustness-table"][1:])
    assert summary == {"rank": "1", "passed": "false", "sharpe_sel": "0.5"}


def test_relative_panel_shows_the_recorded_numbers(result: BacktestResult, sp500: Bars) -> None:
    recorded = {"beta": 0.512, "alpha_ann": 0.031, "alpha_t": 1.7, "information_ratio": 0.21,
                "excess_dsr": 0.44, "benchmark_label": "buy-and-hold of SPX",
                "benchmark_metrics": {"sharpe": 0.33, "cagr": 0.05},
                "holdout_relative": {"beta": 0.48, "information_ratio": -0.1}}
    page = Page(strategy_report(result, sp500, robustness=recorded))
    rows = {r[0]: r[1:] for r in page.rows["robustness-relative"][1:]}
    assert rows["Beta (OLS on the benchmark)"] == ["0.512", "0.48"]
    assert rows["Alpha (a year)"][0] == "3.10%"
    assert rows["Benchmark Sharpe"] == ["0.33", "—"]
    assert rows["DSR of the excess returns (all trials)"] == ["0.44", "—"]
    without = Page(strategy_report(result, sp500))
    assert "robustness-relative" not in without.rows


@pytest.mark.parametrize(("ppy", "n_bars", "window"), [
    (252, 5000, 126),      # daily: six months, as before
    (252, 400, 100),       # a short daily panel: a quarter of it
    (8760, 30000, 4380),   # hourly, 24/7: half a year is 8,760 / 2 bars
    (8760, 3000, 750),     # a short hourly panel
    (19656, 3120, 780),    # 5-minute equity bars, 40 sessions
    (52.18, 520, 26),      # weekly
    (12, 6, 2),            # too short for more than the minimum
])
def test_the_rolling_window_is_half_a_year_of_the_datas_own_bars(ppy: float, n_bars: int,
                                                                  window: int) -> None:
    """A black-box report: 126 bars were five days of hourly crypto bars."""
    assert reports.rolling_window(ppy, n_bars) == window
