"""Reading market data files (CSV, Parquet) into :class:`~alphaloop.data.bars.Bars`.

Two layouts are understood, and told apart automatically:

- **long**: one row per (timestamp, symbol) with ``open, high, low, close`` and
  optionally ``volume`` — recognised by its ``symbol`` column;
- **wide**: a close-only table, the first column (or the index) holds dates and
  every other column is one symbol's closes.

A file that looks like single-symbol OHLC (``Date, Open, High, …`` with no
``symbol`` column) is refused rather than read as a "wide" table whose symbols
would be called ``Open`` and ``High``.

Every error names the file it came from, with a stable ``DQ_*`` code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from alphaloop.data.bars import Bars
from alphaloop.data.quality import PRICES, parse_timestamps, quality_report
from alphaloop.errors import DataError

FORMATS: dict[str, str] = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet",
                           ".pq": "parquet"}
"""File suffix (lowercase) → reader."""

Layout = Literal["long", "wide"]


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
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    return df


def detect_layout(df: pd.DataFrame) -> Layout:
    """``"long"`` if there is a ``symbol`` column, ``"wide"`` if the first column is
    dates (the rest are then checked as numbers); otherwise ``DQ_FORMAT``."""
    cols = [str(c).strip().lower() for c in df.columns]
    if "symbol" in cols:
        return "long"
    ohlc = [c for c in PRICES if c in cols]
    if len(ohlc) >= 2:
        raise DataError(f"looks like OHLC data (columns {ohlc}) but has no 'symbol' column; "
                        "add a symbol column (long format)", code="DQ_MISSING_COLUMN")
    if len(cols) >= 2 and _is_date_column(df.iloc[:, 0]):
        return "wide"
    raise DataError(f"cannot tell the layout from columns {cols[:10]}: expected a 'symbol' "
                    "column (long format) or a first column of dates followed by one "
                    "numeric column per symbol (wide format)", code="DQ_FORMAT")


def _is_date_column(col: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return True
    if pd.api.types.is_numeric_dtype(col.dtype):
        return False
    head = col.dropna().head(20)
    try:
        return len(head) > 0 and not pd.to_datetime(head, utc=True, format="mixed").isna().any()
    except (ValueError, TypeError, OverflowError):
        return False


def frame_to_bars(df: pd.DataFrame, *, name: str = "", sort: bool = False,
                  validate: bool = True) -> Bars:
    """Build a panel from a frame in either layout (see :func:`detect_layout`)."""
    if detect_layout(df) == "long":
        return Bars.from_long(df, name=name, sort=sort, validate=validate)
    # symbols are column names here: keep their case (check_wide_frame strips them)
    dates = parse_timestamps(df.iloc[:, 0], f"column {str(df.columns[0]).strip()!r}")
    wide = df.iloc[:, 1:].set_axis(dates)
    if sort:
        wide = wide.sort_index(kind="stable")
    return Bars.from_wide(wide, name=name, validate=validate)


def load_file(path: str | Path, *, name: str | None = None, sort: bool = False,
              validate: bool = True) -> Bars:
    """Load one file; every :class:`DataError` is re-raised naming the file."""
    p = Path(path)
    try:
        bars = frame_to_bars(read_frame(p), name=name or dataset_stem(p), sort=sort,
                             validate=validate)
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
    p = Path(source)
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
