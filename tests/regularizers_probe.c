/*
regularizers_probe.c: writes the dropout factors and weight-noise values of llmc/regularizers.h
to a file, so tests/test_regularizers.py can compare dev/regularizers.py with them bit for bit.

usage: regularizers_probe SEED STEP LAYER SITE P N SIGMA OUT
OUT (little-endian): uint64 dropout_key, uint64 noise_key, uint32 threshold, float32 scale, then
N float32 dropout factors of (SEED, STEP, LAYER, SITE) at rate P, then N float32 weight-noise
values (flat parameter indices 0..N-1 of step STEP, sigma SIGMA).
Build: gcc -O1 -I. tests/regularizers_probe.c -o regularizers_probe -lm (the test does this).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "llmc/regularizers.h"
#include "llmc/utils.h"

int main(int argc, char** argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s SEED STEP LAYER SITE P N SIGMA OUT\n", argv[0]);
        return 2;
    }
    uint64_t seed = strtoull(argv[1], NULL, 10);
    int step = atoi(argv[2]), layer = atoi(argv[3]), site = atoi(argv[4]);
    float p = strtof(argv[5], NULL);
    size_t n = strtoull(argv[6], NULL, 10);
    float sigma = strtof(argv[7], NULL);
    DropoutConfig d = dropout_config(p);
    uint64_t dkey = dropout_key(seed, step, layer, site), nkey = noise_key(seed, step);
    FILE* f = fopenCheck(argv[8], "wb");
    fwriteCheck(&dkey, sizeof(dkey), 1, f);
    fwriteCheck(&nkey, sizeof(nkey), 1, f);
    fwriteCheck(&d.threshold, sizeof(d.threshold), 1, f);
    fwriteCheck(&d.scale, sizeof(d.scale), 1, f);
    for (size_t i = 0; i < n; i++) {
        float x = dropout_factor(dkey, i, d.threshold, d.scale);
        fwriteCheck(&x, sizeof(x), 1, f);
    }
    for (size_t j = 0; j < n; j++) {
        float x = weight_noise_at(nkey, j, sigma);
        fwriteCheck(&x, sizeof(x), 1, f);
    }
    fcloseCheck(f);
    return 0;
}
