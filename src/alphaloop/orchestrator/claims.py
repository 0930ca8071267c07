"""Shared work between runs on one knowledge base: claim, compute, or read the result.

Two loop processes on one knowledge base (different runs, same data) would otherwise
backtest the same strategies twice: runs of one config generate the same candidates,
and runs of different configs overlap. Before a stage backtests, it claims each
candidate under a *work key* that names what the result depends on (engine, data
window, costs or execution model, the settings of the check): ``(work_key,
strategy_id)`` is the primary key of the KB's ``claims`` table, and the first run to
insert a row owns that work (``INSERT … ON CONFLICT DO NOTHING``; SQLite and
PostgreSQL both). The owner computes and stores the result in the row; every other run
reads it from there instead of computing it.

**What a run sees does not depend on who computed.** Engine A and engine B are
deterministic (same strategy, data and costs: the same numbers, whatever the batch a
candidate ran in), the result is stored exactly (engine A's metrics as float64 and its
returns as float32 bytes; the checks' rows as JSON, NaN kept), and every result,
computed here or read back, goes through the same encode/decode. So a stage's output is the same bytes either way, and a run's
RunSummary is that of a run alone on the database: a result taken from another run
counts for this run as a test it made (``tested_A``, ``backtests``, the budget), as
it would have had the run been alone. (Runs that had *finished* before this one began
are different: their results are the run's "earlier runs", reused and counted as
trials only; see :meth:`Runner._open`.)

**A dead owner** cannot block anyone: a claim carries a lease (``lease_s``, renewed for
every batch the owner starts), and a ``claimed`` row whose lease has passed is taken
over by the next run that asks. A resumed run takes its own claims back at once.

**Order of work.** Candidates are claimed in batches just before they are computed,
so two runs that start together split the work batch by batch; a run then waits (it
polls every ``poll_s``) for the batches other runs hold.

**No database, no sharing**: when the knowledge base cannot take a claim (locked,
read-only, unreachable: a TRANSIENT error), the run computes what is left on its own.
That costs duplicate work at worst, never a wrong or lost result. ``kb.share_work:
false`` turns claims off for a run that knows it is alone (it saves writing each
result once more). Each backtesting stage logs a ``WORK_SHARED`` event: how many
results it computed, read from another run's claim, or computed unclaimed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd

from alphaloop.engines.metrics import CORE_METRICS
from alphaloop.errors import ErrorClass
from alphaloop.kb.store import CLAIMED, DONE, ClaimRow, KBError, KnowledgeBase

R = TypeVar("R")
T = TypeVar("T")
Encoded = tuple[str, bytes | None]


def work_key(*parts: Any) -> str:
    """A work key: sha256 of the parts' canonical JSON (order matters)."""
    body = json.dumps([_plain(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


@dataclass
class Shared:
    """What one call of :meth:`ClaimBook.run` did: computed here, read from another
    run's result, or computed without a claim (the database could not take one)."""

    computed: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)
    unclaimed: list[str] = field(default_factory=list)
    waits: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"computed": len(self.computed), "taken": len(self.taken),
                "unclaimed": len(self.unclaimed), "waits": self.waits}


@dataclass(frozen=True)
class Codec(Generic[R]):
    """How one result is stored in a claim row and read back."""

    encode: Callable[[R], Encoded]
    decode: Callable[[str, bytes | None], R]


class ClaimBook:
    """The claims of one run on one knowledge base (see the module docstring)."""

    def __init__(self, kb: KnowledgeBase, run_id: str, *, lease_s: float = 60.0,
                 poll_s: float = 0.2, clock: Callable[[], int] = time.time_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.kb, self.run_id = kb, run_id
        self.lease_ns = int(lease_s * 1e9)
        self.poll_s = poll_s
        self.clock, self.sleep = clock, sleep
        self.down = False  # the database refused a claim: compute alone from then on
        # told once per call that starts to wait, with how many results other runs hold
        # (a killed run's claims hold the next run up until their lease passes)
        self.on_wait: Callable[[int], None] | None = None

    def run(self, key: str, ids: Sequence[str],
            compute: Callable[[list[str]], dict[str, R]], codec: Codec[R], *,
            batch: int = 512) -> tuple[dict[str, R], Shared]:
        """Every id's result for work ``key``, in a dict: computed here (by
        ``compute(ids) -> {id: result}``) for the ids this run claims, read back from
        the claims of other runs for the rest. Every result goes through ``codec``
        (encode, then decode), so the caller gets the same values either way."""
        ids = list(dict.fromkeys(ids))
        out: dict[str, R] = {}
        done = Shared()
        for start in range(0, len(ids), max(batch, 1)):
            self._round(key, ids[start:start + batch], compute, codec, out, done)
        waiting = [s for s in ids if s not in out]
        while waiting:  # other runs hold these: wait for their results (or their death)
            self._round(key, waiting, compute, codec, out, done)
            waiting = [s for s in waiting if s not in out]
            if waiting:
                if done.waits == 0 and self.on_wait is not None:
                    self.on_wait(len(waiting))
                done.waits += 1
                self.sleep(self.poll_s)
        return {s: out[s] for s in ids}, done

    def _round(self, key: str, ids: list[str], compute: Callable[[list[str]], dict[str, R]],
               codec: Codec[R], out: dict[str, R], done: Shared) -> None:
        rows = self._claim(key, ids)
        if rows is None:  # no database: compute alone
            self._compute(key, ids, compute, codec, out, claimed=False)
            done.unclaimed += ids
            return
        mine = [s for s in ids if (r := rows.get(s)) is not None and r.status == CLAIMED
                and r.run_id == self.run_id]
        for s in ids:
            r = rows.get(s)
            if r is not None and r.status == DONE and r.result is not None:
                out[s] = codec.decode(r.result, r.payload)
                done.taken.append(s)
        if mine:
            self._compute(key, mine, compute, codec, out, claimed=True)
            done.computed += mine

    def _claim(self, key: str, ids: list[str]) -> dict[str, ClaimRow] | None:
        if self.down:
            return None

        def claim() -> dict[str, ClaimRow]:
            now = self.clock()
            return self.kb.claim(key, ids, self.run_id, lease_until_ns=now + self.lease_ns,
                                 now_ns=now)

        return self._try(claim)

    def _try(self, write: Callable[[], T]) -> T | None:
        """``write()``, once more after a TRANSIENT failure (a PostgreSQL deadlock
        victim, a lock held a moment too long); None, and no more claims until the
        runner says the database takes writes again, when that fails too."""
        for attempt in (1, 2):
            try:
                return write()
            except KBError as exc:
                if exc.error_class is not ErrorClass.TRANSIENT:
                    raise
                if attempt == 1:
                    self.sleep(self.poll_s)
        self.down = True
        return None

    def _compute(self, key: str, ids: list[str], compute: Callable[[list[str]], dict[str, R]],
                 codec: Codec[R], out: dict[str, R], *, claimed: bool) -> None:
        results = compute(ids)
        encoded = {s: codec.encode(results[s]) for s in ids}
        if claimed and not self.down:  # if this fails the claims lapse: others redo them
            self._try(lambda: self.kb.finish_claims(key, self.run_id, encoded))
        for s, (text, payload) in encoded.items():
            out[s] = codec.decode(text, payload)


# ------------------------------------------------------------------ the stages' codecs
METRICS = (*CORE_METRICS, "sr_per_period", "skew", "kurtosis", "n_obs")
"""Engine A's numbers per candidate that S50 keeps (:func:`executors.backtest_chunk`)."""
INTEGER_METRICS = ("n_trades", "n_obs")  # counts: int64 columns
_A_HEADER = json.dumps({"metrics": list(METRICS), "returns": "float32"})

AResult = tuple[np.ndarray, np.ndarray]
"""Engine A's result for one candidate: its METRICS as float64, its per-bar returns."""


def _encode_a(result: AResult) -> Encoded:
    values, returns = result
    payload = (np.ascontiguousarray(values, dtype=np.float64).tobytes()
               + np.ascontiguousarray(returns, dtype=np.float32).tobytes())
    return _A_HEADER, payload


def _decode_a(text: str, payload: bytes | None) -> AResult:
    names = METRICS if text == _A_HEADER else tuple(json.loads(text)["metrics"])
    cut = 8 * len(names)
    values = np.frombuffer(payload or b"", dtype=np.float64, count=len(names))
    if names != METRICS:  # written by another version: its columns, by name
        values = np.array([values[names.index(m)] for m in METRICS])
    return values, np.frombuffer(payload or b"", dtype=np.float32, offset=cut)


def _encode_json(result: Any) -> Encoded:
    return json.dumps(result, allow_nan=True, sort_keys=True), None


def _decode_json(text: str, payload: bytes | None) -> Any:
    return json.loads(text)


# looked up at each call, so that a profiler's wrapper of the module's functions sees them
A_CODEC: Codec[AResult] = Codec(lambda result: _encode_a(result),
                                lambda text, payload: _decode_a(text, payload))
"""Engine A's result per candidate, stored exactly: a JSON header naming the metrics,
then their float64 bytes and the returns' float32 bytes (NaN and -0.0 kept)."""

JSON_CODEC: Codec[Any] = Codec(_encode_json, _decode_json)
"""A JSON-ready result (engine B's row, the validation check's row): Python floats
print and parse back exactly, NaN included."""


def split_a(metrics: pd.DataFrame, returns: np.ndarray) -> dict[str, AResult]:
    """Engine A's batch output (:func:`executors.backtest_all`) per candidate."""
    values = metrics[list(METRICS)].to_numpy(dtype=np.float64)
    return {str(sid): (values[k], returns[k])
            for k, sid in enumerate(metrics["strategy_id"])}


def assemble_a(ids: Sequence[str], results: Sequence[AResult], n_bars: int
               ) -> tuple[pd.DataFrame, np.ndarray]:
    """Engine A's metrics frame (``strategy_id`` then METRICS, counts as int64) and
    returns matrix from per-candidate results, in their order, whatever computed them."""
    if not results:  # as :func:`executors.backtest_all` gives it for no spec
        return (pd.DataFrame(columns=["strategy_id", *METRICS]),
                np.zeros((0, n_bars), np.float32))
    frame = pd.DataFrame(np.stack([v for v, _ in results]), columns=list(METRICS))
    for c in INTEGER_METRICS:
        frame[c] = frame[c].astype(np.int64)
    frame.insert(0, "strategy_id", [str(s) for s in ids])
    returns = np.stack([r for _, r in results]).astype(np.float32, copy=False)
    return frame, returns
