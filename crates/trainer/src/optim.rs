//! Adam and AdamW with PyTorch's semantics, and the learning-rate schedule.
//!
//! - [`Adam`] keeps `exp_avg`, `exp_avg_sq` and a step counter per parameter and updates all
//!   parameters in one call into libtorch's fused kernel (one pass over each tensor instead of
//!   about ten elementwise kernels), which is where a step of this small model spends its time.
//! - [`reference_step`] is the plain, unfused formula of `torch.optim.Adam`/`AdamW`, used in tests
//!   to check the fused path.
//! - [`lr_at`] is the schedule: linear warm-up then constant.
//!
//! Weight decay: `Adam` couples it as an L2 term (`g ← g + λ·p`), as `torch.optim.Adam` does;
//! `AdamW` decays the weights directly (`p ← p·(1 − lr·λ)`).

use std::ffi::c_char;

use tch::{Kind, Tensor};

use crate::TrainError;
use crate::config::OptimizerKind;

unsafe extern "C" {
    fn trainer_clear_grads(params: *mut *mut torch_sys::C_tensor, n: usize);

    fn trainer_fused_adam(
        params: *mut *mut torch_sys::C_tensor,
        grads: *mut *mut torch_sys::C_tensor,
        exp_avgs: *mut *mut torch_sys::C_tensor,
        exp_avg_sqs: *mut *mut torch_sys::C_tensor,
        state_steps: *mut *mut torch_sys::C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        decoupled: i32,
        grad_scale: *mut torch_sys::C_tensor,
        found_inf: *mut torch_sys::C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// Learning rate of optimiser step `step` (1-based): `lr·step/warmup` during the warm-up, then
/// `lr`.
pub fn lr_at(lr: f64, warmup_steps: usize, step: u64) -> f64 {
    if warmup_steps == 0 || step >= warmup_steps as u64 {
        lr
    } else {
        lr * step as f64 / warmup_steps as f64
    }
}

/// Hyper-parameters of [`Adam`].
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
}

impl AdamConfig {
    /// PyTorch's defaults with the given kind and weight decay.
    pub fn new(kind: OptimizerKind, weight_decay: f64) -> Self {
        Self {
            kind,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
        }
    }
}

/// The state of one parameter.
#[derive(Debug)]
struct Slot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Step counter as a float32 scalar tensor on the parameter's device, as the fused kernel
    /// reads it.
    step: Tensor,
}

/// Adam/AdamW over a fixed list of named parameters.
#[derive(Debug)]
pub struct Adam {
    cfg: AdamConfig,
    slots: Vec<Slot>,
    steps: u64,
}

impl Adam {
    /// An optimiser over `params` (name, tensor) with zeroed moments.
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamConfig) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, param)| Slot {
                exp_avg: param.zeros_like(),
                exp_avg_sq: param.zeros_like(),
                step: Tensor::zeros([], (Kind::Float, param.device())),
                name,
                param,
            })
            .collect();
        Self {
            cfg,
            slots,
            steps: 0,
        }
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Drops every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`): the next
    /// backward pass stores fresh gradients instead of adding into zeroed buffers, one pass less
    /// over each gradient. (With glibc's default thresholds the fresh multi-MiB allocations
    /// fault their pages in every step and cost more than they save: see
    /// [`crate::tune_allocator`], which [`crate::run`] applies.)
    pub fn zero_grad(&mut self) {
        clear_grads(self.slots.iter().map(|s| &s.param));
    }

    /// One update with learning rate `lr` from the gradients accumulated in the parameters.
    /// Parameters without a gradient are skipped, as in PyTorch.
    ///
    /// # Errors
    /// [`TrainError::Optimizer`] when libtorch rejects the update (for example tensors on mixed
    /// devices).
    pub fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        self.step_scaled(lr, None)
    }

    /// One update from gradients of a loss multiplied by `scaler.scale` (mixed precision): the
    /// kernel divides the gradients by the scale, and when any of them is not finite skips the
    /// update of the weights and moments; the scaler then adapts, all on the device.
    pub fn step_scaled(
        &mut self,
        lr: f64,
        scaler: Option<&mut GradScaler>,
    ) -> Result<(), TrainError> {
        self.steps += 1;
        let mut grads = Vec::with_capacity(self.slots.len());
        let mut active = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            let grad = slot.param.grad();
            if grad.defined() {
                grads.push(grad);
                active.push(i);
            }
        }
        if active.is_empty() {
            return Ok(());
        }
        tch::no_grad(|| -> Result<(), TrainError> {
            // The kernel reads the step counter; PyTorch increments it just before the call.
            for &i in &active {
                let _ = self.slots[i].step.g_add_scalar_(1.0);
            }
            let pick = |f: fn(&Slot) -> &Tensor| -> Vec<&Tensor> {
                active.iter().map(|&i| f(&self.slots[i])).collect()
            };
            let grads: Vec<&Tensor> = grads.iter().collect();
            if let Some(s) = &scaler {
                s.check(&grads);
            }
            fused_adam(
                &FusedGroup {
                    params: &pick(|s| &s.param),
                    grads: &grads,
                    exp_avgs: &pick(|s| &s.exp_avg),
                    exp_avg_sqs: &pick(|s| &s.exp_avg_sq),
                    steps: &pick(|s| &s.step),
                },
                lr,
                &self.cfg,
                scaler.as_deref(),
            )?;
            if let Some(s) = scaler {
                s.update();
            }
            Ok(())
        })
    }

    /// The optimiser state as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`,
    /// `step.<name>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.slots.len() + 1);
        for s in &self.slots {
            out.push((format!("exp_avg.{}", s.name), s.exp_avg.shallow_clone()));
            out.push((
                format!("exp_avg_sq.{}", s.name),
                s.exp_avg_sq.shallow_clone(),
            ));
            out.push((format!("step.{}", s.name), s.step.shallow_clone()));
        }
        out.push(("optimizer_steps".into(), Tensor::from(self.steps as i64)));
        out
    }

    /// Restores a state written by [`Adam::state`]; every entry must be present with the right
    /// shape.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), TrainError> {
        let find = |key: &str| {
            state
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, t)| t)
                .ok_or_else(|| TrainError::Checkpoint(format!("optimizer state lacks `{key}`")))
        };
        tch::no_grad(|| -> Result<(), TrainError> {
            for s in &mut self.slots {
                for (prefix, dst) in [
                    ("exp_avg", &mut s.exp_avg),
                    ("exp_avg_sq", &mut s.exp_avg_sq),
                    ("step", &mut s.step),
                ] {
                    let key = format!("{prefix}.{}", s.name);
                    let src = find(&key)?;
                    if src.size() != dst.size() {
                        return Err(TrainError::Checkpoint(format!(
                            "optimizer state `{key}` has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.copy_(src);
                }
            }
            Ok(())
        })?;
        self.steps = find("optimizer_steps")?.int64_value(&[]) as u64;
        Ok(())
    }
}

/// Drops the gradients of `params` (PyTorch's `zero_grad(set_to_none=True)`).
pub fn clear_grads<'a>(params: impl IntoIterator<Item = &'a Tensor>) {
    let mut ptrs: Vec<*mut torch_sys::C_tensor> =
        params.into_iter().map(|p| p.as_ptr() as *mut _).collect();
    // SAFETY: every pointer is a live `at::Tensor*` borrowed for the duration of the call; the
    // shim only resets each tensor's gradient.
    unsafe { trainer_clear_grads(ptrs.as_mut_ptr(), ptrs.len()) };
}

/// The tensors of one fused optimiser call: parameters with their gradients, moments and step
/// counters, index by index.
#[derive(Debug)]
pub struct FusedGroup<'a> {
    /// Parameters, updated in place.
    pub params: &'a [&'a Tensor],
    /// Their gradients.
    pub grads: &'a [&'a Tensor],
    /// First moments, updated in place.
    pub exp_avgs: &'a [&'a Tensor],
    /// Second moments, updated in place.
    pub exp_avg_sqs: &'a [&'a Tensor],
    /// Step counters (float32 scalars), already incremented for this step.
    pub steps: &'a [&'a Tensor],
}

/// One call into libtorch's fused Adam/AdamW kernel over `group`, with loss-scale handling when
/// `scaler` is given (its `found_inf` must already be set for these gradients).
///
/// # Errors
/// [`TrainError::Optimizer`] when the lists differ in length or libtorch rejects the update.
pub fn fused_adam(
    group: &FusedGroup<'_>,
    lr: f64,
    cfg: &AdamConfig,
    scaler: Option<&GradScaler>,
) -> Result<(), TrainError> {
    let n = group.params.len();
    let lists = [group.grads, group.exp_avgs, group.exp_avg_sqs, group.steps];
    if lists.iter().any(|l| l.len() != n) {
        return Err(TrainError::Optimizer(format!(
            "fused Adam: {n} parameters but {:?} gradients/moments/steps",
            lists.map(<[&Tensor]>::len)
        )));
    }
    let ptrs = |ts: &[&Tensor]| -> Vec<*mut torch_sys::C_tensor> {
        ts.iter().map(|t| t.as_ptr() as *mut _).collect()
    };
    let (mut p, mut g, mut m, mut v, mut s) = (
        ptrs(group.params),
        ptrs(group.grads),
        ptrs(group.exp_avgs),
        ptrs(group.exp_avg_sqs),
        ptrs(group.steps),
    );
    let (scale_ptr, inf_ptr) = match scaler {
        Some(sc) => (sc.scale.as_ptr() as *mut _, sc.found_inf.as_ptr() as *mut _),
        None => (std::ptr::null_mut(), std::ptr::null_mut()),
    };
    let mut err = vec![0 as c_char; 512];
    // SAFETY: every pointer is a live `at::Tensor*` borrowed by `group` or `scaler` for the
    // duration of the call; the five arrays hold `n` entries each (checked above); `err` has
    // `err.len()` bytes and the shim writes a NUL-terminated string within them.
    let rc = unsafe {
        trainer_fused_adam(
            p.as_mut_ptr(),
            g.as_mut_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            s.as_mut_ptr(),
            n,
            lr,
            cfg.betas.0,
            cfg.betas.1,
            cfg.weight_decay,
            cfg.eps,
            i32::from(cfg.kind == OptimizerKind::Adamw),
            scale_ptr,
            inf_ptr,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        let bytes: Vec<u8> = err
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        return Err(TrainError::Optimizer(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    Ok(())
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
    pub fn check(&self, grads: &[&Tensor]) {
        let mut bad = Tensor::zeros([], (Kind::Float, self.scale.device()));
        for g in grads {
            bad += g.isfinite().logical_not().any().to_kind(Kind::Float);
        }
        let mut found = self.found_inf.shallow_clone();
        found.copy_(&bad.clamp_max(1.0));
    }

    /// Adapts the scale after a step.
    pub fn update(&mut self) {
        let ok = 1.0 - &self.found_inf; // 1 when finite
        let tracker = (&self.growth_tracker + 1.0) * &ok;
        let grow = tracker.ge(self.growth_interval).to_kind(Kind::Float);
        let factor = &ok * (1.0 + &grow) + &self.found_inf * 0.5;
        let _ = self.scale.g_mul_(&factor);
        self.growth_tracker.copy_(&(tracker * (1.0 - grow)));
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

    fn fused_matches_reference(kind: OptimizerKind) {
        tch::manual_seed(11);
        let cfg = AdamConfig::new(kind, 0.1);
        let shapes: [&[i64]; 3] = [&[5, 3], &[7], &[2, 2, 2]];
        let params: Vec<(String, Tensor)> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    format!("p{i}"),
                    Tensor::randn(*s, (Kind::Float, Device::Cpu)).set_requires_grad(true),
                )
            })
            .collect();
        let mut refs: Vec<(Tensor, Tensor, Tensor)> = params
            .iter()
            .map(|(_, p)| (p.detach().copy(), p.zeros_like(), p.zeros_like()))
            .collect();
        let mut opt = Adam::new(
            params
                .iter()
                .map(|(n, p)| (n.clone(), p.shallow_clone()))
                .collect(),
            cfg,
        );
        for step in 1..=4u64 {
            opt.zero_grad();
            let grads: Vec<Tensor> = params.iter().map(|(_, p)| Tensor::randn_like(p)).collect();
            let loss: Tensor = params
                .iter()
                .zip(&grads)
                .map(|((_, p), g)| (p * g).sum(Kind::Float))
                .sum();
            loss.backward();
            let lr = 0.05 * step as f64;
            opt.step(lr).unwrap();
            for ((p, m, v), g) in refs.iter_mut().zip(&grads) {
                reference_step(p, g, m, v, step, lr, &cfg);
            }
        }
        for ((name, p), (r, _, _)) in params.iter().zip(&refs) {
            let d = (p - r).abs().max().double_value(&[]);
            assert!(
                d < 1e-6,
                "{kind:?} {name}: fused and reference differ by {d:e}"
            );
        }
        assert_eq!(opt.steps(), 4);
    }

    #[test]
    fn fused_adam_matches_the_reference_formula() {
        fused_matches_reference(OptimizerKind::Adam);
    }

    #[test]
    fn fused_adamw_matches_the_reference_formula() {
        fused_matches_reference(OptimizerKind::Adamw);
    }

    #[test]
    fn loss_scaling_gives_the_unscaled_update_and_skips_non_finite_steps() {
        let cfg = AdamConfig::new(OptimizerKind::Adam, 0.0);
        let make = || Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let (p, q) = (make(), make());
        let mut plain = Adam::new(vec![("w".into(), p.shallow_clone())], cfg);
        let mut scaled = Adam::new(vec![("w".into(), q.shallow_clone())], cfg);
        let mut scaler = GradScaler::new(Device::Cpu);
        let target = Tensor::from_slice(&[0.5f32, 0.5, 0.5]);
        (&p - &target).square().sum(Kind::Float).backward();
        plain.step(0.1).unwrap();
        scaler
            .scale_loss(&(&q - &target).square().sum(Kind::Float))
            .backward();
        scaled.step_scaled(0.1, Some(&mut scaler)).unwrap();
        assert!(p.allclose(&q, 1e-6, 1e-7, false), "{p} vs {q}");
        assert_eq!(scaler.scale.double_value(&[]), 65536.0);

        // An infinite gradient: weights unchanged, scale halved.
        let before = q.detach().copy();
        scaled.zero_grad();
        (&q * f64::INFINITY).sum(Kind::Float).backward();
        scaled.step_scaled(0.1, Some(&mut scaler)).unwrap();
        assert!(
            q.equal(&before),
            "a non-finite step must not change the weights"
        );
        assert_eq!(scaler.found_inf.double_value(&[]), 1.0);
        assert_eq!(scaler.scale.double_value(&[]), 32768.0);
    }

    #[test]
    fn state_round_trip() {
        let p = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Adam::new(
            vec![("w".into(), p.shallow_clone())],
            AdamConfig::new(OptimizerKind::Adam, 0.0),
        );
        (&p * 2.0).sum(Kind::Float).backward();
        opt.step(0.1).unwrap();
        let state = opt.state();
        let q = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut other = Adam::new(
            vec![("w".into(), q)],
            AdamConfig::new(OptimizerKind::Adam, 0.0),
        );
        other.load_state(&state).unwrap();
        assert_eq!(other.steps(), 1);
        let exp_avg = &other.state()[0].1;
        assert!(exp_avg.allclose(
            &Tensor::full([3], 0.2, (Kind::Float, Device::Cpu)),
            1e-6,
            1e-7,
            false
        ));
        let mut wrong = Adam::new(
            vec![("w".into(), Tensor::ones([4], (Kind::Float, Device::Cpu)))],
            AdamConfig::new(OptimizerKind::Adam, 0.0),
        );
        assert!(wrong.load_state(&state).is_err());
    }
}
