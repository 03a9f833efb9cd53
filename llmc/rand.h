/*
rand.h: a small seeded random number generator whose whole state is one
uint64 (so it is saved in the training-state file and a resumed run draws the
same numbers).

Contract:
- rng_seed(&r, seed) mixes the seed with splitmix64; any seed (0 included)
  gives a valid non-zero state. rng_u64 is xorshift64* (Vigna, 2016).
- rng_float returns a float in [0, 1) with 24 random bits.
- rng_below(&r, n) is uniform on [0, n) (rejection sampling, no modulo bias).
- rng_shuffle permutes an index array with Fisher-Yates.
- mix_seed(a, b) derives an independent stream seed from two numbers (for
  example the run seed and the epoch), so a shuffle can be recomputed from
  (seed, epoch) alone.
The same seed gives the same numbers on every platform.
*/
#ifndef LLMC_RAND_H
#define LLMC_RAND_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t state; // never 0
} Rng;

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static inline uint64_t mix_seed(uint64_t a, uint64_t b) {
    return splitmix64(splitmix64(a) ^ (b * 0xD1B54A32D192ED03ULL + 0x632BE59BD9B4E019ULL));
}

static inline void rng_seed(Rng* r, uint64_t seed) {
    r->state = splitmix64(seed);
    if (r->state == 0) { r->state = 0x9E3779B97F4A7C15ULL; }
}

static inline uint64_t rng_u64(Rng* r) {
    uint64_t x = r->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline float rng_float(Rng* r) {
    return (float)(rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

static inline uint64_t rng_below(Rng* r, uint64_t n) {
    if (n <= 1) { return 0; }
    uint64_t limit = UINT64_MAX - (UINT64_MAX % n); // accept x < limit: a multiple of n values
    uint64_t x;
    do { x = rng_u64(r); } while (x >= limit);
    return x % n;
}

static inline void rng_shuffle(Rng* r, size_t* a, size_t n) {
    if (n < 2) { return; }
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)rng_below(r, (uint64_t)i + 1);
        size_t tmp = a[i];
        a[i] = a[j];
        a[j] = tmp;
    }
}

#endif // LLMC_RAND_H
