/* p9_fid.c - the 9P server's fid table, its lifecycle and the confined host-file helpers. */
#include <pthread.h>
#include <sys/resource.h>

#include "../core/budget.h"
#include "p9_internal.h"

/* ---- the process's descriptor budget (p9_internal.h) ---------------------- */

static struct vmm_budget fd_budget;
static pthread_once_t fd_budget_once = PTHREAD_ONCE_INIT;

#define FD_RESERVE 256 /* never given to 9p: libvmm's and the application's own files */

static void fd_budget_setup(void)
{
    struct rlimit rl;
    uint64_t n = 1024;

    if (!getrlimit(RLIMIT_NOFILE, &rl)) {
        if (rl.rlim_cur != rl.rlim_max) { /* may fail (e.g. macOS caps at OPEN_MAX): keep the soft limit */
            struct rlimit up = { rl.rlim_max, rl.rlim_max };
            if (!setrlimit(RLIMIT_NOFILE, &up))
                rl.rlim_cur = rl.rlim_max;
        }
        n = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 24) ? 1u << 24 : (uint64_t)rl.rlim_cur;
    }
    vmm__budget_init(&fd_budget, n > 2 * FD_RESERVE ? (n - FD_RESERVE) / 2 : n / 4);
}

void p9_fd_budget_init(void)
{
    pthread_once(&fd_budget_once, fd_budget_setup);
}

int p9_fd_take(void)
{
    return vmm__budget_take(&fd_budget, 1) ? 0 : ENFILE;
}

void p9_fd_give(void)
{
    vmm__budget_give(&fd_budget, 1);
}

/* ---- the fid table -------------------------------------------------------- */

struct fid *p9_fid_get(struct p9_server *s, uint32_t id)
{
    struct fid *f = p9_fid_find(s, id);
    return f && !f->dead ? f : NULL;
}

struct fid *p9_fid_find(struct p9_server *s, uint32_t id)
{
    for (int i = s->buckets[id % FID_BUCKETS]; i;) {
        struct fid *f = &s->fids[i - 1];
        if (f->id == id)
            return f;
        i = f->next;
    }
    return NULL;
}

struct fid *p9_fid_new(struct p9_server *s, uint32_t id)
{
    struct fid *f = p9_fid_find(s, id);
    int i;

    if (f) /* a dead fid the guest reuses without clunking it: it goes */
        p9_fid_del(s, f);
    i = s->free_head;
    if (!i || !vmm__budget_take(&fd_budget, P9_NODE_FDS))
        return NULL;
    f = &s->fids[i - 1];
    s->free_head = f->next;
    memset(f, 0, sizeof *f);
    f->id = id;
    f->used = true;
    vmm__host_node_init(&f->node);
    f->ofd = -1;
    f->next = s->buckets[id % FID_BUCKETS];
    s->buckets[id % FID_BUCKETS] = i;
    return f;
}

void p9_fid_close_io(struct fid *f)
{
    if (f->ofd >= 0)
        p9_fd_give();
    if (f->dir)
        closedir(f->dir); /* owns ofd */
    else if (f->ofd >= 0)
        close(f->ofd);
    f->dir = NULL;
    f->ofd = -1;
}

void p9_fid_del(struct p9_server *s, struct fid *f)
{
    int idx = (int)(f - s->fids) + 1;
    int *link = &s->buckets[f->id % FID_BUCKETS];

    while (*link && *link != idx)
        link = &s->fids[*link - 1].next;
    if (*link)
        *link = f->next;
    p9_fid_close_io(f);
    vmm__host_node_close(&f->node);
    vmm__budget_give(&fd_budget, P9_NODE_FDS);
    f->used = false;
    f->next = s->free_head;
    s->free_head = idx;
}

void p9_fids_clear(struct p9_server *s, bool sync)
{
    s->free_head = 0;
    memset(s->buckets, 0, sizeof s->buckets);
    for (int i = P9_MAX_FIDS - 1; i >= 0; i--) {
        struct fid *f = &s->fids[i];
        if (f->used) {
            if (sync && f->ofd >= 0)
                fsync(f->ofd);
            p9_fid_close_io(f);
            vmm__host_node_close(&f->node);
            vmm__budget_give(&fd_budget, P9_NODE_FDS);
        }
        memset(f, 0, sizeof *f);
        vmm__host_node_init(&f->node);
        f->ofd = -1;
        f->next = s->free_head;
        s->free_head = i + 1;
    }
}

struct p9_server *p9_server_new(int root_fd, bool readonly)
{
    struct p9_server *s;
    struct stat st;

    if (root_fd < 0)
        return NULL;
    p9_fd_budget_init();
    if (!(s = calloc(1, sizeof *s)) || fstat(root_fd, &st) || !S_ISDIR(st.st_mode)) {
        free(s);
        close(root_fd);
        return NULL;
    }
    s->root = root_fd;
    s->root_dev = st.st_dev;
    s->root_ino = st.st_ino;
    s->ro = readonly;
    s->msize = P9_MAX_MSIZE;
    p9_fids_clear(s, false);
    return s;
}

void p9_server_free(struct p9_server *s)
{
    if (!s)
        return;
    p9_fids_clear(s, true);
    close(s->root);
    free(s);
}

void p9_server_reset(struct p9_server *s)
{
    if (!s)
        return;
    p9_fids_clear(s, true);
    s->msize = P9_MAX_MSIZE;
}

/* ---- helpers -------------------------------------------------------------- */

void p9_qid_of(const struct stat *st, struct p9_qid *q)
{
    q->type = S_ISDIR(st->st_mode) ? P9_QTDIR : S_ISLNK(st->st_mode) ? P9_QTSYMLINK : P9_QTFILE;
    q->version = 0;
    q->path = (uint64_t)st->st_ino;
}

void p9_node_qid(const struct vmm__host_node *n, struct p9_qid *q)
{
    q->type = S_ISDIR(n->mode) ? P9_QTDIR : S_ISLNK(n->mode) ? P9_QTSYMLINK : P9_QTFILE;
    q->version = 0;
    q->path = (uint64_t)n->ino;
}

int p9_at_qid(int dirfd, const char *name, struct p9_qid *q)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW))
        return errno;
    p9_qid_of(&st, q);
    return 0;
}

bool p9_is_root(const struct p9_server *s, const struct vmm__host_node *n)
{
    return S_ISDIR(n->mode) && n->dev == s->root_dev && n->ino == s->root_ino;
}

/*
 * Read a path component into out (NUL-terminated). 0 or an errno: EPROTO if
 * the message is short, ENAMETOOLONG, EINVAL for "", "/" or NUL inside, and
 * (unless dots) for "." and "..".
 */
int p9_get_name(struct p9_rd *r, char out[P9_MAX_NAME + 1], bool dots)
{
    uint16_t n;
    const char *p = p9_rstr(r, &n);

    if (!p)
        return EPROTO;
    if (n > P9_MAX_NAME)
        return ENAMETOOLONG;
    if (!n || memchr(p, '/', n) || memchr(p, 0, n))
        return EINVAL;
    memcpy(out, p, n);
    out[n] = 0;
    if (!dots && (!strcmp(out, ".") || !strcmp(out, "..")))
        return EINVAL;
    return 0;
}

/* A string we only parse (uname, client_id, ...): a short one marks the reader bad, which PARSED checks. */
void p9_skip_str(struct p9_rd *r)
{
    uint16_t n;
    (void)p9_rstr(r, &n);
}

int p9_host_open_flags(uint32_t fl, int *out)
{
    int h;

    switch (fl & DOTL_ACCMODE) {
    case 0:
        h = O_RDONLY;
        break;
    case 1:
        h = O_WRONLY;
        break;
    case 2:
        h = O_RDWR;
        break;
    default:
        return EINVAL;
    }
    if (fl & DOTL_TRUNC)
        h |= O_TRUNC;
    if (fl & DOTL_APPEND)
        h |= O_APPEND;
    if (fl & DOTL_DSYNC)
        h |= O_DSYNC;
    if (fl & DOTL_SYNC)
        h |= O_SYNC;
    if (fl & DOTL_DIRECTORY)
        h |= O_DIRECTORY;
    *out = h;
    return 0;
}

bool p9_wants_write(uint32_t fl)
{
    return (fl & DOTL_ACCMODE) != 0 || (fl & (DOTL_TRUNC | DOTL_APPEND));
}
