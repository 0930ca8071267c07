"""Malformed and hostile bodies on every endpoint: a 4xx with a JSON error, never a 5xx."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import SMA, Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOSTILE = ["", " ", "../../etc/passwd", "/etc/passwd", "'; DROP TABLE worlds; --",
           "__import__('os').system('id')", "${jndi:ldap://x}", "\x00", "é" * 300,
           "a" * 5000, "sma(close, 10) > sma(close, 50)", "1e309", "NaN", "-1"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(HOSTILE),
                    st.text(max_size=30))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)

VALID: dict[str, dict[str, Any]] = {
    "/worlds": {"world_id": "fz", "name": "n", "data": None, "policy": {"allow_live": False}},
    "/worlds/fz/evaluate": {"run_id": "r", "stage": "backtest", "spec": SMA,
                            "metrics": {"sharpe": 1.0}},
    "/worlds/fz/evaluate-cohort": {"run_id": "c", "items": [{"spec": SMA,
                                                             "metrics": {"sharpe": 1.0}}]},
    "/risk-hub/snapshots": {"world_id": "fz", "as_of": "2026-01-01T00:00:00Z",
                            "weights": {"A": 1.0}, "realized_returns": [0.01, -0.01]},
    "/tokens": {"role": "viewer", "name": "x"},
    "/worlds/fz/paper/bars": {"strategy_id": "ab" * 32, "ts": "2026-01-01T00:00:00Z",
                              "equity": 1e6, "ret": 0.001, "gross": 5e5,
                              "orders": {"placed": 2, "filled": 1, "partial": 1,
                                         "pending_notional": 10.0, "untradable": ["A"]}},
    "/worlds/fz/risk-guard/reset": {"strategy_id": "ab" * 32},
}
POSTS = ["/worlds", "/worlds/fz/evaluate", "/worlds/fz/evaluate-cohort", "/risk-hub/snapshots",
         "/tokens", "/worlds/fz/paper/bars", "/worlds/fz/risk-guard/reset"]
GETS = ["/worlds/{x}", "DELETE /tokens/{x}", "/worlds/fz/runs/{x}", "/worlds/fz/decide?strategy_id={x}",
        "/worlds/{x}/audit", "/risk-hub/snapshots/latest?world={x}", "/events?world={x}&follow=false",
        "/worlds/fz/audit?after={x}", "/audit?limit={x}",
        "/worlds/fz/paper/bars?strategy_id={x}", "/worlds/{x}/risk-guard?strategy_id=" + "ab" * 32]


@pytest.fixture(scope="module")
def http(world_server: tuple[Server, dict[str, str]]) -> Any:
    srv, toks = world_server
    with httpx.Client(base_url=srv.url, timeout=30,
                      headers={"Authorization": f"Bearer {toks['admin']}"}) as client:
        (srv.refs_root / "garbage.csv").write_text("not,a\nprice,file\n")
        client.post("/worlds", json={"world_id": "fz", "data": "garbage.csv"})
        yield client


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["code"], str) and err["code"]
        assert isinstance(err["message"], str) and err["message"]


def _mutate(body: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    node = out
    for key in path[:-1]:
        node = node[key] if isinstance(node.get(key), dict) else node.setdefault(key, {})
    node[path[-1]] = value
    return out


def _paths(body: dict[str, Any], prefix: list[str] | None = None) -> list[list[str]]:
    prefix = prefix or []
    found = []
    for key, value in body.items():
        found.append([*prefix, key])
        if isinstance(value, dict):
            found.extend(_paths(value, [*prefix, key]))
    return found


FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(endpoint=st.sampled_from(POSTS), body=JSON)
def test_random_json_bodies(http: httpx.Client, endpoint: str, body: Any) -> None:
    _check(http.post(endpoint, json=body))


@FUZZ
@given(endpoint=st.sampled_from(POSTS), data=st.data(), value=JSON)
def test_one_field_of_a_valid_body_made_hostile(http: httpx.Client, endpoint: str,
                                                data: st.DataObject, value: Any) -> None:
    body = VALID[endpoint]
    where = data.draw(st.sampled_from([*_paths(body), ["unknown_key"], ["metrics", "bogus"]]))
    _check(http.post(endpoint, json=_mutate(body, where, value)))


@FUZZ
@given(endpoint=st.sampled_from([*POSTS, "/worlds/fz/policy"]),
       raw=st.one_of(st.binary(max_size=200), st.sampled_from(
           [b"{", b"[]", b"null", b'{"run_id": NaN}', b'{"a": Infinity}', b"\xff\xfe",
            b'{"as_of": "yesterday"}', b"- a\n- b\n", b"a: [1, 2\n", b'"' * 100])),
       kind=st.sampled_from(["application/json", "application/yaml", "text/plain"]))
def test_raw_bytes(http: httpx.Client, endpoint: str, raw: bytes, kind: str) -> None:
    method = "PUT" if endpoint.endswith("/policy") else "POST"
    _check(http.request(method, endpoint, content=raw, headers={"Content-Type": kind}))


@FUZZ
@given(template=st.sampled_from(GETS), value=st.one_of(st.sampled_from(HOSTILE),
                                                       st.text(max_size=80)))
def test_hostile_path_and_query_values(http: httpx.Client, template: str, value: str) -> None:
    from urllib.parse import quote

    method, _, path = template.rpartition(" ")
    _check(http.request(method or "GET", path.format(x=quote(value, safe=""))))


@FUZZ
@given(policy=JSON)
def test_random_policies(http: httpx.Client, policy: Any) -> None:
    _check(http.put("/worlds/fz/policy", json=policy))


def test_a_valid_snapshot_from_the_future_and_a_bad_covariance_are_422(http: httpx.Client) -> None:
    body = VALID["/risk-hub/snapshots"]
    future = http.post("/risk-hub/snapshots", json={**body, "as_of": "2999-01-01T00:00:00Z"})
    square = http.post("/risk-hub/snapshots", json={
        **body, "as_of": datetime.now(UTC).isoformat(), "covariance": [[1.0, 0.0]]})
    assert (future.status_code, future.json()["error"]["code"]) == (422, "AS_OF_IN_FUTURE")
    assert (square.status_code, square.json()["error"]["field"]) == (422, "covariance")


def test_engine_b_on_missing_world_data_is_a_clear_422(http: httpx.Client) -> None:
    # a spec no fuzzed body used: an earlier run of it would be reused instead (sourcing 1)
    spec = {"entry": "ema(close, 7) > ema(close, 70)", "exit": "ema(close, 7) < ema(close, 70)"}
    r = http.post("/worlds/fz/evaluate", json={"run_id": "nodata", "spec": spec})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "ENGINE_B_FAILED"
    assert "garbage.csv" in r.json()["error"]["message"]


@pytest.mark.parametrize(("data", "code"), [
    ("../kb.sqlite", "REF_OUTSIDE_ROOT"), ("/etc/passwd", "REF_OUTSIDE_ROOT"),
    ("sub/../../kb.sqlite", "REF_OUTSIDE_ROOT"), ("no-such-file.csv", "REF_NOT_FOUND")])
def test_world_data_outside_the_refs_root_is_refused(http: httpx.Client, data: str,
                                                     code: str) -> None:
    r = http.post("/worlds", json={"world_id": "fz-data", "data": data})
    assert r.status_code == 422
    assert (r.json()["error"]["field"], r.json()["error"]["code"]) == ("data", code)


def test_world_data_by_absolute_path_inside_the_refs_root(
        world_server: tuple[Server, dict[str, str]], http: httpx.Client) -> None:
    srv, _ = world_server
    r = http.post("/worlds", json={"world_id": "fz-abs",
                                   "data": str(srv.refs_root / "garbage.csv")})
    assert r.status_code == 200


def test_a_return_below_minus_100_percent_is_refused_by_index(http: httpx.Client) -> None:
    spec = {"entry": "sma(close, 9) > sma(close, 90)", "exit": "sma(close, 9) < sma(close, 90)"}
    r = http.post("/worlds/fz/evaluate", json={"run_id": "wipe", "stage": "paper", "spec": spec,
                                               "realized_returns": [0.01, -1.5, 0.2]})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "realized_returns.1")


@pytest.mark.parametrize("raw", [b'{"world_id": "a",}', b"{bad json", b"\xff\xfe{"])
def test_a_body_that_is_not_json_is_one_400(http: httpx.Client, raw: bytes) -> None:
    r = http.post("/worlds", content=raw, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "MALFORMED_BODY")
    assert r.json()["error"]["field"] in ("body", None)


@pytest.mark.parametrize("endpoint", POSTS)
def test_a_nul_character_in_any_text_is_a_422(http: httpx.Client, endpoint: str) -> None:
    """A NUL in a world's data path was a 500 (ValueError), in a token's name a 500 on
    PostgreSQL (its text cannot hold one); the fuzzer found them now and then."""
    body = VALID[endpoint]
    for where in [*_paths(body), ["unknown_key"]]:
        for value in ("\x00", "a\x00b", {"k\x00": 1}, ["\x00"]):
            r = http.post(endpoint, json=_mutate(body, where, value))
            _check(r)
            assert r.status_code == 422 and "NUL character" in r.text, (where, r.text)


def test_a_nul_character_in_a_policy_is_a_422(http: httpx.Client) -> None:
    """PUT /worlds/{id}/policy parses its own body (JSON or YAML): the same rule."""
    policy = {"governance": {"live_promotion": {"approvers": ["a\x00b"]}}}
    r = http.put("/worlds/fz/policy", json=policy)
    assert r.status_code == 422 and "NUL character" in r.text, r.text
    r = http.put("/worlds/fz/policy", content=b'allow_live: false\nwarn_only: ["a\\0b"]\n',
                 headers={"Content-Type": "application/yaml"})
    assert r.status_code == 422 and "NUL character" in r.text, r.text


@pytest.mark.parametrize("kind", ["application/json", "application/yaml"])
def test_a_policy_nested_too_deeply_is_a_4xx(http: httpx.Client, kind: str) -> None:
    """A black-box report: 5,000 nested lists answered 500 (YAML) or dropped the
    connection (JSON); the server must say what is wrong and stay up."""
    body = ('{"a": ' + "[" * 5000 + "]" * 5000 + "}" if kind.endswith("json")
            else "a: " + "[" * 5000 + "]" * 5000)
    r = http.put("/worlds/fz/policy", content=body.encode(), headers={"Content-Type": kind})
    _check(r)
    assert r.json()["error"]["code"] == "POLICY_MALFORMED" and "nested too deeply" in r.text
    assert http.get("/worlds/fz").status_code == 200  # still up


def test_periods_per_year_as_text_is_refused_like_any_number(http: httpx.Client) -> None:
    """A black-box report: "252" (a string) was taken while string metrics are not."""
    body = {**VALID["/worlds/fz/evaluate"], "run_id": "ppy-text", "periods_per_year": "252"}
    r = http.post("/worlds/fz/evaluate", json=body)
    assert r.status_code == 422 and "periods_per_year" in r.text, r.text


def test_a_policy_whose_aliases_expand_to_billions_of_values_is_a_quick_422(
        http: httpx.Client) -> None:
    """A black-box report: 40 anchors each aliased twice (a few hundred bytes, 2^40
    values written out) held the one-worker server at 100 % CPU past SIGTERM."""
    lines = ["gates: &a0 {backtest: {min_sharpe: 0.5}}"]
    lines += [f"x{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 41)]
    r = http.put("/worlds/fz/policy", content="\n".join(lines).encode(),
                 headers={"Content-Type": "application/yaml"}, timeout=10)
    _check(r)
    assert r.json()["error"]["code"] == "POLICY_MALFORMED" and "aliases" in r.text
    assert http.get("/worlds/fz").status_code == 200
    shared = "base: &b {backtest: {min_sharpe: 0.5}}\ngates: *b\n"  # an alias used fairly
    r = http.put("/worlds/fz/policy", content=shared.encode(),
                 headers={"Content-Type": "application/yaml"})
    assert "aliases" not in r.text, r.text


def test_a_policy_that_holds_itself_is_a_422(http: httpx.Client) -> None:
    """A black-box report: `a: &a [*a]` (a list inside itself) was a 500 RecursionError."""
    r = http.put("/worlds/fz/policy", content=b"a: &a [*a]\n",
                 headers={"Content-Type": "application/yaml"}, timeout=10)
    _check(r)
    assert r.status_code == 422 and r.json()["error"]["code"] == "POLICY_MALFORMED", r.text
    assert "inside the collection it names" in r.text


@pytest.mark.parametrize(("path", "field", "value"), [
    ("/worlds/fz/paper/bars", ["ts"], "0001-01-01T00:00:00+01:00"),  # UTC: year 0
    ("/risk-hub/snapshots", ["as_of"], "9999-12-31T23:59:59-23:59"),  # UTC: year 10000
])
def test_a_time_that_utc_cannot_represent_is_a_422(http: httpx.Client, path: str,
                                                    field: list[str], value: str) -> None:
    """A black-box report: valid ISO times whose UTC form leaves years 1..9999 were a
    500 OverflowError; the request's time is at fault, and says so."""
    r = http.post(path, json=_mutate(VALID[path], field, value))
    _check(r)
    assert r.status_code == 422 and "UTC" in r.text and field[0] in r.text, r.text


@pytest.mark.parametrize(("path", "field", "value"), [
    ("/risk-hub/snapshots", ["weights", "SPX"], "0.6"),
    ("/risk-hub/snapshots", ["weights", "SPX"], True),
    ("/risk-hub/snapshots", ["ttl_s"], "3600"),
    ("/worlds/fz/evaluate", ["realized_returns"], [0.01, True]),  # would be a 100 % return
    ("/worlds/fz/evaluate", ["realized_returns"], ["0.01", 0.02]),
    ("/worlds/fz/paper/bars", ["equity"], "100"),
    ("/worlds/fz/paper/bars", ["ret"], False),
])
def test_a_number_as_text_or_a_boolean_is_refused(http: httpx.Client, path: str,
                                                  field: list[str], value: Any) -> None:
    """A black-box report: numbers given as text or booleans were taken (a paper run was
    judged on returns [0.01, 1.0] from [\"0.01\", true]); metrics already refused them."""
    body = _mutate(VALID[path], field, value)
    if path == "/worlds/fz/evaluate":
        body |= {"run_id": "typed", "stage": "paper"}
    r = http.post(path, json=body)
    _check(r)
    assert r.status_code == 422 and field[0] in r.text, r.text
    assert r.json()["error"]["code"] == "INVALID_REQUEST" and "number" in r.text, r.text


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_policy_in_a_type_the_contract_does_not_name_is_refused(http: httpx.Client,
                                                                   kind: str) -> None:
    """A black-box report: PUT /policy took any Content-Type and stored a new version."""
    before = http.get("/worlds/fz").json()
    r = http.put("/worlds/fz/policy", content=b'{"allow_live": false}',
                 headers={"Content-Type": kind})
    _check(r)
    assert r.status_code == 422 and "Content-Type" in r.text, r.text
    assert http.get("/worlds/fz").json() == before


def test_an_errors_field_is_the_requests_field(http: httpx.Client) -> None:
    """A black-box report: `field` read `strategy_id.constrained-str` (pydantic's name for
    the member of a type that refused the value) instead of the request's field."""
    r = http.post("/risk-hub/snapshots", json=_mutate(VALID["/risk-hub/snapshots"],
                                                      ["strategy_id"], "abc"))
    assert (r.status_code, r.json()["error"]["field"]) == (422, "strategy_id"), r.text
    long_key = "k" * 129
    r = http.post("/risk-hub/snapshots", json=_mutate(VALID["/risk-hub/snapshots"],
                                                      ["weights", long_key], 0.5))
    assert (r.status_code, r.json()["error"]["field"]) == (422, f"weights.{long_key}"), r.text


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_a_world_named_like_a_path_step_is_refused(http: httpx.Client, name: str) -> None:
    """A black-box report: a world `..` was created, and no URL could reach it again."""
    r = http.post("/worlds", json={"world_id": name})
    assert r.status_code == 422 and "path step" in r.text, r.text
