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
 *   gemv_int4    q uint8 [out, in / 2], scale float [out, in / group]: every 32 inputs take 16
 *                bytes, byte j holding input j (low nibble) and j + 16 (high), as q + 8;
 *                W[o, i] = q[o, i] * scale[o, i / group]; `scale` has 4 readable floats past
 *                its end (the integer path loads 4 scales at a time, and uses those it needs)
 * All have values.h's signature (x, w, scale, bias, y, in, out, group, act, threads); `scale`
 * and `group` mean something only where said. The caller (products.py) checks shapes, dtypes and
 * contiguity: these functions trust them. Each returns 0, or -1 when it could not allocate its scratch memory (nothing written).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "values.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* Vectors of VL floats: loads that widen each weight type, fused multiply-add, sum. */
#if defined(__AVX512F__) && defined(__AVX512BW__)
#define VL 16
typedef __m512 vf;
static inline vf vzero(void) { return _mm512_setzero_ps(); }
static inline vf vset(float a) { return _mm512_set1_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline float vsum(vf a) { return _mm512_reduce_add_ps(a); }
static inline vf load_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline void store_f32(float *p, vf a) { _mm512_storeu_ps(p, a); }
static inline vf load_bf16(const bf16 *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline vf load_i8(const int8_t *p) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p))); }
static inline vf nibbles(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(b, _mm_set1_epi8(15)))); }
static inline vf load_lo4(const uint8_t *p) { return nibbles(_mm_loadu_si128((const __m128i *)p)); }
static inline vf load_hi4(const uint8_t *p) { return nibbles(_mm_srli_epi16(_mm_loadu_si128((const __m128i *)p), 4)); }
#elif defined(__AVX2__) && defined(__FMA__)
#define VL 8
typedef __m256 vf;
static inline vf vzero(void) { return _mm256_setzero_ps(); }
static inline vf vset(float a) { return _mm256_set1_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline float vsum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
static inline vf load_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline void store_f32(float *p, vf a) { _mm256_storeu_ps(p, a); }
static inline vf load_bf16(const bf16 *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
static inline vf load_i8(const int8_t *p) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p))); }
static inline vf nibbles(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(b, _mm_set1_epi8(15)))); }
static inline vf load_lo4(const uint8_t *p) { return nibbles(_mm_loadl_epi64((const __m128i *)p)); }
static inline vf load_hi4(const uint8_t *p) { return nibbles(_mm_srli_epi16(_mm_loadl_epi64((const __m128i *)p), 4)); }
#else
#define VL 1
typedef float vf;
static inline vf vzero(void) { return 0; }
static inline vf vset(float a) { return a; }
static inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
static inline float vsum(vf a) { return a; }
static inline vf load_f32(const float *p) { return *p; }
static inline void store_f32(float *p, vf a) { *p = a; }
static inline vf load_bf16(const bf16 *p) { return from_bf16(*p); }
static inline vf load_i8(const int8_t *p) { return (float)*p; }
static inline vf load_lo4(const uint8_t *p) { return (float)(*p & 15); }
static inline vf load_hi4(const uint8_t *p) { return (float)(*p >> 4); }
#endif

static inline float one_f32(const float *p) { return *p; }
static inline float one_bf16(const bf16 *p) { return from_bf16(*p); }
static inline float one_i8(const int8_t *p) { return (float)*p; }

/* y[o] = s (times the row's scale, if any) + bias[o] (if any). */
static inline void finish(void *y, const void *bias, const float *scale, int64_t o, float s, int act) {
    if (scale) s *= scale[o];
    if (bias) s += load(bias, o, act);
    store(y, o, s, act);
}

/* x as float32 (a copy the caller frees), or NULL when out of memory. */
static float *widen(const void *x, int64_t n, int act) {
    float *xf = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (xf) for (int64_t i = 0; i < n; i++) xf[i] = load(x, i, act);
    return xf;
}

/* Rows: one at a time (one stream through memory is what the prefetchers follow best), with
 * four sums along the row so that the additions do not wait on each other. */
#define ROWS_KERNEL(NAME, WT, VLOAD, ONE)                                                      \
int NAME(const void *x, const void *weight, const float *scale, const void *bias, void *y,      \
         int64_t in, int64_t out, int64_t group, int act, int threads) {                       \
    const WT *w = weight; (void)group;                                                         \
    float *xf = widen(x, in, act);                                                             \
    if (!xf) return -1;                                                                        \
    _Pragma("omp parallel for schedule(static) num_threads(threads)")                         \
    for (int64_t o = 0; o < out; o++) {                                                        \
        const WT *a = w + o * in;                                                              \
        vf s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();                             \
        int64_t i = 0;                                                                         \
        for (; i + 4 * VL <= in; i += 4 * VL) {                                                \
            s0 = vfma(VLOAD(a + i), load_f32(xf + i), s0);                                     \
            s1 = vfma(VLOAD(a + i + VL), load_f32(xf + i + VL), s1);                           \
            s2 = vfma(VLOAD(a + i + 2 * VL), load_f32(xf + i + 2 * VL), s2);                   \
            s3 = vfma(VLOAD(a + i + 3 * VL), load_f32(xf + i + 3 * VL), s3);                   \
        }                                                                                      \
        for (; i + VL <= in; i += VL) s0 = vfma(VLOAD(a + i), load_f32(xf + i), s0);           \
        float r = vsum(vfma(vset(1.0f), s0, s1)) + vsum(vfma(vset(1.0f), s2, s3));             \
        for (; i < in; i++) r += ONE(a + i) * xf[i];                                           \
        finish(y, bias, scale, o, r, act);                                                     \
    }                                                                                          \
    free(xf);                                                                                  \
    return 0;                                                                                  \
}

ROWS_KERNEL(gemv_rows_f32, float, load_f32, one_f32)
ROWS_KERNEL(gemv_rows_bf16, bf16, load_bf16, one_bf16)
ROWS_KERNEL(gemv_int8, int8_t, load_i8, one_i8)

/* acc[j] += xa * a[j] + xb * b[j] + ... over the columns, four rows of W at a time. */
#define COLS_KERNEL(NAME, WT, VLOAD, ONE)                                                      \
int NAME(const void *x, const void *weight, const float *unused, const void *bias, void *y,     \
         int64_t in, int64_t out, int64_t group, int act, int threads) {                       \
    const WT *w = weight; (void)unused; (void)group;                                           \
    float *xf = widen(x, in, act);                                                             \
    float *part = calloc((size_t)threads * (size_t)(out > 0 ? out : 1), sizeof(float));        \
    if (!xf || !part) { free(xf); free(part); return -1; }                                     \
    _Pragma("omp parallel num_threads(threads)")                                               \
    {                                                                                          \
        int t = omp_get_thread_num(), n = omp_get_num_threads();                               \
        int64_t i = in * t / n, end = in * (t + 1) / n;                                        \
        float *acc = part + (int64_t)t * out;                                                  \
        for (; i < end; i++) {  /* one row of W at a time: one stream through memory */      \
            const WT *a = w + i * out;                                                         \
            vf xa = vset(xf[i]);                                                               \
            int64_t j = 0;                                                                     \
            for (; j + 2 * VL <= out; j += 2 * VL) {                                           \
                store_f32(acc + j, vfma(VLOAD(a + j), xa, load_f32(acc + j)));                 \
                store_f32(acc + j + VL, vfma(VLOAD(a + j + VL), xa, load_f32(acc + j + VL)));  \
            }                                                                                  \
            for (; j < out; j++) acc[j] += xf[i] * ONE(a + j);                                 \
        }                                                                                      \
        _Pragma("omp barrier")                                                                 \
        _Pragma("omp for schedule(static)")                                                    \
        for (int64_t j = 0; j < out; j++) {                                                    \
            float s = 0;                                                                       \
            for (int u = 0; u < n; u++) s += part[(int64_t)u * out + j];                      \
            finish(y, bias, NULL, j, s, act);                                                  \
        }                                                                                      \
    }                                                                                          \
    free(xf); free(part);                                                                      \
    return 0;                                                                                  \
}

COLS_KERNEL(gemv_cols_f32, float, load_f32, one_f32)
COLS_KERNEL(gemv_cols_bf16, bf16, load_bf16, one_bf16)

/* int4 on integer dot products (as llama.cpp does), where the CPU has AVX2: x is quantized to
 * int8 per block of 32 (scale = max |x| / 127), the nibbles (0..15, unsigned) meet it in
 * u8 x s8 dot products that sum 4 adjacent bytes into each 32-bit lane, and each lane's sum is
 * scaled by its block's weight scale times x's. The nibbles are q + 8: 8 * (the block's sum of
 * quantized x) is taken off the block's first lane. Without AVX2, floats (group_sum below).
 *   IL lanes of 32 bits per vector; BPV = IL / 4 blocks of 16 bytes per vector. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define INTEGER_INT4 1
#define IL 16
typedef __m512i vi;
static inline vi iload(const void *p) { return _mm512_loadu_si512(p); }
static inline vi low4(vi v) { return _mm512_and_si512(v, _mm512_set1_epi8(15)); }
static inline vi high4(vi v) { return _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(15)); }
static inline vi dot_u8s8(vi acc, vi u, vi s) { return _mm512_dpbusd_epi32(acc, u, s); }
static inline vi iadd(vi a, vi b) { return _mm512_add_epi32(a, b); }
static inline vf ito_f(vi a) { return _mm512_cvtepi32_ps(a); }
static inline vf lanes_of(const float *four, const int32_t *index) {  /* four[index[l]] */
    return _mm512_permutexvar_ps(_mm512_loadu_si512(index), _mm512_castps128_ps512(_mm_loadu_ps(four)));
}
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
#elif defined(__AVX2__) && defined(__FMA__) && VL == 8  /* AVX-512 without VNNI: floats below */
#define INTEGER_INT4 1
#define IL 8
typedef __m256i vi;
static inline vi iload(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline vi low4(vi v) { return _mm256_and_si256(v, _mm256_set1_epi8(15)); }
static inline vi high4(vi v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15)); }
static inline vi dot_u8s8(vi acc, vi u, vi s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, s);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#else  /* pairs to 16 bits (no overflow: 15 * 127 * 2 < 32767), then to 32 */
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}
static inline vi iadd(vi a, vi b) { return _mm256_add_epi32(a, b); }
static inline vf ito_f(vi a) { return _mm256_cvtepi32_ps(a); }
static inline vf lanes_of(const float *four, const int32_t *index) {
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(four)), _mm256_loadu_si256((const __m256i *)index));
}
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
#endif

#ifdef INTEGER_INT4
#define BPV (IL / 4)
/* The kernel's view of x: per block, 16 low and 16 high int8 values, and per lane the scale of
 * its block and the correction of its block's first lane. */
typedef struct { int8_t *lo, *hi; float *lane_scale; int32_t *correction; } quantized_x;

/* x quantized into one allocation (free qx->lane_scale after); -1 if it cannot be had. */
static int quantize_x(const float *xf, int64_t in, quantized_x *qx) {
    int64_t blocks = in / 32;
    char *memory = malloc((size_t)blocks * (32 + 4 * sizeof(float) + 4 * sizeof(int32_t)));
    if (!memory) return -1;
    qx->lane_scale = (float *)memory;
    qx->correction = (int32_t *)(memory + blocks * 4 * sizeof(float));
    qx->lo = (int8_t *)(memory + blocks * 4 * (sizeof(float) + sizeof(int32_t)));
    qx->hi = qx->lo + blocks * 16;
    for (int64_t b = 0; b < blocks; b++) {
        const float *xb = xf + b * 32;
        float most = 0, poison = 0;
        #pragma omp simd reduction(max:most) reduction(+:poison)
        for (int j = 0; j < 32; j++) {
            most = fabsf(xb[j]) > most ? fabsf(xb[j]) : most;
            poison += xb[j] * 0.0f;  /* NaN if any value is NaN or infinite */
        }
        /* A NaN or infinity makes the block's results NaN (its values 0, its scale NaN), as a
         * float product would: converting it to an integer is undefined. */
        int finite = poison == 0;
        float scale = finite ? most / 127 : NAN, inverse = finite && most > 0 ? 127 / most : 0;
        int32_t sum = 0;
        #pragma omp simd reduction(+:sum)
        for (int j = 0; j < 32; j++) {  /* to nearest, halves away from zero; |v| <= 127 */
            float v = finite ? xb[j] * inverse : 0.0f;  /* never a NaN to convert */
            int8_t q = (int8_t)(int)(v >= 0 ? v + 0.5f : v - 0.5f);
            (j < 16 ? qx->lo : qx->hi)[b * 16 + (j & 15)] = q;
            sum += q;
        }
        for (int l = 0; l < 4; l++) { qx->lane_scale[b * 4 + l] = scale; qx->correction[b * 4 + l] = 0; }
        qx->correction[b * 4] = -8 * sum;
    }
    return 0;
}

static int gemv_int4_integer(const float *xf, const uint8_t *q, const float *scale, const void *bias, void *y,
                             int64_t in, int64_t out, int64_t group, int act, int threads) {
    quantized_x qx;
    int64_t blocks = in / 32, groups = in / group;
    int status = quantize_x(xf, in, &qx);
    int32_t index[IL];  /* lane -> which of the 4 scales loaded from the vector's first group */
    for (int l = 0; l < IL; l++) index[l] = (int32_t)((l / 4) * 32 / group);
    if (status == 0) {
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t o = 0; o < out; o++) {  /* one row at a time: one stream through memory */
            const uint8_t *row = q + o * (in / 2);
            const float *rs = scale + o * groups;
            vf acc[2] = {vzero(), vzero()};
            for (int64_t b = 0; b < blocks; b += BPV) {
                const float *four = rs + b * 32 / group;  /* may reach past the row: unused lanes */
                vi v = iload(row + b * 16);
                vi sum = dot_u8s8(dot_u8s8(iload(qx.correction + b * 4), low4(v), iload(qx.lo + b * 16)),
                                  high4(v), iload(qx.hi + b * 16));
                int k = (int)((b / BPV) & 1);
                acc[k] = vfma(ito_f(sum), vmul(load_f32(qx.lane_scale + b * 4), lanes_of(four, index)), acc[k]);
            }
            finish(y, bias, NULL, o, vsum(vfma(vset(1.0f), acc[0], acc[1])), act);
        }
    }
    if (status == 0) free(qx.lane_scale);  /* the one allocation */
    return status;
}
#endif

/* int4: the sum of (q + 8) * x over one group of one row, kept in VL lanes. */
static inline vf group_sum(const uint8_t *row, const float *xf, int64_t start, int64_t group) {
    vf lo = vzero(), hi = vzero();
    for (int64_t b = start; b < start + group; b += 32)
        for (int k = 0; k < 16; k += VL) {
            lo = vfma(load_lo4(row + b / 2 + k), load_f32(xf + b + k), lo);
            hi = vfma(load_hi4(row + b / 2 + k), load_f32(xf + b + 16 + k), hi);
        }
    return vfma(vset(1.0f), lo, hi);
}

/* int4, per output: per group, group_sum times the group's scale; minus 8 * (the sum over groups
 * of scale * the group's sum of x). Four rows at a time, for four independent sums. */
int gemv_int4(const void *x, const void *weight, const float *scale, const void *bias, void *y,
              int64_t in, int64_t out, int64_t group, int act, int threads) {
    const uint8_t *q = weight;
    float *xf = widen(x, in, act);
#ifdef INTEGER_INT4
    if (in % (32 * BPV) == 0) {
        int status = xf ? gemv_int4_integer(xf, q, scale, bias, y, in, out, group, act, threads) : -1;
        free(xf);
        return status;
    }
#endif
    int64_t groups = in / group;
    float *xsum = malloc((size_t)(groups > 0 ? groups : 1) * sizeof(float));
    if (!xf || !xsum) { free(xf); free(xsum); return -1; }
    for (int64_t g = 0; g < groups; g++) {
        float s = 0;
        for (int64_t i = g * group; i < (g + 1) * group; i++) s += xf[i];
        xsum[g] = s;
    }
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t o0 = 0; o0 < out; o0 += 4) {
        int rows = out - o0 < 4 ? (int)(out - o0) : 4;
        vf acc[4] = {vzero(), vzero(), vzero(), vzero()};
        float offset[4] = {0, 0, 0, 0};
        for (int64_t g = 0; g < groups; g++)
            for (int r = 0; r < rows; r++) {
                float s = scale[(o0 + r) * groups + g];
                acc[r] = vfma(vset(s), group_sum(q + (o0 + r) * (in / 2), xf, g * group, group), acc[r]);
                offset[r] += s * xsum[g];
            }
        for (int r = 0; r < rows; r++) finish(y, bias, NULL, o0 + r, vsum(acc[r]) - 8 * offset[r], act);
    }
    free(xf); free(xsum);
    return 0;
}
