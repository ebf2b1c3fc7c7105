/* What decode.c and block.c share: bfloat16 to and from float32, values of the activations'
 * dtype (act 0: float32, 1: bfloat16), and the signature every one-row product has (block.c
 * calls the products by pointer; `group` means something to gemv_int4 only). */
#ifndef GPT_HUB_VALUES_H
#define GPT_HUB_VALUES_H

#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

static inline float from_bf16(bf16 h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }

static inline bf16 to_bf16(float f) {  /* round to nearest even, as torch does; NaN stays NaN */
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);
    return (bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float load(const void *p, int64_t i, int act) {
    return act ? from_bf16(((const bf16 *)p)[i]) : ((const float *)p)[i];
}

static inline void store(void *p, int64_t i, float v, int act) {
    if (act) ((bf16 *)p)[i] = to_bf16(v); else ((float *)p)[i] = v;
}

typedef int (*product_fn)(const void *x, const void *w, const float *scale, const void *bias, void *y,
                          int64_t in, int64_t out, int64_t group, int act, int threads);

#endif
