/*
 * host_posix.c - the host-OS layer (host.h) in POSIX.1-2008 + XSI only; compiled in when VMM_HOST_POSIX is
 * defined (make test-portable builds it on Linux with -D_XOPEN_SOURCE=700 and no _GNU_SOURCE) and on
 * every host that is not Linux (macOS).
 */
#if defined(VMM_HOST_POSIX) || !defined(__linux__)
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "host.h"

/* ---- memory, randomness, threads, time --------------------------------------------------- */

void *vmm__host_ram_alloc(size_t size)
{
    /*
     * POSIX.1-2008 has no anonymous mapping (MAP_ANON is in POSIX.1-2024, and
     * on macOS and the BSDs): a private mapping of /dev/zero is the classic
     * equivalent (mmap(3p) on a private mapping: pages are copied on write,
     * untouched pages cost nothing).
     */
    int fd = open("/dev/zero", O_RDWR | O_CLOEXEC);
    void *p;

    if (fd < 0)
        return NULL;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

int vmm__host_ram_touched(const void *addr, size_t npages, uint8_t *touched)
{
    (void)addr;
    (void)npages;
    (void)touched;
    return ENOSYS; /* POSIX cannot tell: the caller looks at every page */
}

int vmm__host_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    int fd, e = 0;

    if ((fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0)
        return errno;
    while (len) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            e = r < 0 ? errno : EIO;
            break;
        }
        p += r;
        len -= (size_t)r;
    }
    close(fd);
    return e;
}

void vmm__host_thread_name(const char *name)
{
    (void)name; /* POSIX has no thread names (pthread_setname_np differs between Linux, macOS, BSDs) */
}

long vmm__host_timer_slack(long ns)
{
    (void)ns; /* no timer slack setting in POSIX */
    return -1;
}

int vmm__host_cond_init(pthread_cond_t *c)
{
    return pthread_cond_init(c, NULL); /* CLOCK_REALTIME: pthread_condattr_setclock is not on macOS */
}

#define NS 1000000000L

int vmm__host_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abs_mono)
{
    struct timespec mono, rt, dl;
    int e;

    /* the time left on CLOCK_MONOTONIC, added to CLOCK_REALTIME now */
    clock_gettime(CLOCK_MONOTONIC, &mono);
    if (mono.tv_sec > abs_mono->tv_sec || (mono.tv_sec == abs_mono->tv_sec && mono.tv_nsec >= abs_mono->tv_nsec))
        return ETIMEDOUT;
    clock_gettime(CLOCK_REALTIME, &rt);
    dl.tv_sec = rt.tv_sec + (abs_mono->tv_sec - mono.tv_sec);
    dl.tv_nsec = rt.tv_nsec + (abs_mono->tv_nsec - mono.tv_nsec);
    while (dl.tv_nsec < 0) {
        dl.tv_nsec += NS;
        dl.tv_sec--;
    }
    while (dl.tv_nsec >= NS) {
        dl.tv_nsec -= NS;
        dl.tv_sec++;
    }
    e = pthread_cond_timedwait(c, m, &dl);
    if (e != ETIMEDOUT)
        return e;
    /* a forward wall-clock step ends the wait early: that is a spurious wake-up, not a timeout */
    clock_gettime(CLOCK_MONOTONIC, &mono);
    if (mono.tv_sec > abs_mono->tv_sec || (mono.tv_sec == abs_mono->tv_sec && mono.tv_nsec >= abs_mono->tv_nsec))
        return ETIMEDOUT;
    return 0;
}

/* ---- block devices --------------------------------------------------------------------------- */

int vmm__host_punch_hole(int fd, off_t off, off_t len)
{
    (void)fd;
    (void)off;
    (void)len;
    return EOPNOTSUPP; /* POSIX has no hole punching; posix_fallocate(3p) only allocates */
}

int vmm__host_zero_range(int fd, off_t off, off_t len)
{
    (void)fd;
    (void)off;
    (void)len;
    return EOPNOTSUPP; /* the caller writes the zeros */
}

int vmm__host_file_lock(int fd, bool exclusive)
{
    /* not POSIX but on every host a POSIX build targets (see host.h); declared by <sys/file.h> */
    return flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) ? errno : 0;
}

/* ---- file-system nodes ------------------------------------------------------------------------ */

/* Flags for opening a directory we hold or walk into: read-only (O_SEARCH is not on Linux/glibc). */
#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)

static bool same(const struct vmm__host_node *n, const struct stat *st)
{
    return st->st_dev == n->dev && st->st_ino == n->ino;
}

static void record(struct vmm__host_node *n, const struct stat *st)
{
    n->dev = st->st_dev;
    n->ino = st->st_ino;
    n->mode = st->st_mode & S_IFMT;
}

/* A name vmm__host_node_walk() or _create() accepts (dots allowed or not). */
static int check_name(const char *name, bool dots)
{
    size_t nl = strlen(name);

    if (!nl || strchr(name, '/') || (!dots && (!strcmp(name, ".") || !strcmp(name, ".."))))
        return EINVAL;
    return nl > VMM_HOST_NAME_MAX ? ENAMETOOLONG : 0;
}

int vmm__host_node_root(int dirfd, struct vmm__host_node *out)
{
    struct stat st;
    int e;

    vmm__host_node_init(out);
    if ((out->fd = openat(dirfd, ".", DIR_FLAGS)) < 0)
        return errno;
    if (fstat(out->fd, &st) || !S_ISDIR(st.st_mode)) {
        e = errno ? errno : ENOTDIR;
        vmm__host_node_close(out);
        return e;
    }
    record(out, &st);
    return vmm__host_blocking(out->fd);
}

/*
 * The object `name` in directory dfd (name checked): lstat it; a directory
 * is then opened O_NOFOLLOW and must still be the object lstat saw.
 */
static int reach(int dfd, const char *name, bool dots, struct vmm__host_node *out)
{
    struct stat st, fst;
    int e;

    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW))
        return errno;
    if (dots && !S_ISDIR(st.st_mode))
        return ENOTDIR;
    record(out, &st);
    if (!S_ISDIR(st.st_mode))
        return 0; /* not held open: the node is (pfd, name, dev, ino) */
    if ((out->fd = openat(dfd, name, DIR_FLAGS | (dots ? 0 : O_NOFOLLOW))) < 0)
        return errno;
    if (fstat(out->fd, &fst))
        return errno;
    if (!S_ISDIR(fst.st_mode) || !same(out, &fst))
        return ENOENT; /* swapped between the lstat and the open */
    return (e = vmm__host_blocking(out->fd)) ? e : 0;
}

int vmm__host_node_walk(const struct vmm__host_node *dir, const char *name, struct vmm__host_node *out)
{
    bool dots = !strcmp(name, ".") || !strcmp(name, "..");
    int e;

    vmm__host_node_init(out);
    if (!S_ISDIR(dir->mode) || dir->fd < 0)
        return ENOTDIR;
    if ((e = check_name(name, true)))
        return e;
    if (!(e = reach(dir->fd, name, dots, out)) && !dots) {
        if ((out->pfd = fcntl(dir->fd, F_DUPFD_CLOEXEC, 0)) < 0)
            e = errno;
        else
            memcpy(out->name, name, strlen(name) + 1);
    }
    if (e)
        vmm__host_node_close(out);
    return e;
}

int vmm__host_node_stat(const struct vmm__host_node *n, struct stat *st)
{
    if (n->fd >= 0)
        return fstat(n->fd, st) ? errno : 0;
    if (n->pfd < 0)
        return ENOENT;
    if (fstatat(n->pfd, n->name, st, AT_SYMLINK_NOFOLLOW))
        return errno;
    return same(n, st) ? 0 : ENOENT; /* the name now holds another object */
}

/* The (non-directory) node's name still holds the recorded object. */
static int still_there(const struct vmm__host_node *n)
{
    struct stat st;
    return vmm__host_node_stat(n, &st);
}

static int check_opened(const struct vmm__host_node *n, int fd, int flags)
{
    struct stat st;

    if (fstat(fd, &st))
        return errno;
    if (!same(n, &st))
        return ENOENT;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return ENXIO;
    if ((flags & O_DIRECTORY) && !S_ISDIR(st.st_mode))
        return ENOTDIR;
    return 0;
}

int vmm__host_node_open(const struct vmm__host_node *n, int flags, int *out)
{
    int fd, e;

    *out = -1;
    if (S_ISLNK(n->mode))
        return ELOOP;
    if (!S_ISREG(n->mode) && !S_ISDIR(n->mode))
        return ENXIO;
    if (S_ISDIR(n->mode)) {
        if ((flags & O_ACCMODE) != O_RDONLY)
            return EISDIR;
        fd = openat(n->fd, ".", flags | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
    } else {
        if (flags & O_DIRECTORY)
            return ENOTDIR;
        if (n->pfd < 0)
            return ENOENT;
        /* O_NOFOLLOW: a symlink swapped in fails (ELOOP); O_NONBLOCK: a FIFO swapped in cannot block us */
        fd = openat(n->pfd, n->name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    }
    if (fd < 0)
        return errno;
    if ((e = check_opened(n, fd, flags)) || (e = vmm__host_blocking(fd))) {
        close(fd);
        return e;
    }
    *out = fd;
    return 0;
}

int vmm__host_node_create(const struct vmm__host_node *dir, const char *name, int flags, mode_t mode,
                          struct vmm__host_node *out, int *ofd)
{
    struct stat st;
    int fd, e;

    vmm__host_node_init(out);
    *ofd = -1;
    if (!S_ISDIR(dir->mode) || dir->fd < 0)
        return ENOTDIR;
    if ((e = check_name(name, false)))
        return e;
    fd = openat(dir->fd, name, (flags & ~O_DIRECTORY) | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, mode);
    if (fd < 0)
        return errno;
    if (fstat(fd, &st))
        e = errno;
    else
        e = S_ISREG(st.st_mode) ? vmm__host_blocking(fd) : ENXIO;
    if (!e && (out->pfd = fcntl(dir->fd, F_DUPFD_CLOEXEC, 0)) < 0)
        e = errno;
    if (e) {
        close(fd);
        vmm__host_node_close(out);
        return e;
    }
    memcpy(out->name, name, strlen(name) + 1);
    record(out, &st);
    *ofd = fd;
    return 0;
}

int vmm__host_node_chmod(const struct vmm__host_node *n, mode_t mode)
{
    int fd, e;

    if (S_ISLNK(n->mode))
        return EOPNOTSUPP;
    if (n->fd >= 0)
        return fchmod(n->fd, mode) ? errno : 0;
    if ((e = still_there(n)))
        return e;
    /* fchmodat(3p): AT_SYMLINK_NOFOLLOW changes a symlink itself, never its target; EOPNOTSUPP where
     * the host cannot (glibc without /proc): then through an fd of the object */
    if (!fchmodat(n->pfd, n->name, mode, AT_SYMLINK_NOFOLLOW))
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOTSUP)
        return errno;
    if ((e = vmm__host_node_open(n, O_RDONLY, &fd)))
        return e;
    e = fchmod(fd, mode) ? errno : 0;
    close(fd);
    return e;
}

int vmm__host_node_chown(const struct vmm__host_node *n, uid_t uid, gid_t gid)
{
    int e;

    if (n->fd >= 0)
        return fchown(n->fd, uid, gid) ? errno : 0;
    if ((e = still_there(n)))
        return e;
    return fchownat(n->pfd, n->name, uid, gid, AT_SYMLINK_NOFOLLOW) ? errno : 0;
}

int vmm__host_node_utimens(const struct vmm__host_node *n, const struct timespec ts[2])
{
    int e;

    if (n->fd >= 0)
        return futimens(n->fd, ts) ? errno : 0;
    if ((e = still_there(n)))
        return e;
    return utimensat(n->pfd, n->name, ts, AT_SYMLINK_NOFOLLOW) ? errno : 0;
}

int vmm__host_node_readlink(const struct vmm__host_node *n, char *buf, size_t cap, size_t *len)
{
    ssize_t r;
    int e;

    if (!S_ISLNK(n->mode))
        return EINVAL;
    if ((e = still_there(n)))
        return e;
    if ((r = readlinkat(n->pfd, n->name, buf, cap)) < 0)
        return errno;
    *len = (size_t)r;
    return 0;
}

int vmm__host_node_link(const struct vmm__host_node *n, int dirfd, const char *name)
{
    int e;

    if (S_ISDIR(n->mode))
        return EPERM;
    if ((e = still_there(n)))
        return e;
    /* linkat(3p) without AT_SYMLINK_FOLLOW links a symlink itself */
    return linkat(n->pfd, n->name, dirfd, name, 0) ? errno : 0;
}

int vmm__host_node_fsstat(const struct vmm__host_node *n, struct vmm__host_fsstat *out)
{
    struct statvfs sv;

    if (n->fd >= 0 ? fstatvfs(n->fd, &sv) : fstatvfs(n->pfd, &sv))
        return errno;
    out->type = 0x01021997; /* V9FS_MAGIC (Linux include/uapi/linux/magic.h) */
    out->bsize = (uint32_t)sv.f_bsize;
    /* statvfs(3p) counts blocks in f_frsize units */
    out->blocks = (uint64_t)sv.f_blocks * sv.f_frsize / (sv.f_bsize ? sv.f_bsize : 1);
    out->bfree = (uint64_t)sv.f_bfree * sv.f_frsize / (sv.f_bsize ? sv.f_bsize : 1);
    out->bavail = (uint64_t)sv.f_bavail * sv.f_frsize / (sv.f_bsize ? sv.f_bsize : 1);
    out->files = (uint64_t)sv.f_files;
    out->ffree = (uint64_t)sv.f_ffree;
    out->fsid = (uint64_t)sv.f_fsid;
    out->namelen = (uint32_t)sv.f_namemax;
    return 0;
}

void vmm__host_stat_times(const struct stat *st, struct timespec out[3])
{
#ifdef __APPLE__
    out[0] = st->st_atimespec;
    out[1] = st->st_mtimespec;
    out[2] = st->st_ctimespec;
#else
    out[0] = st->st_atim; /* POSIX.1-2008 <sys/stat.h> */
    out[1] = st->st_mtim;
    out[2] = st->st_ctim;
#endif
}

uint8_t vmm__host_dirent_type(DIR *dir, const struct dirent *de)
{
    struct stat st;

    /* POSIX's struct dirent has d_ino and d_name only: lstat the entry */
    if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
        return 0; /* DT_UNKNOWN */
    /* the Linux (and BSD) DT_* values: the S_IFMT type >> 12 on Linux, spelled out for other hosts */
    if (S_ISDIR(st.st_mode))
        return 4;
    if (S_ISREG(st.st_mode))
        return 8;
    if (S_ISLNK(st.st_mode))
        return 10;
    if (S_ISFIFO(st.st_mode))
        return 1;
    if (S_ISCHR(st.st_mode))
        return 2;
    if (S_ISBLK(st.st_mode))
        return 6;
    if (S_ISSOCK(st.st_mode))
        return 12;
    return 0;
}

/* ---- the I/O thread's event loop ------------------------------------------------------------ */

int vmm__host_wakeup_open(struct vmm__host_wakeup *w)
{
    int fds[2];

    if (pipe(fds))
        return errno;
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) || fcntl(fds[i], F_SETFD, FD_CLOEXEC)) {
            int e = errno;
            close(fds[0]);
            close(fds[1]);
            return e;
        }
    }
    w->rfd = fds[0];
    w->wfd = fds[1];
    return 0;
}

void vmm__host_wakeup_signal(struct vmm__host_wakeup *w)
{
    char c = 1;
    ssize_t r = write(w->wfd, &c, 1); /* a full pipe is readable already */
    (void)r;
}

void vmm__host_wakeup_drain(struct vmm__host_wakeup *w)
{
    char buf[64];
    while (read(w->rfd, buf, sizeof buf) > 0)
        ;
}

void vmm__host_wakeup_close(struct vmm__host_wakeup *w)
{
    if (w->rfd >= 0)
        close(w->rfd);
    if (w->wfd >= 0)
        close(w->wfd);
    w->rfd = w->wfd = -1;
}

int vmm__host_tap_open(const char *name, int *fd)
{
    (void)name;
    (void)fd;
    return ENOTSUP; /* POSIX has no tap devices */
}

#endif
