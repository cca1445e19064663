/* p9_snap.c - the 9P server in a snapshot: the session's msize and every fid as a path in the share. */
#include <inttypes.h>

#include "vmm.h"
#include "../core/snapshot.h"
#include "p9_internal.h"

/*
 * A fid is saved as what it names, not as host state: its path relative to the share root (found on
 * the host at save time, so it follows renames made behind the server's back), the type of its object,
 * whether it is open (with the Tlopen/Tlcreate flags) and its directory position. Restore walks the
 * path again from the root one component at a time (vmm__host_node_walk: never following a symlink,
 * ".." refused), checks the type, and reopens an open fid through vmm__host_node_open (O_NONBLOCK,
 * fstat type check; O_TRUNC and O_EXCL dropped: the file was created or truncated already). A fid
 * whose path vanished, changed type or cannot be reopened is restored *dead* with an errno (ESTALE,
 * or the open's error): the guest's next request on it fails with that errno, a clunk frees it.
 * Readdir streams are not kept open: the next Treaddir reopens the stream and seeks to the guest's
 * offset (telldir cookies), as it does for any offset that is not the last one returned.
 *
 * What the host changed is the host's business (as when a file vanishes under a running VM); what the
 * snapshot file says is checked: names must be components a Twalk could carry, counts and ids bounded.
 */

#define SNAP_PATH_MAX 4096
enum { T_DIR, T_REG, T_LNK, T_OTHER };

static uint32_t type_of(mode_t m)
{
    return S_ISDIR(m) ? T_DIR : S_ISREG(m) ? T_REG : S_ISLNK(m) ? T_LNK : T_OTHER;
}

/* Prepend "/name" to the path being built backwards in buf[*at..cap). ENAMETOOLONG when it does not fit. */
static int prepend(char *buf, size_t *at, const char *name)
{
    size_t n = strlen(name);
    if (n + 1 > *at)
        return ENAMETOOLONG;
    *at -= n;
    memcpy(buf + *at, name, n);
    buf[--*at] = '/';
    return 0;
}

/* The name of the directory (dev, ino) in directory fd `up`, or ENOENT. */
static int name_in(int up, const struct stat *st, char name[P9_MAX_NAME + 1])
{
    int fd = fcntl(up, F_DUPFD_CLOEXEC, 0);
    DIR *d;
    struct dirent *de;
    int e = ENOENT;

    if (fd < 0)
        return errno;
    if (!(d = fdopendir(fd))) {
        e = errno;
        close(fd);
        return e;
    }
    while ((de = readdir(d))) {
        struct stat es;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (!fstatat(up, de->d_name, &es, AT_SYMLINK_NOFOLLOW) && es.st_dev == st->st_dev && es.st_ino == st->st_ino &&
            strlen(de->d_name) <= P9_MAX_NAME) {
            snprintf(name, P9_MAX_NAME + 1, "%s", de->d_name);
            e = 0;
            break;
        }
    }
    closedir(d);
    return e;
}

/*
 * The path of directory fd `dfd` below the share root ("" for the root, else "/a/b"), built by going
 * up through ".." and finding each directory's name in its parent. ESTALE if the root is not above it
 * (the host moved it out of the share, or removed it).
 */
static int dir_path(const struct p9_server *s, int dfd, char *buf, size_t *at)
{
    struct stat st, pst;
    int cur = dfd, e = 0;

    if (fstat(dfd, &st))
        return errno;
    for (unsigned depth = 0;; depth++) {
        char name[P9_MAX_NAME + 1];
        int up;

        if (st.st_dev == s->root_dev && st.st_ino == s->root_ino)
            break;
        if (depth >= SNAP_PATH_MAX / 2) {
            e = ENAMETOOLONG;
            break;
        }
        up = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        e = up < 0 ? errno : 0;
        if (cur != dfd)
            close(cur);
        cur = dfd;
        if (up < 0)
            return e == ENOENT ? ESTALE : e;
        if (fstat(up, &pst) || (pst.st_dev == st.st_dev && pst.st_ino == st.st_ino)) {
            close(up); /* "/" (its own parent), and the root was not on the way */
            return ESTALE;
        }
        if ((e = name_in(up, &st, name)) || (e = prepend(buf, at, name))) {
            close(up);
            return e == ENOENT ? ESTALE : e;
        }
        cur = up;
        st = pst;
    }
    if (cur != dfd)
        close(cur);
    return e;
}

/* The fid's path into out (NUL-terminated, "" for the root), or why it has none (ESTALE, ...). */
static int fid_path(const struct p9_server *s, const struct fid *f, char out[SNAP_PATH_MAX])
{
    char buf[SNAP_PATH_MAX];
    size_t at = sizeof buf - 1;
    const struct vmm__host_node *n = &f->node;
    int e;

    buf[at] = 0;
    if (S_ISDIR(n->mode) && n->fd >= 0) {
        e = dir_path(s, n->fd, buf, &at);
    } else if (n->pfd >= 0) {
        struct stat st;
        if (fstatat(n->pfd, n->name, &st, AT_SYMLINK_NOFOLLOW))
            return errno == ENOENT ? ESTALE : errno;
        if (st.st_dev != n->dev || st.st_ino != n->ino)
            return ESTALE; /* its name now holds another object */
        if ((e = prepend(buf, &at, n->name)))
            return e;
        e = dir_path(s, n->pfd, buf, &at);
    } else {
        return ESTALE;
    }
    if (!e)
        memcpy(out, buf + at, sizeof buf - at);
    return e;
}

/* Walk `path` ("" or "/a/b") from the root into *out. A bad component is a corrupt snapshot (-1). */
static int walk_path(struct p9_server *s, const char *path, struct vmm__host_node *out)
{
    struct vmm__host_node cur, next;
    int e;

    if ((e = vmm__host_node_root(s->root, &cur)))
        return e;
    while (*path) {
        char name[P9_MAX_NAME + 1];
        const char *end;
        size_t n;

        if (*path != '/') {
            vmm__host_node_close(&cur);
            return -1;
        }
        path++;
        end = strchr(path, '/');
        n = end ? (size_t)(end - path) : strlen(path);
        if (!n || n > P9_MAX_NAME || (n == 1 && path[0] == '.') || (n == 2 && path[0] == '.' && path[1] == '.')) {
            vmm__host_node_close(&cur);
            return -1;
        }
        memcpy(name, path, n);
        name[n] = 0;
        path += n;
        e = vmm__host_node_walk(&cur, name, &next);
        vmm__host_node_close(&cur);
        if (e)
            return e;
        cur = next;
    }
    *out = cur;
    return 0;
}

/* Restore one fid (a new one, id not in use): alive if its path still names its kind of object. */
static void load_fid(struct p9_server *s, struct vmm_snap *snap, uint32_t id, int dead, uint32_t type, const char *path,
                     bool open, uint32_t oflags, int64_t dpos)
{
    struct fid *f;
    struct vmm__host_node node;
    int e = dead, h;

    if (p9_fid_find(s, id)) {
        vmm__snap_fail(snap, "share fid %" PRIu32 " appears twice", id);
        return;
    }
    if (type > T_OTHER || (open && type != T_DIR && type != T_REG) || (open && p9_host_open_flags(oflags, &h))) {
        vmm__snap_fail(snap, "share fid %" PRIu32 ": type %" PRIu32 ", open %d with flags 0x%" PRIx32, id, type, open,
                       oflags);
        return;
    }
    if (!(f = p9_fid_new(s, id))) {
        vmm__snap_fail_code(snap, VMM_ENOMEM, "share fid %" PRIu32 ": no fid or file descriptor left", id);
        return;
    }
    if (!e) {
        int w = walk_path(s, path, &node);
        if (w < 0) {
            p9_fid_del(s, f);
            vmm__snap_fail(snap, "share fid %" PRIu32 ": bad path \"%.64s\"", id, path);
            return;
        }
        if (w) {
            e = ESTALE; /* vanished (or cannot be reached any more) */
        } else if (type_of(node.mode) != type) {
            vmm__host_node_close(&node);
            e = ESTALE; /* another kind of object now has the name */
        } else {
            f->node = node;
        }
    }
    if (!e && open) {
        uint32_t fl = oflags & ~(uint32_t)DOTL_TRUNC; /* created or truncated already */
        p9_host_open_flags(fl, &h);
        if (type == T_DIR)
            h = O_RDONLY | O_DIRECTORY;
        if (s->ro && p9_wants_write(fl))
            e = EROFS;
        else if (!(e = p9_fd_take()) && (e = vmm__host_node_open(&f->node, h, &f->ofd))) {
            f->ofd = -1;
            p9_fd_give();
        }
        if (!e) {
            f->oflags = oflags;
            f->dpos = (long)dpos;
        }
    }
    if (e) {
        vmm__host_node_close(&f->node);
        vmm__host_node_init(&f->node);
        f->dead = e > 0 ? e : ESTALE;
    }
}

int p9_server_snap(struct p9_server *s, struct vmm_snap *snap)
{
    bool loading = vmm__snap_loading(snap);
    uint32_t nfids = 0;
    char *p = malloc(SNAP_PATH_MAX);

    if (!p)
        return vmm__snap_fail_code(snap, VMM_ENOMEM, "out of memory");
    vmm__snap_u32(snap, &s->msize);
    if (loading && !vmm__snap_error(snap) && (s->msize < P9_MIN_MSIZE || s->msize > P9_MAX_MSIZE))
        vmm__snap_fail(snap, "share msize %" PRIu32 " is outside %u..%u", s->msize, P9_MIN_MSIZE, P9_MAX_MSIZE);
    if (loading)
        p9_fids_clear(s, false);
    else
        for (unsigned i = 0; i < P9_MAX_FIDS; i++)
            nfids += s->fids[i].used;
    vmm__snap_u32(snap, &nfids);
    if (loading && nfids > P9_MAX_FIDS)
        vmm__snap_fail(snap, "%" PRIu32 " share fids: at most %d", nfids, P9_MAX_FIDS);
    for (unsigned i = 0, done = 0; done < nfids && !vmm__snap_error(snap); i++) {
        struct fid *f = loading ? NULL : &s->fids[i];
        uint32_t id = 0, type = T_OTHER, oflags = 0, dead = 0;
        bool open = false;
        int64_t dpos = 0;

        if (!loading) {
            if (i >= P9_MAX_FIDS)
                break;
            if (!f->used)
                continue;
            id = f->id;
            dead = (uint32_t)f->dead;
            if (f->ofd >= 0)
                fsync(f->ofd); /* what the guest wrote is on the host, as at a reset */
            if (!dead && (dead = (uint32_t)fid_path(s, f, p)) == 0) {
                type = type_of(f->node.mode);
                open = f->ofd >= 0;
                oflags = open ? f->oflags : 0;
                dpos = f->dpos;
            }
            if (dead)
                p[0] = 0;
        }
        vmm__snap_u32(snap, &id);
        vmm__snap_u32(snap, &dead);
        vmm__snap_u32(snap, &type);
        vmm__snap_str(snap, p, SNAP_PATH_MAX);
        vmm__snap_bool(snap, &open);
        vmm__snap_u32(snap, &oflags);
        vmm__snap_u64(snap, (uint64_t *)&dpos);
        done++;
        if (!loading || vmm__snap_error(snap))
            continue;
        if (dead > 4095)
            vmm__snap_fail(snap, "share fid %" PRIu32 ": errno %" PRIu32, id, dead);
        else
            load_fid(s, snap, id, (int)dead, type, p, open, oflags, dpos);
    }
    free(p);
    if (loading && vmm__snap_error(snap))
        p9_fids_clear(s, false);
    return vmm__snap_error(snap);
}
