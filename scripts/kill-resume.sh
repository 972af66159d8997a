#!/usr/bin/env bash
# The random kill -9 study: trains the tiny preset, SIGKILLs it N times at random moments (each
# time after resuming it), resumes it to the end, and compares its metrics with an uninterrupted
# run. Prints, per kill, the epochs logged and the epoch of the checkpoint it resumed from, then
# a summary line: kills, resumed, epochs lost (max, mean), metrics equal or not.
#
#   scripts/kill-resume.sh [N=20] [EPOCHS=4000]
#
# Uses target/release/train (built if missing) and a scratch directory it removes at the end.
set -euo pipefail
n=${1:-20}
epochs=${2:-4000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
train="$root/target/release/train"
[ -x "$train" ] || cargo build --release -p train --manifest-path "$root/Cargo.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--config "$root/configs/tiny.toml" --data_dir "$work/data" --epochs "$epochs"
  --checkpoint_seconds 0 --plots false --quiet)

epochs_logged() {
  python3 - "$1" <<'PY'
import json, sys
n = 0
try:
    for line in open(sys.argv[1] + "/metrics.jsonl"):
        try:
            n = max(n, json.loads(line).get("epoch", 0))
        except ValueError:
            pass
except OSError:
    pass
print(n)
PY
}

"$train" "${common[@]}" --save_dir "$work/reference" 2>/dev/null
run="$work/killed"
lost_total=0
lost_max=0
resumed=0
for i in $(seq 1 "$n"); do
  if [ "$i" = 1 ]; then
    "$train" "${common[@]}" --save_dir "$run" 2>/dev/null &
  else
    "$train" --resume "$run" --quiet 2>/dev/null &
  fi
  pid=$!
  # A random moment: 50 to 1 550 ms into this process.
  sleep "$(python3 -c "import random; print(0.05 + random.random() * 1.5)")"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  logged=$(epochs_logged "$run")
  saved=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['epoch'])" \
    "$run/checkpoints/last/checkpoint.json" 2>/dev/null || echo none)
  if [ "$saved" = none ]; then
    echo "kill $i: $logged epochs logged, no checkpoint yet"
    continue
  fi
  lost=$((logged > saved ? logged - saved : 0))
  lost_total=$((lost_total + lost))
  lost_max=$((lost > lost_max ? lost : lost_max))
  resumed=$((resumed + 1))
  echo "kill $i: $logged epochs logged, checkpoint at epoch $saved, $lost lost"
  [ "$logged" -ge "$epochs" ] && break
done
"$train" --resume "$run" --quiet 2>/dev/null || true
equal=$(python3 - "$work/reference" "$run" <<'PY'
import json, sys
rows = lambda d: [json.loads(l) for l in open(d + "/metrics.jsonl")]
print("equal" if rows(sys.argv[1]) == rows(sys.argv[2]) else "DIFFERENT")
PY
)
mean=$(python3 -c "print(f'{$lost_total / max(1, $resumed):.2f}')")
echo "summary: $i kills, $resumed resumed from a checkpoint, epochs lost max $lost_max mean $mean, final metrics $equal to an uninterrupted run"
