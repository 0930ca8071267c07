"""The world service's operations, independent of HTTP: worlds, policies, evaluation
runs, decisions and the risk signal hub. :mod:`alphaloop.world.app` maps them to routes.

Every write is one transaction that also appends its audit record and its control-bus
event; reads that decide what to write (revision numbers, "is this content new") are
made inside that transaction, which holds the write lock from its first statement.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from alphaloop.errors import AlphaloopError
from alphaloop.world import audit
from alphaloop.world.db import Database, Prepared
from alphaloop.world.errors import WorldError, invalid, not_found
from alphaloop.world.models import (
    EvaluationRevision,
    EvaluationRun,
    LiveCandidate,
    World,
    WorldPolicy,
    table,
)
from alphaloop.world.policy import WorldPolicy as Policy
from alphaloop.world.policy import judge as judge_gates
from alphaloop.world.policy import parse_policy
from alphaloop.world.schemas import (
    CohortIn,
    CohortItem,
    CohortOut,
    EvaluateIn,
    EvaluationOut,
    PolicyOut,
    RevisionOut,
    RunOut,
    WorldIn,
    WorldOut,
)
from alphaloop.world.sourcing import (
    LIVE_LIKE,
    PAPER_LIKE,
    MetricMap,
    Previous,
    Sourced,
    data_source,
    source,
)

_POLICIES: dict[str, Policy] = {}

# The hot path's statements, built once: building a statement (and its cache key) costs
# several times what executing it does. Values are bound at execution; the Prepared ones
# run on SQLite's driver in write transactions (see alphaloop.world.db.Prepared).
_W, _P = table(World), table(WorldPolicy)
_RUN, _REV = table(EvaluationRun), table(EvaluationRevision)
_LOAD = Prepared(
    select(_W.c.world_id, _W.c.name, _W.c.data, _W.c.policy_version, _W.c.created_at,
           _P.c.version, _P.c.ruleset_hash)
    .select_from(_W.outerjoin(_P, (_P.c.world_id == _W.c.world_id)
                              & (_P.c.version == _W.c.policy_version)))
    .where(_W.c.world_id == bindparam("world_id")))
_POLICY_BODY = select(_P.c.body).where(_P.c.world_id == bindparam("world_id"),
                                       _P.c.version == bindparam("version"))
_RUN_ROW = Prepared(select(_RUN.c.strategy_id, _RUN.c.stage, _RUN.c.revision).where(
    _RUN.c.world_id == bindparam("world_id"), _RUN.c.run_id == bindparam("run_id")))
_REVISION = select(_REV).where(_REV.c.world_id == bindparam("world_id"),
                               _REV.c.run_id == bindparam("run_id"),
                               _REV.c.revision == bindparam("revision"))
_INSERT_RUN = Prepared(insert(_RUN), ("world_id", "run_id", "strategy_id", "stage", "spec",
                                      "revision", "outcome", "created_at", "updated_at"))
_INSERT_REVISION = Prepared(insert(_REV), (
    "world_id", "run_id", "revision", "content_hash", "policy_version", "ruleset_hash",
    "metrics", "metric_sources", "risk", "rules", "outcome", "actor", "created_at"))
_RUN_KEY = (_RUN.c.world_id == bindparam("w_id")) & (_RUN.c.run_id == bindparam("r_id"))
_REVISE_RUN = update(_RUN).where(_RUN_KEY)


def _policy(ruleset_hash: str, body: dict[str, Any]) -> Policy:
    """A stored policy, parsed once: versions never change, so their hash names them."""
    found = _POLICIES.get(ruleset_hash)
    if found is None:
        found = _POLICIES[ruleset_hash] = Policy.model_validate(body)
    return found


_SPECS: dict[str, Any] = {}  # a spec's JSON (sorted keys) -> its StrategySpec (frozen)
_SPECS_MAX = 4096


def _parsed_spec(spec: dict[str, Any], source: str) -> Any:
    """``StrategySpec.from_dict(spec)``, remembered by the spec's JSON: strategies are
    submitted again and again, and parsing one and hashing its id cost more than the rest
    of a judgement. Only specs that parse are remembered (an error names its ``source``)."""
    from alphaloop.strategy.spec import StrategySpec

    try:
        key = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # not JSON (not from a request): not remembered
        return StrategySpec.from_dict(spec, source=source)
    found = _SPECS.get(key)
    if found is None:
        found = StrategySpec.from_dict(spec, source=source)
        _ = found.strategy_id  # computed once (a cached property of the frozen spec)
        if len(_SPECS) >= _SPECS_MAX:
            _SPECS.clear()
        _SPECS[key] = found
    return found


def ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@dataclass(frozen=True)
class WorldRow:
    """A world's stored fields (the ``worlds`` row) as one read saw them."""

    world_id: str
    name: str
    data: str | None
    policy_version: int | None
    created_at: float


@dataclass(frozen=True)
class Revision:
    """An ``evaluation_revisions`` row as written (what :meth:`revision_out` reads)."""

    world_id: str
    run_id: str
    revision: int
    content_hash: str
    policy_version: int
    ruleset_hash: str
    metrics: dict[str, Any]
    metric_sources: list[str]
    risk: dict[str, Any] | None
    rules: list[dict[str, Any]]
    outcome: str
    actor: str
    created_at: float


@dataclass(frozen=True)
class WorldState:
    """A world with its current policy, as one read sees them."""

    world: WorldRow
    policy: Policy
    version: int
    ruleset_hash: str


@dataclass(frozen=True)
class Judged:
    """An evaluation ready to be written: everything but its revision number."""

    run_id: str
    strategy_id: str
    stage: str
    spec: dict[str, Any] | None
    sourced: Sourced
    outcome: str
    rules: list[dict[str, Any]]
    state: WorldState

    def content(self) -> dict[str, Any]:
        return {"strategy_id": self.strategy_id, "stage": self.stage,
                "metrics": self.sourced.metrics, "sources": self.sourced.sources,
                "risk": self.sourced.risk, "rules": self.rules, "outcome": self.outcome,
                "policy_version": self.state.version, "ruleset_hash": self.state.ruleset_hash}


@dataclass(frozen=True)
class Subject:
    """What one evaluation request is about, before sourcing."""

    run_id: str
    stage: str
    strategy_id: str
    spec: Any  # StrategySpec | None (imported lazily: the strategy language is heavy)
    metrics: MetricMap | None
    returns: np.ndarray | None
    ppy: float


class WorldService:
    def __init__(self, db: Database, refs_root: Path) -> None:
        self.db = db
        self.refs_root = refs_root.resolve()

    # ------------------------------------------------------------------ worlds

    def load(self, conn: Session, world_id: str) -> WorldState:
        """The world and its current policy: one query, and the policy's body only when
        its ruleset hash was never parsed here (a version's body never changes)."""
        row = _LOAD.first(conn, {"world_id": world_id})
        if row is None:
            raise not_found("world", world_id, "world_id")
        world = WorldRow(*row[:5])
        version, ruleset_hash = row[5:]
        if ruleset_hash is None:
            raise NoResultFound(f"world {world_id!r} has no policy v{world.policy_version}")
        policy = _POLICIES.get(ruleset_hash)
        if policy is None:
            body = conn.execute(_POLICY_BODY, {"world_id": world_id,
                                               "version": version}).scalar_one()
            policy = _policy(ruleset_hash, body)
        return WorldState(world, policy, version, ruleset_hash)

    def world_out(self, state: WorldState, created: bool = False) -> WorldOut:
        w = state.world
        return WorldOut(world_id=w.world_id, name=w.name, data=w.data,
                        policy_version=state.version, ruleset_hash=state.ruleset_hash,
                        policy=state.policy.model_dump(mode="json"),
                        created_at=ts(w.created_at), created=created)

    def get_world(self, world_id: str) -> WorldOut:
        with self.db.read() as conn:
            return self.world_out(self.load(conn, world_id))

    def create_world(self, body: WorldIn, actor: str) -> WorldOut:
        """Create a world with its policy as version 1 (the default policy if none).

        Creating the same world again with the same fields is a no-op; with other
        fields it is a 409 (a world is changed through its policy, not re-created).
        """
        policy = parse_policy(body.policy if body.policy is not None else {})
        if body.data is not None:
            data_source(self.refs_root, body.data)  # a dataset name or a file we may read
        with self.db.write() as conn:
            existing = conn.execute(select(World).where(
                World.world_id == body.world_id)).scalar_one_or_none()
            if existing is not None:
                return self._recreated(conn, existing, body, policy)
            now = time.time()
            conn.execute(insert(table(World)), dict(
                world_id=body.world_id, name=body.name, data=body.data, policy_version=1,
                created_at=now))
            self._insert_policy(conn, body.world_id, 1, policy, actor, now)
            after = audit.content_hash(body.model_dump(mode="json"))
            audit.record(conn, actor=actor, action="world.create", target=body.world_id,
                         world_id=body.world_id, after=after)
            audit.emit(conn, body.world_id, "world_created", {"world_id": body.world_id})
            return self.world_out(self.load(conn, body.world_id), created=True)

    def _recreated(self, conn: Session, existing: World, body: WorldIn,
                   policy: Policy) -> WorldOut:
        state = self.load(conn, existing.world_id)
        same = (existing.name == body.name and existing.data == body.data
                and state.ruleset_hash == policy.ruleset_hash())
        if not same:
            raise WorldError(f"world_id: world {body.world_id!r} exists with other fields; "
                             "change its policy with PUT /worlds/{id}/policy",
                             code="WORLD_EXISTS", status=409, field="world_id")
        return self.world_out(state)

    @staticmethod
    def _insert_policy(conn: Session, world_id: str, version: int, policy: Policy,
                       actor: str, now: float) -> None:
        conn.execute(insert(table(WorldPolicy)), dict(
            world_id=world_id, version=version, body=policy.model_dump(mode="json"),
            ruleset_hash=policy.ruleset_hash(), created_at=now, actor=actor))

    def put_policy(self, world_id: str, data: Any, actor: str) -> PolicyOut:
        """A new policy version; the same content as the current one is a no-op.

        Versions are never rewritten, so every evaluation's recorded version keeps
        meaning what it meant.
        """
        policy = parse_policy(data)
        with self.db.write() as conn:
            state = self.load(conn, world_id)
            new_hash = policy.ruleset_hash()
            if new_hash == state.ruleset_hash:
                return PolicyOut(world_id=world_id, version=state.version, ruleset_hash=new_hash,
                                 policy=policy.model_dump(mode="json"), created=False)
            version = state.version + 1
            now = time.time()
            self._insert_policy(conn, world_id, version, policy, actor, now)
            conn.execute(update(World).where(World.world_id == world_id)
                         .values(policy_version=version))
            audit.record(conn, actor=actor, action="policy.update", target=f"v{version}",
                         world_id=world_id, before=state.ruleset_hash, after=new_hash)
            audit.emit(conn, world_id, "policy_updated",
                       {"version": version, "ruleset_hash": new_hash})
            off = "LIVE_NOT_ALLOWED" if not policy.allow_live else (
                "LIVE_PROMOTION_DISABLED"
                if policy.governance.live_promotion.mode == "disabled" else None)
            if off is not None:
                self._revoke_live(conn, world_id, off, actor, now)
        return PolicyOut(world_id=world_id, version=version, ruleset_hash=new_hash,
                         policy=policy.model_dump(mode="json"), created=True)

    @staticmethod
    def _revoke_live(conn: Session, world_id: str, reason: str, actor: str,
                     now: float) -> None:
        """Live switched off (``allow_live: false`` or mode ``disabled``) applies at once
        and lasts: every live target goes back to paper, each switch audited, so that
        switching live on again takes a new activation (and, under ``manual_approval``,
        a new approval) instead of reviving the old one."""
        rows = conn.execute(select(LiveCandidate.strategy_id, LiveCandidate.broker).where(
            LiveCandidate.world_id == world_id, LiveCandidate.target == "live")).all()
        for sid, broker in rows:
            conn.execute(update(LiveCandidate).where(
                LiveCandidate.world_id == world_id, LiveCandidate.strategy_id == sid)
                .values(target="paper", status="paper", reasons=[reason], plan_hash=None,
                        updated_at=now, actor=actor))
            audit.record(conn, actor=actor, action="activation.revoke", world_id=world_id,
                         target=f"{sid}:live->paper@{broker}",
                         before=audit.content_hash({"target": "live"}),
                         after=audit.content_hash({"target": "paper", "reason": reason}))
            audit.emit(conn, world_id, "activation_updated",
                       {"strategy_id": sid, "from": "live", "to": "paper", "broker": broker,
                        "plan_hash": None, "applied": True, "reason": reason})

    # ------------------------------------------------------------- evaluation

    def subject(self, conn: Session, *, run_id: str, stage: str, strategy_id: str | None,
                spec: dict[str, Any] | None, metrics: MetricMap | None,
                returns: list[float] | None, ppy: float, where: str = "") -> Subject:
        """Check what a request names: the spec parses, the id matches, the world or
        the knowledge base knows a strategy given by id only."""
        if returns is not None and stage not in LIVE_LIKE:
            raise invalid(f"{where}realized_returns",
                          f"realized returns belong to the paper, live, shadow or dryrun "
                          f"stage, not {stage}")
        parsed = None
        if spec is not None:
            try:
                parsed = _parsed_spec(spec, f"{where}spec")
            except AlphaloopError as exc:
                raise WorldError(exc.message, code="SPEC_INVALID", field=f"{where}spec") from exc
            if strategy_id is not None and strategy_id != parsed.strategy_id:
                raise invalid(f"{where}strategy_id", f"{strategy_id} is not the id of the "
                              f"given spec ({parsed.strategy_id})", "STRATEGY_ID_MISMATCH")
            strategy_id = parsed.strategy_id
        elif strategy_id is None:
            raise invalid(f"{where}spec", "give a spec or a strategy_id", "STRATEGY_MISSING")
        else:
            parsed = self._known_spec(conn, strategy_id)
        array = None if returns is None else np.asarray(returns, dtype=float)
        return Subject(run_id, stage, strategy_id, parsed, metrics, array, ppy)

    def _known_spec(self, conn: Session, strategy_id: str) -> Any:
        from alphaloop.strategy.spec import StrategySpec

        stmt = (select(EvaluationRun.spec).where(EvaluationRun.strategy_id == strategy_id,
                                                 EvaluationRun.spec.is_not(None)).limit(1))
        found = conn.execute(stmt).scalar_one_or_none()
        if found is None:
            from alphaloop.kb.models import Strategy

            found = conn.execute(select(Strategy.spec).where(
                Strategy.strategy_id == strategy_id)).scalar_one_or_none()
        if found is None:
            return None
        try:
            return StrategySpec.model_validate(found)
        except ValueError:  # a stored spec this version cannot read: as if unknown
            return None

    def previous(self, conn: Session, world_id: str, strategy_id: str, stage: str,
                 run_id: str) -> Previous | None:
        """The newest revision of the strategy's *other* runs here at ``stage``, else at
        a stage of the same kind (paper, dryrun, shadow; live): the run's own earlier
        revision is not a source (a retry must find what the first try found), and a
        backtest's numbers are never paper or live evidence, nor the other way round."""
        kind = (stage,) if stage in ("backtest", "live") else PAPER_LIKE
        base = (select(EvaluationRun.run_id, EvaluationRun.revision)
                .where(EvaluationRun.world_id == world_id,
                       EvaluationRun.strategy_id == strategy_id,
                       EvaluationRun.run_id != run_id)
                .order_by(EvaluationRun.updated_at.desc()).limit(1))
        row = conn.execute(base.where(EvaluationRun.stage == stage)).first() \
            or conn.execute(base.where(EvaluationRun.stage.in_(kind))).first()
        if row is None:
            return None
        metrics = conn.execute(select(EvaluationRevision.metrics).where(
            EvaluationRevision.world_id == world_id, EvaluationRevision.run_id == row.run_id,
            EvaluationRevision.revision == row.revision)).scalar_one()
        return Previous(row.run_id, row.revision, metrics)

    def judge(self, conn: Session, state: WorldState, subj: Subject) -> Judged:
        from alphaloop.world.hub import hub_view

        if subj.metrics is not None:
            sourced = Sourced(metrics=subj.metrics, sources=["request"])
        else:
            world_id = state.world.world_id
            sourced = source(
                subj.stage, previous=self.previous(conn, world_id, subj.strategy_id, subj.stage,
                                                   subj.run_id),
                hub=hub_view(conn, self.refs_root, state, subj.strategy_id),
                request_returns=subj.returns, ppy=subj.ppy, spec=subj.spec,
                data=state.world.data, refs_root=self.refs_root)
        outcome, results = judge_gates(state.policy.gates_for(subj.stage), sourced.metrics)  # type: ignore[arg-type]
        spec = None if subj.spec is None else subj.spec.model_dump(mode="json")
        return Judged(subj.run_id, subj.strategy_id, subj.stage, spec, sourced, outcome,
                      [r.model_dump() for r in results], state)

    def write(self, conn: Session, j: Judged, actor: str) -> tuple[Revision, bool]:
        """Store one judged evaluation as the run's next revision, unless it equals the
        latest one (a retried request). Returns the latest revision and whether written."""
        world_id = j.state.world.world_id
        run = _RUN_ROW.first(conn, {"world_id": world_id, "run_id": j.run_id})
        digest = audit.content_hash(j.content())
        if run is not None:
            strategy_id, stage, revision = run
            latest = self._revision(conn, world_id, j.run_id, revision)
            if (strategy_id, stage) != (j.strategy_id, j.stage):
                raise WorldError(f"run_id: run {j.run_id!r} is about strategy "
                                 f"{strategy_id[:12]}… at stage {stage}",
                                 code="RUN_ID_CONFLICT", status=409, field="run_id")
            if latest.content_hash == digest:
                return latest, False
        now = time.time()
        number = 1 if run is None else run[2] + 1
        self._upsert_run(conn, j, run is not None, number, now)
        values = dict(world_id=world_id, run_id=j.run_id, revision=number, content_hash=digest,
                      policy_version=j.state.version, ruleset_hash=j.state.ruleset_hash,
                      metrics=j.sourced.metrics, metric_sources=j.sourced.sources,
                      risk=j.sourced.risk, rules=j.rules, outcome=j.outcome, actor=actor,
                      created_at=now)
        _INSERT_REVISION.run(conn, values)
        before = None if run is None else latest.content_hash
        audit.record(conn, actor=actor,
                     action="evaluation.revise" if run else "evaluation.create",
                     target=f"{j.run_id}@{number}", world_id=world_id, before=before,
                     after=digest)
        audit.emit(conn, world_id, "evaluation_run_updated",
                   {"run_id": j.run_id, "revision": number, "strategy_id": j.strategy_id,
                    "stage": j.stage, "outcome": j.outcome})
        return Revision(**values), True  # type: ignore[arg-type]

    @staticmethod
    def _upsert_run(conn: Session, j: Judged, exists: bool, number: int, now: float) -> None:
        world_id = j.state.world.world_id
        if not exists:
            _INSERT_RUN.run(conn, dict(
                world_id=world_id, run_id=j.run_id, strategy_id=j.strategy_id, stage=j.stage,
                spec=j.spec, revision=number, outcome=j.outcome, created_at=now,
                updated_at=now))
            return
        values: dict[str, Any] = dict(revision=number, outcome=j.outcome, updated_at=now)
        if j.spec is not None:  # without one the stored spec stays
            values["spec"] = j.spec
        # the SET clause is the parameters' columns
        conn.execute(_REVISE_RUN, {**values, "w_id": world_id, "r_id": j.run_id})

    @staticmethod
    def _revision(conn: Session, world_id: str, run_id: str, number: int) -> Revision:
        row = conn.execute(_REVISION, {"world_id": world_id, "run_id": run_id,
                                       "revision": number}).one()
        return Revision(**row._mapping)

    @staticmethod
    def revision_out(rev: Revision | EvaluationRevision) -> RevisionOut:
        return RevisionOut(revision=rev.revision, content_hash=rev.content_hash,
                           policy_version=rev.policy_version, ruleset_hash=rev.ruleset_hash,
                           metrics=rev.metrics, metric_sources=rev.metric_sources, risk=rev.risk,
                           rules=rev.rules, outcome=rev.outcome,  # type: ignore[arg-type]
                           actor=rev.actor, created_at=ts(rev.created_at))

    def evaluation_out(self, j: Judged, rev: Revision, written: bool) -> EvaluationOut:
        return EvaluationOut(world_id=j.state.world.world_id, run_id=j.run_id,
                             strategy_id=j.strategy_id, stage=j.stage,  # type: ignore[arg-type]
                             written=written, latest=self.revision_out(rev))

    def get_run(self, world_id: str, run_id: str) -> RunOut:
        with self.db.read() as conn:
            self.load(conn, world_id)
            run = conn.execute(select(EvaluationRun).where(
                EvaluationRun.world_id == world_id,
                EvaluationRun.run_id == run_id)).scalar_one_or_none()
            if run is None:
                raise not_found("run", run_id, "run_id")
            revs = conn.execute(select(EvaluationRevision).where(
                EvaluationRevision.world_id == world_id, EvaluationRevision.run_id == run_id)
                .order_by(EvaluationRevision.revision)).scalars().all()
        return RunOut(world_id=world_id, run_id=run_id, strategy_id=run.strategy_id,
                      stage=run.stage, outcome=run.outcome,  # type: ignore[arg-type]
                      revisions=[self.revision_out(r) for r in revs])

    # ---------------------------------------------------------- entry points

    def evaluate(self, world_id: str, body: EvaluateIn, actor: str) -> EvaluationOut:
        """Judge one strategy under the world's current policy and store the run."""
        if body.metrics is not None:  # nothing to source: read, judge and write at once
            def judge_and_write(conn: Session) -> tuple[Judged, Revision, bool]:
                judged = self._judge_request(conn, world_id, body)
                return judged, *self.write(conn, judged, actor)

            judged, rev, written = self.db.transact(judge_and_write)
            return self.evaluation_out(judged, rev, written)
        with self.db.read() as conn:  # sourcing may run engine B: not under the write lock
            judged = self._judge_request(conn, world_id, body)
        rev, written = self.db.transact(lambda conn: self.write(conn, judged, actor))
        return self.evaluation_out(judged, rev, written)

    def _judge_request(self, conn: Session, world_id: str, body: EvaluateIn) -> Judged:
        metrics = None if body.metrics is None else body.metrics.model_dump()
        state = self.load(conn, world_id)
        subj = self.subject(conn, run_id=body.run_id, stage=body.stage,
                            strategy_id=body.strategy_id, spec=body.spec, metrics=metrics,
                            returns=body.realized_returns, ppy=body.periods_per_year)
        return self.judge(conn, state, subj)

    def evaluate_cohort(self, world_id: str, body: CohortIn, actor: str) -> CohortOut:
        """Judge many strategies; all their runs are written in one transaction."""
        with self.db.read() as conn:
            state = self.load(conn, world_id)
            judged = [self.judge(conn, state, self._cohort_subject(conn, body, i, item))
                      for i, item in enumerate(body.items)]
        run_ids = [j.run_id for j in judged]
        if len(set(run_ids)) != len(run_ids):
            raise invalid("items", "two items resolve to the same run_id", "DUPLICATE_RUN_ID")
        written = self.db.transact(lambda conn: [self.write(conn, j, actor) for j in judged])
        return CohortOut(world_id=world_id, run_id=body.run_id,
                         results=[self.evaluation_out(j, rev, w)
                                  for j, (rev, w) in zip(judged, written, strict=True)])

    def _cohort_subject(self, conn: Session, body: CohortIn, i: int,
                        item: CohortItem) -> Subject:
        metrics = None if item.metrics is None else item.metrics.model_dump()
        subj = self.subject(conn, run_id=item.run_id or body.run_id, stage=body.stage,
                            strategy_id=item.strategy_id, spec=item.spec, metrics=metrics,
                            returns=item.realized_returns, ppy=body.periods_per_year,
                            where=f"items.{i}.")
        if item.run_id is None:  # the default key: one run per strategy of the cohort
            run_id = f"{body.run_id}:{subj.strategy_id[:16]}"
            if len(run_id) > 128:
                raise invalid("run_id", "too long to derive the items' run ids (max 111 "
                              "characters when items have none)")
            subj = replace(subj, run_id=run_id)
        return subj
