"""RunConfig (the loop's input) and RunSummary (its output): seed 003 §3.

Every key of seed 003 §3.1 is here with the seed's defaults, plus what a run needs to
be reproducible on its own: where the data comes from (``data.source``), what to
generate (``generation``), the one ``seed`` all randomness derives from (``run_id``
is identity only), the knowledge base, the output folder, the executor and the
learner switch. Unknown keys are refused, naming the key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alphaloop.errors import AlphaloopError
from alphaloop.yamlio import read_yaml, validate_mapping

STORED = "stored_run"
"""Validation context key: the config is a recorded run's, read to show it."""

STAGE_IDS = ("S10", "S20", "S30", "S40", "S50", "S60", "S65", "S70", "S75", "S80", "S85",
             "S90", "S95")
"""The iteration's stages (seed 004), in order."""


class ConfigError(AlphaloopError):
    """A run config that cannot be run (seed 004 ``INVALID_CONFIG``)."""

    code = "INVALID_CONFIG"


def utc(value: str) -> pd.Timestamp:
    """A date or time as a UTC timestamp (a naive one is read as UTC)."""
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ValueError(f"{value!r} is not a date")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def bar_interval(value: str) -> pd.Timedelta:
    """``1d``, ``4h``, ``5min``, ``30s``, ``1w`` (any case) as a time span."""
    text = value.strip().lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    if not number.isdigit() or int(number) == 0 or unit not in _UNITS:
        raise ValueError(f"{value!r} is not a bar interval (e.g. 1d, 1h, 5min)")
    return pd.Timedelta(seconds=int(number) * _UNITS[unit])


def _is_run_id(value: str) -> bool:
    # it names a folder: nothing in it may climb out of the runs folder or glob
    return 0 < len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_")
                                        for c in value)


def check_run_id(value: str) -> str:
    """``value`` if it is a run id (or a prefix of one), else ``ConfigError``."""
    if not _is_run_id(value):
        raise ConfigError(f"run id {value!r}: {RUN_ID_RULE}", code="INVALID_CONFIG")
    return value


RUN_ID_RULE = "use 1-64 letters, digits, '-' or '_'"


def run_label(run_id: str) -> str:
    """How a run is named in tables and titles: a generated id (a loop run's uuid, 32
    hex digits; an evaluation's sha256, 64) by its first 12, which any command takes
    as a prefix; a name the user chose in full, since two names may share their first
    12 characters."""
    generated = len(run_id) >= 32 and all(c in "0123456789abcdef" for c in run_id)
    return run_id[:12] if generated else run_id


# YAML says what it means: ``true`` is not 1, ``2.5`` is not 2, ``"3"`` is not a number
Int = Annotated[int, Strict()]
Num = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Budgets(_Strict):
    """A budget is a promise: the run stops at whichever is reached first."""

    max_iterations: Int = Field(default=200, ge=1, le=10_000_000)
    max_backtests: Int = Field(default=5000, ge=1)
    """Every engine A and engine B evaluation counts; the run never exceeds it."""
    max_walltime_sec: Num = Field(default=86400.0, gt=0)
    target_survivors: Int | None = Field(default=None, ge=1)
    """Stop with DONE_SUCCESS once this many strategies survived every gate."""


class Period(_Strict):
    """The part of the data the run uses, both ends included (dates, read as UTC)."""

    start: str | None = None
    end: str | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _yaml_date(cls, value: Any) -> Any:
        # YAML reads an unquoted 2020-01-31 as a date: take it as the text it was
        return value.isoformat() if isinstance(value, date) else value

    @field_validator("start", "end")
    @classmethod
    def _a_date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                utc(value)
            except (ValueError, TypeError):
                raise ValueError(f"{value!r} is not a date (e.g. 2015-01-31)") from None
        return value

    @model_validator(mode="after")
    def _in_order(self) -> Period:
        if self.start and self.end and utc(self.start) > utc(self.end):
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class Windows(_Strict):
    """Three windows of the data, in time order: search (engine A, scoring), validation
    (robustness: what the loop may learn from) and the final holdout, read only for a
    candidate about to become a survivor and never fed back."""

    validation: Num = Field(default=0.2, gt=0, lt=0.5)
    holdout: Num = Field(default=0.2, gt=0, lt=0.5)


class DataConfig(_Strict):
    source: str = "us_indices"
    """A bundled or imported data set name, or a CSV/Parquet path (as ``--data``)."""
    asset_class: Literal["equity", "crypto"] = "equity"
    universe_version: str = "v1"
    period: Period = Field(default_factory=Period)
    bar_interval: str | None = None
    """The data's bar spacing (``1d``, ``1h``, ``5min``): when given, the run refuses
    data whose typical (median) spacing is another; None takes the data as it is."""
    windows: Windows = Field(default_factory=Windows)

    @field_validator("bar_interval")
    @classmethod
    def _an_interval(cls, value: str | None) -> str | None:
        if value is not None:
            bar_interval(value)
        return value


class Engines(_Strict):
    exploration_engine: Literal["A"] = "A"
    verification_engine: Literal["B"] = "B"
    fees_bps: Num = Field(default=10.0, ge=0, le=1000)
    slippage_bps: Num = Field(default=5.0, ge=0, le=1000)
    execution: str | None = None
    """Engine B's execution model: a YAML path (``alphaloop verify --costs``); None =
    the realistic defaults."""


class EarlyStop(_Strict):
    patience_iters: Int = Field(default=30, ge=1)
    min_improve: Num = Field(default=0.02, ge=0)
    """Relative: the best score must rise by more than ``min_improve × |best|``."""


class Retry(_Strict):
    """Seed 003 §6 and seed 004 §4: retries for TRANSIENT errors only."""

    max_retries: Int = Field(default=3, ge=0, le=100)
    base_backoff_sec: Num = Field(default=2.0, ge=0, le=3600)
    max_backoff_sec: Num = Field(default=15.0, ge=0, le=86400)
    max_total_retries_per_iteration: Int = Field(default=5, ge=0)
    stage_max_attempts: dict[str, Int] = Field(
        default_factory=lambda: {"S40": 1, "S50": 2, "S70": 2, "S95": 3})
    """Attempts per stage id (seed 004 §4.1); other stages get ``default_attempts``."""
    default_attempts: Int = Field(default=2, ge=1, le=100)

    @field_validator("stage_max_attempts")
    @classmethod
    def _known_stages(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(STAGE_IDS))
        if unknown:
            raise ValueError(f"unknown stage id(s) {unknown}; the stages are {list(STAGE_IDS)}")
        few = sorted(k for k, v in value.items() if not 1 <= v <= 100)
        if few:
            raise ValueError(f"{few}: a stage has 1 to 100 attempts")
        return value

    @model_validator(mode="after")
    def _backoff_in_order(self) -> Retry:
        if self.base_backoff_sec > self.max_backoff_sec:
            raise ValueError(f"base_backoff_sec {self.base_backoff_sec:g} is above "
                             f"max_backoff_sec {self.max_backoff_sec:g}")
        return self


class Promotion(_Strict):
    top_k_to_verify: Int = Field(default=20, ge=1)
    score_threshold: Num = Field(default=70.0, ge=0, le=100)
    max_per_cluster: Int = Field(default=1, ge=1)
    """Seed 003 §8: at most this many per similarity cluster go to verification."""
    cluster_correlation: Num = Field(default=0.9, gt=0, le=1)
    min_oos_ratio: Num = Field(default=0.3, ge=0, le=10)
    """Robustness: the validation-window Sharpe must be positive and at least this
    share of the search-window Sharpe (out-of-sample decay)."""


class Stops(_Strict):
    """Soft stops of seed 004 §5.2 and safety stops of seed 003 §7.3."""

    empty_shortlist_iters: Int = Field(default=3, ge=1)
    min_deduped: Int = Field(default=10, ge=0)
    low_generation_iters: Int = Field(default=3, ge=1)
    b_failure_rate: Num = Field(default=0.7, gt=0, le=1)
    max_lookahead: Int = Field(default=1, ge=1)
    max_non_deterministic: Int = Field(default=2, ge=1)
    max_dq_critical: Int = Field(default=1, ge=1)
    max_branch_repeats: Int = Field(default=2, ge=1)
    """A branch taken this many times in a row without effect, once more, raises
    ``PIPE_BRANCH_LOOP_DETECTED`` (seed 004 §8)."""


class Policies(_Strict):
    early_stop: EarlyStop = Field(default_factory=EarlyStop)
    retry: Retry = Field(default_factory=Retry)
    promotion: Promotion = Field(default_factory=Promotion)
    stops: Stops = Field(default_factory=Stops)
    scoring: str = "default"
    """A bundled scoring policy name or a YAML path; fixed for the run."""


class Scenario(_Strict):
    enabled: Bool = False
    scenario_id: str | None = None
    path: str | None = None
    """A research brief (YAML): families to favour or avoid (DESIGN §5)."""
    policy: Literal["reject", "ignore", "soft"] = "ignore"


class Generation(_Strict):
    families: tuple[str, ...] = ("sma_cross",)
    sampler: Literal["grid", "random", "sobol", "tpe"] = "sobol"
    candidates_per_iteration: Int = Field(default=200, ge=1, le=1_000_000)
    max_growth: Num = Field(default=4.0, ge=1.0, le=100.0)
    """After an empty shortlist the next iteration asks for twice the candidates (seed
    004 §6.3 branch C), up to this multiple of ``candidates_per_iteration``."""
    max_widenings: Int = Field(default=3, ge=0, le=20)
    """When nothing new is left to test, a family's ranges grow by their own width
    (seed 004 §6.2 branch A) at most this many times a run; 0 turns the branch off."""

    @field_validator("families")
    @classmethod
    def _known(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        from alphaloop.strategy.templates import FAMILIES

        if not value:
            raise ValueError("at least one family is needed")
        if info.context and info.context.get(STORED):
            # a recorded run's config, read to show the run: its families may have
            # been registered by the Python process that ran it, not by this one
            return value
        unknown = [f for f in value if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; known: {sorted(FAMILIES)} "
                             "(a family added in Python exists only in that process)")
        return value


def _anchored(value: str | None, info: ValidationInfo,
              absolute: Callable[[str], str]) -> str | None:
    """Where a new run keeps its records, made absolute (and ``~`` expanded) against
    the directory it starts in, so that ``status``, ``resume`` and ``report`` find them
    from any other. A recorded run's config is read as it was written."""
    if value is None or (info.context and info.context.get(STORED)):
        return value
    return absolute(value)


class KBConfig(_Strict):
    url: str | None = Field(default=None, min_length=1)
    """Any SQLAlchemy URL but an in-memory one (the run's records would vanish with
    it); None = ``sqlite:///$ALPHALOOP_HOME/kb.sqlite``."""
    busy_timeout_s: Num = Field(default=5.0, ge=0, le=600)
    """How long a write waits for another writer's lock before it counts as locked."""
    share_work: Bool = True
    """Claim each backtest in the knowledge base first and store its result there, so
    that runs sharing the database backtest no strategy twice
    (:mod:`alphaloop.orchestrator.claims`). ``false`` saves that cost (a result's
    metrics and per-bar returns written once more) for a run that knows it is alone;
    results are the same either way."""
    claim_lease_s: Num = Field(default=60.0, gt=0, le=86400)
    """How long a claim on a batch of backtests holds without its owner renewing it;
    past it, another run sharing the knowledge base takes the work over
    (:mod:`alphaloop.orchestrator.claims`)."""
    claim_poll_s: Num = Field(default=0.2, gt=0, le=60)
    """How often a run waiting for another run's claimed work looks again."""

    @field_validator("url")
    @classmethod
    def _kept(cls, value: str | None, info: ValidationInfo) -> str | None:
        from alphaloop.kb.store import anchored_url, is_in_memory

        if value is not None and is_in_memory(value):
            raise ValueError("an in-memory SQLite database forgets the run when it ends "
                             "(no status, resume or report): give a file, "
                             "sqlite:///path/kb.sqlite")
        return _anchored(value, info, anchored_url)


class ExecutorConfig(_Strict):
    """Where engine A's batches run; never what they give (see
    :mod:`alphaloop.orchestrator.executors`)."""

    kind: Literal["local", "ray"] = "local"
    workers: Int | None = Field(default=None, ge=1, le=1024)
    """Processes (local; None = 1) or chunks at once (ray; None = the cluster's CPUs)."""
    address: str | None = Field(default=None, min_length=1, max_length=500)
    """Ray only: ``auto``, ``host:port`` (a head node), ``ray://host:port`` (Ray Client),
    or None: a private Ray on this machine for the run."""

    @model_validator(mode="after")
    def _address_fits(self) -> ExecutorConfig:
        a = self.address
        if a is None:
            return self
        if self.kind != "ray":
            raise ValueError("executor.address is for kind 'ray' only")
        host_port = a.removeprefix("ray://").rsplit(":", 1)
        if a != "auto" and not (len(host_port) == 2 and host_port[0]
                                and host_port[1].isdigit()):
            raise ValueError(f"executor.address {a!r}: use auto, host:port or "
                             "ray://host:port")
        return self


class Learning(_Strict):
    enabled: Bool = True


class WorldLink(_Strict):
    """Where survivors go (seed 000): a WorldService, one of its worlds, and the
    environment variable that holds the bearer token (never the token itself)."""

    url: str = Field(min_length=1)
    id: str = Field(min_length=1)
    token_env: str = "ALPHALOOP_WORLD_TOKEN"

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        try:
            port_ok = parts.port is None or parts.port >= 0  # reading it checks 0-65535
        except ValueError:
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise ValueError(f"{value!r} is not a WorldService address: use "
                             "http(s)://host:port")
        return value


BASE_SET = "cs_base"
"""The default ``base_constraint_set_id``: no rule (no database needs to hold it)."""


class RunConfig(_Strict):
    """Everything a run needs; the same config and data give the same RunSummary."""

    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    mode: Literal["exploration", "verification", "mixed"] = "mixed"
    seed: Int = Field(default=0, ge=0, le=2**63 - 1)
    budgets: Budgets = Field(default_factory=Budgets)
    data: DataConfig = Field(default_factory=DataConfig)
    engines: Engines = Field(default_factory=Engines)
    policies: Policies = Field(default_factory=Policies)
    base_constraint_set_id: str = BASE_SET
    """The constraint set the run starts from: the default starts from no rule; any
    other id must name a set the knowledge base holds."""
    scenario: Scenario = Field(default_factory=Scenario)
    generation: Generation = Field(default_factory=Generation)
    kb: KBConfig = Field(default_factory=KBConfig)
    out_dir: str | None = Field(default=None, min_length=1)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    learning: Learning = Field(default_factory=Learning)
    benchmark: str | None = Field(default=None, min_length=1, max_length=500)
    """What a candidate must beat (issue "beta is not alpha"): ``equal_weight`` (the
    causal equal-weight buy-and-hold of the panel), ``cash``, a symbol of the panel or a
    CSV/Parquet series. None: the scoring policy's benchmark, else ``equal_weight``."""
    world: WorldLink | None = None

    @field_validator("out_dir")
    @classmethod
    def _absolute_out_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _anchored(value, info, lambda v: str(Path(v).expanduser().absolute()))

    @field_validator("run_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _is_run_id(value):
            raise ValueError(RUN_ID_RULE)
        return value

    @model_validator(mode="after")
    def _windows_leave_a_search(self) -> RunConfig:
        w = self.data.windows
        if w.validation + w.holdout >= 0.8:
            raise ValueError("data.windows: validation + holdout must leave at least 20 % "
                             "of the data for the search")
        return self

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "run config") -> RunConfig:
        return validate_mapping(cls, {} if data is None else data, source=source,
                                what="a run config", error=ConfigError, code="INVALID_CONFIG")

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        data = read_yaml(path, ConfigError, what="run config", not_found="INVALID_CONFIG",
                         malformed="INVALID_CONFIG")
        if data is None:  # an empty file is more likely an accident than a choice
            raise ConfigError(f"{path}: the run config is empty; write {{}} to run with "
                              "every default", code="INVALID_CONFIG")
        return cls.from_dict(data, source=str(path))

    def identity(self) -> dict[str, Any]:
        """The config without its identity (run_id) and where it is stored: what decides
        the results. Two runs with equal identities give equal RunSummaries."""
        return self.model_dump(mode="json", exclude={"run_id", "kb", "out_dir", "executor"})


class BestStrategy(_Strict):
    """A survivor: it passed every gate (scores, engine B, robustness, the holdout).
    Its Sharpe ratios per window (annualized), the DSR it was deflated to, the
    iteration's PBO and engine B's Sharpe on the search window."""

    strategy_id: str
    score_total: float
    family: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    iteration: int
    sharpe_search: float
    sharpe_validation: float
    sharpe_holdout: float
    dsr: float
    pbo: float | None = None
    engine_b_sharpe: float


class RunStats(_Strict):
    """Seed 003 §3.2 counts of a run: iterations done, backtests (engine A and B
    evaluations), failure records, constraints added; the trials DSR deflated by (this
    run's and earlier ones' on the same data) and candidates reused from earlier runs."""

    iterations: int = 0
    backtests: int = 0
    failures: int = 0
    constraints_added: int = 0
    trials: int = 0
    reused: int = 0


class IterationSummary(_Strict):
    """Seed 003 §9 counts of one iteration, the best score so far and stage timings."""

    iteration: int
    state: str
    generated_candidates: int
    deduped_candidates: int
    tested_A: int
    reused_A: int
    promoted_to_B: int
    passed_B: int
    passed_robustness: int
    survivors: int
    failures_created: int
    constraints_added: int
    best_score: float | None
    best_score_so_far: float | None
    best_verified_score: float | None = None
    """The best score_total among this iteration's candidates engine B verified."""
    best_verified_so_far: float | None = None
    forbidden_share: float | None = None
    """The share of the families' parameter space the rules in force forbid (mean over
    the families; Monte Carlo over the samplers' prior). None without learning."""
    constraint_set_id: str | None = None
    branches: tuple[str, ...] = ()
    diversity: dict[str, Any] = Field(default_factory=dict)
    """Seed 003 §8 of the shortlist: families, clusters, held back by the one-per-cluster
    rule, parameter spread (see :func:`alphaloop.orchestrator.stages.diversity`)."""
    stage_ms: dict[str, float] = Field(default_factory=dict)


class RunSummary(_Strict):
    """What a run ended with (seed 003 §3.2): its ``status`` (a final RunState, or
    ``RUNNING`` while it runs), why it stopped, ``best_strategies`` (only candidates
    that passed every gate, best first), ``stats`` and one
    :class:`IterationSummary` per iteration (``iterations_frame`` as a DataFrame).
    ``Runner(...).run()`` returns it; ``summary.json`` in the run folder holds it."""

    run_id: str
    status: str
    stop_reason: str | None = None
    best_strategies: tuple[BestStrategy, ...] = ()
    stats: RunStats = Field(default_factory=RunStats)
    iterations: tuple[IterationSummary, ...] = ()

    @property
    def iterations_frame(self) -> pd.DataFrame:
        """One row per iteration (seed 003 §9 counts, best scores, stage timings)."""
        rows = [it.model_dump(mode="json") for it in self.iterations]
        frame = pd.DataFrame(rows)
        return frame.set_index("iteration") if len(frame) else frame

    @property
    def best_frame(self) -> pd.DataFrame:
        """The survivors, best first."""
        frame = pd.DataFrame([b.model_dump(mode="json") for b in self.best_strategies])
        return frame.set_index("strategy_id") if len(frame) else frame

    def comparable(self) -> dict[str, Any]:
        """Everything but the identity and the timings: what must be equal between an
        interrupted-and-resumed run and an uninterrupted one of the same config."""
        data = self.model_dump(mode="json", exclude={"run_id"})
        for it in data["iterations"]:
            it.pop("stage_ms", None)
        return data
