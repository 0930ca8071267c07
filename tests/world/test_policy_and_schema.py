"""The policy model and the world tables' migration, without a server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import alphaloop.world.models  # noqa: F401  (registers the world tables on Base)
from alphaloop.kb import KnowledgeBase, dispose_engines, migrations
from alphaloop.kb.models import Base
from alphaloop.world.errors import WorldError
from alphaloop.world.models import WORLD_TABLES
from alphaloop.world.policy import StageGates, judge, parse_policy


def test_durations_and_defaults() -> None:
    policy = parse_policy({"freshness": {"decision_ttl": "5m", "snapshot_max_age": "2d"},
                           "governance": {"live_promotion": {"cooldown": "1.5h"}}})
    assert (policy.freshness.decision_ttl, policy.freshness.snapshot_max_age) == (300.0, 172800.0)
    assert policy.governance.live_promotion.cooldown == 5400.0
    assert (policy.allow_live, policy.governance.live_promotion.mode) == (False, "disabled")


@pytest.mark.parametrize(("data", "field"), [
    ({"gates": {"backtest": {"min_sharp": 1}}}, "policy.gates.backtest.min_sharp"),
    ({"campaign": {"paper": {"window": {"min_days": -1}}}}, "policy.campaign.paper.window.min_days"),
    ({"freshness": {"decision_ttl": "soon"}}, "policy.freshness.decision_ttl"),
    ({"governance": {"live_promotion": {"mode": "yolo"}}}, "policy.governance.live_promotion.mode"),
    ({"gates": {"paper": {"warn_only": ["min_luck"]}}}, "policy.gates.paper.warn_only.0"),
    ({"allow_live": "maybe"}, "policy.allow_live"),
])
def test_a_bad_policy_names_the_dotted_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(WorldError) as exc:
        parse_policy(data)
    assert (exc.value.code, exc.value.field) == ("POLICY_INVALID", field)
    assert exc.value.message.startswith(field + ":")


def test_the_ruleset_hash_follows_the_content_not_the_spelling() -> None:
    a = parse_policy({"freshness": {"decision_ttl": "5m"}})
    b = parse_policy({"freshness": {"decision_ttl": 300}})
    c = parse_policy({"freshness": {"decision_ttl": 301}})
    assert a.ruleset_hash() == b.ruleset_hash() != c.ruleset_hash()


def test_judging_is_fail_closed() -> None:
    assert judge(StageGates(), {})[0] == "fail"  # nothing to look at: never a pass
    outcome, results = judge(StageGates(max_drawdown=0.2, min_dsr=0.9),
                             {"max_drawdown": -0.1, "dsr": float("nan")})
    assert outcome == "fail"
    assert [(r.rule, r.reason) for r in results] == [("max_drawdown", "PASSED"),
                                                     ("min_dsr", "METRIC_MISSING")]


def test_the_world_tables_match_migration_0003_and_it_can_be_undone(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    KnowledgeBase(f"sqlite:///{path}").close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    with engine.begin() as conn:
        command.downgrade(migrations.config(conn), "0002")
    engine.dispose()
    dispose_engines()
    con = sqlite3.connect(path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert not names & set(WORLD_TABLES)
    kb = KnowledgeBase(f"sqlite:///{path}")
    assert kb.revision() == migrations.head() == "0013"


def test_every_documented_example_is_a_valid_body() -> None:
    from pydantic import BaseModel

    from alphaloop.world import schemas

    documented = [m for m in vars(schemas).values() if isinstance(m, type)
                  and issubclass(m, BaseModel) and m is not BaseModel
                  and "examples" in m.model_json_schema()]
    assert len(documented) >= 12
    for model in documented:
        for example in model.model_json_schema()["examples"]:
            model.model_validate(example)
