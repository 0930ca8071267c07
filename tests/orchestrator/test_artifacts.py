"""StageStore: a stage's stored output is found again by its inputs; a damaged one is
no output (the stage runs again) rather than a crash of the resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphaloop.orchestrator.artifacts import OUTPUT, StageStore


def test_a_stored_output_is_found_by_its_inputs_only(tmp_path: Path) -> None:
    store = StageStore(tmp_path)
    store.save(1, "S50", "h1", "sr-1", {"rows": [1, 2, 3]})
    assert store.load(1, "S50", "h1") == {"rows": [1, 2, 3]}
    assert store.load(1, "S50", "h2") is None
    assert store.load(2, "S50", "h1") is None


@pytest.mark.parametrize("damage", [b"\x00garbage\xff" * 7, b"", b"\x80\x05\x95"])
def test_a_damaged_output_is_no_output(tmp_path: Path, damage: bytes) -> None:
    """Random bytes, an empty file, a truncated pickle (a black-box report: resume
    stopped with an UnpicklingError traceback)."""
    store = StageStore(tmp_path)
    store.save(1, "S70", "h1", "sr-1", list(range(100)))
    (store.folder(1, "S70") / OUTPUT).write_bytes(damage)
    assert store.load(1, "S70", "h1") is None
