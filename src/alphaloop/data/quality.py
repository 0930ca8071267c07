"""The data-quality gate: coded checks on market data before anyone trusts it.

Two kinds of check live here.

*Hard checks* run while a frame becomes a :class:`~alphaloop.data.bars.Bars` panel
(:func:`check_long_frame`, :func:`check_wide_frame`). Data that fails one cannot be
used at all, so they raise :class:`~alphaloop.errors.DataError` with a stable code and
a message that names the column, symbol, timestamp and row at fault.

*The report* (:func:`quality_report`) looks at a finished panel and lists what is
suspicious without being fatal: holes in the history (``DQ_GAP``), prices that stop
moving (``DQ_STALE_RUN``), too little history to judge a strategy
(``DQ_SHORT_HISTORY``), weekend bars in a weekday calendar (``DQ_OFF_CALENDAR``).
Calendar breaks that make daily data wrong are errors: two bars of one symbol on
one date (``DQ_DUPLICATE_DAY``, typically a time-zone shift). It re-checks the price invariants as errors too, so that a
panel built by hand (or a stored file edited behind our back) is caught as well.

Codes (all ``DQ_*``) and what they mean:

=========================  ==============================================================
``DQ_FORMAT``              not a DataFrame / layout cannot be recognised
``DQ_MISSING_COLUMN``      a required column is absent
``DQ_DUPLICATE_COLUMN``    two columns have the same name after lowercasing/stripping
``DQ_EMPTY``               no rows (or no symbols)
``DQ_BAD_TIMESTAMP``       a timestamp that does not parse (or is missing, or a number
                          that is not an epoch time of a readable unit)
``DQ_BAD_SYMBOL``          a missing or empty symbol
``DQ_DUPLICATE_SYMBOL``    a wide frame with two columns for one symbol
``DQ_DTYPE``               a value that is not a number
``DQ_ALL_NAN``             a price column, or a symbol, with no values at all
``DQ_NAN_VALUES``          a bar with some but not all of open/high/low/close
``DQ_INFINITE``            a price or volume that is ±inf
``DQ_DUPLICATE_TIMESTAMP`` the same symbol twice at one timestamp (CRITICAL)
``DQ_UNSORTED``            timestamps going backwards within a symbol
``DQ_NONPOSITIVE_PRICE``   a price <= 0
``DQ_TINY_PRICE``          a positive price below ``MIN_PRICE`` (1e-100)
``DQ_HIGH_LT_LOW``         high below low
``DQ_CLOSE_OUTSIDE_RANGE`` close or open outside [low, high]
``DQ_NEGATIVE_VOLUME``     volume < 0
``DQ_GAP``                 (warning) a hole much longer than the usual bar spacing
``DQ_STALE_RUN``           (warning) many identical closes in a row
``DQ_SPIKE``               (warning) a one-bar spike: a close ``spike_factor`` times above
                           (or below) both neighbours, which agree with each other
``DQ_SHORT_HISTORY``       (warning) fewer bars than ``min_years`` of history
``DQ_SYMBOL_CASE``         (warning) symbols that differ only in case (``AAA``, ``aaa``)
``DQ_DUPLICATE_DAY``       daily data with two bars of one symbol on one UTC date (CRITICAL)
``DQ_OFF_CALENDAR``        (warning) Saturday/Sunday bars in weekday-calendar data
``DQ_SURVIVORSHIP_UNKNOWN`` (warning) several symbols and no membership table: the
                           universe may hold only the survivors
``SURVIVORSHIP_CHECK_FAIL`` the membership table shows removals whose bars are missing
                           (the universe was filtered with hindsight; CRITICAL)
``DQ_MEMBER_MISSING``      (warning) a current member has no bars
``DQ_NOT_A_MEMBER``        a symbol of the bars that the membership table never lists
``DQ_NEVER_A_MEMBER``      (warning) a listed symbol none of whose bars is inside its periods
=========================  ==============================================================

Every check is a vectorized numpy expression over whole columns or the whole
(T × N) panel; Python loops only run over the (few) symbols that actually fail.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import numpy as np
import pandas as pd

from alphaloop.data.bars import WEEKEND_SHARE, quiet_days
from alphaloop.data.dates import numeric_dates_as_iso
from alphaloop.errors import DataError, ErrorClass

if TYPE_CHECKING:
    from alphaloop.data.bars import Bars

PRICES: tuple[str, ...] = ("open", "high", "low", "close")
NUMERIC: tuple[str, ...] = (*PRICES, "volume")
REQUIRED: tuple[str, ...] = ("timestamp", "symbol", *PRICES)
REL_TOL = 1e-9
MIN_PRICE = 1e-100
"""The smallest price taken: far below any traded asset's, far above the floats whose
reciprocal overflows (a position of capital / price shares would be infinite)."""
"""Relative tolerance for ``low <= open, close <= high`` (float round-off in vendor data)."""

_NULL_TOKENS = frozenset({"", "nan", "none", "null", "na", "n/a", "<na>", "nat"})

Severity = Literal["error", "warning"]
CRITICAL_CODES = frozenset({"DQ_DUPLICATE_TIMESTAMP", "DQ_DUPLICATE_DAY",
                            "SURVIVORSHIP_CHECK_FAIL"})
"""Codes whose data would make any result untrustworthy (DESIGN §5, data-quality gate)."""
_DAY_NS = 86_400 * 10**9


def _fail(code: str, message: str, *, error_class: ErrorClass | None = None) -> NoReturn:
    raise DataError(message, code=code, error_class=error_class)


def _ts(value: Any) -> str:
    """A timestamp as ISO text in UTC for messages (a naive one is UTC, as parsed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            t = pd.Timestamp(value)
    except (ValueError, TypeError):
        return str(value)  # a raw value that is no date: as written
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).isoformat()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# =============================================================== column parsing
def normalize_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Lowercase and strip column names; two names that collide are an error."""
    names = [str(c).strip().lower() for c in df.columns]
    dups = sorted(n for n, k in Counter(names).items() if k > 1)
    if dups:
        _fail("DQ_DUPLICATE_COLUMN",
              f"columns {dups} appear more than once (after lowercasing and stripping)")
    out = df.copy(deep=False)
    out.columns = pd.Index(names)
    return out


def parse_timestamps(values: pd.Series | pd.Index, what: str = "timestamp") -> pd.DatetimeIndex:
    """Parse to a UTC, nanosecond DatetimeIndex.

    Naive times are taken to be UTC; aware ones are converted. Whole numbers are epoch
    times (UTC) only where their magnitude names the unit (:func:`epoch_unit`, e.g. a
    crypto exchange's milliseconds); any other number is refused, since guessing the
    unit wrong would shift the data by decades. The error names the first value that
    does not parse and its row.
    """
    s = pd.Series(values).reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        unit = epoch_unit(s)
        if unit is not None:
            return pd.DatetimeIndex(pd.to_datetime(s.astype(np.int64), unit=unit,
                                                   utc=True)).as_unit("ns")
        first = s.iloc[0].item()  # a Python number in the message, not np.int64(...)
        compact = 19000101 <= first <= 21001231 and float(first).is_integer()
        _fail("DQ_BAD_TIMESTAMP",
              f"{what} is numeric (first value {first!r}); "
              + ("numbers like YYYYMMDD are refused: write the dates as text, 2020-01-02 "
                 "(ISO 8601)" if compact else
                 "numbers are read as epoch times only in one unit (s, ms, us or ns) "
                 "between 1980 and 2286 — give those, datetimes or ISO-8601 strings"))
    if not pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = _parse_text_times(s, what)
    else:
        s = pd.to_datetime(s, utc=True)
    missing = s.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        _fail("DQ_BAD_TIMESTAMP", f"{what} is missing at row {row} "
              f"({_plural(int(missing.sum()), 'missing value')})")
    return pd.DatetimeIndex(s).as_unit("ns")


# Epoch times from 1980 to 2286 in seconds, milliseconds, microseconds and nanoseconds
# fall in four ranges that do not overlap, so the magnitude reads the unit; anything
# outside them (YYYYMMDD, row numbers, 1970 in seconds) is not taken for a time.
_EPOCH_1980 = 315_532_800  # 1980-01-01T00:00:00Z in seconds
EpochUnit = Literal["s", "ms", "us", "ns"]
_EPOCH_UNITS: tuple[tuple[EpochUnit, int, int], ...] = (
    ("s", _EPOCH_1980, 10**10), ("ms", _EPOCH_1980 * 10**3, 10**13),
    ("us", _EPOCH_1980 * 10**6, 10**16), ("ns", _EPOCH_1980 * 10**9, 2**63 - 1))


def epoch_unit(s: pd.Series) -> EpochUnit | None:
    """The unit of a column of epoch times when every value lies in one unit's range
    (whole numbers; floats only below 2**53, where they are exact), else None."""
    v = s.to_numpy()
    if len(v) == 0 or not np.isfinite(v.astype(np.float64)).all():
        return None
    if v.dtype.kind == "f" and not ((v == np.floor(v)).all() and np.abs(v).max() < 2**53):
        return None
    lo, hi = v.min(), v.max()
    return next((unit for unit, start, end in _EPOCH_UNITS if start <= lo and hi < end), None)


def _parse_text_times(s: pd.Series, what: str) -> pd.Series:
    """Strings/objects → UTC datetimes; a value that cannot parse is an error.

    ISO 8601 first; then dates with the day and the month as numbers, in the one order
    every value allows (:mod:`alphaloop.data.dates`: both possible is an error, never a
    guess); anything else (month names, ...) as pandas reads it, without its warnings.
    """
    given = s  # errors name the values as written
    if s.map(lambda v: isinstance(v, str)).all():
        try:
            return pd.to_datetime(s, utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            iso = numeric_dates_as_iso(s, what)
            if iso is not None:
                s = iso
    with warnings.catch_warnings():  # its format guesses: the checks above decide
        warnings.simplefilter("ignore", UserWarning)
        try:
            return pd.to_datetime(s, utc=True)
        except (ValueError, TypeError, OverflowError):
            pass  # mixed formats or a bad value: parse element by element to find out
        parsed = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
    bad = (parsed.isna() & s.notna()).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail("DQ_BAD_TIMESTAMP", f"{what} value {given.iloc[row]!r} at row {row} is not a "
              f"date/time ({_plural(int(bad.sum()), 'bad value')})")
    return parsed


def to_float(values: pd.Series, what: str) -> np.ndarray:
    """A column as float64; text that is not a number is an error naming an example.

    Missing markers (empty, "nan", "null", None) become NaN; the NaN rules are
    applied later, where we know whether a missing value is acceptable.
    """
    s = values.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(s.dtype):
        _fail("DQ_DTYPE", f"{what} holds booleans, not numbers")
    if pd.api.types.is_numeric_dtype(s.dtype):
        return np.asarray(s.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    num = pd.to_numeric(s, errors="coerce")
    text = s.astype(str).str.strip().str.lower()
    bad = (num.isna() & s.notna() & ~text.isin(_NULL_TOKENS)).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail("DQ_DTYPE", f"{what} must be numeric; found {s.iloc[row]!r} at row {row} "
              f"({_plural(int(bad.sum()), 'non-numeric value')})")
    return np.asarray(num.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


# ================================================================ long frames
def check_long_frame(df: pd.DataFrame, *, sort: bool = False,
                     check_values: bool = True) -> pd.DataFrame:
    """Validate and clean a long OHLCV frame; the input of :meth:`Bars.from_long`.

    Returns a new frame with exactly the columns ``timestamp`` (UTC, ns), ``symbol``
    (str), ``open, high, low, close, volume`` (float64). Rows whose four prices are
    all NaN are dropped (a "no bar" placeholder); any other problem raises
    :class:`DataError`. With ``sort=True`` rows are sorted by (symbol, timestamp)
    instead of rejecting out-of-order timestamps. ``check_values=False`` skips the
    price invariants (``DQ_NONPOSITIVE_PRICE``, ``DQ_HIGH_LT_LOW``,
    ``DQ_CLOSE_OUTSIDE_RANGE``, ``DQ_NEGATIVE_VOLUME``) so that dirty data can still be
    loaded and inspected with :func:`quality_report`. Extra columns are ignored.
    """
    if not isinstance(df, pd.DataFrame):
        _fail("DQ_FORMAT", f"expected a pandas DataFrame, got {type(df).__name__}")
    df = normalize_columns(df)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        _fail("DQ_MISSING_COLUMN", f"missing required columns {missing}; long format needs "
              f"{[*REQUIRED, 'volume']} (volume optional), got {list(df.columns)}")
    if len(df) == 0:
        _fail("DQ_EMPTY", "the frame has no rows")
    out = _coerce_long(df)
    out = _drop_empty_bars(out)
    _check_long_nans(out)
    _check_duplicates(out)
    out = _check_order(out, sort)
    if check_values:
        _check_long_values(out)
    return out


def _coerce_long(df: pd.DataFrame) -> pd.DataFrame:
    """Parse every required column into its final dtype (row order unchanged)."""
    cols: dict[str, Any] = {
        "timestamp": parse_timestamps(df["timestamp"], "column 'timestamp'"),
        "symbol": _parse_symbols(df["symbol"]),
    }
    n = len(df)
    for c in NUMERIC:
        cols[c] = (to_float(df[c], f"column {c!r}") if c in df.columns
                   else np.full(n, np.nan))
    return pd.DataFrame(cols)


def _parse_symbols(s: pd.Series) -> np.ndarray:
    raw = s.reset_index(drop=True)
    text = raw.astype(str).str.strip()
    bad = (raw.isna() | (text == "")).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail("DQ_BAD_SYMBOL", f"column 'symbol' is missing or empty at row {row} "
              f"({_plural(int(bad.sum()), 'row')})")
    return np.asarray(text.to_numpy(dtype=object))


def rows_where(df: pd.DataFrame, mask: np.ndarray) -> str:
    """'symbol 'X' at <ts> (row r; k rows)' for the first row where ``mask``."""
    rows = np.flatnonzero(mask)
    r = int(rows[0])
    return (f"symbol {df['symbol'].iat[r]!r} at {_ts(df['timestamp'].iat[r])} "
            f"(row {int(df.index[r])}; {_plural(len(rows), 'row')} in all)")


def _drop_empty_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Refuse all-NaN columns/symbols, then drop rows whose OHLC are all NaN."""
    prices = df[list(PRICES)].to_numpy()
    nan = np.isnan(prices)
    dead = [c for c, all_nan in zip(PRICES, nan.all(axis=0), strict=True) if all_nan]
    if dead:
        _fail("DQ_ALL_NAN", f"price columns {dead} contain no values (all NaN)")
    empty = nan.all(axis=1)
    has_bar = pd.Series(~empty).groupby(df["symbol"].to_numpy()).any()
    hollow = sorted(has_bar.index[~has_bar.to_numpy()].astype(str))
    if hollow:
        _fail("DQ_ALL_NAN", f"symbols {hollow[:10]} have only NaN prices "
              f"({_plural(len(hollow), 'symbol')})")
    return df[~empty] if empty.any() else df


def refuse_partial_rows(df: pd.DataFrame, values: np.ndarray, columns: Sequence[str],
                        need: str) -> None:
    """``DQ_NAN_VALUES`` naming the first row of ``df`` (with ``symbol`` and
    ``timestamp``) that has some of ``values``' columns (named ``columns``) but not all;
    ``need`` says what a bar needs. A row with none of them is no bar, and passes."""
    nan = np.isnan(values)
    part = nan.any(axis=1) & ~nan.all(axis=1)
    if part.any():
        cols = [c for c, k in zip(columns, nan[part].any(axis=0), strict=True) if k]
        _fail("DQ_NAN_VALUES", f"partially missing prices (NaN in {cols}) for {rows_where(df, part)}; "
              f"a bar needs all of {need}, or none")


def _check_long_nans(df: pd.DataFrame) -> None:
    refuse_partial_rows(df, df[list(PRICES)].to_numpy(), PRICES, "open/high/low/close")
    inf = np.isinf(df[list(NUMERIC)].to_numpy()).any(axis=1)
    if inf.any():
        _fail("DQ_INFINITE", f"infinite price or volume for {rows_where(df, inf)}")


def _check_duplicates(df: pd.DataFrame) -> None:
    dup = df.duplicated(["symbol", "timestamp"], keep="first").to_numpy()
    if dup.any():
        _fail("DQ_DUPLICATE_TIMESTAMP", f"duplicate (symbol, timestamp): {rows_where(df, dup)} repeats an "
              "earlier row",
              error_class=ErrorClass.CRITICAL)


def _check_order(df: pd.DataFrame, sort: bool) -> pd.DataFrame:
    """Timestamps must increase within each symbol (unless ``sort`` asks us to fix it)."""
    if sort:
        return df.sort_values(["symbol", "timestamp"], kind="stable")
    back = (df.groupby("symbol", sort=False)["timestamp"].diff() < pd.Timedelta(0)).to_numpy()
    if back.any():
        _fail("DQ_UNSORTED", f"timestamps go backwards within a symbol: {rows_where(df, back)} comes "
              "after a later bar of that symbol; sort the file by symbol and timestamp "
              "(or pass sort=True to load_bars)")
    return df


def _check_long_values(df: pd.DataFrame) -> None:
    o, h, lo, c, v = (df[k].to_numpy() for k in NUMERIC)
    for code, mask, what in _price_violations(o, h, lo, c, v):
        if mask.any():
            _fail(code, f"{what}: {rows_where(df, mask)}")


def _tiny(prices: np.ndarray) -> np.ndarray:
    return (prices > 0) & (prices < MIN_PRICE)


def _price_violations(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                      v: np.ndarray) -> list[tuple[str, np.ndarray, str]]:
    """The price invariants as boolean masks (NaN compares False, so holes pass).

    Works on 1-d columns and (T × N) panels alike.
    """
    with np.errstate(invalid="ignore"):
        up, down = h * (1 + REL_TOL), lo * (1 - REL_TOL)
        return [
            ("DQ_NONPOSITIVE_PRICE", (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0),
             "price <= 0 in open/high/low/close"),
            ("DQ_TINY_PRICE", _tiny(o) | _tiny(h) | _tiny(lo) | _tiny(c),
             f"price below {MIN_PRICE:g} in open/high/low/close (too small to size a "
             "position)"),
            ("DQ_HIGH_LT_LOW", h < lo, "high is below low"),
            ("DQ_CLOSE_OUTSIDE_RANGE", (c > up) | (c < down) | (o > up) | (o < down),
             "close or open outside [low, high]"),
            ("DQ_NEGATIVE_VOLUME", v < 0, "negative volume"),
        ]


# ================================================================ wide frames
def check_wide_frame(close_df: pd.DataFrame, *, sort: bool = False,
                     check_values: bool = True) -> pd.DataFrame:
    """Validate a wide close-only frame (index timestamps, one column per symbol).

    The index may be a DatetimeIndex or anything that parses as dates. Returns a
    float64 frame with a UTC nanosecond index named ``timestamp`` and string
    symbol columns; rows where every symbol is NaN are dropped. ``check_values=False``
    skips the ``DQ_NONPOSITIVE_PRICE`` check (infinite values are always refused).
    """
    if not isinstance(close_df, pd.DataFrame):
        _fail("DQ_FORMAT", f"expected a pandas DataFrame, got {type(close_df).__name__}")
    if close_df.shape[0] == 0 or close_df.shape[1] == 0:
        _fail("DQ_EMPTY", f"the wide frame is empty (shape {close_df.shape})")
    symbols = [str(c).strip() for c in close_df.columns]
    dups = sorted(s for s, k in Counter(symbols).items() if k > 1)
    if dups:
        _fail("DQ_DUPLICATE_SYMBOL", f"symbol columns {dups} appear more than once")
    index = parse_timestamps(close_df.index, "index (timestamp)")
    values = np.column_stack([to_float(close_df.iloc[:, j], f"column {s!r}")
                              for j, s in enumerate(symbols)])
    out = pd.DataFrame(values, index=pd.DatetimeIndex(index, name="timestamp"), columns=symbols)
    out = _drop_empty_rows_wide(out)
    return _check_wide_values(_check_wide_index(out, sort), check_values)


def _drop_empty_rows_wide(df: pd.DataFrame) -> pd.DataFrame:
    nan = np.isnan(df.to_numpy())
    dead = [s for s, k in zip(df.columns, nan.all(axis=0), strict=True) if k]
    if dead:
        _fail("DQ_ALL_NAN", f"symbols {dead[:10]} have no values (all NaN)")
    empty = nan.all(axis=1)
    return df[~empty] if empty.any() else df


def _check_wide_index(df: pd.DataFrame, sort: bool) -> pd.DataFrame:
    idx = pd.DatetimeIndex(df.index)
    dup = idx.duplicated()
    if dup.any():
        _fail("DQ_DUPLICATE_TIMESTAMP", f"timestamp {_ts(idx[dup][0])} appears more than once "
              f"({_plural(int(dup.sum()), 'duplicate')})", error_class=ErrorClass.CRITICAL)
    if sort:
        return df.sort_index(kind="stable")
    back = np.flatnonzero(np.diff(idx.asi8) < 0)
    if back.size:
        r = int(back[0]) + 1
        _fail("DQ_UNSORTED", f"timestamp {_ts(idx[r])} at row {r} comes after "
              f"{_ts(idx[r - 1])}; sort the file by timestamp "
              "(or pass sort=True to load_bars)")
    return df


def _check_wide_values(df: pd.DataFrame, check_values: bool) -> pd.DataFrame:
    v = df.to_numpy()
    checks = [("DQ_INFINITE", np.isinf(v), "infinite price")]
    if check_values:
        checks.append(("DQ_NONPOSITIVE_PRICE", v <= 0, "price <= 0"))
        checks.append(("DQ_TINY_PRICE", _tiny(v), f"price below {MIN_PRICE:g} (too small "
                                                   "to size a position)"))
    for code, mask, what in checks:
        if mask.any():
            t, j = divmod(int(np.flatnonzero(mask)[0]), v.shape[1])
            _fail(code, f"{what}: symbol {df.columns[j]!r} at {_ts(df.index[t])} "
                  f"(row {t}; {_plural(int(mask.sum()), 'value')} in all)")
    return df


# ================================================================ the report
@dataclass(frozen=True)
class QualityIssue:
    """One finding: a code, how bad it is, a message, which symbol, how many bars,
    and the row of the first offending bar (where the finding becomes observable)."""

    code: str
    severity: Severity
    message: str
    symbol: str | None = None
    count: int = 1
    first: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "symbol": self.symbol, "count": self.count}


@dataclass(frozen=True)
class QualityReport:
    """All findings on one panel. ``ok`` means no *errors* (warnings are allowed)."""

    issues: tuple[QualityIssue, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> list[QualityIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[QualityIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {i.code for i in self.issues}

    def raise_for_errors(self, where: str = "") -> None:
        """Raise the first error as a :class:`DataError` (no-op when ``ok``).

        Calendar breaks (``DQ_DUPLICATE_DAY``) are raised before price errors and
        carry :attr:`ErrorClass.CRITICAL`.
        """
        if self.errors:
            first = min(self.errors, key=lambda i: i.code not in CRITICAL_CODES)
            more = f" (+{len(self.errors) - 1} more errors)" if len(self.errors) > 1 else ""
            _fail(first.code, f"{where}{first.message}{more}",
                  error_class=ErrorClass.CRITICAL if first.code in CRITICAL_CODES else None)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "n_errors": len(self.errors), "n_warnings": len(self.warnings),
                "issues": [i.to_dict() for i in self.issues]}


def quality_report(bars: Bars, *, min_years: float = 1.0, stale_run: int = 5,
                   gap_factor: float = 5.0, spike_factor: float = 5.0) -> QualityReport:
    """Check a panel; return every finding instead of raising.

    Errors: ``DQ_NONPOSITIVE_PRICE``, ``DQ_HIGH_LT_LOW``, ``DQ_CLOSE_OUTSIDE_RANGE``,
    ``DQ_NEGATIVE_VOLUME``, ``DQ_NAN_VALUES``, ``DQ_DUPLICATE_DAY`` (daily data —
    median bar spacing of at least half a day — with two bars of one symbol on one
    UTC date, e.g. 00:00 and 21:00). Warnings: ``DQ_OFF_CALENDAR`` (weekday-calendar
    data — at most 5% of the panel's bars on Saturday/Sunday UTC — with weekend bars
    anyway, the mark of a time-zone shift), ``DQ_GAP`` (two consecutive
    bars of a symbol further apart than ``gap_factor`` × the panel's median bar
    spacing — for daily bars a hole of more than ~5 calendar days, while weekends and
    holidays pass), ``DQ_STALE_RUN`` (``stale_run`` or more identical closes in a row),
    ``DQ_SPIKE`` (a close at least ``spike_factor`` times above or below both its
    neighbours' closes while they differ by less than 1.5×: a bad print that reverts,
    not a move), ``DQ_SHORT_HISTORY`` (fewer than ``min_years`` × bars-per-year bars)
    and ``DQ_SYMBOL_CASE`` (symbols that differ only in case, such as ``AAA`` and
    ``aaa``: most likely one symbol split in two, each with holes).
    One issue per (code, symbol), with the number of offending bars as ``count``.
    """
    if bars.n_bars == 0 or bars.n_symbols == 0:
        return QualityReport((QualityIssue("DQ_EMPTY", "error", "the panel has no bars"),))
    issues: list[QualityIssue] = []
    issues += _calendar_errors(bars)
    issues += _panel_errors(bars)
    issues += _calendar_warnings(bars)
    issues += _gap_warnings(bars, gap_factor)
    issues += _stale_warnings(bars, stale_run)
    issues += _spike_warnings(bars, spike_factor)
    issues += _history_warnings(bars, min_years)
    issues += _case_warnings(bars)
    issues += survivorship_issues(bars)
    return QualityReport(tuple(issues))


def _case_warnings(bars: Bars) -> list[QualityIssue]:
    """Symbols equal but for case (symbols are case-sensitive: nothing merges them)."""
    groups: dict[str, list[str]] = {}
    for sym in bars.symbols:
        groups.setdefault(str(sym).casefold(), []).append(str(sym))
    return [QualityIssue("DQ_SYMBOL_CASE", "warning",
                         f"symbols {names} differ only in case: one symbol split in two? "
                         "(symbols are case-sensitive)", symbol=names[0], count=len(names))
            for names in groups.values() if len(names) > 1]


def _per_symbol(bars: Bars, code: str, severity: Severity, mask: np.ndarray,
                what: str, unit: str = "bar") -> list[QualityIssue]:
    """One issue per symbol column of a (T × N) mask that has any True."""
    counts = mask.sum(axis=0)
    first = mask.argmax(axis=0)
    return [QualityIssue(code, severity,
                         f"{what}: symbol {bars.symbols[j]!r}, first at "
                         f"{_ts(bars.index[first[j]])} ({_plural(int(counts[j]), unit)})",
                         symbol=bars.symbols[j], count=int(counts[j]), first=int(first[j]))
            for j in np.flatnonzero(counts)]


def _panel_errors(bars: Bars) -> list[QualityIssue]:
    o, h, lo, c, v = (np.asarray(bars.field(f)) for f in NUMERIC)
    nan = np.isnan(np.stack([o, h, lo, c]))
    out = _per_symbol(bars, "DQ_NAN_VALUES", "error", nan.any(axis=0) & ~nan.all(axis=0),
                      "partially missing prices")
    for code, mask, what in _price_violations(o, h, lo, c, v):
        out += _per_symbol(bars, code, "error", mask, what)
    return out


def _previous_valid(bars: Bars) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, prev)``: where each symbol has a bar, and the row of its previous one.

    ``prev[t, j]`` is a running maximum of valid row numbers (-1 before the first).
    """
    valid = ~np.isnan(bars.close)
    rows = np.where(valid, np.arange(bars.n_bars)[:, None], -1)
    last = np.maximum.accumulate(rows, axis=0)
    prev = np.vstack([np.full((1, bars.n_symbols), -1), last[:-1]])
    return valid, prev


_DAILY_STEPS = 5
"""Steps of a symbol's own history that say whether it is daily (:func:`_calendar_errors`)."""


def _calendar_errors(bars: Bars) -> list[QualityIssue]:
    """``DQ_DUPLICATE_DAY``: a symbol's bar on the same UTC date as its previous bar,
    in daily (or coarser) data. Whether a symbol's data is daily at bar t is judged on
    its own spacing before t: most of its last :data:`_DAILY_STEPS` steps before the
    one into t are half a day or longer (a symbol's first step has none before it and
    is not judged). So bars after t, or another symbol's (an intraday one listing
    later), cannot hide or invent an error at t."""
    ts = bars.index.asi8
    day = ts // _DAY_NS
    has_bar = np.ascontiguousarray(~np.isnan(bars.close).T)  # (N, T): a row per symbol
    out = []
    for j, s in enumerate(bars.symbols):
        rows = np.flatnonzero(has_bar[j])
        same = day[rows[1:]] == day[rows[:-1]]  # the step into rows[k + 1]
        if not same.any():
            continue
        long = np.concatenate([[0], np.cumsum(np.diff(ts[rows]) >= _DAY_NS // 2)])
        k = np.arange(len(rows) - 1)
        lo = np.maximum(k - _DAILY_STEPS, 0)  # the steps before it: lo..k-1
        dup = np.flatnonzero(same & (2 * (long[k] - long[lo]) > k - lo))
        if not len(dup):
            continue
        prev, t, n = int(rows[dup[0]]), int(rows[dup[0] + 1]), len(dup)
        out.append(QualityIssue(
            "DQ_DUPLICATE_DAY", "error",
            f"more than one bar on one UTC date in daily data: symbol {s!r} on "
            f"{bars.index[t].date().isoformat()} ({_ts(bars.index[prev])} and "
            f"{_ts(bars.index[t])}; {_plural(n, 'extra bar')} in all) — mixed time zones "
            "or session stamps?", symbol=s, count=n, first=t))
    return out


def _calendar_warnings(bars: Bars) -> list[QualityIssue]:
    """``DQ_OFF_CALENDAR``: bars on the weekend of data whose calendar is weekdays (the
    two quietest UTC weekdays: Saturday and Sunday west of Asia, see
    :func:`~alphaloop.data.bars.quiet_days`)."""
    dow = np.asarray(bars.index.day_of_week)
    counts = np.bincount(dow, minlength=7)
    quiet = np.sort(quiet_days(counts))
    weekend = np.isin(dow, quiet)
    if not weekend.any() or weekend.mean() > WEEKEND_SHARE:
        return []
    mask = weekend[:, None] & ~np.isnan(bars.close)
    names = "/".join(_WEEKDAYS[d] for d in quiet)
    return _per_symbol(bars, "DQ_OFF_CALENDAR", "warning", mask,
                       f"bars on {names} (UTC) in weekday-calendar data (a time-zone shift?)")


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _gap_warnings(bars: Bars, gap_factor: float) -> list[QualityIssue]:
    """Gaps between consecutive *valid* bars of each symbol, all symbols at once.

    ``prev[t, j]`` is the row of symbol j's previous valid bar (a running maximum
    of valid row numbers), so the spacing at each valid bar is one subtraction.
    Intraday data with trading sessions (hourly equities: every night is a break of
    many bars) judges a hole that spans a change of date as daily data does
    (``gap_factor`` days), and a hole within a date by the median bar spacing.
    """
    if bars.n_bars < 3:
        return []
    ts = bars.index.asi8
    step = float(np.median(np.diff(ts)))
    valid, prev = _previous_valid(bars)
    has_prev = valid & (prev >= 0)
    before = np.maximum(prev, 0)
    spacing = np.where(has_prev, ts[:, None] - ts[before], 0)
    limit = np.full(spacing.shape, gap_factor * step)
    sessions = _sessions(ts, gap_factor * step)
    if sessions:
        day = ts // _DAY_NS
        limit[day[:, None] != day[before]] = gap_factor * _DAY_NS
    gaps = has_prev & (spacing > limit)
    rule = (f"gap longer than {gap_factor:g} days across dates or {gap_factor:g}× the "
            "median bar spacing within one" if sessions else
            f"gap longer than {gap_factor:g}× the median bar spacing")
    return _per_symbol(bars, "DQ_GAP", "warning", gaps,
                       f"{rule} (timestamp of the bar after the hole)", unit="gap")


_DAY_NS = 86_400 * 10**9


def _sessions(ts: np.ndarray, limit: float) -> bool:
    """Intraday bars whose typical change of (UTC) date is a break of more than
    ``limit``: a market that closes every night, not a 24/7 one."""
    crossing = np.diff(ts // _DAY_NS) > 0
    if limit >= _DAY_NS or not crossing.any():
        return False
    return bool(np.median(np.diff(ts)[crossing]) > limit)


def _stale_warnings(bars: Bars, stale_run: int) -> list[QualityIssue]:
    """Runs of identical closes: count consecutive equal pairs with a reset trick.

    ``run[t]`` = number of consecutive ``close[t] == close[t-1]`` ending at t
    (cumulative sum minus its value at the last break). A run of k equal closes
    has k-1 equal pairs, and passes ``run == stale_run - 1`` exactly once.
    """
    if bars.n_bars < stale_run or stale_run < 2:
        return []
    c = bars.close
    eq = c[1:] == c[:-1]
    csum = np.cumsum(eq, axis=0)
    at_break = np.maximum.accumulate(np.where(eq, 0, csum), axis=0)
    run = csum - at_break
    starts = np.vstack([np.zeros((1, bars.n_symbols), bool), run == stale_run - 1])
    return _per_symbol(bars, "DQ_STALE_RUN", "warning", starts,
                       f"{stale_run} or more identical closes in a row "
                       f"(timestamp of the {stale_run}th)", unit="run")


def _spike_warnings(bars: Bars, factor: float) -> list[QualityIssue]:
    """Closes ``factor`` times away from both neighbours that agree with each other."""
    if bars.n_bars < 3:
        return []
    c = bars.close
    with np.errstate(divide="ignore", invalid="ignore"):
        up, down = c[1:-1] / c[:-2], c[1:-1] / c[2:]
        around = c[2:] / c[:-2]
    spike = (((up >= factor) & (down >= factor)) | ((up <= 1 / factor) & (down <= 1 / factor))) \
        & (around < 1.5) & (around > 1 / 1.5)
    edge = np.zeros((1, bars.n_symbols), bool)
    return _per_symbol(bars, "DQ_SPIKE", "warning", np.vstack([edge, spike, edge]),
                       f"a close {factor:g}x away from both neighbouring closes")


def _history_warnings(bars: Bars, min_years: float) -> list[QualityIssue]:
    need = min_years * bars.periods_per_year
    have = (~np.isnan(bars.close)).sum(axis=0)
    return [QualityIssue("DQ_SHORT_HISTORY", "warning",
                         f"symbol {s!r} has {int(n)} bars, less than {min_years:g} years "
                         f"(~{need:.0f} bars)", symbol=s, count=int(n))
            for s, n in zip(bars.symbols, have, strict=True) if n < need]


def survivorship_issues(bars: Bars) -> list[QualityIssue]:
    """The survivorship check (DESIGN §5): membership unknown (a warning on a panel of
    several symbols), removed members whose bars are missing (CRITICAL), symbols the
    table never lists (an error), current members without bars (a warning)."""
    m = bars.membership
    if m is None:
        if bars.n_symbols < 2:
            return []
        return [QualityIssue("DQ_SURVIVORSHIP_UNKNOWN", "warning",
                             f"{bars.n_symbols} symbols and no membership information: the "
                             "universe may hold only the survivors (import it with "
                             "--membership FILE)")]
    out: list[QualityIssue] = []
    last = bars.index[-1].normalize().tz_localize(None)
    missing = set(m.symbols) - set(bars.symbols)
    gone = [s for s in m.removed(last) if s in missing]
    if gone:
        out.append(QualityIssue(
            "SURVIVORSHIP_CHECK_FAIL", "error",
            f"the membership shows {_plural(len(gone), 'removed symbol')} whose bars are "
            f"missing ({', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''}): the universe "
            "holds only survivors", count=len(gone)))
    strangers = sorted(set(bars.symbols) - set(m.symbols))
    if strangers:
        out.append(QualityIssue("DQ_NOT_A_MEMBER", "error",
                                f"symbol(s) {', '.join(strangers[:5])} have bars but no "
                                "membership period", count=len(strangers)))
    current = sorted(missing - set(gone))
    if current:
        out.append(QualityIssue("DQ_MEMBER_MISSING", "warning",
                                f"member(s) {', '.join(current[:5])} have no bars",
                                count=len(current)))
    # listed, but no period covers a bar of theirs: never traded (a date typo?)
    has_bar = ~np.isnan(bars.close)
    covered = (bars.member_mask() & has_bar).any(axis=0)
    never = [s for j, s in enumerate(bars.symbols)
             if s in m.symbols and has_bar[:, j].any() and not covered[j]]
    if never:
        out.append(QualityIssue("DQ_NEVER_A_MEMBER", "warning",
                                f"symbol(s) {', '.join(never[:5])} have bars but none inside "
                                "their membership periods: never traded", count=len(never)))
    return out
