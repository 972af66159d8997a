//! The optimiser against the original: five `torch.optim.Adam(lr=1e-2, weight_decay=0.01)` steps
//! (coupled L2) on the fixture's batch give the same losses and final weights
//! (`tests/fixtures/golden/gpt_rope_parity.safetensors`), on the CPU and (`#[ignore]`d, run by
//! `scripts/device-check.sh` on a GPU machine) with the fused kernel on CUDA.

use std::collections::HashMap;
use std::path::PathBuf;

use gpt_rope::{Gpt, GptConfig, Mode, last_token_loss};
use tch::{Device, Kind, Tensor, nn::VarStore};
use trainer::optim::{Adam, AdamConfig};
use trainer::{DeviceChoice, OptimizerKind};

/// The fixture's directory, under `ANALOGY_TEST_ROOT` when it is set (the device bundle, run
/// away from the source tree) and under the source tree otherwise.
fn golden() -> PathBuf {
    std::env::var_os("ANALOGY_TEST_ROOT")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
            PathBuf::from,
        )
        .join("tests/fixtures/golden")
}

fn five_steps_match(device: Device) {
    let fx: HashMap<String, Tensor> =
        Tensor::read_safetensors(golden().join("gpt_rope_parity.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden().join("gpt_rope_parity.json")).unwrap(),
    )
    .unwrap();
    let cfg = GptConfig {
        vocab_size: meta["vocab_size"].as_i64().unwrap(),
        d_model: meta["d_model"].as_i64().unwrap(),
        n_layer: meta["n_layer"].as_i64().unwrap(),
        n_head: meta["n_head"].as_i64().unwrap(),
        max_len: meta["max_len"].as_i64().unwrap(),
        rope_base: meta["rope_base"].as_f64().unwrap(),
        dropout: 0.0,
        tie_weights: false,
    };
    let vs = VarStore::new(device);
    let model = Gpt::new(&vs.root(), &cfg).unwrap();
    let mut vars = vs.variables();
    tch::no_grad(|| {
        for (name, var) in vars.iter_mut() {
            var.copy_(&fx[&format!("param.{name}")]);
        }
    });
    let adam = &meta["adam"];
    assert_eq!(adam["weight_decay"].as_f64(), Some(0.01));
    let mut opt = Adam::single(
        model.named_parameters(),
        AdamConfig::new(OptimizerKind::Adam, adam["weight_decay"].as_f64().unwrap()),
    );
    let ids = &fx["input_ids"].to_device(device);
    let pad = fx["pad_mask"].to_kind(Kind::Bool).to_device(device);
    let positions = fx["loss_mask"]
        .to_kind(Kind::Int64)
        .argmax(1, false)
        .to_device(device);
    let targets = fx["target_ids"]
        .to_device(device)
        .gather(1, &positions.unsqueeze(1), false)
        .squeeze_dim(1);
    let want: Vec<f32> = Vec::try_from(&fx["expected.adam_losses"]).unwrap();
    let lr = adam["lr"].as_f64().unwrap();
    for (step, want_loss) in want.iter().enumerate() {
        opt.zero_grad().unwrap();
        let logits = model
            .forward_at(ids, Some(&pad), &positions, Mode::Eval)
            .unwrap();
        let loss = last_token_loss(&logits, &targets);
        let got = loss.double_value(&[]);
        assert!(
            ((got - f64::from(*want_loss)) / f64::from(*want_loss)).abs() < 1e-5,
            "step {step}: loss {got} vs {want_loss}"
        );
        loss.backward();
        opt.step(&[lr], None).unwrap();
    }
    for (name, var) in vs.variables() {
        let d = (var.to_device(Device::Cpu) - &fx[&format!("after_adam.{name}")])
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-4, "{name} after 5 Adam steps differs by {d:e}");
    }
}

#[test]
fn five_adam_steps_match_the_original() {
    five_steps_match(Device::Cpu);
}

#[test]
#[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
fn on_cuda_five_fused_adam_steps_match_the_original() {
    five_steps_match(
        trainer::train::select_device(DeviceChoice::Cuda).unwrap_or_else(|e| panic!("{e}")),
    );
}
