/* p9_internal.h - 9P server state and helpers shared by p9_fid.c (fids) and p9_server.c (messages). */
#ifndef VMM_P9_INTERNAL_H
#define VMM_P9_INTERNAL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <unistd.h>

#include "p9_server.h"
#include "p9_wire.h"

/*
 * Confinement. Every fid holds an fd of its object (O_PATH, or an ordinary
 * fd for a file made by Tlcreate) that was reached from the share root one
 * component at a time with openat(dir, name, O_PATH | O_NOFOLLOW): names
 * never contain "/", symlinks are never followed on the host (a symlink's
 * fid can only be read with Treadlink; walking through it gives ENOTDIR,
 * opening it ELOOP), and ".." at the root stays at the root. Mutations are
 * *at() calls relative to a directory fid with one checked name, or use
 * the fid's own fd (fchownat AT_EMPTY_PATH, /proc/self/fd/N reopen for
 * chmod, truncate, utimensat and link, only for objects that are not
 * symlinks). Host paths are never joined as strings.
 */

/* 9P2000.L message types */
enum {
    P9_TLERROR = 6,
    P9_RLERROR = 7,
    P9_TSTATFS = 8,
    P9_TLOPEN = 12,
    P9_TLCREATE = 14,
    P9_TSYMLINK = 16,
    P9_TMKNOD = 18,
    P9_TRENAME = 20,
    P9_TREADLINK = 22,
    P9_TGETATTR = 24,
    P9_TSETATTR = 26,
    P9_TXATTRWALK = 30,
    P9_TXATTRCREATE = 32,
    P9_TREADDIR = 40,
    P9_TFSYNC = 50,
    P9_TLOCK = 52,
    P9_TGETLOCK = 54,
    P9_TLINK = 70,
    P9_TMKDIR = 72,
    P9_TRENAMEAT = 74,
    P9_TUNLINKAT = 76,
    P9_TVERSION = 100,
    P9_TAUTH = 102,
    P9_TATTACH = 104,
    P9_TFLUSH = 108,
    P9_TWALK = 110,
    P9_TREAD = 116,
    P9_TWRITE = 118,
    P9_TCLUNK = 120,
    P9_TREMOVE = 122,
};

/* Linux "dotl" open flags (include/net/9p/9p.h): the generic Linux values, not the host's */
#define DOTL_ACCMODE 03u
#define DOTL_EXCL 0200u
#define DOTL_TRUNC 01000u
#define DOTL_APPEND 02000u
#define DOTL_DSYNC 010000u
#define DOTL_DIRECTORY 0200000u
#define DOTL_SYNC 04000000u

/* Tsetattr valid bits */
#define SETATTR_MODE 0x1u
#define SETATTR_UID 0x2u
#define SETATTR_GID 0x4u
#define SETATTR_SIZE 0x8u
#define SETATTR_ATIME 0x10u
#define SETATTR_MTIME 0x20u
#define SETATTR_ATIME_SET 0x80u
#define SETATTR_MTIME_SET 0x100u

#define GETATTR_BASIC 0x7ffULL
#define P9_AT_REMOVEDIR 0x200u
#define P9_LOCK_SUCCESS 0
#define P9_LOCK_TYPE_UNLCK 2
#define RHDR 11 /* size[4] type[1] tag[2] count[4]: Rread and Rreaddir before their data */
#define MAX_SYMLINK 4095
#define FID_BUCKETS 1024

struct fid {
    uint32_t id;
    int next; /* hash chain (index + 1), or the free list when unused */
    bool used;
    int fd;    /* the object */
    int pfd;   /* its parent directory, -1 for the root and after ".." */
    int ofd;   /* open for I/O (Tlopen/Tlcreate), -1 otherwise */
    DIR *dir;  /* Treaddir stream over ofd */
    long dpos; /* telldir() after the last entry returned */
    char name[P9_MAX_NAME + 1];
};

struct p9_server {
    int root;
    dev_t root_dev;
    ino_t root_ino;
    bool ro;
    uint32_t msize;
    int buckets[FID_BUCKETS]; /* index + 1, 0 = empty */
    int free_head;            /* index + 1 */
    struct fid fids[P9_MAX_FIDS];
};

/* ---- p9_fid.c ---- */
struct fid *fid_get(struct p9_server *s, uint32_t id);
struct fid *fid_new(struct p9_server *s, uint32_t id);
void fid_close_io(struct fid *f);
void fid_del(struct p9_server *s, struct fid *f);
void fids_clear(struct p9_server *s, bool sync);
void qid_of(const struct stat *st, struct p9_qid *q);
int fd_qid(int fd, struct p9_qid *q);
int at_qid(int dirfd, const char *name, struct p9_qid *q);
bool is_root(const struct p9_server *s, int fd);
int get_name(struct p9_rd *r, char out[P9_MAX_NAME + 1], bool dots);
int skip_str(struct p9_rd *r);
void proc_path(char *buf, size_t len, int fd);
int reopen(struct fid *f, int flags);
int host_open_flags(uint32_t fl, int *out);
bool wants_write(uint32_t fl);

#define PARSED(r)          \
    do {                   \
        if ((r)->err)      \
            return EPROTO; \
    } while (0)

#endif
