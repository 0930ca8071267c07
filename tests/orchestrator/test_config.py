"""RunConfig as a user writes it: what it refuses, with the key named, and what it
takes (seed 003 §3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphaloop.orchestrator.config import (
    ConfigError,
    RunConfig,
    bar_interval,
    check_run_id,
    run_label,
)


def _refused(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(data)
    assert info.value.code == "INVALID_CONFIG" and needle in str(info.value)


@pytest.mark.parametrize(("data", "needle"), [
    ({"budgets": {"max_iterations": True}}, "budgets.max_iterations"),
    ({"budgets": {"max_backtests": 10.0}}, "budgets.max_backtests"),
    ({"budgets": {"max_walltime_sec": "60"}}, "budgets.max_walltime_sec"),
    ({"engines": {"fees_bps": False}}, "engines.fees_bps"),
    ({"learning": {"enabled": "yes please"}}, "learning.enabled"),
    ({"seed": 1.5}, "seed"),
])
def test_numbers_and_switches_are_strict(data: dict[str, object], needle: str) -> None:
    """A bool is not 1, 10.0 is not a count, a quoted number is not a number."""
    _refused(data, needle)


def test_whole_numbers_where_floats_are_wanted_are_fine() -> None:
    cfg = RunConfig.from_dict({"budgets": {"max_walltime_sec": 60}, "engines": {"fees_bps": 0}})
    assert cfg.budgets.max_walltime_sec == 60.0 and cfg.engines.fees_bps == 0.0


def test_period_dates_quoted_unquoted_or_zoned(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"  # YAML reads the unquoted date as a date
    path.write_text("data:\n  period:\n    start: 2020-01-31\n    end: '2021-06-30T16:00-04:00'\n")
    period = RunConfig.from_yaml(path).data.period
    assert (period.start, period.end) == ("2020-01-31", "2021-06-30T16:00-04:00")
    _refused({"data": {"period": {"start": "not-a-date"}}}, "data.period.start")
    _refused({"data": {"period": {"start": "2021-01-01", "end": "2020-12-31"}}},
             "is after end")


@pytest.mark.parametrize(("interval", "seconds"), [
    ("1d", 86400), ("1D", 86400), ("4h", 4 * 3600), ("5min", 300), ("30s", 30),
    ("1w", 7 * 86400)])
def test_bar_intervals_that_parse(interval: str, seconds: int) -> None:
    assert RunConfig.from_dict({"data": {"bar_interval": interval}}).data.bar_interval \
        == interval
    assert bar_interval(interval).total_seconds() == seconds


@pytest.mark.parametrize("interval", ["banana", "0d", "-1h", "", "1.5h", "d", "1 fortnight"])
def test_bar_intervals_that_do_not(interval: str) -> None:
    _refused({"data": {"bar_interval": interval}}, "data.bar_interval")


@given(st.text(alphabet=st.sampled_from("abcXYZ019-_"), min_size=1, max_size=64))
def test_safe_run_ids_are_taken(run_id: str) -> None:
    assert check_run_id(run_id) == run_id
    assert RunConfig.from_dict({"run_id": run_id}).run_id == run_id


@given(st.text(min_size=1, max_size=20).filter(
    lambda s: any(not (c.isascii() and (c.isalnum() or c in "-_")) for c in s)))
def test_run_ids_with_anything_else_are_refused(run_id: str) -> None:
    """'/', '.', '*', spaces, non-ASCII letters: a run id names one folder, no more."""
    with pytest.raises(ConfigError):
        check_run_id(run_id)
    _refused({"run_id": run_id}, "run_id")


def test_too_long_or_empty_run_ids_are_refused() -> None:
    for bad in ("", "x" * 65):
        with pytest.raises(ConfigError):
            check_run_id(bad)


@pytest.mark.parametrize(("retry", "needle"), [
    ({"stage_max_attempts": {"S5O": 2}}, "unknown stage id(s) ['S5O']"),
    ({"stage_max_attempts": {"S50": 0}}, "a stage has 1 to 100 attempts"),
    ({"base_backoff_sec": 100, "max_backoff_sec": 1}, "is above max_backoff_sec"),
])
def test_retry_settings_that_cannot_mean_anything(retry: dict[str, object],
                                                  needle: str) -> None:
    _refused({"policies": {"retry": retry}}, needle)


def test_a_generated_run_id_is_shown_short_and_a_chosen_name_in_full() -> None:
    """A black-box report: `bb_planted_1h` and `bb_planted_1x` both showed as
    `bb_planted_1` in `kb runs` and the run report's title."""
    uuid_hex = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # what RunConfig generates (uuid4().hex)
    sha = "ab" * 32  # an evaluation's run id (sha256 hex)
    assert run_label(uuid_hex) == "0f1e2d3c4b5a"
    assert run_label(sha) == "abababababab"
    assert run_label("bb_planted_1h") == "bb_planted_1h"
    assert run_label("0F1E2D3C4B5A69788796A5B4C3D2E1F0") == "0F1E2D3C4B5A69788796A5B4C3D2E1F0"
    generated = RunConfig().run_id
    assert run_label(generated) == generated[:12]


@pytest.mark.parametrize(("data", "needle"), [
    ({"kb": {"url": ""}}, "kb.url"),
    ({"kb": {"url": "sqlite://"}}, "in-memory"),
    ({"kb": {"url": "sqlite:///:memory:"}}, "in-memory"),
    ({"kb": {"url": "sqlite:///file::memory:?cache=shared&uri=true"}}, "in-memory"),
    ({"out_dir": ""}, "out_dir"),
    ({"world": {"url": "garbage", "id": "main"}}, "not a WorldService address"),
    ({"world": {"url": "ftp://host:1", "id": "main"}}, "not a WorldService address"),
    ({"world": {"url": "http://host:99999", "id": "main"}}, "not a WorldService address"),
])
def test_places_that_lose_the_run_or_go_nowhere_are_refused(data: dict[str, object],
                                                            needle: str) -> None:
    """A black-box report: these were taken silently (the default KB or folder, a KB
    in memory that forgets the run, a world that could not be reached at the end)."""
    _refused(data, needle)


def test_an_empty_config_file_is_refused_and_an_empty_mapping_means_defaults(
        tmp_path: Path) -> None:
    for text in ("", "null\n", "# nothing\n"):
        path = tmp_path / "run.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            RunConfig.from_yaml(path)
        assert info.value.code == "INVALID_CONFIG" and "empty" in str(info.value)
    path.write_text("{}\n")
    assert RunConfig.from_yaml(path).mode == "mixed"


def test_a_config_path_that_is_a_folder_says_so(tmp_path: Path) -> None:
    """A black-box report: `alphaloop run cfgdir.yaml` (a folder) said "not found"."""
    (tmp_path / "cfgdir.yaml").mkdir()
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(tmp_path / "cfgdir.yaml")
    assert info.value.code == "INVALID_CONFIG" and "is a folder, not a file" in str(info.value)


def test_a_config_nested_too_deeply_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("run_id: d1\nfoo: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    assert info.value.code == "INVALID_CONFIG" and "nested too deeply" in str(info.value)


def test_where_a_new_run_keeps_its_records_is_made_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """out_dir and a SQLite kb.url, relative or under ~, against the directory and
    home of the process that starts the run; a recorded config is read as written."""
    from alphaloop.orchestrator.config import STORED

    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig.from_dict({"out_dir": "runs", "kb": {"url": "sqlite:///~/k.sqlite"}})
    assert cfg.out_dir == f"{tmp_path}/runs"
    assert cfg.kb.url == f"sqlite:///{tmp_path}/h/k.sqlite"
    assert RunConfig.from_dict({"out_dir": "~/r"}).out_dir == f"{tmp_path}/h/r"
    stored = RunConfig.model_validate({"out_dir": "runs"}, context={STORED: True})
    assert stored.out_dir == "runs"
