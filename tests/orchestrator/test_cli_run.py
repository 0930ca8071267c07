"""`alphaloop run | resume | status | kb | report --run` as a user types them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from alphaloop.cli import app

runner = CliRunner()


def _write(tmp: Path, source: Path, **over: object) -> Path:
    cfg: dict[str, object] = {
        "run_id": "cli1", "seed": 3, "data": {"source": str(source)},
        "budgets": {"max_iterations": 2, "max_backtests": 500},
        "generation": {"families": ["sma_cross"], "candidates_per_iteration": 20},
        "kb": {"url": f"sqlite:///{tmp / 'kb.sqlite'}"}, "out_dir": str(tmp / "runs")}
    cfg.update(over)
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(("over", "needle"), [
    ({"budgets": {"max_iterations": -1}}, "budgets.max_iterations"),
    ({"colour": "blue"}, "colour"),
    ({"generation": {"families": ["no_such_family"]}}, "no_such_family"),
    ({"data": {"source": "/nowhere/prices.csv"}}, "data.source"),
    ({"mode": "yolo"}, "mode"),
    ({"budgets": {"max_iterations": True}}, "budgets.max_iterations"),  # not 1
    ({"budgets": {"max_iterations": 2.5}}, "budgets.max_iterations"),  # not 2
    ({"data": {"period": {"start": "not-a-date"}}}, "data.period.start"),
    ({"data": {"period": {"start": "2020-01-01", "end": "2019-01-01"}}}, "data.period"),
    ({"data": {"bar_interval": "banana"}}, "data.bar_interval"),
    # a ranked book on the two-name panel: long, short and buffer cover every name, so
    # the book never changes (a black-box report: 2 trades in 20 years)
    ({"data": {"source": "us_indices"}, "generation": {"families": ["xs_momentum"]}},
     "needs at least 4"),
])
def test_a_bad_config_stops_before_anything_is_written(tmp_path: Path, noise_path: Path,
                                                       over: dict[str, object],
                                                       needle: str) -> None:
    res = runner.invoke(app, ["run", str(_write(tmp_path, noise_path, **over))])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "INVALID_CONFIG" in lines[0] and needle in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "kb.sqlite").exists()


def test_a_bar_interval_the_data_does_not_have_is_refused(tmp_path: Path,
                                                         noise_path: Path) -> None:
    """The panel is daily (conftest); a config that says hourly stops before writing."""
    path = _write(tmp_path, noise_path, data={"source": str(noise_path), "bar_interval": "1h"})
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 2 and "data.bar_interval is 1h" in res.stderr
    assert "1 days" in res.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [
    ["status", "../runs/cli1"], ["resume", "../cli1"], ["status", "cli*"],
    ["report", "--run", "cl*1"], ["report", "--run", "../../etc"]])
def test_run_ids_name_folders_only(tmp_path: Path, command: list[str]) -> None:
    """A run id is a folder name: no path, no glob (one line, exit 2)."""
    res = runner.invoke(app, [*command, "--out-dir", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "INVALID_CONFIG" in res.stderr and "letters, digits" in res.stderr


def test_a_damaged_knowledge_base_file_stops_the_run_before_its_data_is_read(
        tmp_path: Path) -> None:
    """A black-box report: a run on a non-SQLite kb.sqlite failed only after its set-up
    (12-14 s). The file is looked at first: here the data does not even exist."""
    bad = tmp_path / "kb.sqlite"
    bad.write_text("not a database at all")
    path = _write(tmp_path, tmp_path / "no_such_data.csv")
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 2 and "KB_CORRUPT" in res.stderr, res.output
    assert bad.read_text() == "not a database at all" and not (tmp_path / "runs").exists()


def test_status_of_a_folder_without_its_summary_reads_the_knowledge_base(
        tmp_path: Path, noise_path: Path) -> None:
    """A black-box report: a finished run whose summary.json was lost showed RUNNING, 0
    iterations, "killed or crashed"; the KB recorded how it ended."""
    path = _write(tmp_path, noise_path, budgets={"max_iterations": 1})
    done = runner.invoke(app, ["run", str(path), "--json"])
    assert done.exit_code == 0, done.output
    ended = json.loads(done.stdout)
    (tmp_path / "runs" / "cli1" / "summary.json").unlink()
    res = runner.invoke(app, ["status", "cli1", "--out-dir", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert (shown["status"], shown["stats"]) == (ended["status"], ended["stats"])
    assert "killed or crashed" not in res.stderr


def test_relative_and_home_paths_are_the_same_places_from_any_directory(
        tmp_path: Path, noise_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A black-box report: a run started with `out_dir: relout` could not be found by
    `status` or resumed from another directory, and `kb.url: sqlite:///~/kb.sqlite`
    created a folder literally named `~` in the working directory. Both are made
    absolute when the run starts (relative to where it starts, `~` as a shell would)."""
    home, start, elsewhere = (tmp_path / d for d in ("home", "start", "elsewhere"))
    for d in (home, start, elsewhere):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(start)
    path = _write(start, noise_path, budgets={"max_iterations": 1}, out_dir="relout",
                  kb={"url": "sqlite:///~/kb.sqlite"})
    assert runner.invoke(app, ["run", str(path)]).exit_code == 0
    assert (start / "relout" / "cli1" / "summary.json").exists()
    assert (home / "kb.sqlite").exists() and not (start / "~").exists()
    monkeypatch.chdir(elsewhere)
    for command in (["status", "cli1", "--out-dir", str(start / "relout")],
                    ["resume", "cli1", "--out-dir", str(start / "relout")]):
        res = runner.invoke(app, command)
        assert res.exit_code == 0, res.output
        assert "DONE" in res.stdout
    stats = runner.invoke(app, ["kb", "runs", "--url", "sqlite:///~/kb.sqlite", "--json"])
    assert stats.exit_code == 0 and "cli1" in stats.stdout, stats.output
    assert not (elsewhere / "~").exists()


def test_a_run_is_found_by_prefix_and_by_the_out_dir_the_kb_recorded(
        tmp_path: Path, noise_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`status`, `resume` and `report --run` without --out-dir: a unique prefix of the
    id, in a folder only the default knowledge base knows (the config's out_dir)."""
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))
    config = _write(tmp_path, noise_path, run_id="elsewhere-run", kb={})  # default KB
    assert runner.invoke(app, ["run", str(config), "--json"]).exit_code == 0
    status = runner.invoke(app, ["status", "elsewh", "--json"])
    assert status.exit_code == 0, status.stderr
    told = json.loads(status.stdout)
    assert told.pop("process_alive") is False  # finished: nothing runs it any more
    assert told["run_id"] == "elsewhere-run"
    again = runner.invoke(app, ["resume", "elsewhere", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout) == told
    page = tmp_path / "page.html"
    made = runner.invoke(app, ["report", "--run", "elsewhere-run", "--out", str(page)])
    assert made.exit_code == 0 and "elsewhere-ru" in page.read_text()
    lost = runner.invoke(app, ["status", "nowhere"])
    assert lost.exit_code == 2 and "RUN_NOT_FOUND" in lost.stderr and "--out-dir" in lost.stderr
    # a second run there: the shared prefix is ambiguous, not unknown (a black-box report)
    other = _write(tmp_path, noise_path, run_id="elsewhere-two", kb={})
    assert runner.invoke(app, ["run", str(other), "--json"]).exit_code == 0
    for command in (["status", "elsewh"], ["resume", "elsewh"], ["report", "--run", "elsewh"]):
        both = runner.invoke(app, command)
        assert both.exit_code == 2 and "RUN_AMBIGUOUS" in both.stderr, (command, both.stderr)
        assert "elsewh" in both.stderr
    # one run under the default runs folder and others elsewhere: still ambiguous, not the
    # local one picked silently (a black-box retest)
    home_run = _write(tmp_path, noise_path, run_id="elsewhome", kb={}, out_dir=None)
    assert runner.invoke(app, ["run", str(home_run), "--json"]).exit_code == 0
    picked = runner.invoke(app, ["status", "elsewh"])
    assert picked.exit_code == 2 and "RUN_AMBIGUOUS" in picked.stderr, picked.stderr
    assert runner.invoke(app, ["status", "elsewho"]).exit_code == 0


def test_an_out_dir_that_is_a_file_or_empty_windows_stop_before_writing(
        tmp_path: Path, noise_path: Path) -> None:
    afile = tmp_path / "not_a_folder"
    afile.write_text("x")
    for over, needle in (({"out_dir": str(afile)}, "is a file, not a folder"),
                         ({"data": {"source": str(noise_path),
                                    "windows": {"validation": 0.0001, "holdout": 0.2}}},
                          "data.windows.validation")):
        res = runner.invoke(app, ["run", str(_write(tmp_path, noise_path, **over))])
        assert res.exit_code == 2, res.output
        assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr
    assert not (tmp_path / "kb.sqlite").exists() and not (tmp_path / "runs").exists()


def test_an_out_dir_that_cannot_be_made_is_one_line_not_a_traceback(
        tmp_path: Path, noise_path: Path) -> None:
    """The system refuses the run's folder (here: a file where a folder should be above
    it; a read-only folder is the same OSError): one line naming the path, exit 2, and
    with --json one JSON object (a black-box report got a PermissionError traceback)."""
    (tmp_path / "plain").write_text("a file")
    path = _write(tmp_path, noise_path, out_dir=str(tmp_path / "plain" / "runs"))
    res = runner.invoke(app, ["run", str(path), "--json"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "IO_ERROR" in lines[0] and "plain" in lines[0], lines
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "IO_ERROR" and err["class"] == "PERMANENT"


@pytest.mark.parametrize(("name", "text", "commands"), [
    ("loop.json", "{bad", (["resume"],)),
    ("summary.json", "{bad", (["resume"], ["status"], ["report", "--run"])),
    ("summary.json", "", (["report", "--run"],)),
    # the wall time used before a kill (a black-box report: a traceback on resume)
    ("clock.json", "", (["resume"],)), ("clock.json", "{}", (["resume"],)),
    ("clock.json", '{"elapsed_sec": "abc"}', (["resume"],))])
def test_a_damaged_run_file_is_one_line_naming_it(tmp_path: Path, noise_path: Path,
                                                  name: str, text: str,
                                                  commands: tuple[list[str], ...]) -> None:
    path = _write(tmp_path, noise_path, budgets={"max_iterations": 1})
    assert runner.invoke(app, ["run", str(path)]).exit_code == 0
    if name == "clock.json":  # read only when the run is unfinished
        (tmp_path / "runs" / "cli1" / "summary.json").unlink()
    (tmp_path / "runs" / "cli1" / name).write_text(text)
    for command in commands:
        res = runner.invoke(app, [*command, "cli1", "--out-dir", str(tmp_path / "runs")])
        assert res.exit_code == 2, res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "RUN_DAMAGED" in lines[0] and name in lines[0], lines


def test_an_unfinished_run_with_a_damaged_data_ref_is_one_line_naming_it(
        tmp_path: Path, noise_path: Path) -> None:
    """Resuming reads which data the run used from data_ref.json before anything else;
    without its summary the run counts as unfinished, so the damaged file is read."""
    path = _write(tmp_path, noise_path, budgets={"max_iterations": 1})
    assert runner.invoke(app, ["run", str(path)]).exit_code == 0
    folder = tmp_path / "runs" / "cli1"
    (folder / "summary.json").unlink()
    (folder / "data_ref.json").write_text("{bad")
    res = runner.invoke(app, ["resume", "cli1", "--out-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "RUN_DAMAGED" in lines[0] and "data_ref.json" in lines[0], lines
    assert (folder / "data_ref.json").read_text() == "{bad"  # left as found


def test_json_stdout_is_one_object_whatever_the_run_writes_to_the_process_stdout(
        tmp_path: Path, noise_path: Path) -> None:
    """A Ray cluster losing a node writes its log to the process's stdout (from C++ and
    its own threads); with --json that used to come before the RunSummary."""
    import subprocess
    import sys

    path = _write(tmp_path, noise_path, budgets={"max_iterations": 1})
    code = ("import os\n"
            "from alphaloop.orchestrator import Runner\n"
            "plain = Runner.run\n"
            "def run(self):\n"
            "    os.write(1, b'(raylet) a node is gone\\n')\n"
            "    print('a library speaks')\n"
            "    return plain(self)\n"
            "Runner.run = run\n"
            "from alphaloop.cli import app\n"
            f"app(['run', {str(path)!r}, '--json'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["status"] == "DONE_BUDGET_EXHAUSTED"
    assert "(raylet) a node is gone" in res.stderr and "a library speaks" in res.stderr


def test_malformed_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("budgets: {max_iterations: [\n")
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 2 and "malformed YAML" in res.stderr


def test_run_status_resume_kb_and_report(tmp_path: Path, noise_path: Path) -> None:
    config = _write(tmp_path, noise_path)
    res = runner.invoke(app, ["run", str(config), "--json"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)  # exactly one JSON object on stdout
    assert summary["run_id"] == "cli1" and summary["stats"]["iterations"] == 2
    assert "run report:" in res.stderr
    page = (tmp_path / "runs" / "cli1" / "report.html").read_text()
    assert 'id="figure-learning"' in page  # issue 10's curves, from the recorded summary
    runs = str(tmp_path / "runs")
    status = runner.invoke(app, ["status", "cli1", "--out-dir", runs, "--json"])
    assert json.loads(status.stdout) == {**summary, "process_alive": False}
    again = runner.invoke(app, ["resume", "cli1", "--out-dir", runs, "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout) == summary  # finished: as is
    url = f"sqlite:///{tmp_path / 'kb.sqlite'}"
    stats = runner.invoke(app, ["kb", "stats", "--url", url, "--json"])
    assert json.loads(stats.stdout)["tables"]["runs"] == 1
    listed = runner.invoke(app, ["kb", "runs", "--url", url, "--json"])
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["cli1"]
    table = runner.invoke(app, ["kb", "runs", "--url", url])  # one line per run
    assert table.exit_code == 0 and "cli1" in table.stdout and "noise.parquet" in table.stdout
    assert "candidates_per_iteration" not in table.stdout and len(table.stdout.splitlines()) < 12
    for bad in ("0", "-1"):
        refused = runner.invoke(app, ["kb", "strategies", "--url", url, "--top", bad])
        assert refused.exit_code == 2 and "--top" in refused.stderr
    top = runner.invoke(app, ["kb", "strategies", "--url", url, "--top", "3", "--json"])
    best = json.loads(top.stdout)
    assert len(best) == 3
    # every digit as stored (a black-box report: the JSON rounded to 15 decimals)
    from alphaloop.kb.store import KnowledgeBase

    with KnowledgeBase(url) as kb:
        stored = kb.scores("cli1").set_index(["strategy_id", "iteration"])
    for b in best:
        row = stored.loc[(b["strategy_id"], b["iteration"])]
        assert (b["score_total"], b["dsr"], b["psr"]) == (
            float(row["score_total"]), float(row["dsr"]), float(row["psr"]))
    table = runner.invoke(app, ["kb", "strategies", "--url", url, "--top", "3"])
    lines = table.stdout.splitlines()  # whole ids and runs, no cell broken mid-word
    assert all(f"{b['strategy_id'][:12]}  {b['family']}" in table.stdout for b in best)
    assert all(f"cli1/{b['iteration']}" in table.stdout for b in best)
    assert all(f"{k}={v}" in table.stdout for b in best for k, v in b["params"].items())
    # blank, header, rule, blank around two lines per strategy: family, then params
    assert max(map(len, lines)) <= 80 and len(lines) <= 4 + 2 * 3
    ref = json.loads(listed.stdout)[0]["data_ref"]
    assert {b["data_ref"] for b in best} == {ref}
    on_data = runner.invoke(app, ["kb", "strategies", "--url", url, "--top", "3", "--json",
                                  "--data-ref", ref[:8]])  # a prefix of the run's data
    assert json.loads(on_data.stdout) == best
    unknown = runner.invoke(app, ["kb", "strategies", "--url", url, "--data-ref", "zzz"])
    assert unknown.exit_code == 2 and "KB_NOT_FOUND" in unknown.stderr
    shown = runner.invoke(app, ["kb", "show", best[0]["strategy_id"][:10], "--url", url,
                                "--json"])
    assert shown.exit_code == 0 and best[0]["strategy_id"] in shown.stdout
    # every backtest says the costs its run set (the config's defaults: 10 + 5 bps)
    record = json.loads(shown.stdout)
    backtests = record["backtests"]
    assert backtests and all(b["costs"] == {"fees_bps": 10.0, "slippage_bps": 5.0}
                             for b in backtests if b["engine"] == "A")
    # the same record for a terminal: a table per kind of record, one row each
    view = runner.invoke(app, ["kb", "show", best[0]["strategy_id"][:10], "--url", url])
    assert view.exit_code == 0, view.stderr
    text = view.stdout
    assert max(map(len, text.splitlines())) <= 80
    assert text.startswith(f"strategy  {best[0]['strategy_id']}\n")
    assert f"entry     {record['spec']['entry']}" in text
    for kind in ("backtests", "scores", "failures"):
        assert f"{kind}: {len(record[kind]) or 'none'}" in text
    rows = [line for line in text.splitlines() if line.startswith(" cli1/")]
    assert len(rows) == len(backtests) + len(record["scores"]) + \
        len(record["failures"])  # one row each (their wrapped lines start blank)
    # a number whole on its row: the engine A search backtest's Sharpe, as stored
    (a_search,) = [b for b in backtests if (b["engine"], b["window"]) == ("A", "search")]
    assert f"{a_search['sharpe']:.3f}" in next(r for r in rows if "A search" in r).split()
    assert "10+5" in text and f"{best[0]['score_total']:.2f}" in text
    assert all(f["code"] in text for f in record["failures"])
    assert "survived: none" in text  # on noise
    # the spec of a loop's strategy, from the loop's own knowledge base, as YAML that
    # backtest and verify read
    spec_yaml = runner.invoke(app, ["spec", best[0]["strategy_id"][:10], "--url", url])
    assert spec_yaml.exit_code == 0, spec_yaml.stderr
    from alphaloop.strategy.spec import StrategySpec

    got = StrategySpec.from_dict(yaml.safe_load(spec_yaml.stdout))
    assert got.strategy_id == best[0]["strategy_id"]
    absent = runner.invoke(app, ["spec", best[0]["strategy_id"][:10], "--url",
                                 f"sqlite:///{tmp_path / 'none.sqlite'}"])
    assert absent.exit_code == 2 and "none.sqlite" in absent.stderr
    assert not (tmp_path / "none.sqlite").exists()  # looking creates no database
    missing = runner.invoke(app, ["resume", "nope", "--out-dir", runs])
    assert missing.exit_code == 2 and "RUN_NOT_FOUND" in missing.stderr
    as_json = runner.invoke(app, ["status", "nope", "--out-dir", runs, "--json"])
    assert as_json.exit_code == 2 and len(as_json.stderr.strip().splitlines()) == 1
    assert json.loads(as_json.stdout)["error"]["code"] == "RUN_NOT_FOUND"  # one object
    # the run report, from a custom out_dir: its survivors (none on noise) and the rules
    # in force after each iteration next to the rules added in it
    page_path = tmp_path / "cli1.html"
    made = runner.invoke(app, ["report", "--run", "cli1", "--out-dir", runs,
                               "--out", str(page_path)])
    assert made.exit_code == 0, made.stderr
    page = page_path.read_text()
    assert 'id="section-survivors"' in page and "No strategy passed every gate" in page
    assert "<th>constraints</th>" in page and "<th>constraints_added</th>" in page
    assert "This page needs no network" in page


def test_data_without_volume_is_refused_before_a_verifying_run(tmp_path: Path,
                                                                noise_path: Path) -> None:
    """Engine B's default model caps participation by volume: a panel without any
    volume could verify nothing, so the run stops before it starts (exit 2, one line);
    exploration, which never verifies, runs on it."""
    import pandas as pd

    long = pd.read_parquet(noise_path)
    long["volume"] = 0.0
    data = tmp_path / "no_volume.parquet"
    long.to_parquet(data)
    res = runner.invoke(app, ["run", str(_write(tmp_path, data))])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "positive volume" in lines[0], res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "kb.sqlite").exists()
    ok = runner.invoke(app, ["run", str(_write(tmp_path, data, mode="exploration",
                                               budgets={"max_iterations": 1}))])
    assert ok.exit_code == 0, ok.stderr


def test_a_failed_run_exits_1_and_names_its_code_once(tmp_path: Path, noise_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from alphaloop.errors import SpecError
    from alphaloop.orchestrator import runner as loop

    def refuse(*_: object, **__: object) -> None:
        raise SpecError("candidate spec invalid", code="SCHEMA_MISMATCH_TEST")

    monkeypatch.setattr(loop, "backtest_all", refuse)  # a PERMANENT error in S50
    config = _write(tmp_path, noise_path)
    res = runner.invoke(app, ["run", str(config), "--json"])
    assert res.exit_code == 1, res.output
    summary = json.loads(res.stdout)
    assert (summary["status"], summary["stop_reason"]) == (
        "FAILED_FATAL", "SCHEMA_MISMATCH_TEST: S50: candidate spec invalid")
    again = runner.invoke(app, ["resume", "cli1", "--out-dir", str(tmp_path / "runs"),
                                "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout) == summary  # ended: as is


def test_the_run_report_names_what_passed_and_shows_the_recorded_funnel(
        tmp_path: Path, planted_path: Path) -> None:
    """The report's 'passed' counts survivors and says so; the candidates that passed
    the score gates are the knowledge base's own count (read here with plain SQL)."""
    import sqlite3

    from alphaloop.orchestrator.reporting import LOOP_PASSED, loop_iterations

    config = _write(tmp_path, planted_path, generation={
        "families": ["sma_cross", "momentum"], "candidates_per_iteration": 24})
    res = runner.invoke(app, ["run", str(config), "--json"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    with sqlite3.connect(tmp_path / "kb.sqlite") as con:
        recorded = dict(con.execute("SELECT iteration, SUM(passed) FROM scores "
                                    "WHERE run_id = 'cli1' GROUP BY iteration").fetchall())
    frame, title, _ = loop_iterations(tmp_path / "runs" / "cli1")
    # the status as `status` says it: with the stop reason (learning is on here)
    assert f"{summary['status']} ({summary['stop_reason']})" in title, title
    assert "learning off" not in title
    assert frame["passed_score_gates"].tolist() == [recorded.get(i, 0)
                                                   for i in frame["iteration"]]
    assert frame["passed"].tolist() == [it["survivors"] for it in summary["iterations"]]
    assert sum(recorded.values()) > frame["passed"].sum()  # the gates after scoring bite
    page = (tmp_path / "runs" / "cli1" / "report.html").read_text()
    assert f"candidates that {LOOP_PASSED}" in page and "<th>passed_score_gates</th>" in page
    _a_survivors_strategy_report_shows_what_the_run_recorded(tmp_path, summary)


def _cells(page: str, metric: str) -> dict[str, float]:
    """The exact values (``data-value``) of one row of a report's metrics table, by
    column."""
    import re

    row = re.search(rf'<tr data-metric="{metric}">(.*?)</tr>', page, re.S)
    assert row is not None, metric
    return {c: float(v) for c, v in
            re.findall(r'data-column="([^"]+)" data-value="([^"]+)"', row.group(1))}


def _a_survivors_strategy_report_shows_what_the_run_recorded(tmp: Path,
                                                             summary: dict[str, Any]) -> None:
    """`report --strategy` of a loop's survivor: the metrics the knowledge base holds
    for it (read here with plain SQL) and the holdout Sharpe of its best_strategies
    entry, digit for digit."""
    import sqlite3

    (best,) = summary["best_strategies"]  # this config's run has one survivor
    sid = best["strategy_id"]
    with sqlite3.connect(tmp / "kb.sqlite") as con:
        rows = con.execute("SELECT engine, window, sharpe, total_return, max_drawdown, "
                           "n_trades FROM backtests WHERE run_id = 'cli1' AND strategy_id = ? "
                           "ORDER BY iteration", (sid,)).fetchall()
    recorded = {f"{e}_{w}".lower(): dict(zip(("sharpe", "total_return", "max_drawdown",
                                               "n_trades"), v, strict=True))
                for e, w, *v in rows}
    assert {"a_search", "a_validation", "b_search"} <= set(recorded), set(recorded)
    path = tmp / "survivor.html"
    made = runner.invoke(app, ["report", "--strategy", sid[:10], "--run", "cli1",
                               "--out-dir", str(tmp / "runs"), "--out", str(path)])
    assert made.exit_code == 0, made.stderr
    page = path.read_text()
    for metric in ("sharpe", "total_return", "max_drawdown", "n_trades"):
        assert _cells(page, metric) == {k: v[metric] for k, v in recorded.items()
                                        if v[metric] is not None} | (
            {"holdout": best["sharpe_holdout"]} if metric == "sharpe" else {}), metric
    assert "yes: it passed every gate" in page and 'id="robustness-status"' in page
    # not a strategy the run tested: one line naming the run
    other = runner.invoke(app, ["report", "--strategy", "ffff", "--run", "cli1",
                                "--out-dir", str(tmp / "runs"), "--out", str(path)])
    assert other.exit_code == 2 and "KB_NOT_FOUND" in other.stderr, other.stderr


def test_the_report_of_a_paused_run_without_learning_says_both(
        make_config: Any, noise_path: Path) -> None:
    from alphaloop.orchestrator import Runner
    from alphaloop.orchestrator.reporting import loop_iterations

    def fault(i: int, stage: str, attempt: int) -> None:
        if (i, stage) == (2, "S50"):
            raise KeyboardInterrupt

    cfg = make_config(noise_path, learning={"enabled": False})
    assert Runner(cfg, fault=fault).run().status == "PAUSED"
    _, title, _ = loop_iterations(Path(cfg.out_dir) / cfg.run_id)
    assert "PAUSED (interrupted), 1 iterations" in title and title.endswith(", learning off")


def test_a_ctrl_c_swallowed_inside_a_stage_pauses_the_run_after_it(
        make_config: Any, noise_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while numba compiles lands in llvmlite's C callback, which swallows it:
    the run pauses once the stage's output is stored (a resume reuses it) instead of
    going on to its end, and the resume ends as the uninterrupted run."""
    import ctypes
    import sys

    from alphaloop import interrupts
    from alphaloop.orchestrator import Runner

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    interrupts.install()  # what the console script does
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

    def raise_in_c(_a: int, _b: int) -> int:
        raise KeyboardInterrupt

    def fault(i: int, stage: str, attempt: int) -> None:
        if (i, stage) == (1, "S50"):
            items = (ctypes.c_int * 2)(2, 1)
            ctypes.CDLL(None).qsort(items, 2, ctypes.sizeof(ctypes.c_int),
                                    compare(raise_in_c))

    cfg = make_config(noise_path)
    paused = Runner(cfg, fault=fault).run()
    assert (paused.status, paused.stop_reason) == ("PAUSED", "interrupted")
    assert not interrupts.pending()
    done = Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
    reference = Runner(make_config(noise_path, run_id="ref", kb={
        "url": f"sqlite:///{Path(cfg.out_dir).parent / 'ref.sqlite'}"})).run()
    assert done.comparable() == reference.comparable()


def test_a_run_of_a_family_added_in_python_can_be_shown_from_the_cli(
        tmp_path: Path, planted_path: Path, make_config: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A black-box report: `report --run` of such a run was a traceback and `resume` of
    the ended run exit 2, since the CLI process does not know the family."""
    from alphaloop.orchestrator import Runner
    from alphaloop.strategy import templates as t
    from alphaloop.strategy.spec import StrategySpec

    def build(p: dict[str, Any]) -> StrategySpec:
        f, s = f"sma(close, {p['fast']})", f"sma(close, {p['slow']})"
        return StrategySpec(entry=f"{f} > {s}", exit=f"{f} < {s}")

    with monkeypatch.context() as m:
        m.setitem(t.FAMILIES, "py_cross", t.Family(
            "py_cross", "an SMA cross added in Python (test only)",
            {"fast": t.IntParam(5, 15, 5), "slow": t.IntParam(20, 40, 10)}, (), build))
        cfg = make_config(planted_path, run_id="py1", budgets={"max_iterations": 1},
                          generation={"families": ["py_cross"],
                                      "candidates_per_iteration": 6})
        ran = Runner(cfg).run()
    assert "py_cross" not in t.FAMILIES  # as in a new process
    runs = str(tmp_path / "runs")
    report = CliRunner().invoke(app, ["report", "--run", "py1", "--out-dir", runs,
                                      "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "r.html").stat().st_size > 0
    again = CliRunner().invoke(app, ["resume", "py1", "--out-dir", runs, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["status"] == ran.status


def test_a_strategy_report_without_run_finds_the_loop_run_of_the_default_kb(
        tmp_path: Path, noise_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No `evaluate` evaluated the strategy: `report --strategy ID` shows the newest
    loop run the default knowledge base says tested it, with that run's numbers; the
    holdout, recorded only for a survivor, has no column."""
    import shutil
    import sqlite3

    import pandas as pd

    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))
    data = shutil.copyfile(noise_path, tmp_path / "panel.parquet")
    config = _write(tmp_path, data)
    cfg = yaml.safe_load(config.read_text())
    del cfg["kb"], cfg["out_dir"]  # the defaults: $ALPHALOOP_HOME/kb.sqlite and runs/
    config.write_text(yaml.safe_dump(cfg))
    assert runner.invoke(app, ["run", str(config), "--json"]).exit_code == 0
    with sqlite3.connect(tmp_path / "home" / "kb.sqlite") as con:
        sid, sharpe = con.execute("SELECT strategy_id, sharpe FROM backtests WHERE engine = "
                                  "'A' AND window = 'search' ORDER BY sharpe DESC").fetchone()
    path = tmp_path / "page.html"
    made = runner.invoke(app, ["report", "--strategy", sid[:12], "--out", str(path)])
    assert made.exit_code == 0, made.stderr
    page = path.read_text()
    assert _cells(page, "sharpe")["a_search"] == sharpe and "holdout" not in _cells(
        page, "sharpe")
    assert "cli1 (research loop" in page and "records it only for a survivor" in page
    # the last bar's close rewritten (the holdout, which no number of the page is from):
    # the charts would draw other bars than the run's, so the page is refused
    frame = pd.read_parquet(data)
    frame.loc[frame.index[-1], "close"] *= 1.01
    frame.to_parquet(data)
    changed = runner.invoke(app, ["report", "--strategy", sid[:12], "--out", str(path)])
    assert changed.exit_code == 2 and "RUN_DATA_CHANGED" in changed.stderr, changed.stderr
    assert "changed: the whole panel)" in changed.stderr
