/*
 * fuzz_p9.c - libFuzzer target for the 9P2000.L server (csrc/dev/p9_server.c).
 *
 * Build and run: `make fuzz` (tools/fuzz.sh: clang -fsanitize=fuzzer,address,undefined). Each input is a
 * sequence of T-messages, split by their size fields (the last one may be cut short), served
 * after an implicit Tversion and Tattach of fid 0 to a scratch share. The share lives in
 * $TMPDIR/fuzz_p9.XXXXXX/share next to a sentinel file and directory; after every input the
 * harness checks that nothing outside the share changed (confinement) and aborts otherwise.
 *
 * Speed (about 3x faster than one server and one fresh scratch directory per input, with fsyncs):
 * - one scratch directory per process, made at the first input and removed at exit (atexit);
 * - two servers (read-write and read-only, by bit 0 of the first byte) live for the whole process:
 *   the implicit Tversion starts each input with no fids (a new session), p9_server_reset() closes
 *   what the input opened; a new server per input cost a 1.2 MB calloc and its page faults;
 * - the share is put back as it was after an input that changed it: its pristine entries carry a
 *   fixed old mtime, so a write, a create, an unlink or a rename shows as a changed mtime, and
 *   chmod/chown/link/xattr as a changed mode/owner/nlink/ctime (lstat of the 5 entries);
 * - fsync/fdatasync are replaced in this binary by an fd check: the server fsyncs every open file
 *   when it drops its fids, which on a real disk cost milliseconds per input and tests nothing
 *   (durability is not what we fuzz).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../csrc/dev/p9_server.h"

static char base[256], share[300];
static struct stat base_st, out_st;
static struct p9_server *srv[2]; /* read-write, read-only */
#define NPRISTINE 5
static const char *const pristine[NPRISTINE] = { "", "/hello.txt", "/sub", "/sub/inner.txt", "/up" };
static struct stat pristine_st[NPRISTINE];
static uint8_t resp[P9_MAX_MSIZE];

/* The server's fsyncs, minus the disk: EBADF for a bad fd, as the real ones. */
int fsync(int fd)
{
    return fcntl(fd, F_GETFD) < 0 ? -1 : 0;
}

int fdatasync(int fd)
{
    return fsync(fd);
}

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

/* Remove everything inside the directory open as dfd (whatever modes the guest left); closes dfd. */
static void empty_dir(int dfd)
{
    DIR *d = fdopendir(dfd);
    struct dirent *e;

    if (!d) {
        close(dfd);
        return;
    }
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!unlinkat(dfd, e->d_name, 0) || errno != EISDIR)
            continue;
        int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub >= 0) {
            fchmod(sub, 0700);
            empty_dir(sub);
        }
        unlinkat(dfd, e->d_name, AT_REMOVEDIR);
    }
    closedir(d);
}

static void rm_tree(const char *path)
{
    chmod(path, 0700);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0)
        empty_dir(fd);
    if (rmdir(path) && errno != ENOENT)
        unlink(path);
}

/* The share, as every input starts with it: hello.txt, sub/inner.txt and up -> .., all with mtime OLD. */
#define OLD 1000000000
static void make_share(void)
{
    const struct timespec ts[2] = { { OLD, 0 }, { OLD, 0 } };
    char p[512];
    int fd;

    chmod(share, 0755);
    if ((fd = open(share, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        abort();
    empty_dir(fd);
    put_file(share, "hello.txt", "hello, 9p\n");
    snprintf(p, sizeof p, "%s/sub", share);
    mkdir(p, 0755);
    put_file(p, "inner.txt", "inner");
    snprintf(p, sizeof p, "%s/up", share);
    if (symlink("..", p))
        abort();
    for (int i = NPRISTINE - 1; i >= 0; i--) {
        snprintf(p, sizeof p, "%s%s", share, pristine[i]);
        if (utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW) || lstat(p, &pristine_st[i]))
            abort();
    }
}

/* Did the last input change the share? */
static int share_changed(void)
{
    char p[512];
    struct stat st;

    for (int i = 0; i < NPRISTINE; i++) {
        const struct stat *o = &pristine_st[i];
        snprintf(p, sizeof p, "%s%s", share, pristine[i]);
        if (lstat(p, &st) || st.st_ino != o->st_ino || st.st_mode != o->st_mode || st.st_uid != o->st_uid ||
            st.st_gid != o->st_gid || st.st_nlink != o->st_nlink || st.st_size != o->st_size ||
            st.st_mtim.tv_sec != OLD || st.st_mtim.tv_nsec != 0 || st.st_ctim.tv_sec != o->st_ctim.tv_sec ||
            st.st_ctim.tv_nsec != o->st_ctim.tv_nsec)
            return 1;
    }
    return 0;
}

static void cleanup(void)
{
    for (int i = 0; i < 2; i++)
        p9_server_free(srv[i]);
    if (base[0])
        rm_tree(base);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    char p[512];

    snprintf(base, sizeof base, "%s/fuzz_p9.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base))
        abort();
    atexit(cleanup);
    snprintf(share, sizeof share, "%s/share", base);
    snprintf(p, sizeof p, "%s/outside", base);
    mkdir(p, 0755);
    put_file(p, "secret.txt", "SECRET");
    put_file(base, "sentinel", "SENTINEL");
    stat(p, &out_st);
    if (mkdir(share, 0755))
        abort();
    make_share();
    stat(base, &base_st);
    for (int i = 0; i < 2; i++) {
        int fd = open(share, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (!(srv[i] = p9_server_new(fd, i)))
            abort();
    }
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
    snprintf(p, sizeof p, "%s/sentinel", base);
    if (stat(p, &st) || st.st_size != 8 || (st.st_mode & 0777) != 0644)
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

    if (!base[0])
        setup();
    s = srv[size && (data[0] & 1)];
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
    p9_server_reset(s);
    check_confined();
    if (share_changed())
        make_share();
    return 0;
}
