"""Issue 14: what a new user met in the first hour, through the real console script at
80 columns (what piped output and narrow terminals get)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXE = Path(sys.executable).with_name("alphaloop")
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "alphaloop"]
HEX8 = re.compile(r"\b[0-9a-f]{8}\b")


def cli(home: Path, *args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {**os.environ, "ALPHALOOP_HOME": str(home), "COLUMNS": "80", "TERM": "dumb"}
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=600,
                          env={**base, **(env or {})}, cwd=cwd)


def fits_80(text: str) -> None:
    """Every line fits and no number was cut to '0.…'."""
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide
    assert "…" not in text, text


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A donchian sweep (three parameters: the widest params text) and its evaluation."""
    root = tmp_path_factory.mktemp("first_hour")
    home, res = root / "home", root / "res.parquet"
    sweep = cli(home, "sweep", "donchian_breakout", "--data", "sp500", "--n", "24",
                "--out", str(res))
    assert sweep.returncode == 0, sweep.stderr
    return home, res, sweep.stdout


# ------------------------------------------------------------ 1 and 3: ids, 80 columns
def test_sweep_table_shows_ids_and_whole_numbers_at_80_columns(
        swept: tuple[Path, Path, str]) -> None:
    _home, res, out = swept
    fits_80(out)
    assert re.search(r"\bid\b", out) and "sharpe" in out and "max dd" in out
    ids = HEX8.findall(out)
    assert len(ids) == 10  # the top 10 rows, each with its id
    full = set(pd.read_parquet(res)["strategy_id"])
    assert all(sum(s.startswith(i) for s in full) == 1 for i in ids)  # unique prefixes
    assert re.search(r"\d+\.\d\d%", out)  # returns printed whole, e.g. 173.59%
    assert "entry_window=" in out and "stop_loss=" in out


def test_evaluate_table_names_windows_and_gates_at_80_columns(
        swept: tuple[Path, Path, str]) -> None:
    home, res, _ = swept
    proc = cli(home, "evaluate", str(res), "--top", "3")
    assert proc.returncode == 0, proc.stderr
    fits_80(proc.stdout)
    for word in ("sharpe_sel", "sharpe_holdout", "gates", "DSR", "2x_cost"):
        assert word in proc.stdout, word
    assert re.search(r"\b(passed|failed)\b", proc.stdout)
    assert " pass " not in proc.stdout and "\nsharpe " not in proc.stdout
    assert len(HEX8.findall(proc.stdout.split("top 3 by score")[1])) >= 3


# ------------------------------------------------------------------- 2: spec ID
def test_spec_turns_a_row_into_the_yaml_backtest_takes(swept: tuple[Path, Path, str],
                                                      tmp_path: Path) -> None:
    home, res, out = swept
    sid = HEX8.findall(out)[0]
    proc = cli(home, "spec", sid, "--results", str(res))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("entry: close > highest(high, ")
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(proc.stdout)
    bt = cli(home, "backtest", str(spec_file), "--data", "sp500", "--json")
    assert bt.returncode == 0, bt.stderr
    assert json.loads(bt.stdout)["strategy_id"].startswith(sid)
    # after an evaluation, the recorded run is enough (no --results)
    assert cli(home, "evaluate", str(res), "--top", "1").returncode == 0
    again = cli(home, "spec", sid)
    assert again.returncode == 0 and again.stdout == proc.stdout
    missing = cli(home, "spec", "ffffffff")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "--results" in missing.stderr


# ---------------------------------------------------------------- 7: warnings
def test_n_zero_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = cli(tmp_path, "sweep", "sma_cross", "--data", "sp500", "--n", "0",
               "--out", str(tmp_path / "r.parquet"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--n" in lines[0] and lines[0].startswith("error:")
    assert "╭" not in proc.stderr and "Usage" not in proc.stderr


def test_a_grid_smaller_than_n_says_so(tmp_path: Path) -> None:
    # sma_cross: fast 5..50 step 5 (10) × slow 20..200 step 10 (19) = 190, minus the 16
    # pairs with fast >= slow (1+1+2+2+3+3+4 for fast = 20..50) = 174
    proc = cli(tmp_path, "sweep", "sma_cross", "--data", "sp500", "--n", "1000",
               "--sampler", "grid", "--out", str(tmp_path / "g.parquet"))
    assert proc.returncode == 0, proc.stderr
    assert "grid has only 174 points: wrote 174 rows" in " ".join(proc.stderr.split())
    assert len(pd.read_parquet(tmp_path / "g.parquet")) == 174


def test_families_show_templates_and_ranges(tmp_path: Path) -> None:
    proc = cli(tmp_path, "families")
    assert proc.returncode == 0
    fits_80(proc.stdout)
    assert "{'type'" not in proc.stdout and "'low'" not in proc.stdout
    assert "entry  sma(close, {fast}) > sma(close, {slow})" in proc.stdout
    assert "fast   5 .. 50 step 5" in proc.stdout
    assert "stop_loss     one of none, 0.02, 0.05, 0.1" in proc.stdout
    assert "exit       roc(close, {window}) < 0" in proc.stdout
    # xs_momentum's score holds window - skip: neither is a placeholder there, and the
    # values it was built at are named (not a half-filled template)
    flat = " ".join(proc.stdout.split())
    assert "score roc(lag(close, 21), 119)" in flat and "shown at window=140 skip=21" in flat
    assert "entry rank(roc(close, {window})) >= 0.9" in flat  # 1 - top is a number, window not


def test_data_show_states_data_ref_once_and_whole(tmp_path: Path) -> None:
    from alphaloop.data import load_bars

    proc = cli(tmp_path, "data", "show", "sp500")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("data_ref") == 1
    flat = re.sub(r"[\s│]+", "", proc.stdout)
    assert load_bars("sp500").data_ref in flat
    assert "index levels" in proc.stdout


def test_verify_says_execution_feasible_and_warns_on_index_capacity(
        tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text('entry: "sma(close, 10) > sma(close, 50)"\n'
                    'exit: "sma(close, 10) < sma(close, 50)"\n')
    proc = cli(tmp_path, "verify", str(spec), "--data", "sp500")
    assert proc.returncode == 0, proc.stderr
    assert "execution: feasible" in proc.stdout and "PASS" not in proc.stdout
    assert "not meaningful" in proc.stdout
    assert "index levels" in " ".join(proc.stderr.split())
    synth = cli(tmp_path, "verify", str(spec), "--data", "synth_planted", "--json",
                "--no-capacity")
    payload = json.loads(synth.stdout)
    assert payload["capacity_note"] is None and "execution_feasible" in payload


# ------------------------------------------------------------------- 4: import
YAHOO = """Date,Open,High,Low,Close,Adj Close,Volume
2020-01-02,100,102,99,101,50.5,1000
2020-01-03,101,103,100,102,51,1100
2020-01-06,102,104,101,103,51.5,1200
"""


def test_import_a_yahoo_file_adjusted_by_default(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "SPY.csv"
    src.write_text(YAHOO)
    proc = cli(tmp_path / "home", "data", "import", str(src))
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "imported SPY: 3 bars × 1 symbol (SPY)" in said
    assert "adjusted open/high/low/close by Adj Close / Close (ratio 0.5 .. 0.5)" in said
    raw = cli(tmp_path / "home", "data", "import", str(src), "--name", "spy_raw",
              "--symbol", "SPDR", "--no-adjust")
    assert raw.returncode == 0, raw.stderr
    assert "(SPDR)" in raw.stdout and "kept raw" in raw.stdout
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))
    from alphaloop.data import load_bars

    adjusted, kept = load_bars("SPY"), load_bars("spy_raw")
    # every Adj Close / Close here is exactly 0.5
    assert adjusted.close[:, 0].tolist() == [50.5, 51.0, 51.5]
    assert adjusted.open[:, 0].tolist() == [50.0, 50.5, 51.0]
    assert adjusted.volume[:, 0].tolist() == [1000, 1100, 1200]
    assert kept.symbols == ("SPDR",) and kept.close[:, 0].tolist() == [101, 102, 103]


def test_import_wrong_columns_lists_missing_and_unexpected(tmp_path: Path) -> None:
    src = tmp_path / "trades.csv"
    src.write_text("when,ticker,price,qty\n2020-01-02,AAPL,300,10\n2020-01-03,AAPL,301,5\n")
    proc = cli(tmp_path, "data", "import", str(src))
    assert proc.returncode == 2
    msg = " ".join(proc.stderr.split())
    assert "missing columns ['date (or timestamp, datetime, time, open_time)', 'open', 'high', " \
           "'low', 'close']" in msg
    assert "unexpected columns ['when', 'ticker', 'price', 'qty']" in msg
    assert "must be numeric" not in msg


def test_import_name_clash_names_the_option(tmp_path: Path) -> None:
    src = tmp_path / "SPY.csv"
    src.write_text(YAHOO)
    assert cli(tmp_path, "data", "import", str(src)).returncode == 0
    proc = cli(tmp_path, "data", "import", str(src))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


# ------------------------------------------------------------ 8: numba's cache
def test_kernels_compile_once_into_a_per_user_cache(tmp_path: Path) -> None:
    """Without NUMBA_CACHE_DIR the CLI caches under $XDG_CACHE_HOME/alphaloop/numba and
    says it is compiling only when it is."""
    spec = tmp_path / "s.yaml"
    spec.write_text('entry: "sma(close, 10) > sma(close, 50)"\n'
                    'exit: "sma(close, 10) < sma(close, 50)"\n')
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "ALPHALOOP_HOME": str(tmp_path),
            "COLUMNS": "80"}
    args = [*CMD, "backtest", str(spec), "--data", "sp500", "--json"]
    runs = [subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert "compiling kernels (first run only)" in runs[0].stderr
    assert "compiling" not in runs[1].stderr
    assert any((tmp_path / "xdg" / "alphaloop" / "numba").rglob("*.nbi"))
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout)


def test_a_numba_cache_dir_the_user_set_is_kept(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "mine"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    code = ("import os, alphaloop.cli; print(os.environ['NUMBA_CACHE_DIR'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.stdout.strip() == str(tmp_path / "mine")
    env.pop("NUMBA_CACHE_DIR")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.stdout.strip() == str(tmp_path / "xdg" / "alphaloop" / "numba")


# ------------------------------------------------------------------ 9: packaging
def test_license_is_an_spdx_string() -> None:
    import tomllib

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    # the string form (PEP 639) needs setuptools 77; older ones reject it
    assert "setuptools>=77" in meta["build-system"]["requires"]


# -------------------------------------------------------------- 5: report size, tables
def test_reports_share_plotly_per_folder_and_render_robustness_as_tables(
        swept: tuple[Path, Path, str], tmp_path: Path) -> None:
    home, res, _ = swept
    ev = cli(home, "evaluate", str(res), "--top", "2")
    assert ev.returncode == 0, ev.stderr
    ids = HEX8.findall(ev.stdout.split("top 2 by score")[1])[:2]  # the detailed two
    full = list(pd.read_parquet(res)["strategy_id"])
    names = [next(s for s in full if s.startswith(i))[:16] for i in ids]
    first = cli(home, "report", "--strategy", ids[0], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    page = tmp_path / first.stdout.strip()
    assert page.parent == tmp_path / "reports"  # ./reports/ unless --out
    shared = tmp_path / "reports" / "plotly.min.js"
    assert shared.stat().st_size > 3_000_000 and page.stat().st_size < 1_500_000
    stamp = shared.stat().st_mtime_ns
    second = cli(home, "report", "--strategy", ids[1], cwd=tmp_path)
    assert second.returncode == 0 and shared.stat().st_mtime_ns == stamp  # written once
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == sorted(
        ["plotly.min.js", f"strategy_{names[0]}.html", f"strategy_{names[1]}.html"])
    text = page.read_text(encoding="utf-8")
    assert '<script type="text/javascript" src="plotly.min.js"></script>' in text
    for heading in ("Cost stress", "Parameter neighbours (±1 grid step)", "Sub-periods",
                    "Bootstrap interval of the Sharpe ratio",
                    "Holdout (untouched by the selection)"):
        assert f"<h3>{heading}</h3>" in text, heading
    # keys are attributes for tools, not the text a reader sees
    assert "<code>cost_stress.levels.0.metrics.total_return</code>" not in text
    assert 'data-key="cost_stress.levels.0.metrics.total_return"' in text
    alone = cli(home, "report", "--strategy", ids[0], "--self-contained",
                "--out", str(tmp_path / "mail" / "one.html"))
    assert alone.returncode == 0, alone.stderr
    assert os.listdir(tmp_path / "mail") == ["one.html"]
    assert (tmp_path / "mail" / "one.html").stat().st_size > 3_000_000


# ------------------------------------------------------------------- the README
def test_readme_use_section_names_real_commands_and_options() -> None:
    """Every command line of the README's "Use" block exists, with every option it
    shows (asked of each command's --help)."""
    from typer.testing import CliRunner

    from alphaloop.cli import app

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Use", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0] for line in block.splitlines() if line.strip()]
    assert len(lines) >= 11
    groups = {"data", "kb"}
    for line in lines:
        words = line.split()
        assert words[0] == "alphaloop", line
        command = words[1:3] if words[1] in groups else words[1:2]
        res = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, line
        for option in re.findall(r"(--[a-z][a-z-]*)", line):
            assert option in res.stdout, (line, option)


def test_command_listings_keep_each_summary_in_one_paragraph() -> None:
    """`alphaloop --help` and a group's --help list each command's summary as flowing
    text: the docstrings' own line breaks used to cut sentences mid-listing ("on the data
    before" / "the holdout")."""
    from typer.testing import CliRunner

    from alphaloop.cli import app

    for group in ([], ["kb"], ["world"]):
        res = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": "300"})
        assert res.exit_code == 0
        rows = [line for line in res.stdout.splitlines() if line.startswith("│ ")]
        # at 300 columns every summary fits on its command's row: no continuation rows
        continuation = [r for r in rows if r.startswith("│  ") and not r.strip("│ ")
                        .startswith("-")]
        assert continuation == [], (group, continuation)
    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300"}).stdout
    assert "on the data before the holdout, each against its benchmark" in listing


def test_an_error_message_with_its_own_line_breaks_is_printed_as_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    """psycopg's "connection refused" carries a second line ("\\n\\tIs the server
    running...?"): the CLI's error is still one line, and so is the --json message."""
    import typer

    from alphaloop.cli._common import _friendly
    from alphaloop.errors import ErrorClass
    from alphaloop.kb import KBError

    @_friendly
    def command(as_json: bool = False) -> None:
        raise KBError("cannot read db: refused\n\tIs the server running?",
                      code="KB_READ_FAIL", error_class=ErrorClass.TRANSIENT)

    with pytest.raises(typer.Exit) as exc:
        command(as_json=True)
    assert exc.value.exit_code == 2
    got = capsys.readouterr()
    assert got.err.strip().splitlines() == [
        "error: [KB_READ_FAIL] cannot read db: refused Is the server running?"]
    assert json.loads(got.out)["error"]["message"] == \
        "cannot read db: refused Is the server running?"
