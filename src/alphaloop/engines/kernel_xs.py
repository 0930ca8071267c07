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
   open (positions at the open, the last close where a name has no bar); then every
   order that reduces a position fills (sells fund buys), then every order that adds
   — each within the bar's volume cap (a share of the volume *before* the bar),
   rounded down to lots, adds cut to the leverage cap; what is not filled waits for
   the next bar until a new decision replaces it;
3. the close: positions are marked; the portfolio is ruined (equity 0 from here on)
   if its equity is not positive;
4. the decision: a held name whose exit signal is true is set to close; on a
   rebalance bar (``t % rebalance_every == 0``) the books are chosen afresh.

Rank and weight definitions are in :class:`alphaloop.strategy.spec.Portfolio`.
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
 REASON) = range(13)
N_STATE = 13


@njit(cache=True)
def rank_order(score: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bar, the eligible names best first: ``order[t, :count[t]]`` (ties by name).

    ``eligible`` (N, T) is already the causal test (tradable at t, score defined,
    entry true, exit not); computing the ranking once serves every run that shares
    the score and the eligibility.
    """
    n_sym, n_bars = score.shape
    order = np.empty((n_bars, n_sym), dtype=np.int32)
    count = np.zeros(n_bars, dtype=np.int64)
    keys = np.empty(n_sym)
    idx = np.empty(n_sym, dtype=np.int64)
    for t in range(n_bars):
        n = 0
        for i in range(n_sym):
            if eligible[i, t]:
                keys[n] = -score[i, t]
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
            side: np.ndarray) -> None:
    """Fill ``side`` (N) with +1 (long book), -1 (short book) or 0, from the ranking
    ``order[:n]``: held names within their book's size plus the buffer stay, free
    places go to the best (worst for shorts) names not yet chosen."""
    side[:] = 0
    n_long = _book_size(cfg[C_LONG], cfg[C_LONG_COUNT], n)
    n_short = min(_book_size(cfg[C_SHORT], cfg[C_SHORT_COUNT], n), n - n_long)
    buf = 0
    if cfg[C_BUFFER] > 0.0:
        buf = _book_size(cfg[C_BUFFER], cfg[C_BUFFER_COUNT], n)
    taken = 0
    for j in range(min(n_long + buf, n)):  # held longs inside the buffer, best first
        i = order[j]
        if taken < n_long and qty[i] > 0.0:
            side[i] = 1
            taken += 1
    j = 0
    while taken < n_long and j < n:
        i = order[j]
        if side[i] == 0:
            side[i] = 1
            taken += 1
        j += 1
    taken = 0
    for j in range(min(n_short + buf, n)):  # held shorts, worst first
        i = order[n - 1 - j]
        if taken < n_short and qty[i] < 0.0 and side[i] == 0:
            side[i] = -1
            taken += 1
    j = 0
    while taken < n_short and j < n:
        i = order[n - 1 - j]
        if side[i] == 0:
            side[i] = -1
            taken += 1
        j += 1


@njit(cache=True)
def _weights(order: np.ndarray, n: int, side: np.ndarray, score_t: np.ndarray,
             vol_t: np.ndarray, cfg: np.ndarray, w: np.ndarray) -> None:
    """Target weights (fractions of equity, signed) of the chosen names into ``w``."""
    w[:] = 0.0
    how = int(cfg[C_WEIGHTING])
    median = 0.0
    if how == SCORE and n > 0:
        vals = np.empty(n)
        for j in range(n):
            vals[j] = score_t[order[j]]
        median = np.median(vals)
    for book in (1, -1):
        members = 0
        for j in range(n):
            if side[order[j]] == book:
                members += 1
        if members == 0:
            continue
        total = 0.0
        rank = 0
        for jj in range(n):  # best first in this book's own direction
            i = order[jj] if book == 1 else order[n - 1 - jj]
            if side[i] != book:
                continue
            if how == RANK:
                raw = float(members - rank)
            elif how == SCORE:
                raw = abs(score_t[i] - median)
            elif how == INVERSE_VOL:
                raw = 1.0 / vol_t[i]
            else:
                raw = 1.0
            w[i] = raw
            total += raw
            rank += 1
        gross = cfg[C_GROSS_LONG] if book == 1 else cfg[C_GROSS_SHORT]
        for i in range(side.shape[0]):
            if side[i] == book:
                # all scores at the median: no preference, so equal weights
                share = w[i] / total if total > 0.0 else 1.0 / members
                w[i] = book * gross * share
    cap = cfg[C_MAX_WEIGHT]
    if cap > 0.0:
        for i in range(w.shape[0]):
            w[i] = min(max(w[i], -cap), cap)


@njit(cache=True)
def _trade(s: np.ndarray, i: int, t: int, q: float, ref: float, reason: int,
           m: np.ndarray, prm: np.ndarray, acct: np.ndarray, traded: np.ndarray,
           stats: np.ndarray, fills: np.ndarray, trades: np.ndarray,
           n_rec: np.ndarray) -> None:
    """Fill ``q`` shares (signed: + buys) of name ``i`` at reference price ``ref``:
    cash, costs, ledger, and the trade list when a position opens or closes."""
    side = 1.0 if q > 0 else -1.0
    aq = abs(q)
    price, comm, spc, imc = kb._execute(side, aq, ref, m[kb.M_RANGE, i, t],
                                        m[kb.M_ADV, i, t], m[kb.M_SIGMA, i, t], prm)
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
        vol, adv = m[kb.M_V, i, t], m[kb.M_ADV, i, t]
        row[9] = aq / vol if vol > 0 else np.nan
        row[10] = aq / adv if adv > 0 else np.nan
        row[11] = reason
    stats[kb.S_FILLS] = nf + 1
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
           trades: np.ndarray, n_rec: np.ndarray) -> None:
    """Phase 0: names that left the universe at t close at their last close."""
    for i in range(s.shape[1]):
        if state[i, t] == LIVE or state[i, t - 1] != LIVE:
            continue
        _drop_order(s, i, s[MARK, i], stats)
        if s[QTY, i] != 0.0:
            why = EXIT_DELISTED if state[i, t] == OUT else EXIT_DATA
            _trade(s, i, t, -s[QTY, i], s[MARK, i], why, m, prm, acct, traded, stats,
                   fills, trades, n_rec)


@njit(cache=True, inline="always")
def _drop_order(s: np.ndarray, i: int, price: float, stats: np.ndarray) -> None:
    """A pending order that will not fill further: its remainder is reported."""
    if s[PENDING, i] > 0.0:
        if s[FRESH, i] == 0.0:
            left = abs(s[TARGET, i] - s[QTY, i])
            if left > 0.0 and price > 0.0:
                stats[kb.S_UNFILLED] += left * price
                stats[kb.S_CANCELLED] += 1.0
        s[PENDING, i] = 0.0


@njit(cache=True)
def _open(s: np.ndarray, m: np.ndarray, valid: np.ndarray, state: np.ndarray, t: int,
          prm: np.ndarray, acct: np.ndarray, traded: np.ndarray, stats: np.ndarray,
          fills: np.ndarray, trades: np.ndarray, n_rec: np.ndarray) -> None:
    """Phase 2: pending orders fill at t's open, reductions first."""
    n_sym = s.shape[1]
    equity, gross = acct[0], 0.0
    for i in range(n_sym):
        if s[QTY, i] != 0.0:
            px = m[kb.M_O, i, t] if valid[i, t] else s[MARK, i]
            equity += s[QTY, i] * px
            gross += abs(s[QTY, i]) * px
    lot, max_part = prm[kb.P_LOT], prm[kb.P_MAX_PART]
    for i in range(n_sym):  # weights decided at the last close become shares now
        if s[PENDING, i] > 0.0 and s[FRESH, i] > 0.0 and valid[i, t]:
            want = s[W, i] * equity / m[kb.M_O, i, t]
            s[TARGET, i] = math.copysign(kb._round_lots(abs(want), lot), want)
            s[FRESH, i] = 0.0
    for phase in range(2):  # 0: reduce (sells fund buys), 1: add
        for i in range(n_sym):
            if s[PENDING, i] == 0.0 or s[FRESH, i] > 0.0 or not valid[i, t] \
                    or state[i, t] != LIVE:
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
            ref = m[kb.M_O, i, t]
            room = kb._cap(m, i, t, max_part, lot) - s[USED, i]
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
                   traded, stats, fills, trades, n_rec)
            gross += (abs(s[QTY, i]) - before) * ref
            if s[QTY, i] == s[TARGET, i]:
                s[PENDING, i] = 0.0


@njit(cache=True)
def _run(m: np.ndarray, valid: np.ndarray, state: np.ndarray, order: np.ndarray,
         count: np.ndarray, score: np.ndarray, vol: np.ndarray, use_vol: bool,
         xa: np.ndarray, xb: np.ndarray, xop: int, cfg: np.ndarray, prm: np.ndarray,
         dt_years: np.ndarray, capital: float, equity: np.ndarray, traded: np.ndarray,
         gross: np.ndarray, net: np.ndarray, stats: np.ndarray, fills: np.ndarray,
         trades: np.ndarray, n_rec: np.ndarray, positions: np.ndarray) -> None:
    """One run over the whole panel (the timeline in the module docstring)."""
    n_sym, n_bars = valid.shape
    s = np.zeros((N_STATE, n_sym))
    s[MARK] = np.nan
    acct = np.array([capital])  # cash
    side = np.zeros(n_sym, dtype=np.int64)
    w = np.zeros(n_sym)
    every = int(cfg[C_REBALANCE])
    keep_pos = positions.shape[0] > 0
    stats[kb.S_RUINED] = -1.0
    for t in range(n_bars):
        s[USED] = 0.0
        if t > 0:
            _leave(s, m, state, t, prm, acct, traded, stats, fills, trades, n_rec)
            if prm[kb.P_BORROW] > 0.0:
                for i in range(n_sym):
                    if s[QTY, i] < 0.0:
                        cost = prm[kb.P_BORROW] * dt_years[t] * (-s[QTY, i]) * s[MARK, i]
                        acct[0] -= cost
                        s[FLOW, i] -= cost
                        stats[kb.S_BORROW] += cost
            _open(s, m, valid, state, t, prm, acct, traded, stats, fills, trades, n_rec)
        eq_t, gross_t, net_t = acct[0], 0.0, 0.0
        for i in range(n_sym):
            if valid[i, t] and state[i, t] == LIVE:
                s[MARK, i] = m[kb.M_C, i, t]
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
        for i in range(n_sym):  # 4. exits between rebalances
            closing = s[PENDING, i] > 0.0 and s[FRESH, i] == 0.0 and s[TARGET, i] == 0.0
            if s[QTY, i] != 0.0 and not closing and valid[i, t] \
                    and _is_true(xa[i, t], xb[i, t], xop):
                _drop_order(s, i, s[MARK, i], stats)
                s[PENDING, i], s[FRESH, i], s[TARGET, i], s[W, i] = 1.0, 0.0, 0.0, 0.0
                s[REASON, i] = EXIT_SIGNAL
                stats[kb.S_ORDERS] += 1.0
        if t % every == 0:
            n = count[t]
            _select(order[t], n, s[QTY], cfg, side)
            _weights(order[t], n, side, score[:, t], vol[:, t] if use_vol else score[:, t],
                     cfg, w)
            for i in range(n_sym):
                if w[i] == 0.0 and s[QTY, i] == 0.0:
                    _drop_order(s, i, s[MARK, i], stats)
                    continue
                if s[PENDING, i] > 0.0 and s[FRESH, i] == 0.0 and s[TARGET, i] == 0.0 \
                        and w[i] == 0.0:
                    continue  # already closing
                _drop_order(s, i, s[MARK, i], stats)
                s[PENDING, i], s[FRESH, i], s[W, i] = 1.0, 1.0, w[i]
                s[REASON, i] = REASON_REBALANCE
                stats[kb.S_ORDERS] += 1.0
    _finish(s, stats, trades, n_rec, n_bars)


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
             fills: np.ndarray, trades: np.ndarray, positions: np.ndarray
             ) -> tuple[np.ndarray, ...]:
    """Simulate R runs of cross-sectional books over an (N, T) panel.

    ``m`` is engine B's (8, N, T) market array (``kernel_b.M_*`` rows); ``orders`` and
    ``counts`` typed lists of :func:`rank_order` results, ``operands`` a typed list of
    (N, T) float arrays; ``runs[r]`` = [ranking, score operand, vol operand (-1 none),
    exit a, exit b, exit op]; ``cfg[r]`` the portfolio settings (``C_*``); ``prm`` the
    execution model (``kernel_b.P_*``) for every run; ``capitals[r]`` the starting
    cash. Run 0 alone writes ``fills``, ``trades`` and ``positions`` when they have
    rows. Returns equity, traded notional, gross and net exposure (R, T), stats
    (R, ``kernel_b.N_STATS``) and the trade count ``n_rec[0]``.
    """
    n_runs = runs.shape[0]
    n_bars = valid.shape[1]
    equity = np.zeros((n_runs, n_bars))
    traded = np.zeros((n_runs, n_bars))
    gross = np.zeros((n_runs, n_bars))
    net = np.zeros((n_runs, n_bars))
    stats = np.zeros((n_runs, kb.N_STATS))
    n_rec = np.zeros(1, dtype=np.int64)
    none_f = np.empty((0, len(kb.FILL_FIELDS)))
    none_t = np.empty((0, len(TRADE_FIELDS)))
    none_p = np.empty((0, 0))
    for r in prange(n_runs):
        ru = runs[r]
        first = r == 0
        _run(m, valid, state, orders[ru[0]], counts[ru[0]], operands[ru[1]],
             operands[max(ru[2], 0)], ru[2] >= 0, operands[ru[3]], operands[ru[4]],
             int(ru[5]), cfg[r], prm, dt_years, capitals[r], equity[r], traded[r],
             gross[r], net[r], stats[r], fills if first else none_f,
             trades if first else none_t, n_rec, positions if first else none_p)
    return equity, traded, gross, net, stats, n_rec
