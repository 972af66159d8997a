//! Parity with the original PyTorch model on the fixture it wrote
//! (`tests/fixtures/golden/gpt_rope_parity.safetensors`, see that directory's README): same weights
//! and batch → same logits, last-token loss, probability of the correct token and gradients, on
//! the CPU and (the `#[ignore]`d tests, run by `scripts/device-check.sh` on a GPU machine) on CUDA
//! in float32 with the same tolerances and under autocast with looser ones.

use std::collections::HashMap;
use std::path::PathBuf;

use gpt_rope::{Gpt, GptConfig, Mode, last_token_loss};
use tch::{Device, Kind, Tensor, nn::VarStore};

/// The fixture's directory, under `ANALOGY_TEST_ROOT` when it is set (the device bundle, run
/// away from the source tree) and under the source tree otherwise.
fn golden_dir() -> PathBuf {
    std::env::var_os("ANALOGY_TEST_ROOT")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
            PathBuf::from,
        )
        .join("tests/fixtures/golden")
}

/// The device of the CUDA tests; without one they fail, saying so.
fn cuda() -> Device {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device: libtorch sees none (no GPU, or libtorch_cuda.so not loaded)"
    );
    Device::Cuda(0)
}

/// How far the results may be from the original's.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    /// Logits: the largest relative or the largest absolute difference below this.
    logits: f64,
    /// The loss: relative difference.
    loss: f64,
    /// The probability of the correct token: absolute difference.
    prob: f64,
    /// Gradients: absolute difference below `grad_abs + grad_rel · max |expected|`.
    grad_abs: f64,
    grad_rel: f64,
}

/// float32 on any device: what the CPU has always met.
const FP32: Tolerance = Tolerance {
    logits: 1e-5,
    loss: 1e-5,
    prob: 1e-5,
    grad_abs: 1e-4,
    grad_rel: 0.0,
};

/// Under CUDA autocast: matrix products take float16 inputs (about three significant digits)
/// with float32 accumulation; LayerNorm, softmax and the loss stay float32.
const AUTOCAST: Tolerance = Tolerance {
    logits: 1e-2,
    loss: 1e-2,
    prob: 1e-2,
    grad_abs: 1e-4,
    grad_rel: 2e-2,
};

fn load_fixture() -> HashMap<String, Tensor> {
    let path = golden_dir().join("gpt_rope_parity.safetensors");
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .collect()
}

fn fixture_config() -> GptConfig {
    let path = golden_dir().join("gpt_rope_parity.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let int = |k: &str| json[k].as_i64().unwrap();
    GptConfig {
        vocab_size: int("vocab_size"),
        d_model: int("d_model"),
        n_layer: int("n_layer"),
        n_head: int("n_head"),
        max_len: int("max_len"),
        rope_base: json["rope_base"].as_f64().unwrap(),
        dropout: json["dropout"].as_f64().unwrap(),
        tie_weights: false,
    }
}

/// Differences are taken on the CPU in float32, whatever device and kind `a` has.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_device(Device::Cpu).to_kind(Kind::Float) - b)
        .abs()
        .max()
        .double_value(&[])
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    ((a.to_device(Device::Cpu).to_kind(Kind::Float) - b).abs() / b.abs().clamp_min(1e-6))
        .max()
        .double_value(&[])
}

/// The fixture's weights loaded into a fresh model on `device`, every parameter accounted for.
fn model_with_fixture_weights(fx: &HashMap<String, Tensor>, device: Device) -> (VarStore, Gpt) {
    let vs = VarStore::new(device);
    let model = Gpt::new(&vs.root(), &fixture_config()).unwrap();
    let mut vars = vs.variables();
    let fixture_params: Vec<_> = fx.keys().filter_map(|k| k.strip_prefix("param.")).collect();
    assert_eq!(
        fixture_params.len(),
        vars.len(),
        "parameter count differs from the fixture"
    );
    tch::no_grad(|| {
        for name in fixture_params {
            let var = vars
                .get_mut(name)
                .unwrap_or_else(|| panic!("model lacks parameter {name}"));
            let src = &fx[&format!("param.{name}")];
            assert_eq!(var.size(), src.size(), "{name}");
            var.copy_(src);
        }
    });
    (vs, model)
}

/// The model on `device` (its forward passes under CUDA autocast when `autocast`) against the
/// original's logits, loss, probabilities and gradients.
fn matches_the_original(device: Device, autocast: bool, tol: Tolerance) {
    let fx = load_fixture();
    let (vs, model) = model_with_fixture_weights(&fx, device);
    let ids = &fx["input_ids"].to_device(device);
    let pad = fx["pad_mask"].to_kind(Kind::Bool).to_device(device);
    let loss_mask = fx["loss_mask"].to_kind(Kind::Bool).to_device(device);

    let logits = tch::autocast(autocast, || model.forward(ids, Some(&pad), Mode::Eval)).unwrap();
    let want = &fx["expected.logits"];
    assert_eq!(logits.size(), want.size());
    let rel = max_rel_diff(&logits, want);
    let abs = max_abs_diff(&logits, want);
    assert!(
        rel < tol.logits || abs < tol.logits,
        "logits differ: max rel {rel:e}, max abs {abs:e}"
    );

    // The last real position of each row, and the target there.
    let positions = loss_mask.to_kind(Kind::Int64).argmax(1, false);
    let targets = fx["target_ids"]
        .to_device(device)
        .gather(1, &positions.unsqueeze(1), false)
        .squeeze_dim(1);
    let last = tch::autocast(autocast, || {
        model.forward_at(ids, Some(&pad), &positions, Mode::Eval)
    })
    .unwrap();
    let loss = last_token_loss(&last, &targets);
    let want_loss = fx["expected.loss"].double_value(&[0]);
    let got_loss = loss.double_value(&[]);
    assert!(
        ((got_loss - want_loss) / want_loss).abs() < tol.loss,
        "loss {got_loss} vs {want_loss}"
    );

    let prob = last
        .softmax(-1, Kind::Float)
        .gather(1, &targets.unsqueeze(1), false)
        .squeeze_dim(1);
    let dp = max_abs_diff(&prob, &fx["expected.prob_correct"]);
    assert!(dp < tol.prob, "prob_correct differs by {dp:e}");

    loss.backward();
    for (name, var) in vs.variables() {
        let want = &fx[&format!("grad.{name}")];
        let d = max_abs_diff(&var.grad(), want);
        let bound = tol.grad_abs + tol.grad_rel * want.abs().max().double_value(&[]);
        assert!(
            d < bound,
            "gradient of {name} differs by {d:e} (bound {bound:e})"
        );
    }
}

#[test]
fn logits_loss_probabilities_and_gradients_match_the_original() {
    matches_the_original(Device::Cpu, false, FP32);
}

#[test]
#[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
fn on_cuda_in_float32_the_model_matches_the_original() {
    matches_the_original(cuda(), false, FP32);
}

#[test]
#[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
fn on_cuda_under_autocast_the_model_matches_the_original_loosely() {
    matches_the_original(cuda(), true, AUTOCAST);
}

fn traced_logits_match(device: Device) {
    let fx = load_fixture();
    let (_vs, model) = model_with_fixture_weights(&fx, device);
    let pad = fx["pad_mask"].to_kind(Kind::Bool).to_device(device);
    let trace = model
        .forward_traced(&fx["input_ids"].to_device(device), Some(&pad))
        .unwrap();
    let abs = max_abs_diff(&trace.logits, &fx["expected.logits"]);
    assert!(abs < 1e-5, "traced logits differ by {abs:e}");
}

#[test]
fn traced_forward_matches_the_original_logits() {
    traced_logits_match(Device::Cpu);
}

#[test]
#[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
fn on_cuda_the_traced_forward_matches_the_original_logits() {
    traced_logits_match(cuda());
}
