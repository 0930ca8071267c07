"""Which benchmark a strategy is measured against, and its returns over the panel.

``--benchmark`` (CLI), ``benchmark=`` (Python) or ``benchmark:`` (a run config) takes:

==================  =================================================================
``equal_weight``    the default: the causal equal-weight buy-and-hold of the panel's
                    universe, run through engine A with the candidates' costs
                    (:mod:`alphaloop.engines.benchmark`)
``cash``            zero returns: the old "against cash", named as such
``SYMBOL``          buy-and-hold of one symbol of the panel, through engine A
``FILE``            a separate series (CSV/Parquet, one symbol, with closes): its
                    close-to-close returns on the panel's dates; every panel date
                    after the first must have a close in the file
==================  =================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alphaloop.data.bars import Bars
from alphaloop.engines.benchmark import CASH, EQUAL_WEIGHT, BenchmarkError, panel_benchmark
from alphaloop.engines.costs import CostModel

DEFAULT_BENCHMARK = EQUAL_WEIGHT


@dataclass(frozen=True)
class Benchmark:
    """A resolved benchmark: ``name`` (what was asked for), ``label`` (for people) and
    its per-bar ``returns`` over the whole panel (shape ``(T,)``)."""

    name: str
    label: str
    returns: np.ndarray


def _is_file(name: str) -> bool:
    return "/" in name or name.lower().endswith((".csv", ".parquet", ".pq")) or \
        Path(name).is_file()


def _file_returns(path: str, bars: Bars) -> np.ndarray:
    from alphaloop.data.loaders import load_bars

    series = load_bars(path)
    if series.n_symbols != 1:
        raise BenchmarkError(f"benchmark file {path} holds {series.n_symbols} symbols; it "
                             "must hold one series", code="BENCHMARK_FILE")
    close = series.frame("close").iloc[:, 0]
    close.index = series.index.normalize()  # matched by date: the time of day may differ
    on_panel = close.reindex(bars.index.normalize()).to_numpy()
    missing = np.flatnonzero(np.isnan(on_panel[1:])) + 1
    if np.isnan(on_panel[0]) or missing.size:
        first = 0 if np.isnan(on_panel[0]) else int(missing[0])
        raise BenchmarkError(
            f"benchmark file {path} has no close on {bars.index[first].date()} "
            f"({missing.size + int(np.isnan(on_panel[0]))} of the panel's {bars.n_bars} "
            "dates missing)", code="BENCHMARK_FILE")
    return np.concatenate([[0.0], on_panel[1:] / on_panel[:-1] - 1.0])


def resolve_benchmark(name: str | None, bars: Bars, costs: CostModel | None = None
                      ) -> Benchmark:
    """The benchmark ``name`` (None: :data:`DEFAULT_BENCHMARK`) over ``bars``."""
    name = name or DEFAULT_BENCHMARK
    what = bars.name or "the panel"
    if name == EQUAL_WEIGHT:
        n = bars.n_symbols
        label = f"equal-weight buy-and-hold of {what} ({n} symbol{'s' if n != 1 else ''})"
    elif name == CASH:
        label = "cash (zero return)"
    elif name in bars.symbols:
        label = f"buy-and-hold of {name}"
    elif _is_file(name):
        return Benchmark(name, f"series {Path(name).name}", _file_returns(name, bars))
    else:
        raise BenchmarkError(
            f"unknown benchmark {name!r}: use {EQUAL_WEIGHT}, {CASH}, a symbol of {what} "
            f"({', '.join(bars.symbols[:10])}) or a CSV/Parquet file",
            code="BENCHMARK_UNKNOWN")
    return Benchmark(name, label, panel_benchmark(bars, name, costs))
