/* p9_internal.h - 9P server state and helpers shared by p9_fid.c (fids) and the messages (p9_server.c, p9_names.c). */
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
#include <sys/types.h>
#include <unistd.h>

#include "../host/host.h"
#include "p9_server.h"
#include "p9_wire.h"

/*
 * The permission bits a guest may set on the host (create, mkdir, mknod, chmod): never set-user-ID or
 * set-group-ID. With the VMM running as root (CI does) a guest could otherwise plant a root-owned 6755
 * file in the shared directory. The sticky bit stays (it only restricts).
 */
#define P9_SAFE_MODE(m) ((mode_t)((m)&01777))

/*
 * Host file descriptors: every fid is charged P9_NODE_FDS (its node's fd and its directory's) and one
 * more while it is open for I/O, against one budget for all shares of the process, capped at half the
 * descriptors left under RLIMIT_NOFILE (whose soft limit is raised to the hard one when the first share
 * is created). A guest that wants more gets ENFILE while libvmm's own open()s still have the other half.
 */
#define P9_NODE_FDS 2
void p9_fd_budget_init(void);
/* Charge an open file to the budget (ENFILE when it is spent) / give it back. */
int p9_fd_take(void);
void p9_fd_give(void);

/*
 * Confinement. Every fid holds a host-layer node of its object
 * (csrc/host/host.h: struct vmm__host_node) that was reached from the share
 * root one component at a time with vmm__host_node_walk(): names never
 * contain "/", symlinks are never followed on the host (a symlink's fid can
 * only be read with Treadlink; walking through it gives ENOTDIR, opening it
 * ELOOP), and ".." at the root stays at the root. Mutations are *at() calls
 * relative to a directory fid's fd with one checked name, or the host
 * layer's node functions (chmod, chown, utimens, link, open for I/O), which
 * act on the object itself and never follow a symlink. Host paths are never
 * joined as strings. How each host layer keeps that (O_PATH + /proc on
 * Linux; directory fds + (parent, name, st_dev/st_ino) checks in POSIX) is
 * described in host.h.
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

/* Linux dirent types as Rreaddir carries them (include/linux/fs_types.h) */
#define P9_DT_DIR 4
#define P9_DT_LNK 10

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
    struct vmm__host_node node; /* the object; its parent directory and name there */
    int ofd;                    /* open for I/O (Tlopen/Tlcreate), -1 otherwise */
    DIR *dir;                   /* Treaddir stream over ofd */
    long dpos;                  /* telldir() after the last entry returned */
    uint32_t oflags;            /* the dotl flags of Tlopen/Tlcreate while open (snapshots reopen with them) */
    int dead;                   /* restored from a snapshot but gone (an errno): every use but a clunk fails */
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
/* The live fid `id`, or NULL (none, or a dead one: p9_fid_find sees those too). */
struct fid *p9_fid_get(struct p9_server *s, uint32_t id);
struct fid *p9_fid_find(struct p9_server *s, uint32_t id);
struct fid *p9_fid_new(struct p9_server *s, uint32_t id);
void p9_fid_close_io(struct fid *f);
void p9_fid_del(struct p9_server *s, struct fid *f);
void p9_fids_clear(struct p9_server *s, bool sync);
void p9_qid_of(const struct stat *st, struct p9_qid *q);
void p9_node_qid(const struct vmm__host_node *n, struct p9_qid *q);
int p9_at_qid(int dirfd, const char *name, struct p9_qid *q);
bool p9_is_root(const struct p9_server *s, const struct vmm__host_node *n);
int p9_get_name(struct p9_rd *r, char out[P9_MAX_NAME + 1], bool dots);
void p9_skip_str(struct p9_rd *r);
int p9_host_open_flags(uint32_t fl, int *out);
bool p9_wants_write(uint32_t fl);

/* A directory fid with a directory open (not a path-only fid of one). */
static inline bool p9_is_dir(const struct fid *f)
{
    return S_ISDIR(f->node.mode) && f->node.fd >= 0;
}

/* p9_names.c: the common start of a request that changes a directory, and the messages on names */
int p9_changing_dir(struct p9_server *s, struct p9_rd *r, int name_err, uint32_t id, struct fid **f);
int p9_t_mkdir(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);
int p9_t_mknod(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);
int p9_t_symlink(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);
int p9_t_readlink(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);
int p9_t_link(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);
int p9_t_rename(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);
int p9_t_renameat(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);
int p9_t_unlinkat(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);

#define PARSED(r)          \
    do {                   \
        if ((r)->err)      \
            return EPROTO; \
    } while (0)

#endif
