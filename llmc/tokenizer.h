/*
tokenizer.h: decode token ids to bytes with llm.c's tokenizer file.

Format (README, "File formats"): header [0] 20240328, [1] version 2 (version 1
has no EOT slot; GPT-2's 50256 is assumed), [2] vocab size, [3] EOT id; then
per token a uint8 length and that many bytes.

Contract: tokenizer_init(&t, path) loads the file (fatal with a message when it
is malformed). tokenizer_decode(&t, id) returns the token's bytes as a
NUL-terminated string, or NULL for an id outside the vocabulary. Token bytes
can be any bytes (a multi-byte UTF-8 character may be split over tokens), so
printing goes through safe_print_piece(), which skips lone non-printable
bytes, as llm.c does.
*/
#ifndef LLMC_TOKENIZER_H
#define LLMC_TOKENIZER_H

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utils.h"

#define TOKENIZER_MAGIC 20240328
#define TOKENIZER_FIX "Re-create it with prepro_tinystories.py (or check the --tokenizer path)."

typedef struct {
    int vocab_size;
    int eot_token;
    char** token_table; // (vocab_size) NUL-terminated byte strings
} Tokenizer;

static inline void tokenizer_init(Tokenizer* t, const char* path) {
    int is_dir = 0;
    long long size = file_size_or_neg(path, &is_dir);
    if (size < 0) { fatal("tokenizer file %s does not exist. %s", path, TOKENIZER_FIX); }
    if (size < (long long)HEADER_BYTES) {
        fatal("tokenizer file %s is truncated: %lld bytes, shorter than its %d-byte header. %s",
              path, size, (int)HEADER_BYTES, TOKENIZER_FIX);
    }
    FILE* fp = fopenCheck(path, "rb");
    int32_t header[HEADER_INTS];
    freadCheck(header, sizeof(int32_t), HEADER_INTS, fp);
    if (header[0] != TOKENIZER_MAGIC) {
        fatal("tokenizer file %s has magic number %d, expected %d: it is not a tokenizer file. %s",
              path, header[0], TOKENIZER_MAGIC, TOKENIZER_FIX);
    }
    if (header[1] != 1 && header[1] != 2) {
        fatal("tokenizer file %s has version %d, expected 1 or 2. %s", path, header[1], TOKENIZER_FIX);
    }
    if (header[2] <= 0) {
        fatal("tokenizer file %s has vocab size %d, expected > 0. %s", path, header[2], TOKENIZER_FIX);
    }
    t->vocab_size = header[2];
    t->eot_token = header[1] == 2 ? header[3] : 50256;
    t->token_table = (char**)callocCheck((size_t)t->vocab_size, sizeof(char*));
    for (int i = 0; i < t->vocab_size; i++) {
        unsigned char len;
        if (fread(&len, 1, 1, fp) != 1) {
            fatal("tokenizer file %s is truncated: it ends at token %d of %d. %s", path, i,
                  t->vocab_size, TOKENIZER_FIX);
        }
        char* piece = (char*)mallocCheck((size_t)len + 1);
        if (len > 0 && fread(piece, 1, len, fp) != len) {
            fatal("tokenizer file %s is truncated inside token %d. %s", path, i, TOKENIZER_FIX);
        }
        piece[len] = '\0';
        t->token_table[i] = piece;
    }
    fcloseCheck(fp);
}

static inline const char* tokenizer_decode(const Tokenizer* t, int id) {
    if (t->token_table == NULL || id < 0 || id >= t->vocab_size) { return NULL; }
    return t->token_table[id];
}

// Prints a token piece, skipping it when it is a single non-printable,
// non-space byte (a raw byte such as a lone UTF-8 continuation byte).
static inline void safe_print_piece(FILE* out, const char* piece) {
    if (piece == NULL || piece[0] == '\0') { return; }
    if (piece[1] == '\0') {
        unsigned char c = (unsigned char)piece[0];
        if (!(isprint(c) || isspace(c))) { return; }
    }
    fputs(piece, out);
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
