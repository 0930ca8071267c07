"""Bearer tokens with roles: created, checked and revoked.

A token reads ``alw_<token_id>_<secret>``. Only sha256(secret) is stored; a presented
token is found by its id and its secret's hash compared in constant time. Tokens are
random (256 bits), so a plain sha256 is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from alphaloop.world import audit
from alphaloop.world.errors import WorldError
from alphaloop.world.models import ApiToken, table
from alphaloop.world.schemas import MAX_TOKEN_NAME

ROLES = ("viewer", "submitter", "operator", "approver", "admin")
_READ = frozenset(ROLES)
# which roles may do what; admin may do everything
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": _READ,
    "world.create": frozenset({"operator", "admin"}),
    "policy.update": frozenset({"operator", "admin"}),
    "evaluation.submit": frozenset({"submitter", "operator", "admin"}),
    # metrics or realized returns asserted by the caller for a paper/live/shadow/dryrun
    # stage: producers only (a submitter's claims could walk it up the ladder)
    "evaluation.evidence": frozenset({"operator", "admin"}),
    "snapshot.post": frozenset({"operator", "admin"}),  # producers: paper runner, gateway
    # executing a campaign action moves a strategy along: the scheduler's (operator's) job
    "campaign.execute": frozenset({"operator", "admin"}),
    # live-promotion governance (seed §5): approvers approve, operators switch targets
    "live.approve": frozenset({"approver", "admin"}),
    "activation.apply": frozenset({"operator", "admin"}),
    # the risk guard: producers report trips, and only operators re-activate
    "risk.trip": frozenset({"operator", "admin"}),
    "risk.reset": frozenset({"operator", "admin"}),
    "paper.record": frozenset({"operator", "admin"}),  # the paper runner's records
    "token.manage": frozenset({"admin"}),
    "audit.read_all": frozenset({"admin"}),  # every world's audit log at once
}
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(conn: Session, role: str, name: str, actor: str) -> tuple[str, str]:
    """A new token; returns ``(token_id, token)``. The token is never stored."""
    if role not in ROLES:
        raise WorldError(f"role: {role!r} is not one of {', '.join(ROLES)}",
                         code="INVALID_ROLE", field="role")
    if not name.strip() or len(name) > MAX_TOKEN_NAME:
        # the audit trail and the approvers list name a token's holder by it
        raise WorldError(f"name: {name!r} must be 1 to {MAX_TOKEN_NAME} characters, not only "
                         "spaces", code="INVALID_NAME", field="name")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    conn.execute(insert(table(ApiToken)), dict(
        token_id=token_id, name=name, role=role, secret_hash=_hash(secret),
        created_at=time.time(), revoked=False))
    audit.record(conn, actor=actor, action="token.create", target=token_id,
                 after=audit.content_hash({"role": role, "name": name, "revoked": False}))
    return token_id, f"alw_{token_id}_{secret}"


def revoke(conn: Session, token_id: str, actor: str) -> ApiToken:
    """Revoke by id; the whole token (``alw_<id>_<secret>``) names its id too, and its
    secret is then never repeated in a message."""
    if token_id.startswith("alw_") and token_id.count("_") >= 2:
        token_id = token_id.split("_", 2)[1]
    row = conn.execute(select(ApiToken).where(ApiToken.token_id == token_id)).scalar_one_or_none()
    if row is None:
        raise WorldError(f"token {token_id!r} does not exist", code="TOKEN_NOT_FOUND",
                         status=404, field="token_id")
    if row.revoked:  # revoked already: a repeated request changes nothing, records nothing
        return row
    before = audit.content_hash({"role": row.role, "name": row.name, "revoked": row.revoked})
    conn.execute(update(ApiToken).where(ApiToken.token_id == token_id).values(revoked=True))
    audit.record(conn, actor=actor, action="token.revoke", target=token_id, before=before,
                 after=audit.content_hash({"role": row.role, "name": row.name,
                                           "revoked": True}))
    return row


def authenticate(conn: Session, token: str) -> ApiToken | None:
    """The live token row for ``token``, or None (unknown, malformed or revoked)."""
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != "alw" or not token_id or not secret or len(token_id) > 32:
        return None
    row = conn.execute(select(ApiToken).where(ApiToken.token_id == token_id)).scalar_one_or_none()
    # compare even when the id is unknown: the answer's timing does not say which failed
    stored = row.secret_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(_hash(secret), stored) or row is None or row.revoked:
        return None
    return row


def allowed(role: str, action: str) -> bool:
    return role in PERMISSIONS[action]
