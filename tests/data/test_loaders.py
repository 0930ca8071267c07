"""Loading files: formats, layouts, round trips, data_ref, and errors that name the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _expect import expect
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaloop.data import Bars, load_bars, quality_report, read_frame, synthetic
from alphaloop.data.loaders import load_file


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))


@pytest.fixture
def bars() -> Bars:
    return synthetic.generate(3, 120, seed=5)


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- read_frame
def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.csv"
    expect("DQ_FILE_NOT_FOUND", lambda: read_frame(p), "nope.csv")


def test_unsupported_suffix(tmp_path: Path) -> None:
    p = tmp_path / "prices.xlsx"
    p.write_text("x")
    expect("DQ_FORMAT", lambda: read_frame(p), "prices.xlsx", ".xlsx")


def test_corrupt_parquet(tmp_path: Path) -> None:
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"PAR1 this is not really parquet")
    expect("DQ_READ_FAILED", lambda: read_frame(p), "broken.parquet", "parquet")


def test_corrupt_gzip_csv(tmp_path: Path) -> None:
    p = tmp_path / "broken.csv.gz"
    p.write_bytes(gzip.compress(b"timestamp,symbol\n2020-01-01,A\n")[:-12] + b"garbage!")
    expect("DQ_READ_FAILED", lambda: read_frame(p), "broken.csv.gz")


def test_empty_csv(tmp_path: Path) -> None:
    p = tmp_path / "empty.csv"
    p.write_text("")
    expect("DQ_EMPTY", lambda: read_frame(p), "empty.csv")


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz"])
def test_long_round_trip(tmp_path: Path, bars: Bars, suffix: str) -> None:
    p = tmp_path / f"panel{suffix}"
    if suffix == ".parquet":
        bars.to_long().to_parquet(p, index=False)
    else:
        bars.to_long().to_csv(p, index=False)
    loaded = load_bars(p)
    assert loaded.name == "panel"
    assert loaded.symbols == bars.symbols
    assert str(loaded.index.dtype) == "datetime64[ns, UTC]"
    pd.testing.assert_frame_equal(loaded.to_long(), bars.to_long(), check_exact=suffix == ".parquet",
                                  rtol=1e-14)
    if suffix == ".parquet":
        assert loaded.data_ref == bars.data_ref


def test_ragged_panel_keeps_nan_for_missing_bars(tmp_path: Path, bars: Bars) -> None:
    long = bars.to_long()
    long = long[~((long["symbol"] == "SYN001") & (long.index % 7 == 0))]
    loaded = load_bars(write(long, tmp_path / "ragged.parquet"))
    assert np.isnan(loaded.close[:, 1]).sum() > 0
    pd.testing.assert_frame_equal(loaded.to_long(), long.reset_index(drop=True))


def test_wide_csv_with_date_column(tmp_path: Path, bars: Bars) -> None:
    wide = bars.frame("close")
    csv = tmp_path / "closes.csv"
    wide.rename_axis("Date").tz_convert(None).to_csv(csv)
    loaded = load_bars(csv)
    assert loaded.symbols == bars.symbols
    np.testing.assert_allclose(loaded.close, bars.close, rtol=1e-14)
    assert np.array_equal(loaded.open, loaded.close) and np.isnan(loaded.volume).all()


def test_wide_parquet_with_datetime_index(tmp_path: Path, bars: Bars) -> None:
    p = tmp_path / "closes.parquet"
    bars.frame("close").to_parquet(p)
    loaded = load_bars(p)
    assert loaded.index.equals(bars.index)
    np.testing.assert_array_equal(loaded.close, bars.close)


def test_wide_unsorted_needs_sort(tmp_path: Path, bars: Bars) -> None:
    p = tmp_path / "shuffled.parquet"
    bars.frame("close").iloc[::-1].to_parquet(p)
    expect("DQ_UNSORTED", lambda: load_bars(p), "shuffled.parquet", "sort=True")
    np.testing.assert_array_equal(load_bars(p, sort=True).close, bars.close)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shuffle=st.integers(0, 10_000), drop=st.floats(0.0, 0.5))
def test_row_order_is_irrelevant_with_sort(seed: int, shuffle: int, drop: float) -> None:
    """Any subset of a panel's rows, in any order, builds the same panel with sort=True."""
    long = synthetic.generate(3, 30, seed=seed).to_long()
    keep = np.random.default_rng(shuffle).random(len(long)) >= drop
    keep[0] = True
    subset = long[keep].reset_index(drop=True)
    ref = Bars.from_long(subset)
    shuffled = subset.sample(frac=1.0, random_state=shuffle)
    assert Bars.from_long(shuffled, sort=True).data_ref == ref.data_ref
    pd.testing.assert_frame_equal(ref.to_long(), subset)


# ---------------------------------------------------------------- data_ref
def test_data_ref_stable_across_loads_and_formats(tmp_path: Path, bars: Bars) -> None:
    p = write(bars.to_long(), tmp_path / "a.parquet")
    assert load_bars(p).data_ref == load_bars(p).data_ref == bars.data_ref
    assert load_bars(p, name="other").data_ref == bars.data_ref   # the name is not data


def test_data_ref_changes_when_one_value_changes(tmp_path: Path, bars: Bars) -> None:
    long = bars.to_long()
    long.loc[17, "volume"] += 1.0
    changed = load_bars(write(long, tmp_path / "b.parquet"))
    assert changed.data_ref != bars.data_ref


# ---------------------------------------------------------------- layout and errors
def test_errors_from_checks_name_the_file(tmp_path: Path, bars: Bars) -> None:
    long = bars.to_long()
    dup = pd.concat([long, long.iloc[[4]]], ignore_index=True)
    p = write(dup, tmp_path / "dups.csv")
    expect("DQ_DUPLICATE_TIMESTAMP", lambda: load_bars(p), "dups.csv",
           str(long.loc[4, "symbol"]), long.loc[4, "timestamp"].isoformat())


def test_ohlc_without_symbol_column_is_one_symbol(tmp_path: Path, bars: Bars) -> None:
    """Title-case OHLCV without a symbol column: one symbol, named after the file."""
    one = bars.to_long().query("symbol == 'SYN000'").drop(columns="symbol")
    p = write(one.rename(columns=str.title), tmp_path / "yahoo_style.csv")
    loaded = load_bars(p)
    assert loaded.symbols == ("yahoo_style",)
    np.testing.assert_array_equal(loaded.close[:, 0], bars.close[:, 0])


def test_unrecognised_layout(tmp_path: Path) -> None:
    p = write(pd.DataFrame({"a": [1, 2], "b": [3, 4]}), tmp_path / "what.csv")
    expect("DQ_FORMAT", lambda: load_bars(p), "what.csv", "layout")


def test_validate_false_loads_dirty_data_for_inspection(tmp_path: Path, bars: Bars) -> None:
    long = bars.to_long()
    long.loc[9, "close"] = long.loc[9, "high"] * 1.5
    p = write(long, tmp_path / "dirty.parquet")
    expect("DQ_CLOSE_OUTSIDE_RANGE", lambda: load_bars(p), "dirty.parquet",
           str(long.loc[9, "symbol"]))
    dirty = load_bars(p, validate=False)
    report = quality_report(dirty)
    assert [(i.code, i.symbol) for i in report.errors] == [("DQ_CLOSE_OUTSIDE_RANGE",
                                                           long.loc[9, "symbol"])]


def test_unknown_name_lists_known_datasets() -> None:
    expect("DQ_UNKNOWN_DATASET", lambda: load_bars("no_such_set"), "no_such_set", "us_indices",
           "synth_100")


def test_missing_path_is_file_not_found(tmp_path: Path) -> None:
    expect("DQ_FILE_NOT_FOUND", lambda: load_bars(tmp_path / "gone.parquet"), "gone.parquet")
    expect("DQ_FILE_NOT_FOUND", lambda: load_bars("gone.csv"), "gone.csv")


# ---------------------------------------------------------------- issue 14: ordinary CSVs
@pytest.mark.parametrize("date_name", ["date", "Date", "datetime", "time", "TIMESTAMP"])
def test_common_date_column_names(date_name: str, tmp_path: Path) -> None:
    p = tmp_path / "two.csv"
    p.write_text(f"{date_name},symbol,open,high,low,close\n"
                 "2021-03-01,AAA,10,11,9,10.5\n2021-03-02,AAA,10.5,12,10,11\n")
    loaded = load_bars(p)
    assert loaded.symbols == ("AAA",) and loaded.close[:, 0].tolist() == [10.5, 11.0]
    assert str(loaded.index[1].date()) == "2021-03-02"


def test_single_symbol_adjusted_and_raw(tmp_path: Path) -> None:
    p = tmp_path / "QQQ.csv"
    p.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n"
                 "2020-01-02,200,210,190,200,100,5\n2020-01-03,210,220,200,220,110,6\n")
    notes: list[str] = []
    adj = load_file(p, notes=notes)
    assert adj.symbols == ("QQQ",)
    assert adj.high[:, 0].tolist() == [105.0, 110.0]  # 210 × 0.5, 220 × 0.5
    assert adj.volume[:, 0].tolist() == [5.0, 6.0]
    assert "Adj Close / Close (ratio 0.5 .. 0.5)" in notes[0]
    raw = load_file(p, adjust=False, symbol="NDX100")
    assert raw.symbols == ("NDX100",) and raw.high[:, 0].tolist() == [210.0, 220.0]


@pytest.mark.parametrize(("row", "missing"), [
    ("2020-01-03,210,220,200,220,,6", "['adj_close']"),  # prices but no Adj Close
    ("2020-01-03,210,220,200,,110,6", "['close']")])      # Adj Close but no Close
def test_a_row_missing_part_of_its_adjustment_is_refused(tmp_path: Path, row: str,
                                                         missing: str) -> None:
    """Adjusted, such a row would become an empty bar and vanish: refused like a
    partial row of the long layout (a black-box report found the bar dropped). A row
    empty throughout stays no bar."""
    p = tmp_path / "QQQ.csv"
    p.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n2020-01-02,200,210,190,200,"
                 f"100,5\n{row}\n2020-01-06,210,220,200,220,110,6\n")
    expect("DQ_NAN_VALUES", lambda: load_file(p), missing, "2020-01-03", "--no-adjust")
    p.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n2020-01-02,200,210,190,200,"
                 "100,5\n2020-01-03,,,,,,\n2020-01-06,210,220,200,220,110,6\n")
    assert load_file(p).n_bars == 2


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    """pandas renames a second 'close' to 'close.1' and the first would win silently."""
    p = tmp_path / "dup.csv"
    p.write_text("timestamp,symbol,open,high,low,close,close\n"
                 "2020-01-02,AAA,10,11,9,10,10.9\n2020-01-03,AAA,10,11,9,10.5,9.5\n")
    expect("DQ_DUPLICATE_COLUMN", lambda: load_bars(p), "dup.csv", "['close']")


def test_symbol_option_only_for_single_symbol_files(tmp_path: Path, bars: Bars) -> None:
    p = write(bars.to_long(), tmp_path / "long.csv")
    expect("DQ_FORMAT", lambda: load_file(p, symbol="X"), "only for a single-symbol file")


def test_wrong_columns_name_missing_and_unexpected(tmp_path: Path) -> None:
    p = tmp_path / "odd.csv"
    p.write_text("Date,Open,Close,Foo\n2020-01-02,1,2,3\n")
    expect("DQ_FORMAT", lambda: load_bars(p), "odd.csv", "missing columns ['high', 'low']",
           "unexpected columns ['foo']")


def test_a_column_of_symbols_under_another_name_is_refused_not_dropped(tmp_path: Path) -> None:
    """Prices with a 'Ticker' column are a long file whose symbol column has another
    name: read as one symbol, two symbols' rows would be mixed (or called duplicates)."""
    p = tmp_path / "renamed.csv"
    p.write_text("DATE,Ticker,open,high,low,Close,volume\n"
                 "2021-03-01,AAA,10,11,9,10.5,100\n2021-03-01,BBB,20,21,19,20.5,100\n")
    expect("DQ_FORMAT", lambda: load_bars(p), "renamed.csv", "['Ticker']", "'symbol'")
    p.write_text("Date,Open,High,Low,Close,Dividends,Stock Splits\n"  # numbers: kept out
                 "2021-03-01,10,11,9,10.5,0,0\n2021-03-02,10.5,12,10,11,0.1,0\n")
    assert load_bars(p).close[:, 0].tolist() == [10.5, 11.0]


# ------------------------------------------------------- what the import left as it was
def test_what_an_import_leaves_out_is_said(tmp_path: Path) -> None:
    """A black-box report: an empty Yahoo row, extra columns, a missing volume and naive
    intraday times all passed without a word."""
    p = tmp_path / "m.csv"
    p.write_text("timestamp,symbol,open,high,low,close,volume,dividend\n"
                 "2021-03-01 14:30,AAA,10,11,9,10.5,100,0\n"
                 "2021-03-01 14:31,AAA,,,,,,0\n"          # no price: no bar
                 "2021-03-01 14:32,AAA,10.5,12,10,11,,0\n"  # a bar without volume
                 "2021-03-01 14:33,AAA,11,12,10,11.5,120,0\n")
    notes: list[str] = []
    loaded = load_file(p, notes=notes)
    assert loaded.n_bars == 3
    assert [n.split(":")[0] for n in notes] == [
        "DQ_IGNORED_COLUMNS", "DQ_EMPTY_ROWS", "DQ_VOLUME_MISSING", "DQ_NAIVE_TIMES"]
    assert "['dividend']" in notes[0]
    assert "row 1 (2021-03-01T14:31:00+00:00, AAA)" in notes[1]
    assert notes[2].startswith("DQ_VOLUME_MISSING: 1 bar(s)")


def test_a_clean_file_gets_no_notes(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_text("timestamp,symbol,open,high,low,close,volume\n"
                 "2021-03-01T09:30:00-05:00,AAA,10,11,9,10.5,100\n"
                 "2021-03-01T09:31:00-05:00,AAA,10.5,12,10,11,90\n"
                 "2021-03-01T09:32:00-05:00,AAA,11,12,10,11.5,120\n")
    notes: list[str] = []
    load_file(p, notes=notes)
    daily = tmp_path / "d.csv"  # dates without a zone are not intraday times
    daily.write_text("date,open,high,low,close\n2021-03-01,10,11,9,10.5\n"
                     "2021-03-02,10.5,12,10,11\n")
    load_file(daily, notes=notes)
    assert notes == []


def test_a_wide_table_with_a_text_column_names_it(tmp_path: Path) -> None:
    # a black-box report: the error said "missing columns open/high/low/close" and listed
    # the good symbol columns, lower-cased, as unexpected
    p = tmp_path / "w.csv"
    p.write_text("date,AAA,BBB,CCC\n2021-03-01,10,20,x\n2021-03-02,11,21,y\n")
    expect("DQ_FORMAT", lambda: load_file(p), "column(s) ['CCC'] hold text",
           "unexpected columns ['AAA', 'BBB', 'CCC']")  # as the file writes them


def test_a_zero_adj_close_is_named(tmp_path: Path) -> None:
    p = tmp_path / "Z.csv"
    p.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n"
                 "2020-01-02,200,210,190,200,100,5\n2020-01-03,210,220,200,220,0,6\n")
    expect("DQ_NONPOSITIVE_PRICE", lambda: load_file(p), "Adj Close <= 0",
           "2020-01-03T00:00:00+00:00 (row 1")


def test_compact_integer_dates_are_refused_by_name(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_text("date,open,high,low,close\n20200102,10,11,9,10.5\n20200103,10.5,12,10,11\n")
    expect("DQ_BAD_TIMESTAMP", lambda: load_file(p), "YYYYMMDD")
    wide = tmp_path / "w.csv"  # a wide table too (it was "cannot tell the layout")
    wide.write_text("date,AAA,BBB\n20200102,10,20\n20200103,11,21\n")
    expect("DQ_BAD_TIMESTAMP", lambda: load_file(wide), "YYYYMMDD",
           "(first value 20200102)")


def test_errors_give_day_first_dates_as_read(tmp_path: Path) -> None:
    # a black-box retest: the Adj Close checks ran on the raw text, and printed 10/01/2020
    # (10 January, as the file reads) as 1 October
    p = tmp_path / "D.csv"
    p.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n"
                 "13/01/2020,200,210,190,200,100,5\n10/01/2020,210,220,200,220,0,6\n")
    expect("DQ_NONPOSITIVE_PRICE", lambda: load_file(p), "2020-01-10T00:00:00+00:00")


def test_epoch_times_load_in_the_unit_their_magnitude_names(tmp_path: Path) -> None:
    """A crypto exchange's export: milliseconds since 1970 (UTC), here 1609459200000 =
    2021-01-01T00:00:00Z (86,400 s × 18,628 days from 1970-01-01 to 2021-01-01), hourly;
    epoch times are UTC, so no note about naive times."""
    ms = 1_609_459_200_000
    single = tmp_path / "btc.csv"
    single.write_text("open_time,open,high,low,close,volume\n"  # an exchange's name
                      + "".join(f"{ms + i * 3_600_000},10,11,9,10.5,5\n" for i in range(30)))
    notes: list[str] = []
    bars = load_file(single, notes=notes)
    assert bars.index[0] == pd.Timestamp("2021-01-01T00:00:00Z")
    assert bars.index[-1] == pd.Timestamp("2021-01-02T05:00:00Z")  # 29 hours later
    assert not any("DQ_NAIVE_TIMES" in n for n in notes)
    wide = tmp_path / "wide.csv"  # a wide table's first column too, in seconds
    wide.write_text("time,AAA,BBB\n" + "".join(f"{ms // 1000 + d * 86_400},10,20\n"
                                               for d in range(3)))
    assert list(load_file(wide).index.strftime("%Y-%m-%d")) == [
        "2021-01-01", "2021-01-02", "2021-01-03"]


def test_a_long_csvs_symbols_are_read_as_written(tmp_path: Path) -> None:
    """A black-box report: '0700' was imported as 700, '01' collided with '1', and the
    ticker 'NA' was read as missing."""
    names = ["0700", "0005", "01", "1", "NA", "TRUE"]
    days = pd.bdate_range("2021-01-04", periods=30).strftime("%Y-%m-%d")
    rows = [f"{d},{s},10,11,9,10.5,100" for d in days for s in names]
    path = tmp_path / "hk.csv"
    path.write_text("Date, Symbol ,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    got = load_file(path)
    assert sorted(got.symbols) == sorted(names)
    blank = tmp_path / "blank.csv"
    blank.write_text("date,symbol,open,high,low,close\n2021-01-04,,1,1,1,1\n")
    expect("DQ_BAD_SYMBOL", lambda: load_file(blank), "symbol")


def test_a_path_under_home_is_expanded_as_a_shell_would(tmp_path: Path, bars: Bars,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A run config's `data.source: ~/panel.parquet` (a black-box report: file not
    found, while out_dir and ALPHALOOP_HOME expanded ~)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    bars.to_long().to_parquet(tmp_path / "panel.parquet", index=False)
    assert load_bars("~/panel.parquet").data_ref == bars.data_ref
