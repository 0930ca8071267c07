"""One constraint update on a long run's observations (issue 10, the learner's cost).

A run's learner re-learns from every observation so far at each iteration, so its cost
grows with the run. This script times one update (:func:`alphaloop.research.learning.learn`
with the run's :class:`RowCache`, 2,000 new observations on top of N) for N up to
300,000 synthetic observations of one family (sma_cross, three failure codes and a
planted TOO_FEW_TRADES region; 2,000 an iteration), the median of 5 updates; then the
same with two of the run's early rules expired at iteration 100 (their evidence from
before that is left out of learning, :meth:`RowCache.usable`). A night's run of 2,000
candidates an iteration reaches 300,000 observations at iteration 150.

    .venv/bin/python benchmarks/bench_learn_update.py
"""

from __future__ import annotations

import random
import statistics
import time

from alphaloop.research.learning import LearningConfig, Observation, RowCache, learn
from alphaloop.strategy.templates import get_family

CODES = ["TOO_FEW_TRADES", "LOW_SHARPE", "COST_DOMINATED", ""]


def observations(n: int, rng: random.Random) -> list[Observation]:
    family = get_family("sma_cross")
    grid = list(family.grid())
    out = []
    for _ in range(n):
        p = rng.choice(grid)
        code = ("TOO_FEW_TRADES" if p["slow"] > 150 and rng.random() < 0.8
                else rng.choice(CODES))
        out.append(Observation(family="sma_cross", params=p, codes=(code,) if code else (),
                               iteration=len(out) // 2_000 + 1))
    return out


def main() -> int:
    families = {"sma_cross": get_family("sma_cross")}
    cfg = LearningConfig(skip_codes=("DATA_FAILURE",))
    print("observations  one update (median of 5, s)  the same with 2 expired rules")
    for total in (20_000, 100_000, 300_000):
        rng = random.Random(1)
        obs = observations(total + 5 * 2_000, rng)
        # rules learned early in the run, expired at its iteration 100 (2,000 a round):
        # the evidence inside them from before that is left out of learning
        expired = [r.model_copy(update={"status": "expired", "expired_at_iteration": 100})
                   for r in learn(obs[:total // 3], families, config=cfg)[:2]]
        row = [f"{total:>12,}"]
        for retired in ([], expired):
            cache = RowCache()
            learn(obs[:total - 2_000], families, config=cfg, cache=cache, retired=retired)
            times = []
            for k in range(5):
                upto = total + k * 2_000
                t0 = time.perf_counter()
                learn(obs[:upto], families, config=cfg, cache=cache, retired=retired)
                times.append(time.perf_counter() - t0)
            row.append(f"{statistics.median(times):.3f}")
        print("  ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
