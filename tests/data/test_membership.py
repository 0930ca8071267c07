"""Membership tables: parsing, the member mask, storage with a data set, and the
survivorship check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaloop.data import import_dataset, load_bars, quality_report
from alphaloop.data.bars import Bars
from alphaloop.data.membership import Membership, membership_from_frame, read_membership
from alphaloop.errors import DataError, ErrorClass


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))


def _bars(symbols: tuple[str, ...] = ("A", "B"), n: int = 6) -> Bars:
    idx = pd.bdate_range("2024-01-01", periods=n, tz="UTC")
    c = np.tile(np.linspace(10, 11, n)[:, None], (1, len(symbols)))
    return Bars(index=idx, symbols=symbols, open=c.copy(), high=c * 1.01, low=c * 0.99,
                close=c.copy(), volume=np.full(c.shape, 1e5))


def _members(rows: list[tuple[str, str, str | None]]) -> Membership:
    return membership_from_frame(pd.DataFrame(rows, columns=["symbol", "start", "end"]))


def test_mask_is_inclusive_by_date() -> None:
    bars = _bars()  # 2024-01-01 (Mon) .. 2024-01-08 (Mon)
    m = _members([("A", "2023-01-01", None), ("B", "2024-01-02", "2024-01-04"),
                  ("B", "2024-01-08", None)])
    mask = m.mask(bars.index, bars.symbols)
    assert mask[:, 0].all()
    # B: Jan 2, 3, 4 then again from Jan 8 (the 5th and the 8th are bars 4 and 5)
    assert mask[:, 1].tolist() == [False, True, True, True, False, True]


@pytest.mark.parametrize(("rows", "match"), [
    ([("A", "2024-01-05", "2024-01-01")], "end 2024-01-01 is before start 2024-01-05"),
    ([("A", "not a date", None)], "start 'not a date' is not a date"),
    ([("", "2024-01-01", None)], "symbol is empty"),
    ([("A", None, None)], "start is empty"),
])
def test_bad_tables_name_the_row(rows: list[tuple[str, str | None, str | None]],
                                 match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        _members(rows)  # type: ignore[arg-type]
    assert info.value.code == "DQ_MEMBERSHIP"


def test_membership_dates_are_read_in_the_one_order_they_allow() -> None:
    # 31/07/2020 can only be day first: 01/08/2020 is then the 1st of August (a black-box
    # report: it was stored as 8 January)
    frame = pd.DataFrame({"symbol": ["AAA", "BBB"], "start": ["31/07/2019", "15/01/2019"],
                          "end": ["01/08/2020", None]})
    assert membership_from_frame(frame).to_records() == [
        ["AAA", "2019-07-31", "2020-08-01"], ["BBB", "2019-01-15", None]]
    both = pd.DataFrame({"symbol": ["AAA"], "start": ["01/02/2019"], "end": ["01/08/2020"]})
    with pytest.raises(DataError) as info:
        membership_from_frame(both)
    assert info.value.code == "DQ_AMBIGUOUS_DATE"


def test_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("symbol,start\nA,2024-01-01\n")
    with pytest.raises(DataError, match="missing end"):
        read_membership(path)


def test_unknown_membership_is_a_warning_on_several_symbols() -> None:
    codes = [i.code for i in quality_report(_bars()).warnings]
    assert "DQ_SURVIVORSHIP_UNKNOWN" in codes
    assert "DQ_SURVIVORSHIP_UNKNOWN" not in quality_report(_bars(("A",))).codes()


def test_a_member_whose_periods_cover_none_of_its_bars_is_a_warning() -> None:
    from dataclasses import replace

    # B's only period starts after the last bar (a date typo): B is never traded
    m = _members([("A", "2020-01-01", None), ("B", "2030-01-01", None)])
    report = quality_report(replace(_bars(), membership=m))
    (never,) = [i for i in report.issues if i.code == "DQ_NEVER_A_MEMBER"]
    assert never.severity == "warning" and "symbol(s) B have bars" in never.message
    fine = _members([("A", "2020-01-01", None), ("B", "2020-01-01", None)])
    assert "DQ_NEVER_A_MEMBER" not in quality_report(replace(_bars(), membership=fine)).codes()


def test_removed_members_without_bars_fail_critically() -> None:
    # C left the index on 2024-01-03, and the data set has no bars of C: survivors only
    m = _members([("A", "2020-01-01", None), ("B", "2020-01-01", None),
                  ("C", "2020-01-01", "2024-01-03")])
    from dataclasses import replace

    bars = replace(_bars(), membership=m)
    report = quality_report(bars)
    assert "SURVIVORSHIP_CHECK_FAIL" in report.codes()
    with pytest.raises(DataError, match="removed symbol whose bars are missing") as info:
        report.raise_for_errors()
    assert info.value.code == "SURVIVORSHIP_CHECK_FAIL"
    assert info.value.error_class is ErrorClass.CRITICAL
    # with C's bars present there is nothing to report
    full = replace(_bars(("A", "B", "C")), membership=m)
    assert quality_report(full).codes().isdisjoint(
        {"SURVIVORSHIP_CHECK_FAIL", "DQ_SURVIVORSHIP_UNKNOWN", "DQ_NOT_A_MEMBER"})


def test_import_stores_membership_and_it_changes_data_ref(tmp_path: Path) -> None:
    data = tmp_path / "p.csv"
    _bars().to_long().to_csv(data, index=False)
    members = tmp_path / "members.csv"
    members.write_text("symbol,start,end\nA,2020-01-01,\nB,2024-01-03,\n")
    info = import_dataset(data, "withm", membership=members)
    assert info.membership_periods == 2
    bars = load_bars("withm")
    assert bars.membership is not None and bars.membership.symbols == ("A", "B")
    plain = import_dataset(data, "plain")
    assert plain.membership_periods is None
    assert load_bars("plain").data_ref != bars.data_ref  # another universe, another ref


def test_import_refuses_survivors_only(tmp_path: Path) -> None:
    data = tmp_path / "p.csv"
    _bars().to_long().to_csv(data, index=False)
    members = tmp_path / "members.csv"
    members.write_text("symbol,start,end\nA,2020-01-01,\nB,2020-01-01,\nZ,2020-01-01,2022-06-30\n")
    with pytest.raises(DataError, match="Z") as info:
        import_dataset(data, "bad", membership=members)
    assert info.value.code == "SURVIVORSHIP_CHECK_FAIL"
    with pytest.raises(DataError, match="unknown dataset"):
        load_bars("bad")  # nothing was written
