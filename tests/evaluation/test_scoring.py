"""Scoring policy (MOD-430/431): hand-computed scores, gates with reasons, NaN handling,
vectorized == per-row, properties, bad policy files that name the key, the registry."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from alphaloop.engines.metrics import CORE_METRICS
from alphaloop.errors import ErrorClass
from alphaloop.evaluation.scoring import (
    PolicyError,
    PolicyRegistry,
    ScoringPolicy,
    bundled_policies,
    load_policy,
    policies_dir,
    score,
    score_frame,
)

NAN = math.nan

TEST_POLICY_YAML = """\
# comments do not count
policy_version: test-v1
components:
  sharpe:   {weight: 3, lo: 0, hi: 2}     # higher is better
  turnover: {weight: 1, lo: 20, hi: 0}    # lower is better
gates:
  min_trades: 30
  min_sharpe: 0.5
  max_drawdown: 0.25
  max_turnover: 10
  min_history_years: 2
penalties: {data_quality_warning: 5, execution_warning: 10}
"""

POLICY = ScoringPolicy.model_validate({
    "policy_version": "test-v1",
    "components": {"sharpe": {"weight": 3, "lo": 0, "hi": 2},
                   "turnover": {"weight": 1, "lo": 20, "hi": 0}},
    "gates": {"min_trades": 30, "min_sharpe": 0.5, "max_drawdown": 0.25,
              "max_turnover": 10, "min_history_years": 2},
    "penalties": {"data_quality_warning": 5, "execution_warning": 10},
})

# A candidate that clears every gate of POLICY.
GOOD = {"sharpe": 1.5, "turnover": 5.0, "n_trades": 40, "max_drawdown": -0.2,
        "effective_history_years": 3.0}

ROBUST = POLICY.model_copy(update={
    "gates": POLICY.gates.model_copy(update={"min_dsr": 0.95, "max_pbo": 0.5})})


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ============================================================ hand-computed scores
def test_hand_computed_score() -> None:
    # sharpe 1.5:  (1.5 - 0) / (2 - 0)   = 0.75
    # turnover 5:  (5 - 20) / (0 - 20)    = 0.75
    # score = 100 * (3 * 0.75 + 1 * 0.75) / (3 + 1) = 75.0
    r = score(GOOD, POLICY)
    assert r.components == {"sharpe": 0.75, "turnover": 0.75}
    assert r.score_total == 75.0
    assert r.passed and r.failed_gates == [] and r.reasons == []
    assert r.penalty == 0.0
    assert r.policy_version == "test-v1" and r.policy_hash == POLICY.content_hash


def test_hand_computed_score_with_a_failed_gate_and_penalties() -> None:
    # sharpe 1.5 → 0.75; turnover 15: (15 - 20) / (0 - 20) = 0.25
    # base = 100 * (3 * 0.75 + 1 * 0.25) / 4 = 100 * 2.5 / 4 = 62.5
    # penalty = 1 data-quality warning * 5 + 2 execution warnings * 10 = 25
    # score = 62.5 - 25 = 37.5
    r = score({**GOOD, "turnover": 15.0}, POLICY,
              extras={"data_quality_warnings": 1, "execution_warnings": 2})
    assert r.components == {"sharpe": 0.75, "turnover": 0.25}
    assert r.score_total == 37.5
    assert r.penalty == 25.0
    assert not r.passed
    assert r.failed_gates == ["max_turnover"]
    assert r.reasons == [
        "turnover 15 > max_turnover 10",
        "penalty 5 points: 1 data-quality warning(s) x 5",
        "penalty 20 points: 2 execution warning(s) x 10",
    ]


def test_components_clip_outside_lo_hi() -> None:
    # sharpe 3 > hi 2 → 1; turnover 25 beyond lo 20 (lower is better) → 0
    # score = 100 * (3 * 1 + 1 * 0) / 4 = 75.0
    r = score({**GOOD, "sharpe": 3.0, "turnover": 25.0}, POLICY)
    assert r.components == {"sharpe": 1.0, "turnover": 0.0}
    assert r.score_total == 75.0
    # sharpe -1 < lo 0 → 0; turnover 0 = hi → 1: 100 * 1 / 4 = 25.0
    r = score({**GOOD, "sharpe": -1.0, "turnover": 0.0}, POLICY)
    assert r.components == {"sharpe": 0.0, "turnover": 1.0}
    assert r.score_total == 25.0


def test_infinite_metric_maps_to_the_matching_end() -> None:
    pf = ScoringPolicy.model_validate({
        "policy_version": "pf", "components": {"profit_factor": {"weight": 1, "lo": 1, "hi": 2}}})
    assert score({"profit_factor": math.inf}, pf).score_total == 100.0  # no losing trade
    assert score({"profit_factor": -math.inf}, pf).score_total == 0.0
    lower = ScoringPolicy.model_validate({
        "policy_version": "to", "components": {"turnover": {"weight": 1, "lo": 9, "hi": 1}}})
    assert score({"turnover": math.inf}, lower).score_total == 0.0


def test_penalties_floor_the_score_at_zero() -> None:
    # 75 - 8 * 10 = -5 → 0
    r = score(GOOD, POLICY, extras={"execution_warnings": 8})
    assert r.score_total == 0.0 and r.penalty == 80.0
    assert r.passed  # penalties lower the score, they never fail a gate


def test_component_order_does_not_matter() -> None:
    swapped = ScoringPolicy.model_validate({
        **POLICY.model_dump(),
        "components": dict(reversed(list(POLICY.model_dump()["components"].items())))})
    assert swapped.content_hash == POLICY.content_hash
    m = {**GOOD, "sharpe": 0.123456789, "turnover": 7.77}
    assert score(m, swapped).score_total == score(m, POLICY).score_total


# ============================================================ gates
@pytest.mark.parametrize(("change", "gate", "reason"), [
    ({"n_trades": 12}, "min_trades", "n_trades 12 < min_trades 30"),
    ({"sharpe": 0.4}, "min_sharpe", "sharpe 0.4 < min_sharpe 0.5"),
    ({"max_drawdown": -0.3}, "max_drawdown",
     "max_drawdown -0.3 < -0.25 (gate max_drawdown 0.25)"),
    ({"turnover": 12.5}, "max_turnover", "turnover 12.5 > max_turnover 10"),
    ({"effective_history_years": 1.5}, "min_history_years",
     "effective_history_years 1.5 < min_history_years 2"),
])
def test_each_gate_fails_with_value_and_threshold(change: dict[str, float], gate: str,
                                                  reason: str) -> None:
    r = score({**GOOD, **change}, POLICY)
    assert not r.passed
    assert r.failed_gates == [gate]
    assert r.reasons == [reason]


def test_gates_are_inclusive() -> None:
    edge = {"sharpe": 0.5, "turnover": 10.0, "n_trades": 30, "max_drawdown": -0.25,
            "effective_history_years": 2.0}
    r = score(edge, POLICY)
    assert r.passed and r.reasons == []


def test_every_failed_gate_is_listed_in_order() -> None:
    bad = {"sharpe": 0.1, "turnover": 50.0, "n_trades": 3, "max_drawdown": -0.9,
           "effective_history_years": 0.5}
    r = score(bad, POLICY)
    assert r.failed_gates == ["min_trades", "min_sharpe", "max_drawdown", "max_turnover",
                              "min_history_years"]
    assert len(r.reasons) == 5


def test_reason_shows_a_value_just_below_the_threshold_exactly() -> None:
    r = score({**GOOD, "sharpe": 0.49999999999}, POLICY)
    assert r.reasons == ["sharpe 0.49999999999 < min_sharpe 0.5"]


def test_gates_off_when_null() -> None:
    open_policy = POLICY.model_copy(update={"gates": POLICY.gates.model_copy(
        update={"min_trades": None, "max_turnover": None})})
    r = score({**GOOD, "n_trades": 1, "turnover": 99.0}, open_policy)
    assert r.passed and r.failed_gates == []


def test_robustness_gates_not_evaluated_without_values() -> None:
    r = score(GOOD, ROBUST)
    assert r.passed
    assert r.reasons == [
        "dsr not evaluated (no value given): min_dsr 0.95 not applied",
        "pbo not evaluated (no value given): max_pbo 0.5 not applied",
    ]
    # None and NaN mean "no value" too (a frame cannot tell them apart)
    assert score(GOOD, ROBUST, extras={"dsr": None, "pbo": NAN}).reasons == r.reasons


def test_robustness_gates_applied_with_values() -> None:
    r = score(GOOD, ROBUST, extras={"dsr": 0.9, "pbo": 0.6})
    assert not r.passed
    assert r.failed_gates == ["min_dsr", "max_pbo"]
    assert r.reasons == ["dsr 0.9 < min_dsr 0.95", "pbo 0.6 > max_pbo 0.5"]
    ok = score(GOOD, ROBUST, extras={"dsr": 0.95, "pbo": 0.5})
    assert ok.passed and ok.reasons == []
    # a failed core gate is listed before a robustness gate that was not evaluated
    mixed = score({**GOOD, "n_trades": 2}, ROBUST, extras={"pbo": 0.1})
    assert mixed.reasons == ["n_trades 2 < min_trades 30",
                             "dsr not evaluated (no value given): min_dsr 0.95 not applied"]


def test_the_factor_gate_judges_ranked_books_only() -> None:
    """min_rank_ic_t reads a ranked book's rank-IC t; a sleeve strategy (no value) is
    not concerned and gets no reason; a book without evidence (t 0) fails."""
    factor = POLICY.model_copy(update={
        "gates": POLICY.gates.model_copy(update={"min_rank_ic_t": 2.0})})
    sleeve = score(GOOD, factor)
    assert sleeve.passed and sleeve.reasons == []
    weak = score(GOOD, factor, extras={"rank_ic_t": 1.5})
    assert not weak.passed and weak.failed_gates == ["min_rank_ic_t"]
    assert weak.reasons == ["rank_ic_t 1.5 < min_rank_ic_t 2"]
    assert score(GOOD, factor, extras={"rank_ic_t": 0.0}).failed_gates == ["min_rank_ic_t"]
    assert score(GOOD, factor, extras={"rank_ic_t": 2.0}).passed  # inclusive
    frame = pd.DataFrame([{**GOOD, "rank_ic_t": v} for v in (NAN, 1.5, 3.0)])
    assert score_frame(frame, factor)["passed"].tolist() == [True, False, True]


def test_a_gate_added_later_leaves_earlier_policies_hashes_alone() -> None:
    """min_rank_ic_t off is absent from the canonical JSON, so the content hash of a
    policy written before the gate existed (and recorded by runs) is unchanged."""
    assert "min_rank_ic_t" not in POLICY.canonical_json()
    on = POLICY.model_copy(update={
        "gates": POLICY.gates.model_copy(update={"min_rank_ic_t": 2.0})})
    assert '"min_rank_ic_t":2.0' in on.canonical_json()
    assert on.content_hash != POLICY.content_hash


# ============================================================ NaN and missing metrics
def test_nan_metric_scores_zero_and_fails_its_gate_closed() -> None:
    # sharpe NaN → component 0; turnover 5 → 0.75; score = 100 * (0 + 0.75) / 4 = 18.75
    r = score({**GOOD, "sharpe": NAN}, POLICY)
    assert r.components == {"sharpe": 0.0, "turnover": 0.75}
    assert r.score_total == 18.75
    assert not r.passed
    assert r.failed_gates == ["min_sharpe"]
    assert r.reasons == [
        "sharpe is NaN or missing: min_sharpe 0.5 cannot be checked (fails closed)",
        "component sharpe is NaN or missing: scored 0 (weight 3)",
    ]


def test_missing_and_none_metrics_count_as_nan() -> None:
    m = dict(GOOD)
    del m["sharpe"]
    expected = score({**GOOD, "sharpe": NAN}, POLICY)
    assert score(m, POLICY) == expected
    assert score({**GOOD, "sharpe": None}, POLICY) == expected
    # metrics the policy does not use are ignored
    assert score({**GOOD, "win_rate": NAN, "calmar": "n/a"}, POLICY) == score(GOOD, POLICY)


def test_numpy_scalars_are_accepted() -> None:
    m = {k: np.float64(v) for k, v in GOOD.items()} | {"n_trades": np.int64(40)}
    assert score(m, POLICY) == score(GOOD, POLICY)


@pytest.mark.parametrize(("metrics", "extras", "match"), [
    ({**GOOD, "max_drawdown": 0.2}, None, "max_drawdown must be <= 0"),
    ({**GOOD, "sharpe": "high"}, None, "sharpe must be a number"),
    (GOOD, {"dsr_value": 0.9}, "unknown extras key.*dsr_value.*valid keys: dsr"),
    (GOOD, {"execution_warnings": -1}, "execution_warnings must be >= 0"),
])
def test_bad_inputs_raise_naming_the_key(metrics: dict[str, Any], extras: Any,
                                         match: str) -> None:
    with pytest.raises(ValueError, match=match):
        score(metrics, POLICY, extras=extras)


def test_policy_must_be_a_policy_object() -> None:
    with pytest.raises(TypeError, match="load_policy"):
        score(GOOD, "default")  # type: ignore[arg-type]


# ============================================================ vectorized == per row
def _random_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def holes(x: np.ndarray, p: float = 0.1) -> np.ndarray:
        return np.where(rng.random(n) < p, np.nan, x)

    frame = pd.DataFrame({
        "sharpe": holes(rng.normal(0.6, 0.8, n)),
        "turnover": holes(rng.uniform(0, 30, n)),
        "n_trades": rng.integers(0, 80, n),
        "max_drawdown": holes(-rng.uniform(0, 0.6, n)),
        "effective_history_years": rng.uniform(0.5, 6, n),
        "cagr": rng.normal(0.05, 0.1, n),  # not used by the policy
        "dsr": holes(rng.uniform(0.5, 1.0, n), 0.4),
        "pbo": holes(rng.uniform(0.0, 1.0, n), 0.4),
        "data_quality_warnings": holes(rng.integers(0, 3, n).astype(float)),
        "execution_warnings": rng.integers(0, 2, n),
    }, index=pd.Index([f"cand{i}" for i in range(n)], name="strategy_id"))
    return frame


def test_score_frame_equals_score_per_row() -> None:
    frame = _random_frame(300, seed=1)
    out = score_frame(frame, ROBUST)
    assert list(out.index) == list(frame.index)
    assert out["score_total"].dtype == np.float64 and out["passed"].dtype == bool
    pd.testing.assert_frame_equal(out[frame.columns], frame)  # inputs untouched
    extra_keys = ("dsr", "pbo", "data_quality_warnings", "execution_warnings")
    n_fail = 0
    for sid, row in frame.iterrows():
        metrics = {str(k): v for k, v in row.items() if k not in extra_keys}
        extras = {k: row[k] for k in extra_keys}
        r = score(metrics, ROBUST, extras=extras)
        assert out.at[sid, "score_total"] == r.score_total  # exact, not approximate
        assert out.at[sid, "passed"] == r.passed
        assert out.at[sid, "reasons"] == r.reasons
        assert out.at[sid, "failed_gates"] == r.failed_gates
        n_fail += not r.passed
    assert 0 < n_fail < len(frame)  # both outcomes were exercised


def test_score_frame_missing_column_and_empty_frame() -> None:
    frame = pd.DataFrame([GOOD]).drop(columns=["sharpe"])
    out = score_frame(frame, POLICY)
    assert out.at[0, "score_total"] == score({**GOOD, "sharpe": NAN}, POLICY).score_total
    assert out.at[0, "failed_gates"] == ["min_sharpe"]
    empty = score_frame(pd.DataFrame(columns=list(GOOD)), POLICY)
    assert len(empty) == 0 and {"score_total", "passed", "reasons"} <= set(empty.columns)


def test_score_frame_rejects_a_non_numeric_column() -> None:
    frame = pd.DataFrame([{**GOOD, "sharpe": "high"}])
    with pytest.raises(ValueError, match="column 'sharpe' must be numeric"):
        score_frame(frame, POLICY)


def test_score_frame_rescoring_replaces_columns() -> None:
    once = score_frame(pd.DataFrame([GOOD]), POLICY)
    twice = score_frame(once, POLICY)
    pd.testing.assert_frame_equal(once, twice)


# ============================================================ properties
metric_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-5, max_value=50),
)
drawdown_value = st.one_of(st.just(NAN), st.floats(min_value=-1.0, max_value=0.0))


@st.composite
def candidates(draw: st.DrawFn) -> dict[str, float]:
    m = {name: draw(metric_value) for name in CORE_METRICS}
    m["max_drawdown"] = draw(drawdown_value)
    return m


DEFAULT = load_policy("default")
counts = st.one_of(st.none(), st.integers(0, 30))


@settings(max_examples=100, deadline=None)
@given(m=candidates(), dq=counts, ex=counts)
def test_score_is_always_between_0_and_100(m: dict[str, float], dq: int | None,
                                           ex: int | None) -> None:
    r = score(m, DEFAULT, extras={"data_quality_warnings": dq, "execution_warnings": ex})
    assert 0.0 <= r.score_total <= 100.0
    assert all(0.0 <= c <= 1.0 for c in r.components.values())
    assert r.passed == (r.failed_gates == [])


@st.composite
def policies(draw: st.DrawFn) -> ScoringPolicy:
    names = draw(st.lists(st.sampled_from(CORE_METRICS), min_size=1, max_size=5, unique=True))
    comps = {}
    for name in names:
        lo = draw(st.floats(-10, 10))
        hi = draw(st.floats(-10, 10))
        assume(hi != lo)
        comps[name] = {"weight": draw(st.floats(0.01, 10)), "lo": lo, "hi": hi}
    return ScoringPolicy.model_validate({"policy_version": "prop", "components": comps})


@settings(max_examples=100, deadline=None)
@given(policy=policies(), m=candidates(), data=st.data())
def test_improving_a_metric_never_lowers_the_score(policy: ScoringPolicy,
                                                   m: dict[str, float],
                                                   data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(policy.components)))
    comp = policy.components[name]
    step = data.draw(st.floats(0, 100))
    better = dict(m)
    x = m[name]
    if math.isnan(x):  # from NaN (scored 0) to any value is never worse
        x = data.draw(st.floats(-20, 20))
        better[name] = x
    else:
        better[name] = x + step if comp.higher_is_better else x - step
    if name == "max_drawdown":
        better[name] = min(better[name], 0.0)
    before = score(m, policy).score_total
    after = score(better, policy).score_total
    assert after >= before


# ============================================================ bad policy files
def policy_error(tmp_path: Path, text: str) -> PolicyError:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    err = info.value
    assert str(path) in err.message  # the file is named
    assert err.error_class is ErrorClass.PERMANENT
    return err


BASE = "policy_version: x\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 2}\n"


@pytest.mark.parametrize(("text", "expected"), [
    # unknown metric: the key, a suggestion and the valid names
    ("policy_version: x\ncomponents:\n  sharpee: {weight: 1, lo: 0, hi: 2}\n",
     "components.sharpee: unknown metric 'sharpee' (did you mean 'sharpe'?); valid metrics: "
     "total_return, cagr"),
    # negative weight
    ("policy_version: x\ncomponents:\n  sharpe: {weight: -1, lo: 0, hi: 2}\n",
     "components.sharpe.weight: Input should be greater than 0"),
    # missing policy_version
    ("components:\n  sharpe: {weight: 1, lo: 0, hi: 2}\n",
     "policy_version: required key is missing"),
    # wrong types (no silent conversion of quoted numbers or booleans)
    (BASE + "gates: {min_trades: many}\n",
     "gates.min_trades: Input should be a valid integer (got 'many')"),
    ("policy_version: x\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: \"2\"}\n",
     "components.sharpe.hi: Input should be a valid number (got '2')"),
    (BASE + "gates: {min_trades: true}\n",
     "gates.min_trades: Input should be a valid integer (got True)"),
    ("policy_version: 1\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 2}\n",
     "policy_version: Input should be a valid string (got 1)"),
    ("policy_version: x\ncomponents:\n  sharpe: 3\n", "components.sharpe: Input should be"),
    # unknown keys, at the top level and inside a section
    (BASE + "gate: {}\n",
     "gate: unknown key; valid keys: policy_version, components, gates, penalties"),
    (BASE + "gates: {min_trade: 3}\n", "gates.min_trade: unknown key; valid keys: min_trades"),
    (BASE + "penalties: {dq: 3}\n", "penalties.dq: unknown key; valid keys: data_quality"),
    ("policy_version: x\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 2, w: 1}\n",
     "components.sharpe.w: unknown key; valid keys: weight, lo, hi"),
    # ranges
    (BASE + "gates: {max_drawdown: -0.35}\n",
     "gates.max_drawdown: Input should be greater than 0"),
    (BASE + "gates: {max_pbo: 1.5}\n", "gates.max_pbo: Input should be less than or equal to 1"),
    (BASE + "penalties: {execution_warning: -1}\n",
     "penalties.execution_warning: Input should be greater than or equal to 0"),
    ("policy_version: x\ncomponents:\n  sharpe: {weight: 1, lo: 2, hi: 2}\n",
     "components.sharpe: lo and hi must differ"),
    ("policy_version: x\ncomponents:\n  sharpe: {weight: 1, lo: .nan, hi: 2}\n",
     "components.sharpe.lo: Input should be a finite number"),
    ("policy_version: x\ncomponents: {}\n", "components: Dictionary should have at least 1"),
    ("policy_version: score v1\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 2}\n",
     "policy_version: use 1-64 letters"),
    # not a mapping at all
    ("", "the policy is empty"),
    ("- a\n- b\n", "a scoring policy must be a mapping, got list"),
])
def test_bad_policy_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    err = policy_error(tmp_path, text)
    assert err.code == "POLICY_INVALID"
    assert expected in err.message


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    err = policy_error(tmp_path, "components:\n  sharpe: {weight: 0, lo: 0, hi: 2}\n")
    assert "policy_version: required key is missing" in err.message
    assert "components.sharpe.weight: Input should be greater than 0" in err.message


@pytest.mark.parametrize(("text", "expected"), [
    # an unclosed flow mapping: found at line 4, opened at line 3
    ("policy_version: x\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 2\ngates: {}\n",
     "malformed YAML at line 4, column 6: expected ',' or '}', but got ':' "
     "(while parsing a flow mapping started at line 3, column 11)"),
    # bad indentation
    ("policy_version: x\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 2}\n bad: 1\n",
     "malformed YAML at line 4, column 2"),
    # a duplicate key would otherwise silently win
    ("policy_version: x\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 2}\n"
     "  sharpe: {weight: 2, lo: 0, hi: 2}\n",
     "malformed YAML at line 4, column 3: duplicate key 'sharpe' (first defined at line 3)"),
])
def test_malformed_yaml_names_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    err = policy_error(tmp_path, text)
    assert err.code == "POLICY_MALFORMED_YAML"
    assert expected in err.message


def test_exponent_numbers_are_floats(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) would read 5e-1 as a string; policies read it as YAML 1.2 does
    p = load_policy(write(tmp_path, BASE + "gates: {min_sharpe: 5e-1, max_turnover: 1E2}\n"))
    assert p.gates.min_sharpe == 0.5 and p.gates.max_turnover == 100.0


def test_not_found(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "nope.yaml")
    assert info.value.code == "POLICY_NOT_FOUND" and "nope.yaml" in info.value.message
    with pytest.raises(PolicyError) as info:
        load_policy("no-such-policy")
    assert info.value.code == "POLICY_NOT_FOUND"
    assert "'no-such-policy'" in info.value.message and "default" in info.value.message


# ============================================================ loading and the default
def test_load_from_path_and_string(tmp_path: Path) -> None:
    path = write(tmp_path, TEST_POLICY_YAML)
    assert load_policy(path) == POLICY
    assert load_policy(str(path)) == POLICY
    assert load_policy(POLICY) is POLICY
    assert ScoringPolicy.from_yaml(write(tmp_path, POLICY.to_yaml(), "again.yaml")) == POLICY


def test_bundled_default_policy() -> None:
    assert {"default", "score-v1", "score-v2"} <= set(bundled_policies())
    p = load_policy("default")
    assert p.policy_version == "score-v2"
    # every gate in force, but the factor gate, which only ranked books can meet
    assert all(v is not None for k, v in p.gates.model_dump().items() if k != "min_rank_ic_t")
    assert p.penalties.data_quality_warning > 0 and p.penalties.execution_warning > 0
    assert load_policy("default") is p  # parsed once


def test_score_v1_is_unchanged_and_still_loads() -> None:
    v1 = load_policy("score-v1")
    assert v1.policy_version == "score-v1"
    # the sha256 score-v1 was recorded with before score-v2 existed (the policy file
    # of commit 0e8fd50): its content never changes
    assert v1.content_hash == "39bb0529e17dd88f7f4eec3b276b8f36e166fbc1fc6584407788247242b2a376"
    assert v1.gates.min_excess_dsr is None and v1.gates.min_information_ratio is None
    v2 = load_policy("score-v2")
    # score-v2 is score-v1 plus the two relative gates
    assert v2.components == v1.components and v2.penalties == v1.penalties
    same = {k: v for k, v in v2.gates.model_dump().items()
            if k not in ("min_excess_dsr", "min_information_ratio")}
    assert same == {k: v for k, v in v1.gates.model_dump().items() if k in same}


def test_relative_gates_name_the_benchmark_and_both_numbers() -> None:
    good = {"sharpe": 0.8, "max_drawdown": -0.18, "cagr": 0.12, "calmar": 0.67,
            "profit_factor": 1.6, "turnover": 8.0, "n_trades": 120,
            "effective_history_years": 8.0}
    extras = {"dsr": 0.99, "pbo": 0.1, "excess_dsr": 0.31, "information_ratio": -0.05,
              "benchmark_sharpe": 0.83, "benchmark": "equal_weight(us_indices)"}
    r = score(good, DEFAULT, extras=extras)
    assert not r.passed
    assert r.failed_gates == ["min_excess_dsr", "min_information_ratio"]
    assert r.reasons[0] == ("excess_dsr 0.31 < min_excess_dsr 0.95 against benchmark "
                            "equal_weight(us_indices) (Sharpe 0.80 vs the benchmark's 0.83)")
    # against cash the same candidate passes the old policy
    assert score(good, load_policy("score-v1"), extras={"dsr": 0.99, "pbo": 0.1}).passed
    ok = score(good, DEFAULT, extras={**extras, "excess_dsr": 0.97, "information_ratio": 0.4})
    assert ok.passed and not any("benchmark" in x for x in ok.reasons)


def test_relative_gates_not_evaluated_without_a_benchmark() -> None:
    frame = pd.DataFrame([{"sharpe": 1.0, "n_trades": 50, "max_drawdown": -0.1,
                           "turnover": 2.0, "effective_history_years": 5.0, "dsr": 0.99,
                           "pbo": 0.1, "excess_dsr": 0.2, "information_ratio": 0.1,
                           "benchmark_sharpe": 0.9, "benchmark": "SPX"},
                          {"sharpe": 1.0, "n_trades": 50, "max_drawdown": -0.1,
                           "turnover": 2.0, "effective_history_years": 5.0, "dsr": 0.99,
                           "pbo": 0.1, "excess_dsr": np.nan, "information_ratio": np.nan,
                           "benchmark_sharpe": np.nan, "benchmark": None}])
    out = score_frame(frame, DEFAULT)
    assert out["passed"].tolist() == [False, True]
    assert "against benchmark SPX (Sharpe 1.00 vs the benchmark's 0.90)" in out["reasons"][0][0]
    assert any(x.startswith("excess_dsr not evaluated") for x in out["reasons"][1])
    one = score(frame.iloc[0].drop("benchmark").to_dict(), DEFAULT,
                extras={k: frame.iloc[0][k] for k in ("dsr", "pbo", "excess_dsr",
                                                      "information_ratio", "benchmark_sharpe",
                                                      "benchmark")})
    assert one.reasons == out["reasons"][0] and one.score_total == out["score_total"][0]


def test_default_policy_scores_a_plausible_candidate() -> None:
    good = {"sharpe": 1.2, "max_drawdown": -0.18, "cagr": 0.12, "calmar": 0.67,
            "profit_factor": 1.6, "turnover": 8.0, "n_trades": 120,
            "effective_history_years": 8.0}
    r = score(good, DEFAULT, extras={"dsr": 0.97, "pbo": 0.1, "excess_dsr": 0.96,
                                     "information_ratio": 0.5})
    assert r.passed and r.reasons == []
    assert 50 < r.score_total < 90
    weak = score({**good, "sharpe": 0.3, "n_trades": 12}, DEFAULT)
    assert not weak.passed and weak.failed_gates == ["min_trades", "min_sharpe"]
    assert weak.score_total < r.score_total


def test_example_policy_file_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
    p = load_policy(example)
    assert p.gates.max_pbo is None and p.gates.min_dsr == 0.9


def test_content_hash_ignores_comments_and_key_order(tmp_path: Path) -> None:
    reordered = ("penalties: {execution_warning: 10, data_quality_warning: 5}\n"
                 "gates: {min_history_years: 2, max_turnover: 10, max_drawdown: 0.25,\n"
                 "        min_sharpe: 0.5, min_trades: 30}\n"
                 "components:\n  turnover: {hi: 0, lo: 20, weight: 1}\n"
                 "  sharpe: {weight: 3.0, lo: 0.0, hi: 2.0}\npolicy_version: test-v1\n")
    p = load_policy(write(tmp_path, reordered))
    assert p.content_hash == POLICY.content_hash
    assert len(p.content_hash) == 64
    changed = POLICY.model_copy(update={"penalties": POLICY.penalties.model_copy(
        update={"execution_warning": 11.0})})
    assert changed.content_hash != POLICY.content_hash


def test_policy_is_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        POLICY.policy_version = "other"


# ============================================================ registry
def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_registry_records_first_use(tmp_path: Path) -> None:
    reg = PolicyRegistry(tmp_path / "policies")
    assert reg.versions() == [] and reg.get("test-v1") is None
    assert reg.record(POLICY) == POLICY.content_hash
    assert _files(reg.root) == ["test-v1.json"]  # no temporary file left
    stored = (reg.root / "test-v1.json").read_text()
    assert stored == POLICY.canonical_json() + "\n"
    assert json.loads(stored)["policy_version"] == "test-v1"
    assert reg.get("test-v1") == POLICY and reg.versions() == ["test-v1"]
    # the same content again (even from a differently written file) is fine
    assert reg.record(ScoringPolicy.model_validate(json.loads(stored))) == POLICY.content_hash


def test_registry_refuses_a_changed_policy_under_the_same_version(tmp_path: Path) -> None:
    reg = PolicyRegistry(tmp_path)
    reg.record(POLICY)
    before = (tmp_path / "test-v1.json").read_bytes()
    changed = POLICY.model_copy(update={"gates": POLICY.gates.model_copy(
        update={"min_trades": 10})})
    with pytest.raises(PolicyError) as info:
        reg.record(changed)
    err = info.value
    assert err.code == "POLICY_VERSION_CONFLICT" and err.error_class is ErrorClass.PERMANENT
    assert "'test-v1'" in err.message
    assert POLICY.content_hash in err.message and changed.content_hash in err.message
    assert (tmp_path / "test-v1.json").read_bytes() == before  # nothing overwritten
    # a new version is the way to change a policy
    renamed = changed.model_copy(update={"policy_version": "test-v2"})
    reg.record(renamed)
    assert reg.versions() == ["test-v1", "test-v2"]


def test_registry_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = PolicyRegistry(tmp_path)

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)  # fails after the bytes were written
    with pytest.raises(PolicyError) as info:
        reg.record(POLICY)
    assert info.value.code == "POLICY_REGISTRY_IO"
    assert info.value.error_class is ErrorClass.TRANSIENT
    assert _files(tmp_path) == []  # no partial record, no temporary file
    monkeypatch.undo()
    reg.record(POLICY)
    assert reg.get("test-v1") == POLICY


def test_registry_detects_a_concurrent_first_use(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # another process records different content between our check and our link
    reg = PolicyRegistry(tmp_path)
    other = POLICY.model_copy(update={"components": {"sharpe": POLICY.components["sharpe"]}})
    real_link = os.link

    def racing_link(src: str, dst: Any) -> None:
        Path(dst).write_text(other.canonical_json() + "\n")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(PolicyError) as info:
        reg.record(POLICY)
    assert info.value.code == "POLICY_VERSION_CONFLICT"
    assert reg.get("test-v1") == other  # the first writer's record stands
    assert _files(tmp_path) == ["test-v1.json"]


def test_registry_without_hard_links_falls_back_to_replace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: str, dst: Any) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    reg = PolicyRegistry(tmp_path)
    reg.record(POLICY)
    assert _files(tmp_path) == ["test-v1.json"] and reg.get("test-v1") == POLICY


def test_registry_corrupt_record(tmp_path: Path) -> None:
    (tmp_path / "test-v1.json").write_text('{"policy_version": "test-v1", "comp')
    with pytest.raises(PolicyError) as info:
        PolicyRegistry(tmp_path).record(POLICY)
    assert info.value.code == "POLICY_REGISTRY_CORRUPT"
    assert info.value.error_class is ErrorClass.CRITICAL
    assert "test-v1.json" in info.value.message


def test_registry_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))
    assert policies_dir() == tmp_path / "home" / "policies"
    reg = PolicyRegistry()
    reg.record(POLICY)
    assert (tmp_path / "home" / "policies" / "test-v1.json").is_file()
    monkeypatch.delenv("ALPHALOOP_HOME")
    assert policies_dir() == Path.home() / ".alphaloop" / "policies"


def test_components_may_score_relative_metrics() -> None:
    pol = ScoringPolicy.from_dict({"policy_version": "rel-t1", "components": {
        "information_ratio": {"weight": 1.0, "lo": 0.0, "hi": 1.0}}})
    # IR 0.25 on a 0..1 map is a quarter of full marks
    assert score({"information_ratio": 0.25}, pol).score_total == pytest.approx(25.0)
    frame = pd.DataFrame({"information_ratio": [0.25, 2.0, np.nan]})
    assert score_frame(frame, pol)["score_total"].tolist() == pytest.approx([25.0, 100.0, 0.0])
    with pytest.raises(PolicyError, match="unknown metric 'alpha'"):
        ScoringPolicy.from_dict({"policy_version": "rel-t2", "components": {
            "alpha": {"weight": 1.0, "lo": 0.0, "hi": 1.0}}})


def test_a_policy_file_cannot_take_a_bundled_policys_version(tmp_path: Path) -> None:
    """A black-box report: a file naming itself 'score-v2' was recorded under that
    version, after which the bundled default was refused as a conflict. The bundled
    text itself, copied into a file, still loads."""
    import yaml

    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"policy_version": "score-v2", "components": {
        "sharpe": {"weight": 1, "lo": 0, "hi": 2}}}))
    for given_as in (str(mine), mine):
        with pytest.raises(PolicyError) as info:
            load_policy(given_as)
        assert info.value.code == "POLICY_VERSION_RESERVED"
    copy = tmp_path / "copy.yaml"
    from alphaloop.evaluation import scoring

    copy.write_text((Path(scoring.__file__).parent / "policies" / "score-v2.yaml").read_text())
    assert load_policy(copy) == load_policy("default")
    own = tmp_path / "own.yaml"
    own.write_text(mine.read_text().replace("score-v2", "mine-v1"))
    assert load_policy(own).policy_version == "mine-v1"
