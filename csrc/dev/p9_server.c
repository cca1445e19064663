/* p9_server.c - a 9P2000.L server confined to one host directory (the protocol as Linux v9fs speaks it). */
#include "p9_internal.h"

/* ---- the messages ----------------------------------------------------------- */

/* The fid's object: through its open fd if it has one (still the object after a rename), else its node. */
static int fid_stat(const struct fid *f, struct stat *st)
{
    if (f->ofd >= 0)
        return fstat(f->ofd, st) ? errno : 0;
    return vmm__host_node_stat(&f->node, st);
}

static int t_version(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t msize = p9_r32(r);
    uint16_t n;
    const char *v = p9_rstr(r, &n);
    static const char dotl[] = "9P2000.L";
    bool ok;

    PARSED(r);
    if (msize < P9_MIN_MSIZE)
        return EINVAL;
    p9_fids_clear(s, true); /* a new session */
    s->msize = msize < P9_MAX_MSIZE ? msize : P9_MAX_MSIZE;
    ok = n >= sizeof dotl - 1 && !memcmp(v, dotl, sizeof dotl - 1) &&
         (n == sizeof dotl - 1 || v[sizeof dotl - 1] == '.');
    p9_w32(w, s->msize);
    if (ok)
        p9_wstr(w, dotl, sizeof dotl - 1);
    else
        p9_wstr(w, "unknown", 7);
    return 0;
}

static int t_attach(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    struct vmm__host_node root;
    struct p9_qid q;
    struct fid *f;
    int e;

    p9_r32(r); /* afid: no authentication */
    p9_skip_str(r);
    p9_skip_str(r); /* aname: the share is the root whatever it says */
    p9_r32(r);
    PARSED(r);
    if (p9_fid_get(s, id))
        return EEXIST;
    if ((e = vmm__host_node_root(s->root, &root)))
        return e;
    if (!(f = p9_fid_new(s, id))) {
        vmm__host_node_close(&root);
        return ENFILE;
    }
    f->node = root;
    p9_node_qid(&root, &q);
    p9_wqid(w, &q);
    return 0;
}

static int t_walk(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r), newid = p9_r32(r);
    uint16_t n = p9_r16(r);
    char names[P9_MAX_WALK][P9_MAX_NAME + 1];
    struct p9_qid qids[P9_MAX_WALK];
    struct vmm__host_node cur, next;
    struct fid *f, *nf;
    int e = 0;
    unsigned done = 0;

    PARSED(r);
    if (n > P9_MAX_WALK)
        return EINVAL;
    for (unsigned i = 0; i < n; i++)
        if ((e = p9_get_name(r, names[i], true)))
            return e;
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    if (newid != id && p9_fid_get(s, newid))
        return EEXIST;
    if (newid == id && n && f->ofd >= 0)
        return EBADF;
    if ((e = vmm__host_node_dup(&f->node, &cur)))
        return e;

    for (done = 0; done < n; done++) {
        const char *nm = names[done];
        bool dot = !strcmp(nm, ".");

        if (!strcmp(nm, "..") && p9_is_root(s, &cur))
            nm = "."; /* the root's ".." is the root */
        if ((e = vmm__host_node_walk(&cur, nm, &next)))
            break;
        p9_node_qid(&next, &qids[done]);
        if (dot) { /* "." keeps the parent and name; after ".." they are not known */
            next.pfd = cur.pfd;
            cur.pfd = -1;
            memcpy(next.name, cur.name, sizeof next.name);
        }
        vmm__host_node_close(&cur);
        cur = next;
    }
    if (done < n) {
        vmm__host_node_close(&cur);
        if (!done)
            return e ? e : ENOENT;
        p9_w16(w, (uint16_t)done); /* a partial walk: newfid is not created */
        for (unsigned i = 0; i < done; i++)
            p9_wqid(w, &qids[i]);
        return 0;
    }
    if (newid == id) {
        nf = f;
        vmm__host_node_close(&nf->node);
    } else if (!(nf = p9_fid_new(s, newid))) {
        vmm__host_node_close(&cur);
        return ENFILE;
    }
    nf->node = cur;
    p9_w16(w, n);
    for (unsigned i = 0; i < n; i++)
        p9_wqid(w, &qids[i]);
    return 0;
}

static int t_lopen(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r), fl = p9_r32(r);
    struct fid *f;
    struct stat st;
    struct p9_qid q;
    int h, e, fd;

    PARSED(r);
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    if (f->ofd >= 0)
        return EBADF;
    if ((e = fid_stat(f, &st)))
        return e;
    if (S_ISLNK(st.st_mode))
        return ELOOP;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return ENXIO; /* FIFOs, sockets, devices: the guest's VFS handles them, never the host */
    if ((e = p9_host_open_flags(fl, &h)))
        return e;
    if (s->ro && p9_wants_write(fl))
        return EROFS;
    if (S_ISDIR(st.st_mode)) {
        if ((fl & DOTL_ACCMODE) != 0)
            return EISDIR;
        h = O_RDONLY | O_DIRECTORY;
    }
    if ((e = p9_fd_take()))
        return e;
    if ((e = vmm__host_node_open(&f->node, h, &fd))) {
        p9_fd_give();
        return e;
    }
    f->ofd = fd;
    f->dpos = 0;
    f->oflags = fl;
    p9_qid_of(&st, &q);
    p9_wqid(w, &q);
    p9_w32(w, 0); /* iounit: msize */
    return 0;
}

static int t_lcreate(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = p9_get_name(r, name, false);
    uint32_t fl = p9_r32(r), mode = p9_r32(r);
    struct fid *f;
    struct vmm__host_node nn;
    struct p9_qid q;
    int h, fd;

    p9_r32(r); /* gid: files belong to the VMM's user */
    if ((e = p9_changing_dir(s, r, e, id, &f)))
        return e;
    if (f->ofd >= 0)
        return EBADF;
    if ((e = p9_host_open_flags(fl, &h)))
        return e;
    h &= ~O_DIRECTORY;
    if (fl & DOTL_EXCL)
        h |= O_EXCL;
    if ((e = p9_fd_take()))
        return e;
    if ((e = vmm__host_node_create(&f->node, name, h, P9_SAFE_MODE(mode), &nn, &fd))) {
        p9_fd_give();
        return e;
    }
    /* the fid becomes the new file; its directory becomes the parent */
    vmm__host_node_close(&f->node);
    f->node = nn;
    f->ofd = fd;
    f->oflags = fl & ~DOTL_DIRECTORY;
    p9_node_qid(&nn, &q);
    p9_wqid(w, &q);
    p9_w32(w, 0);
    return 0;
}

static int t_read(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    uint64_t off = p9_r64(r);
    uint32_t count = p9_r32(r);
    struct fid *f;
    uint8_t *cnt;
    size_t max;
    ssize_t got;

    PARSED(r);
    if (!(f = p9_fid_get(s, id)) || f->ofd < 0)
        return EBADF;
    if (f->dir)
        return EISDIR;
    if (off > (uint64_t)INT64_MAX)
        return EINVAL;
    if (!(cnt = p9_wreserve(w, 4)))
        return ERANGE;
    max = p9_wleft(w);
    if (count < max)
        max = count;
    if ((got = pread(f->ofd, w->p + w->off, max, (off_t)off)) < 0)
        return errno;
    w->off += (size_t)got;
    p9_put32(cnt, (uint32_t)got);
    return 0;
}

static int t_write(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    uint64_t off = p9_r64(r);
    uint32_t count = p9_r32(r);
    const uint8_t *data = p9_rbytes(r, count);
    struct fid *f;
    ssize_t put;

    PARSED(r);
    if (!(f = p9_fid_get(s, id)) || f->ofd < 0 || f->dir)
        return EBADF;
    if (s->ro)
        return EROFS;
    if (off > (uint64_t)INT64_MAX)
        return EINVAL;
    if ((put = pwrite(f->ofd, data, count, (off_t)off)) < 0)
        return errno;
    p9_w32(w, (uint32_t)put);
    return 0;
}

static int t_clunk(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    struct fid *f;

    (void)w;
    PARSED(r);
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    p9_fid_del(s, f);
    return 0;
}

static int t_remove(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    struct stat st, at;
    struct fid *f;
    int e = 0;

    (void)w;
    PARSED(r);
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    if (s->ro)
        e = EROFS;
    else if (f->node.pfd < 0)
        e = p9_is_root(s, &f->node) ? EBUSY : EOPNOTSUPP;
    else if ((e = fid_stat(f, &st)))
        ;
    else if (fstatat(f->node.pfd, f->node.name, &at, AT_SYMLINK_NOFOLLOW))
        e = errno;
    else if (st.st_dev != at.st_dev || st.st_ino != at.st_ino)
        e = ENOENT; /* renamed behind the fid's back */
    else if (unlinkat(f->node.pfd, f->node.name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0))
        e = errno;
    p9_fid_del(s, f); /* clunked even when the remove fails */
    return e;
}

static int t_getattr(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    struct fid *f;
    struct timespec tm[3];
    struct stat st;
    struct p9_qid q;
    int e;

    p9_r64(r); /* request_mask: we always answer the basic set */
    PARSED(r);
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    if ((e = fid_stat(f, &st)))
        return e;
    vmm__host_stat_times(&st, tm);
    p9_qid_of(&st, &q);
    p9_w64(w, GETATTR_BASIC);
    p9_wqid(w, &q);
    p9_w32(w, st.st_mode);
    p9_w32(w, st.st_uid);
    p9_w32(w, st.st_gid);
    p9_w64(w, st.st_nlink);
    p9_w64(w, st.st_rdev);
    p9_w64(w, (uint64_t)st.st_size);
    p9_w64(w, (uint64_t)st.st_blksize);
    p9_w64(w, (uint64_t)st.st_blocks);
    for (int i = 0; i < 3; i++) { /* atime, mtime, ctime */
        p9_w64(w, (uint64_t)tm[i].tv_sec);
        p9_w64(w, (uint64_t)tm[i].tv_nsec);
    }
    for (int i = 0; i < 4; i++)
        p9_w64(w, 0); /* btime sec/nsec, gen, data_version */
    return 0;
}

static int t_setattr(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r), valid = p9_r32(r), mode = p9_r32(r), uid = p9_r32(r), gid = p9_r32(r);
    uint64_t size = p9_r64(r);
    struct timespec ts[2];
    struct fid *f;
    struct stat st;
    int e;

    ts[0].tv_sec = (time_t)p9_r64(r);
    ts[0].tv_nsec = (long)p9_r64(r);
    ts[1].tv_sec = (time_t)p9_r64(r);
    ts[1].tv_nsec = (long)p9_r64(r);
    (void)w;
    PARSED(r);
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if ((e = fid_stat(f, &st)))
        return e;
    if (valid & SETATTR_MODE) {
        if (S_ISLNK(st.st_mode))
            return EOPNOTSUPP;
        if ((e = vmm__host_node_chmod(&f->node, P9_SAFE_MODE(mode))))
            return e;
    }
    /* ownership is the VMM user's: a change that changes nothing is fine, any other is refused */
    if (((valid & SETATTR_UID) && (uid_t)uid != st.st_uid) || ((valid & SETATTR_GID) && (gid_t)gid != st.st_gid))
        return EPERM;
    if (valid & SETATTR_SIZE) {
        int fd;
        if (S_ISDIR(st.st_mode))
            return EISDIR;
        if (!S_ISREG(st.st_mode))
            return EINVAL;
        if (size > (uint64_t)INT64_MAX)
            return EFBIG;
        if ((e = vmm__host_node_open(&f->node, O_WRONLY, &fd)))
            return e;
        if (ftruncate(fd, (off_t)size)) {
            e = errno;
            close(fd);
            return e;
        }
        close(fd);
    }
    if (valid & (SETATTR_ATIME | SETATTR_MTIME)) {
        if (!(valid & SETATTR_ATIME))
            ts[0].tv_nsec = UTIME_OMIT;
        else if (!(valid & SETATTR_ATIME_SET))
            ts[0].tv_nsec = UTIME_NOW;
        else if (ts[0].tv_nsec < 0 || ts[0].tv_nsec >= 1000000000L)
            return EINVAL;
        if (!(valid & SETATTR_MTIME))
            ts[1].tv_nsec = UTIME_OMIT;
        else if (!(valid & SETATTR_MTIME_SET))
            ts[1].tv_nsec = UTIME_NOW;
        else if (ts[1].tv_nsec < 0 || ts[1].tv_nsec >= 1000000000L)
            return EINVAL;
        if ((e = vmm__host_node_utimens(&f->node, ts)))
            return e;
    }
    return 0;
}

static int t_readdir(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    uint64_t off = p9_r64(r);
    uint32_t count = p9_r32(r);
    struct fid *f;
    uint8_t *cnt;
    size_t max, start;

    PARSED(r);
    if (!(f = p9_fid_get(s, id)) || f->ofd < 0)
        return EBADF;
    if (!f->dir) {
        struct stat st;
        if (fstat(f->ofd, &st))
            return errno;
        if (!S_ISDIR(st.st_mode))
            return ENOTDIR;
        if (!(f->dir = fdopendir(f->ofd)))
            return errno;
        f->dpos = 0;
    }
    if (off == 0)
        rewinddir(f->dir);
    else if ((long)off != f->dpos)
        seekdir(f->dir, (long)off);
    if (!(cnt = p9_wreserve(w, 4)))
        return ERANGE;
    start = w->off;
    max = p9_wleft(w);
    if (count < max)
        max = count;
    for (;;) {
        long before = telldir(f->dir);
        struct dirent *de;
        struct p9_qid q;
        size_t nlen, need;

        errno = 0;
        if (!(de = readdir(f->dir))) {
            if (errno && w->off == start)
                return errno;
            break;
        }
        nlen = strnlen(de->d_name, sizeof de->d_name);
        need = P9_QID_SIZE + 8 + 1 + 2 + nlen;
        if (need > max - (w->off - start)) {
            seekdir(f->dir, before);
            break;
        }
        uint8_t type = vmm__host_dirent_type(f->dir, de);
        q.type = type == P9_DT_DIR ? P9_QTDIR : type == P9_DT_LNK ? P9_QTSYMLINK : P9_QTFILE;
        q.version = 0;
        q.path = (uint64_t)de->d_ino;
        p9_wqid(w, &q);
        p9_w64(w, (uint64_t)telldir(f->dir));
        p9_w8(w, type);
        p9_wstr(w, de->d_name, nlen);
    }
    f->dpos = telldir(f->dir);
    p9_put32(cnt, (uint32_t)(w->off - start));
    return 0;
}

static int t_statfs(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    struct vmm__host_fsstat sf;
    struct fid *f;
    int e;

    PARSED(r);
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    if ((e = vmm__host_node_fsstat(&f->node, &sf)))
        return e;
    p9_w32(w, sf.type);
    p9_w32(w, sf.bsize);
    p9_w64(w, sf.blocks);
    p9_w64(w, sf.bfree);
    p9_w64(w, sf.bavail);
    p9_w64(w, sf.files);
    p9_w64(w, sf.ffree);
    p9_w64(w, sf.fsid);
    p9_w32(w, sf.namelen);
    return 0;
}

static int t_fsync(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r), datasync = p9_r32(r);
    struct fid *f;

    (void)w;
    PARSED(r);
    if (!(f = p9_fid_get(s, id)) || f->ofd < 0)
        return EBADF;
    return (datasync ? fdatasync(f->ofd) : fsync(f->ofd)) ? errno : 0;
}

/* Locks are advisory among the guest's own processes, which its kernel serializes: always granted. */
static int t_lock(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);

    p9_r8(r);
    p9_r32(r);
    p9_r64(r);
    p9_r64(r);
    p9_r32(r);
    p9_skip_str(r);
    PARSED(r);
    if (!p9_fid_get(s, id))
        return EBADF;
    p9_w8(w, P9_LOCK_SUCCESS);
    return 0;
}

static int t_getlock(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    uint64_t start, len;
    uint32_t proc;
    uint16_t clen;
    const char *client;

    p9_r8(r);
    start = p9_r64(r);
    len = p9_r64(r);
    proc = p9_r32(r);
    client = p9_rstr(r, &clen);
    PARSED(r);
    if (!p9_fid_get(s, id))
        return EBADF;
    p9_w8(w, P9_LOCK_TYPE_UNLCK);
    p9_w64(w, start);
    p9_w64(w, len);
    p9_w32(w, proc);
    p9_wstr(w, client, clen);
    return 0;
}

static int t_xattrwalk(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);

    (void)w;
    p9_r32(r);
    p9_skip_str(r);
    PARSED(r);
    return p9_fid_get(s, id) ? EOPNOTSUPP : EBADF;
}

static int t_xattrcreate(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);

    (void)w;
    p9_skip_str(r);
    p9_r64(r);
    p9_r32(r);
    PARSED(r);
    if (!p9_fid_get(s, id))
        return EBADF;
    return s->ro ? EROFS : EOPNOTSUPP;
}

static int t_flush(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    (void)s;
    (void)w;
    p9_r16(r); /* oldtag: every request is answered before the next is read */
    PARSED(r);
    return 0;
}

/* ---- dispatch ----------------------------------------------------------------- */

static size_t lerror(uint8_t *resp, uint16_t tag, int e)
{
    p9_put32(resp, 11);
    resp[4] = P9_RLERROR;
    p9_put16(resp + 5, tag);
    p9_put32(resp + 7, (uint32_t)e);
    return 11;
}

typedef int (*p9_fn)(struct p9_server *s, struct p9_rd *r, struct p9_wr *w);

static p9_fn handler(uint8_t type)
{
    switch (type) {
    case P9_TSTATFS:
        return t_statfs;
    case P9_TLOPEN:
        return t_lopen;
    case P9_TLCREATE:
        return t_lcreate;
    case P9_TSYMLINK:
        return p9_t_symlink;
    case P9_TMKNOD:
        return p9_t_mknod;
    case P9_TRENAME:
        return p9_t_rename;
    case P9_TREADLINK:
        return p9_t_readlink;
    case P9_TGETATTR:
        return t_getattr;
    case P9_TSETATTR:
        return t_setattr;
    case P9_TXATTRWALK:
        return t_xattrwalk;
    case P9_TXATTRCREATE:
        return t_xattrcreate;
    case P9_TREADDIR:
        return t_readdir;
    case P9_TFSYNC:
        return t_fsync;
    case P9_TLOCK:
        return t_lock;
    case P9_TGETLOCK:
        return t_getlock;
    case P9_TLINK:
        return p9_t_link;
    case P9_TMKDIR:
        return p9_t_mkdir;
    case P9_TRENAMEAT:
        return p9_t_renameat;
    case P9_TUNLINKAT:
        return p9_t_unlinkat;
    case P9_TVERSION:
        return t_version;
    case P9_TATTACH:
        return t_attach;
    case P9_TFLUSH:
        return t_flush;
    case P9_TWALK:
        return t_walk;
    case P9_TREAD:
        return t_read;
    case P9_TWRITE:
        return t_write;
    case P9_TCLUNK:
        return t_clunk;
    case P9_TREMOVE:
        return t_remove;
    default:
        return NULL; /* Tauth, Tlerror, the legacy 9P2000(.u) messages, R-messages */
    }
}

size_t p9_handle(struct p9_server *s, const uint8_t *req, size_t len, uint8_t *resp, size_t cap)
{
    uint32_t size;
    uint16_t tag;
    uint8_t type;
    p9_fn fn;
    int e;

    if (!s || !resp)
        return 0;
    if (cap > s->msize)
        cap = s->msize;
    if (cap < RHDR)
        return 0;
    if (!req || len < P9_HDR_SIZE)
        return lerror(resp, P9_NOTAG, EPROTO);
    size = p9_get32(req);
    type = req[4];
    tag = p9_get16(req + 5);
    if (size < P9_HDR_SIZE || size > len)
        return lerror(resp, tag, EPROTO); /* truncated */
    if (size > s->msize)
        return lerror(resp, tag, EMSGSIZE);
    if (!(fn = handler(type)))
        return lerror(resp, tag, EOPNOTSUPP);
    /* every message but these names an existing fid first: a dead one (snapshots) answers its errno */
    if (type != P9_TVERSION && type != P9_TATTACH && type != P9_TFLUSH && size >= P9_HDR_SIZE + 4) {
        struct fid *f = p9_fid_find(s, p9_get32(req + P9_HDR_SIZE));
        if (f && f->dead) {
            e = f->dead;
            if (type == P9_TCLUNK || type == P9_TREMOVE)
                p9_fid_del(s, f);
            if (type != P9_TCLUNK)
                return lerror(resp, tag, e);
            p9_put32(resp, P9_HDR_SIZE); /* Rclunk */
            resp[4] = (uint8_t)(type + 1);
            p9_put16(resp + 5, tag);
            return P9_HDR_SIZE;
        }
    }
    {
        struct p9_rd r = { .p = req + P9_HDR_SIZE, .len = size - P9_HDR_SIZE };
        struct p9_wr w = { .p = resp, .cap = cap, .off = P9_HDR_SIZE };

        e = fn(s, &r, &w);
        if (!e && w.err)
            e = ERANGE;
        if (e)
            return lerror(resp, tag, e);
        p9_put32(resp, (uint32_t)w.off);
        resp[4] = (uint8_t)(type + 1);
        p9_put16(resp + 5, tag);
        return w.off;
    }
}
