/* The products of a batch-1 decoding step: one row of activations times a weight matrix,
 * streaming the weight once at the speed of memory. Compiled on the machine that runs it
 * (-O3 -march=native, see build.py): the vector helpers below take AVX-512 or AVX2 where the
 * compiler says the CPU has them, plain C otherwise. OpenMP's threads are the ones torch
 * already runs (the same libgomp, found by its name).
 *
 * Activations x, bias and y are float32 (act == 0) or bfloat16 (act == 1); sums are float32.
 * `threads` is torch's thread count (torch.get_num_threads()), passed on each call.
 *   gemv_rows_*  W [out, in] (nn.Linear, the tied LM head): y[o] = dot(W[o], x)
 *   gemv_int8    q int8 [out, in] and scale float [out]: the same, times scale[o]
 *   gemv_cols_*  W [in, out] (GPT-2's Conv1D): y = sum over i of x[i] * W[i]; each thread sums
 *                its own slice of i, then the threads' sums are added
 *   gemv_int4    W[o, i] = q[o, i] * scale[o, i / group], q in [-8, 7], in tiles of 16 rows
 *                (the int4 section below): uint8 [ceil(out / 16) * 16 * in / 2], scale bfloat16
 *                (passed as `const float *`) [ceil(out / 16) * 16 * in / group]
 *   few_*        several rows of x ([rows, in], `group` = rows) times a float32 or bfloat16 W,
 *                [in, out] (few_cols_*) or [out, in] (few_rows_*), or int8 q [out, in] with
 *                scale [out] (few_int8): each weight vector loaded once for eight rows
 * All have values.h's signature (x, w, scale, bias, y, in, out, group, act, threads); `scale`
 * and `group` mean something only where said. The caller (products.py) checks shapes, dtypes and
 * contiguity: these functions trust them. Each returns 0, or -1 when it could not allocate its
 * scratch memory (nothing written). Besides, int4_widen (at the end) gives int4's weight in
 * bfloat16 for a product of many rows.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "values.h"

static inline float one_f32(const float *p) { return *p; }
static inline float one_bf16(const bf16 *p) { return from_bf16(*p); }
static inline float one_i8(const int8_t *p) { return (float)*p; }

/* Work items o in [0, n), inside a parallel region, `...` run for each: nine tenths split evenly
 * and in order (each thread one stream through memory), the last tenth `chunk` items at a time
 * (a variable in scope) to whichever thread is free first. A thread that starts late (woken from
 * sleep, or preempted) would otherwise hold the others at the region's end: on two threads this
 * made the block products 5% faster (docs/performance.md). Each item is computed whole by one
 * thread, so the results do not depend on which. */
#define SHARED_FOR(o, n, ...)                                                                   \
    _Pragma("omp for schedule(static) nowait")                                                 \
    for (int64_t o = 0; o < (n) - (n) / 10; o++) { __VA_ARGS__ }                               \
    _Pragma("omp for schedule(dynamic, chunk)")                                                \
    for (int64_t o = (n) - (n) / 10; o < (n); o++) { __VA_ARGS__ }

/* y[o] = s (times the row's scale, if any) + bias[o] (if any). */
static inline void finish(void *y, const void *bias, const float *scale, int64_t o, float s, int act) {
    if (scale) s *= scale[o];
    if (bias) s += load(bias, o, act);
    store(y, o, s, act);
}

/* x as float32: x itself for float32 activations, else a copy made in *copy (the caller frees
 * *copy); NULL when out of memory. */
static const float *as_float(const void *x, int64_t n, int act, float **copy) {
    *copy = NULL;
    if (!act) return x;
    *copy = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (*copy) for (int64_t i = 0; i < n; i++) (*copy)[i] = load(x, i, act);
    return *copy;
}

/* Rows: one at a time (one stream through memory is what the prefetchers follow best), with
 * four sums along the row so that the additions do not wait on each other. */
#define ROWS_KERNEL(NAME, WT, VLOAD, ONE)                                                      \
static inline float NAME##_row(const WT *a, const float *xf, int64_t in) {                      \
    vf s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();                                 \
    int64_t i = 0;                                                                             \
    for (; i + 4 * VL <= in; i += 4 * VL) {                                                    \
        s0 = vfma(VLOAD(a + i), load_f32(xf + i), s0);                                         \
        s1 = vfma(VLOAD(a + i + VL), load_f32(xf + i + VL), s1);                               \
        s2 = vfma(VLOAD(a + i + 2 * VL), load_f32(xf + i + 2 * VL), s2);                       \
        s3 = vfma(VLOAD(a + i + 3 * VL), load_f32(xf + i + 3 * VL), s3);                       \
    }                                                                                          \
    for (; i + VL <= in; i += VL) s0 = vfma(VLOAD(a + i), load_f32(xf + i), s0);               \
    float r = vsum(vfma(vset(1.0f), s0, s1)) + vsum(vfma(vset(1.0f), s2, s3));                 \
    for (; i < in; i++) r += ONE(a + i) * xf[i];                                               \
    return r;                                                                                  \
}                                                                                              \
int NAME(const void *x, const void *weight, const float *scale, const void *bias, void *y,      \
         int64_t in, int64_t out, int64_t group, int act, int threads) {                       \
    const WT *w = weight; (void)group;                                                         \
    const int64_t chunk = 8;                                                                   \
    float *copy;                                                                               \
    const float *xf = as_float(x, in, act, &copy);                                             \
    if (!xf) return -1;                                                                        \
    _Pragma("omp parallel num_threads(threads)")                                               \
    { SHARED_FOR(o, out, finish(y, bias, scale, o, NAME##_row(w + o * in, xf, in), act);) }    \
    free(copy);                                                                                \
    return 0;                                                                                  \
}

ROWS_KERNEL(gemv_rows_f32, float, load_f32, one_f32)
#if defined(__AVX512BF16__) && VL == 16
ROWS_KERNEL(gemv_rows_bf16_widened, bf16, load_bf16, one_bf16)

/* bfloat16 weights and activations on the CPU's bfloat16 dot products (AVX512_BF16): 32
 * products a step, each exact in float32 and summed there, where widening takes three steps for
 * 16. Float32 activations take the widening kernel. */
static inline float dot_bf16(const bf16 *a, const bf16 *xb, int64_t in) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= in; i += 64) {
        s0 = _mm512_dpbf16_ps(s0, (__m512bh)_mm512_loadu_si512(a + i), (__m512bh)_mm512_loadu_si512(xb + i));
        s1 = _mm512_dpbf16_ps(s1, (__m512bh)_mm512_loadu_si512(a + i + 32), (__m512bh)_mm512_loadu_si512(xb + i + 32));
    }
    for (; i + 32 <= in; i += 32)
        s0 = _mm512_dpbf16_ps(s0, (__m512bh)_mm512_loadu_si512(a + i), (__m512bh)_mm512_loadu_si512(xb + i));
    float r = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; i < in; i++) r += from_bf16(a[i]) * from_bf16(xb[i]);
    return r;
}

int gemv_rows_bf16(const void *x, const void *weight, const float *scale, const void *bias, void *y,
                   int64_t in, int64_t out, int64_t group, int act, int threads) {
    if (!act) return gemv_rows_bf16_widened(x, weight, scale, bias, y, in, out, group, act, threads);
    const bf16 *w = weight, *xb = x;
    const int64_t chunk = 8;
    #pragma omp parallel num_threads(threads)
    { SHARED_FOR(o, out, finish(y, bias, scale, o, dot_bf16(w + o * in, xb, in), act);) }
    return 0;
}
#else
ROWS_KERNEL(gemv_rows_bf16, bf16, load_bf16, one_bf16)
#endif
ROWS_KERNEL(gemv_int8, int8_t, load_i8, one_i8)

/* acc[j] += x[i] * W[i, j] over the columns, eight rows of W at a time: acc is loaded and stored
 * once per eight rows, where once per row made the float32 block products 10-20% slower streamed
 * (on AMD Zen 4, docs/performance.md). Each acc[j] still adds the rows in order, one fused
 * multiply-add each, so the sums are the same as one row at a time, bit for bit. */
#define COLS_AT_ONCE 8
#define COLS_KERNEL(NAME, WT, VLOAD, ONE)                                                      \
int NAME(const void *x, const void *weight, const float *unused, const void *bias, void *y,     \
         int64_t in, int64_t out, int64_t group, int act, int threads) {                       \
    const WT *w = weight; (void)unused; (void)group;                                           \
    float *copy;                                                                               \
    const float *xf = as_float(x, in, act, &copy);                                             \
    float *part = calloc((size_t)threads * (size_t)(out > 0 ? out : 1), sizeof(float));        \
    if (!xf || !part) { free(copy); free(part); return -1; }                                   \
    _Pragma("omp parallel num_threads(threads)")                                               \
    {                                                                                          \
        int t = omp_get_thread_num(), n = omp_get_num_threads();                               \
        int64_t i = in * t / n, end = in * (t + 1) / n;                                        \
        float *acc = part + (int64_t)t * out;                                                  \
        while (i < end) {                                                                      \
            const int64_t rows = end - i < COLS_AT_ONCE ? end - i : COLS_AT_ONCE;              \
            const WT *a = w + i * out;                                                         \
            vf xs[COLS_AT_ONCE];                                                               \
            for (int r = 0; r < rows; r++) xs[r] = vset(xf[i + r]);                            \
            int64_t j = 0;                                                                     \
            if (rows == COLS_AT_ONCE)  /* a constant count: the loop over r unrolls */         \
                for (; j + VL <= out; j += VL) {                                               \
                    vf s = load_f32(acc + j);                                                  \
                    for (int r = 0; r < COLS_AT_ONCE; r++) s = vfma(VLOAD(a + r * out + j), xs[r], s); \
                    store_f32(acc + j, s);                                                     \
                }                                                                              \
            for (; j + VL <= out; j += VL) {                                                   \
                vf s = load_f32(acc + j);                                                      \
                for (int r = 0; r < rows; r++) s = vfma(VLOAD(a + r * out + j), xs[r], s);     \
                store_f32(acc + j, s);                                                         \
            }                                                                                  \
            for (; j < out; j++)                                                               \
                for (int r = 0; r < rows; r++) acc[j] += xf[i + r] * ONE(a + r * out + j);     \
            i += rows;                                                                         \
        }                                                                                      \
        _Pragma("omp barrier")                                                                 \
        _Pragma("omp for schedule(static)")                                                    \
        for (int64_t j = 0; j < out; j++) {                                                    \
            float s = 0;                                                                       \
            for (int u = 0; u < n; u++) s += part[(int64_t)u * out + j];                      \
            finish(y, bias, NULL, j, s, act);                                                  \
        }                                                                                      \
    }                                                                                          \
    free(copy); free(part);                                                                    \
    return 0;                                                                                  \
}

COLS_KERNEL(gemv_cols_f32, float, load_f32, one_f32)
COLS_KERNEL(gemv_cols_bf16, bf16, load_bf16, one_bf16)

/* A few rows of x at once (a batch's step, a short prompt), streaming the weight once as the
 * one-row kernels do, where a GEMM reads it at half the memory's speed for eight rows (oneDNN's
 * float32 on an Intel Xeon) or has no fast bfloat16 product (AVX2 only): each vector of weights
 * is widened in registers and meets eight rows of x (eight independent sums, so that the fused
 * multiply-adds do not wait on each other); more rows take further groups of eight while the
 * weights are still in cache. Sums in float32. models/kernels.py times them against PyTorch's
 * routes per shape and number of rows. */
#define FEW 8

/* y[r, j] = s (times scale[j], if any) + bias[j] (if any), y [rows, out]. */
static inline void few_finish(void *y, const void *bias, const float *scale, int64_t r, int64_t out, int64_t j,
                              float s, int act) {
    if (scale) s *= scale[j];
    if (bias) s += load(bias, j, act);
    store(y, r * out + j, s, act);
}

/* Columns, W [in, out]: as the one-row kernel above, each thread streams its own slice of the
 * inputs i, COLS_AT_ONCE rows of W a pass, into sums of its own, [rows, out] (in cache: a few
 * hundred KB); a pass meets each tile of FEW rows of x and PANEL vectors of outputs with the
 * tile's sums held in registers, each weight vector loaded once for the FEW rows and each x value
 * once for the PANEL vectors. The threads' sums are added at the end. */
#if VL == 16
#define PANEL 3  /* 24 sums, 3 weight vectors and a broadcast of x: 28 of AVX-512's 32 registers */
#else
#define PANEL 1  /* 8 sums, a weight vector and a broadcast: 10 of AVX2's 16 */
#endif
#define PREFETCH(p) __builtin_prefetch(p, 0, 3)
#define FEW_COLS_KERNEL(NAME, WT, VLOAD, ONE)                                                   \
/* the tile of n rows from r0 and the panel at j over k inputs from i (inlined: for n == FEW the  \
 * loops over rows unroll and the sums stay in registers) */                                   \
static inline __attribute__((always_inline)) void NAME##_tile(                                  \
        const float *xf, const WT *a, float *acc, int64_t in, int64_t out, int64_t i, int64_t k, \
        int64_t r0, int64_t n, int64_t j) {                                                    \
    vf s[FEW][PANEL];                                                                          \
    for (int64_t r = 0; r < n; r++)                                                            \
        for (int p = 0; p < PANEL; p++) s[r][p] = load_f32(acc + (r0 + r) * out + j + p * VL); \
    for (int64_t u = 0; u < k; u++) {                                                          \
        vf wv[PANEL];                                                                          \
        for (int p = 0; p < PANEL; p++) wv[p] = VLOAD(a + u * out + j + p * VL);               \
        for (int p = 0; p < PANEL; p++) PREFETCH(a + (u + COLS_AT_ONCE) * out + j + p * VL);   \
        const float *xr = xf + r0 * in + i + u;                                                \
        for (int64_t r = 0; r < n; r++) {                                                      \
            vf xv = vset(xr[r * in]);                                                          \
            for (int p = 0; p < PANEL; p++) s[r][p] = vfma(wv[p], xv, s[r][p]);                \
        }                                                                                      \
    }                                                                                          \
    for (int64_t r = 0; r < n; r++)                                                            \
        for (int p = 0; p < PANEL; p++) store_f32(acc + (r0 + r) * out + j + p * VL, s[r][p]); \
}                                                                                              \
static inline void NAME##_pass(const float *xf, const WT *a, float *acc, int64_t in, int64_t out, \
                               int64_t i, int64_t k, int64_t rows) {                           \
    int64_t j = 0;                                                                             \
    for (; j + PANEL * VL <= out; j += PANEL * VL)                                             \
        for (int64_t r0 = 0; r0 < rows; r0 += FEW) {                                           \
            if (rows - r0 >= FEW && k == COLS_AT_ONCE)                                         \
                NAME##_tile(xf, a, acc, in, out, i, COLS_AT_ONCE, r0, FEW, j);                 \
            else                                                                               \
                NAME##_tile(xf, a, acc, in, out, i, k, r0, rows - r0 < FEW ? rows - r0 : FEW, j); \
        }                                                                                      \
    for (; j < out; j++)  /* the outputs past the last whole panel */                          \
        for (int64_t r = 0; r < rows; r++) {                                                   \
            float t = acc[r * out + j];                                                        \
            for (int64_t u = 0; u < k; u++) t += xf[r * in + i + u] * ONE(a + u * out + j);   \
            acc[r * out + j] = t;                                                              \
        }                                                                                      \
}                                                                                              \
int NAME(const void *x, const void *weight, const float *unused, const void *bias, void *y,     \
         int64_t in, int64_t out, int64_t rows, int act, int threads) {                        \
    const WT *w = weight; (void)unused;                                                        \
    float *copy;                                                                               \
    const float *xf = as_float(x, rows * in, act, &copy);                                      \
    const int64_t size = rows * out > 0 ? rows * out : 1;                                      \
    float *part = calloc((size_t)threads * (size_t)size, sizeof(float));                       \
    if (!xf || !part) { free(copy); free(part); return -1; }                                   \
    _Pragma("omp parallel num_threads(threads)")                                               \
    {                                                                                          \
        int t = omp_get_thread_num(), n = omp_get_num_threads();                               \
        float *acc = part + (int64_t)t * size;                                                 \
        for (int64_t i = in * t / n, end = in * (t + 1) / n; i < end; i += COLS_AT_ONCE)       \
            NAME##_pass(xf, w + i * out, acc, in, out, i,                                      \
                        end - i < COLS_AT_ONCE ? end - i : COLS_AT_ONCE, rows);                \
        _Pragma("omp barrier")                                                                 \
        _Pragma("omp for schedule(static)")                                                    \
        for (int64_t e = 0; e < rows * out; e++) {                                             \
            float s = 0;                                                                       \
            for (int u = 0; u < n; u++) s += part[(int64_t)u * size + e];                      \
            few_finish(y, bias, NULL, e / out, out, e % out, s, act);                          \
        }                                                                                      \
    }                                                                                          \
    free(copy); free(part);                                                                    \
    return 0;                                                                                  \
}

/* Rows, W [out, in] (times scale[o] where given: int8): each output's row of W loaded a vector at
 * a time for eight rows of x. */
#define FEW_ROWS_KERNEL(NAME, WT, VLOAD, ONE)                                                   \
int NAME(const void *x, const void *weight, const float *scale, const void *bias, void *y,      \
         int64_t in, int64_t out, int64_t rows, int act, int threads) {                        \
    const WT *w = weight;                                                                      \
    float *copy;                                                                               \
    const float *xf = as_float(x, rows * in, act, &copy);                                      \
    if (!xf) return -1;                                                                        \
    _Pragma("omp parallel for schedule(static) num_threads(threads)")                          \
    for (int64_t o = 0; o < out; o++) {                                                        \
        const WT *a = w + o * in;                                                              \
        for (int64_t r0 = 0; r0 < rows; r0 += FEW) {                                           \
            const int64_t n = rows - r0 < FEW ? rows - r0 : FEW;                               \
            const float *xr = xf + r0 * in;                                                    \
            vf s[FEW];                                                                         \
            for (int r = 0; r < FEW; r++) s[r] = vzero();                                      \
            int64_t i = 0;                                                                     \
            for (; i + VL <= in; i += VL) {                                                    \
                vf wv = VLOAD(a + i);                                                          \
                PREFETCH(a + 2 * in + i);                                                      \
                for (int r = 0; r < n; r++) s[r] = vfma(wv, load_f32(xr + r * in + i), s[r]);  \
            }                                                                                  \
            for (int64_t r = 0; r < n; r++) {                                                  \
                float t = vsum(s[r]);                                                          \
                for (int64_t k = i; k < in; k++) t += ONE(a + k) * xr[r * in + k];             \
                few_finish(y, bias, scale, r0 + r, out, o, t, act);                            \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    free(copy);                                                                                \
    return 0;                                                                                  \
}

FEW_COLS_KERNEL(few_cols_bf16, bf16, load_bf16, one_bf16)
FEW_ROWS_KERNEL(few_rows_bf16, bf16, load_bf16, one_bf16)
FEW_COLS_KERNEL(few_cols_f32, float, load_f32, one_f32)
FEW_ROWS_KERNEL(few_rows_f32, float, load_f32, one_f32)
FEW_ROWS_KERNEL(few_int8, int8_t, load_i8, one_i8)

/* int4, in tiles of 16 rows (int4_tiles in products.py): per tile, per block of 32 inputs, four
 * chunks of 64 bytes, chunk k holding 4 bytes of each of the 16 rows: byte j of row r's chunk k
 * has input 4k + j in its low nibble and input 16 + 4k + j in its high one, each as q + 8. The
 * scales, bfloat16 (as the model keeps them): per tile, per group, the 16 rows' scales. One
 * stream through memory per thread (a tile after another), and each 32-bit lane of a vector is
 * one row, so a block's integer sum needs no horizontal addition and its scales are one load.
 *
 * Where the CPU has AVX2, on integer dot products as llama.cpp does: x is quantized to int8 per
 * block of 32 (scale = max |x| / 127), 4 of its values broadcast to every row's lane meet the
 * rows' 4 nibbles in a u8 x s8 dot product, and 8 * (the block's sum of quantized x) is taken off
 * (the nibbles are q + 8). Without AVX2, the same sums in floats. */
#define TILE 16

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define RL 16  /* rows (32-bit lanes) per integer vector */
typedef __m512i vi;
static inline vi iload(const void *p) { return _mm512_loadu_si512(p); }
static inline vi iset(int32_t a) { return _mm512_set1_epi32(a); }
static inline vi low4(vi v) { return _mm512_and_si512(v, _mm512_set1_epi8(15)); }
static inline vi high4(vi v) { return _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(15)); }
static inline vi iadd(vi a, vi b) { return _mm512_add_epi32(a, b); }
static inline vf ito_f(vi a) { return _mm512_cvtepi32_ps(a); }
#if defined(__AVX512VNNI__)
#define DOT_VNNI 1
static inline vi dot_u8s8(vi acc, vi u, vi s) { return _mm512_dpbusd_epi32(acc, u, s); }
#else
static inline vi pairs_u8s8(vi u, vi s) { return _mm512_maddubs_epi16(u, s); }
static inline vi add16(vi a, vi b) { return _mm512_add_epi16(a, b); }
static inline vi widen16(vi a) { return _mm512_madd_epi16(a, _mm512_set1_epi16(1)); }
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#define RL 8
typedef __m256i vi;
static inline vi iload(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline vi iset(int32_t a) { return _mm256_set1_epi32(a); }
static inline vi low4(vi v) { return _mm256_and_si256(v, _mm256_set1_epi8(15)); }
static inline vi high4(vi v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15)); }
static inline vi iadd(vi a, vi b) { return _mm256_add_epi32(a, b); }
static inline vf ito_f(vi a) { return _mm256_cvtepi32_ps(a); }
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define DOT_VNNI 1
static inline vi dot_u8s8(vi acc, vi u, vi s) { return _mm256_dpbusd_epi32(acc, u, s); }
#elif defined(__AVXVNNI__)
#define DOT_VNNI 1
static inline vi dot_u8s8(vi acc, vi u, vi s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
#else
static inline vi pairs_u8s8(vi u, vi s) { return _mm256_maddubs_epi16(u, s); }
static inline vi add16(vi a, vi b) { return _mm256_add_epi16(a, b); }
static inline vi widen16(vi a) { return _mm256_madd_epi16(a, _mm256_set1_epi16(1)); }
#endif
#endif

#ifdef RL
/* x quantized: per block of 32, its int8 values, its scale and -8 * their sum. */
typedef struct { int8_t *values; float *scale; int32_t *correction; } quantized_x;

/* Room for x quantized, in one allocation (free qx->scale after); -1 if it cannot be had. */
static int allocate_x(int64_t blocks, quantized_x *qx) {
    char *memory = malloc((size_t)blocks * (32 + sizeof(float) + sizeof(int32_t)));
    if (!memory) return -1;
    qx->scale = (float *)memory;
    qx->correction = (int32_t *)(memory + blocks * sizeof(float));
    qx->values = (int8_t *)(memory + blocks * (sizeof(float) + sizeof(int32_t)));
    return 0;
}

/* Block b of x (act dtype) quantized to int8: scale max |x| / 127, to nearest (halves away from
 * zero). A NaN or infinity makes the block's results NaN (its values 0, its scale NaN), as a
 * float product would: converting it to an integer is undefined. */
static void quantize_block(const void *x, int64_t b, int act, quantized_x *qx) {
    float xb[32], most = 0, poison = 0;
    for (int j = 0; j < 32; j++) xb[j] = load(x, b * 32 + j, act);
    #pragma omp simd reduction(max:most) reduction(+:poison)
    for (int j = 0; j < 32; j++) {
        most = fabsf(xb[j]) > most ? fabsf(xb[j]) : most;
        poison += xb[j] * 0.0f;  /* NaN if any value is NaN or infinite */
    }
    int finite = poison == 0;
    float inverse = finite && most > 1e-30f ? 127 / most : 0;  /* 127 / most stays finite */
    int32_t sum = 0;
    #pragma omp simd reduction(+:sum)
    for (int j = 0; j < 32; j++) {  /* |v| <= 127 */
        float v = finite ? xb[j] * inverse : 0.0f;  /* never a NaN to convert */
        int8_t q = (int8_t)(int)(v >= 0 ? v + 0.5f : v - 0.5f);
        qx->values[b * 32 + j] = q;
        sum += q;
    }
    qx->scale[b] = finite ? most / 127 : NAN;
    qx->correction[b] = -8 * sum;
}

#define VPT (TILE / RL)  /* integer vectors per chunk of a tile */
static inline vi x4(const int8_t *p) { int32_t v; memcpy(&v, p, 4); return iset(v); }

/* The integer sums of one block for the RL rows of `rows` (a tile's chunks, this vector's part),
 * without the correction: sum over chunks k of low4 * x[4k..] + high4 * x[16 + 4k..]. */
static inline vi block_sums(const uint8_t *rows, const int8_t *x) {
#ifdef DOT_VNNI
    vi lo = iset(0), hi = iset(0);
    for (int k = 0; k < 4; k++) {
        vi v = iload(rows + k * 64);
        lo = dot_u8s8(lo, low4(v), x4(x + 4 * k));
        hi = dot_u8s8(hi, high4(v), x4(x + 16 + 4 * k));
    }
    return iadd(lo, hi);
#else  /* pairs to 16 bits, summed there (8 pairs of at most 2 * 15 * 127 fit), then to 32 */
    vi sum = iset(0);
    for (int k = 0; k < 4; k++) {
        vi v = iload(rows + k * 64);
        sum = add16(sum, add16(pairs_u8s8(low4(v), x4(x + 4 * k)), pairs_u8s8(high4(v), x4(x + 16 + 4 * k))));
    }
    return widen16(sum);
#endif
}

/* Tile t's 16 rows: their sums over x's blocks, times the scales, into y. */
static inline void int4_tile(const quantized_x *qx, const uint8_t *q, const bf16 *scale, const void *bias, void *y,
                             int64_t t, int64_t in, int64_t out, int64_t group, int act) {
    int64_t blocks = in / 32, groups = in / group;
    const uint8_t *tile = q + t * blocks * 4 * 64;
    const bf16 *tile_scales = scale + t * groups * TILE;
    vf acc[VPT];
    for (int h = 0; h < VPT; h++) acc[h] = vzero();
    for (int64_t b = 0; b < blocks; b++) {
        vi correction = iset(qx->correction[b]);
        vf xs = vset(qx->scale[b]);
        const bf16 *s = tile_scales + (b * 32 / group) * TILE;
        for (int h = 0; h < VPT; h++) {
            vi sums = iadd(block_sums(tile + b * 4 * 64 + h * RL * 4, qx->values + b * 32), correction);
            acc[h] = vfma(ito_f(sums), vmul(load_bf16(s + h * RL), xs), acc[h]);
        }
    }
    float rows[TILE];
    for (int h = 0; h < VPT; h++) store_f32(rows + h * RL, acc[h]);
    for (int r = 0; r < TILE && t * TILE + r < out; r++) finish(y, bias, NULL, t * TILE + r, rows[r], act);
}

/* Inside a parallel region: each thread quantizes its share of x's blocks, then the tiles are
 * shared out, a tile after another (one stream through memory). */
static void int4_tiles_integer(const void *x, quantized_x *qx, const uint8_t *q, const bf16 *scale,
                               const void *bias, void *y, int64_t in, int64_t out, int64_t group, int act) {
    int64_t blocks = in / 32, tiles = (out + TILE - 1) / TILE;
    const int64_t chunk = 1;
    #pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; b++) quantize_block(x, b, act, qx);
    SHARED_FOR(t, tiles, int4_tile(qx, q, scale, bias, y, t, in, out, group, act);)
}
#else
/* Without AVX2: per row, per group, the sum of (q + 8) * x, times the scale; minus 8 * the sum
 * over groups of scale * (the group's sum of x). */
static void int4_tiles_float(const float *xf, const uint8_t *q, const bf16 *scale, const void *bias, void *y,
                             int64_t in, int64_t out, int64_t group, int act, int threads) {
    int64_t blocks = in / 32, groups = in / group;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t o = 0; o < out; o++) {
        const uint8_t *tile = q + (o / TILE) * blocks * 4 * 64;
        int r = (int)(o % TILE);
        float total = 0;
        for (int64_t g = 0; g < groups; g++) {
            float sum = 0, xsum = 0;
            for (int64_t i = g * group; i < (g + 1) * group; i++) {
                int64_t b = i / 32, j = i % 32;
                uint8_t byte = tile[b * 4 * 64 + ((j % 16) / 4) * 64 + r * 4 + j % 4];
                sum += (float)(j < 16 ? byte & 15 : byte >> 4) * xf[i];
                xsum += xf[i];
            }
            total += from_bf16(scale[(o / TILE) * groups * TILE + g * TILE + r]) * (sum - 8 * xsum);
        }
        finish(y, bias, NULL, o, total, act);
    }
}
#endif

int gemv_int4(const void *x, const void *weight, const float *scale, const void *bias, void *y,
              int64_t in, int64_t out, int64_t group, int act, int threads) {
#ifdef RL
    quantized_x qx;
    if (allocate_x(in / 32, &qx) != 0) return -1;
    #pragma omp parallel num_threads(threads)
    int4_tiles_integer(x, &qx, weight, (const bf16 *)scale, bias, y, in, out, group, act);
    free(qx.scale);  /* the one allocation */
    return 0;
#else
    float *copy;
    const float *xf = as_float(x, in, act, &copy);
    if (!xf) return -1;
    int4_tiles_float(xf, weight, (const bf16 *)scale, bias, y, in, out, group, act, threads);
    free(copy);
    return 0;
#endif
}

/* The int4 tiles' values times their scales, each rounded once to bfloat16: w [rows, in] for the
 * output rows first .. first + rows - 1 (first a multiple of TILE; the caller checks that they lie
 * in the tiles). What a product of many rows reads, as one bfloat16 product (models/quantize.py). */
void int4_widen(const uint8_t *q, const bf16 *scale, bf16 *w, int64_t in, int64_t first, int64_t rows,
                int64_t group, int threads) {
    int64_t groups = in / group;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t o = first; o < first + rows; o++) {
        int64_t t = o / TILE, r = o % TILE;
        const uint8_t *tile = q + t * in * (TILE / 2);
        bf16 *row = w + (o - first) * in;
        for (int64_t b = 0; b < in / 32; b++) {
            uint8_t bytes[16];  /* the block's 32 values of this row: input m low, 16 + m high */
            for (int k = 0; k < 4; k++) memcpy(bytes + 4 * k, tile + b * 256 + k * 64 + r * 4, 4);
            float s = from_bf16(scale[(t * groups + b * 32 / group) * TILE + r]);
            #pragma omp simd
            for (int m = 0; m < 16; m++) {
                row[b * 32 + m] = to_bf16((float)((bytes[m] & 15) - 8) * s);
                row[b * 32 + 16 + m] = to_bf16((float)((bytes[m] >> 4) - 8) * s);
            }
        }
    }
}
