// One call into libtorch's fused Adam/AdamW kernels (`at::_fused_adam_`, `at::_fused_adamw_`),
// which tch does not bind: a whole optimiser step in a single pass over each parameter, instead
// of about ten elementwise kernels per parameter.
//
// Tensors arrive as the `at::Tensor*` handles tch wraps. Errors are caught here (a C++
// exception must not unwind into Rust) and returned as text.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>

#include <cstdio>
#include <optional>
#include <exception>
#include <vector>

extern "C" int trainer_fused_adam(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                                  at::Tensor **exp_avg_sqs, at::Tensor **state_steps, size_t n,
                                  double lr, double beta1, double beta2, double weight_decay,
                                  double eps, int decoupled, at::Tensor *grad_scale,
                                  at::Tensor *found_inf, char *err, size_t err_len) {
  try {
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
    // With loss scaling the kernel divides the gradients by `grad_scale` and leaves everything
    // untouched when `found_inf` is non-zero, without a host synchronisation.
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
    return 0;
  } catch (const std::exception &e) {
    if (err != nullptr && err_len > 0) {
      std::snprintf(err, err_len, "%s", e.what());
    }
    return 1;
  }
}

// Drops the gradients of `params` (PyTorch's `zero_grad(set_to_none=True)`): the next backward
// pass then stores its fresh gradient tensors instead of adding them into zeroed buffers, which
// saves a zeroing pass and an accumulation pass over every gradient per step.
extern "C" void trainer_clear_grads(at::Tensor **params, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    params[i]->mutable_grad().reset();
  }
}
