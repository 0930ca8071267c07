"""The dataset catalog: bundled real and synthetic sets, and atomic imports."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _expect import expect

from alphaloop.data import (
    PlantedEffect,
    dataset_info,
    import_dataset,
    list_datasets,
    load_bars,
    synthetic,
)
from alphaloop.data import catalog as catalog_module
from alphaloop.errors import AlphaloopError


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "alphaloop_home"
    monkeypatch.setenv("ALPHALOOP_HOME", str(h))
    return h


def small_long(seed: int = 1) -> pd.DataFrame:
    return synthetic.generate(3, 60, seed=seed).to_long()


def files_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---------------------------------------------------------------- bundled: real data
def test_us_indices_matches_arch() -> None:
    import arch.data.nasdaq
    import arch.data.sp500

    bars = load_bars("us_indices")
    assert bars.shape == (5031, 2)
    assert set(bars.symbols) == {"SPX", "IXIC"}
    assert str(bars.index.dtype) == "datetime64[ns, UTC]"
    assert bars.index[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2018-12-31", tz="UTC")
    spx = bars.symbols.index("SPX")
    assert bars.close[0, spx] == pytest.approx(1228.099976, abs=1e-6)
    for symbol, module in (("SPX", arch.data.sp500), ("IXIC", arch.data.nasdaq)):
        ref = module.load()
        j = bars.symbols.index(symbol)
        assert bars.close[0, j] == ref["Close"].iloc[0]
        for ours, theirs in (("open", "Open"), ("high", "High"), ("low", "Low"),
                             ("close", "Close"), ("volume", "Volume")):
            np.testing.assert_array_equal(bars.field(ours)[:, j], ref[theirs].to_numpy(float))


def test_sp500_is_spx_alone_and_loads_are_cached() -> None:
    sp = load_bars("sp500")
    assert sp.symbols == ("SPX",) and sp.n_bars == 5031
    us = load_bars("us_indices")
    np.testing.assert_array_equal(sp.close[:, 0], us.close[:, us.symbols.index("SPX")])
    assert load_bars("sp500") is sp                          # built once per process
    renamed = load_bars("sp500", name="mine")
    assert renamed.name == "mine" and renamed.data_ref == sp.data_ref


def test_us_indices_quality_only_warns_about_the_sept_2001_closure() -> None:
    from alphaloop.data import quality_report

    report = quality_report(load_bars("us_indices"))
    assert report.ok
    gaps = [i for i in report.warnings if i.code == "DQ_GAP"]
    assert {i.symbol for i in gaps} == {"SPX", "IXIC"}
    assert all("2001-09-17" in i.message for i in gaps)


# ---------------------------------------------------------------- bundled: synthetic
def test_synthetic_bundles_match_their_recipes() -> None:
    assert load_bars("synth_100").data_ref == synthetic.generate(100, 2520, seed=7).data_ref
    planted = load_bars("synth_planted")
    assert planted.shape == (2520, 20)
    eff = catalog_module.PLANTED
    assert isinstance(eff, PlantedEffect) and eff.symbols == (0, 1, 2, 3)
    assert planted.data_ref == synthetic.generate(20, 2520, seed=11, planted=eff).data_ref


def test_bundled_info_states_origin_and_licence() -> None:
    names = [d.name for d in list_datasets()]
    assert names[:4] == ["us_indices", "sp500", "synth_100", "synth_planted"]
    info = dataset_info("us_indices")
    assert info.kind == "bundled"
    assert "NCSA" in info.licence
    assert "arch" in info.origin and "Yahoo" in info.origin
    assert (info.n_bars, info.n_symbols) == (5031, 2)
    assert info.start is not None and info.start.startswith("1999-01-04")
    assert info.end is not None and info.end.startswith("2018-12-31")
    assert info.symbols == ("IXIC", "SPX")
    assert dataset_info("synth_100").kind == "synthetic"
    lazy = dataset_info("synth_planted", load=False)
    assert lazy.n_bars is None and "SYN000" in lazy.description


def test_unknown_dataset_info() -> None:
    expect("DQ_UNKNOWN_DATASET", lambda: dataset_info("nope"), "nope", "us_indices")


# ---------------------------------------------------------------- imports
def test_import_round_trip(tmp_path: Path, home: Path) -> None:
    src = tmp_path / "my prices.csv"
    long = small_long()
    long.to_csv(src, index=False)
    info = import_dataset(src, "mine", description="three fake stocks")
    stored = home / "data" / "mine.parquet"
    assert files_in(home / "data") == ["mine.parquet"]
    assert info.path == str(stored) and info.kind == "imported"
    assert (info.n_bars, info.n_symbols) == (60, 3)
    loaded = load_bars("mine")
    assert loaded.name == "mine"
    assert loaded.data_ref == info.data_ref == load_bars(src).data_ref
    again = dataset_info("mine")                       # read from the file's own metadata
    assert again.description == "three fake stocks" and again.data_ref == info.data_ref
    assert "my prices.csv" in again.origin
    assert "mine" in [d.name for d in list_datasets()]
    assert pd.read_parquet(stored).columns.tolist() == ["timestamp", "symbol", "open", "high",
                                                        "low", "close", "volume"]


def test_import_default_name_is_the_file_stem(tmp_path: Path) -> None:
    src = tmp_path / "closes_2020.parquet"
    small_long().to_parquet(src)
    assert import_dataset(src).name == "closes_2020"


def test_import_wide_file(tmp_path: Path) -> None:
    src = tmp_path / "wide.csv"
    synthetic.generate(2, 40).frame("close").rename_axis("date").to_csv(src)
    info = import_dataset(src)
    assert info.symbols == ("SYN000", "SYN001")
    assert load_bars("wide").data_ref == info.data_ref


def test_corrupt_file_writes_nothing(tmp_path: Path, home: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1\x00\x01garbage")
    expect("DQ_READ_FAILED", lambda: import_dataset(bad, "bad"), "bad.parquet")
    assert files_in(home / "data") == []


def test_invalid_file_leaves_existing_dataset_untouched(tmp_path: Path, home: Path) -> None:
    good = tmp_path / "good.csv"
    small_long(1).to_csv(good, index=False)
    before = import_dataset(good, "ds")
    stored = home / "data" / "ds.parquet"
    content = stored.read_bytes()

    dirty = small_long(2)
    dirty.loc[3, "low"] = -1.0
    bad = tmp_path / "dirty.csv"
    dirty.to_csv(bad, index=False)
    expect("DQ_NONPOSITIVE_PRICE", lambda: import_dataset(bad, "ds", overwrite=True),
           "dirty.csv", str(dirty.loc[3, "symbol"]))
    assert stored.read_bytes() == content
    assert files_in(home / "data") == ["ds.parquet"]                 # no temp file left
    assert load_bars("ds").data_ref == before.data_ref


def test_existing_name_needs_overwrite(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    small_long(1).to_csv(a, index=False)
    small_long(2).to_csv(b, index=False)
    first = import_dataset(a, "ds")
    expect("DQ_DATASET_EXISTS", lambda: import_dataset(b, "ds"), "'ds'", "--overwrite")
    assert load_bars("ds").data_ref == first.data_ref
    second = import_dataset(b, "ds", overwrite=True)
    assert second.data_ref != first.data_ref
    assert load_bars("ds").data_ref == second.data_ref


def test_failed_write_removes_temp_file(tmp_path: Path, home: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    small_long(1).to_csv(a, index=False)
    small_long(2).to_csv(b, index=False)
    first = import_dataset(a, "ds")

    def crash(table: object, where: io.BufferedWriter) -> None:
        where.write(b"half a file")           # a partial write...
        raise OSError("disk full")            # ...then failure

    monkeypatch.setattr(catalog_module.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        import_dataset(b, "ds", overwrite=True)
    assert files_in(home / "data") == ["ds.parquet"]
    assert load_bars("ds").data_ref == first.data_ref


@pytest.mark.parametrize("name", ["has space", "slash/name", "", ".hidden", "ü", "sp500",
                                  "SP500", "small.csv", "x.Parquet", "y.pq"])
def test_bad_names(tmp_path: Path, name: str) -> None:
    src = tmp_path / "x.csv"
    small_long().to_csv(src, index=False)
    expect("DQ_BAD_NAME", lambda: import_dataset(src, name), repr(name))


def test_remove_dataset(tmp_path: Path) -> None:
    src = tmp_path / "x.csv"
    small_long().to_csv(src, index=False)
    import_dataset(src, "gone")
    catalog_module.remove_dataset("gone")
    expect("DQ_UNKNOWN_DATASET", lambda: load_bars("gone"), "gone")


def test_one_damaged_import_does_not_hide_the_other_data_sets(home: Path, tmp_path: Path) -> None:
    """A black-box report: an imported file emptied on disk made `data list` fail for
    every data set; it is listed as damaged, and loading it still says why."""
    src = tmp_path / "mine.parquet"
    small_long().to_parquet(src, index=False)
    import_dataset(src, "mine")
    import_dataset(src, "broken")
    (home / "data" / "broken.parquet").write_bytes(b"")
    listed = {d.name: d for d in list_datasets()}
    assert {"us_indices", "mine", "broken"} <= set(listed)
    assert listed["mine"].n_bars == 60
    assert listed["broken"].description.startswith("DAMAGED (DQ_READ_FAILED)")
    with pytest.raises(AlphaloopError) as info:
        load_bars("broken")
    assert info.value.code == "DQ_READ_FAILED"
