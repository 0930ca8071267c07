"""``alphaloop submit`` and ``alphaloop world token`` against a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml
from conftest import SMA
from typer.testing import CliRunner

from alphaloop.cli import app

runner = CliRunner()


def test_submit_a_spec_file_prints_the_worlds_stage(world_server: Any, tmp_path: Path) -> None:
    srv, toks = world_server
    httpx.post(f"{srv.url}/worlds", json={"world_id": "w-cli", "data": "synth_planted"},
               headers={"Authorization": f"Bearer {toks['operator']}"}).raise_for_status()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SMA))
    result = runner.invoke(app, ["submit", str(spec), "--world", "w-cli", "--url", srv.url,
                                 "--json"], env={"ALPHALOOP_WORLD_TOKEN": toks["submitter"]})
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["evaluation"]["latest"]["metric_sources"][0].startswith("engine_b:")
    assert out["stage"] in ("backtest", "paper") and out["downgraded"] is False


def test_submit_errors_are_one_line_and_exit_2(world_server: Any) -> None:
    srv, toks = world_server
    no_token = runner.invoke(app, ["submit", "x", "--world", "w", "--url", srv.url,
                                   "--token-env", "NO_SUCH_VARIABLE_SET"])
    unknown = runner.invoke(app, ["submit", "f" * 64, "--world", "no-such-world",
                                  "--url", srv.url], env={"ALPHALOOP_WORLD_TOKEN": toks["admin"]})
    assert (no_token.exit_code, unknown.exit_code) == (2, 2)
    assert "NO_SUCH_VARIABLE_SET" in no_token.output
    assert "WORLD_NOT_FOUND" in unknown.output
    assert len(unknown.output.strip().splitlines()) <= 2


def test_token_create_and_revoke_on_the_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'kb.sqlite'}"
    made = runner.invoke(app, ["world", "token", "create", "--role", "viewer", "--name", "bob",
                               "--db", db, "--json"])
    assert made.exit_code == 0, made.output
    token_id = json.loads(made.output)["token_id"]
    bad = runner.invoke(app, ["world", "token", "create", "--role", "root", "--db", db])
    assert bad.exit_code == 2 and "INVALID_ROLE" in bad.output
    # a holder without a name (a black-box report: '' was taken) or one too long
    for name in ("", "   ", "x" * 129):
        nameless = runner.invoke(app, ["world", "token", "create", "--role", "viewer",
                                       "--name", name, "--db", db])
        assert nameless.exit_code == 2 and "INVALID_NAME" in nameless.output, nameless.output
    gone = runner.invoke(app, ["world", "token", "revoke", token_id, "--db", db])
    assert gone.exit_code == 0
    again = runner.invoke(app, ["world", "token", "revoke", "0" * 16, "--db", db])
    assert again.exit_code == 2 and "TOKEN_NOT_FOUND" in again.output
    # the whole token names its id, and its secret is never repeated (a black-box report)
    whole = json.loads(runner.invoke(app, ["world", "token", "create", "--role", "viewer",
                                           "--name", "eve", "--db", db, "--json"]).output)
    secret = whole["token"].split("_", 2)[2]
    by_token = runner.invoke(app, ["world", "token", "revoke", whole["token"], "--db", db])
    assert by_token.exit_code == 0 and secret not in by_token.output, by_token.output
    unknown = runner.invoke(app, ["world", "token", "revoke", f"alw_{'0' * 16}_{secret}",
                                  "--db", db])
    assert unknown.exit_code == 2 and secret not in unknown.output
    # a database that forgets (a black-box report: a TypeError traceback from the pool)
    for memory in ("sqlite://", "sqlite:///:memory:"):
        lost = runner.invoke(app, ["world", "token", "create", "--role", "viewer", "--db",
                                   memory])
        assert lost.exit_code == 2 and "KB_INVALID_URL" in lost.output, lost.output
        assert "Traceback" not in lost.output


def test_out_of_range_numbers_are_refused_before_anything_runs(tmp_path: Path) -> None:
    from alphaloop.world.hub import _count

    cli = runner
    port = cli.invoke(app, ["world", "serve", "--port", "99999"])  # not 99999 - 65536
    assert port.exit_code == 2 and "--port" in port.output
    bars = cli.invoke(app, ["world", "paper", "--world", "w", "--strategy", "x.yaml",
                            "--feed", "replay:synth_planted", "--state",
                            str(tmp_path / "s.json"), "--max-bars", "0"])
    assert bars.exit_code == 2 and "--max-bars" in bars.output
    assert not (tmp_path / "s.json").exists()
    # a trade count stored before the hub checked it reads as unknown, not as a 500
    assert (_count("lots"), _count(float("nan")), _count(5.0), _count(2.5)) == (
        None, None, 5, 2.5)


def test_a_bad_service_address_or_token_is_one_line(monkeypatch: Any) -> None:
    """A black-box report: `--url 'http://[::1'` and a token with 'ü' in it ended in
    httpx tracebacks (InvalidURL, UnicodeEncodeError)."""
    monkeypatch.setenv("ALPHALOOP_WORLD_TOKEN", "x")
    bad_url = runner.invoke(app, ["world", "status", "main", "--url", "http://[::1"])
    assert bad_url.exit_code == 2 and "BAD_URL" in bad_url.output, bad_url.output
    monkeypatch.setenv("ALPHALOOP_WORLD_TOKEN", "t\u00fcken")
    bad_token = runner.invoke(app, ["world", "status", "main", "--url", "http://127.0.0.1:9"])
    assert bad_token.exit_code == 2 and "BAD_TOKEN" in bad_token.output, bad_token.output
    for res in (bad_url, bad_token):
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_an_id_the_server_would_refuse_is_refused_before_it_is_sent(
        world_server: Any, monkeypatch: Any) -> None:
    """A black-box finding: ids were put into the path as typed. The server decodes
    '%2F', so 'w/policy' or '..' would have reached another endpoint; now the client
    checks an id as the server does, before any request (a dead address proves it)."""
    srv, toks = world_server
    monkeypatch.setenv("ALPHALOOP_WORLD_TOKEN", toks["operator"])
    for bad in ("w/policy", "..", "a?b=1", "a b"):
        for url in ("http://127.0.0.1:9", srv.url):
            got = runner.invoke(app, ["world", "status", bad, "--url", url])
            assert got.exit_code == 2 and "INVALID_REQUEST" in got.output, got.output
            assert "WORLD_UNREACHABLE" not in got.output
    fine = runner.invoke(app, ["world", "status", "no-such:world@x", "--url", srv.url])
    assert fine.exit_code == 2 and "NOT_FOUND" in fine.output, fine.output
