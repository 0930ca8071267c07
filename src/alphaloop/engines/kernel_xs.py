"""The cross-sectional portfolio kernel (numba): arrays in, arrays out.

One book per run, one cash account: at each rebalance bar's close the names are
ranked by score (:func:`rank_order`, shared by every run with the same score and
eligibility), the long and short books are chosen with their exit buffer
(:func:`_select`) and weighted (:func:`_weights`); the targets trade at the next open.
Engine A and engine B both run this kernel: A with its cost model written as an
execution model without impact, volume cap, lots or borrow
(:meth:`ExecutionModel.from_cost_model`), B with the full model, so with every
friction off the two are the same simulation by construction; the wrappers differ
only in what they report.

Timeline of a bar ``t`` (a run):

0. names that left the universe at t (delisted, out of the membership, excluded by
   the data gate) are closed at their last close, with costs;
1. shorts held overnight pay borrow on their value at the last close;
2. the open: weights decided at t-1 become share targets from the equity at this
   open (positions at the open, the last close where a name has no bar), rounded
   toward zero to whole lots (so positions stay in lots); then every
   order that reduces a position fills (sells fund buys), then every order that adds
   — each within the bar's volume cap (a share of the volume *before* the bar),
   rounded down to lots, adds cut to the leverage cap; what is not filled waits for
   the next bar until a new decision replaces it;
3. the close: positions are marked; the portfolio is ruined (equity 0 from here on)
   if its equity is not positive;
4. the decision: a held name whose exit signal is true is set to close; on a
   rebalance bar (``t % rebalance_every == 0``) the books are chosen afresh.

Orders: an exit, each chosen or held name's new weight on a rebalance (its shares and
side are known at the next open), and the close of a name that left the universe.
Each is counted in ``S_ORDERS`` and has one row in the orders ledger
(``kernel_b.ORDER_FIELDS``) when one is kept; every fill belongs to one order.

Rank and weight definitions are in :class:`alphaloop.strategy.spec.Portfolio`.

Arrays are *time-major* here ((T, N), the market (8, T, N)), unlike the sleeve
kernels: a bar visits every name, so the names of one bar sit together in memory.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

from alphaloop.engines import kernel_b as kb
from alphaloop.engines.kernel_a import (
    EXIT_DATA,
    EXIT_DELISTED,
    EXIT_SIGNAL,
    OPEN_AT_END,
    TRADE_FIELDS,
    _book,
    _is_true,
    _record,
)
from alphaloop.engines.universe import LIVE, OUT

# a run's portfolio settings (the float vector ``cfg``)
(C_LONG, C_LONG_COUNT, C_SHORT, C_SHORT_COUNT, C_BUFFER, C_BUFFER_COUNT, C_WEIGHTING,
 C_GROSS_LONG, C_GROSS_SHORT, C_REBALANCE, C_MAX_WEIGHT) = range(11)
N_CFG = 11
EQUAL, RANK, SCORE, INVERSE_VOL = range(4)
WEIGHTINGS = ("equal", "rank", "score", "inverse_vol")
# why a fill happened beyond engine A's exit reasons (kernel_b's codes)
REASON_REBALANCE = kb.REASON_REBALANCE
# per-name state rows of the (N_STATE, N) array
(QTY, TARGET, W, PENDING, FRESH, MARK, FLOW, ENTRY, ENTRY_BAR, BASIS, PEAK, USED,
 REASON, ROW) = range(14)
N_STATE = 14  # ROW: the pending order's row in the orders ledger (-1: none)


@njit(cache=True)
def rank_order(score: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bar, the eligible names best first: ``order[t, :count[t]]`` (ties by name).

    ``score`` and ``eligible`` are (T, N); ``eligible`` is already the causal test (tradable at t, score defined,
    entry true, exit not); computing the ranking once serves every run that shares
    the score and the eligibility.
    """
    n_bars, n_sym = score.shape
    order = np.empty((n_bars, n_sym), dtype=np.int32)
    count = np.zeros(n_bars, dtype=np.int64)
    keys = np.empty(n_sym)
    idx = np.empty(n_sym, dtype=np.int64)
    for t in range(n_bars):
        n = 0
        for i in range(n_sym):
            if eligible[t, i]:
                keys[n] = -score[t, i]
                idx[n] = i
                n += 1
        perm = np.argsort(keys[:n], kind="mergesort")  # stable: ties keep name order
        for j in range(n):
            order[t, j] = idx[perm[j]]
        count[t] = n
    return order, count


@njit(cache=True, inline="always")
def _book_size(value: float, is_count: float, n: int) -> int:
    """Names in a book (or in its buffer) out of ``n`` ranked."""
    if value <= 0.0 or n == 0:
        return 0
    if is_count > 0.0:
        return min(int(value), n)
    return min(max(math.floor(value * n + 1e-9), 1), n)


@njit(cache=True)
def _select(order: np.ndarray, n: int, qty: np.ndarray, cfg: np.ndarray,
            side: np.ndarray, chosen: np.ndarray) -> tuple[int, int]:
    """Choose the books from the ranking ``order[:n]``: held names within their book's
    size plus the buffer stay, free places go to the best (worst for shorts) names not
    yet chosen. ``chosen`` receives the long book best first, then the short book
    worst first; ``side`` (all 0 on entry, the caller resets it) marks them +1 / -1.
    Returns the two books' sizes."""
    n_long = _book_size(cfg[C_LONG], cfg[C_LONG_COUNT], n)
    n_short = min(_book_size(cfg[C_SHORT], cfg[C_SHORT_COUNT], n), n - n_long)
    buf = 0
    if cfg[C_BUFFER] > 0.0:
        buf = _book_size(cfg[C_BUFFER], cfg[C_BUFFER_COUNT], n)
    taken = 0
    for book in (1, -1):
        want = n_long if book == 1 else n_short
        first = taken
        for j in range(min(want + buf, n)):  # held names inside the buffer stay
            i = order[j] if book == 1 else order[n - 1 - j]
            if taken - first < want and qty[i] * book > 0.0 and side[i] == 0:
                side[i] = book
                chosen[taken] = i
                taken += 1
        j = 0
        while taken - first < want and j < n:  # free places: best names not chosen
            i = order[j] if book == 1 else order[n - 1 - j]
            if side[i] == 0:
                side[i] = book
                chosen[taken] = i
                taken += 1
            j += 1
        if book == 1:
            n_long = taken
    return n_long, taken - n_long


@njit(cache=True)
def _weights(chosen: np.ndarray, n_long: int, n_short: int, order: np.ndarray, n: int,
             side: np.ndarray, score_t: np.ndarray, vol_t: np.ndarray, cfg: np.ndarray,
             w: np.ndarray) -> None:
    """Target weights (fractions of equity, signed) of the chosen names into ``w``
    (zero elsewhere: the caller resets it). A book's members are in ``chosen`` and
    marked in ``side``; ``rank`` weighting ranks them in ranking order."""
    how = int(cfg[C_WEIGHTING])
    median = 0.0
    if how == SCORE and n > 0:
        vals = np.empty(n)
        for j in range(n):
            vals[j] = score_t[order[j]]
        median = np.median(vals)
    cap = cfg[C_MAX_WEIGHT]
    for book in (1, -1):
        lo, members = (0, n_long) if book == 1 else (n_long, n_short)
        if members == 0:
            continue
        total = 0.0
        if how == RANK:  # in ranking order: the book's best gets ``members`` parts
            pos = 0
            for j in range(n):
                i = order[j] if book == 1 else order[n - 1 - j]
                if side[i] == book:
                    w[i] = float(members - pos)
                    total += w[i]
                    pos += 1
        for k in range(lo, lo + members):
            i = chosen[k]
            if how == RANK:
                continue
            if how == SCORE:
                raw = abs(score_t[i] - median)
            elif how == INVERSE_VOL:
                raw = 1.0 / vol_t[i]
            else:
                raw = 1.0
            w[i] = raw
            total += raw
        gross = cfg[C_GROSS_LONG] if book == 1 else cfg[C_GROSS_SHORT]
        for k in range(lo, lo + members):
            i = chosen[k]
            # all scores at the median: no preference, so equal weights
            share = w[i] / total if total > 0.0 else 1.0 / members
            w[i] = book * gross * share
            if cap > 0.0:
                w[i] = min(max(w[i], -cap), cap)


@njit(cache=True)
def _trade(s: np.ndarray, i: int, t: int, q: float, ref: float, reason: int,
           m: np.ndarray, prm: np.ndarray, acct: np.ndarray, traded: np.ndarray,
           stats: np.ndarray, fills: np.ndarray, orders: np.ndarray, trades: np.ndarray,
           n_rec: np.ndarray) -> None:
    """Fill ``q`` shares (signed: + buys) of name ``i`` at reference price ``ref``:
    cash, costs, ledger, and the trade list when a position opens or closes."""
    side = 1.0 if q > 0 else -1.0
    aq = abs(q)
    price, comm, spc, imc = kb._execute(side, aq, ref, m[kb.M_RANGE, t, i],
                                        m[kb.M_ADV, t, i], m[kb.M_SIGMA, t, i], prm)
    flow = -q * price - comm
    acct[0] += flow
    traded[t] += aq * price
    s[USED, i] += aq
    stats[kb.S_COMM] += comm
    stats[kb.S_SPREAD] += spc
    stats[kb.S_IMPACT] += imc
    stats[kb.S_FILLED] += aq * ref
    nf = int(stats[kb.S_FILLS])
    if nf < fills.shape[0]:
        row = fills[nf]
        row[0], row[1], row[2], row[3] = t, i, side, aq
        row[4], row[5], row[6], row[7], row[8] = price, ref, comm, spc, imc
        vol, adv = m[kb.M_V, t, i], m[kb.M_ADV, t, i]
        row[9] = aq / vol if vol > 0 else np.nan
        row[10] = aq / adv if adv > 0 else np.nan
        row[11] = reason
    stats[kb.S_FILLS] = nf + 1
    kb._order_fill(orders, s[ROW, i], t, aq)
    before = s[QTY, i]
    if before == 0.0:  # a new trade
        s[FLOW, i], s[ENTRY, i], s[ENTRY_BAR, i] = 0.0, price, t
        s[BASIS, i], s[PEAK, i] = aq * price, 0.0
        stats[kb.S_TRADES] += 1.0
    s[FLOW, i] += flow
    after = before + q
    if abs(after) <= 1e-12 * max(abs(before), 1.0):
        after = 0.0
    s[QTY, i] = after
    s[PEAK, i] = max(s[PEAK, i], abs(after))
    if after == 0.0:  # flat again: the trade's pnl is every cash flow it caused
        pnl = s[FLOW, i]
        _book(stats, pnl)
        if trades.shape[0] > 0:
            sign = 1.0 if before > 0 else -1.0
            _record(trades, n_rec, i, int(s[ENTRY_BAR, i]), t, sign * s[PEAK, i],
                    s[ENTRY, i], price, pnl, s[BASIS, i], reason)


@njit(cache=True)
def _leave(s: np.ndarray, m: np.ndarray, state: np.ndarray, t: int, prm: np.ndarray,
           acct: np.ndarray, traded: np.ndarray, stats: np.ndarray, fills: np.ndarray,
           orders: np.ndarray,
           trades: np.ndarray, n_rec: np.ndarray) -> None:
    """Phase 0: names that left the universe at t close at their last close."""
    for i in range(s.shape[1]):
        if state[t, i] == LIVE or state[t - 1, i] != LIVE:
            continue
        _drop_order(s, i, t, s[MARK, i], stats, orders)
        if s[QTY, i] != 0.0:
            why = EXIT_DELISTED if state[t, i] == OUT else EXIT_DATA
            s[ROW, i] = kb._order(orders, stats, t, i, -1.0 if s[QTY, i] > 0 else 1.0,
                                  abs(s[QTY, i]), 0.0, why)
            _trade(s, i, t, -s[QTY, i], s[MARK, i], why, m, prm, acct, traded, stats,
                   fills, orders, trades, n_rec)
            _end(s, orders, i, t, False)


@njit(cache=True, inline="always")
def _cap(m: np.ndarray, t: int, i: int, max_part: float, lot: float) -> float:
    """Shares the volume cap allows in bar t (``kernel_b._cap`` in this layout)."""
    if max_part == math.inf:
        return math.inf
    v = m[kb.M_ADV, t, i]
    return kb._round_lots(max_part * v, lot) if v > 0 else 0.0


@njit(cache=True, inline="always")
def _end(s: np.ndarray, orders: np.ndarray, i: int, t: int, cancelled: bool) -> None:
    """Name i's order is over at bar t (:func:`kernel_b._order_end`)."""
    kb._order_end(orders, s[ROW, i], t, cancelled)
    s[ROW, i] = -1.0


@njit(cache=True, inline="always")
def _drop_order(s: np.ndarray, i: int, t: int, price: float, stats: np.ndarray,
                orders: np.ndarray) -> None:
    """A pending order that will not fill further: its remainder is reported."""
    if s[PENDING, i] > 0.0:
        if s[FRESH, i] == 0.0:
            left = abs(s[TARGET, i] - s[QTY, i])
            if left > 0.0 and price > 0.0:
                stats[kb.S_UNFILLED] += left * price
                stats[kb.S_CANCELLED] += 1.0
        s[PENDING, i] = 0.0
        _end(s, orders, i, t, True)


@njit(cache=True)
def _open(s: np.ndarray, m: np.ndarray, valid: np.ndarray, state: np.ndarray, t: int,
          prm: np.ndarray, acct: np.ndarray, traded: np.ndarray, stats: np.ndarray,
          fills: np.ndarray, orders: np.ndarray, trades: np.ndarray, n_rec: np.ndarray) -> bool:
    """Phase 2: pending orders fill at t's open, reductions first. True while some
    order is still pending (not filled yet, or waiting for a bar)."""
    n_sym = s.shape[1]
    equity, gross = acct[0], 0.0
    for i in range(n_sym):
        if s[QTY, i] != 0.0:
            px = m[kb.M_O, t, i] if valid[t, i] else s[MARK, i]
            equity += s[QTY, i] * px
            gross += abs(s[QTY, i]) * px
    lot, max_part = prm[kb.P_LOT], prm[kb.P_MAX_PART]
    for i in range(n_sym):  # weights decided at the last close become shares now
        if s[PENDING, i] > 0.0 and s[FRESH, i] > 0.0 and valid[t, i]:
            want = s[W, i] * equity / m[kb.M_O, t, i]
            s[TARGET, i] = math.copysign(kb._round_lots(abs(want), lot), want)
            s[FRESH, i] = 0.0
            delta = s[TARGET, i] - s[QTY, i]
            kb._order_sized(orders, s[ROW, i], 1.0 if delta > 0 else (-1.0 if delta < 0
                                                                       else 0.0), abs(delta))
    for phase in range(2):  # 0: reduce (sells fund buys), 1: add
        for i in range(n_sym):
            if s[PENDING, i] == 0.0 or s[FRESH, i] > 0.0 or not valid[t, i] \
                    or state[t, i] != LIVE:
                continue
            qty, target = s[QTY, i], s[TARGET, i]
            if phase == 0:  # the part of the order that reduces |position|
                if qty == 0.0 or (target * qty > 0.0 and abs(target) >= abs(qty)):
                    continue
                q = -qty if target * qty <= 0.0 else target - qty
            else:  # the part that adds, once any reduction is complete
                if target == 0.0 or target * qty < 0.0 or abs(target) <= abs(qty):
                    continue
                q = target - qty
            ref = m[kb.M_O, t, i]
            room = _cap(m, t, i, max_part, lot) - s[USED, i]
            aq = min(abs(q), max(room, 0.0))
            if phase == 1 and prm[kb.P_MAX_LEV] < math.inf:
                lev_room = kb._round_lots(
                    max((prm[kb.P_MAX_LEV] * equity - gross) / ref, 0.0), lot)
                if aq > lev_room:
                    stats[kb.S_CLIPPED] += 1.0
                    aq = lev_room
            if aq <= 0.0:
                continue
            if aq < abs(q):
                stats[kb.S_PARTIAL] += 1.0
            before = abs(s[QTY, i])
            _trade(s, i, t, math.copysign(aq, q), ref, int(s[REASON, i]), m, prm, acct,
                   traded, stats, fills, orders, trades, n_rec)
            if aq == abs(q) and s[QTY, i] != 0.0:  # the leg is complete: land exactly on
                s[QTY, i] = target  # the target, not an ulp beside it (a phantom order)
            gross += (abs(s[QTY, i]) - before) * ref
            if s[QTY, i] == s[TARGET, i]:
                s[PENDING, i] = 0.0
                _end(s, orders, i, t, False)
    left = False
    for i in range(n_sym):
        if s[PENDING, i] > 0.0:
            if s[FRESH, i] == 0.0 and s[QTY, i] == s[TARGET, i]:
                s[PENDING, i] = 0.0  # nothing to trade (a target equal to the holding)
                _end(s, orders, i, t, False)
            else:
                left = True
    return left


@njit(cache=True)
def _run(m: np.ndarray, valid: np.ndarray, state: np.ndarray, leaves: np.ndarray,
         order: np.ndarray, count: np.ndarray, score: np.ndarray, vol: np.ndarray,
         use_vol: bool, xa: np.ndarray, xb: np.ndarray, xop: int, has_exit: bool,
         cfg: np.ndarray, prm: np.ndarray, dt_years: np.ndarray, capital: float,
         equity: np.ndarray, traded: np.ndarray, gross: np.ndarray, net: np.ndarray,
         stats: np.ndarray, fills: np.ndarray, orders: np.ndarray, trades: np.ndarray,
         n_rec: np.ndarray,
         positions: np.ndarray) -> None:
    """One run over the whole panel (the timeline in the module docstring).

    ``leaves[t]``: some name leaves the universe at t; ``has_exit``: the exit signal is
    true somewhere. Both only let the loop skip passes that would find nothing."""
    n_bars, n_sym = valid.shape
    s = np.zeros((N_STATE, n_sym))
    s[MARK] = np.nan
    s[ROW] = -1.0
    acct = np.array([capital])  # cash
    side = np.zeros(n_sym, dtype=np.int64)
    w = np.zeros(n_sym)
    chosen = np.zeros(n_sym, dtype=np.int64)
    n_chosen = 0
    every = int(cfg[C_REBALANCE])
    keep_pos = positions.shape[0] > 0
    capped = prm[kb.P_MAX_PART] < math.inf
    working = False  # any order pending
    stats[kb.S_RUINED] = -1.0
    for t in range(n_bars):
        if capped:
            s[USED] = 0.0
        if t > 0:
            if leaves[t]:
                _leave(s, m, state, t, prm, acct, traded, stats, fills, orders, trades, n_rec)
            if prm[kb.P_BORROW] > 0.0:
                for i in range(n_sym):
                    if s[QTY, i] < 0.0:
                        cost = prm[kb.P_BORROW] * dt_years[t] * (-s[QTY, i]) * s[MARK, i]
                        acct[0] -= cost
                        s[FLOW, i] -= cost
                        stats[kb.S_BORROW] += cost
            if working:
                working = _open(s, m, valid, state, t, prm, acct, traded, stats, fills, orders,
                               trades, n_rec)
        eq_t, gross_t, net_t = acct[0], 0.0, 0.0
        for i in range(n_sym):
            if valid[t, i] and state[t, i] == LIVE:
                s[MARK, i] = m[kb.M_C, t, i]
            if s[QTY, i] != 0.0:
                value = s[QTY, i] * s[MARK, i]
                eq_t += value
                gross_t += abs(value)
                net_t += value
            if keep_pos:
                positions[i, t] = s[QTY, i]
        equity[t], gross[t], net[t] = eq_t, gross_t, net_t
        if eq_t <= 0.0:  # ruined: nothing is left to trade with
            stats[kb.S_RUINED] = t
            equity[t + 1:] = 0.0
            return
        if t + 1 >= n_bars:
            break
        if has_exit:  # 4. exits between rebalances
            for i in range(n_sym):
                closing = (s[PENDING, i] > 0.0 and s[FRESH, i] == 0.0
                           and s[TARGET, i] == 0.0)
                if s[QTY, i] != 0.0 and not closing and valid[t, i] \
                        and _is_true(xa[t, i], xb[t, i], xop):
                    _drop_order(s, i, t, s[MARK, i], stats, orders)
                    s[PENDING, i], s[FRESH, i], s[TARGET, i], s[W, i] = 1.0, 0.0, 0.0, 0.0
                    s[REASON, i] = EXIT_SIGNAL
                    s[ROW, i] = kb._order(orders, stats, t, i,
                                          -1.0 if s[QTY, i] > 0 else 1.0, abs(s[QTY, i]),
                                          0.0, EXIT_SIGNAL)
                    working = True
        if t % every == 0:
            for k in range(n_chosen):  # forget the last books
                side[chosen[k]] = 0
                w[chosen[k]] = 0.0
            n = count[t]
            n_long, n_short = _select(order[t], n, s[QTY], cfg, side, chosen)
            n_chosen = n_long + n_short
            _weights(chosen, n_long, n_short, order[t], n, side, score[t],
                     vol[t] if use_vol else score[t], cfg, w)
            if _decide(s, w, t, stats, orders):
                working = True
    _finish(s, stats, trades, n_rec, n_bars)


@njit(cache=True)
def _decide(s: np.ndarray, w: np.ndarray, t: int, stats: np.ndarray,
            orders: np.ndarray) -> bool:
    """A rebalance: every chosen or held name gets its new weight as an order (a name
    no longer chosen: 0); orders for names that are neither lapse. True if any order."""
    any_order = False
    for i in range(s.shape[1]):
        if w[i] == 0.0 and s[QTY, i] == 0.0:
            if s[PENDING, i] > 0.0:
                _drop_order(s, i, t, s[MARK, i], stats, orders)
            continue
        any_order = True
        if s[PENDING, i] > 0.0 and s[FRESH, i] == 0.0 and s[TARGET, i] == 0.0 \
                and w[i] == 0.0:
            continue  # already closing
        _drop_order(s, i, t, s[MARK, i], stats, orders)
        s[PENDING, i], s[FRESH, i], s[W, i] = 1.0, 1.0, w[i]
        s[REASON, i] = REASON_REBALANCE
        # shares (and so the side) are set at the next open, from the equity there
        s[ROW, i] = kb._order(orders, stats, t, i, 0.0, np.nan, w[i], REASON_REBALANCE)
    return any_order


@njit(cache=True)
def _finish(s: np.ndarray, stats: np.ndarray, trades: np.ndarray, n_rec: np.ndarray,
            n_bars: int) -> None:
    """Positions still open are valued at the last close, with no exit cost."""
    for i in range(s.shape[1]):
        if s[PENDING, i] > 0.0 and s[FRESH, i] == 0.0 and s[MARK, i] > 0.0:
            stats[kb.S_PENDING_END] += abs(s[TARGET, i] - s[QTY, i]) * s[MARK, i]
        if s[QTY, i] == 0.0:
            continue
        pnl = s[FLOW, i] + s[QTY, i] * s[MARK, i]
        _book(stats, pnl)
        if trades.shape[0] > 0:
            sign = 1.0 if s[QTY, i] > 0 else -1.0
            _record(trades, n_rec, i, int(s[ENTRY_BAR, i]), -1, sign * s[PEAK, i],
                    s[ENTRY, i], s[MARK, i], pnl, s[BASIS, i], OPEN_AT_END)


@njit(cache=True, parallel=True)
def simulate(m: np.ndarray, valid: np.ndarray, state: np.ndarray, orders: Any,
             counts: Any, operands: Any, runs: np.ndarray, cfg: np.ndarray,
             prm: np.ndarray, dt_years: np.ndarray, capitals: np.ndarray,
             fills: np.ndarray, order_rows: np.ndarray, trades: np.ndarray,
             positions: np.ndarray
             ) -> tuple[np.ndarray, ...]:
    """Simulate R runs of cross-sectional books over a (T, N) panel (time-major).

    ``m`` is engine B's market array as (8, T, N) (``kernel_b.M_*`` rows), ``valid`` and
    ``state`` (T, N); ``orders`` and ``counts`` typed lists of :func:`rank_order`
    results, ``operands`` a typed list of (T, N) float arrays; ``runs[r]`` = [ranking,
    score operand, vol operand (-1 none), exit a, exit b, exit op, exit ever true
    (0/1)]; ``cfg[r]`` the portfolio settings (``C_*``); ``prm`` the execution model
    (``kernel_b.P_*``) for every run; ``capitals[r]`` the starting cash. Run 0 alone
    writes ``fills``, ``order_rows`` (the orders ledger, ``kernel_b.ORDER_FIELDS``: one
    row per order counted in ``S_ORDERS``), ``trades`` and ``positions`` ((N, T), as
    engine B reports them) when they have rows. Returns equity, traded notional, gross
    and net exposure (R, T), stats (R, ``kernel_b.N_STATS``) and the trade count
    ``n_rec[0]``.
    """
    n_runs = runs.shape[0]
    n_bars = valid.shape[0]
    equity = np.zeros((n_runs, n_bars))
    traded = np.zeros((n_runs, n_bars))
    gross = np.zeros((n_runs, n_bars))
    net = np.zeros((n_runs, n_bars))
    stats = np.zeros((n_runs, kb.N_STATS))
    n_rec = np.zeros(1, dtype=np.int64)
    none_f = np.empty((0, len(kb.FILL_FIELDS)))
    none_o = np.empty((0, len(kb.ORDER_FIELDS)))
    none_t = np.empty((0, len(TRADE_FIELDS)))
    none_p = np.empty((0, 0))
    leaves = np.zeros(n_bars, dtype=np.bool_)
    for t in range(1, n_bars):
        for i in range(valid.shape[1]):
            if state[t - 1, i] == LIVE and state[t, i] != LIVE:
                leaves[t] = True
                break
    for r in prange(n_runs):
        ru = runs[r]
        first = r == 0
        _run(m, valid, state, leaves, orders[ru[0]], counts[ru[0]], operands[ru[1]],
             operands[max(ru[2], 0)], ru[2] >= 0, operands[ru[3]], operands[ru[4]],
             int(ru[5]), ru[6] > 0, cfg[r], prm, dt_years, capitals[r], equity[r],
             traded[r], gross[r], net[r], stats[r], fills if first else none_f,
             order_rows if first else none_o, trades if first else none_t, n_rec,
             positions if first else none_p)
    return equity, traded, gross, net, stats, n_rec
