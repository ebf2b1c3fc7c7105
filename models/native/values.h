/* What decode.c and block.c share: bfloat16 to and from float32, values of the activations'
 * dtype (act 0: float32, 1: bfloat16), vectors of floats as wide as the build has them, and the
 * signature every one-row product has (block.c calls the products by pointer; `group` means
 * something to gemv_int4 only). */
#ifndef GPT_HUB_VALUES_H
#define GPT_HUB_VALUES_H

#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

typedef uint16_t bf16;

static inline float from_bf16(bf16 h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }

static inline bf16 to_bf16(float f) {  /* round to nearest even, as torch does; NaN stays NaN */
    uint32_t u; memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, quiet_nan = (u >> 16) | 0x40;
    return (bf16)((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);  /* a select: loops vectorise */
}

static inline float load(const void *p, int64_t i, int act) {
    return act ? from_bf16(((const bf16 *)p)[i]) : ((const float *)p)[i];
}

static inline void store(void *p, int64_t i, float v, int act) {
    if (act) ((bf16 *)p)[i] = to_bf16(v); else ((float *)p)[i] = v;
}

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
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
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
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
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
static inline vf vmul(vf a, vf b) { return a * b; }
#endif

/* VL floats from p[i] on, p of dtype act (0: float32, 1: bfloat16), as float32. */
static inline vf load_as(const void *p, int64_t i, int act) {
    return act ? load_bf16((const bf16 *)p + i) : load_f32((const float *)p + i);
}

typedef int (*product_fn)(const void *x, const void *w, const float *scale, const void *bias, void *y,
                          int64_t in, int64_t out, int64_t group, int act, int threads);

#endif
