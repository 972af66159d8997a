//! Where a training step's time goes, on the default configuration's shapes: the forward pass
//! (last-position projection), the backward pass, the fused Adam update, and one evaluation of the
//! test set, each timed over many repetitions (median of the per-repetition times).
//!
//! `cargo run --release -p trainer --example step_profile -- [data_dir] [threads]`

use std::time::Instant;

use gpt_rope::{Gpt, Mode, last_token_loss};
use tch::{Device, nn::VarStore};
use trainer::RunConfig;
use trainer::data::DeviceData;
use trainer::optim::{Adam, AdamConfig};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    trainer::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let mut cfg = RunConfig::default();
    if let Some(dir) = args.get(1) {
        cfg.train.data_dir = dir.into();
    }
    if let Some(t) = args.get(2) {
        tch::set_num_threads(t.parse()?);
    }
    let ds = trainer::train::load_or_generate(&cfg)?;
    let device = Device::cuda_if_available();
    let data = DeviceData::new(&ds, device);
    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let model = Gpt::new(&vs.root(), &cfg.model.with_vocab(ds.vocab.len() as i64))?;
    let mut opt = Adam::single(
        model.named_parameters(),
        AdamConfig::new(cfg.train.optimizer, 0.0),
    );
    let b = cfg.train.batch_size.min(data.train.n) as i64;
    let index = tch::Tensor::arange(b, (tch::Kind::Int64, device));
    let (ids, pad, pos, ans) = data.train.gather(&index);
    let sync = || {
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
    };
    let (mut fwd, mut bwd, mut adam, mut full_fwd, mut eval) =
        (vec![], vec![], vec![], vec![], vec![]);
    for rep in 0..220 {
        sync();
        let t0 = Instant::now();
        let logits = model.forward_at(&ids, Some(&pad), &pos, Mode::Train)?;
        let loss = last_token_loss(&logits, &ans);
        sync();
        let t1 = Instant::now();
        opt.zero_grad()?;
        loss.backward();
        sync();
        let t2 = Instant::now();
        opt.step(&[cfg.train.lr], None)?;
        sync();
        let t3 = Instant::now();
        let all = tch::no_grad(|| model.forward(&ids, Some(&pad), Mode::Eval))?;
        drop(all);
        sync();
        let t4 = Instant::now();
        trainer::eval::evaluate(&model, &data.test)?;
        let t5 = Instant::now();
        if rep >= 20 {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            adam.push((t3 - t2).as_secs_f64());
            full_fwd.push((t4 - t3).as_secs_f64());
            eval.push((t5 - t4).as_secs_f64());
        }
    }
    let ms = |xs: Vec<f64>| 1e3 * median(xs);
    println!(
        "device {device:?}, threads {}, batch {b}, vocab {}",
        tch::get_num_threads(),
        ds.vocab.len()
    );
    let (f, bw, a) = (ms(fwd), ms(bwd), ms(adam));
    println!(
        "forward (last position) {f:.2} ms | backward {bw:.2} ms | fused Adam {a:.2} ms | step {:.2} ms",
        f + bw + a
    );
    println!(
        "no-grad forward projecting every position {:.2} ms (for comparison)",
        ms(full_fwd)
    );
    println!("evaluation of {} test rows {:.2} ms", data.test.n, ms(eval));
    Ok(())
}
