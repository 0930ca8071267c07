"""``python _count_engines.py LOG alphaloop-args...``: the ``alphaloop`` CLI in this
process, with the engines' entry points the loop calls wrapped so that every
simulation of a strategy appends one JSON line to LOG: the engine, the data it ran on
(``data_ref`` of the bars) and the strategy id. What a process really backtested,
seen from outside the code under test (claims, KB records)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from alphaloop.orchestrator import executors, stages

LOG = open(sys.argv[1], "a", encoding="utf-8")  # noqa: SIM115 (open for the process)


def _note(engine: str, bars: Any, specs: Any) -> None:
    for spec in specs:
        LOG.write(json.dumps({"engine": engine, "data_ref": bars.data_ref,
                              "strategy_id": spec.strategy_id}) + "\n")
    LOG.flush()


def _counted_batch(fn: Any) -> Any:
    def run_batch(specs: Any, bars: Any, *args: Any, **kwargs: Any) -> Any:
        _note("A", bars, specs)
        return fn(specs, bars, *args, **kwargs)
    return run_batch


def _counted_verify(fn: Any) -> Any:
    def verify(spec: Any, bars: Any, *args: Any, **kwargs: Any) -> Any:
        _note("B", bars, [spec])
        return fn(spec, bars, *args, **kwargs)
    return verify


executors.run_batch = _counted_batch(executors.run_batch)  # type: ignore[assignment]
stages.run_batch = _counted_batch(stages.run_batch)  # type: ignore[assignment]
stages.verify = _counted_verify(stages.verify)  # type: ignore[assignment]

if __name__ == "__main__":
    from alphaloop._console import main

    go = os.environ.get("COUNT_ENGINES_GO")
    if go:
        # start together with the test's other processes: every import done, each says
        # it is ready and waits for the go file, so that runs meant to be concurrent
        # are created before either stores an iteration (an earlier trial of the other)
        import alphaloop.cli.run
        import alphaloop.orchestrator.runner  # noqa: F401

        Path(sys.argv[1] + ".ready").touch()
        while not Path(go).exists():
            time.sleep(0.005)
    sys.argv = ["alphaloop", *sys.argv[2:]]
    main()
