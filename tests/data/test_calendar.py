"""Calendars: annualization per calendar, and the calendar/time-zone checks of the gate.

Hand numbers: weekday daily 252, 7-day daily 365, US hourly session (09:30..15:30
stamps, 7 a day) 252 × 7 = 1764, 24/7 hourly 365 × 24 = 8760, weekly 365.25 / 7 =
52.18, month-end 365.25 / mean month (30.44 days) = 12.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _expect import expect
from typer.testing import CliRunner

from alphaloop.data import Bars, import_dataset, list_datasets, load_bars, quality_report
from alphaloop.data.bars import periods_per_year_for
from alphaloop.data.quality import check_long_frame, check_wide_frame
from alphaloop.errors import DataError, ErrorClass

DAY = 86400.0


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))


def panel(index: pd.DatetimeIndex, n: int = 1, annualization: float | None = None) -> Bars:
    c = np.linspace(100.0, 120.0, len(index))[:, None] * np.ones((1, n))
    return Bars(index=pd.DatetimeIndex(index), symbols=tuple(f"S{j}" for j in range(n)),
                open=c.copy(), high=c + 1, low=c - 1, close=c.copy(), volume=np.ones_like(c),
                annualization=annualization)


def us_hourly(days: int = 120) -> pd.DatetimeIndex:
    """Bars stamped 09:30, 10:30 .. 15:30 New York time on business days (7 a day)."""
    stamps = [d + pd.Timedelta(hours=9, minutes=30) + pd.Timedelta(hours=h)
              for d in pd.bdate_range("2021-03-01", periods=days) for h in range(7)]
    return pd.DatetimeIndex(stamps).tz_localize("America/New_York").tz_convert("UTC")


CALENDARS = {
    "weekday_daily": (pd.bdate_range("2020-01-01", periods=600, tz="UTC"), 252.0),
    # Tokyo's weekdays stamped at local midnight: Sunday to Thursday in UTC (a black-box
    # report: counted as Saturday/Sunday bars, this was annualized as 365)
    "tokyo_daily": (pd.bdate_range("2021-03-01", periods=300).tz_localize("Asia/Tokyo")
                    .tz_convert("UTC"), 252.0),
    "crypto_daily": (pd.date_range("2020-01-01", periods=600, freq="D", tz="UTC"), 365.0),
    "us_hourly": (us_hourly(), 1764.0),
    "hourly_24_7": (pd.date_range("2020-01-01", periods=24 * 90, freq="h", tz="UTC"), 8760.0),
    "weekly": (pd.date_range("2020-01-03", periods=200, freq="W-FRI", tz="UTC"), 365.25 / 7),
    "month_end": (pd.date_range("2000-01-31", periods=240, freq="ME", tz="UTC"), 12.0),
}


# ---------------------------------------------------------------- the rule, by hand
def test_rule_hand_numbers() -> None:
    assert periods_per_year_for(DAY) == 252.0
    assert periods_per_year_for(3 * DAY) == 252.0                      # Friday -> Monday
    assert periods_per_year_for(DAY, weekend_share=2 / 7) == 365.0
    assert periods_per_year_for(DAY, weekend_share=0.05) == 252.0      # the threshold is ">"
    assert periods_per_year_for(3600.0, bars_per_day=7) == 1764.0
    assert periods_per_year_for(3600.0) == 1764.0                      # ceil(6.5) = 7
    assert periods_per_year_for(1800.0) == 252.0 * 13                  # 09:30..15:30, 13 bars
    assert periods_per_year_for(60.0) == 252.0 * 390
    assert periods_per_year_for(3600.0, weekend_share=2 / 7) == 8760.0
    assert periods_per_year_for(7 * DAY) == pytest.approx(52.178571, abs=1e-6)
    # month-end: the median month is 31 days, the mean 30.4375 (365.25 / 12)
    assert periods_per_year_for(31 * DAY, mean_step_seconds=30.4375 * DAY) == 12.0


@pytest.mark.parametrize("name", list(CALENDARS))
def test_whole_panel_annualization_per_calendar(name: str) -> None:
    index, expected = CALENDARS[name]
    got = panel(index).periods_per_year
    if name == "month_end":
        assert abs(got - 12.0) < 0.05          # the median spacing would give 11.78
    else:
        assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", list(CALENDARS))
def test_per_bar_annualization_per_calendar(name: str) -> None:
    """After a warm-up week, the causal per-bar value gives the same hand number."""
    index, expected = CALENDARS[name]
    per_bar = panel(index).periods_per_year_until(20)
    assert per_bar.shape == (len(index),) and per_bar.dtype == np.float64
    warm = 8 if name in ("crypto_daily", "weekly") else 24 * 8 if name == "hourly_24_7" else 25
    if name == "month_end":
        assert np.all(np.abs(per_bar[warm:] - 12.0) < 0.05)
    else:
        np.testing.assert_allclose(per_bar[warm:], expected, rtol=1e-12)


def test_weekday_daily_is_252_on_every_bar() -> None:
    """Engine results must not change on weekday data: 252 exactly, holidays and
    closures (9/11: 7 days) included, for any window."""
    np.testing.assert_array_equal(panel(CALENDARS["weekday_daily"][0])
                                  .periods_per_year_until(20), 252.0)
    spx = load_bars("us_indices")
    assert spx.periods_per_year == 252.0
    for window in (2, 5, 20, 250):
        np.testing.assert_array_equal(spx.periods_per_year_until(window), 252.0)


@pytest.mark.parametrize("name", list(CALENDARS))
def test_per_bar_annualization_is_causal(name: str) -> None:
    """The value at bar t is the same whether or not later bars exist."""
    index, _ = CALENDARS[name]
    bars = panel(index)
    for window in (2, 20):
        full = bars.periods_per_year_until(window)
        for cut in (1, 3, 10, 50, len(index) // 2):
            np.testing.assert_array_equal(bars.slice(0, cut).periods_per_year_until(window),
                                          full[:cut])


def test_24_7_short_window_on_weekdays_still_sees_the_weekend() -> None:
    """A 20-hour window on a Wednesday of 24/7 data holds no weekend bar; the weekend
    share looks back at least 7 days, so the value stays 8760 (not 7 × 252)."""
    index = CALENDARS["hourly_24_7"][0]
    per_bar = panel(index).periods_per_year_until(20)
    wednesdays = np.flatnonzero(np.asarray(index.day_of_week == 2))
    assert np.all(per_bar[wednesdays[wednesdays > 24 * 8]] == 8760.0)


# ---------------------------------------------------------------- explicit override
def test_annualization_override() -> None:
    bars = panel(CALENDARS["weekday_daily"][0], n=2, annualization=260)
    assert bars.periods_per_year == 260.0 and isinstance(bars.annualization, float)
    np.testing.assert_array_equal(bars.periods_per_year_until(20), np.full(bars.n_bars, 260.0))
    assert bars.slice(10, 50).annualization == 260.0
    assert bars.slice(10, 50).periods_per_year == 260.0
    assert bars.select(["S1"]).annualization == 260.0
    assert panel(CALENDARS["weekday_daily"][0]).annualization is None


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "252"])
def test_annualization_must_be_positive(bad: object) -> None:
    with pytest.raises(DataError) as info:
        panel(CALENDARS["weekday_daily"][0], annualization=bad)  # type: ignore[arg-type]
    assert info.value.code == "DQ_ANNUALIZATION"
    assert "annualization" in info.value.message and repr(bad) in info.value.message


# ---------------------------------------------------------------- DQ_DUPLICATE_DAY
def two_stamps_frame() -> pd.DataFrame:
    """Daily bars for AAA and BBB; AAA has 2020-03-03 twice (00:00 and 21:00)."""
    rows = []
    for i, t in enumerate(pd.bdate_range("2020-02-03", periods=40)):
        for s in ("AAA", "BBB"):
            rows.append({"timestamp": t, "symbol": s, "open": 100.0 + i, "high": 101.0 + i,
                         "low": 99.0 + i, "close": 100.0 + i, "volume": 1.0})
        if t == pd.Timestamp("2020-03-03"):
            rows.append({"timestamp": t + pd.Timedelta(hours=21), "symbol": "AAA",
                         "open": 100.5 + i, "high": 101.0 + i, "low": 99.0 + i,
                         "close": 100.5 + i, "volume": 1.0})
    return pd.DataFrame(rows).sort_values(["symbol", "timestamp"], ignore_index=True)


def test_duplicate_day_is_a_named_error() -> None:
    report = quality_report(Bars.from_long(two_stamps_frame()))
    dup = [i for i in report.issues if i.code == "DQ_DUPLICATE_DAY"]
    assert len(dup) == 1 and dup[0].severity == "error" and dup[0].symbol == "AAA"
    assert dup[0].count == 1
    for needle in ("'AAA'", "2020-03-03", "2020-03-03T00:00:00+00:00",
                   "2020-03-03T21:00:00+00:00"):
        assert needle in dup[0].message
    assert not report.ok
    with pytest.raises(DataError) as info:
        report.raise_for_errors()
    assert info.value.code == "DQ_DUPLICATE_DAY"
    assert info.value.error_class == ErrorClass.CRITICAL


def test_duplicate_day_is_raised_before_price_errors() -> None:
    df = two_stamps_frame()
    df.loc[0, "close"] = -1.0
    report = quality_report(Bars.from_long(df, validate=False))
    assert {"DQ_NONPOSITIVE_PRICE", "DQ_DUPLICATE_DAY"} <= report.codes()
    expect("DQ_DUPLICATE_DAY", report.raise_for_errors, "'AAA'", "2020-03-03", "more errors")


def test_bars_after_a_duplicate_day_cannot_hide_it() -> None:
    """A black-box causality report: an intraday symbol listing after the error pulled
    the whole panel's median step below half a day, and the error vanished."""
    df = two_stamps_frame()
    later = pd.date_range("2020-04-01", periods=600, freq="h")
    hourly = pd.DataFrame({"timestamp": later, "symbol": "HHH", "open": 50.0, "high": 51.0,
                           "low": 49.0, "close": 50.0, "volume": 1.0})
    full = Bars.from_long(pd.concat([df, hourly], ignore_index=True), validate=False)
    assert np.median(np.diff(full.index.asi8)) < 12 * 3600e9  # intraday as a whole
    for bars in (Bars.from_long(df), full):
        (dup,) = [i for i in quality_report(bars).issues if i.code == "DQ_DUPLICATE_DAY"]
        assert (dup.symbol, dup.count, str(bars.index[dup.first])) == (
            "AAA", 1, "2020-03-03 21:00:00+00:00")


def test_intraday_bars_on_one_date_are_not_duplicate_days() -> None:
    assert "DQ_DUPLICATE_DAY" not in quality_report(panel(us_hourly(30))).codes()
    assert quality_report(panel(CALENDARS["weekday_daily"][0], n=3)).ok


def test_load_bars_and_import_refuse_duplicate_days(tmp_path: Path) -> None:
    src = tmp_path / "stamps.csv"
    two_stamps_frame().to_csv(src, index=False)
    expect("DQ_DUPLICATE_DAY", lambda: load_bars(src), "stamps.csv", "'AAA'", "2020-03-03")
    assert load_bars(src, validate=False).n_bars == 41     # inspectable on request
    expect("DQ_DUPLICATE_DAY", lambda: import_dataset(src, "stamps"), "'AAA'", "2020-03-03")
    assert "stamps" not in {d.name for d in list_datasets()}


def test_cli_import_refuses_duplicate_days(tmp_path: Path) -> None:
    from alphaloop.cli import app

    src = tmp_path / "stamps.csv"
    two_stamps_frame().to_csv(src, index=False)
    res = CliRunner().invoke(app, ["data", "import", str(src), "--name", "stamps"])
    assert res.exit_code != 0
    text = res.stdout + res.stderr
    assert "DQ_DUPLICATE_DAY" in text and "2020-03-03" in text
    assert "stamps" not in {d.name for d in list_datasets()}


# ---------------------------------------------------------------- DQ_OFF_CALENDAR
def test_weekend_bars_in_weekday_data_are_a_warning() -> None:
    days = pd.bdate_range("2020-01-01", periods=300, tz="UTC")
    saturdays = pd.DatetimeIndex(["2020-02-01 05:00", "2020-02-08 05:00"], tz="UTC")
    index = pd.DatetimeIndex(days.append(saturdays)).sort_values()
    bars = panel(index, n=2)
    close = np.array(bars.close)
    close[np.asarray(index.isin(saturdays)), 0] = np.nan     # only S1 trades on Saturdays
    hole = np.isnan(close)
    shifted = Bars(index=index, symbols=bars.symbols, open=np.where(hole, np.nan, bars.open),
                   high=np.where(hole, np.nan, bars.high), low=np.where(hole, np.nan, bars.low),
                   close=close, volume=np.array(bars.volume))
    report = quality_report(shifted)
    off = [i for i in report.issues if i.code == "DQ_OFF_CALENDAR"]
    assert [(i.symbol, i.count, i.severity) for i in off] == [("S1", 2, "warning")]
    for needle in ("'S1'", "2 bars", "2020-02-01T05:00:00+00:00", "Saturday/Sunday"):
        assert needle in off[0].message
    assert report.ok                                           # a warning, not an error


def test_a_weekday_calendar_east_of_utc_is_not_off_calendar() -> None:
    index = CALENDARS["tokyo_daily"][0]
    assert set(np.asarray(index.day_of_week)) == {6, 0, 1, 2, 3}  # Sunday..Thursday UTC
    bars = panel(index, n=2)
    assert not [i for i in quality_report(bars).issues if i.code == "DQ_OFF_CALENDAR"]
    np.testing.assert_array_equal(bars.periods_per_year_until(20)[1:], 252.0)


def test_seven_day_calendars_are_not_off_calendar() -> None:
    for name in ("crypto_daily", "hourly_24_7"):
        assert "DQ_OFF_CALENDAR" not in quality_report(panel(CALENDARS[name][0])).codes()


def test_bundled_sets_pass_the_calendar_checks() -> None:
    for name in ("us_indices", "sp500"):
        report = quality_report(load_bars(name))
        assert report.ok, report.errors
        assert not {"DQ_OFF_CALENDAR", "DQ_DUPLICATE_DAY"} & report.codes()


# ---------------------------------------------------------------- DQ_UNSORTED wording
def test_unsorted_message_is_actionable_for_file_users() -> None:
    df = two_stamps_frame().iloc[::-1].reset_index(drop=True)
    expect("DQ_UNSORTED", lambda: check_long_frame(df),
           "sort the file by symbol and timestamp", "pass sort=True to load_bars")
    wide = pd.DataFrame({"A": [1.0, 2.0]}, index=pd.to_datetime(["2021-01-05", "2021-01-04"]))
    expect("DQ_UNSORTED", lambda: check_wide_frame(wide), "sort the file by timestamp",
           "pass sort=True to load_bars")
