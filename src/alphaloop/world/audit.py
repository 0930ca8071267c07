"""The append-only audit log and the control bus's persisted events.

Both are written inside the transaction of the action they describe, so an action
without its audit record (or the other way round) cannot exist. Nothing here updates
or deletes a row, and no endpoint does either.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from alphaloop.world.db import Prepared
from alphaloop.world.models import AuditEntry, ControlEvent, table

# every write appends through these
_RECORD = Prepared(insert(table(AuditEntry)), ("world_id", "actor", "action", "target",
                                                "before_hash", "after_hash", "ts"))
_EMIT = Prepared(insert(table(ControlEvent)), ("world_id", "type", "payload", "ts"))


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON form (sorted keys, no spaces)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def record(conn: Session, *, actor: str, action: str, target: str,
           world_id: str | None = None, before: str | None = None,
           after: str | None = None) -> None:
    _RECORD.run(conn, dict(
        world_id=world_id, actor=actor, action=action, target=target,
        before_hash=before, after_hash=after, ts=time.time()))


def emit(conn: Session, world_id: str, type_: str, payload: dict[str, Any]) -> None:
    _EMIT.run(conn, dict(world_id=world_id, type=type_, payload=payload, ts=time.time()))


def entries(conn: Session, world_id: str | None, after: int, limit: int) -> list[Any]:
    stmt = select(AuditEntry).where(AuditEntry.audit_id > after)
    stmt = stmt.where(AuditEntry.world_id == world_id) if world_id is not None \
        else stmt.where(AuditEntry.world_id.is_(None))
    return list(conn.execute(stmt.order_by(AuditEntry.audit_id).limit(limit)).scalars())


def events(conn: Session, world_id: str, after: int, limit: int) -> list[ControlEvent]:
    stmt = (select(ControlEvent).where(ControlEvent.world_id == world_id,
                                       ControlEvent.event_id > after)
            .order_by(ControlEvent.event_id).limit(limit))
    return list(conn.execute(stmt).scalars())
