//! Using the crates from another Rust program: generate a graph with `kg-data`, inspect the model
//! of `gpt-rope`, train with `trainer` while collecting the rows in a sink of our own, and read
//! the functor geometry of the trained model with `metrics`.
//!
//! `cargo run --release -p trainer --example library_use`

use std::sync::{Arc, Mutex};

use kg_data::DataConfig;
use tch::{Device, nn::VarStore};
use trainer::sink::Row;
use trainer::{MetricsSink, RunConfig, RunOptions};

/// Keeps the OOD analogical accuracy of every epoch.
struct Collect(Arc<Mutex<Vec<(u64, f64)>>>);

impl MetricsSink for Collect {
    fn log(&mut self, step: u64, row: &Row) {
        if let Some(acc) = row.get("val_ACC/ood_analogical").and_then(|v| v.as_f64()) {
            if let Ok(mut v) = self.0.lock() {
                v.push((step, acc));
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("library-use-{}", std::process::id()));

    // 1. A graph of 12 entities in two categories of 6, written in the original's layout.
    let data = DataConfig {
        num_entities: 12,
        num_relations: 200,
        sub_size: Some(6),
        ..DataConfig::default()
    };
    let ds = kg_data::generate(&data)?;
    ds.save(&dir.join("data"))?;
    let functor = ds.functor()?;
    println!(
        "{} training rows, {} test rows, functor pairs {:?}",
        ds.train.len(),
        ds.test.len(),
        functor.pairs
    );

    // 2. The model on its own: parameter count of this configuration.
    let mut cfg = RunConfig {
        data,
        ..RunConfig::default()
    };
    cfg.model.d_model = 64;
    let gpt = cfg.model.with_vocab(ds.vocab.len() as i64);
    let vs = VarStore::new(Device::Cpu);
    let _model = gpt_rope::Gpt::new(&vs.root(), &gpt)?;
    println!("model: {} parameters", gpt.num_params());

    // 3. Train, with our own sink next to the run directory's metrics.jsonl.
    cfg.train.data_dir = dir.join("data");
    cfg.train.save_dir = dir.join("run");
    cfg.train.epochs = 150;
    cfg.train.lr = 1e-3;
    cfg.train.eval_every = 50;
    cfg.train.plots = false;
    cfg.wandb.use_wandb = false;
    let curve = Arc::new(Mutex::new(Vec::new()));
    let opts = RunOptions {
        extra_sinks: vec![vec![Box::new(Collect(Arc::clone(&curve)))]],
        quiet: true,
        ..RunOptions::default()
    };
    let summary = trainer::run(cfg, opts)?;
    if let Some(eval) = &summary.final_eval {
        print!("{}", eval.table());
    }
    let curve = curve.lock().map(|c| c.clone()).unwrap_or_default();
    for (step, acc) in curve.iter().step_by(25) {
        println!("step {step:>5}: OOD analogical accuracy {acc:.2}");
    }

    // 4. Geometry of the trained weights, read back from the checkpoint.
    let ck = trainer::checkpoint::load(&summary.save_dir.join("checkpoints/last"))?;
    let get = |name: &str| {
        ck.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
    };
    if let (Some(e), Some(u)) = (get("tok_emb.weight"), get("head.weight")) {
        let pairs: Vec<(i64, i64)> = functor
            .pairs
            .iter()
            .map(|&(a, b)| (i64::from(a), i64::from(b)))
            .collect();
        println!(
            "Dirichlet energy of the functor graph: {:.3}",
            metrics::dirichlet_energy(&e, &pairs)?
        );
        println!(
            "Dirichlet energy on the head rows:      {:.3}",
            metrics::dirichlet_energy(&u, &pairs)?
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
