// The cuBLASLt GEMM wrapper (see gemm.h).
//
// Row-major <-> column-major. cuBLASLt is column-major; a row-major [r,c] buffer read as
// column-major is its transpose, a [c,r] matrix with leading dimension c. So row-major
//   C[m,n] = op(A)[m,k] · op(B)[k,n]
// is computed as the column-major product of the transposes,
//   Cᵀ[n,m] = op(B)ᵀ[n,k] · op(A)ᵀ[k,m],
// i.e. one cublasLtMatmul with the operands swapped and the transpose flags unchanged:
//   cuBLAS "A" = our B buffer, flag tb;  rows×cols of the stored matrix = (B's row-major
//                cols) × (B's row-major rows), ld = B's row-major cols
//   cuBLAS "B" = our A buffer, flag ta;  likewise from A's stored [rows, cols]
//   cuBLAS "C" = "D" = our C buffer: n × m column-major, ld = n
//   column-major sizes M = n, N = m, K = k.
// (A flag carries over unchanged: with ta = N, A's buffer read column-major is Aᵀ = op(A)ᵀ,
// no transpose needed; with ta = T, A is stored [k,m], read column-major it is op(A)ᵀ's
// transpose, so cuBLAS transposes it.) CUBLASLT_EPILOGUE_BIAS adds a vector of length M (the
// rows of column-major D) to every column, i.e. bias[n] to every row of row-major C.
#include <cstdint>
#include <map>
#include <mutex>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/gemm.h"

namespace temper::cuda {

namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default:
      fail("CUDA backend: gemm does not support dtype {} (expected f32, bf16 or f16)",
           dtype_name(t));
  }
}

// Largest power of two (up to 256, cuBLASLt's default assumption) dividing the address.
uint32_t alignment_of(const void* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 1;
  while (a < 256 && u % (uintptr_t(a) * 2) == 0) a *= 2;
  return a;
}

struct PlanKey {
  int device;
  DType dtype;
  Trans ta, tb;
  int64_t m, n, k;
  bool bias;
  uint32_t align_a, align_b, align_c, align_bias;
  auto operator<=>(const PlanKey&) const = default;
};

// Descriptors and algorithm of one GEMM shape. Host-side objects, not tied to a handle
// or a stream; the algorithm was chosen for the key's device.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr;  // cuBLAS "A" = our B
  cublasLtMatrixLayout_t layout_b = nullptr;  // cuBLAS "B" = our A
  cublasLtMatrixLayout_t layout_c = nullptr;  // C and D
  cublasLtMatmulAlgo_t algo{};

  void destroy() noexcept {
    if (layout_c) (void)cublasLtMatrixLayoutDestroy(layout_c);
    if (layout_b) (void)cublasLtMatrixLayoutDestroy(layout_b);
    if (layout_a) (void)cublasLtMatrixLayoutDestroy(layout_a);
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
    *this = Plan{};
  }
};

// Process-wide plan cache (backends on several threads may share it: one mutex, held from
// the lookup through the enqueue, since the bias pointer is set on the cached descriptor).
// Bounded: a run with many distinct shapes (varying token counts) starts over when full.
// Never destroyed (intentionally leaked at exit: no cuBLASLt calls during static teardown).
struct PlanCache {
  std::mutex mutex;
  std::map<PlanKey, Plan> plans;
};
constexpr size_t kMaxPlans = 512;

PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache;
  return *cache;
}

// A row-major [rows, cols] buffer as a column-major [cols, rows] layout with ld = cols.
cublasLtMatrixLayout_t row_major_layout(cudaDataType_t type, int64_t rows, int64_t cols) {
  cublasLtMatrixLayout_t layout = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, uint64_t(cols), uint64_t(rows), cols));
  return layout;
}

// Descriptors and the heuristic's best algorithm for `key`; `bias` is a sample bias
// pointer (the heuristic reads its alignment).
Plan make_plan(const CudaBackend& be, const PlanKey& key, const void* bias) {
  const cudaDataType_t type = cuda_type(key.dtype);
  Plan plan;
  cublasLtMatmulPreference_t pref = nullptr;
  try {
    // fp32 compute and scale for every dtype: plain 32F is IEEE fp32 (TF32 only with
    // CUBLAS_COMPUTE_32F_FAST_TF32), and bf16/f16 inputs accumulate in fp32.
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = key.tb == Trans::T ? CUBLAS_OP_T : CUBLAS_OP_N;  // swapped
    const cublasOperation_t op_b = key.ta == Trans::T ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                                sizeof(op_a)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                                sizeof(op_b)));
    if (key.bias) {
      const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;  // bias dtype defaults to D's
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                  &epilogue, sizeof(epilogue)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                  &bias, sizeof(bias)));
    }
    // Stored (row-major) shapes: B is [k,n] or [n,k]; A is [m,k] or [k,m]; C is [m,n].
    plan.layout_a = key.tb == Trans::N ? row_major_layout(type, key.k, key.n)
                                       : row_major_layout(type, key.n, key.k);
    plan.layout_b = key.ta == Trans::N ? row_major_layout(type, key.m, key.k)
                                       : row_major_layout(type, key.k, key.m);
    plan.layout_c = row_major_layout(type, key.m, key.n);

    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t workspace = CudaBackend::kGemmWorkspaceBytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
    // The operands' real alignments (chunk slices and odd sizes are not 256-byte aligned);
    // note the swap: cuBLAS "A" is our B.
    const uint32_t aligns[4] = {key.align_b, key.align_a, key.align_c, key.align_c};
    const cublasLtMatmulPreferenceAttributes_t align_attrs[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; ++i)
      CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, align_attrs[i], &aligns[i],
                                                        sizeof(aligns[i])));

    cublasLtHandle_t lt = be.cublaslt();
    auto heuristic = [&](uint32_t reduction_mask) {
      CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
          pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction_mask,
          sizeof(reduction_mask)));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, plan.desc, plan.layout_a,
                                                         plan.layout_b, plan.layout_c,
                                                         plan.layout_c, pref, 1, &result, &found);
      if (st == CUBLAS_STATUS_NOT_SUPPORTED) return false;  // no algorithm: found == 0
      CUBLAS_CHECK(st);
      if (found < 1 || result.state != CUBLAS_STATUS_SUCCESS) return false;
      plan.algo = result.algo;
      return true;
    };
    // No split-K, or split-K with fp32 partial sums (INPLACE / OUTPUT_TYPE keep partial sums
    // in the output type: bf16 for bf16); any scheme only if that leaves nothing.
    if (!heuristic(CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE) &&
        !heuristic(CUBLASLT_REDUCTION_SCHEME_MASK))
      fail("CUDA backend: gemm: cuBLASLt has no algorithm for {} C[{},{}] = A{}·B{} with "
           "k = {}{} (alignments A {}, B {}, C {} bytes)",
           dtype_name(key.dtype), key.m, key.n, key.ta == Trans::T ? "^T" : "",
           key.tb == Trans::T ? "^T" : "", key.k, key.bias ? " and a bias" : "", key.align_a,
           key.align_b, key.align_c);
    const cublasStatus_t st = cublasLtMatmulPreferenceDestroy(pref);
    pref = nullptr;
    CUBLAS_CHECK(st);
    return plan;
  } catch (...) {
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
    plan.destroy();
    throw;
  }
}

}  // namespace

void gemm(const CudaBackend& be, DType dtype, int64_t m, int64_t n, int64_t k, const void* a,
          Trans ta, const void* b, Trans tb, void* c, bool accumulate, const void* bias) {
  (void)cuda_type(dtype);  // rejects i32/u8 before anything else
  if (m < 0 || n < 0 || k < 0)
    fail("CUDA backend: gemm: negative size m = {}, n = {}, k = {}", m, n, k);
  if (m == 0 || n == 0) return;
  const auto stream = static_cast<cudaStream_t>(be.stream());
  if (k == 0) {  // the product is 0: C = bias / 0, or C unchanged
    if (accumulate && !bias) return;
    if (bias)
      fail("CUDA backend: gemm: k == 0 with a bias epilogue is not supported (the caller "
           "broadcasts the bias itself)");
    CUDA_CHECK(cudaMemsetAsync(c, 0, size_t(m) * size_t(n) * dtype_size(dtype), stream));
    return;
  }
  if (!a || !b || !c) fail("CUDA backend: gemm: null operand for C[{},{}] (k = {})", m, n, k);

  const PlanKey key{be.device().index,
                    dtype,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    bias != nullptr,
                    alignment_of(a),
                    alignment_of(b),
                    alignment_of(c),
                    bias ? alignment_of(bias) : 0u};
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  auto it = cache.plans.find(key);
  if (it == cache.plans.end()) {
    Plan plan = make_plan(be, key, bias);
    if (cache.plans.size() >= kMaxPlans) {
      for (auto& [_, p] : cache.plans) p.destroy();  // descriptors are read at enqueue only
      cache.plans.clear();
    }
    it = cache.plans.emplace(key, plan).first;
  }
  Plan& plan = it->second;
  if (bias)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                &bias, sizeof(bias)));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;  // scale type f32
  CUBLAS_CHECK(cublasLtMatmul(be.cublaslt(), plan.desc,
                              &alpha, b, plan.layout_a, a, plan.layout_b, &beta, c,
                              plan.layout_c, c, plan.layout_c, &plan.algo, be.gemm_workspace(),
                              CudaBackend::kGemmWorkspaceBytes, stream));
}

}  // namespace temper::cuda
