/* What block.c and decoder.c share: a product called by pointer, a block's operands, and the
 * block's parts a decoder step also runs (a block, a layer norm, a residual sum). */
#ifndef GPT_HUB_BLOCK_H
#define GPT_HUB_BLOCK_H

#include "values.h"

/* The elementwise parts are each written once over act and inlined twice, with act 0 and with
 * act 1: with the dtype a constant, their loops vectorise. */
#define INLINE static inline __attribute__((always_inline))
#define FOR_EACH_ACT(call) do { if (act) call(1); else call(0); } while (0)

typedef struct {  /* one product: fn(x, weight, scale, bias, y, in, out, group, act, threads) */
    product_fn fn;
    const void *weight;
    const float *scale;
    const void *bias;
    int64_t in, out, group;
} product;

typedef struct {
    product qkv, proj, up, down;  /* [C -> 3C], [C -> C], [C -> inner], [inner -> C] */
    const void *norm1_weight, *norm1_bias, *norm2_weight, *norm2_bias;  /* [C] each, act dtype */
    int64_t n_embd, n_head, inner;
    float norm1_eps, norm2_eps, scale;
    int pre_norm;    /* GPT-2's order (normalise, then attend or widen); else GPT's */
    int activation;  /* 0: GELU, tanh approximation; 1: ReLU */
    int act;
} block;

static inline int run_product(const product *p, const void *x, void *y, int act, int threads) {
    return p->fn(x, p->weight, p->scale, p->bias, y, p->in, p->out, p->group, act, threads);
}

/* The block on x_in [C] into x_out [C] (act dtype; they may be the same), writing the token's key
 * and value at `position` of the layer's cache (keys, values: [H, capacity, D], float32, or
 * bfloat16 for bfloat16 activations, whose keys and values it holds exactly: cache_act 0 or 1, as
 * act; the caller checks position < capacity). Returns 0, -1 when out of memory, or a product's
 * failure. */
int block_step(const block *b, const void *x_in, void *x_out, void *keys, void *values, int64_t capacity,
               int64_t position, int cache_act, int threads);

/* LayerNorm of x [n] into y [n] (act dtype; they may be the same): float32 sums, one rounding. */
void layer_norm_row(const void *x, const void *weight, const void *bias, float eps, void *y, int64_t n, int act);

/* x = x + a, rounded to the activations' dtype. */
void add_into_row(void *x, const void *a, int64_t n, int act);

#endif
