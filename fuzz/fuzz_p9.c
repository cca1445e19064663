/*
 * fuzz_p9.c - libFuzzer target for the 9P2000.L server (csrc/dev/p9_server.c).
 *
 * Build and run: `make fuzz` (tools/fuzz.sh: clang -fsanitize=fuzzer,address,undefined). Each input is a
 * sequence of T-messages, split by their size fields (the last one may be cut short), served
 * after an implicit Tversion and Tattach of fid 0 to a scratch share. The share lives in
 * $TMPDIR/fuzz_p9.XXXXXX/share next to a sentinel file and directory; after every input the
 * harness checks that nothing outside the share changed (confinement) and aborts otherwise.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../csrc/dev/p9_server.h"

static char base[256];
static struct stat base_st, out_st;
static uint8_t resp[P9_MAX_MSIZE];

static void put_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    FILE *f;

    snprintf(p, sizeof p, "%s/%s", dir, name);
    if ((f = fopen(p, "w"))) {
        fputs(text, f);
        fclose(f);
    }
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    char p[512];

    snprintf(base, sizeof base, "%s/fuzz_p9.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base))
        abort();
    snprintf(p, sizeof p, "%s/share", base);
    mkdir(p, 0755);
    put_file(p, "hello.txt", "hello, 9p\n");
    snprintf(p, sizeof p, "%s/share/sub", base);
    mkdir(p, 0755);
    put_file(p, "inner.txt", "inner");
    snprintf(p, sizeof p, "%s/share/up", base);
    symlink("..", p);
    snprintf(p, sizeof p, "%s/outside", base);
    mkdir(p, 0755);
    put_file(p, "secret.txt", "SECRET");
    put_file(base, "sentinel", "SENTINEL");
    stat(base, &base_st);
    stat(p, &out_st);
}

static void check_confined(void)
{
    char p[512];
    struct stat st;

    if (stat(base, &st) || st.st_mtim.tv_sec != base_st.st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != base_st.st_mtim.tv_nsec || st.st_mode != base_st.st_mode)
        abort(); /* an entry was added or removed next to the share */
    snprintf(p, sizeof p, "%s/outside", base);
    if (stat(p, &st) || st.st_mtim.tv_nsec != out_st.st_mtim.tv_nsec || st.st_mode != out_st.st_mode)
        abort();
    snprintf(p, sizeof p, "%s/outside/secret.txt", base);
    if (stat(p, &st) || st.st_size != 6 || (st.st_mode & 0777) != 0644)
        abort();
}

static void call(struct p9_server *s, const uint8_t *m, size_t len)
{
    size_t n = p9_handle(s, m, len, resp, sizeof resp);
    if (n > sizeof resp || (n && n < 7))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t version[] = { 21, 0, 0,   0,   100, 0xff, 0xff, 0,   0,   8,  0,
                                       8,  0, '9', 'P', '2', '0',  '0',  '0', '.', 'L' };
    static const uint8_t attach[] = {
        23, 0, 0, 0, 104, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0
    };
    struct p9_server *s;
    char p[512];
    int fd;

    if (!base[0])
        setup();
    snprintf(p, sizeof p, "%s/share", base);
    if ((fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || !(s = p9_server_new(fd, size && (data[0] & 1))))
        return 0;
    call(s, version, sizeof version);
    call(s, attach, sizeof attach);
    while (size >= 1) {
        size_t n = size;
        if (size >= 4) {
            uint32_t want =
                (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
            if (want >= 4 && want < size)
                n = want;
        }
        call(s, data, n);
        data += n;
        size -= n;
    }
    p9_server_free(s);
    check_confined();
    return 0;
}
