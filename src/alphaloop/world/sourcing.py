"""Metric sourcing (seed §3): what the service fills in when a request has no metrics.

In the seed's order, each step adding to what the step before found:

1. ``previous_run:<run_id>@<revision>`` — the metrics of the strategy's newest other
   evaluation run in this world, one of the same stage first, else one of the same
   kind (paper, dryrun and shadow are one kind): a backtest's numbers are never paper or
   live evidence, and a run is not its own source (a retry finds what the first try
   found, so it writes nothing);
2. ``risk_hub:<hash>`` — the newest *fresh* risk signal hub snapshot of the strategy
   adds covariance, stress results and weights (``risk``) and its realized returns; a
   stale one is named (``risk_hub:stale:<reasons>``) and not used (fail-closed);
3. for paper / live / shadow / dryrun, ``realized_returns:<request|risk_hub>`` — the v1
   return metrics computed from the realized return series (with the hub's, the trade
   count its producer stated, ``provenance.n_trades``); being newer evidence than a
   reused run, they replace its values (this is how paper metrics move with time);
   for backtest, ``engine_b:<data_ref>`` — when no earlier run exists the service runs
   engine B on the world's data itself.

One metrics implementation serves all of it: :mod:`alphaloop.engines.metrics`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaloop.errors import AlphaloopError
from alphaloop.world.errors import WorldError, invalid

if TYPE_CHECKING:
    from alphaloop.data.bars import Bars
    from alphaloop.strategy.spec import StrategySpec

LIVE_LIKE = ("paper", "live", "shadow", "dryrun")
PAPER_LIKE = ("paper", "dryrun", "shadow")  # the rung between backtest and live
MetricMap = dict[str, float | int | None]


@dataclass
class Sourced:
    metrics: MetricMap = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    risk: dict[str, Any] | None = None


@dataclass(frozen=True)
class Previous:
    run_id: str
    revision: int
    metrics: MetricMap


@dataclass(frozen=True)
class HubView:
    """The newest snapshot of the strategy, as sourcing needs it."""

    content_hash: str
    stale_reasons: list[str]
    risk: dict[str, Any]
    returns: np.ndarray | None
    periods_per_year: float
    n_trades: int | float | None = None  # the producer's provenance.n_trades


def returns_metrics(returns: np.ndarray, periods_per_year: float) -> MetricMap:
    """v1 core metrics a return series can give (no trade statistics)."""
    from alphaloop.engines.metrics import return_metrics, to_jsonable

    try:
        values = return_metrics(returns, periods_per_year)
    except ValueError as exc:
        raise WorldError(f"realized_returns: {exc}", code="RETURNS_INVALID",
                         field="realized_returns") from exc
    out: MetricMap = to_jsonable(values)
    out["effective_history_years"] = len(returns) / periods_per_year
    return out


def resolve_ref(refs_root: Path, ref: str, field: str) -> Path:
    """The file ``ref`` names (relative to ``refs_root``, or absolute), which must lie
    under ``refs_root`` once ``..`` and symbolic links are resolved: a request cannot
    make the service read any other file."""
    path = (refs_root / ref).resolve()  # an absolute ref replaces the root here
    if not path.is_relative_to(refs_root) or not path.is_file():
        raise invalid(field, f"{ref!r} is not a file under the service's refs root",
                      "REF_NOT_FOUND" if path.is_relative_to(refs_root) else "REF_OUTSIDE_ROOT")
    return path


def data_source(refs_root: Path, data: str) -> str:
    """A world's ``data``: a catalog dataset name, or a file under the refs root."""
    from alphaloop.data.catalog import is_dataset

    return data if is_dataset(data) else str(resolve_ref(refs_root, data, "data"))


@functools.lru_cache(maxsize=4)
def world_bars(source: str) -> Bars:
    """A world's panel, loaded once per process (panels are read-only)."""
    from alphaloop.data.loaders import load_bars

    return load_bars(source)


def engine_b_metrics(spec: StrategySpec, data: str,
                     refs_root: Path) -> tuple[MetricMap, str]:
    """Engine B's core metrics of ``spec`` on the world's data, and the data's ref."""
    from alphaloop.engines.engine_b import verify
    from alphaloop.engines.metrics import to_jsonable

    try:
        bars = world_bars(data_source(refs_root, data))
        result = verify(spec, bars, capacity=False)
    except AlphaloopError as exc:
        raise WorldError(f"engine B could not evaluate the strategy on {data!r}: {exc}",
                         code="ENGINE_B_FAILED", status=422, field="spec") from exc
    return to_jsonable(result.metrics), result.data_ref


def _fill_from_returns(out: Sourced, stage: str, request_returns: np.ndarray | None,
                       ppy: float, hub: HubView | None) -> None:
    if request_returns is not None:
        out.metrics.update(returns_metrics(request_returns, ppy))
        out.sources.append("realized_returns:request")
    elif hub is not None and not hub.stale_reasons and hub.returns is not None:
        out.metrics.update(returns_metrics(hub.returns, hub.periods_per_year))
        if hub.n_trades is not None:
            out.metrics["n_trades"] = hub.n_trades
        out.sources.append("realized_returns:risk_hub")


def source(stage: str, *, previous: Previous | None, hub: HubView | None,
           request_returns: np.ndarray | None, ppy: float,
           spec: StrategySpec | None, data: str | None, refs_root: Path) -> Sourced:
    """Fill the metrics of one evaluation, recording every source used, in order."""
    out = Sourced()
    if previous is not None:
        out.metrics.update({k: v for k, v in previous.metrics.items() if v is not None})
        out.sources.append(f"previous_run:{previous.run_id}@{previous.revision}")
    if hub is not None and hub.stale_reasons:
        out.sources.append(f"risk_hub:stale:{','.join(hub.stale_reasons)}")
    elif hub is not None:
        out.risk = hub.risk
        out.sources.append(f"risk_hub:{hub.content_hash[:16]}")
    if stage in LIVE_LIKE:
        _fill_from_returns(out, stage, request_returns, ppy, hub)
    elif previous is None and spec is not None and data is not None:
        metrics, data_ref = engine_b_metrics(spec, data, refs_root)
        out.metrics.update(metrics)
        out.sources.append(f"engine_b:{data_ref[:16]}")
    elif previous is None:  # say why nothing could be computed (the gates then fail)
        out.sources.append("engine_b:unavailable:" + ("no_spec" if spec is None
                                                      else "world_has_no_data"))
    return out
