"""The Bars panel: aligned (T bars × N symbols) OHLCV arrays.

Every array is float64 with NaN where a symbol has no bar (not yet listed,
delisted, holiday of its own exchange). The timestamp index is UTC. ``data_ref``
is a content hash of the whole panel, so any result can name exactly which data
produced it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from alphaloop.errors import DataError

FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


def periods_per_year_for(step_seconds: float) -> float:
    """Annualization for bars ``step_seconds`` apart.

    Daily (business-day) bars: 252 trading days. Weekly, monthly: calendar time,
    365.25 days / spacing. Intraday: 252 × bars per 6.5-hour session.
    """
    day = 86400.0
    if step_seconds > 3 * day:
        return 365.25 * day / step_seconds
    if step_seconds >= 0.5 * day:
        return 252.0
    return 252.0 * max(1, round(6.5 * 3600 / max(step_seconds, 1.0)))


@dataclass(frozen=True, eq=False)
class Bars:
    """A (T × N) OHLCV panel.

    Build one with :func:`alphaloop.data.load_bars`, :meth:`Bars.from_long`,
    :meth:`Bars.from_wide` or :func:`alphaloop.data.synthetic.generate`.
    """

    index: pd.DatetimeIndex
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    name: str = field(default="")

    def __post_init__(self) -> None:
        t, n = len(self.index), len(self.symbols)
        if self.index.tz is None or str(self.index.tz) != "UTC":
            raise DataError("Bars.index must be a UTC DatetimeIndex", code="DQ_TIMEZONE")
        if self.index.unit != "ns":  # one resolution, so data_ref and spacing agree
            object.__setattr__(self, "index", self.index.as_unit("ns"))
        if len(set(self.symbols)) != n:
            raise DataError("Bars.symbols contains duplicates", code="DQ_DUPLICATE_SYMBOL")
        for f in FIELDS:
            arr = getattr(self, f)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float64:
                got = getattr(arr, "dtype", type(arr).__name__)
                raise DataError(f"Bars.{f} must be a float64 array, got {got}", code="DQ_DTYPE")
            if arr.shape != (t, n):
                raise DataError(f"Bars.{f} has shape {arr.shape}, expected {(t, n)}",
                                code="DQ_SHAPE")
            arr.setflags(write=False)

    # ------------------------------------------------------------------ shape
    @property
    def n_bars(self) -> int:
        return len(self.index)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_bars, self.n_symbols)

    def field(self, name: str) -> np.ndarray:
        if name not in FIELDS:
            raise DataError(f"unknown bar field {name!r}; expected one of {FIELDS}",
                            code="DQ_FIELD")
        arr: np.ndarray = getattr(self, name)
        return arr

    # ------------------------------------------------------------- identity
    @cached_property
    def data_ref(self) -> str:
        """sha256 over timestamps, symbols and the five arrays (content hash)."""
        h = hashlib.sha256()
        h.update(self.index.asi8.tobytes())
        h.update("\x1f".join(self.symbols).encode())
        for f in FIELDS:
            h.update(np.ascontiguousarray(getattr(self, f)).tobytes())
        return "sha256:" + h.hexdigest()

    @cached_property
    def periods_per_year(self) -> float:
        """Bars per year used for annualization, from the median bar spacing.

        See :func:`periods_per_year_for`. This is a property of the whole panel (for
        reporting metrics); decisions inside a backtest use
        :meth:`periods_per_year_until`, which sees only past timestamps.
        """
        if self.n_bars < 2:
            return 252.0
        return periods_per_year_for(float(np.median(np.diff(self.index.asi8))) / 1e9)

    def periods_per_year_until(self, window: int) -> np.ndarray:
        """Causal annualization per bar: the rule of :func:`periods_per_year_for`
        applied to the median spacing of the last ``window`` bars up to t."""
        steps = pd.Series(np.diff(self.index.asi8, prepend=self.index.asi8[:1]) / 1e9)
        steps.iloc[0] = np.nan
        med = steps.rolling(max(window, 1), min_periods=1).median().to_numpy()
        out = np.array([periods_per_year_for(s) if s == s else 252.0 for s in med])
        return out

    # ------------------------------------------------------------ slicing
    def slice(self, start: int | None = None, stop: int | None = None) -> Bars:
        """Rows ``start:stop`` as a new panel (used by truncation tests, walk-forward)."""
        sl = slice(start, stop)
        return Bars(index=self.index[sl], symbols=self.symbols,
                    **{f: np.array(getattr(self, f)[sl]) for f in FIELDS}, name=self.name)

    def select(self, symbols: list[str] | tuple[str, ...]) -> Bars:
        missing = [s for s in symbols if s not in self.symbols]
        if missing:
            raise DataError(f"unknown symbols {missing}", code="DQ_UNKNOWN_SYMBOL")
        cols = [self.symbols.index(s) for s in symbols]
        return Bars(index=self.index, symbols=tuple(symbols),
                    **{f: np.array(getattr(self, f)[:, cols]) for f in FIELDS}, name=self.name)

    # ------------------------------------------------------- constructors
    @classmethod
    def from_long(cls, df: pd.DataFrame, *, name: str = "", sort: bool = False,
                  validate: bool = True) -> Bars:
        """From long format: columns ``timestamp, symbol, open, high, low, close, volume``.

        ``validate=False`` skips the price-value checks (positivity, high >= low,
        close within range, volume >= 0) so dirty data can be loaded and inspected
        with :func:`~alphaloop.data.quality.quality_report`; structural checks
        (columns, types, duplicates, order) always run.
        """
        from alphaloop.data.quality import check_long_frame

        df = check_long_frame(df, sort=sort, check_values=validate)
        index = pd.DatetimeIndex(sorted(df["timestamp"].unique()), tz="UTC")
        symbols = tuple(sorted(df["symbol"].astype(str).unique()))
        arrays = {}
        for f in FIELDS:
            wide = df.pivot(index="timestamp", columns="symbol", values=f)
            wide = wide.reindex(index=index, columns=list(symbols))
            arrays[f] = np.ascontiguousarray(wide.to_numpy(dtype=np.float64))
        return cls(index=index, symbols=symbols, **arrays, name=name)

    @classmethod
    def from_wide(cls, close: pd.DataFrame, *, name: str = "", validate: bool = True) -> Bars:
        """From a wide close-only frame (index timestamps, one column per symbol).

        With only closes known, open = high = low = close and volume is NaN: a
        signal at t's close then fills at t+1's close, which is conservative.
        """
        from alphaloop.data.quality import check_wide_frame

        close = check_wide_frame(close, check_values=validate)
        c = np.ascontiguousarray(close.to_numpy(dtype=np.float64))
        index = pd.DatetimeIndex(close.index)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        return cls(index=index, symbols=tuple(str(s) for s in close.columns),
                   open=c.copy(), high=c.copy(), low=c.copy(), close=c,
                   volume=np.full(c.shape, np.nan), name=name)

    def to_long(self) -> pd.DataFrame:
        t, n = self.shape
        out = pd.DataFrame({
            "timestamp": self.index.repeat(n),  # keeps datetime64[ns, UTC]
            "symbol": np.tile(np.array(self.symbols, dtype=object), t),
            **{f: getattr(self, f).reshape(-1) for f in FIELDS},
        })
        return out.dropna(subset=["close"]).reset_index(drop=True)

    def frame(self, f: str) -> pd.DataFrame:
        """One field as a (T × N) DataFrame."""
        return pd.DataFrame(self.field(f), index=self.index, columns=list(self.symbols))

    def __repr__(self) -> str:
        span = f"{self.index[0].date()}..{self.index[-1].date()}" if self.n_bars else "empty"
        return f"Bars({self.name or 'unnamed'}: {self.n_bars} bars × {self.n_symbols} symbols, {span})"
