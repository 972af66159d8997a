//! The ensemble against its members as single models: K independently built [`Gpt`]s loaded
//! into a [`GptEnsemble`] give the same logits (every position and the last-token path) and the
//! same gradients of the last-token loss; `from_seeds` reproduces `Gpt::new` under each seed;
//! `member_state` round-trips into a `Gpt`.

use gpt_rope::ensemble::{GptEnsemble, member_losses};
use gpt_rope::{Gpt, GptConfig, Members, Mode, last_token_loss};
use tch::{Device, Kind, Tensor, nn::VarStore};

/// Tests seed and draw from libtorch's global generator; they take turns so that one test's
/// draws cannot land between another's `manual_seed` and its initialisation.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cfg(tie_weights: bool) -> GptConfig {
    GptConfig {
        vocab_size: 23,
        d_model: 16,
        n_layer: 2,
        n_head: 2,
        max_len: 6,
        tie_weights,
        ..Default::default()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// K single models with distinct weights, each in its own var store.
fn singles(cfg: &GptConfig, seeds: &[i64]) -> Vec<(VarStore, Gpt)> {
    seeds
        .iter()
        .map(|&s| {
            tch::manual_seed(s);
            let vs = VarStore::new(Device::Cpu);
            let gpt = Gpt::new(&vs.root(), cfg).unwrap();
            // Non-trivial LayerNorm and bias values, so that per-member affine parts matter.
            tch::no_grad(|| {
                for (name, mut t) in vs.variables() {
                    if name.contains("ln") || name.ends_with("bias") {
                        let _ = t.g_add_(&(Tensor::randn_like(&t) * 0.3));
                    }
                }
            });
            (vs, gpt)
        })
        .collect()
}

/// A batch per member: `[K, b, t]` ids with right padding, the pad mask, the last positions and
/// targets.
fn batch(k: i64, b: i64, t: i64, v: i64) -> (Tensor, Tensor, Tensor, Tensor) {
    tch::manual_seed(99);
    let ids = Tensor::randint_low(1, v, [k, b, t], (Kind::Int64, Device::Cpu));
    let lengths = Tensor::randint_low(1, t + 1, [k, b], (Kind::Int64, Device::Cpu));
    let pad = Tensor::arange(t, (Kind::Int64, Device::Cpu))
        .view([1, 1, t])
        .ge_tensor(&lengths.unsqueeze(-1)); // (k, b, t)
    let ids = ids.masked_fill(&pad, 0);
    let targets = Tensor::randint_low(0, v, [k, b], (Kind::Int64, Device::Cpu));
    (ids, pad, lengths - 1, targets)
}

fn logits_and_gradients_match(tie_weights: bool) {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = cfg(tie_weights);
    let seeds = [1, 2, 3];
    let models = singles(&cfg, &seeds);
    let k = seeds.len() as i64;
    let vs = VarStore::new(Device::Cpu);
    let ens = GptEnsemble::new(&vs.root(), &cfg, k).unwrap();
    for (i, (mvs, _)) in models.iter().enumerate() {
        let params: Vec<(String, Tensor)> = mvs.variables().into_iter().collect();
        ens.load_member(i as i64, &params).unwrap();
    }
    let (ids, pad, positions, targets) = batch(k, 4, 6, cfg.vocab_size);

    let full = ens.forward(&ids, Some(&pad), Mode::Eval).unwrap();
    assert_eq!(full.size(), [k, 4, 6, cfg.vocab_size]);
    let logits = ens
        .forward_at(&ids, Some(&pad), &positions, Mode::Eval)
        .unwrap();
    assert_eq!(logits.size(), [k, 4, cfg.vocab_size]);
    let per_member = ens
        .forward_at_members(&ids, Some(&pad), &positions, Mode::Eval)
        .unwrap();
    assert_eq!(per_member.len(), k as usize);
    let losses = member_losses(&per_member, &targets);
    losses.sum(Kind::Float).backward();

    for (i, (mvs, gpt)) in models.iter().enumerate() {
        let i = i as i64;
        let want_full = gpt
            .forward(&ids.get(i), Some(&pad.get(i)), Mode::Eval)
            .unwrap();
        let d = max_abs_diff(&full.get(i), &want_full);
        assert!(d < 1e-5, "member {i}: all-position logits differ by {d:e}");
        let want = gpt
            .forward_at(
                &ids.get(i),
                Some(&pad.get(i)),
                &positions.get(i),
                Mode::Eval,
            )
            .unwrap();
        let d = max_abs_diff(&logits.get(i), &want);
        assert!(d < 1e-5, "member {i}: last-position logits differ by {d:e}");
        let loss = last_token_loss(&want, &targets.get(i));
        let d = (loss.double_value(&[]) - losses.double_value(&[i])).abs();
        assert!(d < 1e-6, "member {i}: loss differs by {d:e}");
        loss.backward();
        let member = ens.member_params(i).unwrap();
        for (name, var) in mvs.variables() {
            let ens_grad = member
                .iter()
                .find(|p| p.name() == name)
                .and_then(|p| p.grad())
                .unwrap();
            let want = var.grad();
            let scale = want.abs().max().double_value(&[]).max(1e-3);
            let d = max_abs_diff(&ens_grad, &want) / scale;
            assert!(
                d < 1e-5,
                "member {i}: gradient of {name} differs by {d:e} (relative)"
            );
        }
    }
}

#[test]
fn members_give_the_logits_and_gradients_of_single_models() {
    logits_and_gradients_match(false);
}

#[test]
fn tied_members_give_the_logits_and_gradients_of_single_models() {
    logits_and_gradients_match(true);
}

#[test]
fn from_seeds_equals_gpt_new_under_each_seed_and_member_state_round_trips() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = cfg(false);
    let seeds = [42u64, 7, 42];
    let vs = VarStore::new(Device::Cpu);
    let ens = GptEnsemble::from_seeds(&vs.root(), &cfg, &seeds).unwrap();
    for (k, &seed) in seeds.iter().enumerate() {
        tch::manual_seed(seed as i64);
        let single = VarStore::new(Device::Cpu);
        let _gpt = Gpt::new(&single.root(), &cfg).unwrap();
        let state = ens.member_state(k as i64).unwrap();
        let vars = single.variables();
        assert_eq!(state.len(), vars.len());
        for (name, t) in &state {
            assert!(
                t.equal(&vars[name]),
                "member {k} `{name}` differs from Gpt::new"
            );
        }
    }
    // Same seed, same weights; different seeds, different weights.
    let s0 = ens.member_state(0).unwrap();
    let s1 = ens.member_state(1).unwrap();
    let s2 = ens.member_state(2).unwrap();
    let emb = |s: &[(String, Tensor)]| {
        s.iter()
            .find(|(n, _)| n == "tok_emb.weight")
            .map(|(_, t)| t.shallow_clone())
            .unwrap()
    };
    assert!(emb(&s0).equal(&emb(&s2)));
    assert!(!emb(&s0).equal(&emb(&s1)));

    // member_state → a Gpt's var store → the same logits as the member.
    let target = VarStore::new(Device::Cpu);
    let gpt = Gpt::new(&target.root(), &cfg).unwrap();
    let mut vars = target.variables();
    tch::no_grad(|| {
        for (name, t) in &s1 {
            vars.get_mut(name).unwrap().copy_(t);
        }
    });
    let (ids, pad, positions, _) = batch(3, 2, 5, cfg.vocab_size);
    let ens_logits = ens
        .forward_at(&ids, Some(&pad), &positions, Mode::Eval)
        .unwrap();
    let single = gpt
        .forward_at(
            &ids.get(1),
            Some(&pad.get(1)),
            &positions.get(1),
            Mode::Eval,
        )
        .unwrap();
    assert!(max_abs_diff(&ens_logits.get(1), &single) < 1e-5);

    // A parameter list with a wrong shape or an unknown name is rejected.
    let mut bad = ens.member_state(1).unwrap();
    bad[0].1 = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
    assert!(ens.load_member(0, &bad).is_err());
    let mut unknown = s1;
    unknown[0].0 = "nope.weight".into();
    assert!(ens.load_member(0, &unknown).is_err());
}
