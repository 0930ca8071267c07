"""Paper trading (dryrun): engine B stepped bar by bar over bars that arrive after the
backtest window, its realized returns posted to the world's risk signal hub.

Each new bar ``t`` runs the same engine B kernel on the panel up to and including
``t``. The kernel is causal (a signal at bar t's close fills at t+1's open), so this
gives bar ``t`` exactly the equity an uninterrupted simulation has there (tested),
and the run's state is a function of the bars seen: after every bar the state (last
bar, equity, realized returns, fills since the start) is written to a JSON file
(temporary file, then rename), so a restarted runner resumes at the next bar with
the same equity. The paper account is the strategy's account over the feed's whole
history; realized returns count from the first paper bar on (a position open then
is carried, as it would be had the strategy been running).

Feeds: ``replay:DATA[@SPEED]`` replays a dataset (catalog name or file) from
``start`` at SPEED bars per second (none: as fast as possible); ``folder:PATH`` reads
every Parquet/CSV file of a folder that grows, and trades the bars newer than the
state's last one. After every bar the runner posts a snapshot to the risk hub
(``as_of`` = now; ``realized_returns`` since the start; ``provenance`` with the bar,
the equity and ``n_trades`` = fills since the start), the bar's fills, its orders
(``POST /worlds/{id}/paper/orders``: engine B's order ledger, one record per order,
for the orders decided, filled or ended in the bar and those still working, each as
of the bar; a later bar's report updates a record, a bar posted again adds nothing),
and the bar itself (``POST /worlds/{id}/paper/bars``) with an operator token.

The bar's record says what became of its orders, so an order engine B could not fill
is never silently dropped: engine B's own counters of the run up to ``t`` less those
of the run up to ``t - 1`` (the kernel is causal, so the difference is bar ``t``'s):
orders sent for the bar (decided at the previous close, plus stops triggered in it and
positions closed or resized because the universe changed),
fills, partial fills (the volume cap left a remainder, carried to later bars),
orders clipped by the leverage cap, orders cancelled, the notional filled and left
unfilled; the notional still pending after the bar (a remainder carried, or an order
for a symbol that had no bar: a halted or missing symbol keeps its order); and the
held symbols that had no bar (``untradable``). The world checks its own risk-guard
limits (over all its strategies) on every bar recorded; when its answer says the
world is halted, the runner stops there, as on its own breach.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.world.client import WorldClient
from alphaloop.world.policy import RiskGuard

_SUFFIXES = (".parquet", ".csv")


@dataclass
class PaperState:
    world_id: str
    strategy_id: str
    start_ts: str  # the first paper bar (ISO, UTC)
    last_ts: str | None = None  # the last bar stepped
    equity: float | None = None
    returns: list[float] = field(default_factory=list)
    n_fills: int = 0
    # trades (round trips, as a backtest counts them) entered since the first paper bar
    n_trades: int = 0
    periods_per_year: float = 252.0
    as_of: str | None = None  # of the last bar's snapshot: re-posting it is a no-op
    halted: dict[str, Any] | None = None  # the risk guard's trip, until an operator resets it
    trip_sent: bool = False  # the world has the trip
    bar_fills: list[dict[str, Any]] = field(default_factory=list)  # the last bar's fills
    # data_ref of the bars up to last_ts as they were traded (symbols with a bar by
    # then): a feed that later restates them is refused, the past is not re-simulated
    history_ref: str | None = None
    guard_from: int = 0  # drawdown is measured from this return on (the last reset)
    counters: dict[str, float] | None = None  # engine B's order counters up to last_ts
    bar_report: dict[str, Any] | None = None  # the last bar's record (POST paper/bars)
    bar_orders: list[dict[str, Any]] = field(default_factory=list)  # as of the last bar

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as fh:
            json.dump(asdict(self), fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PaperState | None:
        """The state saved at ``path``, None when there is none; ``STATE_DAMAGED`` when
        the file is not one (it is left as found)."""
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError, UnicodeDecodeError, IsADirectoryError) as exc:
            raise AlphaloopError(f"--state: {path} is not a paper run's state file "
                                 f"({type(exc).__name__}); name another file, or restore "
                                 "it", code="STATE_DAMAGED") from None


def _history_ref(bars: Any, stop: int) -> str:
    """The content of bars ``0 .. stop - 1``, of the symbols that have a bar in them (a
    symbol listed later changes nothing before it)."""
    return str(bars.slice(0, stop, drop_empty=True).data_ref)


def _same_history(bars: Any, stop: int, state: PaperState) -> None:
    """Refuse a feed whose bars up to the last one stepped are not those stepped."""
    ref = _history_ref(bars, stop)
    if state.history_ref is None:  # a state from before the check: from now on
        state.history_ref = ref
    elif ref != state.history_ref:
        raise AlphaloopError(f"feed: the bars up to {state.last_ts}, already paper-traded, "
                             "differ from those traded (a file restates or adds past bars);"
                             " the run keeps its past: remove that file, or start a new "
                             "--state", code="DATA_RESTATED")


def _iso(ts: Any) -> str:
    return datetime.fromtimestamp(ts.timestamp(), tz=UTC).isoformat()


# engine B's cumulative order counters (``VerificationResult.execution``) → bar record
_COUNTERS = {"n_orders": "placed", "n_fills": "filled", "n_partial_fills": "partial",
             "n_clipped": "clipped", "n_cancelled": "cancelled",
             "filled_notional": "filled_notional", "unfilled_notional": "unfilled_notional"}


def _counters(result: Any) -> dict[str, float]:
    ex = result.execution
    return {k: float(ex[k]) for k in (*_COUNTERS, "pending_at_end_notional")}


def _last_close(bars: Any, t: int) -> np.ndarray:
    """Each symbol's last known close at bar t (NaN before its first): what engine B
    marks a position at when its symbol has no bar."""
    import pandas as pd

    last: np.ndarray = pd.DataFrame(bars.close[: t + 1]).ffill().to_numpy()[-1]
    return last


def _bar_orders(result: Any, bars: Any, t: int) -> list[dict[str, Any]]:
    """Engine B's orders as of bar ``t`` that bar ``t`` may have changed: decided at
    ``t - 1``'s close or later (they first appear in the run up to ``t``), filled or
    ended since then, or still working. Each is keyed by its bar, its symbol and its
    place among that symbol's orders decided at that bar: the kernel is causal, so a
    later bar's run has the same orders up to ``t`` in the same places."""
    import pandas as pd

    orders = result.orders
    if not len(orders):
        return []
    seq = orders.groupby(["timestamp", "symbol"], sort=False).cumcount()
    since = bars.index[t - 1] if t > 0 else bars.index[0]
    touched = ((orders["timestamp"] >= since) | (orders["last_fill"] >= since)
               | (orders["ended"] >= since) | (orders["status"] == "pending"))

    def opt(x: Any) -> Any:
        return None if pd.isna(x) else (_iso(x) if isinstance(x, pd.Timestamp) else float(x))

    return [{"ts": _iso(o.timestamp), "symbol": str(o.symbol), "seq": int(k),
             "side": o.side, "quantity": opt(o.quantity),
             "target_weight": opt(o.target_weight), "reason": str(o.reason),
             "filled_quantity": float(o.filled_quantity), "n_fills": int(o.n_fills),
             "last_fill": opt(o.last_fill), "ended": opt(o.ended), "status": str(o.status)}
            for o, k, keep in zip(orders.itertuples(index=False), seq, touched, strict=True)
            if keep]


class Feed:
    """Bars as they arrive: ``panels()`` yields the panel each time it has grown."""

    def panels(self) -> Iterator[Any]:
        raise NotImplementedError

    def pause(self) -> None:
        """Wait before the next bar (replay speed)."""


@dataclass
class ReplayFeed(Feed):
    source: str
    speed: float | None = None  # bars per second; None: as fast as possible

    def panels(self) -> Iterator[Any]:
        from alphaloop.data.loaders import load_bars

        yield load_bars(self.source)

    def pause(self) -> None:
        if self.speed:
            time.sleep(1.0 / self.speed)


@dataclass
class FolderFeed(Feed):
    path: Path
    poll_s: float = 5.0
    follow: bool = False  # keep polling for new files

    def load(self) -> Any:
        import pandas as pd

        from alphaloop.data.bars import Bars
        from alphaloop.data.loaders import load_bars

        files = sorted(p for p in self.path.iterdir() if p.suffix in _SUFFIXES)
        if not files:
            raise AlphaloopError(f"feed: no Parquet or CSV file in {self.path}",
                                 code="FEED_EMPTY")
        frame = pd.concat([load_bars(f).to_long() for f in files], ignore_index=True)
        return Bars.from_long(frame.drop_duplicates(["timestamp", "symbol"], keep="last"),
                              name=self.path.name, sort=True)

    def panels(self) -> Iterator[Any]:
        yield self.load()
        while self.follow:
            time.sleep(self.poll_s)
            yield self.load()


def parse_feed(text: str) -> Feed:
    """``replay:DATA[@SPEED]`` or ``folder:PATH``."""
    kind, _, rest = text.partition(":")
    if kind == "replay" and rest:
        source, _, speed = rest.rpartition("@") if "@" in rest else (rest, "", "")
        try:
            rate = float(speed) if speed else None
        except ValueError:
            rate = -1.0
        if rate is None or (math.isfinite(rate) and rate > 0):
            return ReplayFeed(source, rate)
        raise AlphaloopError(f"--feed: the speed of {text!r} must be a positive number of "
                             "bars per second", code="FEED_INVALID")
    if kind == "folder" and rest:
        if not Path(rest).is_dir():
            raise AlphaloopError(f"--feed: {rest!r} is not a folder", code="FEED_INVALID")
        return FolderFeed(Path(rest))
    raise AlphaloopError(f"--feed: {text!r} is not replay:DATA[@SPEED] or folder:PATH",
                         code="FEED_INVALID")


class PaperRunner:
    """One strategy's paper run in one world, resumable from its state file."""

    def __init__(self, client: WorldClient, world_id: str, spec: Any, state_path: Path,
                 *, post: bool = True, log: Callable[[str], None] | None = None,
                 guard: RiskGuard | None = None) -> None:
        self.client, self.world_id, self.spec = client, world_id, spec
        self.state_path = state_path
        self.post = post
        self.log = log or (lambda _: None)
        self.guard = guard  # None: the world's policy (read when the run starts)

    def _guard(self) -> RiskGuard:
        if self.guard is None:
            policy = self.client.get_world(self.world_id).policy or {}
            self.guard = RiskGuard.model_validate(policy.get("risk_guard") or {})
        return self.guard

    def _halted(self, state: PaperState) -> None:
        """Refuse to go on while the world says the strategy (or the world) is halted;
        after an operator's reset, go on with the drawdown measured from here."""
        if not self.post:
            if state.halted is not None:
                raise _tripped(state.halted)
            return
        status = self.client.guard(self.world_id, self.spec.strategy_id)
        if state.halted is not None and not status.halted:
            state.halted, state.trip_sent = None, False
            state.guard_from = len(state.returns)
            state.save(self.state_path)
            return
        if status.halted:
            if state.halted is None:  # the world was halted while this run was away
                self._halt_by(state, status.trip)
            assert state.halted is not None
            raise _tripped(state.halted)

    def _halt_by(self, state: PaperState, trip: Any) -> None:
        """A trip the world holds (its world limits') halts this run too."""
        state.halted = {"rule": trip.rule, "value": trip.value, "limit": trip.limit,
                        "bar": trip.bar.isoformat(),
                        "scope": "world" if trip.strategy_id == "" else "strategy"}
        state.trip_sent = True  # the world has it: it made it
        state.save(self.state_path)

    @staticmethod
    def breach(guard: RiskGuard, result: Any, bars: Any, t: int,
               state: PaperState) -> tuple[str, float, float] | None:
        """The first limit bar ``t`` crosses: (rule, value, limit), or None."""
        rets = np.asarray(state.returns[state.guard_from:], dtype=float)

        def drawdown() -> float:
            path = np.cumprod(1.0 + rets)
            return float(1.0 - path[-1] / max(1.0, float(path.max())))

        def orders() -> Any:
            fills = result.fills
            return fills[fills["timestamp"] == bars.index[t]] if len(fills) else fills

        def leverage() -> float:
            report = state.bar_report or {}
            return float(report.get("gross", 0.0)) / float(result.equity.iloc[t])

        checks: list[tuple[str, float | None, Callable[[], float]]] = [
                  ("max_drawdown", guard.max_drawdown, drawdown),
                  ("max_daily_loss", guard.max_daily_loss, lambda: -float(rets[-1])),
                  ("max_leverage", guard.max_leverage, leverage),
                  ("max_order_adv_share", guard.max_order_adv_share,
                   lambda: float(orders()["adv_util"].max()) if len(orders()) else 0.0),
                  ("max_orders_per_day", None if guard.max_orders_per_day is None
                   else float(guard.max_orders_per_day), lambda: float(len(orders())))]
        for rule, limit, value in checks:
            if limit is not None and len(rets) and (seen := value()) > limit:
                return rule, seen, limit
        return None

    def _state(self, bars: Any, start: int | str | None) -> PaperState:
        """The saved state, or a new one whose ``last_ts`` is the bar before the first
        paper bar (``start``: an index or an ISO time; none: after the bars present)."""
        import pandas as pd

        found = PaperState.load(self.state_path)
        if found is not None:
            if (found.world_id, found.strategy_id) != (self.world_id, self.spec.strategy_id):
                raise AlphaloopError(f"--state: {self.state_path} belongs to another paper "
                                     "run", code="STATE_MISMATCH")
            return found
        if start is None:
            first = bars.n_bars
        elif isinstance(start, int):
            first = start
        else:
            try:  # OutOfBoundsDatetime (year -5 against a ns index) is a ValueError
                when = pd.Timestamp(start)
                when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
                first = int(bars.index.searchsorted(when))
            except (ValueError, OverflowError) as exc:
                raise AlphaloopError(f"--start: {start!r} is neither a bar index nor an ISO "
                                     "time", code="START_INVALID") from exc
        # without --start a run begins after the bars present; a --start must name one
        if not 1 <= first <= bars.n_bars - (start is not None):
            raise AlphaloopError(f"--start: {start!r} leaves no bar of history before the "
                                 "paper run, or lies past the feed's bars",
                                 code="START_INVALID")
        begun = _iso(bars.index[first]) if first < bars.n_bars else ""
        return PaperState(self.world_id, self.spec.strategy_id, begun,
                          last_ts=_iso(bars.index[first - 1]))

    def step(self, bars: Any, t: int, state: PaperState) -> None:
        """Bar ``t``: engine B on bars 0..t; its return, equity and fills since the start."""
        import pandas as pd

        from alphaloop.engines.engine_b import verify

        result = verify(self.spec, bars.slice(0, t + 1), capacity=False)
        self._result = result
        if state.counters is None:  # the run's first bar: the counters before it
            state.counters = _counters(verify(self.spec, bars.slice(0, t), capacity=False))
        equity = result.equity.to_numpy()
        if not state.start_ts:
            state.start_ts = _iso(bars.index[t])
        state.returns.append(float(equity[t] / equity[t - 1] - 1.0))
        state.equity = float(equity[t])
        state.last_ts = _iso(bars.index[t])
        fills = result.fills
        begun = pd.Timestamp(state.start_ts)
        state.n_fills = int((fills["timestamp"] >= begun).sum()) if len(fills) else 0
        trades = result.trades
        state.n_trades = int((trades["entry_time"] >= begun).sum()) if len(trades) else 0
        now = fills[fills["timestamp"] == bars.index[t]] if len(fills) else fills
        state.bar_fills = [
            {"ts": _iso(f.timestamp), "seq": i, "symbol": str(f.symbol), "side": str(f.side),
             "quantity": float(f.quantity), "price": float(f.price), "fee": float(f.fee),
             "slippage": float(f.slippage), "reason": str(f.reason)}
            for i, f in enumerate(now.itertuples(index=False))]
        state.bar_orders = _bar_orders(result, bars, t)
        counters = _counters(result)
        before = state.counters
        orders: dict[str, Any] = {name: counters[k] - before[k] for k, name in _COUNTERS.items()}
        for k in ("placed", "filled", "partial", "clipped", "cancelled"):
            orders[k] = round(orders[k])
        orders["pending_notional"] = counters["pending_at_end_notional"]
        held = result.position_rows[:, t]
        orders["untradable"] = [str(bars.symbols[j]) for j in np.flatnonzero(
            (held != 0) & np.isnan(bars.close[t]))]
        state.counters = counters
        state.bar_report = {
            "strategy_id": self.spec.strategy_id, "ts": state.last_ts,
            "equity": state.equity, "ret": state.returns[-1],
            "gross": float(np.abs(held * np.nan_to_num(_last_close(bars, t))).sum()),
            "orders": orders}

    def _post(self, state: PaperState) -> None:
        """The snapshot of the state's last bar (its ``as_of`` is in the state, so
        posting it again after a crash is the same content: a no-op at the hub)."""
        if not self.post or state.as_of is None:
            return
        if len(state.returns) < 2:  # a return series of one bar has no volatility
            self.log(f"bar {state.last_ts}: no risk snapshot yet (the hub takes one from "
                     "the second paper bar on)")
            return
        self.client.post_snapshot({
            "world_id": self.world_id, "strategy_id": self.spec.strategy_id,
            "as_of": state.as_of, "realized_returns": state.returns,
            "periods_per_year": state.periods_per_year,
            "provenance": {"producer": "paper-runner", "last_bar": state.last_ts,
                           "equity": state.equity, "n_trades": state.n_trades}})

    def _post_fills(self, state: PaperState) -> None:
        """The last bar's fills (kept in the state until the next bar), to the KB."""
        if self.post and state.bar_fills:
            self.client.post_fills(self.world_id, self.spec.strategy_id, state.bar_fills)

    def _post_orders(self, state: PaperState) -> None:
        """The orders the last bar decided, filled or ended, and those still working,
        as of that bar (kept in the state until the next bar), to the KB."""
        if self.post and state.bar_orders and state.last_ts is not None:
            self.client.post_orders(self.world_id, self.spec.strategy_id, state.last_ts,
                                    state.bar_orders)

    def _post_bar(self, state: PaperState) -> Any:
        """The last bar's record (kept in the state until the next bar); the world's
        answer says whether the strategy or the world is halted."""
        if self.post and state.bar_report is not None:
            return self.client.post_bar(self.world_id, state.bar_report)
        return None

    def _resume(self, state: PaperState) -> None:
        """After a restart: what the last bar sent before the crash, sent again (all
        idempotent), then the halt checked with the world."""
        self._post(state)
        self._post_fills(state)
        self._post_orders(state)
        self._post_bar(state)
        if state.halted is not None and not state.trip_sent and self.post:
            self._send_trip(state)
        self._halted(state)

    def _send_trip(self, state: PaperState) -> None:
        assert state.halted is not None
        self.client.trip(self.world_id, {"strategy_id": self.spec.strategy_id, **state.halted})
        state.trip_sent = True
        state.save(self.state_path)

    def run(self, feed: Feed, *, start: int | str | None = None,
            max_bars: int | None = None) -> PaperState:
        """Step every bar the feed has beyond the state's last one (at most
        ``max_bars`` in this call); the state is saved after each."""
        import pandas as pd

        done = 0
        state: PaperState | None = None
        for bars in feed.panels():
            if state is None:
                state = self._state(bars, start)
                # the world is asked first: a world that does not exist leaves no state
                guard = self._guard() if self.post or self.guard is not None else RiskGuard()
                self.state_path.parent.mkdir(parents=True, exist_ok=True)
                state.save(self.state_path)
                self._resume(state)
            assert state.last_ts is not None
            first = int(bars.index.searchsorted(pd.Timestamp(state.last_ts), side="right"))
            _same_history(bars, first, state)
            for t in range(first, bars.n_bars):
                if max_bars is not None and done >= max_bars:
                    return state
                self.step(bars, t, state)
                hit = self.breach(guard, self._result, bars, t, state)
                if hit is not None:
                    state.halted = {"rule": hit[0], "value": hit[1], "limit": hit[2],
                                    "bar": state.last_ts}
                state.as_of = datetime.now(UTC).isoformat()
                # of the bars so far: a later bar must not re-annualize this one's report
                state.periods_per_year = bars.periods_per_year_through(t)
                state.history_ref = _history_ref(bars, t + 1)
                state.save(self.state_path)  # the bar is done: then tell the world
                self._post(state)
                self._post_fills(state)
                self._post_orders(state)
                recorded = self._post_bar(state)
                if state.halted is None and recorded is not None and recorded.halted:
                    self._halt_by(state, recorded.trip)  # the world's limits
                if state.halted is not None:
                    if self.post and not state.trip_sent:
                        self._send_trip(state)
                    raise _tripped(state.halted)
                done += 1
                self.log(f"{state.last_ts} equity {state.equity:,.2f} "
                         f"return {state.returns[-1]:+.5f} fills {state.n_fills}")
                feed.pause()
        if state is None:
            raise AlphaloopError("feed: no bars", code="FEED_EMPTY")
        return state


def _tripped(halted: dict[str, Any]) -> AlphaloopError:
    scope = "world " if halted.get("scope") == "world" else ""
    return AlphaloopError(f"RISK_GUARD_TRIPPED: {scope}{halted['rule']} "
                          f"{halted['value']:.6g} over {halted['limit']:.6g} on bar "
                          f"{halted['bar']}; halted until an "
                          "operator resets it", code="RISK_GUARD_TRIPPED",
                          error_class=ErrorClass.CRITICAL)
