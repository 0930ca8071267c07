"""Engine B's event-driven kernel (numba): arrays in, arrays out.

The panel is walked one bar at a time; within a bar every symbol is handled in
symbol order, in four phases (after phase 0 when the tradable set changed: symbols
that left are closed at their last close, and capital is re-split, as in engine A):

1. **overnight**: shorts held since the previous close pay borrow for the elapsed
   calendar time;
2. **the open**: orders decided at the previous close fill at the open: first
   every order that reduces or closes a position (so sells fund buys), then every
   order that opens, adds or rebalances. Each fill pays half the spread, impact
   and commission, takes at most ``max_participation`` of the average volume of the
   bars before (ADV; the rest is carried to later bars), is rounded down to whole
   lots, and an order that adds exposure is cut to keep gross exposure within
   ``max_leverage × equity``. A fill at t's open is sized and priced from t's open
   and earlier bars only: spread, impact and the volume cap never read bar t's
   high, low, close or volume;
3. **inside the bar**: stop loss, trailing stop, take profit and the ruin stop
   trigger on the bar's high/low, filling at the level or at the open when the
   open already gapped through it (:func:`kernel_a._protective_exit`);
4. **the close**: positions are marked, and the signals decide the next orders.

Capital is accounted in sleeves, one per symbol tradable at the time
(:mod:`alphaloop.engines.universe`), as in engine A: a position is sized from its own
sleeve's equity, and with every friction off engine B reproduces engine A's returns. The portfolio-level rules (leverage,
cash) look across sleeves.

All settings arrive in one float vector (indices ``P_*``), built by
:meth:`ExecutionModel.kernel_params` and :func:`strategy_params`. Several capital
levels run in parallel (the capacity curve); only level 0 records fills, orders,
trades and positions. Every order placed (a signal's, a rebalance, a triggered stop, a
position closed or resized because the universe changed) is counted in ``S_ORDERS``
and has one row in the orders ledger, and every fill belongs to one order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from alphaloop.engines.kernel_a import (
    EXIT_DATA,
    EXIT_DELISTED,
    EXIT_MAX_BARS,
    EXIT_REASONS,
    EXIT_SIGNAL,
    OPEN_AT_END,
    _book,
    _decide,
    _protective_exit,
    _record,
)
from alphaloop.engines.universe import LIVE, OUT

# execution parameters (ExecutionModel.kernel_params) then strategy parameters
(P_COMM, P_PER_SHARE, P_MIN_COMM, P_SPREAD_MODEL, P_SPREAD, P_IMPACT_K, P_MAX_PART, P_TTL,
 P_LOT, P_BORROW, P_MAX_LEV, P_REB_EVERY, P_REB_THRESH,
 P_DIRECTION, P_SL, P_TS, P_TP, P_MAX_BARS) = range(18)
N_PARAMS = 18

# market data rows of the (8, N, T) array ``m``: prices, volume, and what is known
# before the bar: the per-bar return std (impact), the average volume (ADV: the
# volume cap and impact) and the last bar's (high - low) / close (range spread)
M_O, M_H, M_L, M_C, M_V, M_SIGMA, M_ADV, M_RANGE = range(8)
N_MARKET = 8

# sleeve state rows of the (N_STATE, N) array ``s`` (ints and flags stored as floats)
# EQ_BEFORE: the trade's pnl baseline, moved by re-split transfers; EQ_ENTRY: the
# sleeve's equity at entry, which the trade's return is measured against
(CASH, QTY, ENTRY, EXTREME, EQ_BEFORE, HELD, MARK, ENTRY_BAR, RUIN_REACH, PEAK, USED,
 P_ON, P_TARGET, P_W, P_CLOSE, P_OPEN, P_FORCED, P_REB, P_REASON, P_AGE, P_ROW,
 EQ_ENTRY) = range(22)
N_STATE = 22  # P_ROW: the pending order's row in the orders ledger (-1: none)

# why a fill happened: the exit reasons of engine A, then entries and rebalances
REASON_ENTRY, REASON_REBALANCE, REASON_UNIVERSE = range(len(EXIT_REASONS),
                                                     len(EXIT_REASONS) + 3)
FILL_REASONS = (*EXIT_REASONS, "entry", "rebalance", "universe")
# fills ledger columns (one float64 row per fill)
FILL_FIELDS = ("bar", "symbol", "side", "qty", "price", "ref_price", "commission",
               "spread_cost", "impact_cost", "participation", "adv_util", "reason")
# orders ledger columns (one float64 row per order, in the order they were placed): the
# bar it was decided at (a stop: the bar it triggered in), symbol, side (+1 buy, -1
# sell, 0 not known yet: a rebalance, or a cross-sectional target, is sized at the
# open), the quantity asked (NaN until known; an entry is sized at the open it first
# fills at), the target weight (signed fraction of the sleeve's equity, or of the
# book's for a cross-sectional order; 0 for a close; NaN for a universe resize), the
# reason (FILL_REASONS), then its outcome: quantity filled, number of fills, the bar
# of its last fill and of its end (-1: none), and its status (ORDER_STATUSES)
ORDER_FIELDS = ("bar", "symbol", "side", "qty", "target_weight", "reason", "filled",
                "n_fills", "last_fill_bar", "end_bar", "status")
(O_BAR, O_SYMBOL, O_SIDE, O_QTY, O_WEIGHT, O_REASON, O_FILLED, O_NFILLS, O_LAST, O_END,
 O_STATUS) = range(11)
# pending: still working when the data ended; filled: every share asked; partial_cancelled:
# part filled, the rest cancelled (by a new decision, a stop, the TTL, the symbol
# leaving) or dropped (cut by the leverage cap, a best-effort resize the volume cap
# cut short); cancelled: nothing filled; no_trade: once sized, nothing to trade (a
# rebalance within its threshold, a target equal to the holding, a size under a lot)
ORDER_STATUSES = ("pending", "filled", "partial_cancelled", "cancelled", "no_trade")
ST_PENDING, ST_FILLED, ST_PARTIAL_CANCELLED, ST_CANCELLED, ST_NO_TRADE = range(5)
# per capital level: accumulated statistics (the first four as engine A's ``stats``)
STAT_FIELDS = ("n_trades", "n_wins", "gross_profit", "gross_loss", "commission",
               "spread_cost", "impact_cost", "borrow_cost", "filled_notional",
               "unfilled_notional", "n_orders", "n_fills", "n_partial", "n_clipped",
               "n_cancelled", "pending_at_end_notional", "ruined_bar")
(S_TRADES, S_WINS, S_GPROFIT, S_GLOSS, S_COMM, S_SPREAD, S_IMPACT, S_BORROW, S_FILLED,
 S_UNFILLED, S_ORDERS, S_FILLS, S_PARTIAL, S_CLIPPED, S_CANCELLED, S_PENDING_END,
 S_RUINED) = range(17)
N_STATS = 17


def strategy_params(params: np.ndarray, direction: int, stop_loss: float, trailing: float,
                    take_profit: float, max_bars: int) -> np.ndarray:
    """A copy of ``params`` with the spec's direction and risk settings (0 = off)."""
    out = params.copy()
    out[P_DIRECTION] = direction
    out[P_SL], out[P_TS], out[P_TP] = stop_loss, trailing, take_profit
    out[P_MAX_BARS] = max_bars
    return out


@njit(cache=True)
def _order(orders: np.ndarray, stats: np.ndarray, t: int, i: int, side: float, qty: float,
           weight: float, reason: int) -> float:
    """Place an order: counted in ``stats[S_ORDERS]``, whose value before is its row in
    the ledger (written when the ledger has room: level 0). Returns that row."""
    n = int(stats[S_ORDERS])
    if n < orders.shape[0]:
        row = orders[n]
        row[O_BAR], row[O_SYMBOL], row[O_SIDE], row[O_QTY] = t, i, side, qty
        row[O_WEIGHT], row[O_REASON], row[O_FILLED], row[O_NFILLS] = weight, reason, 0.0, 0.0
        row[O_LAST], row[O_END], row[O_STATUS] = -1.0, -1.0, ST_PENDING
    stats[S_ORDERS] = n + 1
    return float(n)


@njit(cache=True, inline="always")
def _order_sized(orders: np.ndarray, row: float, side: float, qty: float) -> None:
    """The order's side and (more) quantity, once known."""
    r = int(row)
    if 0 <= r < orders.shape[0]:
        if side != 0.0:
            orders[r, O_SIDE] = side
        q = orders[r, O_QTY]
        orders[r, O_QTY] = qty if np.isnan(q) else q + qty


@njit(cache=True, inline="always")
def _order_fill(orders: np.ndarray, row: float, t: int, q: float) -> None:
    r = int(row)
    if 0 <= r < orders.shape[0]:
        orders[r, O_FILLED] += q
        orders[r, O_NFILLS] += 1.0
        orders[r, O_LAST] = t


@njit(cache=True)
def _order_end(orders: np.ndarray, row: float, t: int, cancelled: bool) -> None:
    """The order is over at bar t: ``cancelled`` (replaced, expired, superseded) or
    done (nothing more to fill; a remainder the rules dropped makes it partial)."""
    r = int(row)
    if not 0 <= r < orders.shape[0] or orders[r, O_STATUS] != ST_PENDING:
        return
    o = orders[r]
    o[O_END] = t
    filled, asked = o[O_FILLED], o[O_QTY]
    if filled > 0.0:
        whole = not cancelled and not filled < asked * (1.0 - 1e-9)
        o[O_STATUS] = ST_FILLED if whole else ST_PARTIAL_CANCELLED
    elif cancelled or asked != 0.0:
        o[O_STATUS] = ST_CANCELLED
    else:
        o[O_STATUS] = ST_NO_TRADE


@njit(cache=True, inline="always")
def _end(s: np.ndarray, orders: np.ndarray, i: int, t: int, cancelled: bool) -> None:
    """Symbol i's pending order is over (see :func:`_order_end`)."""
    _order_end(orders, s[P_ROW, i], t, cancelled)
    s[P_ROW, i] = -1.0


@njit(cache=True)
def _execute(side: float, q: float, ref: float, rng: float, adv: float,
             sigma: float, prm: np.ndarray) -> tuple[float, float, float, float]:
    """Fill ``q`` shares on ``side`` (+1 buy, -1 sell) at reference price ``ref``:
    (price, commission, spread_cost, impact_cost), costs in currency. ``rng``, ``adv``
    and ``sigma`` are known before the fill's bar (``M_RANGE``, ``M_ADV``,
    ``M_SIGMA``); without an ADV the order is the whole market (participation 1)."""
    fixed = prm[P_SPREAD_MODEL] == 0.0
    half = prm[P_SPREAD] if fixed else 0.5 * prm[P_SPREAD] * rng
    if not half >= 0.0:  # no range known yet (NaN): the widest spread the model allows
        half = 0.5 * prm[P_SPREAD]
    part = q / adv if adv > 0 else 1.0
    imp = 0.0
    if prm[P_IMPACT_K] > 0.0 and sigma > 0.0:
        imp = prm[P_IMPACT_K] * sigma * math.sqrt(part)
    price = ref * (1.0 + side * (half + imp))
    comm = q * price * prm[P_COMM]
    if prm[P_PER_SHARE] > 0.0:
        comm += q * prm[P_PER_SHARE]
    if comm < prm[P_MIN_COMM]:
        comm = prm[P_MIN_COMM]
    return price, comm, q * ref * half, q * ref * imp


@njit(cache=True, inline="always")
def _round_lots(q: float, lot: float) -> float:
    if lot > 0.0:
        return math.floor(q / lot + 1e-9) * lot
    return q


@njit(cache=True)
def _entry_qty(budget: float, side: float, m: np.ndarray, i: int, t: int, ref: float,
               cap_q: float, prm: np.ndarray) -> float:
    """Shares that a position worth ``budget`` all-in (price, spread, impact and
    commission) buys at ``ref``, rounded down to lots. Impact grows with size, so the
    size is solved once without it and once more with the impact of that first
    (larger) size, which overstates the final size's impact: conservative."""
    if budget <= 0.0:
        return 0.0
    fee, per_share = prm[P_COMM], prm[P_PER_SHARE]
    rng, adv, sigma = m[M_RANGE, i, t], m[M_ADV, i, t], m[M_SIGMA, i, t]
    p, _, _, _ = _execute(side, 0.0, ref, rng, adv, 0.0, prm)
    q = budget / (p * (1.0 + fee) + per_share)
    if prm[P_IMPACT_K] > 0.0 and sigma > 0.0:
        p, _, _, _ = _execute(side, min(q, cap_q), ref, rng, adv, sigma, prm)
        q = budget / (p * (1.0 + fee) + per_share)
    if q * p * fee + q * per_share < prm[P_MIN_COMM]:  # the minimum commission binds
        q = max(budget - prm[P_MIN_COMM], 0.0) / p
    return _round_lots(q, prm[P_LOT])


@njit(cache=True)
def _fill(s: np.ndarray, m: np.ndarray, i: int, t: int, side: float, q: float, ref: float,
          reason: int, prm: np.ndarray, acct: np.ndarray, traded: np.ndarray,
          stats: np.ndarray, fills: np.ndarray, orders: np.ndarray) -> float:
    """Trade ``q`` shares of symbol ``i``: cash, costs, ledger. Returns the price.
    The caller updates the position (it knows whether this opens or closes)."""
    adv = m[M_ADV, i, t]
    price, comm, spc, imc = _execute(side, q, ref, m[M_RANGE, i, t], adv,
                                     m[M_SIGMA, i, t], prm)
    s[CASH, i] = s[CASH, i] + (-side * q) * price - comm
    traded[t] += q * price
    s[USED, i] += q
    stats[S_COMM] += comm
    stats[S_SPREAD] += spc
    stats[S_IMPACT] += imc
    stats[S_FILLED] += q * ref
    acct[0] -= comm + spc + imc  # equity at the open, for the leverage rule
    n = int(stats[S_FILLS])
    if n < fills.shape[0]:
        row = fills[n]
        row[0], row[1], row[2], row[3] = t, i, side, q
        row[4], row[5], row[6], row[7], row[8] = price, ref, comm, spc, imc
        vol = m[M_V, i, t]  # reported after the fact; no decision reads it
        row[9] = q / vol if vol > 0 else np.nan
        row[10] = q / adv if adv > 0 else np.nan
        row[11] = reason
    stats[S_FILLS] = n + 1
    _order_fill(orders, s[P_ROW, i], t, q)
    return price


@njit(cache=True)
def _close_trade(s: np.ndarray, i: int, t: int, price: float, reason: int,
                 stats: np.ndarray, trades: np.ndarray, n_rec: np.ndarray) -> None:
    """The position is flat again: book the trade's pnl (sleeve cash now less the
    sleeve's equity before the entry: every cost of the trade included)."""
    pnl = s[CASH, i] - s[EQ_BEFORE, i]
    _book(stats, pnl)
    if trades.shape[0] > 0:
        sign = 1.0 if s[QTY, i] > 0 else -1.0
        _record(trades, n_rec, i, int(s[ENTRY_BAR, i]), t, sign * s[PEAK, i],
                s[ENTRY, i], price, pnl, s[EQ_ENTRY, i], reason)
    s[QTY, i] = 0.0


@njit(cache=True)
def _cancel(s: np.ndarray, i: int, t: int, price: float, stats: np.ndarray,
            orders: np.ndarray) -> None:
    """Drop symbol ``i``'s pending order at bar t; what it had not filled is reported."""
    left = s[P_CLOSE, i]
    if not np.isnan(s[P_OPEN, i]):
        left += s[P_OPEN, i]
    stats[S_UNFILLED] += left * price
    stats[S_CANCELLED] += 1.0
    s[P_ON, i] = 0.0
    s[P_FORCED, i] = 0.0
    _end(s, orders, i, t, True)


@njit(cache=True)
def _cap(m: np.ndarray, i: int, t: int, max_part: float, lot: float) -> float:
    """Shares (whole lots) the volume cap allows in bar t in total: a share of the
    average volume before the bar (none without one)."""
    if max_part == math.inf:
        return math.inf
    v = m[M_ADV, i, t]
    return _round_lots(max_part * v, lot) if v > 0 else 0.0


@njit(cache=True)
def _close_leg(s: np.ndarray, m: np.ndarray, i: int, t: int, prm: np.ndarray,
               acct: np.ndarray, traded: np.ndarray, stats: np.ndarray, fills: np.ndarray,
               orders: np.ndarray,
               trades: np.ndarray, n_rec: np.ndarray) -> None:
    """The reducing part of a pending order, at the open."""
    ref = m[M_O, i, t]
    q = min(s[P_CLOSE, i], _cap(m, i, t, prm[P_MAX_PART], prm[P_LOT]) - s[USED, i])
    if q <= 0.0:
        return
    side = -1.0 if s[QTY, i] > 0 else 1.0
    full = q >= s[P_CLOSE, i]
    if full:
        q = s[P_CLOSE, i]
    reason = int(s[P_REASON, i])
    price = _fill(s, m, i, t, side, q, ref, reason, prm, acct, traded, stats, fills, orders)
    acct[1] -= q * ref
    if full:
        s[P_CLOSE, i] = 0.0
        _close_trade(s, i, t, price, reason, stats, trades, n_rec)
        if s[P_TARGET, i] == 0.0:
            s[P_ON, i] = 0.0
            s[P_FORCED, i] = 0.0
            _end(s, orders, i, t, False)
    else:
        s[QTY, i] += side * q
        s[P_CLOSE, i] -= q
        stats[S_PARTIAL] += 1.0


@njit(cache=True)
def _add(s: np.ndarray, m: np.ndarray, i: int, t: int, side: float, want: float,
         reason: int, prm: np.ndarray, acct: np.ndarray, traded: np.ndarray,
         stats: np.ndarray, fills: np.ndarray, orders: np.ndarray) -> float:
    """Buy (side +1) or short (side -1) up to ``want`` shares at the open, within the
    bar's volume and the leverage cap. Returns the shares filled."""
    ref = m[M_O, i, t]
    q = min(want, _cap(m, i, t, prm[P_MAX_PART], prm[P_LOT]) - s[USED, i])
    if q <= 0.0:
        return 0.0
    cash_before = s[CASH, i]
    price = _fill(s, m, i, t, side, q, ref, reason, prm, acct, traded, stats, fills, orders)
    acct[1] += q * ref
    if s[QTY, i] == 0.0:  # a new trade
        s[EQ_BEFORE, i] = cash_before
        s[EQ_ENTRY, i] = cash_before
        s[ENTRY, i] = price
        s[EXTREME, i] = price
        s[HELD, i] = 0.0
        s[ENTRY_BAR, i] = t
        s[PEAK, i] = q
        s[QTY, i] = side * q
        stats[S_TRADES] += 1.0
    else:
        held = abs(s[QTY, i])
        s[ENTRY, i] = (s[ENTRY, i] * held + price * q) / (held + q)
        s[QTY, i] += side * q
        s[PEAK, i] = max(s[PEAK, i], held + q)
    # equity cash + qty·p hits zero at p = -cash/qty: reachable for a short or on credit
    s[RUIN_REACH, i] = 1.0 if (s[QTY, i] < 0 or s[CASH, i] < 0) else 0.0
    return q


@njit(cache=True)
def _leverage_room(ref: float, prm: np.ndarray, acct: np.ndarray, stats: np.ndarray,
                   want: float) -> float:
    """``want`` cut so that gross exposure stays within max_leverage × equity."""
    if prm[P_MAX_LEV] == math.inf:
        return want
    room = _round_lots(max((prm[P_MAX_LEV] * acct[0] - acct[1]) / ref, 0.0), prm[P_LOT])
    if want > room:
        stats[S_CLIPPED] += 1.0
        stats[S_UNFILLED] += (want - room) * ref
        return room
    return want


@njit(cache=True)
def _open_leg(s: np.ndarray, m: np.ndarray, i: int, t: int, prm: np.ndarray,
              acct: np.ndarray, traded: np.ndarray, stats: np.ndarray,
              fills: np.ndarray, orders: np.ndarray) -> None:
    """The opening part of a pending order (after any closing part), at the open."""
    ref = m[M_O, i, t]
    if s[P_REB, i] > 0.0:
        _rebalance(s, m, i, t, prm, acct, traded, stats, fills, orders)
        return
    target = s[P_TARGET, i]
    if target == 0.0:
        s[P_ON, i] = 0.0
        _end(s, orders, i, t, False)
        return
    if np.isnan(s[P_OPEN, i]):  # size now, from the (flat) sleeve's equity: its cash
        cap_q = _cap(m, i, t, prm[P_MAX_PART], prm[P_LOT])
        q = 0.0
        if s[CASH, i] > 0 and s[P_W, i] > 0:
            q = _entry_qty(s[P_W, i] * s[CASH, i], target, m, i, t, ref, cap_q, prm)
        _order_sized(orders, s[P_ROW, i], target, q)
        s[P_OPEN, i] = _leverage_room(ref, prm, acct, stats, q)
        if s[P_OPEN, i] <= 0.0:
            s[P_ON, i] = 0.0
            _end(s, orders, i, t, False)
            return
    else:
        s[P_OPEN, i] = _leverage_room(ref, prm, acct, stats, s[P_OPEN, i])
    q = _add(s, m, i, t, target, s[P_OPEN, i], REASON_ENTRY, prm, acct, traded, stats, fills,
             orders)
    s[P_OPEN, i] -= q
    if s[P_OPEN, i] <= 0.0:
        s[P_ON, i] = 0.0
        _end(s, orders, i, t, False)
    elif q > 0.0:
        stats[S_PARTIAL] += 1.0


@njit(cache=True)
def _rebalance(s: np.ndarray, m: np.ndarray, i: int, t: int, prm: np.ndarray,
               acct: np.ndarray, traded: np.ndarray, stats: np.ndarray,
               fills: np.ndarray, orders: np.ndarray) -> None:
    """Resize a held position to its sizing target when it drifted past the
    threshold. Best effort within the bar: a remainder is reported, not carried."""
    s[P_ON, i] = 0.0
    held = abs(s[QTY, i])
    if held == 0.0:
        _order_sized(orders, s[P_ROW, i], 0.0, 0.0)
        _end(s, orders, i, t, False)
        return
    ref = m[M_O, i, t]
    side = 1.0 if s[QTY, i] > 0 else -1.0
    budget = s[P_W, i] * (s[CASH, i] + s[QTY, i] * ref)
    goal = _entry_qty(budget, side, m, i, t, ref, _cap(m, i, t, prm[P_MAX_PART], prm[P_LOT]), prm)
    delta = goal - held
    if goal <= 0.0 or abs(delta) <= prm[P_REB_THRESH] * goal:
        _order_sized(orders, s[P_ROW, i], 0.0, 0.0)
        _end(s, orders, i, t, False)
        return
    if delta > 0:
        _order_sized(orders, s[P_ROW, i], side, delta)
        want = _leverage_room(ref, prm, acct, stats, delta)
        q = _add(s, m, i, t, side, want, REASON_REBALANCE, prm, acct, traded, stats, fills,
                 orders)
        stats[S_UNFILLED] += (want - q) * ref
        _end(s, orders, i, t, False)
        return
    _order_sized(orders, s[P_ROW, i], -side, -delta)
    q = min(-delta, _cap(m, i, t, prm[P_MAX_PART], prm[P_LOT]) - s[USED, i])
    q = min(_round_lots(q, prm[P_LOT]), held)
    if q > 0.0:
        _fill(s, m, i, t, -side, q, ref, REASON_REBALANCE, prm, acct, traded, stats, fills,
              orders)
        acct[1] -= q * ref
        s[QTY, i] -= side * q
    stats[S_UNFILLED] += (-delta - q) * ref
    _end(s, orders, i, t, False)


@njit(cache=True)
def _protect(s: np.ndarray, m: np.ndarray, i: int, t: int, prm: np.ndarray,
             acct: np.ndarray, traded: np.ndarray, stats: np.ndarray, fills: np.ndarray,
             orders: np.ndarray,
             trades: np.ndarray, n_rec: np.ndarray) -> None:
    """Stops and take-profit inside bar t. A fill the volume cap cuts short leaves a
    forced close for the next opens, which signals cannot cancel."""
    pos = 1 if s[QTY, i] > 0 else -1
    raw, why = _protective_exit(pos, m[M_O, i, t], m[M_H, i, t], m[M_L, i, t], s[ENTRY, i],
                                s[EXTREME, i], prm[P_SL], prm[P_TS], prm[P_TP],
                                -s[CASH, i] / s[QTY, i])
    if np.isnan(raw):
        if pos > 0:
            s[EXTREME, i] = max(s[EXTREME, i], m[M_H, i, t])
        else:
            s[EXTREME, i] = min(s[EXTREME, i], m[M_L, i, t])
        return
    held = abs(s[QTY, i])
    # the resting stop/limit order that just triggered
    row = _order(orders, stats, t, i, -float(pos), held, 0.0, why)
    if s[P_ON, i] > 0.0:  # the stop supersedes a pending order; the rest of an
        # entry still filling is reported (a pending close is taken over by the stop)
        if not np.isnan(s[P_OPEN, i]) and s[P_OPEN, i] > 0.0:
            stats[S_UNFILLED] += s[P_OPEN, i] * raw
            stats[S_CANCELLED] += 1.0
        s[P_ON, i], s[P_FORCED, i] = 0.0, 0.0
        _end(s, orders, i, t, True)
    s[P_ROW, i] = row
    q = min(held, _cap(m, i, t, prm[P_MAX_PART], prm[P_LOT]) - s[USED, i])
    if q > 0.0:
        side = -float(pos)
        price = _fill(s, m, i, t, side, q, raw, why, prm, acct, traded, stats, fills, orders)
        if q >= held:
            _close_trade(s, i, t, price, why, stats, trades, n_rec)
            _end(s, orders, i, t, False)
            return
        s[QTY, i] += side * q
        stats[S_PARTIAL] += 1.0
    s[P_ON, i], s[P_TARGET, i], s[P_CLOSE, i], s[P_OPEN, i] = 1.0, 0.0, held - q, np.nan
    s[P_FORCED, i], s[P_REB, i], s[P_REASON, i], s[P_AGE, i] = 1.0, 0.0, why, 0.0


@njit(cache=True)
def _decide_next(s: np.ndarray, i: int, t: int, n_bars: int, en: bool, ex: bool,
                 w: float, price: float, prm: np.ndarray, stats: np.ndarray,
                 orders: np.ndarray) -> None:
    """At bar t's close: the signals decide symbol i's order for the next open."""
    if s[P_FORCED, i] > 0.0:  # a stop is still closing the position
        return
    qty = s[QTY, i]
    pos = 1 if qty > 0 else (-1 if qty < 0 else 0)
    held = int(s[HELD, i])
    want = _decide(pos, en, ex, int(prm[P_DIRECTION]), held, int(prm[P_MAX_BARS]))
    if s[P_ON, i] > 0.0:  # an order carried from an earlier bar
        if s[P_TARGET, i] == want:
            s[P_AGE, i] += 1.0
            ttl = prm[P_TTL]
            if ttl > 0 and s[P_AGE, i] >= ttl:
                _cancel(s, i, t, price, stats, orders)
            return
        _cancel(s, i, t, price, stats, orders)  # the signals no longer ask for it
    if t + 1 >= n_bars:
        return
    if want != pos:
        s[P_ON, i], s[P_TARGET, i], s[P_W, i] = 1.0, want, (0.0 if np.isnan(w) else w)
        s[P_CLOSE, i] = abs(qty)
        s[P_OPEN, i], s[P_FORCED, i], s[P_REB, i], s[P_AGE, i] = np.nan, 0.0, 0.0, 0.0
        s[P_REASON, i] = EXIT_MAX_BARS if (want == 0 and not ex) else EXIT_SIGNAL
        # the close part is known now, an opening part once sized at the open
        s[P_ROW, i] = _order(orders, stats, t, i, 1.0 if want > pos else -1.0,
                             abs(qty) if qty != 0.0 else np.nan, want * s[P_W, i],
                             REASON_ENTRY if want != 0 else int(s[P_REASON, i]))
    elif prm[P_REB_EVERY] > 0 and pos != 0 and held % int(prm[P_REB_EVERY]) == 0:
        s[P_ON, i], s[P_TARGET, i], s[P_W, i] = 1.0, pos, (0.0 if np.isnan(w) else w)
        s[P_CLOSE, i], s[P_OPEN, i], s[P_FORCED, i] = 0.0, np.nan, 0.0
        s[P_REB, i], s[P_REASON, i], s[P_AGE, i] = 1.0, REASON_REBALANCE, 0.0
        s[P_ROW, i] = _order(orders, stats, t, i, 0.0, np.nan, pos * s[P_W, i],
                             REASON_REBALANCE)


@njit(cache=True)
def _finish(s: np.ndarray, stats: np.ndarray, trades: np.ndarray, n_rec: np.ndarray) -> None:
    """End of data: open trades are valued at the last close with no exit cost, as
    the equity curve values them (as in engine A); orders still pending are reported."""
    for i in range(s.shape[1]):
        if s[P_ON, i] > 0.0:
            left = s[P_CLOSE, i] + (0.0 if np.isnan(s[P_OPEN, i]) else s[P_OPEN, i])
            stats[S_PENDING_END] += left * s[MARK, i]
        if s[QTY, i] == 0.0:
            continue
        pnl = s[CASH, i] + s[QTY, i] * s[MARK, i] - s[EQ_BEFORE, i]
        _book(stats, pnl)
        if trades.shape[0] > 0:
            sign = 1.0 if s[QTY, i] > 0 else -1.0
            _record(trades, n_rec, i, int(s[ENTRY_BAR, i]), -1, sign * s[PEAK, i],
                    s[ENTRY, i], s[MARK, i], pnl, s[EQ_ENTRY, i], OPEN_AT_END)


@njit(cache=True)
def _leave(s: np.ndarray, m: np.ndarray, state: np.ndarray, t: int, prm: np.ndarray,
           acct: np.ndarray, traded: np.ndarray, stats: np.ndarray, fills: np.ndarray,
           orders: np.ndarray,
           trades: np.ndarray, n_rec: np.ndarray) -> None:
    """Phase 0: a symbol that left the universe at t (delisted, or excluded by the
    data gate) has its order cancelled and its position closed at its last close,
    with costs and no volume cap (there is no later bar to carry a remainder to)."""
    for i in range(s.shape[1]):
        if state[i, t - 1] != LIVE or state[i, t] == LIVE:
            continue
        if s[P_ON, i] > 0.0:
            _cancel(s, i, t, s[MARK, i], stats, orders)
        held = abs(s[QTY, i])
        if held == 0.0:
            continue
        why = EXIT_DELISTED if state[i, t] == OUT else EXIT_DATA
        side = -1.0 if s[QTY, i] > 0 else 1.0
        s[P_ROW, i] = _order(orders, stats, t, i, side, held, 0.0, why)
        price = _fill(s, m, i, t, side, held, s[MARK, i], why, prm, acct, traded, stats,
                      fills, orders)
        _close_trade(s, i, t, price, why, stats, trades, n_rec)
        _end(s, orders, i, t, False)


@njit(cache=True)
def _worth(s: np.ndarray, m: np.ndarray, valid: np.ndarray, i: int, t: int) -> float:
    """Symbol i's position at t's open, or at its last close when it has no bar."""
    if s[QTY, i] == 0.0:
        return 0.0
    return s[QTY, i] * (m[M_O, i, t] if valid[i, t] else s[MARK, i])


@njit(cache=True)
def _reallocate(s: np.ndarray, m: np.ndarray, valid: np.ndarray, alloc: np.ndarray,
                t: int, pool: float, prm: np.ndarray, acct: np.ndarray,
                traded: np.ndarray, stats: np.ndarray, fills: np.ndarray,
                orders: np.ndarray) -> float:
    """Split equity equally among the allocation set at t's open (the rule of
    :func:`kernel_a._reallocate`): held positions with a bar and no pending order
    are resized in proportion, within the volume cap and whole lots (best effort:
    what the cap leaves is not carried), then cash moves so that every sleeve is
    worth the same. Returns the cash left unallocated."""
    n_sym = s.shape[1]
    n = 0
    total = pool
    for i in range(n_sym):
        total += s[CASH, i] + _worth(s, m, valid, i, t)
        n += 1 if alloc[i, t] else 0
    if n == 0:
        s[CASH] = 0.0
        return total
    target = total / n
    for i in range(n_sym):
        if not (alloc[i, t] and valid[i, t] and s[QTY, i] != 0.0 and s[P_ON, i] == 0.0):
            continue
        ref = m[M_O, i, t]
        worth = s[CASH, i] + s[QTY, i] * ref
        if worth <= 0.0:
            continue
        held = abs(s[QTY, i])
        room = _cap(m, i, t, prm[P_MAX_PART], prm[P_LOT]) - s[USED, i]
        need = abs(held * (target / worth - 1.0))
        q = _round_lots(min(need, room), prm[P_LOT])
        if q <= 0.0:
            continue
        side = 1.0 if s[QTY, i] > 0 else -1.0
        if target < worth:  # shrink: trade against the position
            side = -side
        # an order (asked: the whole resize, in lots) that fills what the cap allows
        s[P_ROW, i] = _order(orders, stats, t, i, side, max(_round_lots(need, prm[P_LOT]), q),
                             np.nan, REASON_UNIVERSE)
        _fill(s, m, i, t, side, q, ref, REASON_UNIVERSE, prm, acct, traded, stats, fills,
              orders)
        _end(s, orders, i, t, False)
        s[QTY, i] += side * q
        s[PEAK, i] = max(s[PEAK, i], abs(s[QTY, i]))
    total = pool  # again, after the costs of resizing
    for i in range(n_sym):
        total += s[CASH, i] + _worth(s, m, valid, i, t)
    share = total / n
    for i in range(n_sym):
        cash = share - _worth(s, m, valid, i, t) if alloc[i, t] else 0.0
        s[EQ_BEFORE, i] += cash - s[CASH, i]  # a transfer is not the trade's profit
        s[CASH, i] = cash
        if s[QTY, i] != 0.0:
            s[RUIN_REACH, i] = 1.0 if (s[QTY, i] < 0 or cash < 0) else 0.0
    return 0.0


@njit(cache=True)
def _run(m: np.ndarray, valid: np.ndarray, state: np.ndarray, alloc: np.ndarray,
         reallocate: np.ndarray, en: np.ndarray, ex: np.ndarray,
         size: np.ndarray, use_size: bool, dt_years: np.ndarray, prm: np.ndarray,
         capital: float, equity: np.ndarray, traded: np.ndarray, gross: np.ndarray,
         stats: np.ndarray, fills: np.ndarray, orders: np.ndarray, trades: np.ndarray,
         n_rec: np.ndarray,
         positions: np.ndarray) -> None:
    """One capital level over the whole panel (phases in the module docstring)."""
    n_sym, n_bars = valid.shape
    s = np.zeros((N_STATE, n_sym))
    s[MARK] = np.nan
    s[P_OPEN] = np.nan
    s[P_ROW] = -1.0
    pool = capital  # cash not allocated to a sleeve yet
    acct = np.zeros(2)  # equity and gross exposure at the open
    protective = prm[P_SL] > 0 or prm[P_TS] > 0 or prm[P_TP] > 0
    keep_pos = positions.shape[0] > 0
    stats[S_RUINED] = -1.0
    for t in range(n_bars):
        s[USED] = 0.0
        if prm[P_BORROW] > 0.0 and t > 0:  # 1. overnight borrow on shorts
            for i in range(n_sym):
                if s[QTY, i] < 0.0:
                    cost = prm[P_BORROW] * dt_years[t] * (-s[QTY, i]) * s[MARK, i]
                    s[CASH, i] -= cost
                    stats[S_BORROW] += cost
        if t > 0:  # 0. the universe: leavers close, capital is re-split
            _leave(s, m, state, t, prm, acct, traded, stats, fills, orders, trades, n_rec)
            if reallocate[t]:
                pool = _reallocate(s, m, valid, alloc, t, pool, prm, acct, traded, stats,
                                   fills, orders)
        if prm[P_MAX_LEV] < math.inf:
            acct[:] = 0.0
            acct[0] = pool
            for i in range(n_sym):
                px = m[M_O, i, t] if valid[i, t] else s[MARK, i]
                acct[0] += s[CASH, i]
                if s[QTY, i] != 0.0:
                    acct[0] += s[QTY, i] * px
                    acct[1] += abs(s[QTY, i]) * px
        for i in range(n_sym):  # 2a. the open: reductions first (sells fund buys)
            if (valid[i, t] and state[i, t] == LIVE and s[P_ON, i] > 0.0
                    and s[P_CLOSE, i] > 0.0):
                _close_leg(s, m, i, t, prm, acct, traded, stats, fills, orders, trades, n_rec)
        for i in range(n_sym):  # 2b. then openings, additions and rebalances
            if (valid[i, t] and state[i, t] == LIVE and s[P_ON, i] > 0.0
                    and s[P_CLOSE, i] == 0.0):
                _open_leg(s, m, i, t, prm, acct, traded, stats, fills, orders)
        eq_t, gross_t = pool, 0.0
        for i in range(n_sym):
            qty = s[QTY, i]
            if not valid[i, t] or state[i, t] != LIVE:  # no bar: hold, marked at the
                value = qty * s[MARK, i] if qty != 0.0 else 0.0  # last known close
                eq_t += s[CASH, i] + value
                gross_t += abs(value)
                if keep_pos:
                    positions[i, t] = qty
                continue
            if qty != 0.0 and (protective or s[RUIN_REACH, i] > 0.0):  # 3. inside the bar
                _protect(s, m, i, t, prm, acct, traded, stats, fills, orders, trades, n_rec)
                qty = s[QTY, i]
            ct = m[M_C, i, t]  # 4. the close
            s[MARK, i] = ct
            if qty != 0.0:
                value = qty * ct
                eq_t += s[CASH, i] + value
                gross_t += abs(value)
                s[HELD, i] += 1.0
            else:
                eq_t += s[CASH, i]
            if keep_pos:
                positions[i, t] = qty
            _decide_next(s, i, t, n_bars, en[i, t], ex[i, t],
                         size[i, t] if use_size else 1.0, ct, prm, stats, orders)
        equity[t] = eq_t
        gross[t] = gross_t
        if eq_t <= 0.0:  # ruined: nothing is left to trade with
            stats[S_RUINED] = t
            equity[t + 1:] = 0.0
            return
    _finish(s, stats, trades, n_rec)


@njit(cache=True, parallel=True)
def simulate(m: np.ndarray, valid: np.ndarray, state: np.ndarray, alloc: np.ndarray,
             reallocate: np.ndarray, en: np.ndarray, ex: np.ndarray,
             size: np.ndarray, use_size: bool, dt_years: np.ndarray, prm: np.ndarray,
             capitals: np.ndarray, fills: np.ndarray, orders: np.ndarray, trades: np.ndarray,
             positions: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run one strategy at each of ``capitals`` (in parallel).

    ``m`` is the (N_MARKET, N, T) market array, ``valid`` (N, T) marks bars with all
    of OHLC, ``state``/``alloc``/``reallocate`` are the universe
    (:class:`alphaloop.engines.universe.Universe`), ``en``/``ex`` (N, T) are the entry/exit signals at each close, ``size``
    (N, T) the sleeve fraction (read when ``use_size``), ``dt_years`` (T,) the
    calendar time since the previous bar (ACT/365). Level 0 writes ``fills`` rows
    (:data:`FILL_FIELDS`), ``orders`` rows (:data:`ORDER_FIELDS`), ``trades`` rows
    (``kernel_a.TRADE_FIELDS``) and ``positions`` (N, T) as far as they have room;
    ``stats[k, S_FILLS]``, ``stats[k, S_ORDERS]`` and ``stats[k, S_TRADES]`` say how
    many rows were needed.
    Returns equity (C, T), traded notional (C, T), gross exposure (C, T),
    stats (C, N_STATS) and the trade-row count ``n_rec``.
    """
    n_cap = capitals.shape[0]
    n_bars = valid.shape[1]
    equity = np.zeros((n_cap, n_bars))
    traded = np.zeros((n_cap, n_bars))
    gross = np.zeros((n_cap, n_bars))
    stats = np.zeros((n_cap, N_STATS))
    n_rec = np.zeros(1, dtype=np.int64)
    for k in prange(n_cap):
        if k == 0:
            _run(m, valid, state, alloc, reallocate, en, ex, size, use_size, dt_years, prm,
                 capitals[k], equity[k], traded[k], gross[k], stats[k], fills, orders, trades,
                 n_rec,
                 positions)
        else:
            _run(m, valid, state, alloc, reallocate, en, ex, size, use_size, dt_years, prm,
                 capitals[k], equity[k], traded[k], gross[k], stats[k],
                 np.empty((0, fills.shape[1])), np.empty((0, orders.shape[1])),
                 np.empty((0, trades.shape[1])), np.zeros(1, dtype=np.int64),
                 np.empty((0, 0)))
    return equity, traded, gross, stats, n_rec
