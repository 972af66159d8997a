# Tasks of the project. `scripts/just <recipe>` works without `just` installed.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := true

# List the recipes.
default:
    @{{just_executable()}} --list

# Install libtorch 2.13.0 into .libtorch (CPU, or CUDA when a GPU is present); idempotent.
setup:
    bash scripts/setup-libtorch.sh

# Build every program the recipes run (release), so that none of them compiles later.
build: setup
    cargo build --release -p gen -p train -p report -p sweep-cli

# Generate a dataset (default: configs/default.toml's [data] into its data_dir). Flags of gen.
gen *ARGS: build
    #!/usr/bin/env bash
    set -euo pipefail
    for a in "$@"; do case "$a" in --config|--config=*) exec target/release/gen "$@" ;; esac; done
    exec target/release/gen --config configs/default.toml "$@"

# Train: configs/default.toml (the paper's Fig. 1B setting) plus flags, or the flags alone when they name a --config, --resume or --ensemble.
train *ARGS: build
    #!/usr/bin/env bash
    set -euo pipefail
    for a in "$@"; do
      case "$a" in
        --config|--config=*|--resume|--resume=*|--ensemble|--ensemble=*) exec target/release/train "$@" ;;
      esac
    done
    exec target/release/train --config configs/default.toml "$@"

# The whole test suite: every crate (parity, end-to-end, faults, W&B fake server), the README's commands and the container checks.
test: setup
    cargo test --workspace --release
    python3 scripts/readme-commands.py
    bash docker/test.sh

# Formatting, lints (warnings are errors), docs and the tests.
check: setup
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
    {{just_executable()}} test

# Benchmark the original's default config end to end (training, evaluation, geometry, memory) into bench/results/.
bench *ARGS: build
    bash scripts/bench.sh "$@"

# One self-contained HTML report (and plots) of run directories or sweep directories: `just report runs/a runs/b`.
report +ARGS: build
    target/release/report "$@"

# Run a sweep: `just sweep run configs/paper/fig2-entities.toml --jobs 2` (also run-one, run-batch, slurm).
sweep *ARGS: build
    target/release/sweep "$@"

# Reproduce a paper figure: `just reproduce fig2-entities` (`--scale small`, `--dry-run`).
reproduce NAME *ARGS: build
    target/release/sweep reproduce "$@"

# Build the bundle that proves CUDA on a GPU machine (see docs/CUDA.md).
device-bundle:
    bash scripts/device-bundle.sh

# Container checks: hadolint, shellcheck, compose config, run.sh option handling.
docker-test:
    bash docker/test.sh

# Run the containers: `just docker --mode all --gpu 0` (see docker/README.md).
docker *ARGS:
    bash docker/run.sh "$@"
