"""The work of each stage of one iteration (seed 003 §4, stage ids of seed 004).

=========  ===================  ===============================================
stage id   iteration state      what it does
=========  ===================  ===============================================
S10        GENERATION           scenario intake (SKIPPED when disabled)
S20        GENERATION           sample candidates from the families
S30        GENERATION           dedup by strategy_id; reuse earlier runs' results
S40        GENERATION           data-quality gate (CRITICAL codes stop the run)
S50        BACKTEST_A           engine A on the search window
S60        SCORING              score, deflate (DSR by every trial), shortlist
S65        SCORING              lookahead check of every shortlisted candidate
S70        BACKTEST_B           engine B verification (and a determinism rerun)
S75        ROBUSTNESS           out-of-sample decay on the validation window
S80        REPORTING            the holdout, read only for would-be survivors
S85        ANALYSIS             a failure record for every rejected candidate
S90        CONSTRAINT_UPDATE    the learner (its own issue; records nothing yet)
S95        KB_PERSIST           everything of the iteration, one transaction
=========  ===================  ===============================================

Each function takes what it reads explicitly and returns a plain, picklable output;
the runner hashes the inputs, stores the output with a ``.stage_done`` marker and
finds it again on resume. None of them reads the holdout but :func:`holdout_check`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from alphaloop.data.bars import Bars
from alphaloop.data.quality import CRITICAL_CODES, quality_report
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.engine_b import verify
from alphaloop.engines.execution import ExecutionModel
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.engines.verification import classify_failures
from alphaloop.errors import SpecError
from alphaloop.evaluation.scoring import ScoringPolicy, score_frame
from alphaloop.evaluation.statistics import (
    expected_max_sharpe,
    pbo_cscv,
    psr_rows,
)
from alphaloop.numbers import finite
from alphaloop.orchestrator.config import Promotion
from alphaloop.research.learning import (
    ConstraintSet,
    LearningConfig,
    Observation,
    RowCache,
    constraint_update,
    retests_of,
)
from alphaloop.research.rootcause import (
    STRATEGY_ENGINE_B_CODES,
    CandidateEvidence,
    EngineBFailure,
    LookaheadEvidence,
    ScoringEvidence,
    SearchMetrics,
    ValidationEvidence,
    VerificationEvidence,
    diagnose,
    estimate_gross,
)
from alphaloop.research.space import forbidden_share
from alphaloop.strategy.constraints import Constraint, constraint_id
from alphaloop.strategy.samplers import Sampler, make_sampler, params_key
from alphaloop.strategy.spec import StrategySpec
from alphaloop.strategy.templates import Family, get_family


# ------------------------------------------------------------------ S10
@dataclass
class ScenarioOutcome:
    applied: bool
    favour: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def scenario_intake(brief: dict[str, Any] | None, families: tuple[str, ...],
                    policy: str) -> ScenarioOutcome:
    """Check a research brief (favour/avoid families) and decide how it applies:
    ``reject`` refuses a poor one, ``ignore`` runs without it, ``soft`` keeps only
    what is sound as a weighting hint (DESIGN §5)."""
    from alphaloop.strategy.templates import FAMILIES

    brief = brief or {}
    favour = tuple(brief.get("favour", ()) or ())
    avoid = tuple(brief.get("avoid", ()) or ())
    problems = [f"unknown family {f!r}" for f in (*favour, *avoid) if f not in FAMILIES]
    problems += [f"family {f!r} both favoured and avoided" for f in set(favour) & set(avoid)]
    if set(avoid) >= set(families):
        problems.append("the brief avoids every configured family")
    if not problems:
        return ScenarioOutcome(True, favour, avoid)
    if policy == "reject":
        from alphaloop.orchestrator.config import ConfigError

        raise ConfigError("scenario rejected: " + "; ".join(problems), code="INVALID_CONFIG")
    if policy == "soft":  # keep the sound parts, as hints only
        ok = set(FAMILIES) - (set(favour) & set(avoid))
        return ScenarioOutcome(True, tuple(f for f in favour if f in ok),
                               tuple(f for f in avoid if f in ok and f not in families[:1]),
                               tuple(problems))
    return ScenarioOutcome(False, problems=tuple(problems))


# ------------------------------------------------------------------ S20
class Generator:
    """One sampler per family for the whole run, seeded from the run's seed, so the
    candidates of iteration i depend only on the config (and, for TPE, on what the
    run told it). On resume the samplers are advanced by replaying the same asks."""

    def __init__(self, families: tuple[str, ...], sampler: str, seed: int) -> None:
        from alphaloop.orchestrator.policies import derive_seed

        self.samplers: dict[str, Sampler] = {
            f: make_sampler(sampler, f, seed=derive_seed(seed, "sampler", f) % (2**32))
            for f in families}
        self.widenings: dict[str, int] = {}  # family -> times its ranges were widened
        self.constraints: tuple[Constraint, ...] = ()  # the rules in force (MOD-451)
        # the specs of the latest generate(), so later stages need not validate them again
        self.built: dict[str, StrategySpec] = {}

    def allocation(self, n: int, scenario: ScenarioOutcome | None,
                   extra: tuple[str, ...] = ()) -> dict[str, int]:
        """Candidates per family: equal shares; a favoured family gets twice the share,
        an avoided one none."""
        fams = [f for f in self.samplers if not (scenario and f in scenario.avoid)]
        fams += [f for f in extra if f not in fams]
        weight = {f: (2.0 if scenario and f in scenario.favour else 1.0) for f in fams}
        total = sum(weight.values())
        alloc = {f: int(n * w // total) for f, w in weight.items()}
        for f in fams[: n - sum(alloc.values())]:
            alloc[f] += 1
        return alloc

    def sampler(self, family: str, kind: str, seed: int) -> Sampler:
        if family not in self.samplers:
            from alphaloop.orchestrator.policies import derive_seed

            self.samplers[family] = make_sampler(
                kind, family, seed=derive_seed(seed, "sampler", family) % (2**32),
                constraints=self.constraints)
        return self.samplers[family]

    def set_constraints(self, rules: tuple[Constraint, ...]) -> None:
        """MOD-451: every sampler proposes nothing a hard rule forbids and breaks soft
        rules only at its exploration points, from the next ask on. When a rule is
        lifted (expired, or disabled by branch B), a grid sampler starts its grid again
        (knowing what it proposed): it does not go back to points it skipped."""
        lifted = {constraint_id(r) for r in self.constraints} - {constraint_id(r) for r in rules}
        self.constraints = rules
        for family, smp in list(self.samplers.items()):
            if lifted and smp.kind == "grid":
                fresh = make_sampler("grid", smp.family, seed=smp.seed, constraints=rules)
                fresh.carry_over(smp)
                self.samplers[family] = fresh
            else:
                smp.set_constraints(rules)

    def broken_rules(self, candidates: list[dict[str, Any]]) -> dict[str, list[str]]:
        """The soft rules each candidate's parameters broke when proposed (re-tests)."""
        out: dict[str, list[str]] = {}
        for c in candidates:
            smp = self.samplers.get(str(c["family"]))
            broken = smp.soft_breaks.get(params_key(c["params"])) if smp else None
            if broken:
                out[str(c["strategy_id"])] = list(broken)
        return out

    def families(self) -> dict[str, Family]:
        """The families as sampled now (widened ranges included)."""
        return {f: smp.family for f, smp in self.samplers.items()}

    def generate(self, alloc: dict[str, int], kind: str, seed: int) -> list[dict[str, Any]]:
        """Ask each family's sampler for its share; specs as JSON-ready dicts."""
        out: list[dict[str, Any]] = []
        self.built.clear()
        for family, n in alloc.items():
            if n <= 0:
                continue
            smp = self.sampler(family, kind, seed)
            for params in smp.ask(n):  # validated
                try:
                    spec = smp.family.build_valid(params)
                except SpecError:  # a widened range's value the builder refuses
                    continue
                self.built[spec.strategy_id] = spec
                out.append({"spec": spec.model_dump(mode="json"),
                            "strategy_id": spec.strategy_id, "family": family,
                            "params": dict(params)})
        return out

    def widen(self, family: str, kind: str, seed: int, limit: int) -> dict[str, Any] | None:
        """Seed 004 §6.2 branch A: the family's sampler replaced by one over its widened
        ranges (at most ``limit`` times a run), knowing what was proposed already.
        The new ranges, or None when the family cannot widen any further."""
        from alphaloop.orchestrator.policies import derive_seed

        old = self.sampler(family, kind, seed)
        done = self.widenings.get(family, 0)
        wider = old.family.widened() if done < limit else None
        if wider is None:
            return None
        self.widenings[family] = done + 1
        # the rules after carry_over: which points explore depends on the old sampler's
        # seed, so counting under the rules before it would hash every point twice
        new = make_sampler(kind, wider, seed=derive_seed(seed, "sampler", family,
                                                          "widened", done + 1) % (2**32))
        new.carry_over(old)
        new.set_constraints(self.constraints)
        self.samplers[family] = new
        before = old.family.describe()["params"]
        return {k: v for k, v in wider.describe()["params"].items() if v != before[k]}

    def advance(self, alloc: dict[str, int], kind: str, seed: int) -> None:
        """Resume: move the samplers past the asks of a stored stage, as
        :meth:`generate` did, without building the specs again."""
        for family, n in alloc.items():
            if n > 0:
                self.sampler(family, kind, seed).ask(n)

    def spec(self, candidate: dict[str, Any]) -> StrategySpec:
        """The candidate's spec: the object just built, or (a stored stage's candidate,
        on resume) validated again from its JSON form, which it equals."""
        hit = self.built.get(candidate["strategy_id"])
        return hit if hit is not None else StrategySpec.model_validate(candidate["spec"])

    def tell(self, scored: pd.DataFrame) -> None:
        """Feed model-based samplers the search-window scores (never the holdout).
        Samplers that ignore what they are told (grid, random, Sobol) are not told."""
        listening = {f for f, smp in self.samplers.items()
                     if type(smp).tell is not Sampler.tell}
        if not listening:
            return
        for fam, params, total in zip(scored["family"], scored["params"],
                                      scored["score_total"], strict=True):
            smp = self.samplers.get(str(fam))
            value = float(total)
            if smp is not None and str(fam) in listening and math.isfinite(value):
                smp.tell(json.loads(str(params)), value)


def baseline_candidate() -> dict[str, Any]:
    """Seed 004 §6.2 branch D: one simple baseline template, to reset the search."""
    fam = get_family("sma_cross")
    params = fam.validate({"fast": 10, "slow": 50})
    spec = fam.build(params)
    return {"spec": spec.model_dump(mode="json"), "strategy_id": spec.strategy_id,
            "family": "sma_cross", "params": dict(params)}


# ------------------------------------------------------------------ S30
@dataclass
class Deduped:
    fresh: list[dict[str, Any]]
    reused: list[str]  # tested by an earlier run on the same data: trials, not rerun
    duplicates: int  # already tested by this run
    truncated: int  # dropped to keep within max_backtests


def dedup(candidates: list[dict[str, Any]], run_tested: set[str], prior_tested: set[str],
          budget_left: int) -> Deduped:
    fresh: list[dict[str, Any]] = []
    reused: list[str] = []
    seen: set[str] = set()
    dup = 0
    for c in candidates:
        sid = c["strategy_id"]
        if sid in seen or sid in run_tested:
            dup += 1
            continue
        seen.add(sid)
        if sid in prior_tested:
            reused.append(sid)
        else:
            fresh.append(c)
    keep = max(budget_left, 0)
    return Deduped(fresh[:keep], reused, dup, max(len(fresh) - keep, 0))


# ------------------------------------------------------------------ S40
def data_quality(bars: Bars, window: str = "search") -> dict[str, Any]:
    """OBS-540: the panel's quality report; CRITICAL codes found (calendar breaks); and
    which bars were checked (its counts, e.g. DQ_SHORT_HISTORY's, are of that window)."""
    report = quality_report(bars)
    critical = sorted({i.code for i in report.errors if i.code in CRITICAL_CODES})
    checked = {"window": window, "bars": bars.n_bars, "symbols": bars.n_symbols,
               "start": bars.index[0].isoformat() if bars.n_bars else None,
               "end": bars.index[-1].isoformat() if bars.n_bars else None}
    return {"checked": checked, "report": report.to_dict(), "critical": critical}


# ------------------------------------------------------------------ S50
@dataclass
class BacktestA:
    metrics: pd.DataFrame  # one row per fresh candidate (search window)
    returns: np.ndarray  # (K, T_search) float32
    pbo: float | None


def pbo_of(returns: np.ndarray) -> float | None:
    """PBO of picking the best of this iteration's candidates (CSCV)."""
    n_cand, n_bars = returns.shape
    splits = min(16 if n_cand <= 1000 else 10, (n_bars // 2) * 2)
    if n_cand < 2 or splits < 2:
        return None
    return float(pbo_cscv(returns.astype(np.float64).T, n_splits=splits).pbo)


# ------------------------------------------------------------------ S60
@dataclass
class Shortlist:
    scored: pd.DataFrame  # fresh candidates with score, gates, dsr, cluster
    shortlist: list[str]
    dropped_by_cluster: dict[str, str] = field(default_factory=dict)  # id -> kept twin
    sr0: float = 0.0
    trials: int = 0
    clusters: int = 0  # return-correlation clusters the shortlist spans


def deflate(frame: pd.DataFrame, trials: int, var_trials: float) -> pd.DataFrame:
    """PSR against 0 and DSR against the expected maximum of ``trials`` Sharpe ratios
    with variance ``var_trials`` (all per period), per candidate (Bailey & López de
    Prado 2014, eq. 2: DSR is the PSR against that maximum, computed once). A DSR that
    cannot be computed (moments out of the formula's domain, fewer than 3 returns) is
    0: no evidence of skill."""
    out = frame.copy()
    deflating = trials > 1 and var_trials > 0
    sr0 = expected_max_sharpe(trials, var_trials) if deflating else 0.0
    sr = frame["sr_per_period"].to_numpy(dtype=np.float64)
    n = frame["n_obs"].to_numpy(dtype=np.float64)
    skew = frame["skew"].to_numpy(dtype=np.float64)
    kurt = frame["kurtosis"].to_numpy(dtype=np.float64)
    short_rows = n < 3
    psr_v = np.where(short_rows, np.nan, psr_rows(sr, 0.0, n, skew, kurt))
    dsr_v = psr_rows(sr, sr0, n, skew, kurt) if deflating else psr_v
    out["psr"] = psr_v
    out["dsr"] = np.nan_to_num(np.where(short_rows, np.nan, dsr_v), nan=0.0)
    return out


def shortlist(metrics: pd.DataFrame, returns: np.ndarray, candidates: pd.DataFrame,
              policy: ScoringPolicy, promo: Promotion, trials: int, var_trials: float,
              pbo: float | None, top_k: int, threshold: float,
              relative: pd.DataFrame | None = None) -> Shortlist:
    """Score (with DSR deflated by every trial and the iteration's PBO, and the
    candidates' ``relative`` columns against the benchmark, one row per row of
    ``metrics``), then promote the top ``top_k`` that pass every gate and reach
    ``threshold``, at most ``max_per_cluster`` per cluster of return correlation >=
    ``cluster_correlation`` (seed 003 §5.2, §8)."""
    if relative is not None:
        metrics = pd.concat([metrics.reset_index(drop=True),
                             relative.reset_index(drop=True)], axis=1)
    frame = metrics.merge(candidates[["strategy_id", "family", "params"]], on="strategy_id")
    frame = deflate(frame, trials, var_trials)
    frame["pbo"] = pbo if pbo is not None else math.nan
    scored = score_frame(frame, policy)
    order = scored.sort_values(["score_total", "strategy_id"], ascending=[False, True])
    eligible = order[order["passed"] & (order["score_total"] >= threshold)]
    row_of = {sid: k for k, sid in enumerate(metrics["strategy_id"])}
    picked: list[str] = []
    members: dict[str, int] = {}
    dropped: dict[str, str] = {}
    for sid in eligible["strategy_id"]:
        if len(picked) >= top_k:
            break
        # compared with each cluster's first member (its representative) only: a later
        # member as the twin had no count of its own (a KeyError that ended runs)
        twin = _closest(returns, row_of, sid, list(members), promo.cluster_correlation)
        if twin is None:
            picked.append(sid)
            members[sid] = 1
        elif members[twin] < promo.max_per_cluster:
            picked.append(sid)
            members[twin] += 1
        else:
            dropped[sid] = twin
    sr0 = expected_max_sharpe(trials, var_trials) if trials > 1 and var_trials > 0 else 0.0
    return Shortlist(scored.reset_index(drop=True), picked, dropped, sr0, trials, len(members))


def binding_gates(scored: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Seed 004 §6.3 branch D, the diagnosis: what keeps an iteration's candidates off
    the shortlist. Per gate, the candidates that fail that gate and nothing else (the
    gate that binds them); and those that pass every gate but score below the
    threshold. The loop's scoring has no data-quality or execution warnings (S40
    refuses critical data; engine A has no execution model), so penalties cannot be
    what binds here."""
    alone: dict[str, int] = {}
    failing: dict[str, int] = {}
    for gates in scored["failed_gates"]:
        for g in map(str, gates):
            failing[g] = failing.get(g, 0) + 1
        if len(gates) == 1:
            alone[str(gates[0])] = alone.get(str(gates[0]), 0) + 1
    passed = scored["passed"].astype(bool)
    below = int((passed & (scored["score_total"] < threshold)).sum())
    # what binds: the gate that alone keeps the most candidates out, or the threshold;
    # where every candidate fails several gates, the gate failed most often
    counts = {**alone, **({"score_threshold": below} if below else {})} or failing
    binding = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0] if counts else None
    return {"candidates": len(scored), "passed_gates": int(passed.sum()),
            "below_threshold": below, "failing_only": dict(sorted(alone.items())),
            "failing": dict(sorted(failing.items())), "binding": binding}


def diversity(short: Shortlist) -> dict[str, Any]:
    """Seed 003 §8's diversity metrics of what the shortlist promotes: how many
    families (templates) and return-correlation clusters it spans, how many candidates
    the one-per-cluster rule held back, and the spread of each family's parameters
    (per parameter the standard deviation over the shortlist divided by the range of
    the values the iteration tested; the mean over parameters and families)."""
    scored = short.scored.set_index("strategy_id")
    picked = scored.loc[short.shortlist] if short.shortlist else scored.iloc[:0]
    spreads: list[float] = []
    for fam, group in picked.groupby("family"):
        tested = [json.loads(str(p)) for p in scored.loc[scored["family"] == fam, "params"]]
        chosen = [json.loads(str(p)) for p in group["params"]]
        for key in (chosen[0] if chosen else {}):
            values = [c[key] for c in chosen if isinstance(c.get(key), int | float)]
            scale = [t[key] for t in tested if isinstance(t.get(key), int | float)]
            if len(values) > 1 and scale and max(scale) > min(scale):
                spreads.append(float(np.std(values)) / (max(scale) - min(scale)))
    return {"families": int(picked["family"].nunique()) if len(picked) else 0,
            "clusters": short.clusters,
            "held_back_by_cluster": len(short.dropped_by_cluster),
            "param_spread": round(float(np.mean(spreads)), 6) if spreads else None}


def _closest(returns: np.ndarray, row_of: dict[str, int], sid: str, reps: list[str],
             threshold: float) -> str | None:
    """The first cluster representative whose returns correlate >= threshold."""
    a = returns[row_of[sid]].astype(np.float64)
    for rep in reps:
        b = returns[row_of[rep]].astype(np.float64)
        if a.std() == 0 or b.std() == 0:
            continue
        if float(np.corrcoef(a, b)[0, 1]) >= threshold:
            return rep
    return None


# ------------------------------------------------------------------ S70
@dataclass
class Verified:
    rows: list[dict[str, Any]]  # strategy_id, passed, codes, evidence, metrics
    evaluations: int


def verify_b(specs: dict[str, StrategySpec], ids: list[str], bars: Bars,
             model: ExecutionModel, *, evaluator: SignalEvaluator | None = None) -> Verified:
    """Engine B on the search window; a rerun checks determinism (two evaluations).
    ``evaluator`` (on ``bars``) shares indicators between candidates; the rerun computes
    its own, so that an indicator that is not deterministic (a registered operator's)
    is caught as well."""
    rows = []
    for sid in ids:
        spec = specs[sid]
        res = verify(spec, bars, model, capacity=False, evaluator=evaluator)

        def rerun(s: StrategySpec = spec) -> Any:
            return verify(s, bars, model, capacity=False)

        fails = classify_failures(res, rerun=rerun)
        sharpe = float(res.metrics["sharpe"])
        codes = [f.code for f in fails]
        if not codes and not sharpe > 0:
            codes.append("LOW_SHARPE")
        rows.append({"strategy_id": sid, "passed": not codes, "codes": codes,
                     "evidence": {f.code: {"message": f.message, **_plain(f.evidence)}
                                  for f in fails},
                     "metrics": {k: _num(v) for k, v in res.metrics.items()},
                     "sharpe": sharpe})
    return Verified(rows, 2 * len(ids))


def _num(v: Any) -> float | int | None:
    """Like :func:`finite`, keeping integers (trade counts) integers."""
    return int(v) if isinstance(v, (int, np.integer)) else finite(v)


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ------------------------------------------------------------------ S75
def validation_check(specs: list[StrategySpec], bars: Bars, search_end: int, val_end: int,
                     costs: CostModel, search_sharpe: dict[str, float],
                     min_ratio: float, *, evaluator: SignalEvaluator | None = None
                     ) -> list[dict[str, Any]]:
    """Out-of-sample decay: engine A traded on through the validation window (bars up
    to ``val_end``; the holdout is not in the panel); its Sharpe on the validation
    bars must be positive and at least ``min_ratio`` × the search Sharpe.
    ``evaluator``: one on the first ``val_end`` bars, shared with other calls."""
    if not specs:
        return []
    window = bars if bars.n_bars == val_end else bars.slice(0, val_end)
    if evaluator is not None and evaluator.bars is not window:
        evaluator = None
    res = run_batch(specs, window, costs, evaluator=evaluator)
    ppy = bars.periods_per_year
    out = []
    for spec, rets in zip(specs, res.returns, strict=True):
        val = _annual_sharpe(rets[search_end:val_end], ppy)
        base = search_sharpe[spec.strategy_id]
        ratio = val / base if base > 0 else math.nan
        ok = val > 0 and math.isfinite(ratio) and ratio >= min_ratio
        out.append({"strategy_id": spec.strategy_id, "sharpe_validation": val,
                    "oos_ratio": ratio, "passed": ok})
    return out


def _annual_sharpe(r: np.ndarray, ppy: float) -> float:
    r = np.asarray(r, dtype=np.float64)
    if r.size < 2 or r.std(ddof=1) == 0:
        return 0.0
    return float(r.mean() / r.std(ddof=1) * math.sqrt(ppy))


# ------------------------------------------------------------------ S80
def holdout_check(specs: list[StrategySpec], bars: Bars, val_end: int,
                  costs: CostModel, *, evaluator: SignalEvaluator | None = None
                  ) -> dict[str, float]:
    """The final holdout, read only here: each candidate traded on through it; its
    Sharpe on the holdout bars. Nothing computed here feeds back into the loop.
    ``evaluator``: one on ``bars``, shared with other calls."""
    if not specs:
        return {}
    if evaluator is not None and evaluator.bars is not bars:
        evaluator = None
    res = run_batch(specs, bars, costs, evaluator=evaluator)
    ppy = bars.periods_per_year
    return {s.strategy_id: _annual_sharpe(r[val_end:], ppy)
            for s, r in zip(specs, res.returns, strict=True)}


# ------------------------------------------------------------------ S85
def failure_records(scored: pd.DataFrame, short: Shortlist, threshold: float,
                    verified: list[dict[str, Any]], robust: list[dict[str, Any]],
                    lookahead: dict[str, str], gates: dict[str, Any], costs: CostModel,
                    promo: Promotion) -> list[dict[str, Any]]:
    """MOD-440 through MOD-441/442 (:mod:`alphaloop.research.rootcause`): one primary
    code, secondary codes and evidence per rejected candidate, from what each stage
    measured. The holdout is never evidence; engine B's non-determinism is the loop's
    (a stop rule), not a fact about the strategy; a candidate that passed every gate
    and the threshold but was not promoted is not a failure."""
    b = {v["strategy_id"]: v for v in verified}
    r = {x["strategy_id"]: x for x in robust}
    out: list[dict[str, Any]] = []
    for raw in scored.to_dict("records"):
        row = cast(dict[str, Any], raw)  # the frame's columns are names
        sid = str(row["strategy_id"])
        found = diagnose(_evidence(row, short, threshold, b.get(sid), r.get(sid),
                                   lookahead.get(sid), gates, costs, promo))
        if found is not None:  # the scoring policy's own words go with the codes
            fields = found.record_fields()
            fields["evidence"]["reasons"] = [str(x) for x in row["reasons"]]
            out.append(fields)
    return out


def _evidence(row: dict[str, Any], short: Shortlist, threshold: float,
              b: dict[str, Any] | None, r: dict[str, Any] | None, look: str | None,
              gates: dict[str, Any], costs: CostModel, promo: Promotion) -> CandidateEvidence:
    sid = str(row["strategy_id"])
    metrics = SearchMetrics.of(row)
    twin = short.dropped_by_cluster.get(sid)
    scoring = ScoringEvidence(
        metrics=metrics, failed_gates=tuple(map(str, row["failed_gates"])), gates=gates,
        score_total=finite(row["score_total"]), score_threshold=threshold,
        gross=estimate_gross(metrics, costs.fees_bps, costs.slippage_bps),
        dsr=finite(row.get("dsr")), pbo=finite(row.get("pbo")),
        excess_dsr=finite(row.get("excess_dsr")),
        information_ratio=finite(row.get("information_ratio")), correlated_with=twin,
        correlation_threshold=promo.cluster_correlation if twin else None)
    verification = None if b is None else _engine_b(b)
    validation = None if r is None else ValidationEvidence(
        sharpe_search=float(row["sharpe"]), sharpe_validation=float(r["sharpe_validation"]),
        min_ratio=promo.min_oos_ratio)
    return CandidateEvidence(
        strategy_id=sid, family=row.get("family"), params=_loads(row.get("params")),
        scoring=scoring, lookahead=None if look is None else LookaheadEvidence(message=look),
        verification=verification, validation=validation)


# ------------------------------------------------------------------ S90
#: What the loop learns rules from: failures that belong to a region of the parameter
#: space. Not from the deflated selection statistics (OVERFIT_DSR, OVERFIT_PBO and the
#: excess DSR's BENCHMARK_NOT_BEATEN harden with the number of trials, not with the
#: parameters: a rule would steer away from the best region as the run grows), the
#: score threshold (LOW_SCORE), duplicates (exact ones are hard rules of their own),
#: data and lookahead failures (about the data and the operators, not the parameters)
#: or a history too short (SHORT_HISTORY: the data's span, which no parameter changes;
#: learned, it marks where the other gates passed, e.g. enough trades).
LEARNING = LearningConfig(skip_codes=("DATA_FAILURE", "LOOKAHEAD", "DUPLICATE", "LOW_SCORE",
                                      "OVERFIT_DSR", "OVERFIT_PBO", "BENCHMARK_NOT_BEATEN",
                                      "SHORT_HISTORY"))


@dataclass
class Learned:
    constraint_set: ConstraintSet
    added: int
    forbidden_share: float | None  # mean over the families, Monte Carlo over the prior


def learn_constraints(current: ConstraintSet, observations: list[Observation],
                      families: dict[str, Family], broken: dict[str, list[str]],
                      outcomes: dict[str, list[str]], iteration: int,
                      seed: int, cache: RowCache | None = None) -> Learned:
    """MOD-450 (:func:`alphaloop.research.learning.constraint_update`): re-tests of the
    soft rules this iteration's proposals broke, then rules learned from every
    observation of the run so far; and the share of each family's space the rules in
    force forbid (seed 003's "the search space shrinks", measured)."""
    retests = retests_of(broken, outcomes, current.rules)
    new = constraint_update(current, observations, families, retests=retests,
                            iteration=iteration, config=LEARNING, cache=cache)
    added = sum(c.action == "added" for c in new.changes) if new is not current else 0
    shares = [forbidden_share(fam, new.active, samples=1000, seed=seed).share
              for fam in families.values()]
    finite_shares = [x for x in shares if x is not None and math.isfinite(x)]
    mean = float(np.mean(finite_shares)) if finite_shares else None
    return Learned(new, added, mean)


def _engine_b(b: dict[str, Any]) -> VerificationEvidence | None:
    """Engine B's evidence; None when it failed only by non-determinism, which is not
    the strategy's failure (seed 003 §7.3 stops the run on it)."""
    found = VerificationEvidence(
        sharpe=finite(b["sharpe"]),
        failures=tuple(EngineBFailure(code=c, **b["evidence"].get(c, {}))
                       for c in b["codes"] if c in STRATEGY_ENGINE_B_CODES))
    if not b["passed"] and not found.failures and (found.sharpe or 0.0) > 0:
        return None
    return found


def _loads(params: Any) -> dict[str, Any]:
    if isinstance(params, str):
        loaded: dict[str, Any] = json.loads(params)
        return loaded
    return dict(params or {})
