// nvcc + fmt 9: fmt switches its constexpr support off under nvcc yet keeps consteval
// format-string checks, so neither nvcc nor its host pass compiles <fmt/format.h>
// (fail(), log::*). Switching it back on gives .cu files what g++ units already see.
// Must precede the first fmt include; cuda_backend.h and cuda_check.h include it first.
#pragma once

#if defined(__NVCC__)
#if defined(FMT_VERSION) && !FMT_USE_CONSTEXPR
#error "include kernels/cuda/cuda_backend.h or cuda_check.h before core/error.h, core/log.h"
#endif
#ifndef FMT_USE_CONSTEXPR
#define FMT_USE_CONSTEXPR 1
#endif
#endif
