"""The `alphaloop` command: outputs a user reads, and one clear line for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.engines.metrics import CORE_METRICS

runner = CliRunner()
SPEC = """\
entry: "sma(close, 10) > sma(close, 50)"
exit: "sma(close, 10) < sma(close, 50)"
"""


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(SPEC)
    return p


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))


def test_backtest_json_has_metric_keys(spec_file: Path) -> None:
    code, out, _ = _run("backtest", str(spec_file), "--data", "sp500", "--json")
    assert code == 0
    payload = json.loads(out)
    assert set(CORE_METRICS) <= set(payload)
    assert payload["n_trades"] > 50
    assert payload["fees_bps"] == 10 and payload["slippage_bps"] == 5  # costs on by default


def test_backtest_fees_lower_the_return(spec_file: Path) -> None:
    free = json.loads(_run("backtest", str(spec_file), "--data", "sp500", "--json",
                           "--fees-bps", "0", "--slippage-bps", "0")[1])
    costly = json.loads(_run("backtest", str(spec_file), "--data", "sp500", "--json",
                             "--fees-bps", "50")[1])
    assert costly["total_return"] < free["total_return"]


def test_backtest_table(spec_file: Path) -> None:
    code, out, _ = _run("backtest", str(spec_file), "--data", "us_indices")
    assert code == 0
    assert "sharpe" in out and "max_drawdown" in out


def test_backtest_accepts_a_csv_path(spec_file: Path, tmp_path: Path) -> None:
    from alphaloop.data import load_bars

    csv = tmp_path / "spx.csv"
    load_bars("sp500").to_long().to_csv(csv, index=False)
    code, out, _ = _run("backtest", str(spec_file), "--data", str(csv), "--json")
    assert code == 0, out
    via_name = json.loads(_run("backtest", str(spec_file), "--data", "sp500", "--json")[1])
    assert json.loads(out)["total_return"] == pytest.approx(via_name["total_return"], rel=1e-12)


def test_sweep_writes_one_row_per_candidate(tmp_path: Path) -> None:
    out_path = tmp_path / "res.parquet"
    code, out, _ = _run("sweep", "sma_cross", "--data", "sp500", "--n", "20",
                        "--sampler", "sobol", "--out", str(out_path))
    assert code == 0, out
    frame = pd.read_parquet(out_path)
    assert len(frame) == 20
    assert frame["strategy_id"].is_unique
    assert {"strategy_id", "family", "params", *CORE_METRICS} <= set(frame.columns)
    assert (frame["family"] == "sma_cross").all()
    assert "top" in out and "sharpe" in out


@pytest.mark.parametrize(("args", "needle"), [
    (["sweep", "no_such_family", "--data", "sp500", "--out", "x.parquet"],
     "unknown family 'no_such_family'"),
    (["sweep", "sma_cross", "--data", "sp500", "--out", "x.parquet", "--sampler", "magic"],
     "unknown sampler 'magic'"),
    (["backtest", "missing.yaml", "--data", "sp500"], "spec file not found: missing.yaml"),
    (["backtest", "{spec}", "--data", "no_such_data"], "no_such_data"),
    (["backtest", "{spec}", "--data", "missing.csv"], "missing.csv"),
    (["backtest", "{spec}", "--data", "sp500", "--fees-bps", "-1"], "fees_bps"),
])
def test_bad_input_one_line_exit_2(args: list[str], needle: str, spec_file: Path) -> None:
    code, out, err = _run(*[a.replace("{spec}", str(spec_file)) for a in args])
    assert code == 2
    assert needle in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error:"), err  # no blank line first (a progress bar's end)


@pytest.mark.parametrize(("text", "needle"), [
    ('entry: "sma(close, 10) >"\nexit: "close < 1"\n', "entry: syntax error"),
    ('entry: "foo(close, 3) > 1"\nexit: "close < 1"\n', "unknown operator 'foo'"),
    ('entry: "sma(close, 0) > 1"\nexit: "close < 1"\n', "sma: argument 2 (n) must be an integer"),
    ('entry: "sma(close, 10)"\nexit: "close < 1"\n', "must be a boolean expression"),
    ('entry: "close > 1"\nexit: "close < 1"\nrisk: {stop_loss: 2}\n', "risk.stop_loss"),
    ('entry: "close > 1"\nexit: "close < 1"\ncolour: red\n', "colour"),
    ("entry: [unclosed\n", "malformed YAML at line"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_bad_spec_files(text: str, needle: str, tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    code, out, err = _run("backtest", str(p), "--data", "sp500")
    assert code == 2
    assert needle in err, err
    assert "Traceback" not in err + out


def test_data_list_show_import(tmp_path: Path) -> None:
    code, out, _ = _run("data", "list")
    assert code == 0 and "us_indices" in out
    code, out, _ = _run("data", "show", "us_indices")
    assert code == 0 and "SPX" in out and "arch" in out.lower()
    csv = tmp_path / "mine.csv"
    pd.DataFrame({"timestamp": pd.bdate_range("2020-01-01", periods=300),
                  "symbol": "AAA", "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5,
                  "volume": 1000.0}).to_csv(csv, index=False)
    code, out, err = _run("data", "import", str(csv), "--name", "mine")
    assert code == 0, err
    assert "mine" in _run("data", "list")[1]


def test_data_show_lists_every_quality_code(tmp_path: Path) -> None:
    # seven short histories, a spike and two case splits: every code is shown, with the
    # count of the rest (a black-box report: the list was cut at five, silently)
    csv = tmp_path / "seven.csv"
    days = pd.bdate_range("2020-01-01", periods=100)
    frames = [pd.DataFrame({"timestamp": days, "symbol": sym, "open": 10.0, "high": 11.0,
                            "low": 9.0, "close": 10.5, "volume": 1000.0})
              for sym in ("S0", "S1", "S2", "S3", "S4", "AAA", "aaa", "BBB", "bbb")]
    frames[4].loc[50, ["open", "high", "close"]] = [10.0, 110.0, 105.0]  # a one-bar spike
    pd.concat(frames).to_csv(csv, index=False)
    assert _run("data", "import", str(csv), "--name", "seven")[0] == 0
    code, out, _ = _run("data", "show", "seven")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0
    for needle in ("DQ_SPIKE", "DQ_SHORT_HISTORY", "(+8 more", "DQ_SYMBOL_CASE",
                   "(+1 more: BBB)", "DQ_SURVIVORSHIP_UNKNOWN",
                   "periods_per_year 252 (annualization)"):  # weekday daily bars
        assert needle in text, needle


def test_data_import_membership(tmp_path: Path) -> None:
    csv = tmp_path / "two.csv"
    days = pd.bdate_range("2020-01-01", periods=300)
    pd.concat([pd.DataFrame({"timestamp": days, "symbol": sym, "open": 10.0, "high": 11.0,
                             "low": 9.0, "close": 10.5, "volume": 1000.0})
               for sym in ("AAA", "BBB")]).to_csv(csv, index=False)
    members = tmp_path / "members.csv"
    members.write_text("symbol,start,end\nAAA,2019-01-01,\nBBB,2020-03-02,\n")
    code, out, err = _run("data", "import", str(csv), "--name", "two", "--membership",
                          str(members))
    assert code == 0, err
    assert "membership: 2 periods stored" in out
    code, out, _ = _run("data", "show", "two")
    assert code == 0 and "membership_periods" in out and "DQ_SURVIVORSHIP" not in out
    code, out, _ = _run("data", "import", str(csv), "--name", "plain")
    assert "DQ_SURVIVORSHIP_UNKNOWN" in " ".join(_run("data", "show", "plain")[1].split())
    # a removed member without bars: survivors only, refused in one line, exit 2
    members.write_text("symbol,start,end\nAAA,2019-01-01,\nBBB,2019-01-01,\n"
                       "CCC,2019-01-01,2020-02-14\n")
    code, out, err = _run("data", "import", str(csv), "--name", "surv", "--membership",
                          str(members))
    assert code == 2 and "SURVIVORSHIP_CHECK_FAIL" in err and "CCC" in err
    assert "Traceback" not in err + out


def test_data_import_bad_file_is_one_line(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("timestamp,symbol,open,high,low,close,volume\n"
                   "2020-01-01,AAA,10,9,11,10,5\n")  # high < low
    code, _out, err = _run("data", "import", str(csv), "--name", "bad")
    assert code == 2
    assert "DQ_HIGH_LT_LOW" in err


def test_console_script_exit_code_and_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, in a real subprocess."""
    exe = Path(sys.executable).with_name("alphaloop")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "alphaloop"]
    env = {**os.environ, "ALPHALOOP_HOME": str(tmp_path)}
    proc = subprocess.run([*cmd, "sweep", "nope", "--data", "sp500", "--out", "x.parquet"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "unknown family 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_stdout_that_cannot_encode_a_character_gets_it_escaped(tmp_path: Path,
                                                                   encoding: str) -> None:
    """A black-box report: in an ASCII locale (or PYTHONIOENCODING=latin-1) `families`
    (an em dash), `data list` (a multiplication sign) and a `run` whose report path has
    an accent printed a traceback and exited 1 after doing their work."""
    exe = Path(sys.executable).with_name("alphaloop")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "alphaloop"]
    env = {**os.environ, "ALPHALOOP_HOME": str(tmp_path), "PYTHONIOENCODING": encoding}
    for args in (["families"], ["data", "list"]):
        proc = subprocess.run([*cmd, *args], capture_output=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert b"Traceback" not in proc.stderr
    families = subprocess.run([*cmd, "families"], capture_output=True, env=env, timeout=120)
    assert b"sma_cross \\u2014 long while" in families.stdout  # escaped, not lost


def test_backtest_writes_the_trade_list(spec_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    code, out, _ = _run("backtest", str(spec_file), "--data", "sp500", "--json",
                        "--trades", str(path))
    assert code == 0
    trades = pd.read_csv(path)
    assert len(trades) == json.loads(out)["n_trades"]
    assert {"symbol", "entry_time", "exit_time", "pnl", "reason"} <= set(trades.columns)


@pytest.mark.parametrize(("target", "needle"), [
    ("somedir", "output must end in .csv or .parquet"),
    ("adir.parquet", "cannot write"),
])
def test_unwritable_output_is_one_line_and_leaves_nothing(target: str, needle: str,
                                                           tmp_path: Path) -> None:
    (tmp_path / "somedir").mkdir()
    (tmp_path / "adir.parquet").mkdir()  # a directory where the file should go
    out_path = tmp_path / target
    code, out, err = _run("sweep", "sma_cross", "--data", "sp500", "--n", "3",
                          "--out", str(out_path))
    assert code == 2
    assert needle in err and "Traceback" not in err + out
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(("content", "needle"), [
    (b"\xff\xfe\x00bad", "not a UTF-8 text file"),
    (b'entry: "close > 1"\nentry: "close > 2"\nexit: "close < 1"\n', "duplicate key 'entry'"),
    (b'entry: "close > 1' + b"0" * 400 + b'"\nexit: "close < 1"\n', "too large"),
    (b'entry: "close > 1"\nexit: "close < 1"\nrisk: {max_bars: true}\n', "risk.max_bars"),
    (b'entry: "close > 1"\nexit: "close < 1"\nrisk: {stop_loss: "0.05"}\n', "risk.stop_loss"),
    (b'entry: "close > 1"\nexit: "close < 1"\ndirection: short\nrisk: {take_profit: 2}\n',
     "can never trigger"),
])
def test_more_bad_spec_files(content: bytes, needle: str, tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    code, out, err = _run("backtest", str(p), "--data", "sp500")
    assert code == 2
    assert needle in err, err
    assert "Traceback" not in err + out


def test_evaluate_prints_score_dsr_pbo_and_reasons(tmp_path: Path) -> None:
    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "16", "--out", str(res))[0] == 0
    code, out, err = _run("evaluate", str(res), "--policy", "default", "--top", "3")
    assert code == 0, err
    assert "DSR" in out and "PBO" in out and "Trials counted: 16" in out
    assert "#1 " in out and "<" in out  # a failed gate: value < threshold
    code, out, _ = _run("evaluate", str(res), "--top", "2", "--json")
    reports = json.loads(out)
    assert len(reports) == 2 and reports[0]["n_trials"] == 16 and "dsr" in reports[0]
    for key in ("benchmark", "beta", "alpha_ann", "alpha_t", "information_ratio",
                "excess_dsr", "holdout_relative"):
        assert key in reports[0], key
    assert reports[0]["benchmark"] == "equal_weight"
    assert reports[0]["holdout_relative"]["beta"] is not None


def test_evaluate_on_us_indices_shows_the_benchmark_beside_every_top_candidate(
        tmp_path: Path) -> None:
    """Issue 15's acceptance on bundled real data: a long-only trend rule (sma_cross)
    on the S&P 500 and NASDAQ fails the default policy with a reason that names the
    benchmark and both Sharpe ratios."""
    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "us_indices", "--n", "24", "--out",
                str(res))[0] == 0
    code, out, err = _run("evaluate", str(res), "--policy", "default", "--top", "3")
    assert code == 0, err
    flat = " ".join(out.split())  # the console wraps lines at its width
    assert "policy score-v2" in flat
    assert "Benchmark: equal-weight buy-and-hold of us_indices (2 symbols): Sharpe" in flat
    table = out.split("top 3 against the benchmark")[1]
    assert len(re.findall(r"\b[0-9a-f]{8}\b", table.split("bench:")[0])) == 3  # one row per top candidate
    assert "DQ_SURVIVORSHIP_UNKNOWN" in err
    assert "excess_dsr" in flat and "against benchmark equal-weight buy-and-hold" in flat
    code, out, _ = _run("evaluate", str(res), "--policy", "default", "--top", "3", "--json")
    for rep in json.loads(out):
        assert not rep["passed"]
        reason = next(r for r in rep["reasons"] if r.startswith("excess_dsr"))
        assert "against benchmark equal-weight buy-and-hold of us_indices" in reason
        bench = rep["benchmark_metrics"]["sharpe"]
        assert f"(Sharpe {rep['sharpe_sel']:.2f} vs the benchmark's {bench:.2f})" in reason


def test_evaluate_benchmark_option(tmp_path: Path) -> None:
    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "us_indices", "--n", "6", "--out",
                str(res))[0] == 0
    code, out, _ = _run("evaluate", str(res), "--top", "1", "--benchmark", "SPX", "--json")
    assert code == 0 and json.loads(out)[0]["benchmark_label"] == "buy-and-hold of SPX"
    code, out, _ = _run("evaluate", str(res), "--top", "1", "--benchmark", "cash", "--json")
    rep = json.loads(out)[0]
    assert rep["excess_dsr"] == rep["dsr"] and rep["beta"] is None
    code, out, err = _run("evaluate", str(res), "--benchmark", "QQQ")
    assert code == 2 and "unknown benchmark 'QQQ'" in " ".join(err.split())
    assert "Traceback" not in err + out


def test_evaluate_results_without_ids_are_refused_before_anything_is_recorded(
        tmp_path: Path) -> None:
    """A black-box report: without `strategy_id` the evaluation ran, recorded its run
    as DONE_SUCCESS and then died (KeyError) leaving it without a score."""
    res = tmp_path / "res.parquet"
    _run("sweep", "sma_cross", "--data", "sp500", "--n", "4", "--out", str(res))
    pd.read_parquet(res).drop(columns=["strategy_id"]).to_parquet(res)
    code, out, err = _run("evaluate", str(res), "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "EVAL_MISSING_COLUMN"
    assert "strategy_id" in err and len(err.strip().splitlines()) == 1
    home = Path(os.environ["ALPHALOOP_HOME"])
    assert not home.exists() or sorted(p.name for p in home.iterdir()) == [], \
        sorted(p.name for p in home.iterdir())  # no run, no KB, no policy recorded


def test_evaluate_bad_policy_names_the_key(tmp_path: Path) -> None:
    res = tmp_path / "res.parquet"
    _run("sweep", "sma_cross", "--data", "sp500", "--n", "4", "--out", str(res))
    pol = tmp_path / "p.yaml"
    pol.write_text("policy_version: t1\ncomponents: {sharpee: {weight: 1, lo: 0, hi: 1}}\n")
    code, out, err = _run("evaluate", str(res), "--policy", str(pol))
    assert code == 2 and "components.sharpee" in err and "Traceback" not in err + out
    code, _, err = _run("evaluate", str(tmp_path / "none.parquet"))
    assert code == 2 and "results file not found" in err


def test_report_writes_html_for_one_strategy(tmp_path: Path) -> None:
    res = tmp_path / "res.parquet"
    _run("sweep", "sma_cross", "--data", "sp500", "--n", "8", "--out", str(res))
    sid = pd.read_parquet(res)["strategy_id"].iloc[3]
    html = tmp_path / "r.html"
    # a report shows what an evaluation recorded: none yet
    code, _, err = _run("report", "--strategy", sid[:12], "--results", str(res))
    assert code == 2 and f"no recorded run evaluated a strategy '{sid[:12]}' of" in err
    assert _run("evaluate", str(res), "--top", "1")[0] == 0
    code, out, err = _run("report", "--strategy", sid[:12], "--results", str(res),
                          "--out", str(html))
    assert code == 0, err
    assert out.strip() == str(html)
    text = html.read_text()
    assert sid in text and "figure-equity" in text and "dsr" in text
    code, _, err = _run("report", "--strategy", "zzzz", "--results", str(res))
    assert code == 2 and "no recorded run evaluated a strategy 'zzzz'" in err
    # evaluate's own --out table names the run that scored it: the same page from it
    scored = tmp_path / "scored.csv"
    code, _, _ = _run("evaluate", str(res), "--top", "1", "--out", str(scored))
    assert code == 0
    code, _, err = _run("report", "--strategy", sid[:12], "--results", str(scored),
                         "--out", str(tmp_path / "from_scored.html"))
    assert code == 0, err
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")  # when it was written
    assert stamp.sub("", (tmp_path / "from_scored.html").read_text()) == stamp.sub("", text)


def test_nan_fees_are_named_as_not_finite(spec_file: Path) -> None:
    code, _out, err = _run("backtest", str(spec_file), "--data", "sp500", "--fees-bps", "nan")
    assert code == 2 and "fees_bps: Input should be a finite number" in err


# ------------------------------------------------------------------- verify
def test_verify_json_metrics_execution_and_costs(spec_file: Path, tmp_path: Path) -> None:
    fills = tmp_path / "fills.parquet"
    code, out, _ = _run("verify", str(spec_file), "--data", "us_indices", "--json",
                        "--fills", str(fills))
    assert code == 0
    payload = json.loads(out)
    assert set(payload["metrics"]) >= {"sharpe", "max_drawdown", "n_trades"}
    ex = payload["execution"]
    assert 0 < ex["fill_rate"] <= 1
    assert set(ex["costs"]) == {"commission", "spread", "impact", "borrow", "total"}
    assert ex["costs"]["commission"] > 0 and ex["capacity"]["curve"]
    assert payload["status"] == "SUCCESS" and payload["policy_version"] == "verify-v1"
    assert isinstance(payload["passed"], bool)
    ledger = pd.read_parquet(fills)
    assert len(ledger) == ex["n_fills"]
    assert {"timestamp", "symbol", "side", "quantity", "price", "fee", "slippage",
            "reason"} <= set(ledger.columns)


def test_verify_table_and_costs_file(spec_file: Path, tmp_path: Path) -> None:
    costs = tmp_path / "costs.yaml"
    costs.write_text("commission: {bps: 0}\nspread: {bps: 0}\nimpact: {k: 0}\n")
    code, out, _ = _run("verify", str(spec_file), "--data", "us_indices", "--costs",
                        str(costs), "--no-capacity")
    assert code == 0
    assert "fill rate" in out and "commission" in out and "execution: feasible" in out


@pytest.mark.parametrize(("text", "needle"), [
    ("commission: {bps: -1}", "commission.bps"),
    ("spread: {model: range}", "spread.range_fraction is required"),
    ("volume: {max_participation: 2}", "volume.max_participation"),
    ("lot_size: many", "lot_size"),
    ("comission: {bps: 1}", "comission: Extra inputs"),
    ("max_leverage: .nan", "max_leverage"),
    ("[1, 2]", "must be a mapping"),
    ("a: [", "EXEC_CONFIG_MALFORMED_YAML"),
])
def test_verify_bad_costs_file_names_the_field(text: str, needle: str, spec_file: Path,
                                               tmp_path: Path) -> None:
    costs = tmp_path / "costs.yaml"
    costs.write_text(text + "\n")
    code, _, err = _run("verify", str(spec_file), "--data", "us_indices", "--costs", str(costs))
    assert code == 2
    assert needle in err and "Traceback" not in err


def test_verify_bad_policy_names_the_key(spec_file: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("min_fill_rate: 1.5\n")
    code, _, err = _run("verify", str(spec_file), "--data", "us_indices", "--policy",
                        str(policy))
    assert code == 2 and "min_fill_rate" in err and "VERIFY_POLICY_INVALID" in err


# --------------------------------------------------------------------- runs
def test_a_damaged_knowledge_base_stops_evaluate_before_it_records_anything(
        tmp_path: Path) -> None:
    """A black-box report: with a non-SQLite kb.sqlite, `evaluate` computed for seconds,
    wrote a whole run folder that `report --run` then showed, and failed at the end."""
    from alphaloop.kb.runs import runs_dir

    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "4", "--out", str(res))[0] == 0
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database at all")
    code, _, err = _run("evaluate", str(res), "--kb", f"sqlite:///{bad}")
    assert code == 2 and "KB_CORRUPT" in err, err
    assert not runs_dir().exists() or not [p for p in runs_dir().iterdir()
                                           if not p.name.startswith(".")]
    assert bad.read_text() == "not a database at all"


def test_evaluate_records_a_run_that_report_renders(tmp_path: Path) -> None:
    from alphaloop.kb.runs import load_run, runs_dir

    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "12", "--out", str(res))[0] == 0
    code, out, err = _run("evaluate", str(res), "--top", "2")
    assert code == 0, err
    (run_dir,) = [p for p in runs_dir().iterdir() if not p.name.startswith(".")]
    assert f"run {run_dir.name[:16]} recorded" in out
    run = load_run(run_dir)
    assert run.record.policy_version == "score-v2" and run.record.n_trials == 12
    assert run.record.benchmark == "equal_weight" and run.record.benchmark_sharpe is not None
    assert run.iterations["beat_benchmark"].tolist() == [run.record.n_beat_benchmark]
    assert len(run.candidates) == 12 and run.iterations["tried"].tolist() == [12]
    assert int(run.iterations["failure:TOO_FEW_TRADES"].iloc[0]) > 0
    # the policy version is recorded in the registry, immutable from now on
    assert (Path(os.environ["ALPHALOOP_HOME"]) / "policies" / "score-v2.json").is_file()
    # the same evaluation again is the same run, not a second one
    assert _run("evaluate", str(res), "--top", "2")[0] == 0
    assert len([p for p in runs_dir().iterdir() if not p.name.startswith(".")]) == 1
    html = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-" * 2) / "run.html"
    code, out, err = _run("report", "--run", run_dir.name[:8], "--out", str(html))
    assert code == 0, err
    assert out.strip() == str(html)
    text = html.read_text()
    assert 'id="figure-best_score"' in text and 'id="figure-failure_codes"' in text
    assert "failure:TOO_FEW_TRADES" in text and "score-v2" in text
    assert "beat the benchmark significantly" in text
    # a strategy report straight from the run, without --results
    sid = run.candidates["strategy_id"].iloc[0]
    page = tmp_path / "s.html"
    code, out, err = _run("report", "--strategy", sid[:10], "--out", str(page))
    assert code == 0, err
    assert sid in page.read_text()
    assert 'id="robustness-relative"' in page.read_text()


def test_evaluate_indexes_its_run_in_the_knowledge_base(tmp_path: Path) -> None:
    """evaluate's runs sit beside the loop's in the KB: the run, every candidate's
    strategy, metrics, score, and a failure record per rejected one; once."""
    import sqlite3

    from alphaloop.kb.runs import load_run, runs_dir

    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "12", "--out", str(res))[0] == 0
    assert _run("evaluate", str(res), "--top", "2")[0] == 0
    assert _run("evaluate", str(res), "--top", "2")[0] == 0  # the same run: indexed once
    (run_dir,) = [p for p in runs_dir().iterdir() if not p.name.startswith(".")]
    run = load_run(run_dir)
    db = sqlite3.connect(Path(os.environ["ALPHALOOP_HOME"]) / "kb.sqlite")
    one = db.execute("SELECT status, data_ref, json_extract(config, '$.kind') FROM runs "
                     "WHERE run_id = ?", (run.record.run_id,)).fetchall()
    assert one == [("DONE_SUCCESS", run.record.data_ref, "evaluate")]
    scores = dict(db.execute("SELECT strategy_id, score_total FROM scores WHERE run_id = ?",
                             (run.record.run_id,)).fetchall())
    stored = dict(zip(run.candidates["strategy_id"], run.candidates["score_total"],
                      strict=True))
    assert scores == pytest.approx(stored)  # the numbers evaluate recorded, once each
    windows = db.execute("SELECT DISTINCT engine, window FROM backtests WHERE run_id = ?",
                         (run.record.run_id,)).fetchall()
    assert windows == [("A", "selection")]  # never a loop's search-window trial
    rejected = int((~run.candidates["passed"].astype(bool)).sum())
    codes = [c for (c,) in db.execute("SELECT code FROM failures WHERE run_id = ?",
                                      (run.record.run_id,))]
    assert len(codes) == rejected and "TOO_FEW_TRADES" in codes
    db.close()
    code, out, _ = _run("kb", "runs", "--json")
    assert code == 0 and run.record.run_id in out
    # the table names the data and marks the run as an evaluate (no loop counts)
    # status is for research loops: an evaluate run is named as one (a black-box retest:
    # it said the default knowledge base did not know the run)
    code, _, err = _run("status", run.record.run_id)
    assert code == 2 and "RUN_NOT_FOUND" in err and "is an `evaluate` run" in err
    assert "report --run" in err
    # kb show: the evaluate's backtests carry the sweep's costs, as its file has them
    swept = pd.read_parquet(res)
    code, out, _ = _run("kb", "show", str(run.candidates["strategy_id"].iloc[0]), "--json")
    (bt,) = [b for b in json.loads(out)["backtests"] if b["run_id"] == run.record.run_id]
    assert bt["costs"] == {"fees_bps": float(swept["fees_bps"].iloc[0]),
                           "slippage_bps": float(swept["slippage_bps"].iloc[0])}
    code, out, _ = _run("kb", "runs")
    (line,) = [ln for ln in out.splitlines() if run.record.run_id[:12] in ln]
    n_passed = int(run.candidates["passed"].astype(bool).sum())
    assert line.split()[1:] == ["DONE_SUCCESS", "sp500", "eval", "-", str(n_passed)]


def test_kb_import_runs_indexes_folders_recorded_before_the_kb(tmp_path: Path) -> None:
    import sqlite3

    from alphaloop.kb.runs import runs_dir

    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "6", "--out", str(res))[0] == 0
    assert _run("evaluate", str(res), "--top", "1")[0] == 0
    kb_file = Path(os.environ["ALPHALOOP_HOME"]) / "kb.sqlite"
    for suffix in ("", "-wal", "-shm"):  # as if recorded by an alphaloop without the KB
        Path(f"{kb_file}{suffix}").unlink(missing_ok=True)
    code, out, err = _run("kb", "import-runs")
    assert code == 0, err
    assert "1 run folder(s)" in out
    (run_dir,) = [p for p in runs_dir().iterdir() if not p.name.startswith(".")]
    db = sqlite3.connect(kb_file)
    assert db.execute("SELECT COUNT(*) FROM scores WHERE run_id = ?",
                      (run_dir.name,)).fetchone() == (6,)
    db.close()


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    code, _, err = _run("report", "--run", "abc")
    assert code == 2 and "no run matches 'abc'" in err
    # both places it looked: the loop runs (--out-dir) and the recorded evaluates
    code, _, err = _run("report", "--run", "abc", "--out-dir", str(tmp_path / "loops"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"no loop run under {tmp_path / 'loops'}" in err and "no recorded evaluate" in err
    code, _, err = _run("report")
    assert code == 2 and "report needs --strategy ID or --run ID" in err
    code, _, err = _run("report", "--strategy", "abcd")
    assert code == 2 and "no recorded run evaluated a strategy 'abcd'" in err


def test_a_changed_policy_under_a_used_version_is_refused(tmp_path: Path) -> None:
    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "6", "--out", str(res))[0] == 0
    pol = tmp_path / "p.yaml"
    pol.write_text("policy_version: mine-v1\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 2}\n")
    assert _run("evaluate", str(res), "--policy", str(pol))[0] == 0
    pol.write_text("policy_version: mine-v1\ncomponents:\n  sharpe: {weight: 1, lo: 0, hi: 3}\n")
    code, _, err = _run("evaluate", str(res), "--policy", str(pol))
    assert code == 2 and "POLICY_VERSION_CONFLICT" in err


def test_a_damaged_run_is_a_critical_error(tmp_path: Path) -> None:
    from alphaloop.kb.runs import DONE, find_run, load_run, runs_dir

    broken = runs_dir() / ("ab" * 32)
    broken.mkdir(parents=True)
    (broken / "run.json").write_text("{not json")
    (broken / DONE).write_text("x")
    with pytest.raises(Exception, match="cannot be read back") as exc:
        load_run(find_run("abab"))
    assert exc.value.code == "RUN_CORRUPT" and str(exc.value.error_class) == "CRITICAL"


# ------------------------------------------------ report = what evaluate recorded
class _Stated(HTMLParser):
    """What a report page states, read back from its HTML: the robustness rows
    (``data-key``) and metric cells (``data-metric`` × ``data-column``) as the exact
    value of ``data-value`` (else the cell's text), and the Source rows."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.robustness: dict[str, str] = {}
        self.metrics: dict[tuple[str, str], str] = {}
        self.source: dict[str, str] = {}
        self._table = self._row = ""
        self._cell: tuple[dict[str, str | None], list[str]] | None = None
        self._cells: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = dict(attrs_list)
        if tag == "table":
            self._table = str(attrs.get("id") or "")
        elif tag == "tr":
            self._row, self._cells = str(attrs.get("data-metric") or
                                         attrs.get("data-key") or ""), []
        elif tag in ("td", "th"):
            self._cell = (attrs, [])
        if tag == "table" and self._table.startswith("robustness"):
            self._table = "robustness-table"  # the summary and each part's small table

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            attrs, text = self._cell
            value = attrs.get("data-value") or "".join(text).strip()
            self._cells.append(value)
            if tag == "td" and self._table == "robustness-table":
                self.robustness[str(attrs.get("data-key") or self._row)] = value
            elif tag == "td" and self._table == "metrics-table" and attrs.get("data-column"):
                self.metrics[(self._row, str(attrs["data-column"]))] = value
            self._cell = None
        elif tag == "tr" and self._table == "source-table" and len(self._cells) == 2:
            self.source[self._cells[0]] = self._cells[1]


def _report_page(strategy: str, path: Path, *extra: str) -> _Stated:
    code, _, err = _run("report", "--strategy", strategy, "--out", str(path), *extra)
    assert code == 0, err
    return _Stated(path.read_text(encoding="utf-8"))


def _same(stated: str, value: Any) -> bool:
    """A number the page states equals ``value`` exactly (None is shown as "—")."""
    if value is None:
        return stated == "—"
    if isinstance(value, bool):
        return stated == ("true" if value else "false")
    return float(stated) == float(value)


HEADLINE = ("rank", "score_total", "passed", "sharpe_sel", "psr", "dsr", "n_trials", "pbo",
            "spa_pvalue")


def _assert_page_is_report(page: _Stated, report: dict[str, Any]) -> None:
    keys = (*HEADLINE, "holdout_fraction", "var_trial_sharpe", "expected_max_sharpe")
    wrong = {k: (page.robustness.get(k), report[k]) for k in keys
             if not _same(page.robustness[k], report[k])}
    assert not wrong, wrong
    held = report["holdout_metrics"] or {}
    assert held, "the evaluation reported no holdout metrics"
    for k, v in held.items():
        assert _same(page.robustness[f"holdout_metrics.{k}"], v), k
        assert _same(page.metrics[(k, "holdout")], v), k
    assert _same(page.metrics[("sharpe", "selection")], report["sharpe_sel"])


def test_report_shows_what_evaluate_recorded(tmp_path: Path) -> None:
    """Issue 8, item 5: the page states evaluate's score, DSR, PBO, SPA, rank and holdout
    metrics, with a non-default holdout and trial count, for a candidate in the recorded
    top and one outside it. References: evaluate's --json and its --out table."""
    res, scored = tmp_path / "res.parquet", tmp_path / "scored.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "12", "--out", str(res))[0] == 0
    settings = ("--holdout", "0.25", "--n-trials", "40")
    code, out, err = _run("evaluate", str(res), "--top", "2", *settings, "--json",
                          "--out", str(scored))
    assert code == 0, err
    printed = json.loads(out)
    assert [r["n_trials"] for r in printed] == [40, 40]
    for report in printed:
        page = _report_page(report["strategy_id"][:12], tmp_path / "p.html")
        _assert_page_is_report(page, report)
        assert page.source["trial count"].startswith("40 ")
        assert "(holdout 0.25)" in page.source["holdout"]
        assert "recorded" in page.source["robustness detail"]
    # outside the recorded top: the headline numbers are the --out table's row
    table = pd.read_parquet(scored).set_index("rank", drop=False)
    row = table.loc[7]
    page = _report_page(row["strategy_id"], tmp_path / "p7.html")
    for k in ("rank", "score_total", "passed", "sharpe", "psr", "dsr", "n_trials"):
        # the row's sharpe is the selection window's: the page names it sharpe_sel
        stated = page.robustness["sharpe_sel" if k == "sharpe" else k]
        assert _same(stated, row[k].item()), k
    for k in ("pbo", "spa_pvalue"):  # of the whole set: the same in every report
        assert _same(page.robustness[k], printed[0][k]), k
    assert "not recorded" in page.source["robustness detail"]
    # its holdout metrics are computed for the page: as evaluate computes them
    code, out, err = _run("evaluate", str(res), "--top", "12", *settings, "--json")
    assert code == 0, err
    (full,) = [r for r in json.loads(out) if r["strategy_id"] == row["strategy_id"]]
    assert full["rank"] == 7
    for k, v in full["holdout_metrics"].items():
        stated = page.metrics[(k, "holdout")]
        assert (v is None and stated == "—") or float(stated) == pytest.approx(v, rel=1e-12), k


def test_report_falls_back_to_the_run_and_refuses_a_changed_results_file(
        tmp_path: Path) -> None:
    """The run's stored candidates stand in for a results file that is gone; a changed
    one is refused; `evaluate` accepts its own --out file and agrees with itself."""
    res, scored = tmp_path / "res.parquet", tmp_path / "scored.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "8", "--out", str(res))[0] == 0
    code, out, err = _run("evaluate", str(res), "--top", "2", "--json", "--out", str(scored))
    assert code == 0, err
    first = json.loads(out)
    code, out, err = _run("evaluate", str(scored), "--top", "2", "--json")
    assert code == 0, err
    again = json.loads(out)
    keys = ("strategy_id", *HEADLINE, "holdout_metrics")
    assert [{k: r[k] for k in keys} for r in again] == [{k: r[k] for k in keys} for r in first]
    from alphaloop.kb.runs import load_run, runs_dir

    (run,) = [load_run(p) for p in runs_dir().iterdir() if not p.name.startswith(".")
              and load_run(p).record.results_file == str(res.resolve())]
    rid, sid = run.record.run_id[:10], first[1]["strategy_id"]
    moved = res.rename(tmp_path / "moved.parquet")
    page = _report_page(sid[:12], tmp_path / "gone.html", "--run", rid)
    _assert_page_is_report(page, first[1])
    assert "not read" in page.source["results"]
    # the same sweep rows in another order: other content than the run hashed
    pd.read_parquet(moved).iloc[::-1].to_parquet(res)
    code, out, err = _run("report", "--strategy", sid[:12], "--run", rid)
    assert code == 2 and f"{res.resolve()} changed since run {rid}" in err
    assert "RUN_RESULTS_CHANGED" in err and "Traceback" not in err + out
    code, _, err = _run("report", "--strategy", sid[:12], "--results", str(res))
    assert code == 2 and "as it is now" in err
    code, _, err = _run("report", "--strategy", "zzzz", "--run", rid)
    assert code == 2 and f"run {rid}" in err and "did not evaluate a strategy 'zzzz'" in err


def test_report_uses_the_newest_run(tmp_path: Path) -> None:
    """Two evaluations within a second: the report shows the later one's numbers;
    --run picks the earlier one."""
    res = tmp_path / "res.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "6", "--out", str(res))[0] == 0
    printed = {}
    for holdout in ("0.3", "0.1"):
        code, out, err = _run("evaluate", str(res), "--top", "6", "--holdout", holdout,
                              "--json")
        assert code == 0, err
        printed[holdout] = {r["strategy_id"]: r for r in json.loads(out)}
    from alphaloop.kb.runs import load_run, runs_dir

    runs = {load_run(p).record.holdout: p.name for p in runs_dir().iterdir()
            if not p.name.startswith(".")}
    sid = next(iter(printed["0.3"]))
    page = _report_page(sid, tmp_path / "new.html")
    _assert_page_is_report(page, printed["0.1"][sid])
    assert page.source["run"].startswith(runs[0.1])
    page = _report_page(sid, tmp_path / "old.html", "--run", runs[0.3][:12])
    _assert_page_is_report(page, printed["0.3"][sid])


def test_evaluate_out_names_its_windows_like_the_printed_table(tmp_path: Path) -> None:
    """`evaluate --out` holds the selection window's metrics (also as sharpe_sel) and,
    for the reported top, the printed table's holdout and 2x-cost Sharpe, the same
    numbers as `--json`; evaluating the file again gives the same scores."""
    import pandas as pd

    res, scored = tmp_path / "res.parquet", tmp_path / "scored.parquet"
    assert _run("sweep", "sma_cross", "--data", "sp500", "--n", "12", "--out", str(res))[0] == 0
    code, out, err = _run("evaluate", str(res), "--top", "3", "--holdout", "0.3",
                          "--out", str(scored), "--json")
    assert code == 0, err
    reports = {r["strategy_id"]: r for r in json.loads(out)}
    table = pd.read_parquet(scored).set_index("strategy_id")
    assert (table["sharpe_sel"] == table["sharpe"]).all()
    top = table.loc[list(reports)]
    assert top["sharpe_holdout"].tolist() == [r["sharpe_holdout"] for r in reports.values()]
    assert top["2x_cost"].tolist() == [r["cost_stress"]["sharpe_at_survive"]
                                       for r in reports.values()]
    assert table.drop(index=list(reports))["sharpe_holdout"].isna().all()
    code, again, err = _run("evaluate", str(scored), "--top", "3", "--holdout", "0.3", "--json")
    assert code == 0, err
    assert [r["score_total"] for r in json.loads(again)] == [
        r["score_total"] for r in reports.values()]


def test_a_refused_option_with_json_is_one_json_object_on_stdout(spec_file: Path) -> None:
    """Usage errors go through the console script (click's parser, before any command
    runs): a real subprocess, as a user's shell runs it."""
    exe = Path(sys.executable).with_name("alphaloop")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "alphaloop"]
    for args in (["backtest", str(spec_file), "--data", "sp500", "--json", "--fees-bps", "x"],
                 ["verify", str(spec_file), "--data", "sp500", "--json", "--bogus"]):
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        error = json.loads(proc.stdout)["error"]
        assert error["code"] == "USAGE_ERROR" and error["class"] == "PERMANENT"
    plain = subprocess.run([*cmd, "verify", str(spec_file), "--bogus"], capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 2 and plain.stdout == ""  # without --json: stderr only


def test_evaluate_json_carries_a_ranked_books_rank_ic(tmp_path: Path) -> None:
    """The factor gate's statistic is in `--json` as it is in `--out` (one number)."""
    import pandas as pd

    res, scored = tmp_path / "xs.parquet", tmp_path / "scored.parquet"
    assert _run("sweep", "xs_momentum", "--data", "synth_100", "--n", "3", "--out",
                str(res))[0] == 0
    code, out, err = _run("evaluate", str(res), "--top", "3", "--out", str(scored), "--json")
    assert code == 0, err
    table = pd.read_parquet(scored).set_index("strategy_id")
    for rep in json.loads(out):
        assert rep["rank_ic_t"] is not None
        assert (rep["rank_ic_mean"], rep["rank_ic_t"]) == tuple(
            table.loc[rep["strategy_id"], ["rank_ic_mean", "rank_ic_t"]])


def test_names_print_as_written_not_as_emoji() -> None:
    """Rich turns ":sa:" into an emoji by default; an id or a name the user typed must
    come back verbatim (a black-box report saw "desk:sa:cool" printed as an emoji)."""
    code, _, err = _run("data", "show", "desk:sa:cool")
    assert code == 2 and "'desk:sa:cool'" in err


def test_outputs_and_seeds_that_cannot_work_are_refused_before_the_work(
        tmp_path: Path, spec_file: Path) -> None:
    """A black-box report: `--seed -1` and `--seed 10**30` ended in tracebacks (the
    latter after the sweep, when writing), `verify --fills /tmp` after the whole run."""
    for seed in ("-1", str(10**30)):
        code, out, err = _run("sweep", "sma_cross", "--data", "sp500", "--n", "2", "--seed",
                              seed, "--out", str(tmp_path / "s.parquet"))
        assert code == 2 and "--seed" in err and "Traceback" not in err + out
    folder = tmp_path / "a_folder.parquet"
    folder.mkdir()
    for args, code_name in (
            (["verify", str(spec_file), "--data", "sp500", "--fills", str(folder)],
             "OUTPUT_WRITE_FAILED"),
            (["backtest", str(spec_file), "--data", "sp500", "--trades", "t.txt"],
             "OUTPUT_FORMAT"),
            (["sweep", "sma_cross", "--data", "sp500", "--out", str(folder)],
             "OUTPUT_WRITE_FAILED"),
            (["factor", "roc(close, 20)", "--data", "sp500", "--out", str(tmp_path)],
             "OUTPUT_WRITE_FAILED"),
            (["report", "--run", "nope", "--out", str(tmp_path)], "OUTPUT_WRITE_FAILED"),
            # a file where a folder above the output should be (a black-box report: the
            # sweep ran, then "File exists")
            (["sweep", "sma_cross", "--data", "sp500", "--out", str(spec_file / "r.parquet")],
             "is a file, not a folder"),
            (["report", "--run", "nope", "--out", str(spec_file / "sub" / "r.html")],
             "is a file, not a folder")):
        code, out, err = _run(*args)
        assert code == 2 and code_name in err, (args, err)
        assert "compiling" not in err and len(err.strip().splitlines()) == 1
