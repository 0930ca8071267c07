"""Dates written as text, read one way only.

ISO 8601 (``2021-03-01``, ``2021-03-01T09:30:00-05:00``) says which number is the month.
A date written with the day and the month as two small numbers (``01/02/2020``) does not:
pandas takes the first value's order, so a European file of month starts (``01/02/2020``
= 1 February) silently becomes twelve days of January. Here such dates are read in the
one order that every value of the column allows, and refused where both orders are
possible or a year has two digits.
"""

from __future__ import annotations

import re
from typing import NoReturn

import numpy as np
import pandas as pd

from alphaloop.errors import DataError

_NUMERIC_DATE = re.compile(r"^(\d{1,2})([/.\-])(\d{1,2})\2(\d+)(?=$|[ T])(.*)$", re.S)
"""Day and month as one or two digits, then the year, with one separator (/ . -); the
time of day, if any, follows after a space or a T."""


def numeric_dates_as_iso(text: pd.Series, what: str, code: str = "DQ_BAD_TIMESTAMP"
                         ) -> pd.Series | None:
    """``text`` (strings, None where empty) rewritten as ISO dates (``YYYY-MM-DD`` and the
    rest of each value) when every value is a day-and-month date; None when they are
    not all written so (the caller parses them as they are).

    Raises :class:`DataError` (``code``; ``DQ_AMBIGUOUS_DATE`` when both orders fit)
    naming the column and a value."""
    present = text[text.notna()].astype(str).str.strip()
    if present.empty:
        return None
    parts = present.str.extract(_NUMERIC_DATE)
    if parts[0].isna().any():
        return None
    first, second = parts[0].astype(int), parts[2].astype(int)
    short = parts[3].str.len() != 4
    if short.any():
        _refuse(code, f"{what}: {_example(present, short)} has a {parts[3][short].iloc[0]!r} "
                "year; write the year with four digits (ISO 8601: YYYY-MM-DD)")
    day_first, month_first = bool((first > 12).any()), bool((second > 12).any())
    if day_first and month_first:
        both = (first > 12) | (second > 12)
        _refuse(code, f"{what}: {_example(present, both)} and the other dates put the day "
                "first and last; write ISO 8601 dates (YYYY-MM-DD)")
    if not (day_first or month_first):
        _refuse("DQ_AMBIGUOUS_DATE",
                f"{what}: every date, e.g. {present.iloc[0]!r}, reads as day/month and as "
                "month/day; write ISO 8601 dates (YYYY-MM-DD) so that the month is known")
    day, month = (first, second) if day_first else (second, first)
    iso = (parts[3] + "-" + month.map("{:02d}".format) + "-" + day.map("{:02d}".format)
           + parts[4])
    out = pd.Series(np.full(len(text), None, dtype=object), index=text.index)
    out[present.index] = iso
    return out


def _example(values: pd.Series, mask: pd.Series) -> str:
    row = int(np.flatnonzero(mask.to_numpy())[0])
    return f"{values.iloc[row]!r} (row {int(values.index[row])})"


def _refuse(code: str, message: str) -> NoReturn:
    raise DataError(message, code=code)
