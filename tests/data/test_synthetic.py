"""The synthetic generator: determinism, OHLC consistency, and the features it promises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alphaloop.data import PlantedEffect, RegimeConfig, quality_report, synthetic
from alphaloop.data.synthetic import CrossSectionalEffect, generate, regime_path, symbol_names
from alphaloop.errors import DataError


def log_returns(close: np.ndarray) -> np.ndarray:
    return np.diff(np.log(close), axis=0)


def test_shape_names_and_calendar() -> None:
    bars = generate(12, 30, start="2020-01-01")
    assert bars.shape == (30, 12)
    assert bars.symbols[0] == "SYN000" and bars.symbols[-1] == "SYN011"
    assert str(bars.index.dtype) == "datetime64[ns, UTC]"
    assert bars.index[0] == pd.Timestamp("2020-01-01", tz="UTC")
    assert (bars.index.day_of_week < 5).all()
    assert bars.name == "synthetic"
    assert symbol_names(1001)[-1] == "SYN1000"


def test_same_seed_same_data_different_seed_different() -> None:
    a, b, c = generate(5, 200, seed=1), generate(5, 200, seed=1), generate(5, 200, seed=2)
    assert a.data_ref == b.data_ref
    assert a.data_ref != c.data_ref
    opts = {"regimes": True, "fat_tails": 4.0, "correlation": 0.3}
    assert generate(5, 200, seed=1, **opts).data_ref == generate(5, 200, seed=1, **opts).data_ref


@settings(max_examples=40, deadline=None)
@example(seed=0, n_symbols=1, n_bars=1, sigma=2.2250738585072014e-308, regimes=False,
         fat_tails=None, correlation=0.0, plant=False)  # once overflowed the volume
@given(seed=st.integers(0, 2**32 - 1), n_symbols=st.integers(1, 6), n_bars=st.integers(1, 120),
       sigma=st.floats(0.0, 1.5), regimes=st.booleans(),
       fat_tails=st.one_of(st.none(), st.floats(2.1, 30.0)), correlation=st.floats(0.0, 0.95),
       plant=st.booleans())
def test_ohlc_is_consistent(seed: int, n_symbols: int, n_bars: int, sigma: float, regimes: bool,
                            fat_tails: float | None, correlation: float, plant: bool) -> None:
    planted = PlantedEffect(symbols=(0,), strength=0.5, lookback=3) if plant else None
    b = generate(n_symbols, n_bars, seed=seed, sigma=sigma, regimes=regimes,
                 fat_tails=fat_tails, correlation=correlation, planted=planted)
    for f in ("open", "high", "low", "close", "volume"):
        assert np.isfinite(b.field(f)).all(), f
    assert (b.low > 0).all()
    assert (b.high >= np.maximum(b.open, b.close)).all()
    assert (b.low <= np.minimum(b.open, b.close)).all()
    assert (b.volume >= 0).all()
    assert quality_report(b, min_years=0).ok


def test_gbm_moments_match_parameters() -> None:
    b = generate(20, 5000, seed=3, mu=0.1, sigma=0.3)
    r = log_returns(b.close)
    assert r.std() * np.sqrt(252) == pytest.approx(0.3, rel=0.02)
    assert r.mean() * 252 == pytest.approx(0.1 - 0.5 * 0.3**2, abs=0.03)


def test_planted_effect_is_measurable_and_only_where_planted() -> None:
    planted = PlantedEffect(symbols=(0, 1), strength=0.1, lookback=20)
    b = generate(4, 30_000, seed=11, planted=planted)
    c = b.close
    sma = pd.DataFrame(c).rolling(20).mean().to_numpy()
    trend = np.sign(c - sma)[19:-1]                 # known at bar t's close
    nxt = log_returns(c)[19:]                        # return of bar t+1
    corr = [np.corrcoef(trend[:, j], nxt[:, j])[0, 1] for j in range(4)]
    se = 1 / np.sqrt(len(nxt))                       # ≈ 0.006
    assert corr[0] > 0.06 and corr[1] > 0.06         # ≈ strength
    assert abs(corr[2]) < 4 * se and abs(corr[3]) < 4 * se


def test_planting_does_not_touch_other_symbols() -> None:
    plain = generate(5, 500, seed=4)
    planted = generate(5, 500, seed=4, planted=PlantedEffect(symbols=(1, 3)))
    for j in (0, 2, 4):
        for f in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(plain.field(f)[:, j], planted.field(f)[:, j])
    assert not np.array_equal(plain.close[:, 1], planted.close[:, 1])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(1, 79), regimes=st.booleans(),
       fat_tails=st.one_of(st.none(), st.just(5.0)), plant=st.booleans())
def test_shorter_panel_is_a_prefix(seed: int, cut: int, regimes: bool, fat_tails: float | None,
                                   plant: bool) -> None:
    """Bars up to t never depend on bars after t — in particular the planted effect
    uses no future closes (a lookahead in it would break this prefix property)."""
    eff = PlantedEffect(symbols=(0,), strength=0.5, lookback=5) if plant else None
    opts = {"seed": seed, "regimes": regimes, "fat_tails": fat_tails, "planted": eff}
    full, short = generate(3, 80, **opts), generate(3, cut, **opts)  # type: ignore[arg-type]
    assert full.slice(0, cut).data_ref == short.data_ref


def test_fat_tails_raise_kurtosis() -> None:
    def kurt(x: np.ndarray) -> float:
        z = (x - x.mean()) / x.std()
        return float((z**4).mean())

    normal = log_returns(generate(5, 20_000, seed=2).close).ravel()
    fat = log_returns(generate(5, 20_000, seed=2, fat_tails=4.0).close).ravel()
    assert kurt(normal) == pytest.approx(3.0, abs=0.15)
    assert kurt(fat) > 5.0
    assert fat.std() == pytest.approx(normal.std(), rel=0.1)   # unit-variance scaling


def test_correlation_one_factor() -> None:
    r = log_returns(generate(10, 5000, seed=6, correlation=0.5).close)
    cm = np.corrcoef(r.T)
    off = cm[~np.eye(10, dtype=bool)]
    assert off.mean() == pytest.approx(0.5, abs=0.03)
    r0 = log_returns(generate(10, 5000, seed=6).close)
    assert abs(np.corrcoef(r0.T)[~np.eye(10, dtype=bool)].mean()) < 0.02


def test_regime_path_statistics() -> None:
    cfg = RegimeConfig(p_stay=(0.98, 0.9))
    path = regime_path(np.random.default_rng(0), 200_000, cfg)
    assert set(np.unique(path)) == {0, 1}
    share0 = (path == 0).mean()
    assert share0 == pytest.approx(0.1 / (0.02 + 0.1), abs=0.02)
    switches = np.flatnonzero(np.diff(path) != 0)
    assert np.diff(switches).mean() == pytest.approx(0.5 * (50 + 10), rel=0.1)


def test_regimes_make_volatility_cluster() -> None:
    r = log_returns(generate(20, 3000, seed=8, regimes=True).close)
    day_vol = np.abs(r).mean(axis=1)
    assert np.corrcoef(day_vol[:-1], day_vol[1:])[0, 1] > 0.2   # calm / stressed persist
    r0 = log_returns(generate(20, 3000, seed=8).close)
    d0 = np.abs(r0).mean(axis=1)
    assert abs(np.corrcoef(d0[:-1], d0[1:])[0, 1]) < 0.1


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"n_symbols": 0}, "n_symbols"),
    ({"n_bars": 0}, "n_bars"),
    ({"sigma": -0.1}, "sigma"),
    ({"fat_tails": 2.0}, "fat_tails"),
    ({"correlation": 1.0}, "correlation"),
    ({"regimes": RegimeConfig(p_stay=(1.0, 0.5))}, "p_stay"),
    ({"planted": PlantedEffect(symbols=(10,))}, "planted.symbols"),
    ({"planted": PlantedEffect(lookback=1)}, "lookback"),
])
def test_bad_parameters(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(DataError) as info:
        synthetic.generate(**{"n_symbols": 3, "n_bars": 10, **kwargs})  # type: ignore[arg-type]
    assert info.value.code == "DQ_BAD_PARAM"
    assert needle in info.value.message


# ----------------------------------------------------- cross-sectional effect
def rank_ic_series(past: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Spearman's rho across the symbols, bar by bar (scipy's, an independent source)."""
    from scipy.stats import spearmanr

    return np.array([spearmanr(a, b).statistic for a, b in zip(past, nxt, strict=True)])


def test_cross_sectional_effect_has_the_planted_rank_ic() -> None:
    lookback, n_bars = 20, 4000
    eff = CrossSectionalEffect(strength=0.05, lookback=lookback)
    for strength, panel in ((0.05, generate(40, n_bars, seed=9, cross_sectional=eff)),
                            (0.0, generate(40, n_bars, seed=9))):
        logc = np.log(panel.close)
        past = (logc[lookback:] - logc[:-lookback])[:-1]   # known at bar t's close
        nxt = np.diff(logc, axis=0)[lookback:]              # the return of bar t+1
        ic = rank_ic_series(past, nxt)
        se = ic.std(ddof=1) / np.sqrt(len(ic))              # ≈ 0.0025
        assert abs(ic.mean() - strength) < 4 * se + 0.005, (strength, ic.mean())


def test_cross_sectional_strength_zero_is_the_plain_panel() -> None:
    plain = generate(6, 300, seed=2)
    assert generate(6, 300, seed=2, cross_sectional=CrossSectionalEffect(0.0)).data_ref \
        == plain.data_ref
    planted = generate(6, 300, seed=2, cross_sectional=CrossSectionalEffect(0.1, 10))
    assert planted.data_ref != plain.data_ref
    # the drift starts with the first ranks (bar 10's close moves bar 11): before it the
    # closes are the plain panel's (up to the rounding of a running sum)
    np.testing.assert_allclose(planted.close[:11], plain.close[:11], rtol=1e-12)
    assert np.abs(np.log(planted.close[11:] / plain.close[11:])).max() > 1e-3


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(1, 59),
       lookback=st.integers(1, 12))
def test_cross_sectional_panel_is_causal(seed: int, cut: int, lookback: int) -> None:
    """The effect at t+1 uses closes up to t only: a shorter panel is a prefix."""
    eff = CrossSectionalEffect(strength=0.5, lookback=lookback)
    full = generate(5, 60, seed=seed, cross_sectional=eff)
    short = generate(5, cut, seed=seed, cross_sectional=eff)
    assert full.slice(0, cut).data_ref == short.data_ref


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"cross_sectional": CrossSectionalEffect(strength=-0.01)}, "cross_sectional.strength"),
    ({"cross_sectional": CrossSectionalEffect(strength=float("nan"))},
     "cross_sectional.strength"),
    ({"cross_sectional": CrossSectionalEffect(lookback=0)}, "cross_sectional.lookback"),
    ({"cross_sectional": CrossSectionalEffect(), "planted": PlantedEffect(symbols=(0,))},
     "one effect at a time"),
])
def test_bad_cross_sectional_parameters(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(DataError) as info:
        generate(**{"n_symbols": 3, "n_bars": 10, **kwargs})  # type: ignore[arg-type]
    assert info.value.code == "DQ_BAD_PARAM"
    assert needle in info.value.message
