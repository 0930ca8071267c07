"""Engine A's simulation kernel (numba): arrays in, arrays out.

One *sleeve* per (candidate, symbol): each sleeve trades its symbol with its own
cash, and portfolio equity is the sum of sleeve equities (plus cash not allocated
yet). Capital is split equally among the symbols *tradable* at the time (see
:mod:`alphaloop.engines.universe`): a symbol that lists later gets no capital and
changes nothing before it lists; when the tradable set changes, the portfolio is
re-split at the next open, resizing held positions with costs (:func:`_reallocate`),
and a delisted symbol's position is closed at its last close with costs
(reason ``delisted``). A sleeve whose equity reaches zero (a short, or a leveraged
long) is stopped out at that price and trades no more; only a gap through that price
can take it below zero, and that loss is real and stays in the portfolio.

Timeline of a bar ``t`` for one sleeve:

0. if the tradable set changed: delisted positions close at their last close,
   then capital is re-split (:func:`_boundary`);
1. an order decided at ``t-1``'s close fills at ``t``'s open (slippage against
   the trader, commission on filled notional);
2. protective exits (stop loss, trailing stop, take profit, ruin) trigger on the
   bar's low/high; when the open is already beyond the level (a gap) the fill is the
   open, otherwise the level. If a stop and a take-profit both fall inside the bar
   the stop is assumed first (conservative);
3. the sleeve is marked to the close;
4. the entry/exit signals at ``t``'s close decide the order for ``t+1``.

Positions are sized so that notional plus commission equals the sleeve's equity
times the size fraction (``q = w·E / (p·(1+fee))``), as an all-in broker order would.
A position still open at the end is valued at the last close, with no exit cost, in
equity and in the trade statistics alike (the same bar would be valued so if the data
went on).

Two drivers run these sleeves. :func:`simulate_batch` is the general one (one candidate
at a time, every bar through :func:`_sleeve`; it also records trade lists).
:func:`simulate_blocked` is the one ``run_batch`` uses: groups of candidates walk time
blocks, the portfolio pass is fused in, and a candidate without stops or holding limit
runs through :func:`_sleeve_plain`, which skips quiet stretches in tight loops. Both
give the same numbers bit for bit (tests/engines/test_fast_path.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

from alphaloop.engines.universe import LIVE, OUT

LONG, SHORT, BOTH = 1, -1, 0
# why a trade ended (the ``reason`` column of the trade list)
(EXIT_SIGNAL, EXIT_STOP, EXIT_TRAIL, EXIT_TAKE_PROFIT, EXIT_MAX_BARS, OPEN_AT_END, EXIT_RUIN,
 EXIT_DELISTED, EXIT_DATA) = range(9)
EXIT_REASONS = ("signal", "stop_loss", "trailing_stop", "take_profit", "max_bars", "open",
                "ruin", "delisted", "data_failure")
# trade list columns (one float64 row per trade, recorded only on request)
TRADE_FIELDS = ("symbol", "entry_bar", "exit_bar", "side", "qty", "entry_price",
                "exit_price", "pnl", "return", "reason")
# a sleeve's state between simulation segments (ints and flags stored as floats)
# and the sleeve's own trade statistics (see :func:`_finish` for why per sleeve)
# ``eq_before`` is the trade's pnl baseline (it moves with the cash a re-split moves in
# or out, so a transfer is never profit); ``eq_entry`` the sleeve's equity when the trade
# was entered, which a trade's return is measured against
SLEEVE_FIELDS = ("cash", "qty", "pos", "entry", "extreme", "eq_before", "held", "pending",
                 "target", "w_next", "mark", "entry_bar", "why", "ruin", "peak", "eq_entry",
                 "n_trades", "n_wins", "gross_profit", "gross_loss")
(CASH, QTY, POS, ENTRY, EXTREME, EQ_BEFORE, HELD, PENDING, TARGET, W_NEXT, MARK, ENTRY_BAR,
 WHY, RUIN, PEAK, EQ_ENTRY, STATS) = range(17)
N_STATS = 4
# what a sleeve does at a bar (:func:`_bar_codes`)
TRADE, NO_BAR, NOT_TRADABLE = 0, 1, 2


@njit(cache=True)
def _is_true(a: float, b: float, op: int) -> bool:
    """``a <op> b`` is *known* true (op as in ``indicators.compare``). IEEE comparisons
    with NaN are already false for >, >= and ==; only != needs the NaN test."""
    if op == 0:
        return a > b
    if op == 1:
        return a >= b
    if op == 2:
        return a == b
    return a != b and not np.isnan(a) and not np.isnan(b)


@njit(cache=True, inline="always")
def _signals(direction: int, pos: int, ea: float, eb: float, eop: int, xa: float,
             xb: float, xop: int) -> tuple[bool, bool]:
    """(entry, exit) at a close, compared lazily: a flat one-sided sleeve reads its exit
    only when the entry fires, an open one reads only its exit (scalars, not arrays,
    cross the call)."""
    if direction == BOTH:
        return _is_true(ea, eb, eop), _is_true(xa, xb, xop)
    if pos == 0:
        en = _is_true(ea, eb, eop)
        return en, en and _is_true(xa, xb, xop)
    return False, _is_true(xa, xb, xop)


@njit(cache=True)
def _decide(pos: int, en: bool, ex: bool, direction: int, held: int, max_bars: int) -> int:
    """Desired position sign after the close, given the signals."""
    want = pos
    if direction == BOTH:
        if en and not ex:
            want = 1
        elif ex and not en:
            want = -1
    elif pos == 0:
        want = direction if (en and not ex) else 0
    elif ex:
        want = 0
    if pos != 0 and want == pos and max_bars > 0 and held >= max_bars:
        want = 0
    return want


@njit(cache=True)
def _protective_exit(pos: int, o: float, h: float, lo: float, entry: float, extreme: float,
                     sl: float, ts: float, tp: float, ruin: float) -> tuple[float, int]:
    """(raw exit price, reason) if a stop/take-profit triggers inside the bar, else NaN.

    ``ruin`` is the price at which the sleeve's equity reaches zero (a short's, or a
    leveraged long's): an always-on stop, so one symbol cannot lose more than its
    sleeve unless the price gaps through it.

    ``extreme`` is the best price since entry from *previous* bars (highest high for a
    long, lowest low for a short), so the trailing level never peeks inside the bar.
    """
    if pos > 0:
        stop, why = -np.inf, EXIT_STOP
        if sl > 0:
            stop = entry * (1.0 - sl)
        if ts > 0 and extreme * (1.0 - ts) > stop:
            stop, why = extreme * (1.0 - ts), EXIT_TRAIL
        if ruin > stop:
            stop, why = ruin, EXIT_RUIN
        if o <= stop:
            return o, why
        if lo <= stop:
            return stop, why
        if tp > 0:
            target = entry * (1.0 + tp)
            if o >= target:
                return o, EXIT_TAKE_PROFIT
            if h >= target:
                return target, EXIT_TAKE_PROFIT
        return np.nan, EXIT_SIGNAL
    stop, why = np.inf, EXIT_STOP
    if sl > 0:
        stop = entry * (1.0 + sl)
    if ts > 0 and extreme * (1.0 + ts) < stop:
        stop, why = extreme * (1.0 + ts), EXIT_TRAIL
    if ruin < stop:
        stop, why = ruin, EXIT_RUIN
    if o >= stop:
        return o, why
    if h >= stop:
        return stop, why
    if tp > 0 and tp < 1:
        target = entry * (1.0 - tp)
        if o <= target:
            return o, EXIT_TAKE_PROFIT
        if lo <= target:
            return target, EXIT_TAKE_PROFIT
    return np.nan, EXIT_SIGNAL


@njit(cache=True)
def _sleeve(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, code: np.ndarray,
            ea: np.ndarray, eb: np.ndarray, eop: int, xa: np.ndarray, xb: np.ndarray,
            xop: int, size: np.ndarray, use_size: bool,
            direction: int, sl: float, ts: float, tp: float, max_bars: int,
            fee: float, slip: float, t0: int, t1: int, st: np.ndarray, sym: int,
            equity: np.ndarray, traded: np.ndarray, gross: np.ndarray, off: int,
            trades: np.ndarray, n_rec: np.ndarray) -> None:
    """Simulate sleeve ``sym`` over bars ``t0..t1-1``, adding its equity, traded
    notional and gross exposure into the candidate's rows (bar t at index ``t - off``).
    ``st[sym]`` carries the sleeve's state (:data:`SLEEVE_FIELDS`) between calls: the
    portfolio re-splits its capital between them (:func:`_boundary`), and a blocked
    run (:func:`simulate_blocked`) cuts time into blocks; where the calls are cut
    changes nothing. The sleeve's own [n_trades, n_wins, gross_profit, gross_loss]
    accumulate in ``st[sym, STATS:]``. When ``trades`` has rows, every
    trade is also written there (columns :data:`TRADE_FIELDS`), ``n_rec[0]`` counting.

    The (N, T) arrays are read at row ``sym``. The entry signal at t is
    ``ea[sym, t] <op> eb[sym, t]`` (three-valued, true only when known), the exit
    likewise: comparing here, bar by bar, spares the batch a K × N × T signal array.
    Signals count only where the symbol is tradable: ``code`` (:func:`_bar_codes`)
    says per bar whether the sleeve trades, holds (no bar) or is out of the universe.

    The loop reads views of the segment, indexed from 0 (``j``, bar ``t = t0 + j``):
    an index numba knows to be non-negative needs no wrap-around test, and the hot
    loop stays as lean as it was before segments existed."""
    n_bars = c.shape[1]
    cash, qty, pos = st[sym, CASH], st[sym, QTY], int(st[sym, POS])
    entry, extreme, eq_before = st[sym, ENTRY], st[sym, EXTREME], st[sym, EQ_BEFORE]
    held, pending, target = int(st[sym, HELD]), st[sym, PENDING] > 0.0, int(st[sym, TARGET])
    w_next, mark, entry_bar = st[sym, W_NEXT], st[sym, MARK], int(st[sym, ENTRY_BAR])
    exit_why, ruin_reachable, peak = int(st[sym, WHY]), st[sym, RUIN] > 0.0, st[sym, PEAK]
    record = trades.shape[0] > 0
    stats = st[sym, STATS:STATS + N_STATS]
    o_s, h_s, lo_s, c_s = o[sym, t0:t1], h[sym, t0:t1], lo[sym, t0:t1], c[sym, t0:t1]
    code_s, ea_s, eb_s = code[sym, t0:t1], ea[sym, t0:t1], eb[sym, t0:t1]
    xa_s, xb_s = xa[sym, t0:t1], xb[sym, t0:t1]
    size_s = size[sym, t0:t1] if use_size else size[0, :0]
    equity_s = equity[t0 - off:t1 - off]
    traded_s, gross_s = traded[t0 - off:t1 - off], gross[t0 - off:t1 - off]
    for j in range(t1 - t0):
        t = t0 + j
        bar = code_s[j]
        if bar != TRADE:
            if bar == NOT_TRADABLE:
                pending = False  # an order for a symbol that left (or never came) lapses
            # no bar: hold, marked at the last known close; orders wait for a bar
            value = qty * mark if qty != 0.0 else 0.0
            equity_s[j] += cash + value
            gross_s[j] += abs(value)
            continue
        ot, ct = o_s[j], c_s[j]
        if pending:
            pending = False
            if pos != 0:  # close at the open
                p = ot * (1.0 - slip) if pos > 0 else ot * (1.0 + slip)
                cash, traded_s[j] = _close(cash, qty, p, fee, traded_s[j])
                _book(stats, cash - eq_before)
                if record:
                    _record(trades, n_rec, sym, entry_bar, t, np.sign(qty) * peak, entry, p,
                            cash - eq_before, st[sym, EQ_ENTRY], exit_why)
                qty = 0.0
                pos = 0
            if target != 0 and cash > 0 and w_next > 0:
                p = ot * (1.0 + slip) if target > 0 else ot * (1.0 - slip)
                q = w_next * cash / (p * (1.0 + fee))
                eq_before = cash
                st[sym, EQ_ENTRY] = cash
                cash -= target * q * p + q * p * fee
                qty = target * q
                peak = q
                traded_s[j] += q * p
                pos = target
                entry = p
                extreme = p
                held = 0
                entry_bar = t
                stats[0] += 1.0
                ruin_reachable = pos < 0 or cash < 0  # a short, or a long on borrowed cash
        if pos != 0 and (sl > 0 or ts > 0 or tp > 0 or ruin_reachable):
            ht, lt = h_s[j], lo_s[j]
            # equity cash + qty·p reaches zero at p = -cash / qty
            raw, why = _protective_exit(pos, ot, ht, lt, entry, extreme, sl, ts, tp,
                                        -cash / qty)
            if not np.isnan(raw):
                p = raw * (1.0 - slip) if pos > 0 else raw * (1.0 + slip)
                cash, traded_s[j] = _close(cash, qty, p, fee, traded_s[j])
                _book(stats, cash - eq_before)
                if record:
                    _record(trades, n_rec, sym, entry_bar, t, np.sign(qty) * peak, entry, p,
                            cash - eq_before, st[sym, EQ_ENTRY], why)
                qty = 0.0
                pos = 0
            elif pos > 0:
                extreme = max(extreme, ht)
            else:
                extreme = min(extreme, lt)
        mark = ct
        if pos != 0:
            value = qty * ct
            equity_s[j] += cash + value
            gross_s[j] += abs(value)
            held += 1
        else:
            equity_s[j] += cash
        en, ex = _signals(direction, pos, ea_s[j], eb_s[j], eop, xa_s[j], xb_s[j], xop)
        want = _decide(pos, en, ex, direction, held, max_bars)
        if want != pos and t + 1 < n_bars:
            exit_why = EXIT_MAX_BARS if (want == 0 and not ex) else EXIT_SIGNAL
            pending = True
            target = want
            w_next = size_s[j] if use_size else 1.0
            if np.isnan(w_next):
                w_next = 0.0
    st[sym, CASH], st[sym, QTY], st[sym, POS] = cash, qty, pos
    st[sym, ENTRY], st[sym, EXTREME], st[sym, EQ_BEFORE] = entry, extreme, eq_before
    st[sym, HELD], st[sym, PENDING], st[sym, TARGET] = held, 1.0 if pending else 0.0, target
    st[sym, W_NEXT], st[sym, MARK], st[sym, ENTRY_BAR] = w_next, mark, entry_bar
    st[sym, WHY], st[sym, RUIN], st[sym, PEAK] = exit_why, 1.0 if ruin_reachable else 0.0, peak


@njit(cache=True, inline="always")
def _first_true(code: np.ndarray, a: np.ndarray, b: np.ndarray, op: int, j: int,
                stop: int, dense: bool = False) -> Any:
    """The first index in ``j..stop-1`` with a bar where ``a <op> b`` is known true
    (:func:`_is_true`), else ``stop``. One loop per operator, so that the test inside
    the loop is a single comparison. The helpers of :func:`_sleeve_plain` index with
    unsigned loop variables: numba then emits no wrap-around test, and, unlike views
    (a reference count each), they cost nothing per call. ``dense``: every bar of the
    stretch is a tradable bar, so the codes are not read (the test is loop-invariant:
    the compiler makes a loop without the load)."""
    u0, u1 = np.uint64(j), np.uint64(stop)
    if op == 0:
        for q in range(u0, u1):
            if a[q] > b[q] and (dense or code[q] == TRADE):
                return np.int64(q)
    elif op == 1:
        for q in range(u0, u1):
            if a[q] >= b[q] and (dense or code[q] == TRADE):
                return np.int64(q)
    elif op == 2:
        for q in range(u0, u1):
            if a[q] == b[q] and (dense or code[q] == TRADE):
                return np.int64(q)
    else:
        for q in range(u0, u1):
            if _is_true(a[q], b[q], op) and (dense or code[q] == TRADE):
                return np.int64(q)
    return stop


@njit(cache=True, inline="always")
def _flat_run(code: np.ndarray, ea: np.ndarray, eb: np.ndarray, eop: int,
              xa: np.ndarray, xb: np.ndarray, xop: int, direction: int, j: Any,
              stop: int, dense: bool = False) -> tuple[Any, int]:
    """A flat sleeve without an order, from bar index ``j``: (the first index before
    ``stop`` whose close places an order (``stop`` if none), the last index with a bar
    before it (-1 if none)). Orders follow :func:`_decide` with ``pos = 0``."""
    j0 = j
    if direction == BOTH:
        j = stop
        for q in range(np.uint64(j0), np.uint64(stop)):
            if code[q] == TRADE and (_is_true(ea[q], eb[q], eop)
                                     != _is_true(xa[q], xb[q], xop)):
                j = np.int64(q)
                break
    else:
        while j < stop:
            j = _first_true(code, ea, eb, eop, j, stop, dense)
            if j >= stop or not _is_true(xa[np.uint64(j)], xb[np.uint64(j)], xop):
                break
            j += 1
    last = j - 1
    while not dense and last >= j0 and code[np.uint64(last)] != TRADE:
        last -= 1
    return j, (last if last >= j0 else -1)


@njit(cache=True, inline="always")
def _held_run(code: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray,
              xa: np.ndarray, xb: np.ndarray, xop: int, pos: int,
              ruin_reachable: bool, ruin: float, j: int, stop: int) -> Any:
    """A one-sided sleeve holding without an order, from ``j``: the first index before
    ``stop`` with a bar where its exit signal fires or its ruin level is touched
    (:func:`_protective_exit` with the stops off), else ``stop``."""
    end = _first_true(code, xa, xb, xop, j, stop)
    if not ruin_reachable:
        return end
    if pos > 0:
        for q in range(np.uint64(j), np.uint64(end)):
            if code[q] == TRADE and (o[q] <= ruin or lo[q] <= ruin):
                return np.int64(q)
    else:
        for q in range(np.uint64(j), np.uint64(end)):
            if code[q] == TRADE and (o[q] >= ruin or h[q] >= ruin):
                return np.int64(q)
    return end


@njit(cache=True)
def _sleeve_plain(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                  code: np.ndarray, ea: np.ndarray, eb: np.ndarray, eop: int, xa: np.ndarray,
                  xb: np.ndarray, xop: int, size: np.ndarray, use_size: bool,
                  direction: int, fee: float, slip: float, t0: int, t1: int,
                  st: np.ndarray, sym: int, equity: np.ndarray, traded: np.ndarray,
                  gross: np.ndarray, off: int, floor: float, ceil: float,
                  dense: bool = False) -> None:
    """:func:`_sleeve` for a candidate without stop loss, trailing stop, take profit or
    holding limit, and without a trade list: the same state, the same numbers, faster.

    Between events the sleeve's bars are simple: flat without an order, equity is the
    cash (:func:`_flat_run` only looks for the next entry); holding without an order,
    equity is cash plus position at the close, and only the exit signal and the
    always-on ruin level are read. Those stretches run in tight loops; every bar where
    something happens (an order is placed, filled or lapses, the ruin level is
    touched, the panel's last bar) goes through the same per-bar code as
    :func:`_sleeve`, with the stops off. ``extreme`` (used by trailing stops only) is
    not kept. ``floor`` / ``ceil`` are the symbol's lowest and highest open, low or
    high over the panel: a ruin level below (a long's) or above (a short's) them cannot
    be touched, and is not looked for."""
    n_bars = c.shape[1]
    cash, qty, pos = st[sym, CASH], st[sym, QTY], int(st[sym, POS])
    entry, eq_before = st[sym, ENTRY], st[sym, EQ_BEFORE]
    held, pending, target = int(st[sym, HELD]), st[sym, PENDING] > 0.0, int(st[sym, TARGET])
    w_next, mark, entry_bar = st[sym, W_NEXT], st[sym, MARK], int(st[sym, ENTRY_BAR])
    exit_why, ruin_reachable, peak = int(st[sym, WHY]), st[sym, RUIN] > 0.0, st[sym, PEAK]
    stats = st[sym, STATS:STATS + N_STATS]
    o_s, h_s, lo_s, c_s = o[sym, t0:t1], h[sym, t0:t1], lo[sym, t0:t1], c[sym, t0:t1]
    code_s, ea_s, eb_s = code[sym, t0:t1], ea[sym, t0:t1], eb[sym, t0:t1]
    xa_s, xb_s = xa[sym, t0:t1], xb[sym, t0:t1]
    size_s = size[sym, t0:t1] if use_size else size[0, :0]
    equity_s = equity[t0 - off:t1 - off]
    traded_s, gross_s = traded[t0 - off:t1 - off], gross[t0 - off:t1 - off]
    n = t1 - t0
    # the panel's last bar places no order: it always takes the per-bar path
    quiet_end = n - 1 if t1 == n_bars else n
    j = 0
    while j < n:
        if not pending and j < quiet_end:
            if pos == 0:
                stop, last = _flat_run(code_s, ea_s, eb_s, eop, xa_s, xb_s, xop,
                                       direction, j, quiet_end, dense)
                for q in range(np.uint64(j), np.uint64(stop)):
                    equity_s[q] += cash
                if last >= 0:
                    mark = c_s[last]
                j = stop
                if j < quiet_end:
                    # the entry bar (a bar, flat, no order yet): its close places one
                    mark = c_s[j]
                    equity_s[j] += cash
                    if direction == BOTH:
                        target = 1 if _is_true(ea_s[j], eb_s[j], eop) else -1
                    else:
                        target = direction
                    exit_why = EXIT_SIGNAL
                    pending = True
                    w_next = size_s[j] if use_size else 1.0
                    if np.isnan(w_next):
                        w_next = 0.0
                    j += 1
                    continue
            elif direction != BOTH:
                ruin = -cash / qty
                reach = ruin_reachable and (ruin >= floor if pos > 0 else ruin <= ceil)
                if dense and not reach:
                    # every bar a tradable bar, no ruin level to watch: the scan reads
                    # the exit only, and the marking loop has no branch
                    stop = _first_true(code_s, xa_s, xb_s, xop, j, quiet_end, True)
                    for q in range(np.uint64(j), np.uint64(stop)):
                        value = qty * c_s[q]
                        equity_s[q] += cash + value
                        gross_s[q] += abs(value)
                    if stop > j:
                        mark = c_s[stop - 1]
                        held += stop - j
                else:
                    stop = _held_run(code_s, o_s, h_s, lo_s, xa_s, xb_s, xop, pos, reach,
                                     ruin, j, quiet_end)
                    for q in range(np.uint64(j), np.uint64(stop)):
                        if code_s[q] == TRADE:
                            mark = c_s[q]
                            held += 1
                        value = qty * mark
                        equity_s[q] += cash + value
                        gross_s[q] += abs(value)
                j = stop
                if j < quiet_end and not (ruin_reachable and (
                        (pos > 0 and (o_s[j] <= ruin or lo_s[j] <= ruin))
                        or (pos < 0 and (o_s[j] >= ruin or h_s[j] >= ruin)))):
                    # the exit bar (a bar, the ruin level not touched): marked to the
                    # close, its close places the exit order
                    ct = c_s[j]
                    mark = ct
                    value = qty * ct
                    equity_s[j] += cash + value
                    gross_s[j] += abs(value)
                    held += 1
                    target = 0
                    exit_why = EXIT_SIGNAL
                    pending = True
                    w_next = size_s[j] if use_size else 1.0
                    if np.isnan(w_next):
                        w_next = 0.0
                    j += 1
                    continue
            else:
                ruin = -cash / qty
                while j < quiet_end:
                    bar = code_s[j]
                    if bar != TRADE:
                        value = qty * mark
                        equity_s[j] += cash + value
                        gross_s[j] += abs(value)
                        j += 1
                        continue
                    if ruin_reachable:
                        if pos > 0 and (o_s[j] <= ruin or lo_s[j] <= ruin):
                            break
                        if pos < 0 and (o_s[j] >= ruin or h_s[j] >= ruin):
                            break
                    if direction == BOTH:
                        en = _is_true(ea_s[j], eb_s[j], eop)
                        ex = _is_true(xa_s[j], xb_s[j], xop)
                        if en != ex and (1 if en else -1) != pos:
                            break
                    elif _is_true(xa_s[j], xb_s[j], xop):
                        break
                    ct = c_s[j]
                    mark = ct
                    value = qty * ct
                    equity_s[j] += cash + value
                    gross_s[j] += abs(value)
                    held += 1
                    j += 1
            if j >= n:
                break
        # one bar through :func:`_sleeve`'s code, stops off
        t = t0 + j
        bar = code_s[j]
        if bar != TRADE:
            if bar == NOT_TRADABLE:
                pending = False
            value = qty * mark if qty != 0.0 else 0.0
            equity_s[j] += cash + value
            gross_s[j] += abs(value)
            j += 1
            continue
        ot, ct = o_s[j], c_s[j]
        if pending:
            pending = False
            if pos != 0:
                p = ot * (1.0 - slip) if pos > 0 else ot * (1.0 + slip)
                cash, traded_s[j] = _close(cash, qty, p, fee, traded_s[j])
                _book(stats, cash - eq_before)
                qty = 0.0
                pos = 0
            if target != 0 and cash > 0 and w_next > 0:
                p = ot * (1.0 + slip) if target > 0 else ot * (1.0 - slip)
                q = w_next * cash / (p * (1.0 + fee))
                eq_before = cash
                st[sym, EQ_ENTRY] = cash
                cash -= target * q * p + q * p * fee
                qty = target * q
                peak = q
                traded_s[j] += q * p
                pos = target
                entry = p
                held = 0
                entry_bar = t
                stats[0] += 1.0
                ruin_reachable = pos < 0 or cash < 0
        if pos != 0 and ruin_reachable:
            raw, _ = _protective_exit(pos, ot, h_s[j], lo_s[j], entry, entry, 0.0, 0.0,
                                      0.0, -cash / qty)
            if not np.isnan(raw):
                p = raw * (1.0 - slip) if pos > 0 else raw * (1.0 + slip)
                cash, traded_s[j] = _close(cash, qty, p, fee, traded_s[j])
                _book(stats, cash - eq_before)
                qty = 0.0
                pos = 0
        mark = ct
        if pos != 0:
            value = qty * ct
            equity_s[j] += cash + value
            gross_s[j] += abs(value)
            held += 1
        else:
            equity_s[j] += cash
        en, ex = _signals(direction, pos, ea_s[j], eb_s[j], eop, xa_s[j], xb_s[j], xop)
        want = _decide(pos, en, ex, direction, held, 0)
        if want != pos and t + 1 < n_bars:
            exit_why = EXIT_SIGNAL
            pending = True
            target = want
            w_next = size_s[j] if use_size else 1.0
            if np.isnan(w_next):
                w_next = 0.0
        j += 1
    st[sym, CASH], st[sym, QTY], st[sym, POS] = cash, qty, pos
    st[sym, ENTRY], st[sym, EQ_BEFORE] = entry, eq_before
    st[sym, HELD], st[sym, PENDING], st[sym, TARGET] = held, 1.0 if pending else 0.0, target
    st[sym, W_NEXT], st[sym, MARK], st[sym, ENTRY_BAR] = w_next, mark, entry_bar
    st[sym, WHY], st[sym, RUIN], st[sym, PEAK] = exit_why, 1.0 if ruin_reachable else 0.0, peak


@njit(cache=True)
def _bar_codes(valid: np.ndarray, state: np.ndarray) -> np.ndarray:
    """One code per (symbol, bar) for the sleeves' loop: :data:`TRADE` (tradable, with
    a bar), :data:`NO_BAR` (tradable, no bar: hold) or :data:`NOT_TRADABLE`."""
    n_sym, n_bars = valid.shape
    code = np.empty((n_sym, n_bars), dtype=np.int8)
    for i in range(n_sym):
        for t in range(n_bars):
            if state[i, t] != LIVE:
                code[i, t] = NOT_TRADABLE
            elif valid[i, t]:
                code[i, t] = TRADE
            else:
                code[i, t] = NO_BAR
    return code


@njit(cache=True, inline="always")
def _close(cash: float, qty: float, p: float, fee: float, traded: float) -> tuple[float, float]:
    notional = abs(qty) * p
    return cash + qty * p - notional * fee, traded + notional


@njit(cache=True)
def _record(trades: np.ndarray, n_rec: np.ndarray, sym: int, entry_bar: int, exit_bar: int,
            qty: float, entry: float, exit_price: float, pnl: float, eq_entry: float,
            reason: int) -> None:
    """One trade row; its return is ``pnl`` over ``eq_entry``, the capital the trade
    started from (its sleeve's equity at entry, not moved by later re-splits)."""
    r = n_rec[0]
    if r >= trades.shape[0]:
        return
    trades[r, 0] = sym
    trades[r, 1] = entry_bar
    trades[r, 2] = exit_bar
    trades[r, 3] = 1.0 if qty > 0 else -1.0
    trades[r, 4] = abs(qty)
    trades[r, 5] = entry
    trades[r, 6] = exit_price
    trades[r, 7] = pnl
    trades[r, 8] = pnl / eq_entry if eq_entry > 0 else np.nan
    trades[r, 9] = reason
    n_rec[0] = r + 1


@njit(cache=True, inline="always")
def _book(stats: np.ndarray, pnl: float) -> None:
    if pnl > 0:
        stats[1] += 1.0
        stats[2] += pnl
    else:
        stats[3] -= pnl


@njit(cache=True)
def _boundary(st: np.ndarray, o: np.ndarray, valid: np.ndarray, state: np.ndarray,
              alloc: np.ndarray, reallocate: bool, t: int, pool: float, fee: float,
              slip: float, traded: np.ndarray, tt: int, trades: np.ndarray,
              n_rec: np.ndarray) -> float:
    """Before bar t's open: close the positions of symbols that left the universe at
    their last close (with costs), then re-split capital if the allocation set
    changed. Returns the cash left unallocated. Bar t's traded notional is
    ``traded[tt]``."""
    record = trades.shape[0] > 0
    for i in range(st.shape[0]):
        if t == 0 or state[i, t - 1] != LIVE or state[i, t] == LIVE:
            continue
        st[i, PENDING] = 0.0
        if st[i, POS] == 0:
            continue
        qty, mark = st[i, QTY], st[i, MARK]
        p = mark * (1.0 - slip) if qty > 0 else mark * (1.0 + slip)
        cash, traded[tt] = _close(st[i, CASH], qty, p, fee, traded[tt])
        pnl = cash - st[i, EQ_BEFORE]
        _book(st[i, STATS:STATS + N_STATS], pnl)
        if record:
            why = EXIT_DELISTED if state[i, t] == OUT else EXIT_DATA
            _record(trades, n_rec, i, int(st[i, ENTRY_BAR]), t, np.sign(qty) * st[i, PEAK],
                    st[i, ENTRY], p, pnl, st[i, EQ_ENTRY], why)
        st[i, CASH], st[i, QTY], st[i, POS], st[i, RUIN] = cash, 0.0, 0.0, 0.0
    if not reallocate:
        return pool
    return _reallocate(st, o[:, t], valid[:, t], alloc[:, t], pool, fee, slip, traded, tt)


@njit(cache=True)
def _reallocate(st: np.ndarray, o: np.ndarray, valid: np.ndarray, alloc: np.ndarray,
                pool: float, fee: float, slip: float, traded: np.ndarray, t: int) -> float:
    """Split the portfolio equally among the ``alloc`` sleeves at bar t's open.

    Equity is cash plus positions at the open (the last close without a bar). Each
    held position with a bar and no pending order is scaled by target / its sleeve's
    equity (keeping its leverage), paying slippage and fee; then cash moves between
    sleeves so that each is worth the same. The trade's pnl baseline moves with the
    cash, so a transfer is never booked as profit. Returns the unallocated cash."""
    n_sym = st.shape[0]
    n = 0
    total = pool
    for i in range(n_sym):
        total += st[i, CASH] + _open_value(st, o, valid, i)
        if alloc[i]:
            n += 1
    if n == 0:  # nothing tradable: everything waits as cash
        for i in range(n_sym):
            st[i, CASH] = 0.0
        return total
    target = total / n
    for i in range(n_sym):
        if not (alloc[i] and valid[i] and st[i, POS] != 0 and st[i, PENDING] == 0.0):
            continue
        worth = st[i, CASH] + st[i, QTY] * o[i]
        if worth <= 0.0:
            continue
        dq = st[i, QTY] * (target / worth - 1.0)
        p = o[i] * (1.0 + slip) if dq > 0 else o[i] * (1.0 - slip)
        st[i, CASH] -= dq * p + abs(dq) * p * fee
        st[i, QTY] += dq
        st[i, PEAK] = max(st[i, PEAK], abs(st[i, QTY]))
        traded[t] += abs(dq) * p
    total = pool  # again, after the costs of resizing
    for i in range(n_sym):
        total += st[i, CASH] + _open_value(st, o, valid, i)
    share = total / n
    for i in range(n_sym):
        cash = share - _open_value(st, o, valid, i) if alloc[i] else 0.0
        st[i, EQ_BEFORE] += cash - st[i, CASH]
        st[i, CASH] = cash
        if st[i, POS] != 0:
            st[i, RUIN] = 1.0 if (st[i, QTY] < 0 or cash < 0) else 0.0
    return 0.0


@njit(cache=True, inline="always")
def _open_value(st: np.ndarray, o: np.ndarray, valid: np.ndarray, i: int) -> float:
    """Sleeve i's position at the open, or at its last close when it has no bar."""
    if st[i, QTY] == 0.0:
        return 0.0
    return st[i, QTY] * (o[i] if valid[i] else st[i, MARK])


@njit(cache=True)
def _finish(st: np.ndarray, stats: np.ndarray, trades: np.ndarray, n_rec: np.ndarray) -> None:
    """End of data: an open trade counts at the last close, as equity values it; the
    candidate's statistics are its sleeves' in symbol order. (Each sleeve sums its own
    trades in time order, so the sums do not depend on how a run cuts time: the plain
    and the blocked kernel add the same numbers in the same order.)"""
    for i in range(st.shape[0]):
        if st[i, POS] != 0:
            pnl = st[i, CASH] + st[i, QTY] * st[i, MARK] - st[i, EQ_BEFORE]
            _book(st[i, STATS:STATS + N_STATS], pnl)
            if trades.shape[0] > 0:
                _record(trades, n_rec, i, int(st[i, ENTRY_BAR]), -1,
                        np.sign(st[i, QTY]) * st[i, PEAK], st[i, ENTRY], st[i, MARK], pnl,
                        st[i, EQ_ENTRY], OPEN_AT_END)
        for m in range(N_STATS):
            stats[m] += st[i, STATS + m]


@njit(cache=True)
def new_sleeves(n_sym: int) -> np.ndarray:
    """Empty, flat sleeves (no capital yet: it arrives with the first allocation)."""
    st = np.zeros((n_sym, len(SLEEVE_FIELDS)))
    st[:, MARK] = np.nan
    return st


@njit(cache=True, parallel=True)
def simulate_batch(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                   valid: np.ndarray, state: np.ndarray, alloc: np.ndarray,
                   bounds: np.ndarray, reallocate: np.ndarray, operands: Any,
                   signals: np.ndarray, direction: np.ndarray,
                   stop_loss: np.ndarray, trailing: np.ndarray, take_profit: np.ndarray,
                   max_bars: np.ndarray, size_idx: np.ndarray, sizes: np.ndarray,
                   fee: float, slip: float, record_trades: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                              np.ndarray]:
    """Simulate K candidates over an (N, T) panel.

    ``valid`` (N, T) marks bars with all of OHLC; ``state`` and ``alloc`` (N, T) and
    ``reallocate`` (T,) are the universe (:class:`alphaloop.engines.universe.Universe`)
    and ``bounds`` the sorted bars where it changes (a symbol leaves, or the allocation
    set changes), where the sleeves meet. ``operands`` is a typed list of
    (N, T) float arrays and ``signals[k]`` = [[a, b, op] for entry, [a, b, op] for
    exit] indexes them (op as in :func:`indicators.compare`). Per-candidate arrays
    have length K (0 = off);
    ``size_idx[k]`` selects a (N, T) slice of ``sizes`` (fraction of the sleeve to
    use, decided at the signal bar) or -1 for the whole sleeve.
    Returns equity (K, T), traded notional (K, T), gross exposure (K, T),
    stats (K, 4) = [n_trades, n_wins, gross_profit, gross_loss] and, when
    ``record_trades`` (one candidate only), the trade rows (TRADE_FIELDS) with their
    count ``n_rec[0]``.
    """
    n_cand = signals.shape[0]
    n_sym, n_bars = c.shape
    equity = np.zeros((n_cand, n_bars))
    traded = np.zeros((n_cand, n_bars))
    gross = np.zeros((n_cand, n_bars))
    stats = np.zeros((n_cand, 4))
    # a sleeve can open at most one trade per bar (entry at the open, stopped out
    # in the bar, re-entry at the next open): T trades per symbol at most
    cap = n_sym * n_bars if record_trades and n_cand == 1 else 0
    trades = np.empty((cap, len(TRADE_FIELDS)))
    n_rec = np.zeros(1, dtype=np.int64)
    code = _bar_codes(valid, state)
    for k in prange(n_cand):
        si = size_idx[k]
        en, ex = signals[k, 0], signals[k, 1]
        ea, eb, xa, xb = operands[en[0]], operands[en[1]], operands[ex[0]], operands[ex[1]]
        size = sizes[si] if si >= 0 else sizes[0]
        eq_k, traded_k, gross_k, stats_k = equity[k], traded[k], gross[k], stats[k]
        st = new_sleeves(n_sym)
        pool = 1.0
        t0 = 0
        for b in range(bounds.shape[0] + 1):
            t1 = bounds[b] if b < bounds.shape[0] else n_bars
            for i in range(n_sym):
                _sleeve(o, h, lo, c, code, ea, eb, en[2], xa, xb, ex[2], size, si >= 0,
                        direction[k], stop_loss[k], trailing[k], take_profit[k],
                        max_bars[k], fee, slip, t0, t1, st, i, eq_k, traded_k, gross_k, 0,
                        trades, n_rec)
            for t in range(t0, t1):
                eq_k[t] += pool
            if t1 < n_bars:
                pool = _boundary(st, o, valid, state, alloc, reallocate[t1], t1, pool, fee,
                                 slip, traded_k, t1, trades, n_rec)
            t0 = t1
        _finish(st, stats_k, trades, n_rec)
    # the caller trims ``trades`` to ``n_rec[0]`` rows: slicing here by a count written
    # inside the parallel loop returned stale results (numba 0.68 parfor hoisting)
    return equity, traded, gross, stats, trades, n_rec


@njit(cache=True)
def _price_range(o: np.ndarray, h: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per symbol, the lowest open or low and the highest open or high (NaN skipped;
    +inf / -inf for a symbol without bars)."""
    n_sym, n_bars = o.shape
    floor = np.full(n_sym, np.inf)
    ceil = np.full(n_sym, -np.inf)
    for i in range(n_sym):
        f, c = np.inf, -np.inf
        for t in range(n_bars):  # a NaN compares false: skipped
            if o[i, t] < f:
                f = o[i, t]
            if lo[i, t] < f:
                f = lo[i, t]
            if o[i, t] > c:
                c = o[i, t]
            if h[i, t] > c:
                c = h[i, t]
        floor[i], ceil[i] = f, c
    return floor, ceil


def cuts(bounds: np.ndarray, n_bars: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The blocks of a blocked run: (starts, at_bound). ``starts`` are the sorted bars
    where a block begins (0, every ``block`` bars, and every universe boundary), with
    ``n_bars`` appended; ``at_bound[b]`` says that ``starts[b]`` is a boundary."""
    grid = np.arange(0, n_bars, max(int(block), 1), dtype=np.int64)
    starts = np.union1d(grid, bounds.astype(np.int64))
    at_bound = np.isin(starts, bounds)
    return np.append(starts, np.int64(n_bars)), at_bound


@njit(cache=True)
def _dense_blocks(code: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(N, blocks): True where every bar of the block is a tradable bar of the symbol."""
    n_sym = code.shape[0]
    out = np.ones((n_sym, starts.shape[0] - 1), dtype=np.bool_)
    for i in range(n_sym):
        for b in range(starts.shape[0] - 1):
            for t in range(starts[b], starts[b + 1]):
                if code[i, t] != TRADE:
                    out[i, b] = False
                    break
    return out


@njit(cache=True, parallel=True)
def simulate_blocked(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                     valid: np.ndarray, state: np.ndarray, alloc: np.ndarray,
                     starts: np.ndarray, at_bound: np.ndarray, reallocate: np.ndarray,
                     operands: Any, signals: np.ndarray, direction: np.ndarray,
                     stop_loss: np.ndarray, trailing: np.ndarray, take_profit: np.ndarray,
                     max_bars: np.ndarray, size_idx: np.ndarray, sizes: np.ndarray,
                     fee: float, slip: float, n_groups: int, equity: np.ndarray,
                     returns: np.ndarray, fast: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`simulate_batch` followed by :func:`portfolio_series`, cut into time blocks
    so that the indicator rows stay in cache: the same numbers, bit for bit.

    :func:`simulate_batch` runs one candidate at a time over all symbols and bars, so
    each candidate streams its operand rows (N × T each) from memory; a grid of K
    candidates over a few distinct indicators reads them K times. Here the candidates
    are split into ``n_groups`` groups (one per thread), and a group walks the blocks
    of :func:`cuts` in time order: per block, per symbol, every candidate of the group
    runs its sleeve over the block, reading the same few short indicator segments
    while they are in cache. A sleeve's state is carried between blocks in its
    :data:`SLEEVE_FIELDS` row, exactly as between the segments of
    :func:`simulate_batch` (blocks also begin at every universe boundary, where
    :func:`_boundary` runs as there); per bar, equity still adds the sleeves in symbol
    order and then the unallocated cash, and the trade statistics are summed per
    sleeve (:func:`_finish`). Per-bar traded notional and gross exposure live only
    in block buffers: the portfolio pass (:func:`portfolio_series`' arithmetic) runs
    on each finished block, so no (K, T) array but ``equity`` and ``returns`` is
    written.

    With ``fast``, a candidate without stops or holding limit runs through
    :func:`_sleeve_plain` (the common case: same numbers, a fraction of the work).

    ``equity`` and ``returns`` (K, T) are filled in place (``equity`` after the ruin
    rule, as :func:`portfolio_series` leaves it). Returns turnover (K,), exposure (K,)
    and stats (K, 4). Trades are not recorded (use :func:`simulate_batch`).
    """
    n_cand = signals.shape[0]
    n_sym, n_bars = c.shape
    turnover = np.zeros(n_cand)
    exposure = np.zeros(n_cand)
    stats = np.zeros((n_cand, 4))
    code = _bar_codes(valid, state)
    floor, ceil = _price_range(o, h, lo)
    n_blocks = starts.shape[0] - 1
    width = 1
    for b in range(n_blocks):
        width = max(width, starts[b + 1] - starts[b])
    dense = _dense_blocks(code, starts)
    per = (n_cand + n_groups - 1) // n_groups
    for g in prange(n_groups):
        k0 = g * per
        m = min(n_cand, k0 + per) - k0
        if m <= 0:
            continue
        st = np.zeros((m, n_sym, len(SLEEVE_FIELDS)))
        st[:, :, MARK] = np.nan
        pool = np.ones(m)
        prev = np.ones(m)
        tsum = np.zeros(m)
        esum = np.zeros(m)
        eq_b = np.zeros((m, width + 1))
        tr_b = np.zeros((m, width + 1))
        gr_b = np.zeros((m, width + 1))
        trades = np.empty((0, len(TRADE_FIELDS)))
        n_rec = np.zeros(1, dtype=np.int64)
        plain = np.zeros(m, dtype=np.bool_)
        for kk in range(m):
            k = k0 + kk
            plain[kk] = fast and (stop_loss[k] == 0.0 and trailing[k] == 0.0
                                  and take_profit[k] == 0.0 and max_bars[k] == 0)
        for b in range(n_blocks):
            t0, t1 = starts[b], starts[b + 1]
            n = t1 - t0
            for kk in range(m):
                carry = tr_b[kk, width] if b > 0 else 0.0  # a boundary's notional at t0
                for j in range(n):
                    eq_b[kk, j] = 0.0
                    tr_b[kk, j] = 0.0
                    gr_b[kk, j] = 0.0
                tr_b[kk, 0] = carry
                tr_b[kk, width] = 0.0
            for i in range(n_sym):
                for kk in range(m):
                    k = k0 + kk
                    si = size_idx[k]
                    en, ex = signals[k, 0], signals[k, 1]
                    size = sizes[si] if si >= 0 else sizes[0]
                    if plain[kk]:
                        _sleeve_plain(o, h, lo, c, code, operands[en[0]], operands[en[1]],
                                      en[2], operands[ex[0]], operands[ex[1]], ex[2], size,
                                      si >= 0, direction[k], fee, slip, t0, t1, st[kk], i,
                                      eq_b[kk], tr_b[kk], gr_b[kk], t0, floor[i], ceil[i],
                                      dense[i, b])
                    else:
                        _sleeve(o, h, lo, c, code, operands[en[0]], operands[en[1]], en[2],
                                operands[ex[0]], operands[ex[1]], ex[2], size, si >= 0,
                                direction[k], stop_loss[k], trailing[k], take_profit[k],
                                max_bars[k], fee, slip, t0, t1, st[kk], i, eq_b[kk],
                                tr_b[kk], gr_b[kk], t0, trades, n_rec)
            for kk in range(m):
                k = k0 + kk
                eq_r, tr_r, gr_r = eq_b[kk], tr_b[kk], gr_b[kk]
                for j in range(n):
                    eq_r[j] += pool[kk]
                if t1 < n_bars and at_bound[b + 1]:
                    # the boundary's notional belongs to bar t1: the next block's first
                    pool[kk] = _boundary(st[kk], o, valid, state, alloc, reallocate[t1], t1,
                                         pool[kk], fee, slip, tr_r, width, trades, n_rec)
                # the portfolio pass of :func:`portfolio_series`, on the finished block
                p, ts_k, es_k = prev[kk], tsum[kk], esum[kk]
                eq_out, ret_out = equity[k], returns[k]
                for j in range(n):
                    t = t0 + j
                    e = eq_r[j]
                    if p <= 0.0:
                        eq_out[t] = 0.0
                        ret_out[t] = 0.0
                        continue
                    if e <= 0.0:
                        e = 0.0
                    eq_out[t] = e
                    ret_out[t] = e / p - 1.0
                    ts_k += tr_r[j] / p
                    if e > 0:
                        es_k += gr_r[j] / e
                    p = e
                prev[kk], tsum[kk], esum[kk] = p, ts_k, es_k
        for kk in range(m):
            k = k0 + kk
            _finish(st[kk], stats[k], trades, n_rec)
            turnover[k] = tsum[kk]
            exposure[k] = esum[kk] / n_bars
    return turnover, exposure, stats


@njit(cache=True, parallel=True)
def portfolio_series(equity: np.ndarray, traded: np.ndarray, gross: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bar returns (K, T), summed turnover (K,) and mean exposure (K,) in one pass.

    Equity starts at 1.0 before the first bar. Turnover adds each bar's traded
    notional over the previous bar's equity; exposure averages gross position value
    over equity. A portfolio whose equity reaches zero is ruined: that bar's return
    is -100 %, and its equity (modified in place) stays at 0 afterwards.
    """
    n_cand, n_bars = equity.shape
    returns = np.zeros((n_cand, n_bars))
    turnover = np.zeros(n_cand)
    exposure = np.zeros(n_cand)
    for k in prange(n_cand):
        prev = 1.0
        tsum = 0.0
        esum = 0.0
        for t in range(n_bars):
            e = equity[k, t]
            if prev <= 0.0:  # ruined earlier: flat at zero
                equity[k, t] = 0.0
                continue
            if e <= 0.0:
                e = 0.0
                equity[k, t] = 0.0
            returns[k, t] = e / prev - 1.0
            tsum += traded[k, t] / prev
            if e > 0:
                esum += gross[k, t] / e
            prev = e
        turnover[k] = tsum
        exposure[k] = esum / n_bars
    return returns, turnover, exposure
