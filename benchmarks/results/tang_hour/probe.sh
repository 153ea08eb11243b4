#!/bin/bash
# usage: probe.sh NAME flags...  -> prints tokens/s of the 3rd logged train row
. /work/main/.venv/bin/activate
export RNNLAB_DATA_DIR=/work/shared/data MPLBACKEND=Agg
name=$1; shift
rm -rf p-$name
rnnlab train --config /work/bench/th/titles.toml --threads 2 --no-progress --no-sample --log-every 10 --max-steps 1000 --out p-$name "$@" > p-$name.log 2>&1 &
pid=$!
for i in $(seq 1 300); do
  sleep 2
  n=$(grep -c '"kind": "train"' p-$name/metrics.jsonl 2>/dev/null || echo 0)
  [ "$n" -ge 4 ] && break
  kill -0 $pid 2>/dev/null || break
done
kill $pid 2>/dev/null; wait $pid 2>/dev/null
python -c "
import json,sys
rows=[json.loads(l) for l in open('p-$name/metrics.jsonl') if '\"train\"' in l]
print('$name', [round(r['tokens_per_s']) for r in rows], 'loss', round(rows[-1].get('train_loss',0),3))
"
