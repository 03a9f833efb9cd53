/*
logger.h: the JSONL training log (one JSON object per line) and a small JSON
builder.

Contract:
- Json is a growing buffer holding one object: json_begin(), then
  json_key_*(...) pairs (nested objects with json_key_object / json_end_object),
  json_end(). Floats print with %.9g, so a float32 value read back from the log
  is bit-identical; NaN and inf print as null (JSON has neither). Strings are
  escaped; bytes that are not valid UTF-8 become U+FFFD (utils.h utf8_next: one
  per maximal invalid subpart, as Python's decode(errors="replace")), so the file
  is always valid UTF-8 JSON and holds the text the trainer prints.
- logger_open(&lg, dir, resume_step): resume_step < 0 starts DIR/log.jsonl
  afresh (truncates); resume_step >= 0 keeps the existing log but drops every
  record whose "step" is greater than resume_step (records written after the
  checkpoint we resume from) and a last line cut short by a crash, rewriting
  it atomically, then appends.
  Step records are written with "step" as their first key for this reason.
- logger_write(&lg, &json) appends one line and flushes it.
*/
#ifndef LLMC_LOGGER_H
#define LLMC_LOGGER_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utils.h"

typedef struct {
    char* buf;
    size_t len, cap;
    int need_comma;
} Json;

static inline void json_append(Json* j, const char* s, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (j->len + n + 1 > cap) { cap *= 2; }
        char* nb = (char*)realloc(j->buf, cap);
        if (nb == NULL) { fatal("out of memory growing a JSON record to %zu bytes", cap); }
        j->buf = nb;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = '\0';
}

static inline void json_puts(Json* j, const char* s) { json_append(j, s, strlen(s)); }

static inline void json_begin(Json* j) {
    j->len = 0;
    j->need_comma = 0;
    json_puts(j, "{");
}

static inline void json_end(Json* j) { json_puts(j, "}"); }

static inline void json_free(Json* j) {
    free(j->buf);
    j->buf = NULL;
    j->len = j->cap = 0;
}

// Appends s as a JSON string literal (quotes included).
static inline void json_string_value(Json* j, const char* s) {
    json_puts(j, "\"");
    const unsigned char* p = (const unsigned char*)s;
    while (*p) {
        unsigned char c = *p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\'; esc[1] = (char)c; json_append(j, esc, 2); p++;
        } else if (c == '\n') {
            json_puts(j, "\\n"); p++;
        } else if (c == '\t') {
            json_puts(j, "\\t"); p++;
        } else if (c == '\r') {
            json_puts(j, "\\r"); p++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c); json_puts(j, esc); p++;
        } else if (c < 0x80) {
            json_append(j, (const char*)p, 1); p++;
        } else {  // a UTF-8 sequence, or an invalid part that becomes U+FFFD (utils.h utf8_next)
            int valid;
            size_t n = utf8_next(p, &valid);
            if (valid) { json_append(j, (const char*)p, n); } else { json_puts(j, "\\ufffd"); }
            p += n;
        }
    }
    json_puts(j, "\"");
}

static inline void json_key(Json* j, const char* key) {
    if (j->need_comma) { json_puts(j, ", "); }
    json_string_value(j, key);
    json_puts(j, ": ");
    j->need_comma = 1;
}

static inline void json_key_int(Json* j, const char* key, long long v) {
    char b[32];
    json_key(j, key);
    snprintf(b, sizeof(b), "%lld", v);
    json_puts(j, b);
}

static inline void json_float_value(Json* j, double v) {
    char b[40];
    if (!isfinite(v)) { json_puts(j, "null"); return; }
    snprintf(b, sizeof(b), "%.9g", v);
    json_puts(j, b);
}

static inline void json_key_float(Json* j, const char* key, double v) {
    json_key(j, key);
    json_float_value(j, v);
}

static inline void json_key_string(Json* j, const char* key, const char* v) {
    json_key(j, key);
    if (v == NULL) { json_puts(j, "null"); } else { json_string_value(j, v); }
}

static inline void json_key_null(Json* j, const char* key) {
    json_key(j, key);
    json_puts(j, "null");
}

static inline void json_key_bool(Json* j, const char* key, int v) {
    json_key(j, key);
    json_puts(j, v ? "true" : "false");
}

static inline void json_key_object(Json* j, const char* key) {
    json_key(j, key);
    json_puts(j, "{");
    j->need_comma = 0;
}

static inline void json_end_object(Json* j) {
    json_puts(j, "}");
    j->need_comma = 1;
}

// ----------------------------------------------------------------------------

typedef struct {
    FILE* fp;
    char* path;
} Logger;

// Step of a line written as {"step": N, ...}; -1 for any other line.
static inline long long log_line_step(const char* line) {
    const char* prefix = "{\"step\": ";
    size_t n = strlen(prefix);
    if (strncmp(line, prefix, n) != 0) { return -1; }
    return strtoll(line + n, NULL, 10);
}

static inline void logger_open(Logger* lg, const char* dir, long long resume_step) {
    make_dirs(dir);
    lg->path = str_printf("%s/log.jsonl", dir);
    if (resume_step >= 0 && path_exists(lg->path)) {
        FILE* in = fopenCheck(lg->path, "rb");
        AtomicFile af;
        atomic_file_open(&af, lg->path);
        size_t cap = 1 << 16;
        char* line = (char*)mallocCheck(cap);
        for (;;) {
            size_t len = 0;
            int c = 0;
            while ((c = fgetc(in)) != EOF) {
                if (len + 2 > cap) {
                    cap *= 2;
                    char* nl = (char*)realloc(line, cap);
                    if (nl == NULL) { fatal("out of memory reading %s", lg->path); }
                    line = nl;
                }
                line[len++] = (char)c;
                if (c == '\n') { break; }
            }
            if (len == 0) { break; }
            line[len] = '\0';
            if (line[len - 1] != '\n') { break; } // a record cut short by a crash: drop it
            if (log_line_step(line) <= resume_step) { atomic_file_write(&af, line, 1, len); }
            if (c == EOF) { break; }
        }
        free(line);
        fcloseCheck(in);
        atomic_file_commit(&af);
        lg->fp = fopenCheck(lg->path, "ab");
    } else {
        lg->fp = fopenCheck(lg->path, "wb");
    }
}

static inline void logger_write(Logger* lg, const Json* j) {
    if (lg->fp == NULL) { return; }
    if (fwrite(j->buf, 1, j->len, lg->fp) != j->len || fputc('\n', lg->fp) == EOF || fflush(lg->fp) != 0) {
        fatal("writing %s failed: %s (disk full?); a resumed run drops a last line cut short",
              lg->path, strerror(errno));
    }
}

static inline void logger_close(Logger* lg) {
    if (lg->fp) { fcloseCheck(lg->fp); }
    free(lg->path);
    lg->fp = NULL;
    lg->path = NULL;
}

#endif // LLMC_LOGGER_H
