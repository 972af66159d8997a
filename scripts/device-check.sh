#!/usr/bin/env bash
# Proves the CUDA path on a GPU machine, from the device bundle that scripts/device-bundle.sh
# writes (docs/CUDA.md): one command, at most 8 minutes, no Rust toolchain or network; logs and
# a summary JSON go into $OUT.
#
#   cd <bundle> && bash scripts/device-check.sh [--allow-no-cuda] [--budget SECONDS]
#       [--epochs N] [--ensemble-epochs N] [--ensemble-k "1 4 16 64"]
#
# Checks, in order: the bundle is intact (BUILD-INFO's sha256 of every file); the programs find
# libtorch and its CUDA libraries (LD_LIBRARY_PATH = the torch package's lib/ of python3, or
# $TORCH_LIB); `train --device cuda` runs a tiny configuration and says Cuda(0); the CUDA tests
# (every `#[ignore]`d test of the bundle's test binaries); then the benchmark, side by side:
# configs/original.toml on the original's dataset for --epochs epochs (default 1000) on CUDA in
# float32 and with mixed precision and on this machine's CPU, the batched ensemble at each K of
# --ensemble-k for --ensemble-epochs epochs (default 100), and the Python original (when the
# bundle carries it) on the same GPU for the same epochs.
#
# Every step runs under a time limit of its own, inside a budget for the whole run (default
# 460 s); a step that no longer fits is skipped and says so. $OUT/device-check.json holds
# pass/fail/skip for each check and the figures (rewritten after every step);
# $OUT/device-check.log is the console; $OUT/logs.tar.gz every step's log, timings.json and the
# CUDA runs' metrics.jsonl. Exit status 0 when no check failed.
#
# --allow-no-cuda (or DEVICE_CHECK_ALLOW_NO_CUDA=1) is a rehearsal on a machine without a GPU:
# each CUDA step must then fail cleanly, saying that libtorch sees no CUDA device, and is
# reported as skipped; a crash or any other failure is still a failure. The benchmark then runs
# on the CPU with --epochs 20 --ensemble-epochs 5 --ensemble-k "1 4" unless given.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
allow_no_cuda=${DEVICE_CHECK_ALLOW_NO_CUDA:-0}
budget=460
epochs=
ens_epochs=
ens_k=
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-no-cuda) allow_no_cuda=1; shift ;;
    --budget) budget=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --ensemble-epochs) ens_epochs=$2; shift 2 ;;
    --ensemble-k) ens_k=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ ! -f "$root/BUILD-INFO" ] || { [ ! -f "$root/bin.tar.xz" ] && [ ! -x "$root/bin/train" ]; }; then
  echo "device-check: $root is not a device bundle (no BUILD-INFO, bin.tar.xz): build one with" \
    "\`just device-bundle\` and run this script from it" >&2
  exit 2
fi
if [ "$allow_no_cuda" = 1 ]; then
  mode=rehearsal
  epochs=${epochs:-20}
  ens_epochs=${ens_epochs:-5}
  ens_k=${ens_k:-1 4}
else
  mode=gpu
  epochs=${epochs:-1000}
  ens_epochs=${ens_epochs:-100}
  ens_k=${ens_k:-1 4 16 64}
fi

OUT=${OUT:-$PWD/device-check-out}
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")
logs=$work/logs
runs=$work/runs
mkdir -p "$logs" "$runs"
records=$work/records.jsonl
: >"$records"
started=$(date +%s)
deadline=$((started + budget))
exec > >(tee "$OUT/device-check.log") 2>&1
tee_pid=$!

py() { python3 "$work/dc.py" "$@"; }
cat >"$work/dc.py" <<'PY'
"""Helpers of device-check.sh: records, the summary, test output, timings, configurations."""
import json, os, re, sys, time

def rec(records, name, status, seconds, detail, *figures):
    r = {"name": name, "status": status, "seconds": round(float(seconds), 2), "detail": detail}
    for f in figures:
        k, _, v = f.partition("=")
        try:
            r.setdefault("figures", {})[k] = json.loads(v)
        except ValueError:
            r.setdefault("figures", {})[k] = v
    with open(records, "a") as f:
        f.write(json.dumps(r) + "\n")
    print(f"[{status:>4}] {name} ({r['seconds']} s): {detail}", flush=True)

def build_info(root):
    info, files = {}, []
    for line in open(os.path.join(root, "BUILD-INFO")):
        if line.startswith("  "):
            sha, size, path = line.split(None, 2)
            files.append((sha, int(size), path.strip()))
        elif ":" in line and not line.startswith("files"):
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
    return info, files

def summary(records, out, root, mode, started, machine):
    checks = [json.loads(l) for l in open(records)]
    info, _ = build_info(root)
    fig = {c["name"]: c.get("figures", {}) for c in checks}
    def per_epoch(name):
        f = fig.get(name, {})
        return f.get("seconds_per_epoch")
    ratios = {}
    for ours in ("bench_cuda_amp", "bench_cuda_fp32"):
        a, b = per_epoch("bench_original"), per_epoch(ours)
        if a and b:
            ratios[f"original_over_{ours[6:]}_per_epoch"] = round(a / b, 2)
        a = fig.get("bench_original", {}).get("wall_seconds")
        b = fig.get(ours, {}).get("wall_seconds")
        if a and b:
            ratios[f"original_over_{ours[6:]}_per_run_wall"] = round(a / b, 2)
    a, b = per_epoch("bench_cpu"), per_epoch("bench_cuda_amp")
    if a and b:
        ratios["cpu_over_cuda_amp_per_epoch"] = round(a / b, 2)
    one = fig.get("bench_ensemble_k1", {}).get("train_seconds")
    for c in checks:
        k = c.get("figures", {}).get("members")
        t = c.get("figures", {}).get("train_seconds")
        if c["name"].startswith("bench_ensemble_k") and one and t and k and k > 1:
            ratios[f"ensemble_k{k}_over_k1_train_time"] = round(t / one, 2)
    failed = [c["name"] for c in checks if c["status"] == "fail"]
    doc = {
        "result": "fail" if failed else "pass",
        "failed": failed,
        "mode": mode,
        "seconds": round(time.time() - float(started), 1),
        "bundle": info,
        "machine": json.loads(machine) if machine else {},
        "checks": checks,
        "ratios": ratios,
    }
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, out)

def verify(root, unpacked):
    # bin/ is checked where bin.tar.xz was unpacked.
    _, files = build_info(root)
    import hashlib
    bad = []
    for sha, size, path in files:
        p = os.path.join(unpacked if path.startswith("bin/") else root, path)
        try:
            h = hashlib.sha256(open(p, "rb").read()).hexdigest()
        except OSError:
            bad.append(f"{path} missing")
            continue
        if h != sha:
            bad.append(f"{path} differs")
    print(f"{len(files)} files, {len(bad)} bad" + (": " + ", ".join(bad[:5]) if bad else ""))
    sys.exit(1 if bad else 0)

def tests(log):
    text = open(log, errors="replace").read()
    results = dict(re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", text, re.M))
    failed = [t for t, r in results.items() if r == "FAILED"]
    no_cuda = len(re.findall(r"no CUDA device", text))
    passed = sum(r == "ok" for r in results.values())
    # Three lines: the counts, a summary, the JSON.
    print(len(failed), no_cuda)
    print(f"{passed} passed, {len(failed)} failed" + (": " + ", ".join(failed) if failed else ""))
    print(json.dumps({"passed": passed, "failed": failed, "no_cuda_messages": no_cuda,
                      "results": results}))

def timings(path, wall):
    t = json.load(open(path))
    epochs = max(1, t.get("epochs", 0))
    keep = {k: t[k] for k in ("device", "batched_members", "threads", "epochs", "steps",
                              "train_seconds", "eval_seconds", "steps_per_second",
                              "train_ms_per_step", "peak_rss_mib") if k in t}
    keep["wall_seconds"] = round(float(wall), 3)
    keep["seconds_per_epoch"] = (t["train_seconds"] + t["eval_seconds"]) / epochs
    print(" ".join(f"{k}={json.dumps(v)}" for k, v in keep.items()))

def members(printed, dir, k):
    # The printed configuration with its [train] seed and save_dir set per member.
    text = open(printed).read()
    head, sep, rest = text.partition("[train]\n")
    train, nxt, tail = rest.partition("\n[")
    train = re.sub(r"(?m)^save_dir = .*\n", "", train)
    paths = []
    for i in range(int(k)):
        t = re.sub(r"(?m)^seed = \d+$", f"seed = {42 + i}", train)
        t = f'save_dir = "{dir}/member{i:02d}"\n' + t
        p = os.path.join(dir, f"member{i:02d}.toml")
        open(p, "w").write(head + sep + t + nxt + tail)
        paths.append(p)
    print(" ".join(paths))

def original_config(printed, path, data_dir, save_dir, epochs, use_amp):
    # Our resolved configuration in the original's YAML layout (JSON is YAML): the same model,
    # optimiser, batch and seed; no W&B, no checkpoints, no worker processes.
    import tomllib
    c = tomllib.load(open(printed, "rb"))
    m, t = c["model"], c["train"]
    cfg = {k: m[k] for k in ("d_model", "n_layer", "n_head", "dropout", "max_len")}
    cfg.update({k: t[k] for k in ("batch_size", "lr", "weight_decay", "warmup_steps", "seed",
                                  "log_every")})
    cfg.update({"data_dir": data_dir, "save_dir": save_dir, "epochs": int(epochs),
                "use_amp": use_amp == "true", "use_wandb": False, "eval_every": 10**9,
                "save_every": 0, "num_workers": 0})
    json.dump(cfg, open(path, "w"), indent=1)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"rec": rec, "summary": summary, "verify": verify, "tests": tests, "timings": timings,
     "members": members, "original-config": original_config}[cmd](*args)
PY

machine='{}'
record() { py rec "$records" "$@"; py summary "$records" "$OUT/device-check.json" "$root" "$mode" "$started" "$machine"; }

# Runs "$@" with its output in $logs/NAME.log, at most MAX seconds and never past the budget
# (keeping a few seconds for the summary). Sets step_rc (124: timed out, 99: not run) and
# step_seconds.
step() {
  local name=$1 max=$2
  shift 2
  local left=$((deadline - $(date +%s) - 8))
  step_log=$logs/$name.log
  step_seconds=0
  if [ "$left" -lt 5 ]; then
    step_rc=99
    return
  fi
  local limit=$((max < left ? max : left))
  local t0 t1
  t0=$(date +%s.%N)
  timeout --kill-after=5 "$limit" "$@" >"$step_log" 2>&1
  step_rc=$?
  t1=$(date +%s.%N)
  step_seconds=$(python3 -c "print(round($t1 - $t0, 2))")
  [ "$step_rc" = 137 ] && step_rc=124
  return 0
}
# One line of a log that says why a step failed.
why() { grep -m 1 -iE "error|panicked|no CUDA|not found|Traceback|killed" "$1" 2>/dev/null | cut -c1-300; }
skipped_for_time() { record "$1" skip 0 "not run: the ${budget} s budget is spent"; }
# A CUDA step that failed in a rehearsal: expected when it says that there is no CUDA device.
cuda_absent_ok() { [ "$mode" = rehearsal ] && grep -qiE "no CUDA device" "$step_log"; }

echo "device-check: $mode run of the bundle at $root (budget ${budget} s); results in $OUT"

# 1. The bundle arrived whole: the programs unpacked (into the scratch directory), every file's
# sum as built.
if [ -x "$root/bin/train" ]; then
  unpacked=$root
else
  unpacked=$work
  if command -v xz >/dev/null; then
    tar -xJf "$root/bin.tar.xz" -C "$work"
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$root/bin.tar.xz" "$work"
  fi
fi
bin=$unpacked/bin
step bundle 60 python3 "$work/dc.py" verify "$root" "$unpacked"
if [ "$step_rc" = 0 ]; then
  record bundle pass "$step_seconds" "$(tail -n 1 "$step_log")"
else
  record bundle fail "$step_seconds" "$(tail -n 1 "$step_log")"
fi

# 2. libtorch and its CUDA libraries: the torch package of python3, $TORCH_LIB, or (rehearsal on
# the build machine) the libtorch the bundle was built against.
torch_lib=${TORCH_LIB:-}
python_torch=$(timeout 60 python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)
if [ -z "$torch_lib" ] && [ -n "$python_torch" ]; then torch_lib=$python_torch/lib; fi
if [ -z "$torch_lib" ] && [ -d /opt/torch/.venv/lib/python3.12/site-packages/torch/lib ]; then
  torch_lib=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
fi
if [ -z "$torch_lib" ]; then
  built=$(sed -n 's/^libtorch_dir: //p' "$root/BUILD-INFO")
  [ -d "$built/lib" ] && torch_lib=$built/lib
fi
export LD_LIBRARY_PATH=${torch_lib}${DEVICE_CHECK_EXTRA_LIBS:+:$DEVICE_CHECK_EXTRA_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ANALOGY_TEST_ROOT=$root
export RUST_BACKTRACE=0
gpu=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
torch_py=$(timeout 60 python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>/dev/null || echo "no torch in python3")
machine=$(python3 -c 'import json, os, platform, sys; print(json.dumps({"gpu": sys.argv[1] or None, "python3_torch": sys.argv[2], "torch_lib": sys.argv[3] or None, "cpus": os.cpu_count(), "platform": platform.platform()}))' "$gpu" "$torch_py" "$torch_lib")
# shellcheck disable=SC2016  # expanded by the inner shell
step libraries 30 bash -c 'ldd "$1"/train; for t in "$1"/tests/*; do ldd "$t" | grep "not found"; done; true' _ "$bin"
missing=$(grep -c "not found" "$step_log")
cuda_so=$(awk '$1 == "libtorch_cuda.so" { print $3 }' "$step_log")
if [ -z "$torch_lib" ]; then
  record libraries fail "$step_seconds" "no libtorch found: set TORCH_LIB to the torch package's lib/"
elif [ "$missing" != 0 ]; then
  record libraries fail "$step_seconds" "$missing libraries not found: $(grep -m 3 'not found' "$step_log" | tr -s ' \t\n' ' ')"
else
  record libraries pass "$step_seconds" "every library resolves; libtorch_cuda.so = $cuda_so" "torch_lib=\"$torch_lib\""
fi

train=$bin/train
tiny_data=$work/data/tiny
common=(--no_wandb --set plots=false)

# 3. CUDA visible: the CPU first (it also generates the tiny dataset), then the same on CUDA.
step cpu_tiny 60 "$train" --config "$root/configs/tiny.toml" --data_dir "$tiny_data" \
  --save_dir "$runs/tiny-cpu" --device cpu --epochs 2 "${common[@]}"
if [ "$step_rc" = 0 ]; then
  record cpu_tiny pass "$step_seconds" "$(grep -m 1 -o 'libtorch [^;]*; [^,]*' "$step_log")"
else
  record cpu_tiny fail "$step_seconds" "exit $step_rc: $(why "$step_log")"
fi
step cuda_tiny 90 "$train" --config "$root/configs/tiny.toml" --data_dir "$tiny_data" \
  --save_dir "$runs/tiny-cuda" --device cuda --epochs 2 "${common[@]}"
if [ "$step_rc" = 0 ] && grep -q "Cuda(0)" "$step_log"; then
  record cuda_tiny pass "$step_seconds" "train --device cuda ran on $(grep -m 1 -o 'Cuda([0-9]*)' "$step_log")"
elif [ "$step_rc" = 1 ] && cuda_absent_ok; then
  record cuda_tiny skip "$step_seconds" "no CUDA device (rehearsal): exit 1, $(why "$step_log")"
elif [ "$step_rc" = 99 ]; then
  skipped_for_time cuda_tiny
else
  record cuda_tiny fail "$step_seconds" "exit $step_rc: $(why "$step_log")"
fi

# 4. The CUDA tests: every ignored test of each test binary, one thread (one GPU).
for exe in "$bin"/tests/*; do
  name=tests_$(basename "$exe")
  limit=90
  case "$name" in *ensemble*) limit=200 ;; esac
  step "$name" "$limit" "$exe" --ignored --test-threads=1
  if [ "$step_rc" = 99 ]; then skipped_for_time "$name"; continue; fi
  { read -r nfailed nnocuda; read -r summary; read -r parsed; } < <(py tests "$step_log")
  if [ "$step_rc" = 0 ] && [ "$nfailed" = 0 ]; then
    record "$name" pass "$step_seconds" "$summary" "tests=$parsed"
  elif [ "$step_rc" = 101 ] && [ "$mode" = rehearsal ] && [ "$nfailed" -gt 0 ] && [ "$nnocuda" -ge "$nfailed" ]; then
    record "$name" skip "$step_seconds" "no CUDA device (rehearsal): $summary, each saying so" "tests=$parsed"
  elif [ "$step_rc" = 124 ]; then
    record "$name" fail "$step_seconds" "timed out; $summary" "tests=$parsed"
  else
    record "$name" fail "$step_seconds" "exit $step_rc; $summary" "tests=$parsed"
  fi
done

# 5. The benchmark. The original's dataset, copied (a run may record things beside it).
data=$work/data/e10
mkdir -p "$(dirname "$data")"
cp -r "$root/tests/fixtures/python-dataset-e10" "$data"
bench_flags=(--config "$root/configs/original.toml" --data_dir "$data" --epochs "$epochs"
  --quiet --set geometry=off --set 'pca_steps=[]' "${common[@]}")
# bench NAME DEVICE USE_AMP MAX_SECONDS: configs/original.toml for --epochs epochs.
bench() {
  local name=$1 device=$2 amp=$3 max=$4
  step "$name" "$max" "$train" "${bench_flags[@]}" --save_dir "$runs/$name" --device "$device" \
    --use_amp "$amp"
  if [ "$step_rc" = 99 ]; then skipped_for_time "$name"; return; fi
  if [ "$step_rc" = 0 ] && [ -f "$runs/$name/timings.json" ]; then
    # shellcheck disable=SC2046
    record "$name" pass "$step_seconds" "$epochs epochs on $device (use_amp $amp)" \
      $(py timings "$runs/$name/timings.json" "$step_seconds")
  elif [ "$step_rc" = 1 ] && [ "$device" = cuda ] && cuda_absent_ok; then
    record "$name" skip "$step_seconds" "no CUDA device (rehearsal): exit 1"
  else
    record "$name" fail "$step_seconds" "exit $step_rc: $(why "$step_log")"
  fi
}
"$train" --config "$root/configs/original.toml" --print_config >"$work/printed.toml" 2>"$logs/print_config.log"
bench bench_cuda_amp cuda true 90
bench bench_cuda_fp32 cuda false 90

# The Python original on the same GPU, same settings and epochs, when the bundle carries it:
# one epoch (start-up) and --epochs epochs; the difference over the extra epochs is its time per
# epoch, the whole second run its time per run.
src=$root/original/toy_model/src
if [ ! -f "$src/train.py" ]; then
  record bench_original skip 0 "the bundle does not carry the original (device-bundle.sh --original DIR)"
elif [ -z "$python_torch" ]; then
  record bench_original skip 0 "python3 has no torch here"
else
  py original-config "$work/printed.toml" "$work/original-1.yaml" "$data" "$runs/original-1" 1 true
  py original-config "$work/printed.toml" "$work/original-n.yaml" "$data" "$runs/original-n" "$epochs" true
  # shellcheck disable=SC2016  # expanded by the inner shell
  step bench_original_1 60 bash -c 'cd "$1" && exec python3 train.py --config "$2"' _ "$src" "$work/original-1.yaml"
  one_rc=$step_rc one_s=$step_seconds
  # shellcheck disable=SC2016  # expanded by the inner shell
  step bench_original 150 bash -c 'cd "$1" && exec python3 train.py --config "$2"' _ "$src" "$work/original-n.yaml"
  if [ "$step_rc" = 99 ]; then
    skipped_for_time bench_original
  elif [ "$one_rc" = 0 ] && [ "$step_rc" = 0 ]; then
    per_epoch=$(python3 -c "print(max(0.0, ($step_seconds - $one_s) / max(1, $epochs - 1)))")
    record bench_original pass "$step_seconds" "the original, $epochs epochs, $(grep -m 1 'Using device' "$step_log")" \
      "wall_seconds=$step_seconds" "one_epoch_wall_seconds=$one_s" "seconds_per_epoch=$per_epoch" \
      "device=\"$(grep -m 1 -o 'Using device: .*' "$step_log" | cut -d' ' -f3)\""
  else
    record bench_original fail "$step_seconds" "exit $one_rc/$step_rc: $(why "$step_log")"
  fi
fi

# The batched ensemble at each K (on CUDA; on the CPU in a rehearsal).
ens_device=cuda
[ "$mode" = rehearsal ] && ens_device=cpu
for k in $ens_k; do
  name=bench_ensemble_k$k
  dir=$runs/ensemble-k$k
  mkdir -p "$dir"
  read -r -a files <<<"$(py members "$work/printed.toml" "$dir" "$k")"
  step "$name" 120 "$train" --ensemble "${files[@]}" --data_dir "$data" --epochs "$ens_epochs" \
    --device "$ens_device" --quiet --set geometry=off --set 'pca_steps=[]' "${common[@]}"
  if [ "$step_rc" = 99 ]; then skipped_for_time "$name"; continue; fi
  if [ "$step_rc" = 0 ] && [ -f "$dir/member00/timings.json" ]; then
    # shellcheck disable=SC2046
    record "$name" pass "$step_seconds" "$k members batched, $ens_epochs epochs on $ens_device" \
      "members=$k" $(py timings "$dir/member00/timings.json" "$step_seconds") \
      "wall_seconds_per_member=$(python3 -c "print($step_seconds / $k)")"
  else
    record "$name" fail "$step_seconds" "exit $step_rc: $(why "$step_log")"
  fi
done

# This machine's CPU, every core, last: the slowest and the least needed.
bench bench_cpu cpu false 120

# Everything worth keeping, as one archive beside the summary.
for r in "$runs"/*/ "$runs"/ensemble-k*/member00/; do
  [ -f "$r/timings.json" ] || continue
  n=$(basename "$r")
  [ "$n" = member00 ] && n=$(basename "$(dirname "$r")")
  cp "$r/timings.json" "$logs/$n.timings.json"
  case "$n" in *cuda*) [ -f "$r/metrics.jsonl" ] && cp "$r/metrics.jsonl" "$logs/$n.metrics.jsonl" ;; esac
done
cp "$root/BUILD-INFO" "$logs/"
tar -czf "$OUT/logs.tar.gz" -C "$work" logs
py summary "$records" "$OUT/device-check.json" "$root" "$mode" "$started" "$machine"
result=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["result"], " ".join(d["failed"]))' "$OUT/device-check.json")
echo "device-check: $result ($(($(date +%s) - started)) s); $OUT/device-check.json"
rm -rf "$work"
status=1
case "$result" in pass*) status=0 ;; esac
exec >&- 2>&-
wait "$tee_pid" 2>/dev/null
exit "$status"
