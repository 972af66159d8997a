#!/usr/bin/env bash
# Benchmarks the original's default configuration (configs/original.toml) end to end and
# writes the figures as JSON.
#
#   scripts/bench.sh [--epochs N] [--device cpu|cuda] [--dry-run] [extra train flags...]
#
# Two runs of configs/original.toml (W&B off, plots off): one with geometry tracking off (the
# cost of training and evaluation alone) and one with the default tracking (on log-spaced
# steps), so the tracking's cost is their difference. Each run's timings.json (training,
# evaluation and checkpoint seconds, steps/s, peak memory) and its wall time go into
# bench/results/<UTC time>-<device>.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

device=auto
dry=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --device) device=$2; shift 2 ;;
    --device=*) device=${1#--device=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

cargo build --release --quiet -p train -p gen
train=target/release/train
data_dir=data/composition_functor.10.10000.5
if [ "$dry" = 0 ] && [ ! -f "$data_dir/train.json" ]; then
  target/release/gen --config configs/original.toml --output_dir "$data_dir"
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results
[ "$dry" = 1 ] || mkdir -p "$out"
results=()
for geometry in off log; do
  save_dir=runs/bench-geometry-$geometry
  run=("$train" --config configs/original.toml --data_dir "$data_dir" --save_dir "$save_dir"
    --overwrite --device "$device" --no_wandb --quiet --set plots=false --set pca_steps='[]'
    --set geometry="$geometry" "${args[@]}")
  if [ "$dry" = 1 ]; then
    "${run[@]}" --dry-run
    continue
  fi
  start=$(date +%s.%N)
  "${run[@]}"
  end=$(date +%s.%N)
  wall=$(python3 -c "print(round($end - $start, 3))")
  results+=("$(python3 - "$save_dir/timings.json" "$geometry" "$wall" <<'PY'
import json, sys
path, geometry, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
t = json.load(open(path))
t.update({"geometry": geometry, "wall_seconds": wall})
print(json.dumps(t))
PY
)")
done

[ "$dry" = 1 ] && exit 0
file="$out/$stamp-$device.json"
python3 - "$file" "${results[@]}" <<'PY'
import json, os, platform, sys
path, runs = sys.argv[1], [json.loads(r) for r in sys.argv[2:]]
doc = {
    "config": "configs/original.toml",
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "runs": runs,
}
off, on = runs[0], runs[1]
doc["geometry_overhead_seconds"] = round(on["wall_seconds"] - off["wall_seconds"], 3)
with open(path, "w") as f:
    json.dump(doc, f, indent=2)
for r in runs:
    print(f"geometry={r['geometry']:<5} wall {r['wall_seconds']:7.2f} s | train {r['train_seconds']:6.2f} s "
          f"({r['steps_per_second']:.0f} steps/s, {r['train_ms_per_step']:.2f} ms/step, "
          f"{r['train_seconds_per_epoch'] * 1e3:.1f} ms/epoch) | eval {r['eval_seconds']:5.2f} s "
          f"({r['eval_ms_per_epoch']:.2f} ms/epoch) | geometry {r['geometry_seconds']:.2f} s | "
          f"peak RSS {r['peak_rss_mib']:.0f} MiB")
print(f"written to {path}")
PY
