/*
tokenizer.h: decode token ids to bytes with llm.c's tokenizer file.

Format (README, "File formats"): header [0] 20240328, [1] version 2 (version 1
has no EOT slot; GPT-2's 50256 is assumed), [2] vocab size n, [3] EOT id; then
per token a uint8 length and that many bytes.

Contract: tokenizer_init(&t, path) loads the file and refuses (fatal, naming the
file, the value and the fix) anything but exactly this: magic, version 1 or 2,
1 <= n <= 65536 with room in the file for n tokens of at least 2 bytes (checked
before anything is allocated), 0 <= EOT < n, every token 1..255 bytes, and the
file ending right after token n-1. dev/tokenizer.py read_tokenizer_file applies
the same rules. tokenizer_decode(&t, id) returns the token's bytes as a
NUL-terminated string, or NULL for an id outside the vocabulary.
tokenizer_decode_text() joins the pieces of a token sequence into one string:
its bytes need not be valid UTF-8 (a character may be split over tokens), so it
is printed with fputs_utf8 and logged with json_key_string, which both replace
invalid parts by U+FFFD the same way (utils.h utf8_next).
*/
#ifndef LLMC_TOKENIZER_H
#define LLMC_TOKENIZER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utils.h"

#define TOKENIZER_MAGIC 20240328
#define TOKENIZER_MAX_VOCAB 65536
#define TOKENIZER_V1_EOT 50256
#define TOKENIZER_FIX "Re-create it with prepro_tinystories.py (or check the --tokenizer path)."

typedef struct {
    int vocab_size;
    int eot_token;
    char** token_table; // (vocab_size) NUL-terminated byte strings
} Tokenizer;

static inline void tokenizer_init(Tokenizer* t, const char* path) {
    int32_t header[HEADER_INTS];
    long long size = read_header_checked(path, "tokenizer", TOKENIZER_MAGIC, -1, header, TOKENIZER_FIX);
    if (header[1] != 1 && header[1] != 2) {
        fatal("tokenizer file %s has version %d, expected 1 or 2. %s", path, header[1], TOKENIZER_FIX);
    }
    int n = header[2];
    long long body = size - (long long)HEADER_BYTES;
    if (n < 1 || n > TOKENIZER_MAX_VOCAB) {
        fatal("tokenizer file %s has vocab size %d, expected 1 to %d. %s", path, n, TOKENIZER_MAX_VOCAB,
              TOKENIZER_FIX);
    }
    if (2 * (long long)n > body) {
        fatal("tokenizer file %s is truncated: its header says %d tokens, which take at least %lld bytes "
              "after the header, but the file has %lld. %s", path, n, 2 * (long long)n, body, TOKENIZER_FIX);
    }
    int eot = header[1] == 2 ? header[3] : TOKENIZER_V1_EOT;
    if (eot < 0 || eot >= n) {
        fatal("tokenizer file %s has end-of-text id %d%s, outside its vocabulary [0, %d). %s", path, eot,
              header[1] == 2 ? "" : " (version 1 files imply 50256)", n, TOKENIZER_FIX);
    }
    unsigned char* raw = (unsigned char*)mallocCheck((size_t)body);
    FILE* fp = fopenCheck(path, "rb");
    fseekCheck(fp, (off_t)HEADER_BYTES, SEEK_SET);
    freadCheck(raw, 1, (size_t)body, fp);
    fcloseCheck(fp);
    t->vocab_size = n;
    t->eot_token = eot;
    t->token_table = (char**)callocCheck((size_t)n, sizeof(char*));
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (pos >= (size_t)body) {
            fatal("tokenizer file %s is truncated: it ends at token %d of %d. %s", path, i, n, TOKENIZER_FIX);
        }
        size_t len = raw[pos];
        if (len == 0) {
            fatal("tokenizer file %s: token %d has length 0 (at byte %zu); every token has 1 to 255 bytes. %s",
                  path, i, (size_t)HEADER_BYTES + pos, TOKENIZER_FIX);
        }
        if (pos + 1 + len > (size_t)body) {
            fatal("tokenizer file %s is truncated inside token %d of %d. %s", path, i, n, TOKENIZER_FIX);
        }
        char* piece = (char*)mallocCheck(len + 1);
        memcpy(piece, raw + pos + 1, len);
        piece[len] = '\0';
        t->token_table[i] = piece;
        pos += 1 + len;
    }
    if (pos != (size_t)body) {
        fatal("tokenizer file %s is too long: %zu bytes after the last of its %d tokens. %s", path,
              (size_t)body - pos, n, TOKENIZER_FIX);
    }
    free(raw);
}

// A tokenizer decodes a model's samples only if it has the model's vocabulary: refuse another.
static inline void tokenizer_check_model(const Tokenizer* t, const char* path, int V, const char* model_path) {
    if (t->vocab_size != V) {
        fatal("tokenizer file %s has %d tokens, but model %s has a vocabulary of V=%d: it is the "
              "tokenizer of other data. Pass the tokenizer written with this model's data (or "
              "--tokenizer '' to print token ids).", path, t->vocab_size, model_path, V);
    }
}

static inline const char* tokenizer_decode(const Tokenizer* t, int id) {
    if (t->token_table == NULL || id < 0 || id >= t->vocab_size) { return NULL; }
    return t->token_table[id];
}

// The text of tokens[0..n-1] as a malloc'd string: the pieces joined when a tokenizer is
// loaded (an id it lacks prints as its number), else the ids separated by spaces.
static inline char* tokenizer_decode_text(const Tokenizer* t, const int* tokens, int n) {
    size_t cap = 64, len = 0;
    char* out = (char*)mallocCheck(cap);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        char num[24];
        const char* piece = tokenizer_decode(t, tokens[i]);
        if (piece == NULL) {
            snprintf(num, sizeof(num), i ? " %d" : "%d", tokens[i]);
            piece = num;
        }
        size_t k = strlen(piece);
        if (len + k + 1 > cap) {
            while (len + k + 1 > cap) { cap *= 2; }
            char* grown = (char*)realloc(out, cap);
            if (grown == NULL) { fatal("out of memory decoding a sample of %d tokens", n); }
            out = grown;
        }
        memcpy(out + len, piece, k + 1);
        len += k;
    }
    return out;
}

static inline void tokenizer_free(Tokenizer* t) {
    if (t->token_table) {
        for (int i = 0; i < t->vocab_size; i++) { free(t->token_table[i]); }
        free(t->token_table);
    }
    t->token_table = NULL;
    t->vocab_size = 0;
}

#endif // LLMC_TOKENIZER_H
