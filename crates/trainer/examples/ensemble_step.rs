//! One batched training step of K members against K separate steps, on the default
//! configuration's shapes (batch 64, input width 3, vocabulary 10 011 unless given), timed
//! interleaved in one process so that both see the same machine state: rounds of 30 separate
//! steps of each of K single models, then 30 batched steps of a K-member ensemble; the medians
//! over rounds are printed.
//!
//! ```text
//! cargo run --release -p trainer --example ensemble_step -- [K] [vocab]
//! ```
//! Synthetic token ids: the cost of a step depends on the shapes only.

use std::time::Instant;

use gpt_rope::ensemble::{GptEnsemble, member_losses};
use gpt_rope::{Gpt, Members, Mode, last_token_loss};
use tch::{Device, Kind, Tensor, nn::VarStore};
use trainer::RunConfig;
use trainer::optim::{Adam, AdamConfig};

const ROUNDS: usize = 12;
const STEPS: usize = 30;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    trainer::tune_allocator();
    let mut args = std::env::args().skip(1);
    let k: i64 = args.next().map_or(Ok(3), |s| s.parse())?;
    let v: i64 = args.next().map_or(Ok(10_011), |s| s.parse())?;
    let run = RunConfig::default();
    let cfg = run.model.with_vocab(v);
    let device = Device::cuda_if_available();
    let (b, w) = (run.train.batch_size as i64, 3);
    let ids = Tensor::randint_low(1, v, [k, b, w], (Kind::Int64, device));
    let pad = Tensor::zeros([k, b, w], (Kind::Bool, device));
    let pos = Tensor::full([k, b], w - 1, (Kind::Int64, device));
    let answers = Tensor::randint_low(1, v, [k, b], (Kind::Int64, device));
    let adam = || AdamConfig::new(run.train.optimizer, run.train.weight_decay);
    let mut singles = (0..k)
        .map(|_| {
            let vs = VarStore::new(device);
            let model = Gpt::new(&vs.root(), &cfg)?;
            let opt = Adam::single(model.named_parameters(), adam());
            Ok((vs, model, opt))
        })
        .collect::<Result<Vec<_>, gpt_rope::ModelError>>()?;
    let evs = VarStore::new(device);
    let ensemble = GptEnsemble::new(&evs.root(), &cfg, k)?;
    let mut opt = Adam::for_model(&ensemble, (0..k).map(|_| adam()).collect())?;
    let lrs = vec![run.train.lr; k as usize];
    let sync = || {
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
    };
    let (mut separate, mut batched) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        sync();
        let t0 = Instant::now();
        for _ in 0..STEPS {
            for (m, (_, model, opt)) in singles.iter_mut().enumerate() {
                let m = m as i64;
                let logits =
                    model.forward_at(&ids.get(m), Some(&pad.get(m)), &pos.get(m), Mode::Train)?;
                let loss = last_token_loss(&logits, &answers.get(m));
                opt.zero_grad()?;
                loss.backward();
                opt.step(&[run.train.lr], None)?;
            }
        }
        sync();
        let t1 = Instant::now();
        for _ in 0..STEPS {
            let logits = ensemble.forward_at_members(&ids, Some(&pad), &pos, Mode::Train)?;
            let loss = member_losses(&logits, &answers).sum(Kind::Float);
            opt.zero_grad()?;
            loss.backward();
            opt.step(&lrs, None)?;
        }
        sync();
        let t2 = Instant::now();
        // The first rounds warm the allocator and caches up.
        if round >= 2 {
            separate.push((t1 - t0).as_secs_f64() / STEPS as f64);
            batched.push((t2 - t1).as_secs_f64() / STEPS as f64);
        }
    }
    let (s, e) = (1e3 * median(separate), 1e3 * median(batched));
    println!(
        "device {device:?}, threads {}, K = {k}, vocab {v}: {k} separate steps {s:.2} ms, one batched step {e:.2} ms ({:.2}x)",
        tch::get_num_threads(),
        s / e
    );
    Ok(())
}
