#!/usr/bin/env bash
# Robustness on synthetic logs the defaults were not tuned on (results:
# benchmarks/results/robustness-syn-*.txt):
#   (set -C; bash benchmarks/robustness_syn.sh > benchmarks/results/robustness-syn-$(date +%Y%m%d-%H%M%S).txt)
#   (set -C: the shell refuses to write over a file already there, a kept result)
# A log shaped like MovieLens 1M (1M rows, 6,000 users, 4,000 items) and one shaped like
# MovieLens' small "latest" release (100k rows, 610 users, 9,742 items); the default model
# against the baselines on a random split of each.
set -u
cd "$(dirname "$0")/.."
mkdir -p /tmp/rob
TT=.venv/bin/twotower
for shape in "1_000_000 6_000 4_000 syn1m" "100_000 610 9_742 synsmall"; do
  set -- $shape
  echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -m), $(nproc) cores; log: python benchmarks/synthetic.py --rows $1 --users $2 --items $3 --out /tmp/$4.parquet"
  .venv/bin/python benchmarks/synthetic.py --rows "$1" --users "$2" --items "$3" --out "/tmp/$4.parquet" >/dev/null
  echo "\$ twotower train --data /tmp/$4.parquet --rating-col rating --out R"
  /usr/bin/time -f "wall %e s, peak RSS %M KB" $TT train --data "/tmp/$4.parquet" --rating-col rating --out "/tmp/rob/$4" 2>&1 | grep -v "^twotower: warning\|Warning"
  .venv/bin/python -c "import json; t=json.load(open('/tmp/rob/$4/training.json'))['ease']; print('ease part: rank', t.get('rank'), 'lambda', t['lambda'], 'weight', t.get('weight', 'fixed'), 'check', t.get('weight_check'), [(r['rank'], round(r['recall@10'], 4), round(r['ndcg@10'], 4)) for r in t.get('ranks_tried', [])])"
  echo "\$ twotower evaluate R --baselines"
  $TT evaluate "/tmp/rob/$4" --baselines 2>/dev/null
  echo
done
