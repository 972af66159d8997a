//! Shared set-up of the W&B tests: a tiny run configuration, a variable source and fast client
//! timings for a loopback fake server.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use trainer::wandb::WandbOptions;
use trainer::{DeviceChoice, GeometrySchedule, RunConfig};
use wandb_http::ClientOptions;

/// The `configs/tiny.toml` run, built in code: 8 entities, 50 relations, d_model 32, one thread,
/// no plots, data and run directory under `dir`.
pub fn tiny_config(dir: &Path, epochs: usize) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.data.num_entities = 8;
    cfg.data.num_relations = 50;
    cfg.data.sub_size = Some(4);
    cfg.data.atomic_ood_ratio = 0.0;
    cfg.data.compositional_ood_ratio = 0.1;
    cfg.data.analogical_ood_ratio = 0.25;
    cfg.data.include_f_inverse = false;
    cfg.data.duplicate_relation = false;
    cfg.data.seed = 42;
    cfg.model.d_model = 32;
    cfg.model.n_layer = 1;
    cfg.model.n_head = 2;
    cfg.model.max_len = 8;
    cfg.train.data_dir = dir.join("data");
    cfg.train.save_dir = dir.join("run");
    cfg.train.batch_size = 16;
    cfg.train.epochs = epochs;
    cfg.train.lr = 3e-3;
    cfg.train.seed = 7;
    cfg.train.log_every = 5;
    cfg.train.eval_every = 2;
    cfg.train.device = DeviceChoice::Cpu;
    cfg.train.threads = 1;
    cfg.train.geometry = GeometrySchedule::Eval;
    cfg.train.plots = false;
    cfg.wandb.project = "cfg-project".into();
    cfg.wandb.run_name = Some("cfg-run".into());
    cfg
}

/// A variable source holding exactly `vars`.
pub fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Millisecond retries and flushes, no proxy, a 10 s finish deadline.
pub fn fast_options() -> WandbOptions {
    WandbOptions {
        client: ClientOptions {
            start_wait: Duration::from_secs(3),
            min_retry_wait: Duration::from_millis(20),
            max_retry_wait: Duration::from_millis(1000),
            give_up_after: Duration::from_secs(8),
            max_attempts: 20,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            fast_flush_interval: Duration::from_millis(50),
            flush_interval: Duration::from_millis(50),
            use_env_proxy: false,
            ..ClientOptions::default()
        },
        finish_deadline: Duration::from_secs(10),
        extra_config: Default::default(),
    }
}
