/*
args.h: a small table-driven command-line parser.

Contract: a program describes each flag once with an ArgSpec (short letter or
0, long name or NULL, type, destination, help text, for ARG_CHOICE the
NULL-terminated list of allowed values). args_parse() accepts
  -b 4   --batch-size 4   --batch-size=4   -h/--help
and stores each value into its destination (the last occurrence wins). The
destination's value before parsing is the default that --help prints.
Errors are fatal with a message that names the flag and the value and exits 1:
an unknown flag, a missing value, a non-numeric or out-of-range number
(integers are whole decimal numbers within their type; floats are decimal,
finite, within float range, and 0 or at least FLT_MIN in size so that no value
silently becomes 0), a choice not in the list, a
stray positional argument. --help prints every flag with its default and
exits 0.
Values of ARG_STRING / ARG_CHOICE point into argv (or at the default).
*/
#ifndef LLMC_ARGS_H
#define LLMC_ARGS_H

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utils.h"

#define ARG_INT 0     // int*
#define ARG_INT64 1   // long long*
#define ARG_FLOAT 2   // float*
#define ARG_STRING 3  // const char**
#define ARG_CHOICE 4  // const char** (one of choices)

typedef struct {
    char short_name;            // e.g. 'b', or 0 for none
    const char* long_name;      // e.g. "batch-size" (without --), or NULL
    int type;                   // ARG_*
    void* dest;
    const char* help;
    const char* const* choices; // ARG_CHOICE: NULL-terminated allowed values
} ArgSpec;

static inline void arg_spec_name(const ArgSpec* s, char* buf, size_t n) {
    if (s->short_name && s->long_name) {
        snprintf(buf, n, "-%c/--%s", s->short_name, s->long_name);
    } else if (s->long_name) {
        snprintf(buf, n, "--%s", s->long_name);
    } else {
        snprintf(buf, n, "-%c", s->short_name);
    }
}

// Formats the current value of a spec's destination.
static inline void arg_format_value(const ArgSpec* s, char* buf, size_t n) {
    switch (s->type) {
        case ARG_INT: snprintf(buf, n, "%d", *(const int*)s->dest); break;
        case ARG_INT64: snprintf(buf, n, "%lld", *(const long long*)s->dest); break;
        case ARG_FLOAT: snprintf(buf, n, "%g", (double)*(const float*)s->dest); break;
        default: {
            const char* v = *(const char* const*)s->dest;
            snprintf(buf, n, "%s", (v && v[0]) ? v : "\"\"");
        }
    }
}

static inline const char* arg_type_name(const ArgSpec* s) {
    switch (s->type) {
        case ARG_INT: return "INT";
        case ARG_INT64: return "INT";
        case ARG_FLOAT: return "FLOAT";
        case ARG_CHOICE: return "NAME";
        default: return "PATH";
    }
}

static inline void args_print_help(const char* prog, const char* usage, const ArgSpec* specs, int n) {
    printf("usage: %s %s\n\n", prog, usage);
    for (int i = 0; i < n; i++) {
        const ArgSpec* s = &specs[i];
        char names[96], def[256];
        if (s->short_name && s->long_name) {
            snprintf(names, sizeof(names), "-%c, --%s %s", s->short_name, s->long_name, arg_type_name(s));
        } else if (s->long_name) {
            snprintf(names, sizeof(names), "    --%s %s", s->long_name, arg_type_name(s));
        } else {
            snprintf(names, sizeof(names), "-%c %s", s->short_name, arg_type_name(s));
        }
        arg_format_value(s, def, sizeof(def));
        printf("  %-32s %s (default: %s)", names, s->help, def);
        if (s->type == ARG_CHOICE) {
            printf(" one of:");
            for (int c = 0; s->choices[c] != NULL; c++) { printf(" %s", s->choices[c]); }
        }
        printf("\n");
    }
    printf("  %-32s print this help and exit\n", "-h, --help");
}

static inline void arg_store(const ArgSpec* s, const char* value, const char* prog) {
    char name[96];
    arg_spec_name(s, name, sizeof(name));
    if (s->type == ARG_INT || s->type == ARG_INT64) {
        errno = 0;
        char* end = NULL;
        long long v = strtoll(value, &end, 10);
        if (value[0] == '\0' || end == NULL || *end != '\0') {
            fatal("%s expects an integer, got '%s' (run %s --help)", name, value, prog);
        }
        if (errno == ERANGE || (s->type == ARG_INT && (v < INT_MIN || v > INT_MAX))) {
            fatal("%s value '%s' is out of range for an integer", name, value);
        }
        if (s->type == ARG_INT) { *(int*)s->dest = (int)v; } else { *(long long*)s->dest = v; }
    } else if (s->type == ARG_FLOAT) {
        // decimal only: strtod alone would also take hex ("0x10" = 16), "inf" and "nan"
        if (strspn(value, "0123456789.eE+-") != strlen(value) || strpbrk(value, "0123456789") == NULL) {
            fatal("%s expects a decimal number such as 3e-4 or 0.1, got '%s' (run %s --help)", name, value, prog);
        }
        errno = 0;
        char* end = NULL;
        double v = strtod(value, &end);
        if (end == NULL || *end != '\0' || end == value) {
            fatal("%s expects a decimal number such as 3e-4 or 0.1, got '%s' (run %s --help)", name, value, prog);
        }
        if (!isfinite(v) || fabs(v) > (double)FLT_MAX) {
            fatal("%s value '%s' is out of range: a float holds at most %g", name, value, (double)FLT_MAX);
        }
        if (v != 0.0 && fabs(v) < (double)FLT_MIN) {
            fatal("%s value '%s' is too small for a float (it would become 0 or lose precision; the "
                  "smallest normal float is %g): use 0 or a larger value", name, value, (double)FLT_MIN);
        }
        *(float*)s->dest = (float)v;
    } else if (s->type == ARG_CHOICE) {
        for (int c = 0; s->choices[c] != NULL; c++) {
            if (strcmp(value, s->choices[c]) == 0) {
                *(const char**)s->dest = s->choices[c];
                return;
            }
        }
        char allowed[512] = "";
        for (int c = 0; s->choices[c] != NULL; c++) {
            strncat(allowed, c ? ", " : "", sizeof(allowed) - strlen(allowed) - 1);
            strncat(allowed, s->choices[c], sizeof(allowed) - strlen(allowed) - 1);
        }
        fatal("%s expects one of %s, got '%s'", name, allowed, value);
    } else {
        *(const char**)s->dest = value;
    }
}

// Parses argv into the destinations of specs. `usage` is the text after the
// program name on the usage line of --help.
static inline void args_parse(int argc, char** argv, const ArgSpec* specs, int n, const char* usage) {
    const char* prog = argc > 0 ? argv[0] : "program";
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            args_print_help(prog, usage, specs, n);
            exit(0);
        }
        const ArgSpec* found = NULL;
        const char* inline_value = NULL;
        if (a[0] == '-' && a[1] == '-' && a[2] != '\0') {
            const char* name = a + 2;
            const char* eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            for (int k = 0; k < n; k++) {
                if (specs[k].long_name && strlen(specs[k].long_name) == len &&
                    strncmp(specs[k].long_name, name, len) == 0) {
                    found = &specs[k];
                    break;
                }
            }
            if (eq) { inline_value = eq + 1; }
        } else if (a[0] == '-' && a[1] != '\0' && a[2] == '\0' &&
                   !((a[1] >= '0' && a[1] <= '9') || a[1] == '.')) {
            for (int k = 0; k < n; k++) {
                if (specs[k].short_name == a[1]) { found = &specs[k]; break; }
            }
        } else {
            fatal("unexpected argument '%s': every value follows a flag, e.g. -b 4 or --steps 100 "
                  "(run %s --help)", a, prog);
        }
        if (found == NULL) {
            fatal("unknown flag '%s' (run %s --help for the list of flags)", a, prog);
        }
        const char* value = inline_value;
        if (value == NULL) {
            if (i + 1 >= argc) {
                char name[96];
                arg_spec_name(found, name, sizeof(name));
                fatal("%s needs a value (run %s --help)", name, prog);
            }
            value = argv[++i];
        }
        arg_store(found, value, prog);
    }
}

#endif // LLMC_ARGS_H
