"""Claims: who does which piece of work when several runs share one knowledge base
(table ``claims``, migration 0008), on SQLite and on a real PostgreSQL server.

What must hold: of two runs claiming the same strategy exactly one owns it, also when
they claim at the same moment from two connections; a claim whose lease has passed is
taken over, one whose lease holds is not, and a run takes its own claims back; a done
claim keeps the first result stored and is never taken over.
"""

from __future__ import annotations

import random
import threading

from alphaloop.kb import KnowledgeBase
from alphaloop.kb.store import CLAIMED, DONE

KEY = "A|search|data-1|costs"


def _owners(kb: KnowledgeBase, ids: list[str]) -> dict[str, str]:
    return {s: r.run_id for s, r in kb.claims(KEY, ids).items()}


def test_the_first_claim_wins_and_the_second_run_gets_only_what_is_left(kb_url: str) -> None:
    kb = KnowledgeBase(kb_url)
    first = [f"s{i}" for i in range(6)]
    second = [f"s{i}" for i in range(3, 9)]
    got_a = kb.claim(KEY, first, "run-a", lease_until_ns=1_000, now_ns=0)
    got_b = kb.claim(KEY, second, "run-b", lease_until_ns=1_000, now_ns=0)
    assert {s for s, r in got_a.items() if r.run_id == "run-a"} == set(first)
    assert {s for s, r in got_b.items() if r.run_id == "run-b"} == {"s6", "s7", "s8"}
    assert {s for s, r in got_b.items() if r.run_id == "run-a"} == {"s3", "s4", "s5"}
    assert all(r.status == CLAIMED and r.takeovers == 0 for r in got_b.values())
    # the same key on other work (another key) is free
    assert kb.claim("other-key", ["s3"], "run-b", lease_until_ns=1_000,
                    now_ns=0)["s3"].run_id == "run-b"


def test_claims_racing_from_two_connections_give_every_strategy_one_owner(
        kb_url: str) -> None:
    """Two threads, each with its own KnowledgeBase handle, claim the same 400
    strategies in batches of 40, each in its own shuffled order, at the same time."""
    ids = [f"s{i:03d}" for i in range(400)]
    won: dict[str, list[str]] = {"run-a": [], "run-b": []}
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def claimer(run_id: str, seed: int) -> None:
        try:
            kb = KnowledgeBase(kb_url, busy_timeout_s=30)
            order = ids[:]
            random.Random(seed).shuffle(order)
            start.wait()
            for k in range(0, len(order), 40):
                got = kb.claim(KEY, order[k:k + 40], run_id, lease_until_ns=10**18, now_ns=0)
                won[run_id] += [s for s, r in got.items() if r.run_id == run_id]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(r, n))
               for n, r in enumerate(("run-a", "run-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not set(won["run-a"]) & set(won["run-b"])
    assert set(won["run-a"]) | set(won["run-b"]) == set(ids)
    stored = _owners(KnowledgeBase(kb_url), ids)
    assert {s for s, r in stored.items() if r == "run-a"} == set(won["run-a"])


def test_a_claim_past_its_lease_is_taken_over_and_one_within_it_is_not(kb_url: str) -> None:
    kb = KnowledgeBase(kb_url)
    kb.claim(KEY, ["s1", "s2"], "dead", lease_until_ns=100, now_ns=0)
    # before the lease ends nobody else gets it
    early = kb.claim(KEY, ["s1", "s2"], "alive", lease_until_ns=500, now_ns=99)
    assert {s: r.run_id for s, r in early.items()} == {"s1": "dead", "s2": "dead"}
    # after it, the next run to ask takes it over (and says so)
    late = kb.claim(KEY, ["s1"], "alive", lease_until_ns=500, now_ns=101)
    assert (late["s1"].run_id, late["s1"].lease_until_ns, late["s1"].takeovers) == (
        "alive", 500, 1)
    assert _owners(kb, ["s1", "s2"]) == {"s1": "alive", "s2": "dead"}
    # the dead owner coming back within the new lease does not get it back
    back = kb.claim(KEY, ["s1"], "dead", lease_until_ns=900, now_ns=200)
    assert back["s1"].run_id == "alive"


def test_a_run_takes_its_own_claims_back_at_once(kb_url: str) -> None:
    """A resumed run (same run id) does not wait for the lease its killed self took."""
    kb = KnowledgeBase(kb_url)
    kb.claim(KEY, ["s1"], "run-a", lease_until_ns=1_500, now_ns=0)
    again = kb.claim(KEY, ["s1"], "run-a", lease_until_ns=2_000, now_ns=1_000)
    assert (again["s1"].run_id, again["s1"].lease_until_ns, again["s1"].takeovers) == (
        "run-a", 2_000, 0)
    # another run asking at the same moment gets nothing: the lease holds
    other = kb.claim(KEY, ["s1"], "run-b", lease_until_ns=3_000, now_ns=1_000)
    assert (other["s1"].run_id, other["s1"].lease_until_ns) == ("run-a", 2_000)


def test_a_done_claim_keeps_its_first_result_and_is_never_taken_over(kb_url: str) -> None:
    kb = KnowledgeBase(kb_url)
    kb.claim(KEY, ["s1", "s2"], "run-a", lease_until_ns=100, now_ns=0)
    blob = bytes(range(256)) * 3
    kb.finish_claims(KEY, "run-a", {"s1": ('{"sharpe": NaN, "n": 3}', blob)})
    kb.finish_claims(KEY, "run-b", {"s1": ('{"sharpe": 1.0}', None)})  # too late
    later = kb.claim(KEY, ["s1", "s2"], "run-b", lease_until_ns=10**6, now_ns=10**5)
    assert (later["s1"].status, later["s1"].run_id) == (DONE, "run-a")
    assert (later["s1"].result, later["s1"].payload) == ('{"sharpe": NaN, "n": 3}', blob)
    assert (later["s2"].status, later["s2"].run_id) == (CLAIMED, "run-b")  # lease passed
    assert list(kb.claims_of("run-a")["strategy_id"]) == ["s1"]


def test_pruning_deletes_done_and_dead_claims_past_the_cutoff_and_never_live_work(
        kb_url: str) -> None:
    kb = KnowledgeBase(kb_url)
    kb.claim(KEY, ["done-old", "dead"], "run-a", lease_until_ns=1_000, now_ns=0)
    kb.finish_claims(KEY, "run-a", {"done-old": ("{}", b"x" * 6_000)})
    kb.claim(KEY, ["done-new"], "run-a", lease_until_ns=9_000, now_ns=8_000)
    kb.finish_claims(KEY, "run-a", {"done-new": ("{}", None)})
    kb.claim(KEY, ["live"], "run-b", lease_until_ns=20_000, now_ns=8_000)
    # now 10,000 ns; prune what ended more than 5,000 ns ago: leases before 5,000
    assert kb.prune_claims(5e-6, now_ns=10_000) == 2
    assert sorted(kb.claims(KEY, ["done-old", "dead", "done-new", "live"])) == [
        "done-new", "live"]
    # older_than 0: everything whose lease has ended, never a lease that holds
    assert kb.prune_claims(0, now_ns=10_000) == 1
    assert sorted(kb.claims(KEY, ["done-new", "live"])) == ["live"]
    # a pruned strategy is free again: the next run to ask owns it
    again = kb.claim(KEY, ["done-old"], "run-c", lease_until_ns=30_000, now_ns=10_000)
    assert (again["done-old"].status, again["done-old"].run_id) == (CLAIMED, "run-c")
