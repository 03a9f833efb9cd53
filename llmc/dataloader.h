/*
dataloader.h: batches from a glob of token shards or example shards.

Formats (README, "File formats"): token shard = header [0] 20240520, [1] 1,
[2] N, then N uint16 tokens. Example shard = header [0] 20261122, [1] 1, [2] N
examples, [3] E tokens each, [4] V bound, then N*E uint16 tokens, then N*E
uint8 mask bytes (mask byte j = 1: token j is a scored target).

Batches (B rows of T positions; inputs, targets (B, T) int; loss_mask (B, T)
int 0/1, or NULL for token data where every position counts):
- Token shards: a batch is one window of B*T+1 consecutive tokens of one shard;
  row b is tokens [b*T, b*T+T) of the window, its targets the same shifted by
  one. Window w of a shard starts at token w*B*T, so a shard of N tokens has
  (N-1)/(B*T) windows (integer division; the tail is unused). A window never
  straddles two shards.
- Example shards: T = E-1; a batch is B examples of one shard; row b holds
  example tokens 0..E-2 as inputs, 1..E-1 as targets and mask bytes 1..E-1 as
  the loss mask. Training uses N/B batches per shard and epoch (the leftover
  examples differ from epoch to epoch); validation uses ceil(N/B): the last
  batch of a shard may be partial, its missing rows are zero with mask 0 and
  `num_rows` says how many rows are real.
- Order. shuffle=1 (training): every epoch e draws a new order of the shards
  and, inside each shard, of its windows (token data) or examples (example
  data), from seeds mix_seed(seed, e) and mix_seed(mix_seed(seed, e), shard
  index), so the position (epoch, cursor) alone determines every later batch:
  that pair is what the training state saves. shuffle=0 (validation): shards
  in sorted glob order, windows and examples in file order.
- After the last batch of an epoch, the next call starts the next epoch.

Checks (each fatal with the file, the value and the fix): the glob matches no
file; a file is not a shard (magic, version, size); token and example shards
mixed; example shards of different E; T != E-1 for example data; a shard too
small for one batch; any token id >= V (every shard is scanned once at init,
and each batch again as it is read); a mask byte other than 0/1.
All offsets are size_t/off_t: shards over 2 GB work.
*/
#ifndef LLMC_DATALOADER_H
#define LLMC_DATALOADER_H

#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2_params.h"
#include "rand.h"
#include "utils.h"

#define TOKEN_SHARD_MAGIC 20240520
#define TOKEN_SHARD_VERSION 1
#define EXAMPLE_SHARD_MAGIC 20261122
#define EXAMPLE_SHARD_VERSION 1

#define DATA_TOKENS 1
#define DATA_EXAMPLES 2

#define TOKEN_SHARD_FIX "Re-create it with prepro_tinystories.py (or check the path)."
#define EXAMPLE_SHARD_FIX "Re-create it with the script that wrote it (or check the path)."

typedef struct {
    char* path;
    size_t num_tokens;   // tokens in the file (N for token shards, N*E for example shards)
    size_t num_examples; // N for example shards, 0 for token shards
    size_t num_batches;  // batches this shard yields per epoch
} DataShard;

typedef struct {
    // configuration
    char* flag;          // the flag that named the glob ("-i", "-j"), for messages
    int kind;            // DATA_TOKENS or DATA_EXAMPLES
    int B, T, E, V;      // E = T+1 for example data, 0 for token data
    int shuffle;
    uint64_t seed;
    size_t num_shards;
    DataShard* shards;   // (num_shards) in sorted glob order
    size_t batches_per_epoch;
    // position
    uint64_t epoch;
    size_t cursor;          // batches already returned in this epoch
    // the current epoch's plan
    size_t* shard_order;    // (num_shards)
    size_t plan_pos;        // index into shard_order of the current shard
    size_t batch_in_shard;  // batches already taken from the current shard
    size_t* unit_order;     // (units of the current shard) windows or examples, when shuffling
    size_t unit_order_len;
    size_t unit_order_for;  // plan_pos that unit_order was drawn for, SIZE_MAX if none
    FILE* fp;
    size_t fp_shard;        // shard index open in fp, SIZE_MAX if none
    // buffers and outputs
    uint16_t* tok_buf;      // (B*T+1) for token data, (E) for example data
    unsigned char* mask_buf; // (E)
    int* inputs;            // (B, T)
    int* targets;           // (B, T)
    int* loss_mask;         // (B, T) 0/1 for example data, NULL for token data
    int num_rows;           // real rows in the last batch (B except a partial validation batch)
    size_t last_shard;      // shard index (glob order) of the last batch
    size_t last_unit;       // its window index (token data) or batch index in the shard (examples)
} DataLoader;

// Reads header info of one shard: returns its kind, fills N (tokens or
// examples), E (examples only) and the V bound (examples only). fatal on error.
static inline int shard_read_info(const char* path, size_t* n, int* E, int* vbound) {
    int is_dir = 0;
    long long size = file_size_or_neg(path, &is_dir);
    if (is_dir) { fatal("data path %s is a folder, expected a token or example shard file", path); }
    if (size < 0) { fatal("data file %s does not exist. %s", path, TOKEN_SHARD_FIX); }
    if (size < (long long)HEADER_BYTES) {
        fatal("data file %s is truncated: %lld bytes, shorter than its %d-byte header. %s",
              path, size, (int)HEADER_BYTES, TOKEN_SHARD_FIX);
    }
    int32_t header[HEADER_INTS];
    FILE* fp = fopenCheck(path, "rb");
    freadCheck(header, sizeof(int32_t), HEADER_INTS, fp);
    fcloseCheck(fp);
    if (header[0] == TOKEN_SHARD_MAGIC) {
        if (header[1] != TOKEN_SHARD_VERSION) {
            fatal("token shard file %s has version %d, expected %d. %s", path, header[1],
                  TOKEN_SHARD_VERSION, TOKEN_SHARD_FIX);
        }
        if (header[2] < 0) {
            fatal("token shard file %s has token count %d in its header, expected >= 0. %s",
                  path, header[2], TOKEN_SHARD_FIX);
        }
        *n = (size_t)(uint32_t)header[2];
        char what[128];
        snprintf(what, sizeof(what), "1024-byte header + 2 * %zu tokens", *n);
        check_file_size(path, "token shard", size, (long long)(HEADER_BYTES + 2 * *n), what, TOKEN_SHARD_FIX);
        *E = 0;
        *vbound = 65536;
        return DATA_TOKENS;
    }
    if (header[0] == EXAMPLE_SHARD_MAGIC) {
        if (header[1] != EXAMPLE_SHARD_VERSION) {
            fatal("example shard file %s has version %d, expected %d. %s", path, header[1],
                  EXAMPLE_SHARD_VERSION, EXAMPLE_SHARD_FIX);
        }
        int N = header[2], e = header[3], vb = header[4];
        if (N < 1 || e < 2 || e > GPT2_MAX_SEQ_LEN + 1 || vb < 1 || vb > GPT2_MAX_VOCAB) {
            fatal("example shard file %s has inconsistent header N=%d E=%d V=%d, expected N >= 1, "
                  "2 <= E <= %d, 1 <= V <= %d. %s", path, N, e, vb, GPT2_MAX_SEQ_LEN + 1, GPT2_MAX_VOCAB,
                  EXAMPLE_SHARD_FIX);
        }
        *n = (size_t)N;
        *E = e;
        *vbound = vb;
        char what[128];
        snprintf(what, sizeof(what), "1024-byte header + 3 * N*E with N=%d E=%d", N, e);
        check_file_size(path, "example shard", size, (long long)(HEADER_BYTES + 3 * (size_t)N * (size_t)e),
                        what, EXAMPLE_SHARD_FIX);
        return DATA_EXAMPLES;
    }
    fatal("data file %s has magic number %d, expected %d (token shard) or %d (example shard): it "
          "is not a shard. %s", path, header[0], TOKEN_SHARD_MAGIC, EXAMPLE_SHARD_MAGIC, TOKEN_SHARD_FIX);
}

// Expands a glob (sorted); fatal when it matches nothing. Returns the count;
// *paths_out is a malloc'd array of malloc'd strings.
static inline size_t glob_files(const char* pattern, const char* flag, char*** paths_out) {
    if (pattern == NULL || pattern[0] == '\0') {
        fatal("%s: no data path given (pass a file or a glob such as 'data/train_*.bin')", flag);
    }
    glob_t g;
    memset(&g, 0, sizeof(g));
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        globfree(&g);
        fatal("%s %s: no files match this path or glob. Check the path (quote globs so the shell "
              "does not expand them), or create the shards with prepro_tinystories.py.", flag, pattern);
    }
    if (rc != 0) {
        globfree(&g);
        fatal("%s %s: glob failed (code %d)", flag, pattern, rc);
    }
    char** paths = (char**)mallocCheck(g.gl_pathc * sizeof(char*));
    for (size_t i = 0; i < g.gl_pathc; i++) { paths[i] = str_dup(g.gl_pathv[i]); }
    size_t n = g.gl_pathc;
    globfree(&g);
    *paths_out = paths;
    return n;
}

// The data kind of the first file of a glob (DATA_TOKENS or DATA_EXAMPLES);
// for example data *E is the tokens per example (the trainer uses T = E-1).
static inline int data_kind_of(const char* pattern, const char* flag, int* E) {
    char** paths = NULL;
    size_t n = glob_files(pattern, flag, &paths);
    size_t count;
    int vbound;
    int kind = shard_read_info(paths[0], &count, E, &vbound);
    for (size_t i = 0; i < n; i++) { free(paths[i]); }
    free(paths);
    return kind;
}

// Scans a whole shard once: every token < V (and < the example V bound), every
// mask byte 0/1 and mask byte 0 of each example 0.
static inline void shard_scan(const char* path, int kind, size_t num_tokens, int E, int vbound, int V) {
    const size_t chunk = (size_t)1 << 20;
    uint16_t* buf = (uint16_t*)mallocCheck(chunk * sizeof(uint16_t));
    FILE* fp = fopenCheck(path, "rb");
    fseekCheck(fp, (off_t)HEADER_BYTES, SEEK_SET);
    for (size_t start = 0; start < num_tokens; start += chunk) {
        size_t n = num_tokens - start < chunk ? num_tokens - start : chunk;
        freadCheck(buf, sizeof(uint16_t), n, fp);
        uint16_t maxtok = 0;
        for (size_t i = 0; i < n; i++) { maxtok = buf[i] > maxtok ? buf[i] : maxtok; }
        if ((int)maxtok >= V || (int)maxtok >= vbound) {
            for (size_t i = 0; i < n; i++) {
                size_t pos = start + i;
                if ((int)buf[i] >= V) {
                    if (kind == DATA_TOKENS) {
                        fatal("token shard %s: token id %d at position %zu is >= the model's vocab size "
                              "V=%d. The shard was made for a different vocabulary: re-create it or use "
                              "a model with a larger V.", path, (int)buf[i], pos, V);
                    }
                    fatal("example shard %s: token id %d at example %zu position %zu is >= the model's "
                          "vocab size V=%d. Re-create the shard or use a model with a larger V.",
                          path, (int)buf[i], pos / (size_t)E, pos % (size_t)E, V);
                }
                if ((int)buf[i] >= vbound) {
                    fatal("example shard %s: token id %d at example %zu position %zu is >= the header's "
                          "V bound %d. %s", path, (int)buf[i], pos / (size_t)E, pos % (size_t)E, vbound,
                          EXAMPLE_SHARD_FIX);
                }
            }
        }
    }
    if (kind == DATA_EXAMPLES) {
        unsigned char* mb = (unsigned char*)buf;
        size_t mchunk = chunk * sizeof(uint16_t);
        mchunk -= mchunk % (size_t)E; // whole examples per chunk
        for (size_t start = 0; start < num_tokens; start += mchunk) {
            size_t n = num_tokens - start < mchunk ? num_tokens - start : mchunk;
            freadCheck(mb, 1, n, fp);
            for (size_t i = 0; i < n; i++) {
                size_t pos = start + i;
                if (mb[i] > 1 || (pos % (size_t)E == 0 && mb[i] != 0)) {
                    fatal("example shard %s: mask byte %d at example %zu position %zu, expected %s. %s",
                          path, (int)mb[i], pos / (size_t)E, pos % (size_t)E,
                          pos % (size_t)E == 0 ? "0 (token 0 is never a target)" : "0 or 1",
                          EXAMPLE_SHARD_FIX);
                }
            }
        }
    }
    fcloseCheck(fp);
    free(buf);
}

// Batches a shard yields per epoch (see the contract at the top).
static inline size_t shard_num_batches(const DataShard* s, int kind, int B, int T, int shuffle) {
    if (kind == DATA_TOKENS) {
        size_t bt = (size_t)B * (size_t)T;
        return s->num_tokens < bt + 1 ? 0 : (s->num_tokens - 1) / bt;
    }
    return shuffle ? s->num_examples / (size_t)B : (s->num_examples + (size_t)B - 1) / (size_t)B;
}

static inline void dataloader_seek(DataLoader* dl, uint64_t epoch, size_t cursor);

// Opens every shard of `pattern` (sorted), checks them all, and positions the
// loader at epoch 0, batch 0. flag: "-i"/"-j" for messages. V: the model's
// vocab size. shuffle: 1 for training order, 0 for validation order.
static inline void dataloader_init(DataLoader* dl, const char* pattern, const char* flag,
                                   int B, int T, int V, int shuffle, uint64_t seed) {
    memset(dl, 0, sizeof(*dl));
    dl->flag = str_dup(flag);
    dl->B = B;
    dl->T = T;
    dl->V = V;
    dl->shuffle = shuffle;
    dl->seed = seed;
    char** paths = NULL;
    dl->num_shards = glob_files(pattern, flag, &paths);
    dl->shards = (DataShard*)callocCheck(dl->num_shards, sizeof(DataShard));
    for (size_t i = 0; i < dl->num_shards; i++) {
        DataShard* s = &dl->shards[i];
        s->path = paths[i];
        size_t n;
        int E, vbound;
        int kind = shard_read_info(s->path, &n, &E, &vbound);
        if (i == 0) {
            dl->kind = kind;
            dl->E = E;
        } else if (kind != dl->kind) {
            fatal("%s %s mixes token shards and example shards (%s is a%s shard, %s is not); use one "
                  "kind per glob", flag, pattern, dl->shards[0].path,
                  dl->kind == DATA_TOKENS ? " token" : "n example", s->path);
        } else if (E != dl->E) {
            fatal("%s %s mixes example shards of different lengths: %s has E=%d, %s has E=%d",
                  flag, pattern, dl->shards[0].path, dl->E, s->path, E);
        }
        if (kind == DATA_EXAMPLES && T != E - 1) {
            fatal("example shard %s has E=%d tokens per example, so the sequence length must be "
                  "T = E-1 = %d, but it is %d (drop -t or pass -t %d)", s->path, E, E - 1, T, E - 1);
        }
        s->num_examples = kind == DATA_EXAMPLES ? n : 0;
        s->num_tokens = kind == DATA_EXAMPLES ? n * (size_t)E : n;
        s->num_batches = shard_num_batches(s, kind, B, T, shuffle);
        if (s->num_batches == 0) {
            if (kind == DATA_TOKENS) {
                fatal("token shard %s has %zu tokens, fewer than one batch needs (B*T+1 = %zu with "
                      "-b %d -t %d). Use a smaller -b or -t, or a bigger shard.", s->path,
                      s->num_tokens, (size_t)B * (size_t)T + 1, B, T);
            }
            fatal("example shard %s has %zu examples, fewer than one batch needs (-b %d). Use a "
                  "smaller -b or more examples.", s->path, s->num_examples, B);
        }
        shard_scan(s->path, kind, s->num_tokens, E, vbound, V);
        dl->batches_per_epoch += s->num_batches;
    }
    free(paths); // the strings now belong to shards[i].path
    size_t bt = (size_t)B * (size_t)T;
    dl->tok_buf = (uint16_t*)mallocCheck((dl->kind == DATA_TOKENS ? bt + 1 : (size_t)dl->E) * sizeof(uint16_t));
    dl->mask_buf = (unsigned char*)mallocCheck(dl->kind == DATA_EXAMPLES ? (size_t)dl->E : 1);
    dl->inputs = (int*)mallocCheck(bt * sizeof(int));
    dl->targets = (int*)mallocCheck(bt * sizeof(int));
    dl->loss_mask = dl->kind == DATA_EXAMPLES ? (int*)mallocCheck(bt * sizeof(int)) : NULL;
    dl->shard_order = (size_t*)mallocCheck(dl->num_shards * sizeof(size_t));
    dl->unit_order = NULL;
    dl->unit_order_len = 0;
    dl->fp = NULL;
    dl->fp_shard = SIZE_MAX;
    dataloader_seek(dl, 0, 0);
}

// Positions the loader so the next batch is batch `cursor` of epoch `epoch`.
static inline void dataloader_seek(DataLoader* dl, uint64_t epoch, size_t cursor) {
    if (cursor > dl->batches_per_epoch) {
        fatal("data position %zu is past the end of an epoch (%zu batches of %s): the data changed",
              cursor, dl->batches_per_epoch, dl->flag);
    }
    dl->epoch = epoch;
    dl->cursor = cursor;
    for (size_t i = 0; i < dl->num_shards; i++) { dl->shard_order[i] = i; }
    if (dl->shuffle) {
        Rng r;
        rng_seed(&r, mix_seed(dl->seed, epoch));
        rng_shuffle(&r, dl->shard_order, dl->num_shards);
    }
    size_t pos = 0, remaining = cursor;
    while (pos < dl->num_shards && remaining >= dl->shards[dl->shard_order[pos]].num_batches) {
        remaining -= dl->shards[dl->shard_order[pos]].num_batches;
        pos++;
    }
    dl->plan_pos = pos;
    dl->batch_in_shard = remaining;
    dl->unit_order_for = SIZE_MAX;
}

static inline void dataloader_reset(DataLoader* dl) { dataloader_seek(dl, 0, 0); }

// Unit u (window or example) of the current shard at plan position, in this epoch's order.
static inline size_t dataloader_unit(DataLoader* dl, size_t u) {
    if (!dl->shuffle) { return u; }
    if (dl->unit_order_for != dl->plan_pos) {
        size_t si = dl->shard_order[dl->plan_pos];
        const DataShard* s = &dl->shards[si];
        size_t n = dl->kind == DATA_TOKENS ? s->num_batches : s->num_examples;
        if (n > dl->unit_order_len) {
            free(dl->unit_order);
            dl->unit_order = (size_t*)mallocCheck(n * sizeof(size_t));
            dl->unit_order_len = n;
        }
        for (size_t i = 0; i < n; i++) { dl->unit_order[i] = i; }
        Rng r;
        rng_seed(&r, mix_seed(mix_seed(dl->seed, dl->epoch), (uint64_t)si));
        rng_shuffle(&r, dl->unit_order, n);
        dl->unit_order_for = dl->plan_pos;
    }
    return dl->unit_order[u];
}

static inline FILE* dataloader_file(DataLoader* dl, size_t shard) {
    if (dl->fp_shard != shard) {
        if (dl->fp) { fcloseCheck(dl->fp); }
        dl->fp = fopenCheck(dl->shards[shard].path, "rb");
        dl->fp_shard = shard;
    }
    return dl->fp;
}

static inline void check_token(const DataLoader* dl, const DataShard* s, int tok, size_t pos) {
    if (tok >= dl->V) {
        fatal("%s %s: token id %d at position %zu is >= the model's vocab size V=%d (the file changed "
              "since it was checked). Re-create the shard.", dl->kind == DATA_TOKENS ? "token shard" :
              "example shard", s->path, tok, pos, dl->V);
    }
}

// Fills inputs, targets (and loss_mask, num_rows) with the next batch.
static inline void dataloader_next_batch(DataLoader* dl) {
    if (dl->cursor >= dl->batches_per_epoch) { dataloader_seek(dl, dl->epoch + 1, 0); }
    while (dl->batch_in_shard >= dl->shards[dl->shard_order[dl->plan_pos]].num_batches) {
        dl->plan_pos++;
        dl->batch_in_shard = 0;
    }
    size_t si = dl->shard_order[dl->plan_pos];
    const DataShard* s = &dl->shards[si];
    FILE* fp = dataloader_file(dl, si);
    size_t B = (size_t)dl->B, T = (size_t)dl->T;
    dl->last_shard = si;
    if (dl->kind == DATA_TOKENS) {
        size_t w = dataloader_unit(dl, dl->batch_in_shard);
        size_t start = w * B * T;
        fseekCheck(fp, (off_t)(HEADER_BYTES + start * sizeof(uint16_t)), SEEK_SET);
        freadCheck(dl->tok_buf, sizeof(uint16_t), B * T + 1, fp);
        for (size_t i = 0; i < B * T + 1; i++) { check_token(dl, s, dl->tok_buf[i], start + i); }
        for (size_t i = 0; i < B * T; i++) {
            dl->inputs[i] = dl->tok_buf[i];
            dl->targets[i] = dl->tok_buf[i + 1];
        }
        dl->num_rows = dl->B;
        dl->last_unit = w;
    } else {
        size_t E = (size_t)dl->E, N = s->num_examples;
        size_t first = dl->batch_in_shard * B;
        int rows = 0;
        for (size_t b = 0; b < B; b++) {
            int* inp = dl->inputs + b * T;
            int* tgt = dl->targets + b * T;
            int* msk = dl->loss_mask + b * T;
            if (first + b >= N) { // partial validation batch: empty row
                for (size_t t = 0; t < T; t++) { inp[t] = 0; tgt[t] = 0; msk[t] = 0; }
                continue;
            }
            size_t ex = dataloader_unit(dl, first + b);
            fseekCheck(fp, (off_t)(HEADER_BYTES + ex * E * sizeof(uint16_t)), SEEK_SET);
            freadCheck(dl->tok_buf, sizeof(uint16_t), E, fp);
            fseekCheck(fp, (off_t)(HEADER_BYTES + N * E * sizeof(uint16_t) + ex * E), SEEK_SET);
            freadCheck(dl->mask_buf, 1, E, fp);
            for (size_t t = 0; t < E; t++) { check_token(dl, s, dl->tok_buf[t], ex * E + t); }
            for (size_t t = 0; t < T; t++) {
                inp[t] = dl->tok_buf[t];
                tgt[t] = dl->tok_buf[t + 1];
                msk[t] = dl->mask_buf[t + 1] ? 1 : 0;
            }
            rows++;
        }
        dl->num_rows = rows;
        dl->last_unit = dl->batch_in_shard;
    }
    dl->batch_in_shard++;
    dl->cursor++;
}

static inline void dataloader_free(DataLoader* dl) {
    if (dl->fp) { fclose(dl->fp); }
    for (size_t i = 0; i < dl->num_shards; i++) { free(dl->shards[i].path); }
    free(dl->shards);
    free(dl->shard_order);
    free(dl->unit_order);
    free(dl->tok_buf);
    free(dl->mask_buf);
    free(dl->inputs);
    free(dl->targets);
    free(dl->loss_mask);
    free(dl->flag);
    memset(dl, 0, sizeof(*dl));
}

#endif // LLMC_DATALOADER_H
