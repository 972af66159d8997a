# Tasks of the project. `scripts/just <recipe>` works without `just` installed.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @{{just_executable()}} --list

# Install libtorch 2.13.0 into .libtorch (CPU, or CUDA when a GPU is present); idempotent.
setup:
    bash scripts/setup-libtorch.sh

# Generate a dataset (default: configs/default.toml's [data] into data/composition_functor.10.10000.5).
gen *ARGS:
    cargo run --release -p gen -- --config configs/default.toml {{ARGS}}

# Train on the default config (generates the dataset when missing). Extra flags: `just train --epochs 100`.
train *ARGS: setup
    cargo run --release -p train -- --config configs/default.toml {{ARGS}}

# The whole test suite: every crate (parity, end-to-end, W&B fake server) and the container checks.
test: setup
    cargo test --workspace
    bash docker/test.sh

# Formatting, lints (warnings are errors), docs and the tests.
check: setup
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
    {{just_executable()}} test

# Benchmark the default config end to end (training, evaluation, geometry, memory) into bench/results/.
bench *ARGS: setup
    bash scripts/bench.sh {{ARGS}}

# HTML report (and plots) of one or more run directories: `just report runs/default runs/other`.
report +RUNS:
    cargo run --release -p report -- {{RUNS}}

# Run a sweep file: `just sweep configs/paper/fig2-entities.toml --jobs 2`.
sweep *ARGS: setup
    cargo build --release -p train -p sweep-cli
    target/release/sweep {{ARGS}}

# Reproduce a paper figure: `just reproduce fig2-entities --scale small`.
reproduce NAME *ARGS: setup
    cargo build --release -p train -p sweep-cli
    target/release/sweep reproduce {{NAME}} {{ARGS}}

# Container checks: hadolint, shellcheck, compose config, run.sh option handling.
docker-test:
    bash docker/test.sh

# Run the containers: `just docker --mode all --gpu 0` (see docker/README.md).
docker *ARGS:
    bash docker/run.sh {{ARGS}}
