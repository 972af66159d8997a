//! Parity with the original PyTorch model on the fixture it wrote
//! (`tests/fixtures/golden/gpt_rope_parity.safetensors`, see that directory's README): same weights
//! and batch → same logits, last-token loss, probability of the correct token and gradients.

use std::collections::HashMap;
use std::path::PathBuf;

use gpt_rope::{Gpt, GptConfig, Mode, last_token_loss};
use tch::{Device, Kind, Tensor, nn::VarStore};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden")
}

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

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    ((a - b).abs() / b.abs().clamp_min(1e-6))
        .max()
        .double_value(&[])
}

/// The fixture's weights loaded into a fresh model, every parameter accounted for.
fn model_with_fixture_weights(fx: &HashMap<String, Tensor>) -> (VarStore, Gpt) {
    let vs = VarStore::new(Device::Cpu);
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

#[test]
fn logits_loss_probabilities_and_gradients_match_the_original() {
    let fx = load_fixture();
    let (vs, model) = model_with_fixture_weights(&fx);
    let ids = &fx["input_ids"];
    let pad = fx["pad_mask"].to_kind(Kind::Bool);
    let loss_mask = fx["loss_mask"].to_kind(Kind::Bool);

    let logits = model.forward(ids, Some(&pad), Mode::Eval).unwrap();
    let want = &fx["expected.logits"];
    assert_eq!(logits.size(), want.size());
    let rel = max_rel_diff(&logits, want);
    let abs = max_abs_diff(&logits, want);
    assert!(
        rel < 1e-5 || abs < 1e-5,
        "logits differ: max rel {rel:e}, max abs {abs:e}"
    );

    // The last real position of each row, and the target there.
    let positions = loss_mask.to_kind(Kind::Int64).argmax(1, false);
    let targets = fx["target_ids"]
        .gather(1, &positions.unsqueeze(1), false)
        .squeeze_dim(1);
    let last = model
        .forward_at(ids, Some(&pad), &positions, Mode::Eval)
        .unwrap();
    let loss = last_token_loss(&last, &targets);
    let want_loss = fx["expected.loss"].double_value(&[0]);
    let got_loss = loss.double_value(&[]);
    assert!(
        ((got_loss - want_loss) / want_loss).abs() < 1e-5,
        "loss {got_loss} vs {want_loss}"
    );

    let prob = last
        .softmax(-1, Kind::Float)
        .gather(1, &targets.unsqueeze(1), false)
        .squeeze_dim(1);
    let dp = max_abs_diff(&prob, &fx["expected.prob_correct"]);
    assert!(dp < 1e-5, "prob_correct differs by {dp:e}");

    loss.backward();
    for (name, var) in vs.variables() {
        let want = &fx[&format!("grad.{name}")];
        let d = max_abs_diff(&var.grad(), want);
        assert!(d < 1e-4, "gradient of {name} differs by {d:e}");
    }
}

#[test]
fn traced_forward_matches_the_original_logits() {
    let fx = load_fixture();
    let (_vs, model) = model_with_fixture_weights(&fx);
    let pad = fx["pad_mask"].to_kind(Kind::Bool);
    let trace = model.forward_traced(&fx["input_ids"], Some(&pad)).unwrap();
    let abs = max_abs_diff(&trace.logits, &fx["expected.logits"]);
    assert!(abs < 1e-5, "traced logits differ by {abs:e}");
}
