"""What engine A's batch costs the loop through the in-process executor: the spec
objects handed over as they are, against their JSON (what every chunk went as before:
each spec validated, parsed, canonicalized and hashed a second time).

Workload: the loop benchmark's (``bench_loop.py``): 2,000 candidates of its ``sma_band``
family (every 43rd point of its 87,174-point grid) on the bundled ``synth_100`` panel's search
window (the first 1,512 bars), fees 10 bps and slippage 5 bps, one worker in this
process. The specs are built before the clock starts, with their ids, as the loop's
generation leaves them. Both sides alternate, ``--repeats`` times each, after one
warm-up call each (numba cache warm); wall and CPU time per batch. The two sides'
metrics and returns are checked equal, bit for bit.

    .venv/bin/python benchmarks/bench_executor.py [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine_a import machine_info
from bench_loop import _add_band_family


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    from alphaloop.data.loaders import load_bars
    from alphaloop.engines.costs import CostModel
    from alphaloop.orchestrator.executors import LocalExecutor, backtest_all
    from alphaloop.strategy.templates import FAMILIES

    class ViaJson(LocalExecutor):
        """In this process, but the chunks go as JSON (the path before the change)."""

        @property
        def in_process(self) -> bool:
            return False

    _add_band_family()
    fam = FAMILIES["sma_band"]
    bars = load_bars("synth_100")
    points = list(itertools.islice(fam.grid(), 0, None, 43))[:2000]
    costs = CostModel(fees_bps=10, slippage_bps=5)
    sides = {"objects": LocalExecutor(1, bars), "json": ViaJson(1, bars)}

    def specs() -> list[Any]:
        built = [fam.build(p) for p in points]
        for s in built:
            _ = s.strategy_id  # as the loop's generation leaves them
        return built

    first = {name: backtest_all(ex, specs(), 1512, costs) for name, ex in sides.items()}
    pd.testing.assert_frame_equal(first["objects"][0], first["json"][0], check_exact=True)
    np.testing.assert_array_equal(first["objects"][1], first["json"][1])
    load = os.getloadavg()[0]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, ex in sides.items():
            batch = specs()
            wall, cpu = time.perf_counter(), time.process_time()
            backtest_all(ex, batch, 1512, costs)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    out: dict[str, Any] = {"machine": machine_info(peers=()), "candidates": len(points),
                           "load_before": load, "load_after": os.getloadavg()[0]}
    print(f"{len(points)} candidates × 1,512 bars × 100 symbols, one worker in this "
          f"process; load average {load:.2f} → {out['load_after']:.2f}")
    for name, got in times.items():
        walls, cpus = [w for w, _ in got], [c for _, c in got]
        out[name] = {"wall": walls, "cpu": cpus}
        print(f"  {name:8s} wall median {statistics.median(walls):.3f} s (best "
              f"{min(walls):.3f}), CPU median {statistics.median(cpus):.3f} s")
    ratio = statistics.median(w for w, _ in times["json"]) / statistics.median(
        w for w, _ in times["objects"])
    print(f"  JSON / objects, wall median: {ratio:.2f}×; results equal bit for bit")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
