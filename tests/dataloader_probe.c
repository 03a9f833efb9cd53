/*
dataloader_probe.c: drives llmc/dataloader.h exactly as the trainers do and writes every batch to
a file, so tests/test_dataloader.py can check each batch against the window it must be (no
stdout scraping).

usage: dataloader_probe PATTERN B T V SHUFFLE SEED NBATCHES OUT [SEEK_EPOCH SEEK_CURSOR]
  T = 0 takes T = E-1 from example shards. With SEEK_*, the loader is positioned with
  dataloader_seek() first (what --resume does).

OUT (little-endian): int64 header [B, T, kind (1 tokens, 2 examples), NBATCHES, batches_per_epoch,
num_shards]; then per batch int64 [epoch, cursor, shard, unit, num_rows] (the loader's state
after the batch: cursor = batches taken in that epoch; shard = index in sorted glob order;
unit = window index (tokens) or batch index inside the shard (examples)), then int32 inputs (B*T),
targets (B*T) and loss mask (B*T; all 1 for token data).
Build: gcc -O1 -I. tests/dataloader_probe.c -o dataloader_probe (the test does this).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "llmc/dataloader.h"
#include "llmc/utils.h"

static void put64(FILE* f, long long v) {
    int64_t x = (int64_t)v;
    fwriteCheck(&x, sizeof(x), 1, f);
}

int main(int argc, char** argv) {
    if (argc != 9 && argc != 11) {
        fprintf(stderr, "usage: %s PATTERN B T V SHUFFLE SEED NBATCHES OUT [SEEK_EPOCH SEEK_CURSOR]\n", argv[0]);
        return 2;
    }
    const char* pattern = argv[1];
    int B = atoi(argv[2]), T = atoi(argv[3]), V = atoi(argv[4]), shuffle = atoi(argv[5]);
    unsigned long long seed = strtoull(argv[6], NULL, 10);
    long long nbatches = atoll(argv[7]);
    if (T == 0) {
        int E = 0;
        if (data_kind_of(pattern, "-i", &E) != DATA_EXAMPLES) { fatal("T = 0 needs example shards"); }
        T = E - 1;
    }
    DataLoader dl;
    dataloader_init(&dl, pattern, "-i", B, T, V, shuffle, (uint64_t)seed);
    if (argc == 11) { dataloader_seek(&dl, strtoull(argv[9], NULL, 10), (size_t)strtoull(argv[10], NULL, 10)); }
    FILE* f = fopenCheck(argv[8], "wb");
    put64(f, B);
    put64(f, T);
    put64(f, dl.kind);
    put64(f, nbatches);
    put64(f, (long long)dl.batches_per_epoch);
    put64(f, (long long)dl.num_shards);
    size_t n = (size_t)B * (size_t)T;
    int* ones = (int*)mallocCheck(n * sizeof(int));
    for (size_t i = 0; i < n; i++) { ones[i] = 1; }
    for (long long k = 0; k < nbatches; k++) {
        dataloader_next_batch(&dl);
        put64(f, (long long)dl.epoch);
        put64(f, (long long)dl.cursor);
        put64(f, (long long)dl.last_shard);
        put64(f, (long long)dl.last_unit);
        put64(f, dl.num_rows);
        fwriteCheck(dl.inputs, sizeof(int), n, f);
        fwriteCheck(dl.targets, sizeof(int), n, f);
        fwriteCheck(dl.loss_mask ? dl.loss_mask : ones, sizeof(int), n, f);
    }
    fcloseCheck(f);
    free(ones);
    dataloader_free(&dl);
    return 0;
}
