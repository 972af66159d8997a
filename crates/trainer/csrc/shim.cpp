// The few libtorch calls the trainer needs that tch does not bind:
// - one call into the fused Adam/AdamW kernels (`at::_fused_adam_`, `at::_fused_adamw_`): a whole
//   optimiser step in a single pass over each parameter, instead of about ten elementwise kernels;
// - PyTorch's unfused single-tensor Adam/AdamW, operation for operation (the original's optimiser
//   on the CPU, for runs on its random stream);
// - dropping gradients (`zero_grad(set_to_none=True)`);
// - reading and restoring the state of libtorch's default CPU generator (exact resume);
// - `randperm` with a private generator seeded by a given seed (PyTorch's `RandomSampler`).
//
// Tensors arrive as the `at::Tensor*` handles tch wraps; the functions below mutate the tensors
// behind them (parameters, moments, step counters, gradients) although Rust holds them as
// `&Tensor`. Every exception is caught here, whatever its type (a C++ exception must not unwind
// into Rust), and returned as text.
#include <ATen/core/Tensor.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/randperm.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <mutex>
#include <optional>
#include <vector>

namespace {

// Runs `body`, turning any exception into a message in `err` and the return value 1.
template <typename F>
int guarded(char *err, size_t err_len, F &&body) {
  try {
    body();
    return 0;
  } catch (const std::exception &e) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", e.what());
  } catch (...) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "unknown C++ exception");
  }
  return 1;
}

}  // namespace

extern "C" int trainer_fused_adam(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                                  at::Tensor **exp_avg_sqs, at::Tensor **state_steps, size_t n,
                                  double lr, double beta1, double beta2, double weight_decay,
                                  double eps, int decoupled, at::Tensor *grad_scale,
                                  at::Tensor *found_inf, char *err, size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> p, g, m, v, s, none;
    p.reserve(n);
    g.reserve(n);
    m.reserve(n);
    v.reserve(n);
    s.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      s.push_back(*state_steps[i]);
    }
    // With loss scaling the kernel divides the gradients by `grad_scale` and leaves the weights
    // and moments untouched when `found_inf` is non-zero, without a host synchronisation.
    std::optional<at::Tensor> scale, inf;
    if (grad_scale != nullptr) scale = *grad_scale;
    if (found_inf != nullptr) inf = *found_inf;
    if (decoupled) {
      at::_fused_adamw_(p, g, m, v, none, s, lr, beta1, beta2, weight_decay, eps,
                        /*amsgrad=*/false, /*maximize=*/false, scale, inf);
    } else {
      at::_fused_adam_(p, g, m, v, none, s, lr, beta1, beta2, weight_decay, eps,
                       /*amsgrad=*/false, /*maximize=*/false, scale, inf);
    }
    // The caller advanced the step counters before the call; a skipped (overflowed) step must
    // not count, so they go back by `found_inf` (0 or 1), on the device, as PyTorch's fused Adam
    // does after its kernel.
    if (inf.has_value()) {
      for (auto &step : s) step.sub_(*inf);
    }
  });
}

// One step of `torch.optim.Adam`/`AdamW`'s single-tensor path (`_single_tensor_adam`, what
// PyTorch runs on the CPU by default), parameter by parameter, in its operations and their
// order: the step counter, the weight decay, `lerp_` into the first moment, `mul_`/`addcmul_`
// into the second, the bias corrections in double precision (`pow` as Python's `**`), then
// `addcdiv_`. The same kernels give the same numbers as the original's optimiser.
extern "C" int trainer_single_tensor_adam(at::Tensor **params, at::Tensor **grads,
                                          at::Tensor **exp_avgs, at::Tensor **exp_avg_sqs,
                                          at::Tensor **state_steps, size_t n, double lr,
                                          double beta1, double beta2, double weight_decay,
                                          double eps, int decoupled, char *err, size_t err_len) {
  return guarded(err, err_len, [&] {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < n; ++i) {
      at::Tensor param = *params[i];
      at::Tensor grad = *grads[i];
      at::Tensor exp_avg = *exp_avgs[i];
      at::Tensor exp_avg_sq = *exp_avg_sqs[i];
      at::Tensor step_t = *state_steps[i];
      step_t.add_(1);
      if (weight_decay != 0) {
        if (decoupled) {
          param.mul_(1 - lr * weight_decay);
        } else {
          grad = grad.add(param, weight_decay);
        }
      }
      exp_avg.lerp_(grad, 1 - beta1);
      exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
      const double step = step_t.item<double>();
      const double bias_correction1 = 1 - std::pow(beta1, step);
      const double bias_correction2 = 1 - std::pow(beta2, step);
      const double step_size = lr / bias_correction1;
      const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
      at::Tensor denom = exp_avg_sq.sqrt().div(bias_correction2_sqrt).add_(eps);
      param.addcdiv_(exp_avg, denom, -step_size);
    }
  });
}

// Drops the gradients of `params` (PyTorch's `zero_grad(set_to_none=True)`): the next backward
// pass then stores its fresh gradient tensors instead of adding them into zeroed buffers, which
// saves a zeroing pass and an accumulation pass over every gradient per step.
extern "C" int trainer_clear_grads(at::Tensor **params, size_t n, char *err, size_t err_len) {
  return guarded(err, err_len, [&] {
    for (size_t i = 0; i < n; ++i) params[i]->mutable_grad().reset();
  });
}

// The state of libtorch's default CPU generator (the byte tensor `torch.get_rng_state()`
// returns), as a new tensor handle in `*out` that the caller owns.
extern "C" int trainer_cpu_rng_state(at::Tensor **out, char *err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    *out = new at::Tensor(gen.get_state());
  });
}

// Restores a state read by `trainer_cpu_rng_state` (`torch.set_rng_state`).
extern "C" int trainer_set_cpu_rng_state(at::Tensor *state, char *err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(*state);
  });
}

// `torch.randperm(n, generator=g)` with `g = torch.Generator(); g.manual_seed(seed)`: int64 on
// the CPU, as a new tensor handle in `*out`.
extern "C" int trainer_randperm(int64_t n, uint64_t seed, at::Tensor **out, char *err,
                                size_t err_len) {
  return guarded(err, err_len, [&] {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    *out = new at::Tensor(at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)));
  });
}
