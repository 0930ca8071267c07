"""Compiled kernels are cached on disk: a second process loads them, it does not recompile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, numpy as np
from alphaloop.engines import indicators as ind
x = np.ones((2, 30))
ind.sma(x, 5)
print(json.dumps({"hits": sum(ind.sma.stats.cache_hits.values()),
                  "misses": sum(ind.sma.stats.cache_misses.values())}))
"""


def _run(cache_dir: Path) -> dict[str, int]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_second_process_loads_from_the_disk_cache(tmp_path: Path) -> None:
    first = _run(tmp_path)
    second = _run(tmp_path)
    assert first["misses"] == 1 and first["hits"] == 0  # compiled and written
    assert second["hits"] == 1 and second["misses"] == 0  # loaded, not recompiled
    assert any(tmp_path.rglob("*.nbi"))
