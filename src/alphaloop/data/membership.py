"""Universe membership: when each symbol belonged to the universe (survivorship).

A membership table has one row per period: ``symbol, start, end`` (dates, both
inclusive; an empty ``end`` means "still a member"). A symbol may have several
periods (it left the index and came back). It is stored with an imported data set
(``alphaloop data import FILE --membership MEMBERS.csv``) and both engines trade a
symbol only on the bars where it is a member (see :mod:`alphaloop.engines.universe`).

Membership is what the index provider announced at the time, so reading it at bar t
uses nothing later than t. It is also what the survivorship check needs: a universe
whose table shows removals, while the bars of the removed symbols are missing, has been
filtered with hindsight (``SURVIVORSHIP_CHECK_FAIL`` in
:func:`alphaloop.data.quality.quality_report`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alphaloop.data.dates import numeric_dates_as_iso
from alphaloop.errors import DataError

_COLUMNS = ("symbol", "start", "end")


@dataclass(frozen=True)
class Membership:
    """Membership periods, sorted by symbol then start; ``end`` None = still a member."""

    periods: tuple[tuple[str, pd.Timestamp, pd.Timestamp | None], ...]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({p[0] for p in self.periods}))

    def mask(self, index: pd.DatetimeIndex, symbols: tuple[str, ...]) -> np.ndarray:
        """(T, N) bool: symbol j is a member on the date of bar t (UTC dates)."""
        days = index.normalize().tz_localize(None).asi8
        col = {s: j for j, s in enumerate(symbols)}
        out = np.zeros((len(index), len(symbols)), dtype=np.bool_)
        for sym, start, end in self.periods:
            j = col.get(sym)
            if j is None:
                continue
            hi = np.iinfo(np.int64).max if end is None else end.value
            out[:, j] |= (days >= start.value) & (days <= hi)
        return out

    def removed(self, last_day: pd.Timestamp) -> tuple[str, ...]:
        """Symbols that are not members on ``last_day`` but were before it."""
        current = {s for s, start, end in self.periods
                   if start <= last_day and (end is None or end >= last_day)}
        return tuple(sorted({s for s, start, _ in self.periods
                             if s not in current and start <= last_day}))

    def to_records(self) -> list[list[str | None]]:
        """JSON-ready rows ``[symbol, "YYYY-MM-DD", "YYYY-MM-DD" | None]``."""
        return [[s, start.date().isoformat(), None if end is None else end.date().isoformat()]
                for s, start, end in self.periods]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_records()).encode()).hexdigest()

    @classmethod
    def from_records(cls, rows: list[Any], *, source: str = "membership") -> Membership:
        frame = pd.DataFrame(list(rows), columns=list(_COLUMNS))
        return membership_from_frame(frame, source=source)


def _day_month_as_iso(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """``start`` and ``end`` as ISO dates when they are written day and month as numbers:
    one order for the whole table (see :mod:`alphaloop.data.dates`)."""
    n = len(df)
    both = pd.concat([df["start"], df["end"]], ignore_index=True).astype(object)
    both = both.where(both.notna() & (both.astype(str).str.strip() != ""), None)
    iso = numeric_dates_as_iso(both, f"{source}: start/end", code="DQ_MEMBERSHIP")
    if iso is None:
        return df
    out = df.copy()
    out["start"], out["end"] = iso.iloc[:n].to_numpy(), iso.iloc[n:].to_numpy()
    return out


def _dates(values: pd.Series, what: str, source: str, *, optional: bool) -> pd.Series:
    text = values.astype(object).where(values.notna(), None)
    blank = text.map(lambda v: v is None or str(v).strip() == "")
    if blank.any() and not optional:
        row = int(np.flatnonzero(blank.to_numpy())[0])
        raise DataError(f"{source}: row {row + 1}: {what} is empty", code="DQ_MEMBERSHIP")
    with warnings.catch_warnings():  # pandas' format guesses: _day_month_as_iso decides
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(text.where(~blank, None), errors="coerce", utc=True)
    bad = parsed.isna() & ~blank
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{source}: row {row + 1}: {what} {text.iloc[row]!r} is not a date",
                        code="DQ_MEMBERSHIP")
    return parsed.dt.tz_localize(None).dt.normalize()


def membership_from_frame(frame: pd.DataFrame, *, source: str = "membership") -> Membership:
    """Validate a ``symbol, start, end`` frame (column names case-insensitive)."""
    df = frame.rename(columns={c: str(c).strip().lower() for c in frame.columns})
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: membership needs columns symbol, start, end; missing "
                        f"{', '.join(missing)}", code="DQ_MEMBERSHIP")
    if df.empty:
        raise DataError(f"{source}: the membership table has no rows", code="DQ_MEMBERSHIP")
    syms = df["symbol"].astype(object)
    empty = syms.map(lambda v: v is None or (isinstance(v, float) and np.isnan(v))
                     or str(v).strip() == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(f"{source}: row {row + 1}: symbol is empty", code="DQ_MEMBERSHIP")
    df = _day_month_as_iso(df, source)
    start = _dates(df["start"], "start", source, optional=False)
    end = _dates(df["end"], "end", source, optional=True)
    before = end.notna() & (end < start)
    if before.any():
        row = int(np.flatnonzero(before.to_numpy())[0])
        raise DataError(f"{source}: row {row + 1}: end {end.iloc[row].date()} is before "
                        f"start {start.iloc[row].date()}", code="DQ_MEMBERSHIP")
    periods = sorted(((str(s).strip(), a, None if pd.isna(b) else b)
                      for s, a, b in zip(syms, start, end, strict=True)),
                     key=lambda p: (p[0], p[1].value))
    return Membership(tuple(periods))


def read_membership(path: str | Path) -> Membership:
    """A membership table from a CSV or Parquet file (see the module docstring)."""
    from alphaloop.data.loaders import read_frame

    return membership_from_frame(read_frame(path), source=str(path))
