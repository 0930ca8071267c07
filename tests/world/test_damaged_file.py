"""A database file whose pages are damaged behind the server's back: the header check
at start-up passes, so the damage shows when a request reads those pages. That is a
503 KB_CORRUPT naming the damage, never a 500 "internal error"."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from conftest import Server, make_tokens

from alphaloop.kb import dispose_engines
from alphaloop.world.client import WorldClient

SPEC = {"entry": "sma(close, 10) > sma(close, 40)", "exit": "sma(close, 10) < sma(close, 40)"}


def _damage_table(db: Path, table: str) -> None:
    """Overwrite the b-tree header of ``table``'s root page with garbage."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                       (table,)).fetchone()[0]
    con.close()
    with open(db, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xab" * 64)


def test_damaged_pages_are_a_503_kb_corrupt(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    db = tmp_path / "kb.sqlite"
    srv = Server(db, tmp_path / "refs")
    toks = make_tokens(srv.db_url)
    dispose_engines()
    srv.start()
    try:
        with WorldClient(srv.url, toks["operator"]) as c:
            c.create_world("dmg", name="dmg")
            c.evaluate("dmg", {"run_id": "r1", "spec": SPEC, "metrics": {"sharpe": 1.0}})
    finally:
        srv.stop()
    _damage_table(db, "evaluation_revisions")
    srv = Server(db, tmp_path / "refs").start()  # the file's header is intact: it starts
    try:
        headers = {"Authorization": f"Bearer {toks['viewer']}"}
        r = httpx.get(f"{srv.url}/worlds/dmg/runs/r1", headers=headers, timeout=10)
    finally:
        srv.stop()
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "KB_CORRUPT"
