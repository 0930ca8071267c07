"""Engine A's simulation kernel (numba): arrays in, arrays out.

One *sleeve* per (candidate, symbol): the portfolio starts with capital 1.0 split
equally over the N symbols, and each sleeve trades its symbol with its own cash.
Portfolio equity is the sum of sleeve equities, so symbols never borrow from each
other and a symbol that has no bars yet simply holds cash (no survivorship trick).

Timeline of a bar ``t`` for one sleeve:

1. an order decided at ``t-1``'s close fills at ``t``'s open (slippage against
   the trader, commission on filled notional);
2. protective exits (stop loss, trailing stop, take profit) trigger on the bar's
   low/high; when the open is already beyond the level (a gap) the fill is the
   open, otherwise the level. If a stop and a take-profit both fall inside the bar
   the stop is assumed first (conservative);
3. the sleeve is marked to the close;
4. the entry/exit signals at ``t``'s close decide the order for ``t+1``.

Positions are sized so that notional plus commission equals the sleeve's equity
times the size fraction (``q = w·E / (p·(1+fee))``), as an all-in broker order would.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

LONG, SHORT, BOTH = 1, -1, 0


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
                     sl: float, ts: float, tp: float) -> float:
    """Raw exit price if a stop/take-profit triggers inside the bar, else NaN.

    ``extreme`` is the best price since entry from *previous* bars (highest high for a
    long, lowest low for a short), so the trailing level never peeks inside the bar.
    """
    if pos > 0:
        stop = -np.inf
        if sl > 0:
            stop = entry * (1.0 - sl)
        if ts > 0:
            stop = max(stop, extreme * (1.0 - ts))
        if o <= stop:
            return o
        if lo <= stop:
            return stop
        if tp > 0:
            target = entry * (1.0 + tp)
            if o >= target:
                return o
            if h >= target:
                return target
        return np.nan
    stop = np.inf
    if sl > 0:
        stop = entry * (1.0 + sl)
    if ts > 0:
        stop = min(stop, extreme * (1.0 + ts))
    if o >= stop:
        return o
    if h >= stop:
        return stop
    if tp > 0 and tp < 1:
        target = entry * (1.0 - tp)
        if o <= target:
            return o
        if lo <= target:
            return target
    return np.nan


@njit(cache=True)
def _sleeve(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
            en: np.ndarray, ex: np.ndarray, size: np.ndarray, use_size: bool,
            direction: int, sl: float, ts: float, tp: float, max_bars: int,
            fee: float, slip: float, capital: float,
            equity: np.ndarray, traded: np.ndarray, gross: np.ndarray,
            stats: np.ndarray) -> None:
    """Simulate one symbol's sleeve, adding its equity, traded notional and gross
    exposure into the candidate's rows. ``stats`` accumulates
    [n_trades, n_wins, gross_profit, gross_loss]."""
    n_bars = c.shape[0]
    cash = capital
    qty = 0.0
    pos = 0
    entry = 0.0
    extreme = 0.0
    eq_before = 0.0
    held = 0
    pending = False
    target = 0
    w_next = 1.0
    mark = np.nan
    for t in range(n_bars):
        ot, ht, lt, ct = o[t], h[t], lo[t], c[t]
        if np.isnan(ot) or np.isnan(ht) or np.isnan(lt) or np.isnan(ct):
            # no bar: hold, marked at the last known close; orders wait for a bar
            value = qty * mark if qty != 0.0 else 0.0
            equity[t] += cash + value
            gross[t] += abs(value)
            continue
        if pending:
            pending = False
            if pos != 0:  # close at the open
                p = ot * (1.0 - slip) if pos > 0 else ot * (1.0 + slip)
                cash, traded[t] = _close(cash, qty, p, fee, traded[t])
                _book(stats, cash - eq_before)
                qty = 0.0
                pos = 0
            if target != 0 and cash > 0 and w_next > 0:
                p = ot * (1.0 + slip) if target > 0 else ot * (1.0 - slip)
                q = w_next * cash / (p * (1.0 + fee))
                eq_before = cash
                cash -= target * q * p + q * p * fee
                qty = target * q
                traded[t] += q * p
                pos = target
                entry = p
                extreme = p
                held = 0
                stats[0] += 1.0
        if pos != 0 and (sl > 0 or ts > 0 or tp > 0):
            raw = _protective_exit(pos, ot, ht, lt, entry, extreme, sl, ts, tp)
            if not np.isnan(raw):
                p = raw * (1.0 - slip) if pos > 0 else raw * (1.0 + slip)
                cash, traded[t] = _close(cash, qty, p, fee, traded[t])
                _book(stats, cash - eq_before)
                qty = 0.0
                pos = 0
            elif pos > 0:
                extreme = max(extreme, ht)
            else:
                extreme = min(extreme, lt)
        value = qty * ct
        equity[t] += cash + value
        gross[t] += abs(value)
        mark = ct
        if pos != 0:
            held += 1
        want = _decide(pos, en[t], ex[t], direction, held, max_bars)
        if want != pos and t + 1 < n_bars:
            pending = True
            target = want
            w_next = size[t] if use_size else 1.0
            if np.isnan(w_next):
                w_next = 0.0
    if pos != 0:  # the open trade counts, valued at the last close less the exit fee
        value = qty * mark
        _book(stats, cash + value - abs(value) * fee - eq_before)


@njit(cache=True, inline="always")
def _close(cash: float, qty: float, p: float, fee: float, traded: float) -> tuple[float, float]:
    notional = abs(qty) * p
    return cash + qty * p - notional * fee, traded + notional


@njit(cache=True, inline="always")
def _book(stats: np.ndarray, pnl: float) -> None:
    if pnl > 0:
        stats[1] += 1.0
        stats[2] += pnl
    else:
        stats[3] -= pnl


@njit(cache=True, parallel=True)
def simulate_batch(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                   entries: np.ndarray, exits: np.ndarray, direction: np.ndarray,
                   stop_loss: np.ndarray, trailing: np.ndarray, take_profit: np.ndarray,
                   max_bars: np.ndarray, size_idx: np.ndarray, sizes: np.ndarray,
                   fee: float, slip: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simulate K candidates over an (N, T) panel.

    entries/exits: (K, N, T) booleans; per-candidate arrays have length K (0 = off);
    ``size_idx[k]`` selects a (N, T) slice of ``sizes`` (fraction of the sleeve to
    use, decided at the signal bar) or -1 for the whole sleeve.
    Returns equity (K, T), traded notional (K, T), gross exposure (K, T) and
    stats (K, 4) = [n_trades, n_wins, gross_profit, gross_loss].
    """
    n_cand = entries.shape[0]
    n_sym, n_bars = c.shape
    equity = np.zeros((n_cand, n_bars))
    traded = np.zeros((n_cand, n_bars))
    gross = np.zeros((n_cand, n_bars))
    stats = np.zeros((n_cand, 4))
    capital = 1.0 / n_sym
    for k in prange(n_cand):
        si = size_idx[k]
        for i in range(n_sym):
            size = sizes[si, i] if si >= 0 else sizes[0, 0]
            _sleeve(o[i], h[i], lo[i], c[i], entries[k, i], exits[k, i], size, si >= 0,
                    direction[k], stop_loss[k], trailing[k], take_profit[k], max_bars[k],
                    fee, slip, capital, equity[k], traded[k], gross[k], stats[k])
    return equity, traded, gross, stats
