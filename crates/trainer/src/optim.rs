//! Adam and AdamW with PyTorch's semantics, over the members of a model, and the
//! learning-rate schedule.
//!
//! - [`Adam`] keeps `exp_avg`, `exp_avg_sq` and a step counter per parameter of every member
//!   (a single run is one member) and updates each member's parameters in one call into
//!   libtorch's fused kernel (one pass over each tensor instead of about ten elementwise
//!   kernels), which is where a step of this small model spends its time. A member's state has
//!   the same names whether it trained alone or in an ensemble (`exp_avg.<name>`,
//!   `exp_avg_sq.<name>`, `step.<name>`, `optimizer_steps`), so checkpoints are interchangeable.
//!   With `AdamConfig::single_tensor` a member runs PyTorch's unfused single-tensor path instead
//!   (the original's optimiser on the CPU, operation for operation).
//! - [`GradScaler`]: dynamic loss scaling for float16 mixed precision, on the device.
//! - [`reference_step`] is the plain, unfused formula of `torch.optim.Adam`/`AdamW`, used in tests
//!   to check the fused path.
//! - [`lr_at`] is the schedule: linear warm-up then constant.
//!
//! Weight decay: `Adam` couples it as an L2 term (`g ← g + λ·p`), as `torch.optim.Adam` does;
//! `AdamW` decays the weights directly (`p ← p·(1 − lr·λ)`).

use gpt_rope::{MemberParam, Members};
use tch::{Kind, Tensor};

use crate::TrainError;
use crate::config::OptimizerKind;
use crate::ffi::{FusedGroup, FusedHyper, clear_grads, fused_adam, single_tensor_adam};

/// Learning rate of optimiser step `step` (1-based): `lr·step/warmup` during the warm-up, then
/// `lr`.
pub fn lr_at(lr: f64, warmup_steps: usize, step: u64) -> f64 {
    if warmup_steps == 0 || step >= warmup_steps as u64 {
        lr
    } else {
        lr * step as f64 / warmup_steps as f64
    }
}

/// Hyper-parameters of one member's optimiser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Coupled (Adam) or decoupled (AdamW) weight decay.
    pub kind: OptimizerKind,
    /// β₁, β₂. PyTorch's defaults are (0.9, 0.999).
    pub betas: (f64, f64),
    /// ε added to the denominator. Default 1e-8.
    pub eps: f64,
    /// λ.
    pub weight_decay: f64,
    /// PyTorch's unfused single-tensor path (`_single_tensor_adam`, what `torch.optim.Adam` runs
    /// on the CPU) instead of the fused kernel: the same formula in the same operations, so the
    /// same numbers as the original's optimiser. Slower; no loss scaling. Default false.
    pub single_tensor: bool,
}

impl AdamConfig {
    /// PyTorch's defaults with the given kind and weight decay, on the fused path.
    pub fn new(kind: OptimizerKind, weight_decay: f64) -> Self {
        Self {
            kind,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
            single_tensor: false,
        }
    }

    /// The same configuration on PyTorch's single-tensor path (the `single_tensor` field).
    pub fn unfused(self) -> Self {
        Self {
            single_tensor: true,
            ..self
        }
    }

    fn hyper(&self, lr: f64) -> FusedHyper {
        FusedHyper {
            lr,
            betas: self.betas,
            weight_decay: self.weight_decay,
            eps: self.eps,
            decoupled: self.kind == OptimizerKind::Adamw,
        }
    }
}

/// One member's parameters and optimiser state.
#[derive(Debug)]
struct MemberAdam {
    params: Vec<MemberParam>,
    /// The member's views of `params`, made once (they share the leaves' storage).
    values: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Step counter of each parameter as a float32 scalar on its device, as the fused kernel
    /// reads it.
    steps: Vec<Tensor>,
    cfg: AdamConfig,
}

/// Adam/AdamW for the K ≥ 1 members of a model: per member, one fused-kernel call over the
/// member's views of its parameters ([`MemberParam`]: its own tensors, or its rows of stacked
/// ones) and their gradients, with its own moments, hyper-parameters and step counters.
#[derive(Debug)]
pub struct Adam {
    members: Vec<MemberAdam>,
    taken: u64,
    /// Every autograd leaf once (a stacked leaf is shared by all members).
    leaves: Vec<Tensor>,
}

impl Adam {
    /// An optimiser over each member's parameters (`members[k]`, in a fixed order) with zeroed
    /// moments; one configuration per member.
    ///
    /// # Errors
    /// [`TrainError::Optimizer`] when there are not as many configurations as members.
    pub fn new(members: Vec<Vec<MemberParam>>, cfgs: Vec<AdamConfig>) -> Result<Self, TrainError> {
        if members.len() != cfgs.len() {
            return Err(TrainError::Optimizer(format!(
                "{} optimiser configurations for {} members",
                cfgs.len(),
                members.len()
            )));
        }
        let members = members
            .into_iter()
            .zip(cfgs)
            .map(|(params, cfg)| {
                let values: Vec<Tensor> = params.iter().map(MemberParam::value).collect();
                MemberAdam {
                    exp_avg: values.iter().map(Tensor::zeros_like).collect(),
                    exp_avg_sq: values.iter().map(Tensor::zeros_like).collect(),
                    steps: values
                        .iter()
                        .map(|v| Tensor::zeros([], (Kind::Float, v.device())))
                        .collect(),
                    values,
                    params,
                    cfg,
                }
            })
            .collect::<Vec<MemberAdam>>();
        // Stacked leaves appear in every member's list: keep member 0's and the members' own.
        let leaves = members
            .iter()
            .enumerate()
            .flat_map(|(k, m)| {
                m.params
                    .iter()
                    .filter(move |p| k == 0 || !p.is_row())
                    .map(|p| p.leaf().shallow_clone())
            })
            .collect();
        Ok(Self {
            members,
            taken: 0,
            leaves,
        })
    }

    /// A one-member optimiser over named tensors that are their own leaves (a single model's
    /// parameters, e.g. [`gpt_rope::Gpt::named_parameters`]).
    pub fn single(params: Vec<(String, Tensor)>, cfg: AdamConfig) -> Self {
        let params = params
            .iter()
            .map(|(name, t)| MemberParam::own(name.as_str(), t))
            .collect();
        Self::new(vec![params], vec![cfg]).unwrap_or_else(|_| unreachable!("one list, one config"))
    }

    /// The optimiser of every member of `model`, member `k` with `cfgs[k]`.
    ///
    /// # Errors
    /// As [`Adam::new`], and a bad member index from the model.
    pub fn for_model(model: &dyn Members, cfgs: Vec<AdamConfig>) -> Result<Self, TrainError> {
        let members = (0..model.members())
            .map(|k| model.member_params(k))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(members, cfgs)
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u64 {
        self.taken
    }

    /// Drops every gradient (PyTorch's `zero_grad(set_to_none=True)`): the next backward pass
    /// stores fresh gradients instead of adding into zeroed buffers, one pass less over each
    /// gradient. (With glibc's default thresholds the fresh multi-MiB allocations fault their
    /// pages in every step and cost more than they save: see [`crate::tune_allocator`], which
    /// [`crate::run`] applies.)
    ///
    /// # Errors
    /// [`TrainError::Optimizer`] when libtorch fails.
    pub fn zero_grad(&mut self) -> Result<(), TrainError> {
        clear_grads(&self.leaves)
    }

    /// One update of every member from the accumulated gradients, member `k` with learning rate
    /// `lrs[k]` and, for mixed precision, loss scaler `scalers[k]` (the kernel divides the
    /// gradients by its scale; a step with a non-finite gradient changes nothing, not even the
    /// step counters, and the scaler adapts, all on the device). Parameters without a gradient
    /// are skipped, as in PyTorch.
    ///
    /// # Errors
    /// [`TrainError::Optimizer`] when libtorch rejects the update (e.g. tensors on mixed
    /// devices) or a list has the wrong length.
    pub fn step(
        &mut self,
        lrs: &[f64],
        mut scalers: Option<&mut [GradScaler]>,
    ) -> Result<(), TrainError> {
        let k = self.members.len();
        if lrs.len() != k || scalers.as_ref().is_some_and(|s| s.len() != k) {
            return Err(TrainError::Optimizer(format!(
                "{} learning rates and {:?} scalers for {k} members",
                lrs.len(),
                scalers.as_ref().map(|s| s.len())
            )));
        }
        self.taken += 1;
        tch::no_grad(|| -> Result<(), TrainError> {
            for (i, member) in self.members.iter_mut().enumerate() {
                let active: Vec<(usize, Tensor)> = member
                    .params
                    .iter()
                    .enumerate()
                    .filter_map(|(j, p)| p.grad().map(|g| (j, g)))
                    .collect();
                if active.is_empty() {
                    continue;
                }
                fn pick<'t>(ts: &'t [Tensor], active: &[(usize, Tensor)]) -> Vec<&'t Tensor> {
                    active.iter().map(|(j, _)| &ts[*j]).collect()
                }
                let grads: Vec<&Tensor> = active.iter().map(|(_, g)| g).collect();
                let scaler = scalers.as_deref_mut().map(|s| &mut s[i]);
                if member.cfg.single_tensor && scaler.is_some() {
                    return Err(TrainError::Optimizer(
                        "the single-tensor Adam path has no loss scaling".into(),
                    ));
                }
                if !member.cfg.single_tensor {
                    // The fused kernel reads the step counter; PyTorch increments it just before
                    // the call. (The single-tensor path increments it itself, as PyTorch's does.)
                    for (j, _) in &active {
                        let _ = member.steps[*j].f_add_scalar_(1.0)?;
                    }
                }
                let (params, exp_avgs, exp_avg_sqs, steps) = (
                    pick(&member.values, &active),
                    pick(&member.exp_avg, &active),
                    pick(&member.exp_avg_sq, &active),
                    pick(&member.steps, &active),
                );
                let group = FusedGroup {
                    params: &params,
                    grads: &grads,
                    exp_avgs: &exp_avgs,
                    exp_avg_sqs: &exp_avg_sqs,
                    steps: &steps,
                };
                if member.cfg.single_tensor {
                    single_tensor_adam(&group, member.cfg.hyper(lrs[i]))?;
                    continue;
                }
                if let Some(s) = &scaler {
                    s.check(&grads)?;
                }
                fused_adam(
                    &group,
                    member.cfg.hyper(lrs[i]),
                    scaler.as_deref().map(|s| (&s.scale, &s.found_inf)),
                )?;
                if let Some(s) = scaler {
                    s.update()?;
                }
            }
            Ok(())
        })
    }

    /// Member `k`'s state as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`,
    /// `step.<name>`, `optimizer_steps`), for its checkpoints; empty when `k` is not a member.
    pub fn member_state(&self, k: usize) -> Vec<(String, Tensor)> {
        let Some(member) = self.members.get(k) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(3 * member.params.len() + 1);
        for (i, p) in member.params.iter().enumerate() {
            let name = p.name();
            out.push((format!("exp_avg.{name}"), member.exp_avg[i].shallow_clone()));
            out.push((
                format!("exp_avg_sq.{name}"),
                member.exp_avg_sq[i].shallow_clone(),
            ));
            out.push((format!("step.{name}"), member.steps[i].shallow_clone()));
        }
        out.push(("optimizer_steps".into(), Tensor::from(self.taken as i64)));
        out
    }

    /// Restores member `k`'s state from tensors written by [`Adam::member_state`]; every entry
    /// must be present with the right shape.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] naming the missing or mis-shaped entry, or a bad `k`.
    pub fn load_member_state(
        &mut self,
        k: usize,
        state: &[(String, Tensor)],
    ) -> Result<(), TrainError> {
        let find = |key: &str| {
            state
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, t)| t)
                .ok_or_else(|| TrainError::Checkpoint(format!("optimizer state lacks `{key}`")))
        };
        let taken = find("optimizer_steps")?.f_int64_value(&[])?;
        let member = self.members.get_mut(k).ok_or_else(|| {
            TrainError::Checkpoint(format!(
                "optimizer state for member {k}, which does not exist"
            ))
        })?;
        tch::no_grad(|| -> Result<(), TrainError> {
            for (i, p) in member.params.iter().enumerate() {
                for (prefix, dst) in [
                    ("exp_avg", &mut member.exp_avg[i]),
                    ("exp_avg_sq", &mut member.exp_avg_sq[i]),
                    ("step", &mut member.steps[i]),
                ] {
                    let key = format!("{prefix}.{}", p.name());
                    let src = find(&key)?;
                    if src.size() != dst.size() {
                        return Err(TrainError::Checkpoint(format!(
                            "optimizer state `{key}` has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.f_copy_(src)?;
                }
            }
            Ok(())
        })?;
        self.taken = taken.max(0) as u64;
        Ok(())
    }
}

/// Dynamic loss scaling for float16 mixed precision, kept entirely on the device: the scale
/// halves after a step with a non-finite gradient (which is skipped) and doubles after
/// `growth_interval` finite steps in a row, as `torch.amp.GradScaler`.
#[derive(Debug)]
pub struct GradScaler {
    /// Current scale, a float32 scalar tensor.
    pub scale: Tensor,
    /// 1.0 when the last checked gradients had a non-finite value, else 0.0.
    pub found_inf: Tensor,
    growth_tracker: Tensor,
    growth_interval: f64,
}

impl GradScaler {
    /// A scaler starting at `2^16` on `device`, growing every 2000 finite steps.
    pub fn new(device: tch::Device) -> Self {
        let scalar = |v: f64| Tensor::full([], v, (Kind::Float, device));
        Self {
            scale: scalar(65536.0),
            found_inf: scalar(0.0),
            growth_tracker: scalar(0.0),
            growth_interval: 2000.0,
        }
    }

    /// `loss · scale`, to backpropagate instead of `loss`.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * &self.scale
    }

    /// Sets `found_inf` from `grads`.
    ///
    /// # Errors
    /// A libtorch failure (gradients on another device).
    pub fn check(&self, grads: &[&Tensor]) -> Result<(), TrainError> {
        let mut bad = Tensor::zeros([], (Kind::Float, self.scale.device()));
        for g in grads {
            bad += g.f_isfinite()?.logical_not().any().to_kind(Kind::Float);
        }
        let mut found = self.found_inf.shallow_clone();
        found.f_copy_(&bad.clamp_max(1.0))?;
        Ok(())
    }

    /// Adapts the scale after a step.
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn update(&mut self) -> Result<(), TrainError> {
        let ok = 1.0 - &self.found_inf; // 1 when finite
        let tracker = (&self.growth_tracker + 1.0) * &ok;
        let grow = tracker.ge(self.growth_interval).to_kind(Kind::Float);
        let factor = &ok * (1.0 + &grow) + &self.found_inf * 0.5;
        let _ = self.scale.f_mul_(&factor)?;
        self.growth_tracker.f_copy_(&(tracker * (1.0 - grow)))?;
        Ok(())
    }
}

/// The unfused Adam/AdamW update of one parameter, exactly as `torch.optim.Adam`'s
/// single-tensor path writes it. `step` is the 1-based step number. Used as the reference twin of
/// [`Adam::step`].
pub fn reference_step(
    param: &mut Tensor,
    grad: &Tensor,
    exp_avg: &mut Tensor,
    exp_avg_sq: &mut Tensor,
    step: u64,
    lr: f64,
    cfg: &AdamConfig,
) {
    tch::no_grad(|| {
        let (b1, b2) = cfg.betas;
        let grad = match cfg.kind {
            OptimizerKind::Adam if cfg.weight_decay != 0.0 => grad + &*param * cfg.weight_decay,
            _ => grad.shallow_clone(),
        };
        if cfg.kind == OptimizerKind::Adamw {
            let _ = param.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
        }
        let _ = exp_avg.g_mul_scalar_(b1);
        let _ = exp_avg.g_add_(&(&grad * (1.0 - b1)));
        let _ = exp_avg_sq.g_mul_scalar_(b2);
        let _ = exp_avg_sq.g_add_(&(&grad * &grad * (1.0 - b2)));
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        let denom = exp_avg_sq.sqrt() / bc2.sqrt() + cfg.eps;
        let _ = param.g_sub_(&(&*exp_avg / denom * (lr / bc1)));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn warmup_is_linear_then_constant() {
        assert_eq!(lr_at(1.0, 0, 1), 1.0);
        assert_eq!(lr_at(1.0, 4, 1), 0.25);
        assert_eq!(lr_at(1.0, 4, 3), 0.75);
        assert_eq!(lr_at(1.0, 4, 4), 1.0);
        assert_eq!(lr_at(1.0, 4, 100), 1.0);
    }

    /// The device of the CUDA tests; without one they fail, saying so.
    fn cuda() -> Device {
        crate::train::select_device(crate::DeviceChoice::Cuda).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The fused kernel on `device` against the reference formula on the CPU, from the same
    /// start and gradients (drawn on the CPU).
    fn fused_matches_reference(kind: OptimizerKind, device: Device) {
        let _rng = crate::tests_rng_lock();
        tch::manual_seed(11);
        let cfg = AdamConfig::new(kind, 0.1);
        let shapes: [&[i64]; 3] = [&[5, 3], &[7], &[2, 2, 2]];
        let params: Vec<(String, Tensor)> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    format!("p{i}"),
                    Tensor::randn(*s, (Kind::Float, Device::Cpu))
                        .to_device(device)
                        .set_requires_grad(true),
                )
            })
            .collect();
        let mut refs: Vec<(Tensor, Tensor, Tensor)> = params
            .iter()
            .map(|(_, p)| {
                let p = p.detach().to_device(Device::Cpu).copy();
                (p.copy(), p.zeros_like(), p.zeros_like())
            })
            .collect();
        let mut opt = Adam::single(
            params
                .iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect(),
            cfg,
        );
        for step in 1..=4u64 {
            opt.zero_grad().unwrap();
            let grads: Vec<Tensor> = params
                .iter()
                .map(|(_, p)| Tensor::randn(p.size(), (Kind::Float, Device::Cpu)))
                .collect();
            let loss: Tensor = params
                .iter()
                .zip(&grads)
                .map(|((_, p), g)| (p * g.to_device(device)).sum(Kind::Float))
                .sum();
            loss.backward();
            let lr = 0.05 * step as f64;
            opt.step(&[lr], None).unwrap();
            for ((p, m, v), g) in refs.iter_mut().zip(&grads) {
                reference_step(p, g, m, v, step, lr, &cfg);
            }
        }
        for ((name, p), (r, _, _)) in params.iter().zip(&refs) {
            let d = (p.to_device(Device::Cpu) - r).abs().max().double_value(&[]);
            assert!(
                d < 1e-6,
                "{kind:?} {name}: fused and reference differ by {d:e}"
            );
        }
        assert_eq!(opt.steps(), 4);
    }

    #[test]
    fn fused_adam_matches_the_reference_formula() {
        fused_matches_reference(OptimizerKind::Adam, Device::Cpu);
    }

    #[test]
    fn fused_adamw_matches_the_reference_formula() {
        fused_matches_reference(OptimizerKind::Adamw, Device::Cpu);
    }

    #[test]
    #[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
    fn on_cuda_fused_adam_matches_the_reference_formula() {
        fused_matches_reference(OptimizerKind::Adam, cuda());
    }

    #[test]
    #[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
    fn on_cuda_fused_adamw_matches_the_reference_formula() {
        fused_matches_reference(OptimizerKind::Adamw, cuda());
    }

    /// A scaled step equals the plain one; a step with an infinite gradient changes neither the
    /// weights nor Adam's step counter, and halves the scale.
    fn loss_scaling_skips_non_finite_steps(device: Device) {
        let cfg = AdamConfig::new(OptimizerKind::Adam, 0.0);
        let make = || {
            Tensor::from_slice(&[1.0f32, -2.0, 3.0])
                .to_device(device)
                .set_requires_grad(true)
        };
        let (p, q) = (make(), make());
        let mut plain = Adam::single(vec![("w".into(), p.shallow_clone())], cfg);
        let mut scaled = Adam::single(vec![("w".into(), q.shallow_clone())], cfg);
        let mut scaler = GradScaler::new(device);
        let target = Tensor::from_slice(&[0.5f32, 0.5, 0.5]).to_device(device);
        (&p - &target).square().sum(Kind::Float).backward();
        plain.step(&[0.1], None).unwrap();
        scaler
            .scale_loss(&(&q - &target).square().sum(Kind::Float))
            .backward();
        scaled
            .step(&[0.1], Some(std::slice::from_mut(&mut scaler)))
            .unwrap();
        assert!(p.allclose(&q, 1e-6, 1e-7, false), "{p} vs {q}");
        assert_eq!(scaler.scale.double_value(&[]), 65536.0);

        // An infinite gradient: weights unchanged, scale halved.
        let before = q.detach().copy();
        scaled.zero_grad().unwrap();
        (&q * f64::INFINITY).sum(Kind::Float).backward();
        scaled
            .step(&[0.1], Some(std::slice::from_mut(&mut scaler)))
            .unwrap();
        assert!(
            q.equal(&before),
            "a non-finite step must not change the weights"
        );
        // Nor the step counter: the next good step is Adam's second, as in PyTorch.
        let step = |opt: &Adam| {
            opt.member_state(0)
                .iter()
                .find(|(n, _)| n == "step.w")
                .map(|(_, t)| t.double_value(&[]))
        };
        assert_eq!(step(&scaled), Some(1.0));
        assert_eq!(scaler.found_inf.double_value(&[]), 1.0);
        assert_eq!(scaler.scale.double_value(&[]), 32768.0);

        // The next finite step is Adam's second: the same update as an unscaled second step.
        plain.zero_grad().unwrap();
        (&p - &target).square().sum(Kind::Float).backward();
        plain.step(&[0.1], None).unwrap();
        scaled.zero_grad().unwrap();
        scaler
            .scale_loss(&(&q - &target).square().sum(Kind::Float))
            .backward();
        scaled
            .step(&[0.1], Some(std::slice::from_mut(&mut scaler)))
            .unwrap();
        assert!(p.allclose(&q, 1e-6, 1e-7, false), "{p} vs {q}");
        assert_eq!(step(&scaled), Some(2.0));
        assert_eq!(step(&plain), Some(2.0));
        assert_eq!(scaler.found_inf.double_value(&[]), 0.0);
    }

    #[test]
    fn loss_scaling_gives_the_unscaled_update_and_skips_non_finite_steps() {
        loss_scaling_skips_non_finite_steps(Device::Cpu);
    }

    #[test]
    #[ignore = "needs a CUDA device; run by scripts/device-check.sh"]
    fn on_cuda_loss_scaling_skips_an_overflow_step_without_advancing_adam() {
        loss_scaling_skips_non_finite_steps(cuda());
    }

    #[test]
    fn state_round_trip() {
        let p = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Adam::single(
            vec![("w".into(), p.shallow_clone())],
            AdamConfig::new(OptimizerKind::Adam, 0.0),
        );
        (&p * 2.0).sum(Kind::Float).backward();
        opt.step(&[0.1], None).unwrap();
        let state = opt.member_state(0);
        let q = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut other = Adam::single(
            vec![("w".into(), q)],
            AdamConfig::new(OptimizerKind::Adam, 0.0),
        );
        other.load_member_state(0, &state).unwrap();
        assert_eq!(other.steps(), 1);
        let exp_avg = &other.member_state(0)[0].1;
        assert!(exp_avg.allclose(
            &Tensor::full([3], 0.2, (Kind::Float, Device::Cpu)),
            1e-6,
            1e-7,
            false
        ));
        let mut wrong = Adam::single(
            vec![("w".into(), Tensor::ones([4], (Kind::Float, Device::Cpu)))],
            AdamConfig::new(OptimizerKind::Adam, 0.0),
        );
        assert!(wrong.load_member_state(0, &state).is_err());
        assert!(other.load_member_state(1, &state).is_err());
    }
}
