"""The world risk guard's cost per paper bar as a paper run grows (issue 11 follow-up).

Two strategies of one world, with a world limit set, post ``--bars`` bar times each in
time order to ``RiskGuard.record_bar`` (in process, a fresh SQLite file, the service's
own durable commits). The guard checks the world's limits on every bar; it resumes from
its mark (``world_guard_marks``), so a bar's cost should not grow with the run.
``--no-mark`` makes every check sum from the reset instead, as before the marks.

    .venv/bin/python benchmarks/bench_world_guard.py [--bars 1000] [--no-mark]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1000, help="bar times per strategy")
    ap.add_argument("--no-mark", action="store_true")
    args = ap.parse_args(argv)

    from alphaloop.world import riskguard
    from alphaloop.world.db import Database
    from alphaloop.world.schemas import BarIn, WorldIn
    from alphaloop.world.service import WorldService

    if args.no_mark:
        riskguard._save_mark = lambda *a, **k: None  # type: ignore[assignment]
    work = Path(tempfile.mkdtemp(prefix="bench_world_guard_"))
    db = Database(f"sqlite:///{work / 'kb.sqlite'}")
    service = WorldService(db, work)
    service.create_world(WorldIn(world_id="w", policy={
        "risk_guard": {"world": {"max_drawdown": 0.9}}}), "op#1")
    guard = riskguard.RiskGuard(service)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    took: list[float] = []
    for i in range(args.bars):
        for sid in ("a" * 64, "b" * 64):
            bar = BarIn(strategy_id=sid, ts=start + timedelta(minutes=i),
                        equity=100.0 + i % 7, ret=0.001, gross=50.0)
            t0 = time.perf_counter()
            guard.record_bar("w", bar, "op#1")
            took.append(time.perf_counter() - t0)
    db.close()
    k = min(200, len(took))
    print(f"{args.bars} bar times x 2 strategies ({'no mark' if args.no_mark else 'marks'}): "
          f"first {k} posts {1000 * sum(took[:k]) / k:.2f} ms each, "
          f"last {k} {1000 * sum(took[-k:]) / k:.2f} ms each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
