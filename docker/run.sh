#!/usr/bin/env bash
# Runs data generation and/or training in the containers of docker-compose.yml.
# `docker/run.sh --help` lists the options; docker/README.md explains the images and services.
set -euo pipefail

prog=run.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
caller_pwd=$PWD

usage() {
  cat <<'EOF'
Usage: docker/run.sh [options]

Generates a dataset and/or trains a model inside the project's containers
(services of docker-compose.yml; ./data, ./runs and ./configs are mounted).

Options:
  --mode data|train|all   what to run: gen, train, or gen then train (default: all)
  --config PATH           config file under configs/ (default: configs/default.toml)
  --gpu ID|-1             GPU id(s) to use, e.g. 0 or 0,1; -1 runs on the CPU image
                          (default: $CUDA_VISIBLE_DEVICES, else 0)
  --epochs N              training epochs (overrides the config)
  --batch-size N          training batch size (overrides the config)
  --lr X                  learning rate (overrides the config)
  --wandb-key KEY         W&B API key (passed through the environment, never printed)
  --wandb-project NAME    W&B project
  --wandb-run NAME        W&B run name
  --no-wandb              disable W&B logging
  --interactive           open a shell in the container instead of running --mode
  --dry-run               print the docker command(s) instead of running them
  --help                  show this help

Settings are also read from .env at the repository root (see .env.example); variables already
set in the environment win over .env, and options win over both.
The compose command is $COMPOSE if set, else `docker compose`, else `docker-compose`.
EOF
}

# Quotes one word for the shell, leaving words of safe characters as they are.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints a command line that the shell reads back as the given words.
join_command() {
  local word sep=
  for word in "$@"; do
    printf '%s' "$sep"
    quote "$word"
    sep=' '
  done
}

die() {
  echo "$prog: $*" >&2
  exit 2
}

# Loads KEY=VALUE lines of .env into the environment without executing the file; a variable that
# is already set keeps its value (the same precedence docker compose applies).
load_env_file() {
  local file=$1 line key value n=0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line%$'\r'}
    case "$line" in
      '' | '#'*) continue ;;
    esac
    line=${line#export }
    if [[ ! "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
      die ".env:$n: expected KEY=VALUE, found '$line'"
    fi
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    if [[ "$value" =~ ^\"(.*)\"$ ]] || [[ "$value" =~ ^\'(.*)\'$ ]]; then
      value=${BASH_REMATCH[1]}
    fi
    # An empty value means "not set", as a blank WANDB_API_KEY must not count as a key.
    if [ -n "$value" ] && [ -z "${!key+set}" ]; then
      export "$key=$value"
    fi
  done <"$file"
}

# Maps a --config argument to its path relative to the repository root (configs/...), which is
# also its path relative to /app in the containers. Only ./configs is mounted, so a file
# elsewhere is refused.
resolve_config() {
  local arg=$1 candidate dir
  case "$arg" in
    /app/configs/*) candidate=$root/configs/${arg#/app/configs/} ;;
    /*) candidate=$arg ;;
    *)
      candidate=$caller_pwd/$arg
      [ -f "$candidate" ] || candidate=$root/configs/$arg
      ;;
  esac
  [ -f "$candidate" ] || die "--config: $arg not found (looked in $caller_pwd and $root/configs)"
  dir=$(cd "$(dirname "$candidate")" && pwd -P)
  candidate=$dir/$(basename "$candidate")
  case "$candidate" in
    "$root"/configs/*) printf '%s\n' "${candidate#"$root"/}" ;;
    *) die "--config: $arg is not under $root/configs (only ./configs is mounted in the containers)" ;;
  esac
}

if [ -f "$root/.env" ]; then
  load_env_file "$root/.env"
fi

mode=all
config=configs/default.toml
gpu=${CUDA_VISIBLE_DEVICES:-0}
epochs=
batch_size=
lr=
wandb_key=
wandb_project=
wandb_run=
no_wandb=false
interactive=false
dry_run=false

while [ $# -gt 0 ]; do
  opt=$1
  value=
  has_value=false
  case "$opt" in
    --*=*)
      value=${opt#*=}
      opt=${opt%%=*}
      has_value=true
      ;;
  esac
  case "$opt" in
    --mode | --config | --gpu | --epochs | --batch-size | --lr | --wandb-key | --wandb-project | --wandb-run)
      if [ "$has_value" = false ]; then
        if [ $# -lt 2 ] || [[ "$2" = --* ]]; then
          die "$opt needs a value (see --help)"
        fi
        value=$2
        shift
      fi
      [ -n "$value" ] || die "$opt needs a non-empty value"
      ;;
    --no-wandb | --interactive | --dry-run | --help | -h)
      [ "$has_value" = false ] || die "$opt takes no value"
      ;;
    *) die "unknown option: $opt (see --help)" ;;
  esac
  case "$opt" in
    --mode)
      case "$value" in
        data | train | all) mode=$value ;;
        *) die "--mode must be data, train or all, not '$value'" ;;
      esac
      ;;
    --config) config=$value ;;
    --gpu)
      [[ "$value" =~ ^(-1|[0-9]+(,[0-9]+)*)$ ]] ||
        die "--gpu must be a GPU id (0, 1, or a list like 0,1) or -1 for the CPU, not '$value'"
      gpu=$value
      ;;
    --epochs)
      [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "--epochs must be a positive integer, not '$value'"
      epochs=$value
      ;;
    --batch-size)
      [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "--batch-size must be a positive integer, not '$value'"
      batch_size=$value
      ;;
    --lr)
      if [[ ! "$value" =~ ^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] ||
        [[ ! "${value%%[eE]*}" =~ [1-9] ]]; then
        die "--lr must be a positive number, not '$value'"
      fi
      lr=$value
      ;;
    --wandb-key) wandb_key=$value ;;
    --wandb-project) wandb_project=$value ;;
    --wandb-run) wandb_run=$value ;;
    --no-wandb) no_wandb=true ;;
    --interactive) interactive=true ;;
    --dry-run) dry_run=true ;;
    --help | -h)
      usage
      exit 0
      ;;
  esac
  shift
done

config=$(resolve_config "$config")

if [ -n "${COMPOSE:-}" ]; then
  read -r -a compose <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  compose=(docker compose)
fi

# Files written to the mounted ./data and ./runs then belong to the caller.
HOST_UID=$(id -u)
HOST_GID=$(id -g)
export HOST_UID HOST_GID

if [ "$gpu" = -1 ]; then
  device=cpu
  gen_service=train-cpu
  train_service=train-cpu
  shell_service=train-cpu
else
  device=cuda
  gen_service=generate-data
  train_service=train
  shell_service=emergent-analogy
fi

# Container environment: -e NAME=value overrides what compose passes through from .env; the key
# is passed by name only, so it never shows on a command line.
run_env=()
if [ "$device" = cuda ]; then
  run_env+=(-e "CUDA_VISIBLE_DEVICES=$gpu")
fi
if [ -n "$wandb_key" ]; then
  export WANDB_API_KEY=$wandb_key
  run_env+=(-e WANDB_API_KEY)
fi
if [ -n "$wandb_project" ]; then
  run_env+=(-e "WANDB_PROJECT=$wandb_project")
fi
if [ -n "$wandb_run" ]; then
  run_env+=(-e "WANDB_RUN_NAME=$wandb_run")
fi
if [ "$no_wandb" = true ]; then
  run_env+=(-e WANDB_MODE=disabled)
fi

train_args=(train --config "$config" --device "$device")
[ -z "$epochs" ] || train_args+=(--epochs "$epochs")
[ -z "$batch_size" ] || train_args+=(--batch_size "$batch_size")
[ -z "$lr" ] || train_args+=(--lr "$lr")
[ -z "$wandb_project" ] || train_args+=(--wandb_project "$wandb_project")
[ -z "$wandb_run" ] || train_args+=(--wandb_run "$wandb_run")
[ "$no_wandb" = false ] || train_args+=(--no_wandb)

commands=()
if [ "$interactive" = true ]; then
  commands+=("$(join_command "${compose[@]}" run --rm "${run_env[@]}" "$shell_service" bash)")
else
  if [ "$mode" = data ] || [ "$mode" = all ]; then
    commands+=("$(join_command "${compose[@]}" run --rm "$gen_service" gen --config "$config")")
  fi
  if [ "$mode" = train ] || [ "$mode" = all ]; then
    commands+=("$(join_command "${compose[@]}" run --rm "${run_env[@]}" "$train_service" "${train_args[@]}")")
  fi
fi

cd "$root"
for command in "${commands[@]}"; do
  if [ "$dry_run" = true ]; then
    printf 'HOST_UID=%s HOST_GID=%s %s\n' "$HOST_UID" "$HOST_GID" "$command"
  else
    mkdir -p data runs
    echo "+ $command" >&2
    eval "$command"
  fi
done
