"""Paper trading: engine B stepped bar by bar, resumable, posting realized returns; and
one strategy walked from its backtest to live on the paper broker through a real
server (SQLite, loopback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Server
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.data.loaders import load_bars
from alphaloop.engines.engine_b import verify
from alphaloop.errors import AlphaloopError
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
    assert {**resumed.__dict__, "as_of": None} == {**whole.__dict__, "as_of": None}
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


def test_each_guard_rule_halts_on_the_first_bar_that_crosses_it(tmp_path: Path) -> None:
    import numpy as np

    from alphaloop.errors import AlphaloopError, ErrorClass
    from alphaloop.world.policy import RiskGuard

    bars = load_bars(DATA)
    full = verify(SPEC, bars, capacity=False)
    eq = full.equity.to_numpy()
    t_idx = range(START, bars.n_bars)
    fills_at = full.fills["timestamp"].value_counts()
    gross = (full.positions.abs() * np.nan_to_num(bars.close)).sum(axis=1).to_numpy() / eq
    first_loss = next(t for t in t_idx if eq[t] < eq[t - 1])
    first_fill = next(t for t in t_idx if fills_at.get(bars.index[t], 0) > 0)
    first_held = next(t for t in t_idx if gross[t] > 0)
    # an order above a share of the average daily volume: the largest ADV share of the
    # first paper bar's fills, and a limit just under it
    share = full.fills.groupby("timestamp")["adv_util"].max()
    adv_limit = float(share[bars.index[first_fill]]) * 0.999
    first_big = next(t for t in t_idx if share.get(bars.index[t], 0.0) > adv_limit)
    cases = {"max_daily_loss": (first_loss, 1 - eq[first_loss] / eq[first_loss - 1], 1e-12),
             "max_orders_per_day": (first_fill, float(fills_at[bars.index[first_fill]]), 0),
             "max_leverage": (first_held, gross[first_held], 1e-12),
             "max_order_adv_share": (first_big, float(share[bars.index[first_big]]),
                                     adv_limit)}
    assert first_big == first_fill
    for rule, (t, value, limit) in cases.items():
        guard = RiskGuard(**{rule: limit})
        runner = PaperRunner(None, "w", SPEC, tmp_path / f"{rule}.json",  # type: ignore[arg-type]
                             post=False, guard=guard)
        with pytest.raises(AlphaloopError) as exc:
            runner.run(ReplayFeed(DATA), start=START)
        assert (exc.value.code, exc.value.error_class) == ("RISK_GUARD_TRIPPED",
                                                           ErrorClass.CRITICAL)
        state = PaperState.load(tmp_path / f"{rule}.json")
        assert state is not None and state.halted is not None
        assert (state.halted["rule"], state.last_ts) == (rule, bars.index[t].isoformat())
        assert state.halted["value"] == pytest.approx(value, rel=1e-9)


def _gaps(tmp_path: Path) -> tuple[Path, Any, Any]:
    """The panel with a gap and a thin market, as a Parquet file: the bar of the first
    paper exit (a long position's, in engine B's fills) is missing, and the volume of
    another symbol in the 30 bars before its first paper entry is a thousandth of its
    own. Returns the file, that exit fill and that entry fill (on the whole panel)."""
    bars = load_bars(DATA)
    base = verify(SPEC, bars, capacity=False).fills
    paper = base[base["timestamp"] >= bars.index[START]]
    exit_ = paper[paper["side"] == "sell"].iloc[0]  # a long position's exit on paper
    entry = paper[(paper["side"] == "buy") & (paper["timestamp"] != exit_.timestamp)
                  & (paper["symbol"] != exit_.symbol)].iloc[0]
    long = bars.to_long()
    gone = (long["symbol"] == exit_.symbol) & (long["timestamp"] == exit_.timestamp)
    t_entry = bars.index.get_loc(entry.timestamp)
    thin = ((long["symbol"] == entry.symbol) & (long["timestamp"] < entry.timestamp)
            & (long["timestamp"] >= bars.index[t_entry - 30]))
    long.loc[thin, "volume"] *= 1e-3  # the ADV before the entry: a thousandth
    path = tmp_path / "gaps.parquet"
    long[~gone].to_parquet(path)
    return path, exit_, entry


def test_orders_engine_b_cannot_fill_are_recorded_not_dropped(tmp_path: Path) -> None:
    """A symbol missing its bar keeps its order pending (and is named untradable while
    held); a volume cap fills part and carries the rest: each bar's record says so, and
    its fills are engine B's ledger fills of that bar."""
    import pandas as pd

    bars = load_bars(DATA)
    path, exit_, entry = _gaps(tmp_path)
    t_entry = bars.index.get_loc(entry.timestamp)
    t_gap = bars.index.get_loc(exit_.timestamp)
    sym = list(bars.symbols).index(exit_.symbol)

    records: list[dict[str, object]] = []
    runner = _runner(tmp_path / "gaps.json")
    step = runner.step

    def recording(b: object, t: int, state: PaperState) -> None:
        step(b, t, state)  # type: ignore[arg-type]
        records.append(dict(state.bar_report or {}))

    runner.step = recording  # type: ignore[method-assign]
    n = max(t_gap, t_entry) - START + 3
    runner.run(ReplayFeed(str(path)), start=START, max_bars=n)
    got = {pd.Timestamp(r["ts"]): r for r in records}  # type: ignore[arg-type]
    ledger = verify(SPEC, load_bars(str(path)), capacity=False).fills
    # every bar's fills are the ledger's fills of that bar, none lost
    for when, rec in got.items():
        now = ledger[ledger["timestamp"] == when]
        orders = rec["orders"]
        assert orders["filled"] == len(now), when  # type: ignore[index]
        assert orders["filled_notional"] == pytest.approx(  # type: ignore[index]
            float((now["quantity"] * now["ref_price"]).sum()), rel=1e-9, abs=1e-6)
    # the gap: the exit is not filled on it, its order stays pending at the last close,
    # and the symbol is held without a bar; it fills on the next bar
    gap = got[exit_.timestamp]["orders"]
    assert exit_.symbol not in set(ledger[ledger["timestamp"] == exit_.timestamp]["symbol"])
    assert gap["untradable"] == [exit_.symbol]  # type: ignore[index]
    last_close = float(bars.close[t_gap - 1, sym])
    assert gap["pending_notional"] >= exit_.quantity * last_close * (1 - 1e-9)  # type: ignore[index]
    after = ledger[(ledger["timestamp"] == bars.index[t_gap + 1])
                   & (ledger["symbol"] == exit_.symbol)]
    assert list(after["side"]) == ["sell"] and float(after["quantity"].iloc[0]) == exit_.quantity
    # the volume cap: part of the entry fills (at the cap), the rest is pending
    capped = got[entry.timestamp]["orders"]
    fill = ledger[(ledger["timestamp"] == entry.timestamp) & (ledger["symbol"] == entry.symbol)]
    assert float(fill["quantity"].iloc[0]) < entry.quantity
    assert capped["partial"] >= 1 and capped["pending_notional"] > 0  # type: ignore[index]
    assert not any(r["orders"]["untradable"] for w, r in got.items()  # type: ignore[index]
                   if w != exit_.timestamp)


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


def test_feeds_are_parsed_or_refused(tmp_path: Path) -> None:
    assert parse_feed("replay:synth_planted@20") == ReplayFeed("synth_planted", 20.0)
    assert parse_feed("replay:data/x.parquet") == ReplayFeed("data/x.parquet", None)
    assert parse_feed(f"folder:{tmp_path}") == FolderFeed(tmp_path)
    for bad in ("replay:", "tape:x", "replay:x@fast", "replay:x@-5", "replay:x@0",
                "replay:x@nan", f"folder:{tmp_path / 'nowhere'}"):
        with pytest.raises(AlphaloopError, match="--feed") as err:
            parse_feed(bad)
        assert err.value.code == "FEED_INVALID", bad


def test_a_start_past_the_feeds_bars_is_refused(tmp_path: Path) -> None:
    bars = load_bars(DATA)
    for start in ("2100-01-02", bars.n_bars, "-5", "99999-01-01"):  # out of ns bounds too
        with pytest.raises(AlphaloopError) as err:
            _runner(tmp_path / "s.json").run(ReplayFeed(DATA), start=start, max_bars=1)
        assert err.value.code == "START_INVALID"
    assert not (tmp_path / "s.json").exists()


def test_a_damaged_state_file_is_refused_and_left_as_found(tmp_path: Path) -> None:
    """A black-box report: a truncated state file (or a CSV given as --state) was a
    JSONDecodeError traceback."""
    for text in ('{"world_id": "w", "strat', "date,close\n2020-01-02,1\n", '{"nope": 1}'):
        state = tmp_path / "s.json"
        state.write_text(text)
        with pytest.raises(AlphaloopError) as err:
            _runner(state).run(ReplayFeed(DATA), max_bars=1)
        assert err.value.code == "STATE_DAMAGED" and state.read_text() == text


def test_a_feed_that_restates_traded_bars_is_refused(tmp_path: Path) -> None:
    """A folder file that rewrites a bar already paper-traded would re-simulate the past
    (a black-box run posted +43 % with a return of 0): refused, the state as it was.
    A symbol that appears only later changes nothing before it, and is accepted."""
    bars = load_bars(DATA)
    folder = tmp_path / "feed"
    folder.mkdir()
    bars.slice(0, START).to_long().to_parquet(folder / "0-history.parquet")
    _runner(tmp_path / "f.json").run(FolderFeed(folder))
    bars.slice(START, START + 5).to_long().to_parquet(folder / "1-new.parquet")
    traded = _runner(tmp_path / "f.json").run(FolderFeed(folder))
    assert len(traded.returns) == 5
    later = bars.slice(START + 5, START + 8).to_long()
    newcomer = later[later["symbol"] == later["symbol"].iloc[0]].assign(symbol="NEWCO")
    import pandas as pd

    pd.concat([later, newcomer]).to_parquet(folder / "2-more.parquet")
    grown = _runner(tmp_path / "f.json").run(FolderFeed(folder))
    assert len(grown.returns) == 8
    saved = (tmp_path / "f.json").read_bytes()
    restated = bars.slice(START + 2, START + 3).to_long()
    restated[["open", "high", "low", "close"]] *= 1.5
    restated.to_parquet(folder / "3-restated.parquet")
    with pytest.raises(AlphaloopError) as err:
        _runner(tmp_path / "f.json").run(FolderFeed(folder))
    assert err.value.code == "DATA_RESTATED"
    assert (tmp_path / "f.json").read_bytes() == saved


def _paper_args(srv: Server, world: str, tmp_path: Path) -> tuple[list[str], Path]:
    """``alphaloop world paper`` on the replay feed, with a spec file; and its state."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC.model_dump(mode="json")))
    state = tmp_path / "paper.json"
    return ["world", "paper", "--world", world, "--strategy", str(spec_file), "--feed",
            f"replay:{DATA}", "--state", str(state), "--url", srv.url], state


def test_a_world_that_does_not_exist_leaves_no_state(
        sqlite_server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    """A black-box report: `world paper --world nope` wrote a state file, then failed."""
    srv, toks = sqlite_server
    args, state = _paper_args(srv, "nope", tmp_path)
    got = CliRunner().invoke(app, [*args, "--start", str(START), "--max-bars", "1"],
                             env={"ALPHALOOP_WORLD_TOKEN": toks["operator"]})
    assert got.exit_code == 2 and "WORLD_NOT_FOUND" in got.output, got.output
    assert not state.exists()


def test_one_strategy_walks_from_backtest_to_live_on_the_paper_broker(
        sqlite_server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    srv, toks = sqlite_server
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
    args, state = _paper_args(srv, w, tmp_path)
    env = {"ALPHALOOP_WORLD_TOKEN": toks["operator"]}
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--start", str(START), "--max-bars", "15"], env=env)
    assert first.exit_code == 0, first.output
    # one return has no volatility: the first bar says it posts no snapshot, once
    assert first.output.count("no risk snapshot yet") == 1
    with WorldClient(srv.url, toks["viewer"]) as c:  # 15 < 20 samples: not yet
        assert "PAPER_WINDOW_SAMPLES_SHORT" in c.campaign(w).strategies[0].reasons
    second = runner.invoke(app, [*args, "--max-bars", "10"], env=env)  # resumes at bar 16
    assert second.exit_code == 0, second.output
    assert "paper " + sid[:12] + f" in {w}: 25 bars since" in second.output
    done = json.loads(state.read_text())
    bars = load_bars(DATA)
    result = verify(SPEC, bars, capacity=False)
    full = result.equity.to_numpy()  # no bar twice
    assert done["returns"] == [float(full[t] / full[t - 1] - 1) for t in range(START, START + 25)]
    # the fills in the KB are engine B's fills on those 25 bars, each once
    window = result.fills[(result.fills["timestamp"] >= bars.index[START])
                          & (result.fills["timestamp"] <= bars.index[START + 24])]
    with WorldClient(srv.url, toks["viewer"]) as c:
        stored = c.fills(w, sid)
    assert len(stored) == len(window) == done["n_fills"] > 0
    assert [(f.ts, f.symbol, f.side, f.quantity, f.price) for f in stored] == [
        (r.timestamp, r.symbol, r.side, r.quantity, r.price) for r in window.itertuples()]
    with WorldClient(srv.url, toks["operator"]) as op:
        snap = op.latest_snapshot(w, sid)
        assert snap.body["realized_returns"] == done["returns"] and len(done["returns"]) == 25
        assert [d.kind for d in campaign_step(op, w).executed] == ["evaluate_paper"]
        entry = op.campaign(w).strategies[0]
    # trades are round trips entered in the window, as a backtest counts them (they
    # were the fills: a black-box report found min_trades meaning two things)
    when = result.trades["entry_time"]
    entered = int(((when >= bars.index[START]) & (when <= bars.index[START + 24])).sum())
    assert done["n_trades"] == entered > 0 and entered < done["n_fills"]
    assert (entry.window.samples.observed, entry.window.trades.observed) == (
        25.0, float(entered))
    assert entry.reasons == ["LIVE_APPROVAL_MISSING"], entry.reasons
    with WorldClient(srv.url, toks["approver"]) as ap:
        ap.approve(w, sid)
    with WorldClient(srv.url, toks["operator"]) as op:
        switched = op.apply(w, op.plan_activation(w, sid))
        decision = op.decide(w, sid)
    assert (switched.target, switched.broker) == ("live", "paper")
    assert (decision.stage, decision.reasons[-1]) == ("live", "LIVE_APPROVED")


def test_a_drawdown_breach_halts_the_strategy_until_an_operator_resets_it(
        sqlite_server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    import httpx
    import numpy as np

    srv, toks = sqlite_server
    w, sid = "guard", SPEC.strategy_id
    bars = load_bars(DATA)
    full = verify(SPEC, bars, capacity=False).equity.to_numpy()
    path = full[START:START + 40] / full[START - 1]  # the paper equity, 1.0 before it
    dd = 1.0 - path / np.maximum(1.0, np.maximum.accumulate(path))
    assert dd.max() > 0
    limit = float(dd.max()) * 0.999
    k = int(np.argmax(dd > limit))  # the bar the guard must halt on, found by hand
    with WorldClient(srv.url, toks["operator"]) as op:
        op.create_world(w, policy={"risk_guard": {"max_drawdown": limit}})
    args, state = _paper_args(srv, w, tmp_path)
    env = {"ALPHALOOP_WORLD_TOKEN": toks["operator"]}
    runner = CliRunner()
    halted = runner.invoke(app, [*args, "--start", str(START), "--max-bars", "40"], env=env)
    assert halted.exit_code == 2 and "RISK_GUARD_TRIPPED" in halted.output
    saved = json.loads(state.read_text())
    assert (len(saved["returns"]), saved["last_ts"]) == (k + 1, bars.index[START + k].isoformat())
    assert saved["halted"]["rule"] == "max_drawdown"
    assert saved["halted"]["value"] == pytest.approx(dd[k])

    srv.stop()  # the halt survives a restart
    srv.start()
    with WorldClient(srv.url, toks["viewer"]) as c:
        status = c.guard(w, sid)
        decision = c.decide(w, sid)
        audit = [e.action for e in c.audit(w)]
        listed = c.bars(w, sid)
    assert status.halted and status.trip is not None
    # the bar that tripped is listed with its trip, as its POST answered (a black-box
    # report found the listing said halted: false); the bars before it are not
    assert [b.halted for b in listed] == [False] * k + [True]
    assert listed[-1].trip is not None and listed[-1].trip.trip_id == status.trip.trip_id
    assert (status.trip.rule, status.trip.bar.isoformat(), status.trip.limit) == (
        "max_drawdown", bars.index[START + k].isoformat(), limit)
    assert (decision.stage, decision.reasons) == ("backtest", ["RISK_GUARD_TRIPPED:max_drawdown"])
    assert audit.count("risk_guard.trip") == 1
    events = httpx.get(f"{srv.url}/events", params={"world": w, "follow": "false"},
                       headers={"Authorization": f"Bearer {toks['viewer']}"}).text
    assert "event: RISK_GUARD_TRIPPED" in events and '"severity": "CRITICAL"' in events
    again = runner.invoke(app, [*args, "--max-bars", "5"], env=env)  # refuses to go on
    assert again.exit_code == 2 and "RISK_GUARD_TRIPPED" in again.output
    assert len(json.loads(state.read_text())["returns"]) == k + 1

    url = f"{srv.url}/worlds/{w}/risk-guard/reset"
    assert httpx.post(url, json={"strategy_id": sid}).status_code == 401
    for role in ("viewer", "submitter", "approver"):
        r = httpx.post(url, json={"strategy_id": sid},
                       headers={"Authorization": f"Bearer {toks[role]}"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    # a prefix resolves among the world's campaign (this paper-only strategy is not in
    # it): one line naming the way out, nothing reset
    short = runner.invoke(app, ["world", "guard-reset", w, sid[:12], "--url", srv.url],
                          env=env)
    assert short.exit_code == 2 and "full 64-character id" in short.output
    reset = runner.invoke(app, ["world", "guard-reset", w, sid, "--url", srv.url], env=env)
    assert reset.exit_code == 0 and "reset trip #" in reset.output, reset.output
    with WorldClient(srv.url, toks["viewer"]) as c:
        assert c.guard(w, sid).halted is False
        assert [e.action for e in c.audit(w)].count("risk_guard.reset") == 1
        assert c.decide(w, sid).reasons != ["RISK_GUARD_TRIPPED:max_drawdown"]
    resumed = runner.invoke(app, [*args, "--max-bars", "1"], env=env)  # the next bar
    assert resumed.exit_code == 0, resumed.output
    after = json.loads(state.read_text())
    assert (len(after["returns"]), after["guard_from"], after["halted"]) == (k + 2, k + 1, None)


def _expected_orders(ledger: Any, since: Any) -> list[tuple[Any, ...]]:
    """Engine B's orders a paper run from bar ``since`` on reports: those decided at
    the bar before it or later, ended since then, or still working; as (bar, symbol,
    side, quantity, reason, filled, fills, last fill, end, status)."""
    import pandas as pd

    keep = ((ledger["timestamp"] >= since) | (ledger["ended"] >= since)
            | (ledger["status"] == "pending"))

    def opt(x: Any) -> Any:
        return None if pd.isna(x) else x

    return sorted(((r.timestamp, r.symbol, opt(r.side), opt(r.quantity), r.reason,
                    r.filled_quantity, r.n_fills, opt(r.last_fill), opt(r.ended), r.status)
                   for r in ledger[keep].itertuples()), key=lambda x: (x[0], x[1]))


def _stored_orders(stored: list[Any]) -> list[tuple[Any, ...]]:
    return sorted(((o.ts, o.symbol, o.side, o.quantity, o.reason, o.filled_quantity,
                    o.n_fills, o.last_fill, o.ended, o.status) for o in stored),
                  key=lambda x: (x[0], x[1]))


def test_orders_that_cannot_fill_are_stored_with_their_status(
        sqlite_server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    """Through a real server: the exit whose bar is missing is stored pending with
    nothing filled while the gap lasts, then filled on the next bar (the same record,
    updated); the entry the volume cap cuts short is stored pending, part filled, on
    its first bar."""
    srv, toks = sqlite_server
    w, sid = "orders", SPEC.strategy_id
    bars = load_bars(DATA)
    path, exit_, entry = _gaps(tmp_path)
    gapped = load_bars(str(path))
    t_gap, t_entry = bars.index.get_loc(exit_.timestamp), bars.index.get_loc(entry.timestamp)
    last = max(t_gap, t_entry) + 2
    seen: dict[int, dict[tuple[Any, str], Any]] = {}
    stored: list[Any] = []
    done_to = START - 1
    for stop in sorted({t_gap, t_entry, last}):  # run to each bar, then look
        with WorldClient(srv.url, toks["operator"]) as op:
            if done_to == START - 1:
                op.create_world(w)
            runner = PaperRunner(op, w, SPEC, tmp_path / "orders.json")
            runner.run(ReplayFeed(str(path)), start=START, max_bars=stop - done_to)
        done_to = stop
        with WorldClient(srv.url, toks["viewer"]) as c:
            stored = c.orders(w, sid)
        seen[stop] = {(o.ts, o.symbol): o for o in stored}
    exit_key = (bars.index[t_gap - 1], exit_.symbol)  # decided at the close before
    at_gap = seen[t_gap][exit_key]
    assert (at_gap.side, at_gap.reason, at_gap.quantity) == ("sell", "signal", exit_.quantity)
    assert (at_gap.status, at_gap.filled_quantity, at_gap.n_fills) == ("pending", 0.0, 0)
    assert at_gap.as_of == bars.index[t_gap] and at_gap.ended is None
    done = seen[last][exit_key]
    assert (done.status, done.filled_quantity, done.n_fills) == ("filled", exit_.quantity, 1)
    assert done.last_fill == done.ended == bars.index[t_gap + 1]  # the next bar
    capped = seen[t_entry][(bars.index[t_entry - 1], entry.symbol)]
    fills = verify(SPEC, gapped.slice(0, t_entry + 1), capacity=False).fills
    got = fills[(fills["symbol"] == entry.symbol) & (fills["timestamp"] == entry.timestamp)]
    assert capped.side == "buy" and capped.n_fills == len(got) == 1
    assert capped.filled_quantity == float(got["quantity"].iloc[0])
    assert capped.quantity is not None and capped.filled_quantity < capped.quantity
    assert capped.status == "pending" and capped.ended is None
    assert capped.last_fill == entry.timestamp
    # every order the run touched, once, as engine B has it at the run's last bar
    ledger = verify(SPEC, gapped.slice(0, last + 1), capacity=False).orders
    assert _stored_orders(stored) == _expected_orders(ledger, bars.index[START - 1])
    assert len(stored) == len(_expected_orders(ledger, bars.index[START - 1])) > 2


def test_posting_orders_is_idempotent_and_only_a_later_bar_updates(
        sqlite_server: tuple[Server, dict[str, str]]) -> None:
    import httpx

    srv, toks = sqlite_server
    w, sid = "orders-api", SPEC.strategy_id
    order = {"ts": "2026-11-27T00:00:00Z", "symbol": "SPX", "seq": 0, "side": "buy",
             "quantity": 120.0, "target_weight": 1.0, "reason": "entry",
             "filled_quantity": 80.0, "n_fills": 2, "last_fill": "2026-11-30T00:00:00Z",
             "status": "pending"}
    later = {**order, "filled_quantity": 120.0, "n_fills": 3,
             "last_fill": "2026-12-01T00:00:00Z", "ended": "2026-12-01T00:00:00Z",
             "status": "filled"}
    with WorldClient(srv.url, toks["operator"]) as op:
        op.create_world(w)
        first = op.post_orders(w, sid, "2026-11-30T00:00:00Z", [order])
        again = op.post_orders(w, sid, "2026-11-30T00:00:00Z", [order])
        older = op.post_orders(w, sid, "2026-11-29T00:00:00Z", [later])
        update = op.post_orders(w, sid, "2026-12-01T00:00:00Z", [later])
        same = op.post_orders(w, sid, "2026-12-02T00:00:00Z", [later])
        audit = [e.action for e in op.audit(w)]
    assert [(r.inserted, r.updated, r.existing) for r in (first, again, older, update, same)] \
        == [(1, 0, 0), (0, 0, 1), (0, 0, 1), (0, 1, 0), (0, 0, 1)]
    assert audit.count("paper.orders") == 2  # the insert and the update
    with WorldClient(srv.url, toks["viewer"]) as c:
        (stored,) = c.orders(w, sid)
    assert (stored.status, stored.filled_quantity, stored.n_fills) == ("filled", 120.0, 3)
    assert stored.as_of.isoformat() == "2026-12-01T00:00:00+00:00"
    url = f"{srv.url}/worlds/{w}/paper/orders"
    body = {"strategy_id": sid, "as_of": "2026-12-03T00:00:00Z", "orders": [order]}
    assert httpx.post(url, json=body).status_code == 401
    for role in ("viewer", "submitter", "approver"):
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {toks[role]}"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert httpx.get(url, params={"strategy_id": sid}).status_code == 401
    bad = {**body, "orders": [{**order, "status": "lost"}]}
    r = httpx.post(url, json=bad, headers={"Authorization": f"Bearer {toks['operator']}"})
    assert r.status_code == 422


def test_the_reported_annualization_is_of_the_bars_so_far(tmp_path: Path) -> None:
    """A black-box report: the runner reported the whole replay panel's annualization,
    so hourly bars *after* the paper window turned 252 into 365 for its first bars."""
    import numpy as np
    import pandas as pd

    days = pd.bdate_range("2021-01-04", periods=300, tz="UTC")
    hours = pd.date_range(days[-1] + pd.Timedelta(hours=1), periods=900, freq="h")
    rows = []  # AAA daily; BBB, listing after the paper window, hourly
    for i, t in enumerate(days.append(hours)):
        c = 100.0 * float(np.exp(0.001 * i + 0.02 * np.sin(i / 7.0)))
        rows.append({"timestamp": t.isoformat(), "symbol": "AAA" if i < 300 else "BBB",
                     "open": c, "high": c * 1.01, "low": c * 0.99, "close": c,
                     "volume": 1e6})
    full = tmp_path / "full.csv"
    pd.DataFrame(rows).to_csv(full, index=False)
    cut = tmp_path / "cut.csv"
    pd.DataFrame(rows[:260]).to_csv(cut, index=False)
    assert load_bars(str(full)).periods_per_year != 252.0  # the whole panel is intraday
    states = [_runner(tmp_path / f"{p.stem}.json").run(ReplayFeed(str(p)), start=250,
                                                       max_bars=10) for p in (cut, full)]
    assert states[0].returns == states[1].returns
    assert states[0].periods_per_year == states[1].periods_per_year == 252.0
