/* p9_server.c - a 9P2000.L server confined to one host directory (the protocol as Linux v9fs speaks it). */
#define _GNU_SOURCE
#include "p9_internal.h"

/* ---- the messages ----------------------------------------------------------- */

/*
 * The common start of a request that changes a directory: once its fields
 * are read (name_err is get_name()'s result), the directory fid `id`, or why
 * not (a bad name, a short message, no such fid, a read-only share).
 */
static int changing_dir(struct p9_server *s, struct p9_rd *r, int name_err, uint32_t id, struct fid **f)
{
    if (name_err)
        return name_err;
    PARSED(r);
    if (!(*f = fid_get(s, id)))
        return EBADF;
    return s->ro ? EROFS : 0;
}

/* Reply with the qid of what `name` in dirfd now is. */
static int reply_qid_at(struct p9_wr *w, int dirfd, const char *name)
{
    struct p9_qid q;
    int e = at_qid(dirfd, name, &q);

    if (!e)
        p9_wqid(w, &q);
    return e;
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
    fids_clear(s, true); /* a new session */
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
    struct p9_qid q;
    struct fid *f;
    int fd, e;

    p9_r32(r); /* afid: no authentication */
    skip_str(r);
    skip_str(r); /* aname: the share is the root whatever it says */
    p9_r32(r);
    PARSED(r);
    if (fid_get(s, id))
        return EEXIST;
    if ((fd = openat(s->root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return errno;
    if ((e = fd_qid(fd, &q)) || !(f = fid_new(s, id))) {
        close(fd);
        return e ? e : ENFILE;
    }
    f->fd = fd;
    p9_wqid(w, &q);
    return 0;
}

static int t_walk(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r), newid = p9_r32(r);
    uint16_t n = p9_r16(r);
    char names[P9_MAX_WALK][P9_MAX_NAME + 1];
    struct p9_qid qids[P9_MAX_WALK];
    char curname[P9_MAX_NAME + 1];
    struct fid *f, *nf;
    int cur, par, e = 0;
    unsigned done = 0;

    PARSED(r);
    if (n > P9_MAX_WALK)
        return EINVAL;
    for (unsigned i = 0; i < n; i++)
        if ((e = get_name(r, names[i], true)))
            return e;
    if (!(f = fid_get(s, id)))
        return EBADF;
    if (newid != id && fid_get(s, newid))
        return EEXIST;
    if (newid == id && n && f->ofd >= 0)
        return EBADF;
    if ((cur = fcntl(f->fd, F_DUPFD_CLOEXEC, 0)) < 0)
        return errno;
    par = f->pfd >= 0 ? fcntl(f->pfd, F_DUPFD_CLOEXEC, 0) : -1;
    if (f->pfd >= 0 && par < 0) {
        e = errno;
        close(cur);
        return e;
    }
    memcpy(curname, f->name, sizeof curname);

    for (done = 0; done < n; done++) {
        const char *nm = names[done];
        bool dot = !strcmp(nm, "."), dotdot = !strcmp(nm, "..");
        int nfd;

        if (dotdot && is_root(s, cur))
            nfd = openat(cur, ".", O_PATH | O_DIRECTORY | O_CLOEXEC); /* the root's ".." is the root */
        else if (dot || dotdot)
            nfd = openat(cur, nm, O_PATH | O_DIRECTORY | O_CLOEXEC);
        else
            nfd = openat(cur, nm, O_PATH | O_NOFOLLOW | O_CLOEXEC); /* a symlink is the object itself */
        if (nfd < 0) {
            e = errno;
            break;
        }
        if ((e = fd_qid(nfd, &qids[done]))) {
            close(nfd);
            break;
        }
        if (!dot && !dotdot) { /* cur becomes the parent */
            if (par >= 0)
                close(par);
            par = cur;
            size_t nl = strnlen(nm, sizeof curname - 1);
            memcpy(curname, nm, nl);
            curname[nl] = '\0';
        } else {
            close(cur);
            if (dotdot) { /* the new parent is not known */
                if (par >= 0)
                    close(par);
                par = -1;
                curname[0] = 0;
            }
        }
        cur = nfd;
    }
    if (done < n) {
        close(cur);
        if (par >= 0)
            close(par);
        if (!done)
            return e ? e : ENOENT;
        p9_w16(w, (uint16_t)done); /* a partial walk: newfid is not created */
        for (unsigned i = 0; i < done; i++)
            p9_wqid(w, &qids[i]);
        return 0;
    }
    if (newid == id) {
        nf = f;
        close(nf->fd);
        if (nf->pfd >= 0)
            close(nf->pfd);
    } else if (!(nf = fid_new(s, newid))) {
        close(cur);
        if (par >= 0)
            close(par);
        return ENFILE;
    }
    nf->fd = cur;
    nf->pfd = par;
    memcpy(nf->name, curname, sizeof nf->name);
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
    if (!(f = fid_get(s, id)))
        return EBADF;
    if (f->ofd >= 0)
        return EBADF;
    if (fstat(f->fd, &st))
        return errno;
    if (S_ISLNK(st.st_mode))
        return ELOOP;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return ENXIO; /* FIFOs, sockets, devices: the guest's VFS handles them, never the host */
    if ((e = host_open_flags(fl, &h)))
        return e;
    if (s->ro && wants_write(fl))
        return EROFS;
    if (S_ISDIR(st.st_mode)) {
        if ((fl & DOTL_ACCMODE) != 0)
            return EISDIR;
        h = O_RDONLY | O_DIRECTORY;
    }
    if ((fd = reopen(f, h)) < 0)
        return errno;
    f->ofd = fd;
    f->dpos = 0;
    qid_of(&st, &q);
    p9_wqid(w, &q);
    p9_w32(w, 0); /* iounit: msize */
    return 0;
}

static int t_lcreate(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = get_name(r, name, false);
    uint32_t fl = p9_r32(r), mode = p9_r32(r);
    struct fid *f;
    struct p9_qid q;
    int h, fd, pfd;

    p9_r32(r); /* gid: files belong to the VMM's user */
    if ((e = changing_dir(s, r, e, id, &f)))
        return e;
    if (f->ofd >= 0)
        return EBADF;
    if ((e = host_open_flags(fl, &h)))
        return e;
    h &= ~O_DIRECTORY;
    if (fl & DOTL_EXCL)
        h |= O_EXCL;
    if ((fd = openat(f->fd, name, h | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, (mode_t)(mode & 07777))) < 0)
        return errno;
    if ((e = fd_qid(fd, &q)) || (pfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        e = e ? e : errno;
        close(fd);
        return e;
    }
    /* the fid becomes the new file; its directory becomes the parent */
    if (f->pfd >= 0)
        close(f->pfd);
    f->pfd = f->fd;
    f->fd = pfd;
    f->ofd = fd;
    snprintf(f->name, sizeof f->name, "%s", name);
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
    if (!(f = fid_get(s, id)) || f->ofd < 0)
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
    if (!(f = fid_get(s, id)) || f->ofd < 0 || f->dir)
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
    if (!(f = fid_get(s, id)))
        return EBADF;
    fid_del(s, f);
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
    if (!(f = fid_get(s, id)))
        return EBADF;
    if (s->ro)
        e = EROFS;
    else if (f->pfd < 0)
        e = is_root(s, f->fd) ? EBUSY : EOPNOTSUPP;
    else if (fstat(f->fd, &st) || fstatat(f->pfd, f->name, &at, AT_SYMLINK_NOFOLLOW))
        e = errno;
    else if (st.st_dev != at.st_dev || st.st_ino != at.st_ino)
        e = ENOENT; /* renamed behind the fid's back */
    else if (unlinkat(f->pfd, f->name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0))
        e = errno;
    fid_del(s, f); /* clunked even when the remove fails */
    return e;
}

static int t_getattr(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    struct fid *f;
    struct stat st;
    struct p9_qid q;

    p9_r64(r); /* request_mask: we always answer the basic set */
    PARSED(r);
    if (!(f = fid_get(s, id)))
        return EBADF;
    if (fstat(f->fd, &st))
        return errno;
    qid_of(&st, &q);
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
    p9_w64(w, (uint64_t)st.st_atim.tv_sec);
    p9_w64(w, (uint64_t)st.st_atim.tv_nsec);
    p9_w64(w, (uint64_t)st.st_mtim.tv_sec);
    p9_w64(w, (uint64_t)st.st_mtim.tv_nsec);
    p9_w64(w, (uint64_t)st.st_ctim.tv_sec);
    p9_w64(w, (uint64_t)st.st_ctim.tv_nsec);
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
    char p[40];

    ts[0].tv_sec = (time_t)p9_r64(r);
    ts[0].tv_nsec = (long)p9_r64(r);
    ts[1].tv_sec = (time_t)p9_r64(r);
    ts[1].tv_nsec = (long)p9_r64(r);
    (void)w;
    PARSED(r);
    if (!(f = fid_get(s, id)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if (fstat(f->fd, &st))
        return errno;
    proc_path(p, sizeof p, f->fd);
    if (valid & SETATTR_MODE) {
        if (S_ISLNK(st.st_mode))
            return EOPNOTSUPP;
        if (chmod(p, (mode_t)(mode & 07777)))
            return errno;
    }
    if (valid & (SETATTR_UID | SETATTR_GID)) {
        uid_t u = valid & SETATTR_UID ? (uid_t)uid : (uid_t)-1;
        gid_t g = valid & SETATTR_GID ? (gid_t)gid : (gid_t)-1;
        if (fchownat(f->fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
            return errno;
    }
    if (valid & SETATTR_SIZE) {
        int fd;
        if (S_ISDIR(st.st_mode))
            return EISDIR;
        if (!S_ISREG(st.st_mode))
            return EINVAL;
        if (size > (uint64_t)INT64_MAX)
            return EFBIG;
        if ((fd = reopen(f, O_WRONLY)) < 0)
            return errno;
        if (ftruncate(fd, (off_t)size)) {
            int e = errno;
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
        if (!S_ISLNK(st.st_mode)) {
            if (utimensat(AT_FDCWD, p, ts, 0))
                return errno;
        } else if (f->pfd < 0) {
            return EOPNOTSUPP;
        } else if (utimensat(f->pfd, f->name, ts, AT_SYMLINK_NOFOLLOW)) {
            return errno;
        }
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
    if (!(f = fid_get(s, id)) || f->ofd < 0)
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
        q.type = de->d_type == DT_DIR ? P9_QTDIR : de->d_type == DT_LNK ? P9_QTSYMLINK : P9_QTFILE;
        q.version = 0;
        q.path = (uint64_t)de->d_ino;
        p9_wqid(w, &q);
        p9_w64(w, (uint64_t)telldir(f->dir));
        p9_w8(w, de->d_type);
        p9_wstr(w, de->d_name, nlen);
    }
    f->dpos = telldir(f->dir);
    p9_put32(cnt, (uint32_t)(w->off - start));
    return 0;
}

static int t_mkdir(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = get_name(r, name, false);
    uint32_t mode = p9_r32(r);
    struct fid *f;

    p9_r32(r); /* gid */
    if ((e = changing_dir(s, r, e, id, &f)))
        return e;
    if (mkdirat(f->fd, name, (mode_t)(mode & 07777)))
        return errno;
    return reply_qid_at(w, f->fd, name);
}

static int t_mknod(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = get_name(r, name, false);
    uint32_t mode = p9_r32(r);
    struct fid *f;

    p9_r32(r); /* major, minor: no device nodes on the host */
    p9_r32(r);
    p9_r32(r); /* gid */
    if ((e = changing_dir(s, r, e, id, &f)))
        return e;
    switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFIFO:
    case S_IFSOCK:
        break;
    case S_IFCHR:
    case S_IFBLK:
        return EPERM;
    default:
        return EINVAL;
    }
    if (mknodat(f->fd, name, (mode_t)(mode & (S_IFMT | 07777)), 0))
        return errno;
    return reply_qid_at(w, f->fd, name);
}

static int t_symlink(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1], target[MAX_SYMLINK + 1];
    int e = get_name(r, name, false);
    uint16_t tlen;
    const char *t = p9_rstr(r, &tlen);
    struct fid *f;

    p9_r32(r); /* gid */
    if (e)
        return e;
    PARSED(r);
    if (!tlen || memchr(t, 0, tlen))
        return EINVAL;
    if (tlen > MAX_SYMLINK)
        return ENAMETOOLONG;
    memcpy(target, t, tlen);
    target[tlen] = 0;
    if (!(f = fid_get(s, id)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if (symlinkat(target, f->fd, name))
        return errno;
    return reply_qid_at(w, f->fd, name);
}

static int t_readlink(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char buf[MAX_SYMLINK + 1];
    struct fid *f;
    struct stat st;
    ssize_t n;

    PARSED(r);
    if (!(f = fid_get(s, id)))
        return EBADF;
    if (fstat(f->fd, &st))
        return errno;
    if (!S_ISLNK(st.st_mode))
        return EINVAL;
    if ((n = readlinkat(f->fd, "", buf, sizeof buf)) < 0)
        return errno;
    if ((size_t)n >= sizeof buf || (size_t)n + 2 > p9_wleft(w))
        return ENAMETOOLONG;
    p9_wstr(w, buf, (size_t)n);
    return 0;
}

static int t_link(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t did = p9_r32(r), id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = get_name(r, name, false);
    struct fid *d, *f;
    struct stat st;
    char p[40];

    (void)w;
    if (e)
        return e;
    PARSED(r);
    if (!(d = fid_get(s, did)) || !(f = fid_get(s, id)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if (fstat(f->fd, &st))
        return errno;
    if (S_ISDIR(st.st_mode))
        return EPERM;
    if (S_ISLNK(st.st_mode)) { /* never through /proc: that could follow it */
        if (f->pfd < 0)
            return EOPNOTSUPP;
        return linkat(f->pfd, f->name, d->fd, name, 0) ? errno : 0;
    }
    proc_path(p, sizeof p, f->fd);
    if (!linkat(AT_FDCWD, p, d->fd, name, AT_SYMLINK_FOLLOW))
        return 0;
    if (errno != ENOENT || f->pfd < 0)
        return errno;
    return linkat(f->pfd, f->name, d->fd, name, 0) ? errno : 0;
}

static int t_rename(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r), did = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = get_name(r, name, false);
    struct fid *f, *d;
    int npfd;

    (void)w;
    if (e)
        return e;
    PARSED(r);
    if (!(f = fid_get(s, id)) || !(d = fid_get(s, did)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if (f->pfd < 0)
        return is_root(s, f->fd) ? EBUSY : EOPNOTSUPP;
    if ((npfd = fcntl(d->fd, F_DUPFD_CLOEXEC, 0)) < 0)
        return errno;
    if (renameat(f->pfd, f->name, d->fd, name)) {
        e = errno;
        close(npfd);
        return e;
    }
    close(f->pfd);
    f->pfd = npfd;
    snprintf(f->name, sizeof f->name, "%s", name);
    return 0;
}

static int t_renameat(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t oid = p9_r32(r);
    char oname[P9_MAX_NAME + 1], nname[P9_MAX_NAME + 1];
    int e1 = get_name(r, oname, false);
    uint32_t nid = p9_r32(r);
    int e2 = get_name(r, nname, false);
    struct fid *o, *n;

    (void)w;
    if (e1 || e2)
        return e1 ? e1 : e2;
    PARSED(r);
    if (!(o = fid_get(s, oid)) || !(n = fid_get(s, nid)))
        return EBADF;
    if (s->ro)
        return EROFS;
    return renameat(o->fd, oname, n->fd, nname) ? errno : 0;
}

static int t_unlinkat(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = get_name(r, name, false);
    uint32_t fl = p9_r32(r);
    struct fid *f;

    (void)w;
    if ((e = changing_dir(s, r, e, id, &f)))
        return e;
    return unlinkat(f->fd, name, fl & P9_AT_REMOVEDIR ? AT_REMOVEDIR : 0) ? errno : 0;
}

static int t_statfs(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    struct statfs sf;
    struct fid *f;
    uint64_t fsid;

    PARSED(r);
    if (!(f = fid_get(s, id)))
        return EBADF;
    if (fstatfs(f->fd, &sf))
        return errno;
    memcpy(&fsid, &sf.f_fsid, sizeof fsid < sizeof sf.f_fsid ? sizeof fsid : sizeof sf.f_fsid);
    p9_w32(w, (uint32_t)sf.f_type);
    p9_w32(w, (uint32_t)sf.f_bsize);
    p9_w64(w, (uint64_t)sf.f_blocks);
    p9_w64(w, (uint64_t)sf.f_bfree);
    p9_w64(w, (uint64_t)sf.f_bavail);
    p9_w64(w, (uint64_t)sf.f_files);
    p9_w64(w, (uint64_t)sf.f_ffree);
    p9_w64(w, fsid);
    p9_w32(w, (uint32_t)sf.f_namelen);
    return 0;
}

static int t_fsync(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r), datasync = p9_r32(r);
    struct fid *f;

    (void)w;
    PARSED(r);
    if (!(f = fid_get(s, id)) || f->ofd < 0)
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
    skip_str(r);
    PARSED(r);
    if (!fid_get(s, id))
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
    if (!fid_get(s, id))
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
    skip_str(r);
    PARSED(r);
    return fid_get(s, id) ? EOPNOTSUPP : EBADF;
}

static int t_xattrcreate(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);

    (void)w;
    skip_str(r);
    p9_r64(r);
    p9_r32(r);
    PARSED(r);
    if (!fid_get(s, id))
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
        return t_symlink;
    case P9_TMKNOD:
        return t_mknod;
    case P9_TRENAME:
        return t_rename;
    case P9_TREADLINK:
        return t_readlink;
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
        return t_link;
    case P9_TMKDIR:
        return t_mkdir;
    case P9_TRENAMEAT:
        return t_renameat;
    case P9_TUNLINKAT:
        return t_unlinkat;
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
