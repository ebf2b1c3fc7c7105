/* A decoder's step for one token of one sequence in one call from Python (models/native/decoder.py):
 * the embeddings' sum and every block (block.c), and for greedy decoding also the final norm, the
 * head's product and the argmax of its logits, so that a step is one call rather than one and a
 * few dozen of PyTorch's and Python's, each cold after the weights have streamed through the
 * caches (docs/performance.md). argmax_row is greedy decoding's choice for Python's steps too
 * (models/native/argmax.py).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "block.h"

typedef struct {  /* the body of a decoder for one token: its embeddings and blocks */
    const void *tokens, *positions;  /* [vocabulary, C], [positions, C], act dtype */
    const block *blocks;             /* n_layer of them */
    void *const *keys, *const *values;  /* each layer's cache, [H, capacity, D] of dtype cache_act */
    int64_t n_layer, capacity;
    int cache_act;
} decoder;

/* Token `token` at `position` through the embeddings (their sum, rounded to the activations'
 * dtype as PyTorch's addition rounds) and every block, into x [C]: the last hidden state before
 * any final norm. The caller checks the token, the position and the capacity. Returns as
 * block_step does. */
int decoder_step(const decoder *d, int64_t token, int64_t position, void *x, int threads) {
    int act = d->blocks[0].act, size = act ? 2 : 4;
    int64_t C = d->blocks[0].n_embd;
    memcpy(x, (const char *)d->tokens + token * C * size, (size_t)(C * size));
    add_into_row(x, (const char *)d->positions + position * C * size, C, act);
    int status = 0;
    for (int64_t l = 0; status == 0 && l < d->n_layer; l++)
        status = block_step(&d->blocks[l], x, x, d->keys[l], d->values[l], d->capacity, position, d->cache_act,
                            threads);
    return status;
}

/* The index of the largest of v[0..n) (act dtype, n >= 1): the first of equal ones, or the first
 * NaN where there is one, as torch.argmax answers. One vectorised pass for the largest value,
 * one for where it is; infinities and NaNs take a plain scan. */
INLINE int64_t argmax_as(const void *v, int64_t n, int act) {
    float most = -INFINITY, poison = 0;
    #pragma omp simd reduction(max:most) reduction(+:poison)
    for (int64_t i = 0; i < n; i++) {
        float a = load(v, i, act);
        most = a > most ? a : most;
        poison += a * 0.0f;  /* NaN if any value is NaN or infinite */
    }
    if (poison == 0) {
        for (int64_t i = 0; i < n; i++)
            if (load(v, i, act) == most) return i;
    }
    int64_t at = 0;
    float best = load(v, 0, act);
    for (int64_t i = 0; i < n; i++) {
        float a = load(v, i, act);
        if (a != a) return i;
        if (a > best) { best = a; at = i; }
    }
    return at;
}

int64_t argmax_row(const void *v, int64_t n, int act) {
    return act ? argmax_as(v, n, 1) : argmax_as(v, n, 0);
}

typedef void (*norm_fn)(const void *x, const void *weight, const void *bias, float eps, void *y, int64_t n, int act);

typedef struct {  /* a greedy step: the body, the final norm (norm NULL: none, as GPT's) and the head */
    const decoder *body;
    norm_fn norm;  /* the build's layer_norm_row that Python's final norm runs (one function: one rounding) */
    const void *norm_weight, *norm_bias;  /* [C], act dtype */
    float norm_eps;
    product head;  /* [C -> V]: the head's one-row product, as Python's would run it */
} greedy;

/* n greedy steps from `token` at `position`: each decoder_step, then the final norm of x [C] in
 * place, the head into logits [V] (act dtype) and argmax_row's answer over them, the next token,
 * written to chosen[i] and fed to the next step. The caller checks the token and that positions
 * position .. position + n - 1 fit. Returns 0, or a negative status (chosen then holds the steps
 * made before it). */
int64_t greedy_steps(const greedy *g, int64_t token, int64_t position, int64_t n, int64_t *chosen, void *x,
                     void *logits, int threads) {
    const block *first = &g->body->blocks[0];
    int act = first->act;
    for (int64_t i = 0; i < n; i++) {
        int status = decoder_step(g->body, token, position + i, x, threads);
        if (status == 0 && g->norm) g->norm(x, g->norm_weight, g->norm_bias, g->norm_eps, x, first->n_embd, act);
        if (status == 0) status = run_product(&g->head, x, logits, act, threads);
        if (status != 0) return status < 0 ? status : -status;
        chosen[i] = token = argmax_row(logits, g->head.out, act);
    }
    return 0;
}
