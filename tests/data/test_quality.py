"""The data-quality gate: every error code, with a message that says where."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaloop.data import Bars, quality_report, synthetic
from alphaloop.data.quality import check_long_frame, check_wide_frame, parse_timestamps
from alphaloop.errors import DataError, ErrorClass


def long_frame(n: int = 6, symbols: tuple[str, ...] = ("AAA", "BBB")) -> pd.DataFrame:
    """A clean long frame, rows ordered by (timestamp, symbol)."""
    ts = pd.bdate_range("2021-01-04", periods=n)
    rows = []
    for i, t in enumerate(ts):
        for j, s in enumerate(symbols):
            c = 100.0 + i + 10 * j
            rows.append({"timestamp": t, "symbol": s, "open": c - 0.5, "high": c + 1.0,
                         "low": c - 1.0, "close": c, "volume": 1000.0 + i})
    return pd.DataFrame(rows)


def raises(code: str, fn: Callable[[], object], *needles: str) -> DataError:
    """Assert ``fn`` raises DataError ``code`` whose message contains every needle."""
    with pytest.raises(DataError) as info:
        fn()
    err = info.value
    assert err.code == code, str(err)
    for needle in needles:
        assert needle in err.message, f"{needle!r} not in {err.message!r}"
    return err


ROW = 5  # row 5 of long_frame() is BBB on 2021-01-06
ROW_TS = "2021-01-06T00:00:00+00:00"


# ---------------------------------------------------------------- long: happy paths
def test_clean_frame_passes_and_is_typed() -> None:
    out = check_long_frame(long_frame())
    assert list(out.columns) == ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
    assert str(out["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert all(out[c].dtype == np.float64 for c in ("open", "high", "low", "close", "volume"))


def test_column_names_are_lowercased_and_stripped_and_volume_optional() -> None:
    df = long_frame().drop(columns="volume")
    df.columns = [f"  {c.upper()} " for c in df.columns]
    out = check_long_frame(df)
    assert out["volume"].isna().all()
    assert len(out) == len(df)


def test_naive_times_are_utc_and_aware_times_are_converted() -> None:
    df = long_frame()
    df["timestamp"] = df["timestamp"].dt.tz_localize("America/New_York")
    out = check_long_frame(df)
    assert out["timestamp"].iloc[0] == pd.Timestamp("2021-01-04 05:00", tz="UTC")
    text = long_frame()
    text["timestamp"] = text["timestamp"].astype(str)
    assert check_long_frame(text)["timestamp"].iloc[0] == pd.Timestamp("2021-01-04", tz="UTC")


def test_numeric_strings_are_converted() -> None:
    df = long_frame()
    df["close"] = df["close"].astype(str)
    assert check_long_frame(df)["close"].dtype == np.float64


def test_rows_with_all_prices_nan_are_dropped() -> None:
    df = long_frame()
    df.loc[ROW, ["open", "high", "low", "close"]] = np.nan
    assert len(check_long_frame(df)) == len(df) - 1


def test_sort_true_sorts_instead_of_refusing() -> None:
    df = long_frame().iloc[::-1]
    out = check_long_frame(df, sort=True)
    assert out.groupby("symbol")["timestamp"].apply(lambda s: s.is_monotonic_increasing).all()


def test_tiny_relative_excess_over_high_is_tolerated() -> None:
    df = long_frame()
    df.loc[ROW, "close"] = df.loc[ROW, "high"] * (1 + 1e-12)
    check_long_frame(df)


# ---------------------------------------------------------------- long: error codes
def test_missing_column() -> None:
    raises("DQ_MISSING_COLUMN", lambda: check_long_frame(long_frame().drop(columns=["high", "low"])),
           "'high'", "'low'")


def test_duplicate_column_after_normalising() -> None:
    df = long_frame()
    df["Close "] = df["close"]
    raises("DQ_DUPLICATE_COLUMN", lambda: check_long_frame(df), "close")


def test_empty() -> None:
    raises("DQ_EMPTY", lambda: check_long_frame(long_frame().iloc[:0]), "no rows")


def test_not_a_dataframe() -> None:
    raises("DQ_FORMAT", lambda: check_long_frame([1, 2]), "list")  # type: ignore[arg-type]


def test_bad_timestamp_names_value_and_row() -> None:
    df = long_frame()
    df["timestamp"] = df["timestamp"].astype(str).astype(object)
    df.loc[ROW, "timestamp"] = "not-a-date"
    raises("DQ_BAD_TIMESTAMP", lambda: check_long_frame(df), "'not-a-date'", f"row {ROW}",
           "timestamp")


def test_missing_timestamp() -> None:
    df = long_frame()
    df["timestamp"] = df["timestamp"].astype(object)
    df.loc[ROW, "timestamp"] = None
    raises("DQ_BAD_TIMESTAMP", lambda: check_long_frame(df), f"row {ROW}")


def _dated(texts: list[str]) -> pd.DataFrame:
    """One symbol, a bar per text date (written out by hand in each test)."""
    df = long_frame(n=len(texts), symbols=("AAA",))
    df["timestamp"] = pd.Series(texts, dtype=object)
    return df


def test_day_first_dates_are_read_day_first() -> None:
    # 13/01 can only be the 13th of January: the whole column is day/month
    out = check_long_frame(_dated(["12/01/2020", "13/01/2020", "14/01/2020 09:30"]))
    assert [str(t) for t in out["timestamp"]] == [
        "2020-01-12 00:00:00+00:00", "2020-01-13 00:00:00+00:00", "2020-01-14 09:30:00+00:00"]


def test_month_first_dates_are_read_month_first() -> None:
    out = check_long_frame(_dated(["01/12/2020", "01/13/2020", "01/14/2020"]))
    assert [t.date().isoformat() for t in out["timestamp"]] == [
        "2020-01-12", "2020-01-13", "2020-01-14"]


def test_dates_that_read_both_ways_are_refused() -> None:
    # a black-box report: month starts written day first (01/02/2020 = 1 February)
    # became twelve days of January, silently
    months = [f"01/{m:02d}/2020" for m in range(1, 13)]
    raises("DQ_AMBIGUOUS_DATE", lambda: check_long_frame(_dated(months)),
           "'01/01/2020'", "day/month and as month/day", "YYYY-MM-DD")


@pytest.mark.parametrize(("texts", "needle"), [
    (["01/02/20", "01/03/20"], "four digits"),                      # two-digit year
    (["13/01/2020", "01/13/2020"], "day first and last"),           # both orders in one column
])
def test_dates_that_cannot_be_read_one_way_are_refused(texts: list[str], needle: str) -> None:
    raises("DQ_BAD_TIMESTAMP", lambda: check_long_frame(_dated(texts)), needle)


def test_iso_dates_with_offsets_parse_without_warnings() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' format-guess warnings must not leak
        out = check_long_frame(_dated(["2021-03-01T00:00:00+09:00", "2021-03-02T00:00:00+09:00"]))
        check_long_frame(_dated(["13/01/2020", "14/01/2020"]))
    assert str(out["timestamp"].iloc[0]) == "2021-02-28 15:00:00+00:00"


def test_numeric_timestamp_is_refused() -> None:
    df = long_frame()
    df["timestamp"] = np.arange(len(df)) * 86400  # seconds from 1970: before 1980
    raises("DQ_BAD_TIMESTAMP", lambda: check_long_frame(df), "numeric", "timestamp")


@pytest.mark.parametrize("values", [
    [1_609_459_200, 1_609_459_200_000],      # seconds and milliseconds mixed
    [1_609_459_200.5, 1_609_459_201.0],      # not whole seconds
    [float(2**60), float(2**60 + 2**40)],    # nanoseconds as floats: not exact
    [20200102, 20200103],                    # YYYYMMDD, not a time
])
def test_numbers_that_name_no_single_epoch_unit_are_refused(values: list[float]) -> None:
    raises("DQ_BAD_TIMESTAMP", lambda: parse_timestamps(pd.Series(values)), "numeric")


_UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


@settings(max_examples=200, deadline=None)
@given(when=st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2262, 1, 1)),
       unit=st.sampled_from(sorted(_UNITS)))
def test_an_epoch_time_in_any_unit_is_read_as_the_instant_it_counts(when: datetime,
                                                                    unit: str) -> None:
    """The integer is counted here with Python's own datetime arithmetic (whole
    microseconds; nanoseconds add three zeros), not with the code under test."""
    since = when.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (since.days * 86_400 + since.seconds) * 10**6 + since.microseconds
    count = micros * 1000 if unit == "ns" else micros * _UNITS[unit] // 10**6
    expected = pd.Timestamp(when.replace(tzinfo=UTC)).floor(unit)
    got = parse_timestamps(pd.Series([count, count + _UNITS[unit]]))
    assert got[0] == expected and got[1] - got[0] == pd.Timedelta(seconds=1)


def test_bad_symbol() -> None:
    df = long_frame()
    df.loc[ROW, "symbol"] = " "
    raises("DQ_BAD_SYMBOL", lambda: check_long_frame(df), f"row {ROW}", "symbol")


def test_dtype_names_column_and_example() -> None:
    df = long_frame()
    df["close"] = df["close"].astype(object)
    df.loc[ROW, "close"] = "abc"
    raises("DQ_DTYPE", lambda: check_long_frame(df), "'close'", "'abc'", f"row {ROW}")


def test_boolean_column_is_a_dtype_error() -> None:
    df = long_frame()
    df["volume"] = True
    raises("DQ_DTYPE", lambda: check_long_frame(df), "'volume'")


def test_all_nan_price_column() -> None:
    df = long_frame()
    df["close"] = np.nan
    raises("DQ_ALL_NAN", lambda: check_long_frame(df), "close")


def test_all_nan_symbol() -> None:
    df = long_frame()
    df.loc[df["symbol"] == "BBB", ["open", "high", "low", "close"]] = np.nan
    raises("DQ_ALL_NAN", lambda: check_long_frame(df), "BBB")


def test_partially_nan_bar() -> None:
    df = long_frame()
    df.loc[ROW, "high"] = np.nan
    raises("DQ_NAN_VALUES", lambda: check_long_frame(df), "'BBB'", ROW_TS, "high")


def test_infinite_value() -> None:
    df = long_frame()
    df.loc[ROW, "volume"] = np.inf
    raises("DQ_INFINITE", lambda: check_long_frame(df), "'BBB'", ROW_TS)


def test_duplicate_timestamp_is_critical_and_named() -> None:
    df = long_frame()
    df = pd.concat([df, df.iloc[[ROW]]], ignore_index=True)
    err = raises("DQ_DUPLICATE_TIMESTAMP", lambda: check_long_frame(df), "'BBB'", ROW_TS)
    assert err.error_class is ErrorClass.CRITICAL


def test_unsorted_suggests_sort_true() -> None:
    df = long_frame()
    df.loc[[1, ROW], "timestamp"] = df.loc[[ROW, 1], "timestamp"].to_numpy()  # BBB rows swap
    raises("DQ_UNSORTED", lambda: check_long_frame(df), "'BBB'", "sort=True")


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
def test_nonpositive_price(column: str) -> None:
    df = long_frame()
    df.loc[ROW, ["open", "high", "low", "close"]] = [1.0, 1.0, 1.0, 1.0]
    df.loc[ROW, column] = 0.0 if column != "high" else -1.0
    if column == "high":
        df.loc[ROW, ["open", "low", "close"]] = -1.0
    raises("DQ_NONPOSITIVE_PRICE", lambda: check_long_frame(df), "'BBB'", ROW_TS)


def test_a_price_too_small_to_size_a_position_is_refused() -> None:
    """A black-box report: closes of 1e-320 (a denormal) were imported, and a backtest
    then died on NaN returns (capital / price overflows); 1e-99 is still a price."""
    df = long_frame()
    df.loc[ROW, ["open", "high", "low", "close"]] = 1e-320
    raises("DQ_TINY_PRICE", lambda: check_long_frame(df), "'BBB'", ROW_TS, "1e-100")
    df.loc[ROW, ["open", "high", "low", "close"]] = 1e-99
    check_long_frame(df)
    wide = wide_frame()
    wide.iloc[2, 1] = 1e-320
    raises("DQ_TINY_PRICE", lambda: check_wide_frame(wide), "'BBB'",
           "2021-01-06T00:00:00+00:00")


def test_high_below_low() -> None:
    df = long_frame()
    df.loc[ROW, ["high", "low"]] = [111.0, 113.0]  # open 111.5 and close 112 sit between
    raises("DQ_HIGH_LT_LOW", lambda: check_long_frame(df), "'BBB'", ROW_TS)


@pytest.mark.parametrize(("column", "factor"), [("close", 1.01), ("close", 0.0), ("open", 1.01),
                                                ("open", 0.0)])
def test_close_or_open_outside_range(column: str, factor: float) -> None:
    df = long_frame()
    bound = df.loc[ROW, "high"] * factor if factor else df.loc[ROW, "low"] * 0.99
    df.loc[ROW, column] = bound
    raises("DQ_CLOSE_OUTSIDE_RANGE", lambda: check_long_frame(df), "'BBB'", ROW_TS)


def test_negative_volume() -> None:
    df = long_frame()
    df.loc[ROW, "volume"] = -5.0
    raises("DQ_NEGATIVE_VOLUME", lambda: check_long_frame(df), "'BBB'", ROW_TS)


def test_check_values_false_skips_only_price_invariants() -> None:
    df = long_frame()
    df.loc[ROW, "volume"] = -5.0
    assert len(check_long_frame(df, check_values=False)) == len(df)
    df.loc[ROW, "high"] = np.nan
    raises("DQ_NAN_VALUES", lambda: check_long_frame(df, check_values=False))


# ---------------------------------------------------------------- wide frames
def wide_frame() -> pd.DataFrame:
    idx = pd.bdate_range("2021-01-04", periods=5)
    return pd.DataFrame({"AAA": np.arange(1.0, 6.0), "BBB": np.arange(10.0, 15.0)}, index=idx)


def test_wide_clean_and_string_index() -> None:
    out = check_wide_frame(wide_frame())
    assert str(out.index.dtype) == "datetime64[ns, UTC]"
    df = wide_frame()
    df.index = df.index.strftime("%Y-%m-%d")
    assert check_wide_frame(df).index.equals(out.index)


def test_wide_empty() -> None:
    raises("DQ_EMPTY", lambda: check_wide_frame(wide_frame().iloc[:0]), "empty")


def test_wide_duplicate_timestamp() -> None:
    df = wide_frame()
    df.index = df.index[[0, 1, 1, 3, 4]]
    raises("DQ_DUPLICATE_TIMESTAMP", lambda: check_wide_frame(df), "2021-01-05T00:00:00+00:00")


def test_wide_unsorted_and_sort() -> None:
    df = wide_frame().iloc[[0, 2, 1, 3, 4]]
    raises("DQ_UNSORTED", lambda: check_wide_frame(df), "2021-01-05T00:00:00+00:00", "sort=True")
    assert check_wide_frame(df, sort=True).index.is_monotonic_increasing


def test_wide_nonpositive() -> None:
    df = wide_frame()
    df.iloc[2, 1] = 0.0
    raises("DQ_NONPOSITIVE_PRICE", lambda: check_wide_frame(df), "'BBB'",
           "2021-01-06T00:00:00+00:00")


def test_wide_dtype() -> None:
    df = wide_frame().astype(object)
    df.iloc[3, 0] = "n/a?"
    raises("DQ_DTYPE", lambda: check_wide_frame(df), "'AAA'", "'n/a?'")


def test_wide_all_nan_column() -> None:
    df = wide_frame()
    df["CCC"] = np.nan
    raises("DQ_ALL_NAN", lambda: check_wide_frame(df), "CCC")


def test_wide_duplicate_symbol() -> None:
    df = wide_frame()
    df.columns = ["AAA", "AAA "]
    raises("DQ_DUPLICATE_SYMBOL", lambda: check_wide_frame(df), "AAA")


def test_wide_bad_index() -> None:
    df = wide_frame()
    df.index = ["2021-01-04", "2021-01-05", "garbage", "2021-01-07", "2021-01-08"]
    raises("DQ_BAD_TIMESTAMP", lambda: check_wide_frame(df), "'garbage'")


# ---------------------------------------------------------------- quality_report
def panel(close: np.ndarray, index: pd.DatetimeIndex | None = None, **fields: np.ndarray) -> Bars:
    t, n = close.shape
    idx = index if index is not None else pd.bdate_range("2020-01-01", periods=t, tz="UTC")
    def get(f: str) -> np.ndarray:
        return fields.get(f, close.copy())

    return Bars(index=idx, symbols=tuple(f"S{j}" for j in range(n)), open=get("open"),
                high=get("high"), low=get("low"), close=close,
                volume=fields.get("volume", np.ones_like(close)))


def test_report_clean_synthetic_panel() -> None:
    # clean bars; the only finding is that nobody said when the 5 symbols were members
    report = quality_report(synthetic.generate(5, 600, seed=3))
    assert report.ok and [i.code for i in report.issues] == ["DQ_SURVIVORSHIP_UNKNOWN"]
    assert quality_report(synthetic.generate(1, 600, seed=3)).to_dict() == {
        "ok": True, "n_errors": 0, "n_warnings": 0, "issues": []}


def test_report_errors_per_symbol() -> None:
    rng = np.random.default_rng(0)
    close = 100 + rng.random((300, 3))
    high, low = close + 1, close - 1
    high[10, 1] = low[10, 1] - 0.5        # S1: high < low (and close outside range)
    bad_close = close.copy()
    bad_close[20, 2] = -1.0               # S2: non-positive
    report = quality_report(panel(bad_close, high=high, low=low))
    by = {(i.code, i.symbol) for i in report.errors}
    assert ("DQ_HIGH_LT_LOW", "S1") in by
    assert ("DQ_NONPOSITIVE_PRICE", "S2") in by
    assert ("DQ_CLOSE_OUTSIDE_RANGE", "S2") in by
    assert not report.ok
    issue = next(i for i in report.errors if i.code == "DQ_HIGH_LT_LOW")
    assert "S1" in issue.message and issue.count == 1
    assert pd.bdate_range("2020-01-01", periods=300, tz="UTC")[10].isoformat() in issue.message
    with pytest.raises(DataError) as info:
        report.raise_for_errors()
    assert info.value.code in {"DQ_HIGH_LT_LOW", "DQ_NONPOSITIVE_PRICE", "DQ_CLOSE_OUTSIDE_RANGE"}


def test_report_partial_nan_bar() -> None:
    close = np.full((300, 1), 100.0)
    close += np.arange(300)[:, None]
    high = close.copy()
    high[7, 0] = np.nan
    report = quality_report(panel(close, high=high))
    assert [i.code for i in report.errors] == ["DQ_NAN_VALUES"]


def test_report_weekends_and_holidays_are_not_gaps_but_a_hole_is() -> None:
    bars = synthetic.generate(2, 400, seed=1)
    assert "DQ_GAP" not in quality_report(bars).codes()
    close = np.array(bars.close)
    close[100:110, 1] = np.nan                      # two weeks missing for SYN001
    hole = Bars(index=bars.index, symbols=bars.symbols, open=np.where(np.isnan(close), np.nan,
                bars.open), high=np.where(np.isnan(close), np.nan, bars.high),
                low=np.where(np.isnan(close), np.nan, bars.low), close=close,
                volume=np.array(bars.volume))
    gaps = [i for i in quality_report(hole).warnings if i.code == "DQ_GAP"]
    assert [(g.symbol, g.count) for g in gaps] == [("SYN001", 1)]
    assert bars.index[110].isoformat() in gaps[0].message


def _hourly(index: pd.DatetimeIndex, holes: list[slice]) -> Bars:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, (len(index), 1)), axis=0))
    for hole in holes:
        close[hole] = np.nan
    return Bars(index=index, symbols=("H",), open=close, high=close * 1.001,
                low=close * 0.999, close=close, volume=np.where(np.isnan(close), np.nan, 1e5))


def test_nights_of_hourly_session_data_are_not_gaps_but_holes_are() -> None:
    """Hourly bars 14:00-20:00 UTC on weekdays: every night (18 h) and weekend is a
    break, not a gap; a week missing, or five hours missing inside one day (a 6 h
    spacing, over 5× the median 1 h), are."""
    days = pd.bdate_range("2024-01-01", periods=120, tz="UTC")
    index = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in range(14, 21)])
    assert "DQ_GAP" not in quality_report(_hourly(index, [])).codes()
    hours_7 = 7  # bars a day
    holes = [slice(40 * hours_7, 47 * hours_7),      # 7 weekdays (9 calendar days) missing
             slice(80 * hours_7 + 1, 80 * hours_7 + 6)]  # 15:00-19:00 of one day missing
    gaps = [i for i in quality_report(_hourly(index, holes)).warnings if i.code == "DQ_GAP"]
    assert [(g.symbol, g.count) for g in gaps] == [("H", 2)]


def test_a_night_missing_in_round_the_clock_hourly_data_is_a_gap() -> None:
    index = pd.date_range("2024-01-01", periods=24 * 60, freq="h", tz="UTC")
    assert "DQ_GAP" not in quality_report(_hourly(index, [])).codes()
    night = slice(24 * 10 + 20, 24 * 11 + 6)  # 20:00 to 06:00 of the next day
    gaps = [i for i in quality_report(_hourly(index, [night])).warnings if i.code == "DQ_GAP"]
    assert [(g.symbol, g.count) for g in gaps] == [("H", 1)]


def test_report_stale_run_and_short_history() -> None:
    close = 100.0 + np.arange(100.0)[:, None] * np.ones((1, 2))
    close[40:46, 0] = 55.0                          # 6 identical closes on S0
    report = quality_report(panel(close), stale_run=5)
    stale = [i for i in report.warnings if i.code == "DQ_STALE_RUN"]
    assert [(i.symbol, i.count) for i in stale] == [("S0", 1)]
    short = {i.symbol for i in report.warnings if i.code == "DQ_SHORT_HISTORY"}
    assert short == {"S0", "S1"}                    # 100 bars < 252
    assert report.ok                                 # warnings only
    assert "DQ_SHORT_HISTORY" not in quality_report(panel(close), min_years=0.2).codes()


def test_symbols_equal_but_for_case_are_a_warning() -> None:
    """'AAA' and 'aaa' are kept apart (symbols are case-sensitive), but a file that
    spells one symbol both ways is the likelier story: warned, not refused."""
    close = 100.0 + np.arange(30.0)[:, None] * np.ones((1, 3))
    bars = panel(close)
    bars = Bars(index=bars.index, symbols=("AAA", "aaa", "BBB"), open=bars.open,
                high=bars.high, low=bars.low, close=bars.close, volume=bars.volume)
    report = quality_report(bars)
    case = [i for i in report.warnings if i.code == "DQ_SYMBOL_CASE"]
    assert [(i.symbol, i.count) for i in case] == [("AAA", 2)]
    assert "['AAA', 'aaa']" in case[0].message and report.ok
    assert "DQ_SYMBOL_CASE" not in quality_report(panel(close)).codes()


def test_a_one_bar_spike_that_reverts_is_a_warning_a_lasting_move_is_not() -> None:
    close = 100.0 + np.arange(60.0)[:, None] * np.ones((1, 3))
    close[30, 0] *= 100.0                            # S0: a bad print, back the next bar
    close[20, 1] /= 10.0                             # S1: the same, downwards
    close[40:, 2] *= 6.0                             # S2: a lasting jump (no revert)
    spikes = [(i.symbol, i.count, i.first) for i in quality_report(panel(close.copy()))
              .warnings if i.code == "DQ_SPIKE"]
    assert spikes == [("S0", 1, 30), ("S1", 1, 20)]
    close[30, 0] = close[29, 0] * 4.0                # 4x: below the factor of 5
    assert [i.symbol for i in quality_report(panel(close.copy())).warnings
            if i.code == "DQ_SPIKE"] == ["S1"]


def _stale_runs_reference(col: np.ndarray, k: int) -> int:
    """Plain-Python count of runs of >= k identical (non-NaN) values."""
    runs, length = 0, 1
    for a, b in itertools.pairwise(col):
        length = length + 1 if a == b else 1
        if length == k:
            runs += 1
    return runs


def _gaps_reference(ts: np.ndarray, col: np.ndarray, limit: float) -> int:
    valid = ts[~np.isnan(col)]
    return int((np.diff(valid) > limit).sum())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([1.0, 2.0, np.nan]), min_size=3, max_size=3),
                min_size=3, max_size=40),
       st.integers(2, 4))
def test_vectorized_stale_and_gap_checks_match_reference(rows: list[list[float]], k: int) -> None:
    close = np.array(rows)
    if np.isnan(close).all(axis=0).any():
        close[0, :] = 1.0
    bars = panel(close)
    report = quality_report(bars, stale_run=k, gap_factor=1.5)
    stale = {i.symbol: i.count for i in report.warnings if i.code == "DQ_STALE_RUN"}
    gaps = {i.symbol: i.count for i in report.warnings if i.code == "DQ_GAP"}
    ts = bars.index.asi8
    limit = 1.5 * float(np.median(np.diff(ts)))
    for j, s in enumerate(bars.symbols):
        assert stale.get(s, 0) == (_stale_runs_reference(close[:, j], k) if len(close) >= k else 0)
        assert gaps.get(s, 0) == _gaps_reference(ts, close[:, j], limit)
