"""Paper trading: engine B stepped bar by bar, resumable, posting realized returns; and
one strategy walked from its backtest to live on the paper broker through a real
server (SQLite, loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Server, make_tokens
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.data.loaders import load_bars
from alphaloop.engines.engine_b import verify
from alphaloop.kb import dispose_engines
from alphaloop.strategy.spec import StrategySpec
from alphaloop.world.client import WorldClient, campaign_step
from alphaloop.world.paper import FolderFeed, PaperRunner, PaperState, ReplayFeed, parse_feed

SPEC = StrategySpec.model_validate({"entry": "sma(close, 10) > sma(close, 50)",
                                    "exit": "sma(close, 10) < sma(close, 50)"})
DATA = "synth_planted"  # 2520 daily bars, 20 symbols
START = 2480


def _runner(path: Path) -> PaperRunner:
    return PaperRunner(None, "w", SPEC, path, post=False)  # type: ignore[arg-type]


def test_a_resumed_paper_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = _runner(tmp_path / "whole.json").run(ReplayFeed(DATA), start=START, max_bars=30)
    _runner(tmp_path / "cut.json").run(ReplayFeed(DATA), start=START, max_bars=12)
    assert len(PaperState.load(tmp_path / "cut.json").returns) == 12  # type: ignore[union-attr]
    resumed = _runner(tmp_path / "cut.json").run(ReplayFeed(DATA), max_bars=18)  # restart
    assert resumed == whole
    bars = load_bars(DATA)
    assert (whole.start_ts, whole.last_ts) == (bars.index[START].isoformat(),
                                               bars.index[START + 29].isoformat())
    # the same equity as one engine B simulation over the whole panel, bar for bar
    full = verify(SPEC, bars, capacity=False).equity.to_numpy()
    assert whole.equity == full[START + 29]
    assert whole.returns == [float(full[t] / full[t - 1] - 1) for t in range(START, START + 30)]


def test_start_is_an_index_or_an_iso_time(tmp_path: Path) -> None:
    bars = load_bars(DATA)
    day = bars.index[START].strftime("%Y-%m-%d")  # a date without a zone is UTC
    for i, start in enumerate((START, day, f"{day}T00:00:00+00:00")):
        got = _runner(tmp_path / f"{i}.json").run(ReplayFeed(DATA), start=start, max_bars=1)
        assert got.start_ts == bars.index[START].isoformat()
    with pytest.raises(Exception, match="--start"):
        _runner(tmp_path / "bad.json").run(ReplayFeed(DATA), start="soon", max_bars=1)
    with pytest.raises(Exception, match="--start"):
        _runner(tmp_path / "zero.json").run(ReplayFeed(DATA), start=0, max_bars=1)


def test_a_folder_feed_trades_only_the_bars_that_arrive(tmp_path: Path) -> None:
    bars = load_bars(DATA)
    folder = tmp_path / "feed"
    folder.mkdir()
    bars.slice(0, START).to_long().to_parquet(folder / "0-history.parquet")
    first = _runner(tmp_path / "f.json").run(FolderFeed(folder))
    assert (first.returns, first.last_ts) == ([], bars.index[START - 1].isoformat())
    bars.slice(START, START + 10).to_long().to_parquet(folder / "1-new.parquet")
    grown = _runner(tmp_path / "f.json").run(FolderFeed(folder))
    replay = _runner(tmp_path / "r.json").run(ReplayFeed(DATA), start=START, max_bars=10)
    assert (grown.returns, grown.equity, grown.start_ts) == (
        replay.returns, replay.equity, replay.start_ts)
    assert len(grown.returns) == 10


def test_feeds_are_parsed_or_refused() -> None:
    assert parse_feed("replay:synth_planted@20") == ReplayFeed("synth_planted", 20.0)
    assert parse_feed("replay:data/x.parquet") == ReplayFeed("data/x.parquet", None)
    assert parse_feed("folder:/tmp/bars") == FolderFeed(Path("/tmp/bars"))
    for bad in ("replay:", "tape:x", "replay:x@fast"):
        with pytest.raises(Exception, match="--feed"):
            parse_feed(bad)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    base = tmp_path_factory.mktemp("paper")
    (base / "refs").mkdir()
    srv = Server(base / "kb.sqlite", base / "refs")
    made = make_tokens(srv.db_url)
    dispose_engines()
    srv.start()
    yield srv, made
    srv.stop()


def test_one_strategy_walks_from_backtest_to_live_on_the_paper_broker(
        server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    srv, toks = server
    w, sid = "walk", SPEC.strategy_id
    policy = {"gates": {"backtest": {"min_sharpe": 0.5}},
              "campaign": {"backtest": {"window": {"min_days": 365}},
                           "paper": {"window": {"min_samples": 20, "min_trades": 1}}},
              "allow_live": True,
              "governance": {"live_promotion": {"mode": "manual_approval"}}}
    with WorldClient(srv.url, toks["operator"]) as op:
        op.create_world(w, policy=policy)
        op.evaluate(w, {"run_id": "bt", "spec": SPEC.model_dump(mode="json"), "metrics": {
            "sharpe": 1.0, "effective_history_years": 10.0}})
        assert [d.kind for d in campaign_step(op, w).executed] == ["start_paper"]
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC.model_dump(mode="json")))
    state = tmp_path / "paper.json"
    args = ["world", "paper", "--world", w, "--strategy", str(spec_file), "--feed",
            f"replay:{DATA}", "--state", str(state), "--url", srv.url]
    env = {"ALPHALOOP_WORLD_TOKEN": toks["operator"]}
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--start", str(START), "--max-bars", "15"], env=env)
    assert first.exit_code == 0, first.output
    with WorldClient(srv.url, toks["viewer"]) as c:  # 15 < 20 samples: not yet
        assert "PAPER_WINDOW_SAMPLES_SHORT" in c.campaign(w).strategies[0].reasons
    second = runner.invoke(app, [*args, "--max-bars", "10"], env=env)  # resumes at bar 16
    assert second.exit_code == 0, second.output
    assert "paper " + sid[:12] + f" in {w}: 25 bars since" in second.output
    done = json.loads(state.read_text())
    full = verify(SPEC, load_bars(DATA), capacity=False).equity.to_numpy()  # no bar twice
    assert done["returns"] == [float(full[t] / full[t - 1] - 1) for t in range(START, START + 25)]
    with WorldClient(srv.url, toks["operator"]) as op:
        snap = op.latest_snapshot(w, sid)
        assert snap.body["realized_returns"] == done["returns"] and len(done["returns"]) == 25
        assert [d.kind for d in campaign_step(op, w).executed] == ["evaluate_paper"]
        entry = op.campaign(w).strategies[0]
    assert (entry.window.samples.observed, entry.window.trades.observed) == (
        25.0, float(done["n_fills"]))
    assert entry.reasons == ["LIVE_APPROVAL_MISSING"], entry.reasons
    with WorldClient(srv.url, toks["approver"]) as ap:
        ap.approve(w, sid)
    with WorldClient(srv.url, toks["operator"]) as op:
        switched = op.apply(w, op.plan_activation(w, sid))
        decision = op.decide(w, sid)
    assert (switched.target, switched.broker) == ("live", "paper")
    assert (decision.stage, decision.reasons[-1]) == ("live", "LIVE_APPROVED")
