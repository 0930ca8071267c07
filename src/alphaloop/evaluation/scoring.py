"""Scoring policy (MOD-430/431): metrics → ``score_total`` in 0..100, gates → pass/fail.

A policy is a small, versioned YAML document::

    policy_version: score-v1
    components:                       # metric → linear map onto 0..1
      sharpe:       {weight: 0.30, lo: 0.0,  hi: 2.0}
      max_drawdown: {weight: 0.20, lo: -0.5, hi: 0.0}
      turnover:     {weight: 0.10, lo: 50.0, hi: 5.0}   # hi < lo: lower is better
    gates:                            # null or absent = gate off
      min_trades: 30
      min_sharpe: 0.5
      max_drawdown: 0.35              # a positive fraction: drawdown no worse than -35 %
      max_turnover: 50
      min_history_years: 3
      min_dsr: 0.95                   # robustness gates: only when a value is given
      max_pbo: 0.3
      min_excess_dsr: 0.95            # relative gates: only when a benchmark was given
      min_information_ratio: 0.3
      min_rank_ic_t: 2.0              # factor gate: ranked books only (optional)
    penalties:                        # points off score_total, per warning
      data_quality_warning: 5
      execution_warning: 10

Semantics (they hold for :func:`score` and :func:`score_frame` alike; the two share
one vectorized implementation, so a frame row scores exactly like a single call):

- **Components.** Each metric ``x`` becomes ``c = clip((x - lo) / (hi - lo), 0, 1)``:
  0 at ``lo``, 1 at ``hi``, linear between and flat outside. ``hi < lo`` means "lower
  is better". ``+inf`` maps to the ``hi`` side when ``hi > lo`` (a profit factor with
  no losing trade), ``-inf`` to the ``lo`` side. A NaN or missing metric scores 0
  and adds a reason. Metric names are those of
  :data:`alphaloop.engines.metrics.CORE_METRICS`; ``max_drawdown`` is the engine's
  non-positive fraction, so "less drawdown is better" is ``lo: -0.5, hi: 0.0``.
- **score_total** ``= clip(100 * sum(w_i * c_i) / sum(w_i) - penalty, 0, 100)``
  with ``penalty = data_quality_warning * n_dq + execution_warning * n_exec``.
  Components are summed in metric-name order, so two policies with the same content
  give bit-identical scores. Penalties lower the score but never fail a gate.
- **Gates.** ``n_trades >= min_trades``, ``sharpe >= min_sharpe``,
  ``max_drawdown >= -max_drawdown``, ``turnover <= max_turnover``,
  ``effective_history_years >= min_history_years``. Thresholds are inclusive. A gate
  whose metric is NaN or missing *fails* (fail closed), with a reason.
- **Robustness gates** ``min_dsr`` / ``max_pbo`` need the Deflated Sharpe Ratio and
  the Probability of Backtest Overfitting, which exist only after the ROBUSTNESS
  stage. They are applied when a value is given (``extras`` for :func:`score`, a
  ``dsr`` / ``pbo`` column for :func:`score_frame`). When no value is given (absent,
  None or NaN: a frame cannot tell these apart, and a row must score like a single
  call) the gate is *not evaluated*: it does not fail, and the result carries the
  reason ``"dsr not evaluated ..."`` so that nobody mistakes an exploration-stage
  pass for a verified one. The orchestrator re-scores with the robustness values
  before anything is promoted, and must treat a "not evaluated" reason at that
  point as a failure (a DSR that could not be computed is not a pass).
- **Relative gates** ``min_excess_dsr`` / ``min_information_ratio`` read the DSR of the
  excess returns over the benchmark and the information ratio (``excess_dsr`` /
  ``information_ratio``); like the robustness gates they are *not evaluated* when no
  value is given (no benchmark). A failure names the benchmark (``benchmark``, a text
  extra or column) and quotes the strategy's and the benchmark's Sharpe ratios
  (``sharpe``, ``benchmark_sharpe``): ``"excess_dsr 0.31 < min_excess_dsr 0.95 against
  benchmark equal_weight (Sharpe 0.80 vs the benchmark's 0.83)"``.
- **Factor gate** ``min_rank_ic_t`` reads the Newey-West t-statistic of the rank IC
  of a cross-sectional book's score (``rank_ic_t``, see
  :mod:`alphaloop.evaluation.factors`), measured at the book's rebalance horizon on
  the same window as the metrics. It concerns ranked books only: a row without a
  value (NaN: a sleeve strategy) is not judged by it and gets no reason; a ranked book
  whose IC could not be measured carries 0 (no evidence), which fails.
- **passed** is True when no gate failed. ``reasons`` lists, in a fixed order, every
  failed gate with its actual value and threshold (``"n_trades 12 < min_trades
  30"``), then the robustness gates not evaluated, the penalties and the components
  that scored 0 because their metric was NaN. ``failed_gates`` names the failed
  gates only (``["min_trades"]``), for failure analysis.

Immutability: :attr:`ScoringPolicy.content_hash` is the sha256 of the policy's
canonical JSON (comments and key order do not count). :class:`PolicyRegistry`
remembers the content of every version the first time it is used and refuses a
later use of the same version with different content (``POLICY_VERSION_CONFLICT``).
A changed policy needs a new ``policy_version``.

Bad policy files raise :class:`PolicyError` whose message names the file and the
dotted key path (``policy.yaml: gates.max_drawdown: Input should be greater than
0``), or the line and column of malformed YAML. Values are strictly typed: a
quoted number is an error, not silently converted.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from alphaloop.engines.metrics import CORE_METRICS, RELATIVE_METRICS
from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.yamlio import read_yaml

__all__ = [
    "EXTRA_KEYS",
    "GATE_METRICS",
    "Component",
    "Gates",
    "Penalties",
    "PolicyError",
    "PolicyRegistry",
    "ScoreResult",
    "ScoringPolicy",
    "bundled_policies",
    "load_policy",
    "policies_dir",
    "score",
    "score_frame",
]

POLICY_DIR = Path(__file__).resolve().parent / "policies"

#: Inputs besides the core metrics: robustness values, benchmark-relative values and
#: warning counts.
EXTRA_KEYS: tuple[str, ...] = ("dsr", "pbo", "excess_dsr", "information_ratio",
                               "benchmark_sharpe", "rank_ic_t", "data_quality_warnings",
                               "execution_warnings")

#: The benchmark's name (text): named in the relative gates' reasons.
BENCHMARK_KEY = "benchmark"

#: Metrics a component may score: the core metrics and the relative ones.
COMPONENT_METRICS: tuple[str, ...] = (*CORE_METRICS, *RELATIVE_METRICS)

#: The bundled policy ``load_policy("default")`` gives: the benchmark-relative one.
#: ``score-v1`` (against cash only) stays loadable by its name.
DEFAULT_POLICY = "score-v2"

#: The metric (or extra) each gate reads.
GATE_METRICS: dict[str, str] = {
    "min_trades": "n_trades",
    "min_sharpe": "sharpe",
    "max_drawdown": "max_drawdown",
    "max_turnover": "turnover",
    "min_history_years": "effective_history_years",
    "min_dsr": "dsr",
    "max_pbo": "pbo",
    "min_excess_dsr": "excess_dsr",
    "min_information_ratio": "information_ratio",
    "min_rank_ic_t": "rank_ic_t",
}
# applied only when a value is given (robustness stage, a benchmark): else "not evaluated"
_ROBUSTNESS_GATES = ("min_dsr", "max_pbo", "min_excess_dsr", "min_information_ratio")
_RELATIVE_GATES = ("min_excess_dsr", "min_information_ratio")
# ranked books only: NaN = a sleeve strategy, to which the gate does not apply
_FACTOR_GATES = ("min_rank_ic_t",)
# gates added after policies were written: absent from the canonical JSON when off, so
# the content hash of an earlier policy does not change
_LATER_GATES = _FACTOR_GATES
_WARNING_COUNTS = ("data_quality_warnings", "execution_warnings")

_VERSION_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # also a safe file name


# ============================================================ errors
class PolicyError(AlphaloopError):
    """A scoring policy that cannot be used, or a policy version used with two contents.

    Codes: ``POLICY_INVALID`` (a key is missing, unknown or ill-typed),
    ``POLICY_MALFORMED_YAML``, ``POLICY_NOT_FOUND``, ``POLICY_VERSION_CONFLICT``,
    ``POLICY_REGISTRY_CORRUPT`` (CRITICAL: a stored record cannot be read back),
    ``POLICY_REGISTRY_IO`` (TRANSIENT: the record could not be written).
    """

    code = "POLICY_INVALID"
    error_class = ErrorClass.PERMANENT


# ============================================================ the policy model
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Component(_Strict):
    """One metric's share of the score: ``weight`` and the linear map ``lo → 0, hi → 1``."""

    weight: float = Field(gt=0, allow_inf_nan=False)
    lo: float = Field(allow_inf_nan=False)
    hi: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _lo_ne_hi(self) -> Component:
        if self.lo == self.hi:
            raise ValueError(f"lo and hi must differ (both are {self.lo!r})")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.hi > self.lo

    def value(self, x: np.ndarray) -> np.ndarray:
        """``clip((x - lo) / (hi - lo), 0, 1)``; NaN → 0."""
        with np.errstate(invalid="ignore", over="ignore"):
            c = np.clip((x - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        return np.where(np.isnan(c), 0.0, c)


class Gates(_Strict):
    """Pass/fail thresholds; ``None`` (or absent) turns a gate off."""

    min_trades: int | None = Field(default=None, ge=0)
    min_sharpe: float | None = Field(default=None, allow_inf_nan=False)
    max_drawdown: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    max_turnover: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    min_history_years: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    min_dsr: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_pbo: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    min_excess_dsr: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    min_information_ratio: float | None = Field(default=None, allow_inf_nan=False)
    min_rank_ic_t: float | None = Field(default=None, allow_inf_nan=False)


class Penalties(_Strict):
    """Points subtracted from ``score_total`` per warning of each kind."""

    data_quality_warning: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False)
    execution_warning: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False)


class ScoringPolicy(_Strict):
    """A versioned scoring policy (see the module docstring for the semantics)."""

    policy_version: str

    @field_validator("policy_version")
    @classmethod
    def _safe_version(cls, value: str) -> str:
        if not re.match(_VERSION_RE, value):
            raise ValueError(f"use 1-64 letters, digits, '.', '_' or '-', starting with a "
                             f"letter or digit (got {value!r})")
        return value
    components: dict[str, Component] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates)
    penalties: Penalties = Field(default_factory=Penalties)
    #: what to measure against when the caller names nothing (None: equal_weight); see
    #: alphaloop.evaluation.benchmark. Absent from the canonical JSON when None, so the
    #: content hash of a policy written before this key existed does not change.
    benchmark: str | None = Field(default=None, min_length=1, max_length=500)

    @field_validator("components", mode="before")
    @classmethod
    def _known_metrics(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for key in value:
                if key not in COMPONENT_METRICS:
                    close = difflib.get_close_matches(str(key), COMPONENT_METRICS, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(
                        f"components.{key}: unknown metric {key!r}{hint}; valid metrics: "
                        + ", ".join(COMPONENT_METRICS)
                    )
        return value

    # -------------------------------------------------------------- identity
    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, floats as floats: the text that is hashed and stored."""
        data = self.model_dump(mode="json")
        if data["benchmark"] is None:
            del data["benchmark"]
        for gate in _LATER_GATES:
            if data["gates"][gate] is None:
                del data["gates"][gate]
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    # -------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "policy") -> ScoringPolicy:
        if data is None:
            raise PolicyError(f"{source}: the policy is empty", code="POLICY_INVALID")
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: a scoring policy must be a mapping, "
                              f"got {type(data).__name__}", code="POLICY_INVALID")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise PolicyError(f"{source}: {_format_errors(exc)}",
                              code="POLICY_INVALID") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ScoringPolicy:
        data = read_yaml(path, PolicyError, what="policy", not_found="POLICY_NOT_FOUND",
                         malformed="POLICY_MALFORMED_YAML")
        return cls.from_dict(data, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc`` (for "valid keys" hints)."""
    if not loc:
        return ScoringPolicy
    if loc == ("gates",):
        return Gates
    if loc == ("penalties",):
        return Penalties
    if len(loc) == 2 and loc[0] == "components":
        return Component
    return None


def _format_errors(exc: ValidationError) -> str:
    """One ``dotted.key: reason`` per problem, joined by ``; ``."""
    parts = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(x) for x in loc) or "policy"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            valid = f"; valid keys: {', '.join(model.model_fields)}" if model else ""
            msg = f"unknown key{valid}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"].endswith("_type") or err["type"].endswith("_parsing"):
            msg = f"{msg} (got {err['input']!r})"
        # a validator that already names the full key path (components.<metric>: ...)
        parts.append(msg if msg.startswith(f"{path}.") else f"{path}: {msg}")
    return "; ".join(parts)


# ============================================================ loading
def bundled_policies() -> list[str]:
    """Names of the policies shipped with alphaloop (``load_policy(name)``): each file's
    name (its policy_version) and ``default`` (:data:`DEFAULT_POLICY`)."""
    return sorted({"default", *(p.stem for p in POLICY_DIR.glob("*.yaml"))})


@functools.lru_cache(maxsize=16)
def _load_bundled(name: str) -> ScoringPolicy:
    stem = DEFAULT_POLICY if name == "default" else name
    return ScoringPolicy.from_yaml(POLICY_DIR / f"{stem}.yaml")


def load_policy(path_or_name: str | Path | ScoringPolicy) -> ScoringPolicy:
    """A policy from a YAML file path or a bundled name (``"default"`` is
    :data:`DEFAULT_POLICY`; ``"score-v1"`` the earlier policy against cash).

    A string that names an existing file, contains a path separator or ends in
    ``.yaml``/``.yml`` is a path; otherwise it is a bundled name. A
    :class:`ScoringPolicy` is returned unchanged.
    """
    if isinstance(path_or_name, ScoringPolicy):
        return path_or_name
    if isinstance(path_or_name, Path):
        return _not_bundled_version(ScoringPolicy.from_yaml(path_or_name))
    if not isinstance(path_or_name, str):
        raise PolicyError(f"a policy is a path or a bundled name, got "
                          f"{type(path_or_name).__name__}", code="POLICY_NOT_FOUND")
    s = path_or_name
    looks_like_path = ("/" in s or os.sep in s or s.endswith((".yaml", ".yml"))
                       or Path(s).is_file())
    if looks_like_path:
        return _not_bundled_version(ScoringPolicy.from_yaml(s))
    if s in bundled_policies():
        return _load_bundled(s)
    raise PolicyError(f"no bundled scoring policy named {s!r} and no such file; bundled: "
                      + ", ".join(bundled_policies()), code="POLICY_NOT_FOUND")


def _not_bundled_version(policy: ScoringPolicy) -> ScoringPolicy:
    """A policy file may not take a bundled policy's version with other content: the
    version names the policy in every record, and the first use would bind the name
    to the file's rules, so that the bundled policy could no longer be used."""
    version = policy.policy_version
    if version in bundled_policies() and version != "default":
        bundled = _load_bundled(version)
        if bundled.content_hash != policy.content_hash:
            raise PolicyError(f"policy_version {version!r} is the bundled policy's (content "
                              f"sha256 {bundled.content_hash}); give your policy a version "
                              "of its own", code="POLICY_VERSION_RESERVED")
    return policy


# ============================================================ registry
def policies_dir() -> Path:
    """``$ALPHALOOP_HOME/policies`` (``ALPHALOOP_HOME`` defaults to ``~/.alphaloop``)."""
    env = os.environ.get("ALPHALOOP_HOME")
    home = Path(env).expanduser() if env else Path.home() / ".alphaloop"
    return home / "policies"


class PolicyRegistry:
    """The record of every policy version used, one ``<policy_version>.json`` each.

    :meth:`record` is called at run start. The first use of a version stores its
    canonical JSON; later uses must have the same content (same
    :attr:`~ScoringPolicy.content_hash`) or raise ``POLICY_VERSION_CONFLICT``.

    The record is written to a temporary file in the same folder, fsynced, then
    hard-linked into place, which fails if another process recorded the version
    first (that content is then compared instead of overwritten). Where hard links
    are not supported it falls back to ``os.replace``. Either way a reader sees the
    whole record or none, and an interrupted write leaves no partial file.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else policies_dir()

    def path(self, version: str) -> Path:
        if not isinstance(version, str) or not re.match(_VERSION_RE, version):
            raise PolicyError(f"bad policy_version {version!r}", code="POLICY_INVALID")
        return self.root / f"{version}.json"

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json")
                      if re.match(_VERSION_RE, p.stem))

    def get(self, version: str) -> ScoringPolicy | None:
        """The recorded policy of ``version``, or None if it was never used."""
        path = self.path(version)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            policy = ScoringPolicy.model_validate(data)
        except (OSError, ValueError) as exc:  # JSONDecodeError and ValidationError too
            raise PolicyError(f"{path}: recorded policy cannot be read back: {exc}",
                              code="POLICY_REGISTRY_CORRUPT",
                              error_class=ErrorClass.CRITICAL) from None
        if policy.policy_version != version:
            raise PolicyError(f"{path}: records policy_version {policy.policy_version!r}, "
                              f"expected {version!r}", code="POLICY_REGISTRY_CORRUPT",
                              error_class=ErrorClass.CRITICAL)
        return policy

    def _check_same(self, policy: ScoringPolicy, stored: ScoringPolicy) -> None:
        if stored.content_hash != policy.content_hash:
            raise PolicyError(
                f"policy_version {policy.policy_version!r} is already recorded with different "
                f"content (recorded sha256 {stored.content_hash}, this one "
                f"{policy.content_hash}); policy versions are immutable once used: give the "
                f"changed policy a new policy_version", code="POLICY_VERSION_CONFLICT")

    def check(self, policy: ScoringPolicy) -> None:
        """``POLICY_VERSION_CONFLICT`` now, before any work, if :meth:`record` would
        refuse ``policy``; records nothing."""
        stored = self.get(policy.policy_version)
        if stored is not None:
            self._check_same(policy, stored)

    def record(self, policy: ScoringPolicy) -> str:
        """Record the first use of ``policy.policy_version``; return its content hash."""
        path = self.path(policy.policy_version)
        stored = self.get(policy.policy_version)
        if stored is not None:
            self._check_same(policy, stored)
            return policy.content_hash
        text = policy.canonical_json() + "\n"
        tmp: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{policy.policy_version}.",
                                       suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # recorded meanwhile by another process: compared below
            except OSError:
                os.replace(tmp, path)
                tmp = None
        except OSError as exc:
            raise PolicyError(f"cannot record policy {policy.policy_version!r} under "
                              f"{self.root}: {exc}", code="POLICY_REGISTRY_IO",
                              error_class=ErrorClass.TRANSIENT) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        stored = self.get(policy.policy_version)
        if stored is None:  # pragma: no cover - removed by someone else in between
            raise PolicyError(f"{path} vanished right after it was written",
                              code="POLICY_REGISTRY_IO", error_class=ErrorClass.TRANSIENT)
        self._check_same(policy, stored)
        return policy.content_hash


# ============================================================ scoring
class ScoreResult(BaseModel):
    """The score of one candidate under one policy version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_version: str
    policy_hash: str
    score_total: float = Field(ge=0, le=100)
    passed: bool
    reasons: list[str]
    failed_gates: list[str]
    components: dict[str, float]  # each in 0..1, before weighting
    penalty: float = Field(ge=0)  # points subtracted (before clipping at 0)


@dataclass
class _Scored:
    score_total: np.ndarray
    passed: np.ndarray
    penalty: np.ndarray
    components: dict[str, np.ndarray]
    reasons: list[list[str]]
    failed_gates: list[list[str]]


def _num(x: float, other: float | None = None) -> str:
    """A short, readable number; exact when the short form would equal ``other``."""
    x = float(x)
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        s = str(int(x))
    else:
        s = f"{x:.6g}"
    if other is not None and x != other and s == _num(other):
        s = repr(x)
    return s


def _needed(policy: ScoringPolicy) -> list[str]:
    names = set(policy.components) | set(EXTRA_KEYS)
    gates = {g for g, thr in policy.gates.model_dump().items() if thr is not None}
    names |= {GATE_METRICS[g] for g in gates}
    if gates & set(_RELATIVE_GATES):  # their reasons quote both Sharpe ratios
        names |= {"sharpe", "benchmark_sharpe"}
    return sorted(names)


def _against(i: int, benchmarks: Sequence[str | None] | None, sharpe: np.ndarray,
             bench_sharpe: np.ndarray) -> str:
    """' against benchmark NAME (Sharpe x vs the benchmark's y)" for a relative gate'."""
    name = benchmarks[i] if benchmarks is not None else None
    text = f" against benchmark {name}" if name else " against the benchmark"
    if math.isfinite(sharpe[i]) and math.isfinite(bench_sharpe[i]):
        text += f" (Sharpe {sharpe[i]:.2f} vs the benchmark's {bench_sharpe[i]:.2f})"
    return text


def _evaluate(cols: Mapping[str, np.ndarray], n: int, policy: ScoringPolicy,
              benchmarks: Sequence[str | None] | None = None) -> _Scored:
    """The vectorized core: ``cols`` maps input names to float64 arrays of length n;
    an absent name means "not given" (NaN for metrics, 0 for warning counts).
    ``benchmarks`` names each row's benchmark, for the relative gates' reasons."""
    nan = np.full(n, np.nan)

    def col(name: str) -> np.ndarray:
        return cols.get(name, nan)

    dd = col("max_drawdown")
    if np.any(dd > 0):
        first = float(dd[np.flatnonzero(dd > 0)[0]])
        raise ValueError(f"max_drawdown must be <= 0 (a non-positive fraction, as "
                         f"alphaloop.engines.metrics computes it); got {first!r}")

    # ---- components, summed in name order (bit-identical for equal content)
    names = sorted(policy.components)
    comps: dict[str, np.ndarray] = {}
    weighted = np.zeros(n)
    wsum = 0.0
    for name in names:
        comp = policy.components[name]
        c = comp.value(col(name))
        comps[name] = c
        weighted = weighted + comp.weight * c
        wsum += comp.weight
    base = 100.0 * weighted / wsum

    # ---- penalties
    counts: dict[str, np.ndarray] = {}
    for key in ("data_quality_warnings", "execution_warnings"):
        v = cols.get(key)
        if v is None:
            counts[key] = np.zeros(n)
            continue
        if np.any(v < 0):
            raise ValueError(f"{key} must be >= 0; got {float(v[np.flatnonzero(v < 0)[0]])!r}")
        counts[key] = np.where(np.isnan(v), 0.0, v)
    pts = policy.penalties
    dq_pen = pts.data_quality_warning * counts["data_quality_warnings"]
    ex_pen = pts.execution_warning * counts["execution_warnings"]
    penalty = dq_pen + ex_pen
    score_total = np.clip(base - penalty, 0.0, 100.0)

    # ---- gates
    reasons: list[list[str]] = [[] for _ in range(n)]
    failed: list[list[str]] = [[] for _ in range(n)]
    pending: list[list[str]] = [[] for _ in range(n)]  # robustness gates not evaluated
    passed = np.ones(n, dtype=bool)
    gates = policy.gates.model_dump()
    for gate, metric in GATE_METRICS.items():
        thr = gates[gate]
        if thr is None:
            continue
        thr = float(thr)
        x = col(metric)
        # robustness gates: NaN = no value given = not evaluated; others fail closed
        absent = np.isnan(x) if gate in _ROBUSTNESS_GATES else np.zeros(n, dtype=bool)
        if gate in _FACTOR_GATES:  # not a ranked book: the gate does not concern it
            absent = np.isnan(x)
        isnan = np.isnan(x) & ~absent
        with np.errstate(invalid="ignore"):
            if gate == "max_drawdown":
                bad = x < -thr
            elif gate.startswith("min_"):
                bad = x < thr
            else:
                bad = x > thr
        fail = (bad | isnan) & ~absent
        passed &= ~fail
        op = "<" if gate.startswith("min_") or gate == "max_drawdown" else ">"
        for i in np.flatnonzero(fail):
            failed[i].append(gate)
            if isnan[i]:
                reasons[i].append(f"{metric} is NaN or missing: {gate} {_num(thr)} cannot be "
                                  f"checked (fails closed)")
            elif gate == "max_drawdown":
                reasons[i].append(f"max_drawdown {_num(x[i], -thr)} < {_num(-thr)} "
                                  f"(gate max_drawdown {_num(thr)})")
            elif gate in _RELATIVE_GATES:
                reasons[i].append(f"{metric} {_num(x[i], thr)} {op} {gate} {_num(thr)}"
                                  + _against(int(i), benchmarks, col("sharpe"),
                                             col("benchmark_sharpe")))
            else:
                reasons[i].append(f"{metric} {_num(x[i], thr)} {op} {gate} {_num(thr)}")
        if gate in _FACTOR_GATES:
            continue
        for i in np.flatnonzero(absent):
            pending[i].append(f"{metric} not evaluated (no value given): {gate} {_num(thr)} "
                              f"not applied")
    for row, notes in zip(reasons, pending, strict=True):
        row.extend(notes)

    for i in np.flatnonzero(dq_pen > 0):
        reasons[i].append(f"penalty {_num(dq_pen[i])} points: "
                          f"{_num(counts['data_quality_warnings'][i])} data-quality "
                          f"warning(s) x {_num(pts.data_quality_warning)}")
    for i in np.flatnonzero(ex_pen > 0):
        reasons[i].append(f"penalty {_num(ex_pen[i])} points: "
                          f"{_num(counts['execution_warnings'][i])} execution "
                          f"warning(s) x {_num(pts.execution_warning)}")
    for name in names:
        for i in np.flatnonzero(np.isnan(col(name))):
            reasons[i].append(f"component {name} is NaN or missing: scored 0 "
                              f"(weight {_num(policy.components[name].weight)})")

    return _Scored(score_total, passed, penalty, comps, reasons, failed)


def _as_float(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        raise ValueError(f"{name} must be a number; got the string {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None


def _check_policy(policy: Any) -> ScoringPolicy:
    if not isinstance(policy, ScoringPolicy):
        raise TypeError(f"policy must be a ScoringPolicy (see load_policy); "
                        f"got {type(policy).__name__}")
    return policy


def score(metrics: Mapping[str, Any], policy: ScoringPolicy, *,
          extras: Mapping[str, Any] | None = None) -> ScoreResult:
    """Score one candidate's ``metrics`` (a mapping of core metric names to numbers).

    ``extras`` may carry ``dsr`` and ``pbo`` (robustness gates; absent, None or NaN =
    not evaluated), ``excess_dsr``, ``information_ratio``, ``benchmark_sharpe`` and
    ``benchmark`` (its name; the relative gates, likewise); a value absent from
    ``extras`` is read from ``metrics`` (warning counts excepted), as a frame row would and the warning counts ``data_quality_warnings`` and
    ``execution_warnings`` (absent or None = 0). Metric names the policy does not use
    are ignored; a metric the policy uses that is absent or None counts as NaN.

    Raises ``ValueError`` for a non-numeric value, a positive ``max_drawdown``, a
    negative warning count or an unknown ``extras`` key.
    """
    policy = _check_policy(policy)
    extras = dict(extras or {})
    bench = extras.pop(BENCHMARK_KEY, None)
    if bench is not None and not isinstance(bench, str):
        raise ValueError(f"{BENCHMARK_KEY} must be a name (text); got {bench!r}")
    unknown = sorted(set(extras) - set(EXTRA_KEYS))
    if unknown:
        raise ValueError(f"unknown extras key(s) {', '.join(map(repr, unknown))}; "
                         f"valid keys: {', '.join((*EXTRA_KEYS, BENCHMARK_KEY))}")
    cols: dict[str, np.ndarray] = {}
    for name in _needed(policy):
        if name in EXTRA_KEYS and extras.get(name) is not None:
            cols[name] = np.array([_as_float(name, extras[name])])
        elif name in metrics and name not in _WARNING_COUNTS:  # counts come as extras
            cols[name] = np.array([_as_float(name, metrics[name])])
    out = _evaluate(cols, 1, policy, [bench])
    return ScoreResult(
        policy_version=policy.policy_version,
        policy_hash=policy.content_hash,
        score_total=float(out.score_total[0]),
        passed=bool(out.passed[0]),
        reasons=out.reasons[0],
        failed_gates=out.failed_gates[0],
        components={k: float(v[0]) for k, v in out.components.items()},
        penalty=float(out.penalty[0]),
    )


def score_frame(frame: pd.DataFrame, policy: ScoringPolicy) -> pd.DataFrame:
    """Score every row of ``frame`` (one candidate per row, one metric per column).

    Returns a copy with the columns ``score_total`` (float), ``passed`` (bool),
    ``failed_gates`` and ``reasons`` (lists of str) added or replaced. Extras are
    read from columns of the same names as :func:`score`'s ``extras``: ``dsr`` /
    ``pbo`` (a missing value = not evaluated for that row) and the warning counts
    (missing = 0). Row ``i`` scores exactly as
    ``score(row_i_metrics, policy, extras=row_i_extras)``. The numbers are computed
    column-wise; only the reason strings are built per row that has one.
    """
    policy = _check_policy(policy)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame; got {type(frame).__name__}")
    n = len(frame)
    cols: dict[str, np.ndarray] = {}
    for name in _needed(policy):
        if name not in frame.columns:
            continue
        try:
            arr = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {name!r} must be numeric: {exc}") from None
        cols[name] = arr
    names = (frame[BENCHMARK_KEY].astype(object).where(frame[BENCHMARK_KEY].notna(), None)
             .tolist() if BENCHMARK_KEY in frame.columns else None)
    out = _evaluate(cols, n, policy, names)
    result = frame.copy()
    result["score_total"] = out.score_total
    result["passed"] = out.passed
    result["failed_gates"] = pd.Series(out.failed_gates, index=frame.index, dtype=object)
    result["reasons"] = pd.Series(out.reasons, index=frame.index, dtype=object)
    return result
