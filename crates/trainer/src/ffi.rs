//! Safe wrappers over the C++ shim (`csrc/shim.cpp`): the libtorch calls tch does not bind, and
//! the draws of PyTorch's data loading.
//!
//! Every shim function catches all C++ exceptions and reports them as text; here they become
//! [`TrainError::Optimizer`] (optimiser calls) or [`TrainError::Rng`] (generator calls). Tensors
//! cross as the `at::Tensor*` handles tch wraps: the shim mutates what they point to (parameters,
//! moments, step counters, gradients, the generator) even where Rust holds them as `&Tensor`,
//! which is what tch's own in-place methods do too.

use std::ffi::c_char;

use tch::Tensor;

use crate::TrainError;

unsafe extern "C" {
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
    fn trainer_single_tensor_adam(
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
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn trainer_clear_grads(
        params: *mut *mut torch_sys::C_tensor,
        n: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn trainer_cpu_rng_state(
        out: *mut *mut torch_sys::C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn trainer_set_cpu_rng_state(
        state: *mut torch_sys::C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn trainer_randperm(
        n: i64,
        seed: u64,
        out: *mut *mut torch_sys::C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// A buffer for the shim's error text.
struct ErrBuf(Vec<c_char>);

impl ErrBuf {
    fn new() -> Self {
        Self(vec![0; 512])
    }

    fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr()
    }

    /// `Ok` for a zero return code, else the message the shim wrote.
    fn check(&self, rc: i32) -> Result<(), String> {
        if rc == 0 {
            return Ok(());
        }
        let bytes: Vec<u8> = self
            .0
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        Err(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn handles(ts: &[&Tensor]) -> Vec<*mut torch_sys::C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut _).collect()
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
    /// Step counters (float32 scalars), already incremented for this step; with a loss scale
    /// they are decremented again when the step is skipped.
    pub steps: &'a [&'a Tensor],
}

/// Hyper-parameters of one fused call.
#[derive(Debug, Clone, Copy)]
pub struct FusedHyper {
    /// Learning rate.
    pub lr: f64,
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// λ.
    pub weight_decay: f64,
    /// ε.
    pub eps: f64,
    /// AdamW (decoupled decay) rather than Adam (coupled L2).
    pub decoupled: bool,
}

/// One call into libtorch's fused Adam/AdamW kernel over `group`; with `scale` = (loss scale,
/// found_inf), the gradients are divided by the scale and a step with `found_inf` ≠ 0 changes
/// nothing (its step counters are taken back).
///
/// # Errors
/// [`TrainError::Optimizer`] when the lists differ in length or libtorch rejects the update.
pub fn fused_adam(
    group: &FusedGroup<'_>,
    hyper: FusedHyper,
    scale: Option<(&Tensor, &Tensor)>,
) -> Result<(), TrainError> {
    let ([mut p, mut g, mut m, mut v, mut s], n) = group.handles("fused Adam")?;
    let (scale_ptr, inf_ptr) = match scale {
        Some((sc, inf)) => (sc.as_ptr() as *mut _, inf.as_ptr() as *mut _),
        None => (std::ptr::null_mut(), std::ptr::null_mut()),
    };
    let mut err = ErrBuf::new();
    // SAFETY: every pointer is a live `at::Tensor*` borrowed by `group` or `scale` for the
    // duration of the call (the kernel mutates parameters, moments and step counters through
    // them); the five arrays hold `n` entries each (checked above); `err` has 512 bytes and the
    // shim writes a NUL-terminated string within them.
    let rc = unsafe {
        trainer_fused_adam(
            p.as_mut_ptr(),
            g.as_mut_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            s.as_mut_ptr(),
            n,
            hyper.lr,
            hyper.betas.0,
            hyper.betas.1,
            hyper.weight_decay,
            hyper.eps,
            i32::from(hyper.decoupled),
            scale_ptr,
            inf_ptr,
            err.ptr(),
            512,
        )
    };
    err.check(rc).map_err(TrainError::Optimizer)
}

/// One step of PyTorch's unfused single-tensor Adam/AdamW over `group` (what
/// `torch.optim.Adam` runs on the CPU by default), operation for operation. Unlike
/// [`fused_adam`], whose caller increments the step counters, it increments them itself, as
/// PyTorch's does. No loss scaling.
///
/// # Errors
/// [`TrainError::Optimizer`] when the lists differ in length or libtorch rejects the update.
pub fn single_tensor_adam(group: &FusedGroup<'_>, hyper: FusedHyper) -> Result<(), TrainError> {
    let ([mut p, mut g, mut m, mut v, mut s], n) = group.handles("single-tensor Adam")?;
    let mut err = ErrBuf::new();
    // SAFETY: as in `fused_adam`: live `at::Tensor*` handles borrowed by `group` for the call,
    // `n` entries in each array (checked above), a 512-byte error buffer.
    let rc = unsafe {
        trainer_single_tensor_adam(
            p.as_mut_ptr(),
            g.as_mut_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            s.as_mut_ptr(),
            n,
            hyper.lr,
            hyper.betas.0,
            hyper.betas.1,
            hyper.weight_decay,
            hyper.eps,
            i32::from(hyper.decoupled),
            err.ptr(),
            512,
        )
    };
    err.check(rc).map_err(TrainError::Optimizer)
}

impl FusedGroup<'_> {
    /// The raw handles of the five lists (parameters, gradients, first and second moments, step
    /// counters) and their common length, for one shim call; `what` names the optimiser in the
    /// error.
    ///
    /// # Errors
    /// [`TrainError::Optimizer`] when the lists differ in length.
    fn handles(&self, what: &str) -> Result<(Handles, usize), TrainError> {
        let n = self.params.len();
        let lists = [self.grads, self.exp_avgs, self.exp_avg_sqs, self.steps];
        if lists.iter().any(|l| l.len() != n) {
            return Err(TrainError::Optimizer(format!(
                "{what}: {n} parameters but {:?} gradients/moments/steps",
                lists.map(<[&Tensor]>::len)
            )));
        }
        Ok((
            [
                handles(self.params),
                handles(self.grads),
                handles(self.exp_avgs),
                handles(self.exp_avg_sqs),
                handles(self.steps),
            ],
            n,
        ))
    }
}

/// Parameters, gradients, first moments, second moments and step counters as raw handles.
type Handles = [Vec<*mut torch_sys::C_tensor>; 5];

/// A seed as PyTorch's data loading draws one from the default CPU generator:
/// `torch.empty((), dtype=torch.int64).random_().item()`, a number in `[0, 2^63)` (the
/// `_base_seed` of every `DataLoader` iterator, and the seed of a `RandomSampler` without a
/// generator of its own).
///
/// # Errors
/// [`TrainError::Rng`] when libtorch fails.
pub fn draw_loader_seed() -> Result<u64, TrainError> {
    let mut t = Tensor::f_empty([], (tch::Kind::Int64, tch::Device::Cpu))
        .map_err(|e| TrainError::Rng(e.to_string()))?;
    let v = t
        .f_random_()
        .and_then(|t| t.f_int64_value(&[]))
        .map_err(|e| TrainError::Rng(e.to_string()))?;
    u64::try_from(v).map_err(|_| TrainError::Rng(format!("a negative loader seed {v}")))
}

/// Drops the gradients of `params` (PyTorch's `zero_grad(set_to_none=True)`).
///
/// # Errors
/// [`TrainError::Optimizer`] when libtorch fails (it does not for live leaf tensors).
pub fn clear_grads<'a>(params: impl IntoIterator<Item = &'a Tensor>) -> Result<(), TrainError> {
    let params: Vec<&Tensor> = params.into_iter().collect();
    let mut ptrs = handles(&params);
    let mut err = ErrBuf::new();
    // SAFETY: every pointer is a live `at::Tensor*` borrowed for the duration of the call; the
    // shim only resets each tensor's gradient.
    let rc = unsafe { trainer_clear_grads(ptrs.as_mut_ptr(), ptrs.len(), err.ptr(), 512) };
    err.check(rc).map_err(TrainError::Optimizer)
}

/// The state of libtorch's default CPU generator (`torch.get_rng_state()`), a uint8 tensor.
///
/// # Errors
/// [`TrainError::Rng`] when libtorch fails.
pub fn cpu_rng_state() -> Result<Tensor, TrainError> {
    let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
    let mut err = ErrBuf::new();
    // SAFETY: `out` is a valid place for the shim to store a new `at::Tensor*`, which it does
    // only on success; `err` as in `fused_adam`.
    let rc = unsafe { trainer_cpu_rng_state(&mut out, err.ptr(), 512) };
    err.check(rc).map_err(TrainError::Rng)?;
    // SAFETY: on success the shim stored a heap-allocated `at::Tensor` that nothing else owns.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Restores a state read by [`cpu_rng_state`] (`torch.set_rng_state`).
///
/// # Errors
/// [`TrainError::Rng`] when libtorch rejects the state (wrong size or kind).
pub fn set_cpu_rng_state(state: &Tensor) -> Result<(), TrainError> {
    let mut err = ErrBuf::new();
    // SAFETY: `state` is a live `at::Tensor*` for the duration of the call, only read; `err` as
    // in `fused_adam`.
    let rc = unsafe { trainer_set_cpu_rng_state(state.as_ptr() as *mut _, err.ptr(), 512) };
    err.check(rc).map_err(TrainError::Rng)
}

/// `torch.randperm(n, generator=g)` with `g` a fresh CPU generator seeded with `seed`: a
/// permutation of `0..n` (int64, CPU).
///
/// # Errors
/// [`TrainError::Rng`] when libtorch fails (e.g. a negative `n`).
pub fn randperm(n: i64, seed: u64) -> Result<Tensor, TrainError> {
    let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
    let mut err = ErrBuf::new();
    // SAFETY: as in `cpu_rng_state`.
    let rc = unsafe { trainer_randperm(n, seed, &mut out, err.ptr(), 512) };
    err.check(rc).map_err(TrainError::Rng)?;
    // SAFETY: as in `cpu_rng_state`.
    Ok(unsafe { Tensor::from_ptr(out) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn generator_state_round_trips() {
        let _rng = crate::tests_rng_lock();
        tch::manual_seed(5);
        let state = cpu_rng_state().unwrap();
        let a = Tensor::rand([4], (Kind::Float, Device::Cpu));
        set_cpu_rng_state(&state).unwrap();
        let b = Tensor::rand([4], (Kind::Float, Device::Cpu));
        assert!(a.equal(&b));
        let bad = Tensor::zeros([3], (Kind::Uint8, Device::Cpu));
        assert!(
            set_cpu_rng_state(&bad).is_err(),
            "a wrong state is an error, not a crash"
        );
    }

    #[test]
    fn randperm_is_a_seeded_permutation() {
        let a = Vec::<i64>::try_from(randperm(10, 7).unwrap()).unwrap();
        let b = Vec::<i64>::try_from(randperm(10, 7).unwrap()).unwrap();
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert!(randperm(-1, 0).is_err());
    }
}
