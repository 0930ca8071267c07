"""``alphaloop world serve | token create | token revoke`` and ``alphaloop submit``.

    alphaloop world serve --db URL --host 127.0.0.1 --port 8080 [--refs-root DIR]
    alphaloop world token create --role submitter --name ci [--db URL]
    alphaloop world token revoke TOKEN_ID [--db URL]
    alphaloop world campaign-loop --world W [--every 30s] [--once] [--url URL]
    alphaloop world status W [--url URL] [--json]
    alphaloop world approve|reject W STRATEGY_ID [--comment TEXT]      (approver token)
    alphaloop world apply W STRATEGY_ID [--target live|paper] [--broker paper]
    alphaloop world paper --world W --strategy SPEC|ID --feed replay:DATA[@SPEED]|folder:PATH
        --state FILE [--start N|ISO] [--max-bars N] [--follow]
    alphaloop world guard-reset W [STRATEGY_ID]      (operator token; none: the world)
    alphaloop submit SPEC|ID --world W [--url URL] [--token-env ALPHALOOP_WORLD_TOKEN]

Tokens are made on the database directly (the first admin token cannot come from the
service); the secret is printed once and stored only as a hash.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alphaloop.cli._common import _friendly, out
from alphaloop.errors import AlphaloopError, ErrorClass

if TYPE_CHECKING:
    from alphaloop.world.client import StepResult

world_app = typer.Typer(no_args_is_help=True, help="Run the WorldService and manage tokens.")
token_app = typer.Typer(no_args_is_help=True, help="Create and revoke API tokens.")
DbOpt = Annotated[str | None, typer.Option(
    "--db", help="SQLAlchemy URL (default sqlite:///$ALPHALOOP_HOME/kb.sqlite).")]


def _db_url(url: str | None) -> str:
    from alphaloop.kb import default_url

    return url or default_url()


@world_app.command("serve")
@_friendly
def serve(db: DbOpt = None, host: str = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
          refs_root: Annotated[Path | None, typer.Option(
              help="Where realized_returns_ref files live (default ./refs).")] = None,
          workers: Annotated[int, typer.Option(
              min=1, help="Server processes on one socket (one per core).")] = 1) -> None:
    """Serve the WorldService (uvicorn) on the knowledge base database."""
    from alphaloop.world.server import serve as run

    run(_db_url(db), host, port, refs_root, workers=workers)


@token_app.command("create")
@_friendly
def token_create(role: Annotated[str, typer.Option(
                     help="viewer | submitter | operator | approver | admin")],
                 name: Annotated[str, typer.Option(help="Who holds it.")] = "cli",
                 db: DbOpt = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """Create a token; its secret is printed once."""
    from alphaloop.world import tokens
    from alphaloop.world.db import Database

    with Database(_db_url(db)).write() as conn:
        token_id, token = tokens.create(conn, role, name, actor=f"cli:{getpass.getuser()}")
    if as_json:
        out.print_json(json.dumps({"token_id": token_id, "role": role, "token": token}))
    else:
        out.print(f"token_id {token_id} (role {role})\n{token}", highlight=False)


@token_app.command("revoke")
@_friendly
def token_revoke(token_id: str, db: DbOpt = None) -> None:
    """Revoke a token: it is refused from the next request on."""
    from alphaloop.world import tokens
    from alphaloop.world.db import Database

    with Database(_db_url(db)).write() as conn:
        row = tokens.revoke(conn, token_id, actor=f"cli:{getpass.getuser()}")
        revoked = row.token_id  # the id, even when the whole token (with its secret) was given
    out.print(f"revoked {revoked}", highlight=False)


@_friendly
def submit(strategy: Annotated[str, typer.Argument(help="A spec file or a strategy id.")],
           world: Annotated[str, typer.Option("--world", help="The world's id.")],
           url: Annotated[str, typer.Option(help="The service.")] = "http://127.0.0.1:8080",
           token_env: Annotated[str, typer.Option(
               help="Environment variable holding the token.")] = "ALPHALOOP_WORLD_TOKEN",
           stage: str = "backtest", run_id: str | None = None,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Submit a strategy to a world; prints the stage the world allows and why."""
    from alphaloop.world.client import submit as send

    token = os.environ.get(token_env)
    if not token:
        raise AlphaloopError(f"--token-env: ${token_env} is not set", code="TOKEN_MISSING")
    result = send(strategy, world, url=url, token=token, stage=stage, run_id=run_id)
    if as_json:
        out.print_json(result.model_dump_json())
        return
    ev = result.evaluation
    out.print(f"{result.strategy_id[:12]} in {world}: evaluation {ev.run_id} "
              f"rev {ev.latest.revision} {ev.latest.outcome}; stage {result.stage} "
              f"({', '.join(result.reasons) or 'no reasons'})", highlight=False)
    if result.downgraded:
        out.print(f"downgraded: {result.downgrade_reason}", highlight=False)


@world_app.command("campaign-loop")
@_friendly
def campaign_loop(
        world: Annotated[str, typer.Option("--world", help="The world's id.")],
        every: Annotated[str, typer.Option(help="Seconds or <n><s|m|h|d> between ticks.")] = "30s",
        once: Annotated[bool, typer.Option("--once", help="One tick, then exit.")] = False,
        url: Annotated[str, typer.Option(help="The service.")] = "http://127.0.0.1:8080",
        token_env: Annotated[str, typer.Option(
            help="Environment variable holding an operator token.")] = "ALPHALOOP_WORLD_TOKEN",
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Tick the world's campaign and execute the recommended actions, every --every.

    Executing is idempotent: an action executed before (same idempotency_key) has no
    effect. An unreachable or busy service is reported and retried at the next tick
    (with --once it is an error).
    """
    import time

    from pydantic import TypeAdapter

    from alphaloop.world.client import WorldClient, WorldClientError, campaign_step
    from alphaloop.world.policy import PositiveDuration

    try:
        period = TypeAdapter(PositiveDuration).validate_python(every)
    except ValueError as exc:
        raise AlphaloopError(f"--every: {every!r} is not a positive duration",
                             code="INVALID_OPTION") from exc
    with WorldClient(url, _token(token_env)) as client:
        while True:
            try:
                step = campaign_step(client, world)
            except WorldClientError as exc:
                if once or exc.error_class is not ErrorClass.TRANSIENT:
                    raise
                out.print(f"tick failed ({exc.code}); retrying in {period:g}s", highlight=False)
            else:
                _print_step(step, as_json)
            if once:
                return
            time.sleep(period)


def _print_step(step: StepResult, as_json: bool) -> None:
    if as_json:
        out.print_json(step.model_dump_json())
        return
    for done in step.executed:
        verb = "executed" if done.executed else "already executed"
        out.print(f"{verb} {done.kind} {done.strategy_id[:12]} -> {done.run_id} "
                  f"rev {done.revision} {done.outcome} (key {done.idempotency_key[:12]})",
                  highlight=False)
    for key, code in step.skipped:
        out.print(f"skipped {key[:12]}: {code}", highlight=False)
    if not step.executed and not step.skipped:
        out.print("no actions", highlight=False)


UrlOpt = Annotated[str, typer.Option("--url", help="The service.")]
TokenEnvOpt = Annotated[str, typer.Option(
    "--token-env", help="Environment variable holding the token.")]
_URL = "http://127.0.0.1:8080"
_TOKEN_ENV = "ALPHALOOP_WORLD_TOKEN"


def _token(env: str) -> str:
    token = os.environ.get(env)
    if not token:
        raise AlphaloopError(f"--token-env: ${env} is not set", code="TOKEN_MISSING")
    return token


def _measure(m: Any) -> str:
    seen = "?" if m.observed is None else f"{m.observed:.4g}"
    return seen if m.required is None else f"{seen}/{m.required:g}"


@world_app.command("status")
@_friendly
def status(world: Annotated[str, typer.Argument(help="The world's id.")], url: UrlOpt = _URL,
           token_env: TokenEnvOpt = _TOKEN_ENV,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """The world's campaign: each strategy's phase, window, promotable or why not."""
    from rich.table import Table

    from alphaloop.world.client import WorldClient

    with WorldClient(url, _token(token_env)) as client:
        camp = client.campaign(world)
    if as_json:
        out.print_json(camp.model_dump_json())
        return
    table = Table(title=f"{world}: live {camp.governance_mode}, allow_live "
                        f"{str(camp.allow_live).lower()}", width=80)
    for name in ("strategy", "phase", "days", "samples", "trades", "reasons"):
        table.add_column(name, overflow="fold")
    for s in camp.strategies:
        w = s.window
        why = "promotable" if s.promotable else ", ".join(s.reasons) or "-"
        table.add_row(s.strategy_id[:12], s.phase.removesuffix("_campaign"), _measure(w.days),
                      _measure(w.samples), _measure(w.trades), why)
    out.print(table)


def _campaign_id(client: Any, world: str, prefix: str) -> str:
    """A strategy id of the world's campaign from a unique prefix (as `world status`
    prints them); a full id is taken as it is."""
    wanted = prefix.strip().lower()
    if len(wanted) == 64:
        return wanted
    ids = sorted({s.strategy_id for s in client.campaign(world).strategies
                  if s.strategy_id.startswith(wanted)}) if wanted else []
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise AlphaloopError(f"strategy_id: no strategy of {world}'s campaign starts with "
                             f"{prefix!r}; give its full 64-character id",
                             code="STRATEGY_NOT_FOUND")
    raise AlphaloopError(f"strategy_id: {prefix!r} is the start of {len(ids)} strategies of "
                         f"{world}'s campaign ({', '.join(i[:12] for i in ids[:5])}); give "
                         "more of it", code="AMBIGUOUS_ID")


def _decide(world: str, strategy_id: str, decision: str, comment: str, url: str,
            token_env: str) -> None:
    from alphaloop.world.client import WorldClient

    with WorldClient(url, _token(token_env)) as client:
        strategy_id = _campaign_id(client, world, strategy_id)
        done = client.approve(world, strategy_id, decision, comment)
    out.print(f"{decision} #{done.approval_id} of {strategy_id[:12]} in {world} "
              f"(paper run {done.paper_run_id} rev {done.paper_revision})", highlight=False)


@world_app.command("approve")
@_friendly
def approve(world: str, strategy_id: str, comment: str = "", url: UrlOpt = _URL,
            token_env: TokenEnvOpt = _TOKEN_ENV) -> None:
    """Approve a paper-campaign strategy going live (approver token)."""
    _decide(world, strategy_id, "approve", comment, url, token_env)


@world_app.command("reject")
@_friendly
def reject(world: str, strategy_id: str, comment: str = "", url: UrlOpt = _URL,
           token_env: TokenEnvOpt = _TOKEN_ENV) -> None:
    """Reject a paper-campaign strategy going live (approver token)."""
    _decide(world, strategy_id, "reject", comment, url, token_env)


@world_app.command("apply")
@_friendly
def apply(world: str, strategy_id: str,
          target: Annotated[str, typer.Option(help="live | paper")] = "live",
          broker: str = "paper", url: UrlOpt = _URL, token_env: TokenEnvOpt = _TOKEN_ENV) -> None:
    """Plan switching the strategy's execution target, then apply that plan (operator)."""
    from alphaloop.world.client import WorldClient

    with WorldClient(url, _token(token_env)) as client:
        strategy_id = _campaign_id(client, world, strategy_id)
        plan = client.plan_activation(world, strategy_id, target, broker)
        if not plan.allowed:
            raise AlphaloopError(f"{strategy_id[:12]} may not go {target}: "
                                 f"{', '.join(plan.reasons)}", code="PROMOTION_BLOCKED")
        done = client.apply(world, plan)
    verb = "switched" if done.applied else "already"
    out.print(f"{verb} {strategy_id[:12]} -> {done.target} on broker {done.broker} "
              f"(plan {done.plan_hash[:12]})", highlight=False)


@world_app.command("paper")
@_friendly
def paper(world: Annotated[str, typer.Option("--world", help="The world's id.")],
          strategy: Annotated[str, typer.Option(
              "--strategy", help="A spec file, or a strategy id (or prefix) in the local "
                                 "knowledge base (--db).")],
          feed: Annotated[str, typer.Option(
              help="replay:DATA[@BARS_PER_SECOND] or folder:PATH")],
          state: Annotated[Path, typer.Option(help="The run's state file (resumes).")],
          start: Annotated[str | None, typer.Option(
              help="First paper bar: an index or an ISO time (default: after the bars "
                   "present).")] = None,
          max_bars: Annotated[int | None, typer.Option(
              min=1, help="Stop after this many bars.")] = None,
          follow: Annotated[bool, typer.Option(help="folder: keep polling for files.")] = False,
          url: UrlOpt = _URL, token_env: TokenEnvOpt = _TOKEN_ENV, db: DbOpt = None) -> None:
    """Paper-trade a strategy with engine B bar by bar; post its realized returns to the
    world's risk hub (operator token). Restarted with the same --state, it resumes at
    the next bar."""
    from alphaloop.strategy.spec import StrategySpec
    from alphaloop.world.client import WorldClient, strategy_body
    from alphaloop.world.paper import FolderFeed, PaperRunner, parse_feed

    body = strategy_body(strategy, db)
    wanted = body.get("strategy_id")
    if "spec" not in body:  # a full id: its spec from the local knowledge base
        from alphaloop.kb import KnowledgeBase

        with KnowledgeBase(_db_url(db), create=False) as kb:
            body = {"spec": kb.strategy(body["strategy_id"])["spec"]}
    spec = StrategySpec.model_validate(body["spec"])
    if wanted is not None and spec.strategy_id != wanted:
        raise AlphaloopError(f"--strategy: the stored spec of {wanted[:12]} normalizes to "
                             f"{spec.strategy_id[:12]}", code="STRATEGY_ID_MISMATCH")
    source = parse_feed(feed)
    if isinstance(source, FolderFeed):
        source.follow = follow
    first: int | str | None = int(start) if start is not None and start.isdigit() else start
    with WorldClient(url, _token(token_env)) as client:
        runner = PaperRunner(client, world, spec, state,
                             log=lambda line: out.print(line, highlight=False))
        done = runner.run(source, start=first, max_bars=max_bars)
    out.print(f"paper {spec.strategy_id[:12]} in {world}: {len(done.returns)} bars since "
              f"{done.start_ts or '-'}, equity "
              f"{'-' if done.equity is None else format(done.equity, ',.2f')}, "
              f"fills {done.n_fills}, "
              f"state {state}", highlight=False)


@world_app.command("guard-reset")
@_friendly
def guard_reset(world: str, strategy_id: Annotated[str | None, typer.Argument(
                    help="The halted strategy; left out: the world (its world limits' "
                         "trip).")] = None,
                url: UrlOpt = _URL, token_env: TokenEnvOpt = _TOKEN_ENV) -> None:
    """Re-activate a strategy the risk guard halted (a unique prefix of its id, as
    `world status` prints it), or the world (operator; audited)."""
    from alphaloop.world.client import WorldClient

    with WorldClient(url, _token(token_env)) as client:
        if strategy_id is not None:
            strategy_id = _campaign_id(client, world, strategy_id)
        done = client.reset_guard(world, strategy_id)
    what = "the world" if strategy_id is None else strategy_id[:12]
    out.print(f"reset trip #{done.trip_id} ({done.rule}) of {what} in {world}",
              highlight=False)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    world_app.add_typer(token_app, name="token")
    app.add_typer(world_app, name="world")
