/*
 * p9_names.c - the 9P2000.L messages that change or read a directory's names: Tmkdir, Tmknod, Tsymlink,
 * Treadlink, Tlink, Trename, Trenameat, Tunlinkat (the rest are in p9_server.c). Every name is one path
 * component (p9_get_name) taken relative to a directory fid's fd, so nothing here walks a host path.
 */
#include "p9_internal.h"

/*
 * The common start of a request that changes a directory: once its fields
 * are read (name_err is p9_get_name()'s result), the directory fid `id`, or why
 * not (a bad name, a short message, no such fid, a read-only share).
 */
int p9_changing_dir(struct p9_server *s, struct p9_rd *r, int name_err, uint32_t id, struct fid **f)
{
    if (name_err)
        return name_err;
    PARSED(r);
    if (!(*f = p9_fid_get(s, id)))
        return EBADF;
    return s->ro ? EROFS : p9_is_dir(*f) ? 0 : ENOTDIR;
}

/* Reply with the qid of what `name` in dirfd now is. */
static int reply_qid_at(struct p9_wr *w, int dirfd, const char *name)
{
    struct p9_qid q;
    int e = p9_at_qid(dirfd, name, &q);

    if (!e)
        p9_wqid(w, &q);
    return e;
}

/*
 * After `oname` in directory odir became `nname` in ndir: every fid that
 * named the object by (parent, name) follows it, as the guest expects of a
 * rename (its fids are the object, not the path). Directories are compared
 * by st_dev/st_ino; names first, so that the common case costs no syscall.
 */
static void fids_renamed(struct p9_server *s, int odir, const char *oname, int ndir, const char *nname)
{
    struct stat od, st;

    if (fstat(odir, &od))
        return;
    for (unsigned i = 0; i < P9_MAX_FIDS; i++) {
        struct vmm__host_node *n = &s->fids[i].node;
        int nfd;

        if (!s->fids[i].used || n->pfd < 0 || strcmp(n->name, oname))
            continue;
        if (fstat(n->pfd, &st) || st.st_dev != od.st_dev || st.st_ino != od.st_ino)
            continue;
        if ((nfd = fcntl(ndir, F_DUPFD_CLOEXEC, 0)) < 0)
            continue; /* the fid keeps its old (now stale) name */
        close(n->pfd);
        n->pfd = nfd;
        snprintf(n->name, sizeof n->name, "%s", nname);
    }
}

int p9_t_mkdir(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = p9_get_name(r, name, false);
    uint32_t mode = p9_r32(r);
    struct fid *f;

    p9_r32(r); /* gid */
    if ((e = p9_changing_dir(s, r, e, id, &f)))
        return e;
    if (mkdirat(f->node.fd, name, P9_SAFE_MODE(mode)))
        return errno;
    return reply_qid_at(w, f->node.fd, name);
}

int p9_t_mknod(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = p9_get_name(r, name, false);
    uint32_t mode = p9_r32(r);
    struct fid *f;

    p9_r32(r); /* major, minor: no device nodes on the host */
    p9_r32(r);
    p9_r32(r); /* gid */
    if ((e = p9_changing_dir(s, r, e, id, &f)))
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
    if (mknodat(f->node.fd, name, (mode_t)(mode & S_IFMT) | P9_SAFE_MODE(mode), 0))
        return errno;
    return reply_qid_at(w, f->node.fd, name);
}

int p9_t_symlink(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1], target[MAX_SYMLINK + 1];
    int e = p9_get_name(r, name, false);
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
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if (!p9_is_dir(f))
        return ENOTDIR;
    if (symlinkat(target, f->node.fd, name))
        return errno;
    return reply_qid_at(w, f->node.fd, name);
}

int p9_t_readlink(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char buf[MAX_SYMLINK + 1];
    struct fid *f;
    size_t n;
    int e;

    PARSED(r);
    if (!(f = p9_fid_get(s, id)))
        return EBADF;
    if ((e = vmm__host_node_readlink(&f->node, buf, sizeof buf, &n)))
        return e;
    if (n >= sizeof buf || n + 2 > p9_wleft(w))
        return ENAMETOOLONG;
    p9_wstr(w, buf, n);
    return 0;
}

int p9_t_link(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t did = p9_r32(r), id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = p9_get_name(r, name, false);
    struct fid *d, *f;
    struct stat st;

    (void)w;
    if (e)
        return e;
    PARSED(r);
    if (!(d = p9_fid_get(s, did)) || !(f = p9_fid_get(s, id)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if (!p9_is_dir(d))
        return ENOTDIR;
    if ((e = vmm__host_node_stat(&f->node, &st)))
        return e;
    if (S_ISDIR(st.st_mode))
        return EPERM;
    return vmm__host_node_link(&f->node, d->node.fd, name);
}

int p9_t_rename(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r), did = p9_r32(r);
    char name[P9_MAX_NAME + 1], oname[P9_MAX_NAME + 1];
    int e = p9_get_name(r, name, false);
    struct fid *f, *d;

    (void)w;
    if (e)
        return e;
    PARSED(r);
    if (!(f = p9_fid_get(s, id)) || !(d = p9_fid_get(s, did)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if (f->node.pfd < 0)
        return p9_is_root(s, &f->node) ? EBUSY : EOPNOTSUPP;
    if (!p9_is_dir(d))
        return ENOTDIR;
    if (renameat(f->node.pfd, f->node.name, d->node.fd, name))
        return errno;
    memcpy(oname, f->node.name, sizeof oname); /* f is among the fids that follow */
    fids_renamed(s, f->node.pfd, oname, d->node.fd, name);
    return 0;
}

int p9_t_renameat(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t oid = p9_r32(r);
    char oname[P9_MAX_NAME + 1], nname[P9_MAX_NAME + 1];
    int e1 = p9_get_name(r, oname, false);
    uint32_t nid = p9_r32(r);
    int e2 = p9_get_name(r, nname, false);
    struct fid *o, *n;

    (void)w;
    if (e1 || e2)
        return e1 ? e1 : e2;
    PARSED(r);
    if (!(o = p9_fid_get(s, oid)) || !(n = p9_fid_get(s, nid)))
        return EBADF;
    if (s->ro)
        return EROFS;
    if (!p9_is_dir(o) || !p9_is_dir(n))
        return ENOTDIR;
    if (renameat(o->node.fd, oname, n->node.fd, nname))
        return errno;
    fids_renamed(s, o->node.fd, oname, n->node.fd, nname);
    return 0;
}

int p9_t_unlinkat(struct p9_server *s, struct p9_rd *r, struct p9_wr *w)
{
    uint32_t id = p9_r32(r);
    char name[P9_MAX_NAME + 1];
    int e = p9_get_name(r, name, false);
    uint32_t fl = p9_r32(r);
    struct fid *f;

    (void)w;
    if ((e = p9_changing_dir(s, r, e, id, &f)))
        return e;
    return unlinkat(f->node.fd, name, fl & P9_AT_REMOVEDIR ? AT_REMOVEDIR : 0) ? errno : 0;
}
