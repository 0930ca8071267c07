"""Robustness of a set of candidates (MOD-432): every "good" accounts for the trials.

:func:`evaluate_candidates` takes the candidates a sweep tried (one row each, with
the spec that reproduces it), reruns them on the same data with engine A to get
their return series, and then

1. scores every candidate with the policy (:mod:`alphaloop.evaluation.scoring`);
2. deflates every Sharpe ratio by the number of trials (DSR, with ``n_trials`` =
   all candidates in the set, or more when the caller knows of more, e.g. the
   knowledge base's count) and the variance of the trials' Sharpe ratios;
3. measures the probability of backtest overfitting of the *selection* (PBO by
   CSCV over the whole set) and runs Hansen's SPA / White's Reality Check of the
   best candidate against cash and against the benchmark;
4. measures every candidate against its benchmark (by default the causal
   equal-weight buy-and-hold of the same universe with the same costs, see
   :mod:`alphaloop.evaluation.benchmark`): beta, alpha and their t, information
   ratio, capture ratios, and PSR/DSR of the excess returns deflated by all trials;
5. re-scores with DSR, PBO and the relative gates, ranks, and for the top candidates builds a
   :class:`RobustnessReport`: bootstrap Sharpe interval, out-of-sample split, cost
   stress, sub-period consistency and parameter-neighbourhood stability.

Units follow :mod:`alphaloop.evaluation.statistics` (per-period Sharpe, raw
kurtosis, sample variance of the trial Sharpe ratios); reported Sharpe ratios are
annualized with the panel's periods per year.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from alphaloop.data.bars import Bars
from alphaloop.data.quality import survivorship_issues
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.metrics import BENCHMARK_METRICS, relative_metrics, return_metrics
from alphaloop.errors import AlphaloopError
from alphaloop.evaluation.benchmark import Benchmark, resolve_benchmark
from alphaloop.evaluation.factors import factor_columns
from alphaloop.evaluation.scoring import ScoringPolicy, score_frame
from alphaloop.evaluation.statistics import (
    expected_max_sharpe,
    pbo_cscv,
    psr,
    psr_rows,
    return_moments,
    return_moments_rows,
    sharpe_confidence_interval,
    spa_test,
)
from alphaloop.evaluation.validation import (
    CostStressResult,
    OOSResult,
    StabilityResult,
    SubperiodResult,
    cost_stress,
    neighbourhood_stability,
    out_of_sample,
    subperiod_consistency,
)
from alphaloop.numbers import finite
from alphaloop.strategy.spec import StrategySpec
from alphaloop.strategy.templates import FAMILIES

# CSCV with S blocks evaluates C(S, S/2) splits × N candidates: bound the work
_PBO_SPLITS_SMALL, _PBO_SPLITS_LARGE, _PBO_LARGE_N = 16, 10, 1000


class EvaluationError(AlphaloopError):
    code = "EVAL_INVALID"


class SharpeCI(BaseModel):
    model_config = ConfigDict(frozen=True)

    estimate: float
    lower: float
    upper: float
    level: float
    block_size: int


class RobustnessReport(BaseModel):
    """Every robustness statistic of one candidate, pass/fail and the reasons.

    Two windows, named so they cannot be mistaken: everything but the ``*_holdout``
    fields is measured on the **selection window** (the data before the holdout);
    ``sharpe_sel`` is the Sharpe there. ``selection_split`` is an in-sample /
    out-of-sample split *inside* the selection window (its "out of sample" part was
    seen by the selection). ``sharpe_holdout`` and ``holdout_metrics`` are the
    untouched holdout's, when there is one.
    """

    model_config = ConfigDict(frozen=True)

    strategy_id: str
    family: str | None
    params: dict[str, Any]
    policy_version: str
    data_ref: str
    rank: int
    score_total: float
    passed: bool
    reasons: list[str]
    sharpe_sel: float | None
    psr: float | None
    dsr: float | None
    n_trials: int
    var_trial_sharpe: float
    expected_max_sharpe: float
    pbo: float | None
    spa_pvalue: float | None
    sharpe_ci: SharpeCI | None = None
    selection_split: OOSResult | None = None
    cost_stress: CostStressResult | None = None
    subperiods: SubperiodResult | None = None
    stability: StabilityResult | None = None
    holdout_fraction: float = 0.0
    sharpe_holdout: float | None = None
    holdout_metrics: dict[str, float | None] | None = None
    # measured against the benchmark over the same window (None in runs recorded before
    # benchmarks existed, or where a value is undefined, e.g. beta against cash)
    benchmark: str | None = None
    benchmark_label: str | None = None
    beta: float | None = None
    alpha_ann: float | None = None
    alpha_t: float | None = None
    information_ratio: float | None = None
    tracking_error: float | None = None
    up_capture: float | None = None
    down_capture: float | None = None
    excess_psr: float | None = None
    excess_dsr: float | None = None
    spa_pvalue_benchmark: float | None = None
    benchmark_metrics: dict[str, float | None] | None = None
    # the same on the untouched holdout (excess_psr: one read, nothing to deflate by)
    holdout_relative: dict[str, float | None] | None = None
    data_warnings: list[str] = []
    # a ranked book's score on the selection window, what the factor gate reads (None
    # for sleeve strategies)
    rank_ic_mean: float | None = None
    rank_ic_t: float | None = None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


@dataclass
class Evaluation:
    """The scored set (one row per candidate, ranked) and the top candidates' reports."""

    frame: pd.DataFrame
    reports: list[RobustnessReport]
    n_trials: int
    pbo: float | None
    spa_pvalue: float | None
    policy_version: str
    extra: dict[str, Any] = field(default_factory=dict)


# columns an evaluation adds to a sweep's rows: dropped before evaluating again, so a
# scored frame (`evaluate`'s own --out file, a run's stored candidates) evaluates too
MIN_WINDOW_BARS = 20
"""Bars a selection or holdout window needs at least: a Sharpe ratio (or a bootstrap)
over a few bars decides nothing. The research loop holds its windows to it too."""
RELATIVE_COLUMNS = ("benchmark", "beta", "beta_t", "alpha_ann", "alpha_t",
                    "information_ratio", "tracking_error", "active_return", "up_capture",
                    "down_capture", *BENCHMARK_METRICS, "excess_psr", "excess_dsr")
EVALUATION_COLUMNS = ("rank", "score_total", "passed", "failed_gates", "reasons", "psr",
                      "dsr", "pbo", "n_trials", "rank_ic_mean", "rank_ic_t",
                      *RELATIVE_COLUMNS,
                      # and what `evaluate --out` adds: the printed table's window columns
                      "sharpe_sel", "sharpe_holdout", "sharpe_last30", "2x_cost")


def sweep_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A sweep's rows from a scored frame: the evaluation's own columns dropped (they are
    recomputed by every evaluation, and ``rank`` would collide)."""
    return frame.drop(columns=[c for c in EVALUATION_COLUMNS if c in frame.columns])


def evaluate_candidates(results: pd.DataFrame, bars: Bars, policy: ScoringPolicy, *,
                        top: int = 5, n_trials: int | None = None, seed: int = 0,
                        detail: bool = True, spa_reps: int = 400,
                        ids: list[str] | None = None, holdout: float = 0.0,
                        benchmark: str | None = None) -> Evaluation:
    """Score, deflate and rank the candidates of ``results`` (a sweep's rows).

    ``results`` needs the columns ``strategy_id``, ``spec`` (JSON), ``data_ref``,
    ``fees_bps`` and ``slippage_bps``; ``bars`` must be the data they were run on (same data_ref).
    ``n_trials`` raises the trial count above the number of rows (it never lowers
    it). ``detail=False`` skips the per-candidate reruns of the reports.
    ``spa_reps`` bootstrap replications for SPA (its cost grows with candidates × bars).
    ``ids`` asks for the reports of these strategy ids instead of the top ones.

    ``holdout`` (a fraction, e.g. 0.3) keeps the last part of the data untouched:
    scores, DSR, PBO, SPA, ranking and the robustness checks all use the first
    ``1 - holdout`` only (engine A is causal, so that equals running on the truncated
    panel), and each report adds its metrics on the holdout, traded on from the
    selection window as it would have been live. Select on validation, report on an
    untouched holdout (DESIGN §6). The candidates themselves must not have been
    generated with the holdout in view (a TPE sweep on the full data was).

    ``benchmark`` names what every candidate is measured against (see
    :mod:`alphaloop.evaluation.benchmark`; ``None``: the policy's ``benchmark``, else
    ``equal_weight``): it runs with the candidates' costs over the same windows, and
    its name, beta, alpha, information ratio and excess DSR become columns that the
    relative gates read (a policy without them, like score-v1, only reports them).

    Rows with the same ``strategy_id`` count once. The metrics are recomputed by the
    rerun, so a stale or edited results file cannot disagree with the reports.
    Fail-closed choices: a candidate whose returns never vary has no evidence of
    skill, so its DSR is 0 (not "not evaluated"); deflating one candidate by more
    trials than it has company is refused, since the trials' Sharpe variance is unknown.
    """
    if n_trials is not None and n_trials < 1:
        raise EvaluationError(f"n_trials must be at least 1, got {n_trials}",
                              code="EVAL_INVALID")
    results = sweep_rows(results)
    results = results.drop_duplicates(subset="strategy_id") \
        if "strategy_id" in results.columns else results  # else refused just below
    if not 0.0 <= holdout < 1.0:
        raise EvaluationError(f"holdout must be a fraction in [0, 1), got {holdout}",
                              code="EVAL_INVALID")
    specs, costs = _specs_and_costs(results, bars)
    split = holdout_split(bars.n_bars, holdout)
    if holdout > 0 and (split < 2 or split == bars.n_bars):
        raise EvaluationError(f"holdout {holdout} leaves no usable selection or holdout "
                              f"window in {bars.n_bars} bars", code="EVAL_INVALID")
    for window, length in (("selection", split if holdout > 0 else bars.n_bars),
                           ("holdout", bars.n_bars - split if holdout > 0 else None)):
        if length is not None and length < MIN_WINDOW_BARS:
            raise EvaluationError(f"the {window} window has {length} of {bars.n_bars} bars; "
                                  f"at least {MIN_WINDOW_BARS} are needed (more data, or "
                                  "another --holdout)", code="EVAL_TOO_FEW_BARS")
    full = bars
    bars = bars.slice(0, split) if holdout > 0 else bars  # the selection window
    batch = run_batch(specs, bars, costs)
    rets = batch.returns  # (K, T_selection)
    held = (run_batch(specs, full, costs).returns[:, split:] if holdout > 0 else None)
    ppy = bars.periods_per_year
    trials = max(len(specs), int(n_trials or 0))
    stats = _deflation(rets, trials)
    pbo = _pbo(rets)
    spa = (spa_test(rets.T, None, reps=spa_reps, seed=seed).pvalue_consistent
           if len(specs) > 1 else None)
    frame = results.reset_index(drop=True).copy()
    for col in batch.metrics.columns:  # the rerun's numbers, not the file's
        frame[col] = batch.metrics[col].to_numpy()
    for col in ("psr", "dsr"):
        frame[col] = stats[col]
    frame["pbo"] = np.nan if pbo is None else pbo
    frame["n_trials"] = trials
    for name, values in factor_columns(specs, bars).items():  # ranked books' rank IC
        frame[name] = values.to_numpy()
    bench = resolve_benchmark(benchmark or policy.benchmark, full, costs)
    exposure = benchmark_exposure(specs)
    rel = _relative(frame, rets, bench, split, trials, ppy, spa_reps, seed, exposure)
    try:
        scored = score_frame(frame, policy)
    except ValueError as exc:
        raise EvaluationError(f"results cannot be scored: {exc}", code="EVAL_INVALID") from None
    order = np.lexsort((-scored["score_total"].to_numpy(), ~scored["passed"].to_numpy()))
    scored = scored.iloc[order].reset_index(drop=True)
    scored.insert(0, "rank", np.arange(1, len(scored) + 1))
    if ids is None:
        picked = list(range(min(top, len(scored))))
    else:
        unknown = sorted(set(ids) - set(scored["strategy_id"]))
        if unknown:
            raise EvaluationError(f"strategy id(s) not in the results: {', '.join(unknown)}",
                                  code="EVAL_UNKNOWN_ID")
        picked = [int(np.flatnonzero(scored["strategy_id"].to_numpy() == i)[0]) for i in ids]
    reports = [
        _report(scored.iloc[i], specs[order[i]], rets[order[i]], bars, costs, policy,
                stats, pbo, spa, seed, detail)
        for i in picked]
    if held is not None:
        reports = [_with_holdout(r, _finite_metrics(held[order[i]], full.periods_per_year),
                                 holdout, full.data_ref)
                   for r, i in zip(reports, picked, strict=True)]
    warnings = [f"{i.code}: {i.message}" for i in survivorship_issues(full)]
    reports = [_with_relative(r, scored.iloc[i], bench, rel, held, order[i], split,
                              full.periods_per_year, float(exposure[order[i]]))
               for r, i in zip(reports, picked, strict=True)]
    reports = [r.model_copy(update={"data_warnings": warnings}) for r in reports]
    # "beat significantly": the policy's excess-DSR gate, else the usual 95 %
    gate = 0.95 if policy.gates.min_excess_dsr is None else policy.gates.min_excess_dsr
    beat = int((scored["excess_dsr"] >= gate).sum())
    return Evaluation(frame=scored, reports=reports, n_trials=trials, pbo=pbo, spa_pvalue=spa,
                      policy_version=policy.policy_version,
                      extra={"var_trial_sharpe": stats["var"], "sr0": stats["sr0"],
                             "periods_per_year": ppy, "data_warnings": warnings,
                             "benchmark": bench.name, "benchmark_label": bench.label,
                             "benchmark_metrics": rel["benchmark_metrics"],
                             "spa_pvalue_benchmark": rel["spa"],
                             "n_beat_benchmark": beat, "beat_threshold": gate})


def _specs_and_costs(results: pd.DataFrame, bars: Bars) -> tuple[list[StrategySpec], CostModel]:
    missing = [c for c in ("strategy_id", "spec", "data_ref", "fees_bps", "slippage_bps")
               if c not in results.columns]
    if missing:
        raise EvaluationError(f"results lack column(s) {', '.join(missing)}: evaluate needs "
                              "the output of `alphaloop sweep`", code="EVAL_MISSING_COLUMN")
    if results.empty:
        raise EvaluationError("results contain no candidates", code="EVAL_EMPTY")
    refs = set(results["data_ref"])
    if refs != {bars.data_ref}:
        raise EvaluationError(
            f"results were computed on data {sorted(refs)} but the data given is "
            f"{bars.data_ref}: pass the same --data", code="EVAL_DATA_MISMATCH")
    costs = {(float(f), float(s)) for f, s in zip(results["fees_bps"], results["slippage_bps"],
                                                  strict=True)}
    if len(costs) != 1:
        raise EvaluationError(f"results mix cost settings {sorted(costs)}",
                              code="EVAL_MIXED_COSTS")
    fees, slip = costs.pop()
    specs = []
    for i, text in enumerate(results["spec"]):
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"results row {i}: spec is not valid JSON: {exc}",
                                  code="EVAL_BAD_SPEC") from None
        specs.append(StrategySpec.from_dict(data, source=f"results row {i}"))
    return specs, CostModel(fees_bps=fees, slippage_bps=slip)


def holdout_split(n_bars: int, holdout: float) -> int:
    """The first holdout bar: the last ``holdout`` fraction of the bars is held out
    (``n_bars`` when none is)."""
    return n_bars - round(holdout * n_bars)


def _deflation(rets: np.ndarray, n_trials: int,
               var_trials: float | None = None) -> dict[str, Any]:
    """PSR against 0 and DSR against the expected max of ``n_trials`` per candidate.
    The trials' Sharpe variance is ``var_trials`` when the caller knows more trials
    than it passes (the research loop), else these candidates' own. Vectorized over
    the candidates (:func:`psr_rows`, the scalar formula element by element)."""
    r = np.asarray(rets, dtype=np.float64)
    if np.isfinite(r).all():
        sr, skew, kurt = return_moments_rows(r)
        n = np.full(len(r), float(r.shape[1]))
    else:  # gaps: each row's moments over its own finite returns
        moments = [return_moments(x) for x in r]
        sr, skew, kurt, n = (np.array([getattr(m, f) for m in moments], dtype=np.float64)
                             for f in ("sr", "skew", "kurtosis", "n_obs"))
    if var_trials is None:
        finite = sr[np.isfinite(sr)]
        if finite.size < 2 and n_trials > 1:
            raise EvaluationError(
                f"cannot deflate by {n_trials} trials: the variance of the trials' Sharpe "
                f"ratios needs at least 2 candidates with varying returns, got {finite.size}",
                code="EVAL_TOO_FEW_CANDIDATES")
        var = float(np.var(finite, ddof=1)) if finite.size >= 2 else 0.0
        deflating = n_trials > 1
    else:
        var, deflating = var_trials, n_trials > 1 and var_trials > 0
    sr0 = expected_max_sharpe(n_trials, var) if deflating else 0.0
    psr_v = psr_rows(sr, 0.0, n, skew, kurt)
    # no evidence of skill (0) where the PSR is undefined
    dsr_v = np.nan_to_num(psr_rows(sr, sr0, n, skew, kurt) if deflating else psr_v, nan=0.0)
    return {"psr": psr_v, "dsr": dsr_v, "var": var, "sr0": sr0}


def relative_columns(rets: np.ndarray, benchmark: np.ndarray, label: str, trials: int,
                     ppy: float, var_trials: float | None = None,
                     exposure: np.ndarray | None = None) -> pd.DataFrame:
    """One row per candidate (``rets`` (K, T)) against ``benchmark`` (T,) over the same
    bars: :data:`RELATIVE_COLUMNS` (``benchmark`` is ``label``), with the PSR/DSR of the
    excess returns deflated by ``trials`` as the plain DSR is (by ``var_trials``, the
    variance of all the trials' Sharpe ratios, when the caller knows more trials than
    ``rets``: the research loop). The relative gates read these columns; merge them
    into a frame before :func:`score_frame`.

    ``exposure`` (K,) is each candidate's stated net exposure to the benchmark
    (:func:`benchmark_exposure`; None: 1 for all): the excess series is
    ``r - exposure * b``, so a dollar-neutral book is measured against cash, a
    long-only book against the whole benchmark, and the label says which."""
    x = np.ones(rets.shape[0]) if exposure is None else np.asarray(exposure, float)
    rel = relative_metrics(rets, benchmark, ppy, exposure=x)
    out = pd.DataFrame({k: np.atleast_1d(np.asarray(v, dtype=np.float64))
                        for k, v in rel.items()})
    out.insert(0, "benchmark", [label if v == 1.0 else f"{label} x {v:g} (net exposure)"
                                for v in x])
    # a scaled benchmark's Sharpe is the benchmark's (same sign), none at exposure 0
    out.loc[x == 0.0, "benchmark_sharpe"] = np.nan
    ex = _deflation(rets - x[:, None] * benchmark[None, :], trials, var_trials)
    out["excess_psr"], out["excess_dsr"] = ex["psr"], ex["dsr"]
    return out


def benchmark_exposure(specs: Sequence[StrategySpec]) -> np.ndarray:
    """Each strategy's stated net exposure to a long benchmark: a ranked book's ``net``
    (0 for a dollar-neutral book, whose yardstick is then cash; 1 for a long-only book of
    gross 1), and 1 for a sleeve strategy (whose rules state none: measured against the
    whole benchmark, as before)."""
    return np.array([s.portfolio.net_exposure if s.portfolio.cross_sectional else 1.0
                     for s in specs])


def _relative(frame: pd.DataFrame, rets: np.ndarray, bench: Benchmark, split: int,
              trials: int, ppy: float, spa_reps: int, seed: int,
              exposure: np.ndarray) -> dict[str, Any]:
    """Add the relative columns to ``frame`` (selection window); return the benchmark's
    own metrics and the SPA p-value of the best against it (each candidate against the
    benchmark at its own net exposure)."""
    b = bench.returns[:split]
    cols = relative_columns(rets, b, bench.label, trials, ppy, exposure=exposure)
    for name in cols.columns:
        frame[name] = cols[name].to_numpy()
    excess = rets - exposure[:, None] * b[None, :]
    spa = (spa_test(excess.T, None, reps=spa_reps, seed=seed).pvalue_consistent
           if rets.shape[0] > 1 else None)
    return {"benchmark_metrics": _finite_metrics(b, ppy), "spa": spa}


def _with_relative(report: RobustnessReport, row: pd.Series, bench: Benchmark,
                   rel: dict[str, Any], held: np.ndarray | None, k: int, split: int,
                   ppy: float, exposure: float) -> RobustnessReport:
    keys = ("beta", "alpha_ann", "alpha_t", "information_ratio", "tracking_error",
            "up_capture", "down_capture", "excess_psr", "excess_dsr")
    update: dict[str, Any] = {k2: finite(row[k2]) for k2 in keys}
    update |= {"benchmark": bench.name, "benchmark_label": bench.label,
               "benchmark_metrics": rel["benchmark_metrics"],
               "spa_pvalue_benchmark": rel["spa"]}
    if held is not None:
        update["holdout_relative"] = _holdout_relative(held[k], bench.returns[split:], ppy,
                                                       exposure)
    return report.model_copy(update=update)


def _holdout_relative(r: np.ndarray, b: np.ndarray, ppy: float,
                      exposure: float) -> dict[str, float | None]:
    rel = relative_metrics(r, b, ppy, exposure=exposure)
    out = {k: finite(rel[k]) for k in ("beta", "alpha_ann", "alpha_t", "information_ratio",
                                     "tracking_error", "up_capture", "down_capture")}
    m = return_moments(r - exposure * b)
    try:
        out["excess_psr"] = finite(psr(m.sr, 0.0, m.n_obs, m.skew, m.kurtosis))
    except ValueError:  # no variation or too short: no evidence
        out["excess_psr"] = None
    out |= {f"benchmark_{k}": v for k, v in _finite_metrics(b, ppy).items()}
    return out


def _pbo(rets: np.ndarray) -> float | None:
    """PBO of picking the best of the set in sample; None for fewer than 2 candidates."""
    n_cand, n_bars = rets.shape
    splits = _PBO_SPLITS_SMALL if n_cand <= _PBO_LARGE_N else _PBO_SPLITS_LARGE
    splits = min(splits, (n_bars // 2) * 2)  # at least one bar per block, an even count
    if n_cand < 2 or splits < 2:
        return None
    return float(pbo_cscv(rets.T, n_splits=splits).pbo)


def _report(row: pd.Series, spec: StrategySpec, rets: np.ndarray, bars: Bars, costs: CostModel,
            policy: ScoringPolicy, stats: dict[str, Any],
            pbo: float | None, spa: float | None, seed: int, detail: bool) -> RobustnessReport:
    ppy = bars.periods_per_year
    base: dict[str, Any] = {
        "strategy_id": spec.strategy_id, "family": spec.family, "params": dict(spec.params),
        "policy_version": policy.policy_version, "data_ref": bars.data_ref,
        "rank": int(row["rank"]), "score_total": float(row["score_total"]),
        "passed": bool(row["passed"]), "reasons": list(row["reasons"]),
        "sharpe_sel": finite(row.get("sharpe")), "psr": finite(row["psr"]), "dsr": finite(row["dsr"]),
        "n_trials": int(row["n_trials"]), "var_trial_sharpe": stats["var"],
        "expected_max_sharpe": stats["sr0"] * math.sqrt(ppy), "pbo": pbo, "spa_pvalue": spa,
        "rank_ic_mean": finite(row.get("rank_ic_mean")), "rank_ic_t": finite(row.get("rank_ic_t")),
    }
    if detail and np.std(rets) > 0:
        ci = sharpe_confidence_interval(rets, reps=500, seed=seed, periods_per_year=ppy)
        base["sharpe_ci"] = SharpeCI(estimate=ci.estimate, lower=ci.lower, upper=ci.upper,
                                     level=ci.level, block_size=ci.block_size)
        base["selection_split"] = out_of_sample(spec, bars, costs)  # within the window
        base["cost_stress"] = cost_stress(spec, bars, costs)
        # a dated series, so that each sub-period names its first and last bar
        dated = pd.Series(rets, index=bars.index[:len(rets)])
        base["subperiods"] = subperiod_consistency(dated, ppy)
        if spec.family in FAMILIES and spec.params:
            base["stability"] = neighbourhood_stability(spec.family, spec.params, bars, costs)
    return RobustnessReport(**base)


def _with_holdout(report: RobustnessReport, metrics: dict[str, float | None],
                  holdout: float, data_ref: str) -> RobustnessReport:
    return report.model_copy(update={
        "holdout_fraction": holdout, "holdout_metrics": metrics,
        "sharpe_holdout": metrics.get("sharpe"), "data_ref": data_ref})


def _finite_metrics(returns: np.ndarray, ppy: float) -> dict[str, float | None]:
    return {k: finite(v) for k, v in return_metrics(returns, ppy).items()}


