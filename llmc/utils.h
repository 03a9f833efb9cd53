/*
utils.h: error reporting, checked file and memory calls, atomic file writes.

Contract:
- fatal(fmt, ...) prints "error: <message>" to stderr and exits 1. It is for
  problems the user can fix (bad file, bad flag); the message names the file,
  the value found, what was expected and the fix.
- fopenCheck / freadCheck / fwriteCheck / fseekCheck / fcloseCheck / mallocCheck
  / callocCheck wrap the C library call; on failure they print what failed, the
  file and line of the call, and exit 1. They never return on failure.
- Offsets and sizes are size_t (or off_t for fseeko): files over 2 GB work.
- AtomicFile writes to "<path>.tmp.<pid>" (atomic_file_write) and
  atomic_file_commit() flushes, fsyncs and renames it over <path>, so a crash
  never leaves a half-written file under the real name. A failed write or
  commit (disk full) removes the temporary file and is fatal with a message
  naming <path>; the file under <path> before stays as it was.
- output_dir_claim(dir) locks a run's output folder (DIR/train.lock, flock) so
  a second trainer refuses it, and removes temporary files that killed
  trainers left there.
- require_memory(bytes, ...) refuses a run that cannot fit the machine's memory.
Valid C11 and C++ (the CUDA trainer includes it through nvcc).
*/
#ifndef LLMC_UTILS_H
#define LLMC_UTILS_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

// ----------------------------------------------------------------------------
// user-facing errors

#if defined(__GNUC__)
#define LLMC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define LLMC_NORETURN __attribute__((noreturn))
#else
#define LLMC_PRINTF(a, b)
#define LLMC_NORETURN
#endif

static inline void fatal(const char* fmt, ...) LLMC_PRINTF(1, 2) LLMC_NORETURN;
static inline void fatal(const char* fmt, ...) {
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static inline void warn(const char* fmt, ...) LLMC_PRINTF(1, 2);
static inline void warn(const char* fmt, ...) {
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "warning: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

// ----------------------------------------------------------------------------
// checked C library calls

static inline FILE* fopen_check(const char* path, const char* mode, const char* file, int line) {
    FILE* fp = fopen(path, mode);
    if (fp == NULL) {
        fflush(stdout);
        fprintf(stderr, "error: cannot open %s (mode \"%s\"): %s\n  (at %s:%d)\n",
                path, mode, strerror(errno), file, line);
        exit(1);
    }
    return fp;
}
#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)

static inline void fread_check(void* ptr, size_t size, size_t nmemb, FILE* fp, const char* file, int line) {
    size_t got = fread(ptr, size, nmemb, fp);
    if (got != nmemb) {
        fflush(stdout);
        fprintf(stderr, "error: short read: expected %zu elements of %zu bytes, got %zu (%s)\n"
                "  (at %s:%d)\n", nmemb, size, got,
                feof(fp) ? "unexpected end of file" : strerror(errno), file, line);
        exit(1);
    }
}
#define freadCheck(ptr, size, nmemb, fp) fread_check(ptr, size, nmemb, fp, __FILE__, __LINE__)

static inline void fwrite_check(const void* ptr, size_t size, size_t nmemb, FILE* fp, const char* file, int line) {
    size_t put = fwrite(ptr, size, nmemb, fp);
    if (put != nmemb) {
        fflush(stdout);
        fprintf(stderr, "error: short write: expected %zu elements of %zu bytes, wrote %zu (%s)\n"
                "  (at %s:%d)\n", nmemb, size, put, strerror(errno), file, line);
        exit(1);
    }
}
#define fwriteCheck(ptr, size, nmemb, fp) fwrite_check(ptr, size, nmemb, fp, __FILE__, __LINE__)

static inline void fseek_check(FILE* fp, off_t offset, int whence, const char* file, int line) {
    if (fseeko(fp, offset, whence) != 0) {
        fflush(stdout);
        fprintf(stderr, "error: seek to offset %lld failed: %s\n  (at %s:%d)\n",
                (long long)offset, strerror(errno), file, line);
        exit(1);
    }
}
#define fseekCheck(fp, offset, whence) fseek_check(fp, offset, whence, __FILE__, __LINE__)

static inline void fclose_check(FILE* fp, const char* file, int line) {
    if (fclose(fp) != 0) {
        fflush(stdout);
        fprintf(stderr, "error: closing a file failed: %s\n  (at %s:%d)\n", strerror(errno), file, line);
        exit(1);
    }
}
#define fcloseCheck(fp) fclose_check(fp, __FILE__, __LINE__)

static inline void* malloc_check(size_t size, const char* file, int line) {
    void* p = malloc(size > 0 ? size : 1);
    if (p == NULL) {
        fflush(stdout);
        fprintf(stderr, "error: out of memory allocating %zu bytes (%.1f MiB); try a smaller -b or -t\n"
                "  (at %s:%d)\n", size, (double)size / (1024.0 * 1024.0), file, line);
        exit(1);
    }
    return p;
}
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)

static inline void* calloc_check(size_t nmemb, size_t size, const char* file, int line) {
    void* p = calloc(nmemb > 0 ? nmemb : 1, size > 0 ? size : 1);
    if (p == NULL) {
        fflush(stdout);
        fprintf(stderr, "error: out of memory allocating %zu x %zu bytes; try a smaller -b or -t\n"
                "  (at %s:%d)\n", nmemb, size, file, line);
        exit(1);
    }
    return p;
}
#define callocCheck(nmemb, size) calloc_check(nmemb, size, __FILE__, __LINE__)

// ----------------------------------------------------------------------------
// files and paths

// Size of the file at path in bytes, or -1 when it does not exist or is not a
// regular file (*is_dir is set when it is a folder; pass NULL to ignore).
static inline long long file_size_or_neg(const char* path, int* is_dir) {
    struct stat st;
    if (is_dir) { *is_dir = 0; }
    if (stat(path, &st) != 0) { return -1; }
    if (S_ISDIR(st.st_mode)) {
        if (is_dir) { *is_dir = 1; }
        return -1;
    }
    return (long long)st.st_size;
}

static inline int path_exists(const char* path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// malloc'd copy of s
static inline char* str_dup(const char* s) {
    size_t n = strlen(s);
    char* out = (char*)mallocCheck(n + 1);
    memcpy(out, s, n + 1);
    return out;
}

// malloc'd printf
static inline char* str_printf(const char* fmt, ...) LLMC_PRINTF(1, 2);
static inline char* str_printf(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) { fatal("str_printf: bad format \"%s\"", fmt); }
    char* out = (char*)mallocCheck((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

// malloc'd folder part of a path ("." when it has none)
static inline char* path_dirname(const char* path) {
    const char* slash = strrchr(path, '/');
    if (slash == NULL) { return str_dup("."); }
    if (slash == path) { return str_dup("/"); }
    size_t n = (size_t)(slash - path);
    char* out = (char*)mallocCheck(n + 1);
    memcpy(out, path, n);
    out[n] = '\0';
    return out;
}

// Creates the folder (and its parents) when missing; fatal on failure.
static inline void make_dirs(const char* dir) {
    char* buf = str_dup(dir);
    size_t n = strlen(buf);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                fatal("cannot create folder %s: %s", buf, strerror(errno));
            }
            buf[i] = saved;
        }
    }
    int is_dir = 0;
    file_size_or_neg(dir, &is_dir);
    if (!is_dir) { fatal("output path %s exists and is not a folder; pass another -o", dir); }
    free(buf);
}

// ----------------------------------------------------------------------------
// atomic writes: temp file in the same folder, fsync, rename

typedef struct {
    FILE* fp;
    char* path;      // final name
    char* tmp_path;  // "<path>.tmp.<pid>"
} AtomicFile;

static inline void atomic_file_abort(AtomicFile* af) {
    if (af->fp) { fclose(af->fp); af->fp = NULL; }
    if (af->tmp_path) { remove(af->tmp_path); }
    free(af->path);
    free(af->tmp_path);
    af->path = NULL;
    af->tmp_path = NULL;
}

// A failed write: the temporary file goes, the message names the file being written, and
// whatever stood under that name before is untouched.
static inline void atomic_file_fail(AtomicFile* af, const char* what, int err) LLMC_NORETURN;
static inline void atomic_file_fail(AtomicFile* af, const char* what, int err) {
    char* path = str_dup(af->path);
    atomic_file_abort(af);
    fatal("writing %s failed (%s: %s%s); nothing was written under that name, and a file there "
          "before is unchanged", path, what, strerror(err),
          err == ENOSPC || err == EDQUOT || err == EFBIG ? ": free some disk space, or write elsewhere" : "");
}

static inline void atomic_file_open(AtomicFile* af, const char* path) {
    af->path = str_dup(path);
    af->tmp_path = str_printf("%s.tmp.%d", path, (int)getpid());
    af->fp = fopen(af->tmp_path, "wb");
    if (af->fp == NULL) {
        int err = errno;
        char* tmp = af->tmp_path;
        af->tmp_path = NULL;  // nothing was created: remove nothing
        fatal("cannot write %s (temporary file %s): %s", path, tmp, strerror(err));
    }
}

static inline void atomic_file_write(AtomicFile* af, const void* ptr, size_t size, size_t nmemb) {
    if (fwrite(ptr, size, nmemb, af->fp) != nmemb) { atomic_file_fail(af, "write", errno); }
}

static inline void atomic_file_commit(AtomicFile* af) {
    if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0) { atomic_file_fail(af, "flush", errno); }
    FILE* fp = af->fp;
    af->fp = NULL;
    if (fclose(fp) != 0) { atomic_file_fail(af, "close", errno); }
    if (rename(af->tmp_path, af->path) != 0) { atomic_file_fail(af, "rename", errno); }
    // make the rename itself durable
    char* dir = path_dirname(af->path);
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) { fsync(fd); close(fd); }
    free(dir);
    free(af->path);
    free(af->tmp_path);
    af->path = NULL;
    af->tmp_path = NULL;
}

// ----------------------------------------------------------------------------
// the output folder of a run: one trainer at a time, no stale temporary files

// Creates DIR when missing and takes DIR/train.lock (flock, held until the process ends, even
// by kill -9): a second trainer with the same folder stops with a message instead of mixing
// its log and checkpoints into this run's. Then removes the temporary files
// (model_*/state_*/log.jsonl ".tmp.<pid>") that a killed trainer of this folder left behind,
// when process <pid> no longer exists. Call it before anything is written to DIR.
static inline void output_dir_claim(const char* dir) {
    make_dirs(dir);
    char* lock_path = str_printf("%s/train.lock", dir);
    int fd = open(lock_path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) { fatal("cannot create the lock file %s: %s", lock_path, strerror(errno)); }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof(holder) - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        if (err == EWOULDBLOCK) {
            fatal("output folder %s is in use by another trainer (process %s holds %s); give this run "
                  "another -o, or wait until that run ends", dir, holder[0] ? holder : "?", lock_path);
        }
        fatal("cannot lock %s: %s", lock_path, strerror(err));
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        fatal("cannot write the lock file %s: %s", lock_path, strerror(errno));
    }
    free(lock_path);  // fd stays open: the lock lasts as long as the process
    DIR* d = opendir(dir);
    if (d == NULL) { fatal("cannot list the output folder %s: %s", dir, strerror(errno)); }
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        const char* name = e->d_name;
        const char* tmp = strstr(name, ".tmp.");
        if (tmp == NULL || !(strncmp(name, "model_", 6) == 0 || strncmp(name, "state_", 6) == 0 ||
                             strncmp(name, "log.jsonl.", 10) == 0)) { continue; }
        const char* digits = tmp + 5;
        char* end = NULL;
        long owner = strtol(digits, &end, 10);
        if (digits[0] < '0' || digits[0] > '9' || *end != '\0' || owner <= 0) { continue; }
        if (kill((pid_t)owner, 0) == 0 || errno != ESRCH) { continue; }  // alive (or not ours to judge)
        char* path = str_printf("%s/%s", dir, name);
        if (remove(path) == 0) {
            warn("removed %s, a temporary file left by process %ld, which ended before it finished "
                 "writing", path, owner);
        }
        free(path);
    }
    closedir(d);
}

// ----------------------------------------------------------------------------
// memory

// Physical memory of the machine in bytes (0 when unknown).
static inline unsigned long long physical_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? (unsigned long long)pages * (unsigned long long)page : 0ULL;
}

// Refuses, before anything is allocated, a run that needs more memory than the machine has
// (the kernel would hand out the pages lazily and kill the process later).
static inline void require_memory(double bytes, const char* what, const char* fix) {
    unsigned long long phys = physical_memory_bytes();
    if (phys > 0 && bytes > (double)phys) {
        fatal("%s needs %.2f GiB of memory, more than this machine's %.2f GiB. %s", what,
              bytes / 1073741824.0, (double)phys / 1073741824.0, fix);
    }
}

// ----------------------------------------------------------------------------
// UTF-8 text: token pieces are raw bytes (one character may be split over tokens), so
// decoded text is cleaned once, in one way, wherever it is shown (stdout) or stored (the
// log): valid sequences stay, each maximal invalid subpart becomes U+FFFD. That is the
// Unicode-recommended replacement, the one Python's bytes.decode("utf-8", "replace") does.

// Length of the next unit of the NUL-terminated bytes at p (p[0] != 0): a whole valid UTF-8
// sequence (*valid = 1), or the maximal invalid subpart to replace by one U+FFFD (*valid = 0):
// a lead byte with the continuation bytes that were still possible after it.
static inline size_t utf8_next(const unsigned char* p, int* valid) {
    unsigned char c = p[0];
    if (c < 0x80) { *valid = 1; return 1; }
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the next byte
    if (c >= 0xC2 && c <= 0xDF) { n = 2; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; if (c == 0xE0) { lo = 0xA0; } if (c == 0xED) { hi = 0x9F; } }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; if (c == 0xF0) { lo = 0x90; } if (c == 0xF4) { hi = 0x8F; } }
    else { *valid = 0; return 1; }  // a continuation byte, an overlong lead (C0, C1) or F5..FF
    size_t k = 1;
    while (k < n && p[k] >= lo && p[k] <= hi) { lo = 0x80; hi = 0xBF; k++; }  // NUL stops it
    *valid = k == n;
    return k;
}

#define UTF8_REPLACEMENT "\xEF\xBF\xBD"  // U+FFFD

// Writes s to fp as valid UTF-8 (invalid parts as U+FFFD, see utf8_next).
static inline void fputs_utf8(const char* s, FILE* fp) {
    const unsigned char* p = (const unsigned char*)s;
    while (*p) {
        int valid;
        size_t n = utf8_next(p, &valid);
        if (valid) { fwrite(p, 1, n, fp); } else { fputs(UTF8_REPLACEMENT, fp); }
        p += n;
    }
}

// ----------------------------------------------------------------------------
// the 256-int32 header every binary file of this project starts with

#define HEADER_INTS 256
#define HEADER_BYTES (HEADER_INTS * sizeof(int32_t))

// Reads and checks the header of a `kind` file ("model checkpoint", "token
// shard", ...): exists, is a file, at least 1024 bytes, magic and version (version < 0: the
// caller checks it).
// Returns the file size; fatal with a message naming the file otherwise.
static inline long long read_header_checked(const char* path, const char* kind, int32_t magic,
                                            int32_t version, int32_t header[HEADER_INTS],
                                            const char* fix) {
    int is_dir = 0;
    long long size = file_size_or_neg(path, &is_dir);
    if (is_dir) { fatal("%s path %s is a folder, expected a file. %s", kind, path, fix); }
    if (size < 0) { fatal("%s file %s does not exist. %s", kind, path, fix); }
    if (size < (long long)HEADER_BYTES) {
        fatal("%s file %s is truncated: %lld bytes, shorter than its %d-byte header. %s",
              kind, path, size, (int)HEADER_BYTES, fix);
    }
    FILE* fp = fopenCheck(path, "rb");
    freadCheck(header, sizeof(int32_t), HEADER_INTS, fp);
    fcloseCheck(fp);
    if (header[0] != magic) {
        fatal("%s file %s has magic number %d, expected %d: it is not a %s file "
              "(or it is from another tool). %s", kind, path, header[0], magic, kind, fix);
    }
    if (version >= 0 && header[1] != version) {
        fatal("%s file %s has version %d, expected %d. %s", kind, path, header[1], version, fix);
    }
    return size;
}

static inline void check_file_size(const char* path, const char* kind, long long size,
                                   long long expected, const char* what, const char* fix) {
    if (size == expected) { return; }
    fatal("%s file %s is %s: %lld bytes, expected %lld (%s). %s", kind, path,
          size < expected ? "truncated" : "too long", size, expected, what, fix);
}

// 64-bit FNV-1a style hash over 32-bit words (used to pair a training-state
// file with its model file). Deterministic, not cryptographic.
static inline uint64_t hash_words(const void* data, size_t num_bytes) {
    const unsigned char* p = (const unsigned char*)data;
    uint64_t h = 1469598103934665603ULL;
    size_t i = 0;
    for (; i + 4 <= num_bytes; i += 4) {
        uint32_t w;
        memcpy(&w, p + i, 4);
        h ^= w;
        h *= 1099511628211ULL;
    }
    for (; i < num_bytes; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

// Seconds on the monotonic clock (for step times; never for results).
static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif // LLMC_UTILS_H
