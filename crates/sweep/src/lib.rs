//! Sweeps of the functor experiment and the paper's figures in one command.
//!
//! A sweep file (TOML, see [`spec`]) names a base config, fixed keys, swept parameters (grid or
//! seeded random) and training seeds. The crate expands it into experiments with readable names,
//! generates each distinct dataset once into a cache, and runs the `train` binary as child
//! processes: side by side on one machine (`--jobs`), experiments whose shapes agree batched
//! into one `train --ensemble` process each (`--ensemble`), or as a Slurm job array whose tasks
//! call `sweep run-one`. W&B sweep agents need nothing from here: they call
//! `train --key=value` themselves (`configs/paper/wandb-sweep-example.yaml`).
//!
//! # Overview
//! - [`SweepSpec`] (`spec`): the parsed, validated sweep file; every key is checked with
//!   `RunConfig::is_key` and every value is applied to a `RunConfig`, so mistakes fail before
//!   anything runs, naming the file and key. [`SweepSpec::scaled`] shrinks a figure's sweep.
//! - [`Sweep`] / [`Experiment`] (`experiment`): the expansion against a [`Layout`]
//!   (`<out>/<sweep>/<experiment>` run directories, `<cache>/<readable>-<hash>` datasets) and
//!   the exact `train` command of each experiment.
//! - `cache`: the dataset cache key ([`cache::data_key`]) and atomic generation.
//! - `runner`: [`runner::plan`] (which experiments train together), [`run_sweep`] /
//!   [`run_one`] with [`RunOptions`], the per-experiment [`Outcome`] (appended to
//!   `sweep-status.jsonl`), skipping finished runs, resuming interrupted ones, and
//!   [`summary_table`].
//! - `slurm`: the job-array script ([`slurm::script`]): one task per experiment, or per batch of
//!   [`runner::batches`] (`sweep run-batch`), so a GPU task trains several seeds at once.
//! - `reproduce`: a finished figure sweep drawn with `plots::sweep_plot` plus `summary.json`
//!   with onset estimates ([`reproduce::draw`]).
//!
//! # Invariants
//! - The sweep never trains in-process: one `train` process per experiment or per batched group,
//!   so one failure cannot stop the others, and the sweep does not link libtorch (it reads the
//!   configuration keys and the ensemble compatibility rule from `run-config`, their one
//!   definition), so it builds and writes Slurm scripts on machines without libtorch.
//! - Batching changes nothing a researcher reads: a batched member writes the run directory,
//!   metrics, checkpoints and status row its separate run would (equal within floating-point
//!   summation order; the trainer's ensemble tests check it), and an interrupted member resumes as a
//!   separate run.
//! - Datasets are generated before runs start, serially, and written by rename, so runs never
//!   race on a dataset.
//! - Experiment `i` of a sweep file is the same experiment in `--dry-run`, `run`, `run-one
//!   --index i` and the Slurm array: the expansion is a pure function of the file (and scale).

pub mod cache;
mod error;
pub mod experiment;
pub mod reproduce;
pub mod runner;
pub mod slurm;
pub mod spec;

pub use error::{Result, SweepError};
pub use experiment::{Experiment, Layout, Sweep};
pub use runner::{Outcome, RunOptions, Status, run_batch, run_one, run_sweep, summary_table};
pub use spec::{Method, SweepSpec};
