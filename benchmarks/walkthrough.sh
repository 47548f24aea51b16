#!/usr/bin/env bash
# Runs the README walkthrough's commands on MovieLens 100k and writes their output to
# benchmarks/results/walkthrough-<date>.txt (the README's example outputs come from here).
#   bash benchmarks/walkthrough.sh            # uses .venv; MovieLens from the usual sources
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tt="$root/.venv/bin/twotower"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out="$root/benchmarks/results/walkthrough-$(date -u +%Y%m%d-%H%M%S).txt"
if [ -e "$out" ]; then  # (two runs in one second) a kept result is never written over
  echo "error: $out exists: not overwritten; run again in a second" >&2; exit 2
fi
cd "$work"
{
  echo "## $(date -u +%FT%TZ) $(uname -m), $(nproc) cores"
  echo '$ twotower train --out runs/ml100k'; "$tt" train --out runs/ml100k
  echo '$ twotower recommend runs/ml100k --user 42'; "$tt" recommend runs/ml100k --user 42
  echo '$ twotower recommend runs/ml100k --history 50,172,181 -k 3'
  "$tt" recommend runs/ml100k --history 50,172,181 -k 3
  echo '$ twotower similar runs/ml100k --item "Star Wars (1977)"'
  "$tt" similar runs/ml100k --item "Star Wars (1977)"
  echo '$ twotower export runs/ml100k --items --out items.parquet'
  "$tt" export runs/ml100k --items --out items.parquet
  echo '$ twotower export runs/ml100k --users --out users.parquet'
  "$tt" export runs/ml100k --users --out users.parquet
  printf '42\n7\n' > some_users.txt
  echo '$ twotower export runs/ml100k --users some_users.txt --out some.parquet'
  "$tt" export runs/ml100k --users some_users.txt --out some.parquet
  echo '$ twotower export runs/ml100k --keras -k 10 --out movielens.keras'
  "$tt" export runs/ml100k --keras -k 10 --out movielens.keras
  echo '$ twotower export runs/ml100k --keras --history -k 10 --out new_users.keras'
  "$tt" export runs/ml100k --keras --history -k 10 --out new_users.keras
  echo '$ twotower evaluate runs/ml100k --baselines --plot recall.png --plot-loss loss.png'
  "$tt" evaluate runs/ml100k --baselines --plot recall.png --plot-loss loss.png
  echo '$ twotower index runs/ml100k --kind hnsw'; "$tt" index runs/ml100k --kind hnsw
  port=$("$root/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$tt" serve runs/ml100k --port "$port" --no-access-log >/dev/null 2>&1 & server=$!
  for _ in $(seq 100); do curl -sf -m 2 "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  echo "\$ curl -s '127.0.0.1:8000/v1/recommendations?user_id=42&k=3'"
  curl -s "127.0.0.1:$port/v1/recommendations?user_id=42&k=3"; echo
  echo "\$ curl -s -X POST 127.0.0.1:8000/v1/recommendations/by-history -H 'content-type: application/json' -d '{\"item_ids\": [50, 172, 181], \"k\": 3}'"
  curl -s -X POST "127.0.0.1:$port/v1/recommendations/by-history" \
       -H 'content-type: application/json' -d '{"item_ids": [50, 172, 181], "k": 3}'; echo
  echo "\$ curl -s '127.0.0.1:8000/v1/recommendations?user_id=42&k=0'"
  curl -s "127.0.0.1:$port/v1/recommendations?user_id=42&k=0"; echo
  kill "$server"
} 2>&1 | tee "$out"
echo "wrote $out"
