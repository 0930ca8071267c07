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

from alphaloop.data.membership import Membership
from alphaloop.errors import DataError

FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


DAY_SECONDS = 86400.0
WEEKEND_SHARE = 0.05
"""Above this share of bars on the two quietest weekdays (the weekend) a calendar trades every
day (365 days/year)."""
SESSION_SECONDS = 6.5 * 3600.0
"""A regular US equity session (09:30-16:00), the per-bar guess of bars per day."""
MIN_WINDOW = 5
"""The fewest steps :meth:`Bars.periods_per_year_until` judges spacing on: with two,
one market closure (9/11: 7 days) would turn daily bars into "calendar" ones."""


def periods_per_year_for(step_seconds: float, *, mean_step_seconds: float | None = None,
                         weekend_share: float = 0.0,
                         bars_per_day: float | None = None) -> float:
    """Bars per year for annualization. The one rule, used everywhere:

    ``step`` is the spacing between consecutive bars (``step_seconds`` its median,
    ``mean_step_seconds`` its mean, defaulting to the median) and ``weekend_share``
    the fraction of bars stamped on the calendar's two quietest UTC weekdays (Saturday
    and Sunday for a market west of Asia; :func:`quiet_days`). Days per year are
    365 when ``weekend_share > 0.05`` (the market trades every day: crypto) and 252
    otherwise (weekday sessions, in any time zone).

    (a) *Calendar data*, median step > 3 days: 365.25 days / **mean** step (weekly
        52.18, month-end 12.0; the mean, because month lengths vary and the median
        month is 31 days).
    (b) *Daily*, 0.5 day <= median step <= 3 days: the days per year (252 or 365).
    (c) *Intraday*, median step < 0.5 day: days per year × ``bars_per_day``. The
        whole-panel :attr:`Bars.periods_per_year` passes the median number of bars
        per UTC calendar date (US hourly 09:30..15:30 → 7 → 1764; 24/7 hourly →
        24 → 8760). Without ``bars_per_day`` (the per-bar
        :meth:`Bars.periods_per_year_until`) it is approximated from the step:
        ``ceil(6.5 h / step)`` (one US session) when ``weekend_share <= 0.05`` and
        ``86400 s / step`` (round the clock) otherwise.
    """
    out = _rule(np.array([step_seconds], dtype=float),
                np.array([step_seconds if mean_step_seconds is None else mean_step_seconds],
                         dtype=float),
                np.array([weekend_share], dtype=float),
                None if bars_per_day is None else np.array([bars_per_day], dtype=float))
    return float(out[0])


def _rule(median: np.ndarray, mean: np.ndarray, weekend: np.ndarray,
          bars_per_day: np.ndarray | None) -> np.ndarray:
    """:func:`periods_per_year_for`, elementwise; NaN spacing gives 252."""
    median = np.maximum(median, 1.0)  # a hand-built index may repeat a timestamp
    mean = np.maximum(mean, 1.0)
    days = np.where(weekend > WEEKEND_SHARE, 365.0, 252.0)
    if bars_per_day is None:
        bars_per_day = np.where(weekend > WEEKEND_SHARE, DAY_SECONDS / median,
                                np.ceil(SESSION_SECONDS / median - 1e-9))
    out = np.where(median > 3 * DAY_SECONDS, 365.25 * DAY_SECONDS / mean,
                   np.where(median >= 0.5 * DAY_SECONDS, days,
                            days * np.maximum(bars_per_day, 1.0)))
    return np.where(np.isnan(median) | np.isnan(mean), 252.0, out)


def quiet_days(counts: np.ndarray) -> np.ndarray:
    """The calendar's weekend: of bar counts per UTC weekday (..., 7), the two weekdays
    with the fewest bars (..., 2), in weekday order where counts tie.

    Not Saturday and Sunday: a weekday market's days fall on other UTC weekdays east of
    UTC (Tokyo's Monday at local midnight is Sunday 15:00 UTC), but every weekday
    calendar leaves two weekdays (nearly) empty, and a 7-day one none."""
    return np.argsort(counts, axis=-1, kind="stable")[..., :2]


def _weekday_counts(index: pd.DatetimeIndex) -> np.ndarray:
    """(T + 1, 7): bars per UTC weekday among the first t bars, t = 0..T."""
    onehot = np.zeros((len(index) + 1, 7), dtype=np.int64)
    onehot[np.arange(1, len(index) + 1), np.asarray(index.day_of_week)] = 1
    return np.cumsum(onehot, axis=0)


def _weekend_share(counts: np.ndarray) -> np.ndarray:
    """The share of bars on the calendar's two quiet weekdays (see :func:`quiet_days`)
    of counts per weekday (..., 7)."""
    quiet = np.take_along_axis(counts, quiet_days(counts), axis=-1).sum(axis=-1)
    return quiet / np.maximum(counts.sum(axis=-1), 1)


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
    annualization: float | None = field(default=None, kw_only=True)
    """Bars per year, when the calendar is known better than the timestamps tell
    (None: inferred, see :func:`periods_per_year_for`)."""
    membership: Membership | None = field(default=None, kw_only=True)
    """When each symbol was in the universe (None: unknown); the engines trade a symbol
    only while it is a member. Part of :attr:`data_ref` when given."""

    def __post_init__(self) -> None:
        t, n = len(self.index), len(self.symbols)
        if self.annualization is not None:
            a = self.annualization
            if isinstance(a, bool) or not isinstance(a, (int, float, np.number)) \
                    or not np.isfinite(a) or a <= 0:
                raise DataError(f"Bars.annualization must be a positive finite number of bars "
                                f"per year, got {a!r}", code="DQ_ANNUALIZATION")
            object.__setattr__(self, "annualization", float(a))
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
        if self.membership is not None:  # the same bars traded over another universe
            h.update(b"membership:" + self.membership.digest.encode())
        return "sha256:" + h.hexdigest()

    def member_mask(self) -> np.ndarray | None:
        """(T, N) bool: symbol j is a universe member at bar t; None when unknown."""
        if self.membership is None:
            return None
        return self.membership.mask(self.index, self.symbols)

    @cached_property
    def periods_per_year(self) -> float:
        """Bars per year used for annualization: :attr:`annualization` when set,
        otherwise the rule of :func:`periods_per_year_for` on the whole index.

        This is a property of the whole panel (for reporting metrics); decisions
        inside a backtest use :meth:`periods_per_year_until`, which sees only past
        timestamps.
        """
        return self.periods_per_year_through(self.n_bars - 1)

    def periods_per_year_through(self, t: int) -> float:
        """:attr:`periods_per_year` of the bars up to ``t`` (0-based, inclusive) only:
        what a report at bar t may say (a paper run's bars so far), never changed by
        later bars."""
        if self.annualization is not None:
            return self.annualization
        index = self.index[: max(int(t), -1) + 1]
        if len(index) < 2:
            return 252.0
        ts = index.asi8
        steps = np.diff(ts) / 1e9
        _, per_date = np.unique(ts // int(DAY_SECONDS * 1e9), return_counts=True)
        return periods_per_year_for(float(np.median(steps)),
                                    mean_step_seconds=float(np.mean(steps)),
                                    weekend_share=float(_weekend_share(
                                        _weekday_counts(index)[-1])),
                                    bars_per_day=float(np.median(per_date)))

    def periods_per_year_until(self, window: int) -> np.ndarray:
        """Causal annualization, one value per bar (a ``(T,)`` float array).

        :attr:`annualization` on every bar when set. Otherwise the rule of
        :func:`periods_per_year_for` at bar t uses timestamps up to t only: the
        median and mean of the last ``window`` steps (at least :data:`MIN_WINDOW`),
        and the weekend share of the same bars, widened to at least the last 7
        calendar days (so that a short window over the weekdays of 24/7 data still
        sees a weekend). Bars
        per day of intraday data are approximated from the median step (see
        :func:`periods_per_year_for`, case c). The first bar, with no step yet,
        gets 252. On weekday daily data every bar gets exactly 252.
        """
        t = self.n_bars
        if self.annualization is not None:
            return np.full(t, self.annualization)
        if t == 0:
            return np.zeros(0)
        ts = self.index.asi8
        w = max(int(window), MIN_WINDOW)
        steps = pd.Series(np.diff(ts, prepend=ts[:1]) / 1e9)
        steps.iloc[0] = np.nan
        roll = steps.rolling(w, min_periods=1)
        median, mean = roll.median().to_numpy(), roll.mean().to_numpy()
        # weekend share over bars lo..t: those of the last w steps, or the last 7 days if more
        rows = np.arange(t)
        week_ago = np.searchsorted(ts, ts - int(7 * DAY_SECONDS * 1e9), side="right")
        lo = np.minimum(np.maximum(rows - w, 0), week_ago)
        cum = _weekday_counts(self.index)
        weekend = _weekend_share(cum[rows + 1] - cum[lo])
        return np.asarray(_rule(median, mean, weekend, None), dtype=float)

    # ------------------------------------------------------------ slicing
    def slice(self, start: int | None = None, stop: int | None = None, *,
              drop_empty: bool = False) -> Bars:
        """Rows ``start:stop`` as a new panel (used by truncation tests, walk-forward).

        ``drop_empty=True`` also drops the symbols that have no bar (no close) in
        those rows, so a panel cut at t knows only the symbols that existed by t.
        """
        sl = slice(start, stop)
        cols = np.arange(self.n_symbols)
        if drop_empty:
            cols = np.flatnonzero(~np.all(np.isnan(self.close[sl]), axis=0))
        return Bars(index=self.index[sl], symbols=tuple(self.symbols[j] for j in cols),
                    **{f: np.ascontiguousarray(getattr(self, f)[sl][:, cols]) for f in FIELDS},
                    name=self.name, annualization=self.annualization,
                    membership=self.membership)

    def select(self, symbols: list[str] | tuple[str, ...]) -> Bars:
        missing = [s for s in symbols if s not in self.symbols]
        if missing:
            raise DataError(f"unknown symbols {missing}", code="DQ_UNKNOWN_SYMBOL")
        cols = [self.symbols.index(s) for s in symbols]
        return Bars(index=self.index, symbols=tuple(symbols),
                    **{f: np.array(getattr(self, f)[:, cols]) for f in FIELDS}, name=self.name,
                    annualization=self.annualization, membership=self.membership)

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
        return cls(index=index, symbols=symbols, open=arrays["open"], high=arrays["high"],
                   low=arrays["low"], close=arrays["close"], volume=arrays["volume"], name=name)

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
