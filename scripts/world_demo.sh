#!/usr/bin/env bash
# make world-demo: a WorldService on loopback, a short research loop whose survivors go to a
# world, the campaign loop moving them to paper, a paper run on the replay feed, the
# campaign status, then the server stopped. Everything lives in a temporary folder.
set -euo pipefail
BIN=${BIN:-.venv/bin}
DEMO=$(mktemp -d "${TMPDIR:-/tmp}/alphaloop-world-demo.XXXXXX")
export ALPHALOOP_HOME=$DEMO            # the loop's knowledge base is the world's database
DB="sqlite:///$DEMO/kb.sqlite"
PORT=${PORT:-8765}
URL="http://127.0.0.1:$PORT"
token() { "$BIN/alphaloop" world token create --role "$1" --name "demo-$1" --db "$DB" --json \
          | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["token"])'; }
OPERATOR=$(token operator)
"$BIN/alphaloop" world serve --db "$DB" --port "$PORT" --refs-root "$DEMO" >"$DEMO/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; echo "server stopped; files in $DEMO"' EXIT
for _ in $(seq 1 100); do
  "$BIN/python" -c "import httpx, sys; sys.exit(httpx.get('$URL/health').status_code != 200)" \
    2>/dev/null && break
  sleep 0.2
done
export ALPHALOOP_WORLD_TOKEN=$OPERATOR
"$BIN/python" - "$URL" "$DEMO" <<'PY'
import sys
from alphaloop.world.client import WorldClient
from alphaloop.data.synthetic import PlantedEffect, generate
# four symbols with a strong causal trend; the loop and the world get the first 2520 bars
panel = generate(4, 2560, seed=12, mu=0.0,
                 planted=PlantedEffect(symbols=(0, 1, 2, 3), strength=0.3, lookback=20))
panel.to_long().to_parquet(f"{sys.argv[2]}/full.parquet")
panel.slice(0, 2520).to_long().to_parquet(f"{sys.argv[2]}/history.parquet")
with WorldClient(sys.argv[1]) as c:
    c.create_world("demo", name="demo world", data="history.parquet", policy={
        "gates": {"backtest": {"min_sharpe": 0.0}},
        "campaign": {"backtest": {"window": {"min_days": 365}},
                     "paper": {"window": {"min_samples": 20}}}})
print("world demo created")
PY
# the loop and the world see the planted synthetic panel up to bar 2520; the paper run
# replays the 40 bars after it (held out from both)
cat >"$DEMO/run.yaml" <<YAML
run_id: world-demo
seed: 7
budgets: {max_iterations: 4, max_backtests: 2000}
data: {source: $DEMO/history.parquet}
generation: {families: [sma_cross, momentum], sampler: sobol, candidates_per_iteration: 24}
policies: {promotion: {top_k_to_verify: 3, score_threshold: 20}}
out_dir: $DEMO/runs
world: {url: "$URL", id: demo}
YAML
"$BIN/alphaloop" run "$DEMO/run.yaml"
"$BIN/alphaloop" world campaign-loop --world demo --once --url "$URL"
SURVIVOR=$("$BIN/alphaloop" world status demo --url "$URL" --json | "$BIN/python" -c '
import json, sys
paper = [s["strategy_id"] for s in json.load(sys.stdin)["strategies"] if s["phase"] == "paper_campaign"]
print(paper[0] if paper else "")')
if [ -z "$SURVIVOR" ]; then echo "no survivor reached paper_campaign"; exit 1; fi
"$BIN/alphaloop" world paper --world demo --strategy "$SURVIVOR" --feed "replay:$DEMO/full.parquet" \
  --start 2520 --state "$DEMO/paper.json" --max-bars 40 --url "$URL" | tail -n 3
"$BIN/alphaloop" world campaign-loop --world demo --once --url "$URL"
"$BIN/alphaloop" world status demo --url "$URL"
