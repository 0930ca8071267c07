"""Market data: the Bars panel, loaders, the dataset catalog, synthetic data, quality checks.

Quick start::

    from alphaloop.data import load_bars, synthetic, quality_report

    bars = load_bars("us_indices")             # real S&P 500 + NASDAQ, offline
    fake = synthetic.generate(10, 2520, seed=1)  # deterministic GBM panel
    quality_report(bars).warnings              # gaps, stale runs, short history

``synthetic`` is the module (``synthetic.generate``, ``synthetic.PlantedEffect``,
``synthetic.RegimeConfig``); ``generate`` is also exported directly. The module is
not shadowed by the function, because ``import alphaloop.data.synthetic`` must keep
meaning the module.
"""

from alphaloop.data import synthetic
from alphaloop.data.bars import FIELDS, Bars
from alphaloop.data.catalog import (
    DatasetInfo,
    dataset_info,
    import_dataset,
    list_datasets,
    load_dataset,
    remove_dataset,
)
from alphaloop.data.loaders import load_bars, read_frame
from alphaloop.data.quality import QualityIssue, QualityReport, quality_report
from alphaloop.data.synthetic import PlantedEffect, RegimeConfig, generate

__all__ = [
    "FIELDS",
    "Bars",
    "DatasetInfo",
    "PlantedEffect",
    "QualityIssue",
    "QualityReport",
    "RegimeConfig",
    "dataset_info",
    "generate",
    "import_dataset",
    "list_datasets",
    "load_bars",
    "load_dataset",
    "quality_report",
    "read_frame",
    "remove_dataset",
    "synthetic",
]
