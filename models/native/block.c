/* One transformer block for one new token (batch 1): the whole of models/functional.py's
 * `block` for a decoding step in one call from Python, where the same step through PyTorch's
 * operators costs about a hundred microseconds of dispatch per block besides its products
 * (docs/performance.md). The products are the one-row kernels of decode.c, called by pointer;
 * what is around them (layer norms, attention over the cache, the non-linearity, the residual
 * sums) is here, in loops the compiler vectorises (`omp simd`), attention on values.h's vectors.
 *
 * It rounds where the functional code rounds: with bfloat16 activations (act 1) every
 * intermediate that PyTorch would hold as a bfloat16 tensor is rounded to bfloat16 here too,
 * while sums are float32; attention runs in float32, as on CPU the functional code's does, over
 * a cache of float32 or, for bfloat16 activations, of bfloat16, which holds their keys and values
 * exactly in half the bytes (models/kv_cache.py). Results agree with it up to float rounding
 * (the order of sums, exp and tanh to within a few units in the last place).
 *
 * decoder.c runs the blocks of a whole step in one call.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>
#include "block.h"

/* From this many positions attention shares its heads among the threads: below, a fork and join
 * cost more than they save (measured on two cores, docs/performance.md). */
#define ATTEND_THREADED 48

/* exp(a) to about one unit in the last place: a = n ln 2 + r, a polynomial for exp(r) (the
 * Cephes coefficients), times 2^n built in the exponent bits. Written to be vectorised: n is
 * rounded by adding and taking away 1.5 * 2^23 (floorf would keep GCC's loops scalar). */
static inline float exp_approx(float a) {
    a = a > 88.3762626647949f ? 88.3762626647949f : a;
    a = a < -87.3365447504f ? -87.3365447504f : a;  /* NaN passes both and stays NaN */
    float n = (a * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* to nearest, |n| <= 128 */
    float r = a - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, 4);
    return p * two_n;
}

INLINE void layer_norm_as(const void *x, const void *weight, const void *bias, float eps, void *y, int64_t n,
                          int act) {
    float sum = 0, squares = 0;
    #pragma omp simd reduction(+:sum)
    for (int64_t i = 0; i < n; i++) sum += load(x, i, act);
    float mean = sum / (float)n;
    #pragma omp simd reduction(+:squares)
    for (int64_t i = 0; i < n; i++) { float d = load(x, i, act) - mean; squares += d * d; }
    float inverse = 1.0f / sqrtf(squares / (float)n + eps);
    #pragma omp simd
    for (int64_t i = 0; i < n; i++)
        store(y, i, (load(x, i, act) - mean) * inverse * load(weight, i, act) + load(bias, i, act), act);
}

void layer_norm_row(const void *x, const void *weight, const void *bias, float eps, void *y, int64_t n,
                    int act) {
#define LAYER_NORM(a) layer_norm_as(x, weight, bias, eps, y, n, a)
    FOR_EACH_ACT(LAYER_NORM);
}

INLINE void add_into_as(void *x, const void *a, int64_t n, int act) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) store(x, i, load(x, i, act) + load(a, i, act), act);
}

void add_into_row(void *x, const void *a, int64_t n, int act) {
#define ADD_INTO(k) add_into_as(x, a, n, k)
    FOR_EACH_ACT(ADD_INTO);
}

/* GELU's tanh approximation, 0.5 v (1 + tanh(sqrt(2 / pi) (v + 0.044715 v^3))), with
 * tanh t = 1 - 2 / (e^2t + 1); or ReLU (NaN stays NaN, as in torch.relu). */
INLINE void activate_as(void *u, int64_t n, int gelu, int act) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float v = load(u, i, act), t = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        store(u, i, gelu ? 0.5f * v * (2.0f - 2.0f / (exp_approx(2.0f * t) + 1.0f)) : (v < 0 ? 0.0f : v), act);
    }
}

static void activate(void *u, int64_t n, int activation, int act) {
#define GELU(k) activate_as(u, n, 1, k)
#define RELU(k) activate_as(u, n, 0, k)
    if (activation == 0) FOR_EACH_ACT(GELU); else FOR_EACH_ACT(RELU);
}

/* The new key and value (in qkv after the query, act dtype) into the cache at `position`. */
INLINE void write_key_value_as(const void *qkv, void *keys, void *values, int64_t C, int64_t D, int64_t capacity,
                               int64_t position, int act, int cache_act) {
    for (int64_t h = 0; h < C / D; h++) {
        int64_t at = (h * capacity + position) * D;
        #pragma omp simd
        for (int64_t d = 0; d < D; d++) {
            store(keys, at + d, load(qkv, C + h * D + d, act), cache_act);
            store(values, at + d, load(qkv, 2 * C + h * D + d, act), cache_act);
        }
    }
}

static void write_key_value(const void *qkv, void *keys, void *values, int64_t C, int64_t D, int64_t capacity,
                            int64_t position, int act, int cache_act) {
#define INTO_FLOAT32(a) write_key_value_as(qkv, keys, values, C, D, capacity, position, a, 0)
#define INTO_BFLOAT16(a) write_key_value_as(qkv, keys, values, C, D, capacity, position, a, 1)
    if (cache_act) FOR_EACH_ACT(INTO_BFLOAT16); else FOR_EACH_ACT(INTO_FLOAT32);
}

/* sum of a[d] * b[at + d], d < n; b of dtype cache_act */
INLINE float dot_as(const float *a, const void *b, int64_t at, int64_t n, int cache_act) {
    vf sum = vzero();
    int64_t d = 0;
    for (; d + VL <= n; d += VL) sum = vfma(load_f32(a + d), load_as(b, at + d, cache_act), sum);
    float r = vsum(sum);
    for (; d < n; d++) r += a[d] * load(b, at + d, cache_act);
    return r;
}

/* One head: softmax(q . k_j * scale) over j <= position, times the values; into y (act dtype).
 * q is float32 [D] (overwritten), scores room for position + 1 floats; the head's keys and values
 * start at element `at` of the layer's (dtype cache_act). */
INLINE void attend_head_as(const block *b, float *q, float *scores, const void *k, const void *v, int64_t at,
                           int64_t D, int64_t position, void *y, int cache_act) {
    int64_t S = position + 1;
    float most = -INFINITY, total = 0;
    for (int64_t j = 0; j < S; j++) {
        scores[j] = dot_as(q, k, at + j * D, D, cache_act) * b->scale;
        most = scores[j] > most ? scores[j] : most;
    }
    #pragma omp simd reduction(+:total)
    for (int64_t j = 0; j < S; j++) { scores[j] = exp_approx(scores[j] - most); total += scores[j]; }
    int64_t d = 0;
    for (; d + 4 * VL <= D; d += 4 * VL) {  /* 4 VL of q's sum at a time, in registers over all j */
        vf s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();
        for (int64_t j = 0; j < S; j++) {
            vf p = vset(scores[j]);
            int64_t row = at + j * D + d;
            s0 = vfma(p, load_as(v, row, cache_act), s0);
            s1 = vfma(p, load_as(v, row + VL, cache_act), s1);
            s2 = vfma(p, load_as(v, row + 2 * VL, cache_act), s2);
            s3 = vfma(p, load_as(v, row + 3 * VL, cache_act), s3);
        }
        store_f32(q + d, s0); store_f32(q + d + VL, s1); store_f32(q + d + 2 * VL, s2); store_f32(q + d + 3 * VL, s3);
    }
    for (; d + VL <= D; d += VL) {
        vf sum = vzero();
        for (int64_t j = 0; j < S; j++) sum = vfma(vset(scores[j]), load_as(v, at + j * D + d, cache_act), sum);
        store_f32(q + d, sum);
    }
    for (; d < D; d++) {
        float sum = 0;
        for (int64_t j = 0; j < S; j++) sum += scores[j] * load(v, at + j * D + d, cache_act);
        q[d] = sum;
    }
    for (d = 0; d < D; d++) store(y, d, q[d] / total, b->act);
}

/* Each head's query (in qkv, act dtype) over its keys and values 0..position, [H, capacity, D]
 * of dtype cache_act; the result, rounded to the activations' dtype, into y [C]. */
static int attend(const block *b, const void *qkv, const void *keys, const void *values, int64_t capacity,
                  int64_t position, void *y, int cache_act, int threads) {
    int64_t heads = b->n_head, D = b->n_embd / heads, S = position + 1;
    float *scratch = malloc((size_t)heads * (size_t)(S + D) * sizeof(float));
    if (!scratch) return -1;
    #pragma omp parallel for schedule(static) num_threads(S >= ATTEND_THREADED ? threads : 1)
    for (int64_t h = 0; h < heads; h++) {
        float *scores = scratch + h * (S + D), *q = scores + S;
        void *out = (char *)y + h * D * (b->act ? 2 : 4);
        for (int64_t d = 0; d < D; d++) q[d] = load(qkv, h * D + d, b->act);
        if (cache_act) attend_head_as(b, q, scores, keys, values, h * capacity * D, D, position, out, 1);
        else attend_head_as(b, q, scores, keys, values, h * capacity * D, D, position, out, 0);
    }
    free(scratch);
    return 0;
}

/* block.h says what it computes. */
int block_step(const block *b, const void *x_in, void *x_out, void *keys, void *values, int64_t capacity,
               int64_t position, int cache_act, int threads) {
    int act = b->act, size = act ? 2 : 4;
    int64_t C = b->n_embd, D = C / b->n_head;
    char *scratch = malloc((size_t)(6 * C + b->inner) * (size_t)size);
    if (!scratch) return -1;
    void *h = scratch, *qkv = scratch + C * size, *attended = scratch + 4 * C * size;
    void *out = scratch + 5 * C * size, *u = scratch + 6 * C * size;
    if (x_out != x_in) memcpy(x_out, x_in, (size_t)(C * size));
    const void *normed = x_out;  /* GPT-2 normalises before attending; GPT after */
    if (b->pre_norm) { layer_norm_row(x_out, b->norm1_weight, b->norm1_bias, b->norm1_eps, h, C, act); normed = h; }
    int status = run_product(&b->qkv, normed, qkv, act, threads);
    if (status == 0) write_key_value(qkv, keys, values, C, D, capacity, position, act, cache_act);
    if (status == 0) status = attend(b, qkv, keys, values, capacity, position, attended, cache_act, threads);
    if (status == 0) status = run_product(&b->proj, attended, out, act, threads);
    if (status == 0) {
        add_into_row(x_out, out, C, act);
        if (b->pre_norm) layer_norm_row(x_out, b->norm2_weight, b->norm2_bias, b->norm2_eps, h, C, act);
        else layer_norm_row(x_out, b->norm1_weight, b->norm1_bias, b->norm1_eps, x_out, C, act);
        status = run_product(&b->up, b->pre_norm ? h : x_out, u, act, threads);
    }
    if (status == 0) {
        activate(u, b->inner, b->activation, act);
        status = run_product(&b->down, u, out, act, threads);
    }
    if (status == 0) {
        add_into_row(x_out, out, C, act);
        if (!b->pre_norm) layer_norm_row(x_out, b->norm2_weight, b->norm2_bias, b->norm2_eps, x_out, C, act);
    }
    free(scratch);
    return status;
}
