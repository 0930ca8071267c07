"""Reading market data files (CSV, Parquet) into :class:`~alphaloop.data.bars.Bars`.

Three layouts are understood, and told apart automatically (column names are matched
case-insensitively; the time column may be called ``timestamp``, ``date``,
``datetime``, ``time`` or ``open_time``, as crypto exchanges export it):

- **long**: one row per (timestamp, symbol) with ``open, high, low, close`` and
  optionally ``volume`` — recognised by its ``symbol`` column;
- **single-symbol**: ``Date, Open, High, Low, Close[, Adj Close][, Volume]`` with no
  ``symbol`` column (a Yahoo-style download); the symbol is ``symbol=`` or the file
  name. With ``Adj Close``, open/high/low/close are multiplied by ``Adj Close /
  Close`` (splits and dividends), unless ``adjust=False``; volume stays as it is;
- **wide**: a close-only table, the first column (or the index) holds dates and
  every other column is one symbol's closes.

A file that fits none gets ``DQ_FORMAT`` listing the missing and the unexpected
columns. Every error names the file it came from, with a stable ``DQ_*`` code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from alphaloop.data.bars import DAY_SECONDS, Bars
from alphaloop.data.quality import (
    PRICES,
    epoch_unit,
    parse_timestamps,
    quality_report,
    rows_where,
    to_float,
)
from alphaloop.errors import DataError

FORMATS: dict[str, str] = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet",
                           ".pq": "parquet"}
"""File suffix (lowercase) → reader."""

Layout = Literal["long", "single", "wide"]

DATE_COLUMNS: tuple[str, ...] = ("timestamp", "date", "datetime", "time", "open_time",
                                  "open time")
"""Accepted names of the time column (any case), in order of preference."""
_ADJ_CLOSE = frozenset({"adj close", "adj_close", "adjclose", "adjusted close",
                        "adjusted_close"})
_KNOWN = frozenset({"symbol", *PRICES, "volume", "adj_close"})
_LAYOUTS = ("accepted layouts: long (timestamp, symbol, open, high, low, close[, volume]), "
            "single-symbol (date, open, high, low, close[, adj close][, volume]) or wide "
            "(date, then one numeric close column per symbol)")


def file_format(path: Path) -> str:
    """``"csv"`` or ``"parquet"`` from the suffix; anything else is ``DQ_FORMAT``."""
    name = path.name.lower()
    for suffix, fmt in sorted(FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    raise DataError(f"{path}: unsupported file type {''.join(path.suffixes) or '(none)'!r}; "
                    f"expected one of {sorted(FORMATS)}", code="DQ_FORMAT")


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame, with coded errors.

    A Parquet file written with a meaningful index (e.g. a wide frame's
    DatetimeIndex) gets that index back as its first column, so both formats give
    the same shape of frame.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found", code="DQ_FILE_NOT_FOUND")
    fmt = file_format(p)
    try:
        df = pd.read_csv(p) if fmt == "csv" else pd.read_parquet(p)
    except pd.errors.EmptyDataError:
        raise DataError(f"{p}: the file is empty", code="DQ_EMPTY") from None
    except Exception as exc:  # pyarrow, parser, codec, OS errors: all mean "cannot read"
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise DataError(f"{p}: cannot read as {fmt}: {reason}", code="DQ_READ_FAILED") from exc
    if fmt == "csv":
        _header_once(p)
        df = _symbols_as_written(p, df)
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    return df


def _symbols_as_written(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """A long CSV's symbols as text, exactly as written: read as numbers, ``0700``
    would become ``700`` (and ``01`` collide with ``1``); read with pandas' missing
    markers, the ticker ``NA`` would vanish."""
    cols = [c for c in df.columns if str(c).strip().lower() == "symbol"]
    if len(cols) != 1:  # none, or a duplicate the header check refuses
        return df
    text = pd.read_csv(path, usecols=cols, dtype=str, keep_default_na=False)
    return df.assign(**{str(cols[0]): text[cols[0]].to_numpy()})


def _header_once(path: Path) -> None:
    """Refuse a CSV header naming a column twice. pandas renames the second ``close``
    to ``close.1`` and the first would silently win; the header as written is checked
    like any frame's columns (``DQ_DUPLICATE_COLUMN``)."""
    from alphaloop.data.quality import normalize_columns

    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    normalize_columns(pd.DataFrame(columns=header.iloc[0].tolist()))


def standard_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Column names lowercased and stripped, ``Adj Close`` spelled ``adj_close`` and the
    time column (``date``, ``datetime``, ``time``, ``open_time``) called ``timestamp``. A
    wide table's symbol columns are renamed too; :func:`frame_to_bars` keeps their case."""
    names = [str(c).strip().lower() for c in df.columns]
    names = ["adj_close" if n in _ADJ_CLOSE else n for n in names]
    if "timestamp" not in names:
        time_col = next((n for n in DATE_COLUMNS if n in names), None)
        if time_col is not None:
            names[names.index(time_col)] = "timestamp"
    out = df.copy(deep=False)
    out.columns = pd.Index(names)
    return out


def detect_layout(df: pd.DataFrame) -> Layout:
    """``"long"`` with a ``symbol`` column, ``"single"`` with price columns but no symbol,
    ``"wide"`` if the first column is dates and the others numbers; else ``DQ_FORMAT``
    naming the missing and unexpected columns."""
    cols = list(standard_columns(df).columns)
    if "symbol" in cols:
        return "long"
    if any(c in cols for c in PRICES):
        # a column of text beside the prices is most likely the symbols under another
        # name ('Ticker'): read as one symbol, its rows would be silently mixed
        text = [str(df.columns[i]).strip() for i, c in enumerate(cols)
                if c not in _KNOWN and c != "timestamp" and not _mostly_numeric(df.iloc[:, i])]
        if text:
            raise DataError(f"a file of prices without a 'symbol' column has text "
                            f"column(s) {text}: name the column of symbols 'symbol' (long "
                            f"layout), or drop it; {_LAYOUTS}", code="DQ_FORMAT")
        return "single"
    first = df.iloc[:, 0] if len(cols) else None
    if first is not None and pd.api.types.is_integer_dtype(first.dtype) and len(first) \
            and first.between(19000101, 21001231).all():  # dates written as YYYYMMDD
        parse_timestamps(first, f"column {str(df.columns[0]).strip()!r}")  # says so
    words: list[str] = []  # after a date column, the columns of text
    if len(cols) >= 2 and _is_date_column(df.iloc[:, 0]):
        words = [str(df.columns[i]).strip() for i in range(1, len(cols))
                 if not _mostly_numeric(df.iloc[:, i])]
        if not words:
            return "wide"
    raise _layout_error(cols, [str(c).strip() for c in df.columns], words)


def _layout_error(cols: list[str], written: list[str] | None = None,
                  text: list[str] | None = None) -> DataError:
    """``DQ_FORMAT`` naming the missing columns, the unexpected ones as the file writes
    them, and (after a date column) the columns of text that keep it from being wide."""
    names = written or cols
    missing = [c for c in ("timestamp", *PRICES) if c not in cols]
    if missing and missing[0] == "timestamp":
        missing[0] = "date (or timestamp, datetime, time, open_time)"
    unexpected = [w for c, w in zip(cols, names, strict=True)
                  if c not in _KNOWN and c != "timestamp"]
    hint = (f"; column(s) {text} hold text, so it is not a wide table (date, then "
            "numbers)" if text else "")
    return DataError(f"cannot tell the layout: missing columns {missing}, unexpected "
                     f"columns {unexpected}{hint}; {_LAYOUTS}", code="DQ_FORMAT")


def _mostly_numeric(col: pd.Series) -> bool:
    """Numbers in most cells: a wide table's column, even with a stray bad cell (which
    the wide checks then name), but not a column of tickers."""
    if pd.api.types.is_numeric_dtype(col.dtype):
        return True
    values = col.dropna()
    return len(values) == 0 or pd.to_numeric(values, errors="coerce").notna().mean() >= 0.5


def _is_date_column(col: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return True
    if pd.api.types.is_numeric_dtype(col.dtype):
        return not pd.api.types.is_bool_dtype(col.dtype) and epoch_unit(col) is not None
    head = col.dropna().head(20)
    try:
        return len(head) > 0 and not pd.to_datetime(head, utc=True, format="mixed").isna().any()
    except (ValueError, TypeError, OverflowError):
        return False


def frame_to_bars(df: pd.DataFrame, *, name: str = "", sort: bool = False,
                  validate: bool = True, symbol: str | None = None, adjust: bool = True,
                  notes: list[str] | None = None, default_symbol: str = "") -> Bars:
    """Build a panel from a frame in any layout (see :func:`detect_layout`).

    ``symbol`` names a single-symbol file's symbol (default ``default_symbol``, else
    ``name``); ``adjust`` applies its ``Adj Close``. What was done to the prices is
    appended to ``notes``."""
    layout = detect_layout(df)
    if symbol is not None and layout != "single":
        raise DataError(f"a symbol name is only for a single-symbol file; this one is "
                        f"{layout} (its symbols come from the file)", code="DQ_FORMAT")
    if layout == "wide":
        # symbols are column names here: keep their case (check_wide_frame strips them)
        dates = parse_timestamps(df.iloc[:, 0], f"column {str(df.columns[0]).strip()!r}")
        wide = df.iloc[:, 1:].set_axis(dates)
        if sort:
            wide = wide.sort_index(kind="stable")
        return Bars.from_wide(wide, name=name, validate=validate)
    std = standard_columns(df)
    required = ["timestamp", *(["symbol"] if layout == "long" else []), *PRICES]
    if any(c not in std.columns for c in required):
        raise _layout_error(list(std.columns))
    if layout == "single":
        std = std.assign(symbol=symbol or default_symbol or name or "SYMBOL")
    # parsed first, under the file's own column name: every later message then gives
    # the dates as read (a day-first file's 10/01 is 10 January there too)
    written = str(df.columns[list(std.columns).index("timestamp")]).strip()
    naive = _naive(std["timestamp"])
    std = std.assign(timestamp=pd.Series(
        parse_timestamps(std["timestamp"], f"column {written!r}"), index=std.index))
    said = notes if notes is not None else []
    std = _adjusted(std, adjust, said)
    bars = Bars.from_long(std, name=name, sort=sort, validate=validate)
    said += _what_was_left(std, bars, naive)
    return bars


def _what_was_left(std: pd.DataFrame, bars: Bars, naive: bool) -> list[str]:
    """What the import did not take as it was, said in words: ignored columns, rows
    without any price (no bar), bars without volume, and intraday times without a zone
    (read as UTC)."""
    said = []
    ignored = [str(c) for c in std.columns if c not in _KNOWN and c != "timestamp"]
    if ignored:
        said.append(f"DQ_IGNORED_COLUMNS: {ignored} not read (only timestamp, symbol, "
                    "open/high/low/close, volume and Adj Close are)")
    prices = np.column_stack([to_float(std[c], f"column {c!r}") for c in PRICES])
    empty = np.flatnonzero(np.isnan(prices).all(axis=1))
    if len(empty):
        first = std.iloc[int(empty[0])]
        said.append(f"DQ_EMPTY_ROWS: {len(empty)} row(s) without any price dropped (no "
                    f"bar), the first at row {int(empty[0])} "
                    f"({first['timestamp'].isoformat()}, {first['symbol']})")
    has_bar = ~np.isnan(bars.close)
    no_volume = int((has_bar & np.isnan(bars.volume)).sum())
    if 0 < no_volume < int(has_bar.sum()):
        said.append(f"DQ_VOLUME_MISSING: {no_volume} bar(s) without volume (kept as "
                    "missing)")
    if naive and bars.n_bars > 1 and \
            float(np.median(np.diff(bars.index.asi8))) < 0.5 * DAY_SECONDS * 1e9:
        said.append("DQ_NAIVE_TIMES: intraday timestamps without a time zone were read as "
                    "UTC; exchange times are usually local: write the offset "
                    "(2021-03-01T09:30:00-05:00)")
    return said


_OFFSET = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)


def _naive(times: pd.Series) -> bool:
    """Whether the timestamps carry no time zone (datetimes without one, or text
    without an offset; epoch numbers are UTC)."""
    if isinstance(times.dtype, pd.DatetimeTZDtype) or (
            pd.api.types.is_numeric_dtype(times.dtype)):  # epoch times count in UTC
        return False
    if pd.api.types.is_datetime64_any_dtype(times.dtype):
        return True
    text = times.dropna().astype(str).str.strip()
    return bool(len(text)) and not text.str.contains(_OFFSET).any()


def _adjusted(df: pd.DataFrame, adjust: bool, notes: list[str]) -> pd.DataFrame:
    """Prices times ``adj_close / close`` (a Yahoo file's split and dividend
    adjustment), so that returns include them; without the column, unchanged."""
    if "adj_close" not in df.columns:
        return df
    if not adjust:
        notes.append("kept raw open/high/low/close (--no-adjust); Adj Close ignored")
        return df.drop(columns="adj_close")
    from alphaloop.data.quality import to_float

    close = to_float(df["close"], "column 'close'")
    adj = to_float(df["adj_close"], "column 'adj close'")
    _whole_rows(df, adj)
    if (adj <= 0).any():  # NaN compares false: an empty row passes
        raise DataError(f"Adj Close <= 0 for {rows_where(df, adj <= 0)}: it would scale "
                        "open/high/low/close to zero or below", code="DQ_NONPOSITIVE_PRICE")
    ratio = adj / close
    out = df.drop(columns="adj_close")
    for col in PRICES:
        out[col] = to_float(df[col], f"column {col!r}") * ratio
    finite = ratio[np.isfinite(ratio)]
    span = f" (ratio {finite.min():.4g} .. {finite.max():.4g})" if len(finite) else ""
    notes.append(f"adjusted open/high/low/close by Adj Close / Close{span}; volume "
                 "unchanged (--no-adjust keeps the raw prices)")
    return out


def _whole_rows(df: pd.DataFrame, adj: np.ndarray) -> None:
    """Refuse a row with some of open/high/low/close/Adj Close but not all: adjusted, it
    would become an empty bar and vanish (an empty row, no bar, stays allowed)."""
    from alphaloop.data.quality import refuse_partial_rows, to_float

    values = np.column_stack([*(to_float(df[c], f"column {c!r}") for c in PRICES), adj])
    refuse_partial_rows(df, values, [*PRICES, "adj_close"],
                        "open/high/low/close and Adj Close (--no-adjust ignores Adj Close)")


def load_file(path: str | Path, *, name: str | None = None, sort: bool = False,
              validate: bool = True, symbol: str | None = None, adjust: bool = True,
              notes: list[str] | None = None) -> Bars:
    """Load one file; every :class:`DataError` is re-raised naming the file.

    ``symbol`` (a single-symbol file's; default: the file name without suffix),
    ``adjust`` and ``notes``: see :func:`frame_to_bars`."""
    p = Path(path)
    try:
        bars = frame_to_bars(read_frame(p), name=name or dataset_stem(p), sort=sort,
                             validate=validate, symbol=symbol, adjust=adjust, notes=notes,
                             default_symbol=dataset_stem(p))
        if validate:
            quality_report(bars).raise_for_errors()
    except DataError as exc:
        if str(p) in exc.message:
            raise
        raise DataError(f"{p}: {exc.message}", code=exc.code,
                        error_class=exc.error_class) from exc
    return bars


def dataset_stem(p: Path) -> str:
    """The file name without its data suffix (``prices.csv.gz`` → ``prices``)."""
    name = p.name
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def load_bars(source: str | Path, *, name: str | None = None, sort: bool = False,
              validate: bool = True) -> Bars:
    """Load a dataset by catalog name (``"us_indices"``, an imported name) or by path.

    ``sort=True`` sorts out-of-order rows instead of refusing them. ``validate``
    (default) refuses bars that break the price invariants (prices > 0, low <= open,
    close <= high, volume >= 0) and any error of
    :func:`~alphaloop.data.quality.quality_report`; ``validate=False`` loads such
    data anyway so the report can show what is wrong. Structural checks (columns,
    types, timestamps, duplicates, order) always run: without them there is no
    panel. A string that is neither a known dataset nor an existing file raises
    ``DQ_UNKNOWN_DATASET`` (listing the known names) or, when it looks like a path,
    ``DQ_FILE_NOT_FOUND``.
    """
    from alphaloop.data import catalog

    if isinstance(source, str) and catalog.is_dataset(source):
        return catalog.load_dataset(source, name=name, validate=validate)
    p = Path(source).expanduser()  # as a shell would: a config file has no shell
    if p.is_file():
        return load_file(p, name=name, sort=sort, validate=validate)
    if isinstance(source, str) and not _looks_like_path(source):
        known = ", ".join(catalog.dataset_names())
        raise DataError(f"unknown dataset {source!r}: not a known dataset name and not a file; "
                        f"known datasets: {known}", code="DQ_UNKNOWN_DATASET")
    raise DataError(f"{p}: file not found", code="DQ_FILE_NOT_FOUND")


def _looks_like_path(s: str) -> bool:
    name = s.lower()
    return "/" in s or "\\" in s or any(name.endswith(x) for x in FORMATS)
