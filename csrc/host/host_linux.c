/* host_linux.c - the host-OS layer on Linux (host.h); compiled to nothing off Linux or when VMM_HOST_POSIX is set. */
#if !defined(VMM_HOST_POSIX) && defined(__linux__)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/if.h>
#include <linux/if_tun.h>

#include "host.h"

/* ---- memory, randomness, threads, time --------------------------------------------------- */

void *vmm__host_ram_alloc(size_t size)
{
    /* MAP_NORESERVE: no swap is reserved for RAM the guest may never touch (mmap(2)) */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int vmm__host_ram_touched(const void *addr, size_t npages, uint8_t *touched)
{
    uint64_t ent[4096];
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), err = 0;

    if (fd < 0)
        return errno;
    /* Documentation/admin-guide/mm/pagemap.rst: one u64 per virtual page, bit 63 present, bit 62 swapped */
    for (size_t i = 0; i < npages && !err;) {
        size_t n = npages - i < 4096 ? npages - i : 4096;
        off_t off = (off_t)(((uintptr_t)addr / ps + i) * sizeof ent[0]);
        ssize_t r = pread(fd, ent, n * sizeof ent[0], off);
        if (r <= 0 || r % (ssize_t)sizeof ent[0]) {
            err = r < 0 ? errno : EIO;
            break;
        }
        n = (size_t)r / sizeof ent[0];
        for (size_t k = 0; k < n; k++)
            touched[i + k] = (ent[k] >> 62) != 0;
        i += n;
    }
    close(fd);
    return err;
}

int vmm__host_random(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t r = getrandom(p, len, 0); /* getrandom(2): blocks only until the pool is initialized */
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? errno : EIO;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

void vmm__host_thread_name(const char *name)
{
    char n[16]; /* pthread_setname_np(3): 16 bytes with the NUL, ERANGE beyond */

    snprintf(n, sizeof n, "%s", name);
    pthread_setname_np(pthread_self(), n);
}

long vmm__host_timer_slack(long ns)
{
    int old = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);

    if (ns > 0)
        prctl(PR_SET_TIMERSLACK, (unsigned long)ns);
    return old > 0 ? old : -1;
}

int vmm__host_cond_init(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    int e;

    if ((e = pthread_condattr_init(&ca)))
        return e;
    if (!(e = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)))
        e = pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
    return e;
}

int vmm__host_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abs_mono)
{
    return pthread_cond_timedwait(c, m, abs_mono);
}

/* ---- block devices --------------------------------------------------------------------------- */

int vmm__host_punch_hole(int fd, off_t off, off_t len)
{
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) ? errno : 0;
}

int vmm__host_zero_range(int fd, off_t off, off_t len)
{
    return fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) ? errno : 0;
}

int vmm__host_file_lock(int fd, bool exclusive)
{
    return flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) ? errno : 0;
}

/* ---- file-system nodes ------------------------------------------------------------------------ */

/*
 * A node's fd is an O_PATH fd (open(2)): it names the object without opening
 * it, for any type, and stays with the object across renames. The object is
 * reopened for I/O or changed through /proc/self/fd/N (proc(5): opening that
 * link opens the object itself, not a path), never for a symlink.
 */

static void proc_path(char *buf, size_t len, int fd)
{
    snprintf(buf, len, "/proc/self/fd/%d", fd);
}

static int fill(struct vmm__host_node *n)
{
    struct stat st;

    if (fstat(n->fd, &st))
        return errno;
    n->dev = st.st_dev;
    n->ino = st.st_ino;
    n->mode = st.st_mode & S_IFMT;
    return 0;
}

int vmm__host_node_root(int dirfd, struct vmm__host_node *out)
{
    int e;

    vmm__host_node_init(out);
    if ((out->fd = openat(dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return errno;
    if ((e = fill(out)))
        vmm__host_node_close(out);
    return e;
}

int vmm__host_node_walk(const struct vmm__host_node *dir, const char *name, struct vmm__host_node *out)
{
    bool dots = !strcmp(name, ".") || !strcmp(name, "..");
    size_t nl = strlen(name);
    int e;

    vmm__host_node_init(out);
    if (!S_ISDIR(dir->mode) || dir->fd < 0)
        return ENOTDIR;
    if (!nl || strchr(name, '/'))
        return EINVAL;
    if (nl > VMM_HOST_NAME_MAX)
        return ENAMETOOLONG;
    /* a symlink is the object itself (O_PATH | O_NOFOLLOW opens the link) */
    out->fd = openat(dir->fd, name, O_PATH | O_CLOEXEC | (dots ? O_DIRECTORY : O_NOFOLLOW));
    if (out->fd < 0)
        return errno;
    if (!dots) {
        if ((out->pfd = fcntl(dir->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
            e = errno;
            vmm__host_node_close(out);
            return e;
        }
        memcpy(out->name, name, nl + 1);
    }
    if ((e = fill(out)))
        vmm__host_node_close(out);
    return e;
}

int vmm__host_node_stat(const struct vmm__host_node *n, struct stat *st)
{
    return fstat(n->fd, st) ? errno : 0;
}

/* The fd is the object named by n (same st_dev/st_ino) and a regular file or directory as wanted. */
static int check_opened(const struct vmm__host_node *n, int fd, int flags)
{
    struct stat st;

    if (fstat(fd, &st))
        return errno;
    if (st.st_dev != n->dev || st.st_ino != n->ino)
        return ENOENT;
    if (S_ISLNK(st.st_mode))
        return ELOOP;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return ENXIO;
    if ((flags & O_DIRECTORY) && !S_ISDIR(st.st_mode))
        return ENOTDIR;
    return 0;
}

int vmm__host_node_open(const struct vmm__host_node *n, int flags, int *out)
{
    char p[40];
    int fd, e;

    *out = -1;
    if (S_ISLNK(n->mode))
        return ELOOP; /* never through /proc: opening the link would follow it */
    if (!S_ISREG(n->mode) && !S_ISDIR(n->mode))
        return ENXIO;
    proc_path(p, sizeof p, n->fd);
    fd = open(p, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ENOENT) { /* no /proc: the directory itself, or the name in its parent */
        if (S_ISDIR(n->mode))
            fd = openat(n->fd, ".", flags | O_NONBLOCK | O_CLOEXEC);
        else if (n->pfd >= 0)
            fd = openat(n->pfd, n->name, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        else
            errno = ENOENT;
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
    size_t nl = strlen(name);
    struct stat st;
    int fd, e;

    vmm__host_node_init(out);
    *ofd = -1;
    if (!S_ISDIR(dir->mode) || dir->fd < 0)
        return ENOTDIR;
    if (!nl || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return EINVAL;
    if (nl > VMM_HOST_NAME_MAX)
        return ENAMETOOLONG;
    fd = openat(dir->fd, name, (flags & ~O_DIRECTORY) | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, mode);
    if (fd < 0)
        return errno;
    if (fstat(fd, &st))
        e = errno;
    else
        e = S_ISREG(st.st_mode) ? vmm__host_blocking(fd) : ENXIO;
    if (!e && (out->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
        e = errno;
    if (!e && (out->pfd = fcntl(dir->fd, F_DUPFD_CLOEXEC, 0)) < 0)
        e = errno;
    if (e) {
        close(fd);
        vmm__host_node_close(out);
        return e;
    }
    memcpy(out->name, name, nl + 1);
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    out->mode = st.st_mode & S_IFMT;
    *ofd = fd;
    return 0;
}

int vmm__host_node_chmod(const struct vmm__host_node *n, mode_t mode)
{
    char p[40];

    if (S_ISLNK(n->mode))
        return EOPNOTSUPP;
    proc_path(p, sizeof p, n->fd);
    return chmod(p, mode) ? errno : 0;
}

int vmm__host_node_chown(const struct vmm__host_node *n, uid_t uid, gid_t gid)
{
    return fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) ? errno : 0;
}

int vmm__host_node_utimens(const struct vmm__host_node *n, const struct timespec ts[2])
{
    char p[40];

    if (!S_ISLNK(n->mode)) {
        proc_path(p, sizeof p, n->fd);
        return utimensat(AT_FDCWD, p, ts, 0) ? errno : 0;
    }
    if (n->pfd < 0)
        return EOPNOTSUPP;
    return utimensat(n->pfd, n->name, ts, AT_SYMLINK_NOFOLLOW) ? errno : 0;
}

int vmm__host_node_readlink(const struct vmm__host_node *n, char *buf, size_t cap, size_t *len)
{
    ssize_t r;

    if (!S_ISLNK(n->mode))
        return EINVAL;
    if ((r = readlinkat(n->fd, "", buf, cap)) < 0) /* readlinkat(2): "" reads the O_PATH fd's link */
        return errno;
    *len = (size_t)r;
    return 0;
}

int vmm__host_node_link(const struct vmm__host_node *n, int dirfd, const char *name)
{
    char p[40];

    if (S_ISLNK(n->mode)) { /* never through /proc: that could follow it */
        if (n->pfd < 0)
            return EOPNOTSUPP;
        return linkat(n->pfd, n->name, dirfd, name, 0) ? errno : 0;
    }
    proc_path(p, sizeof p, n->fd);
    if (!linkat(AT_FDCWD, p, dirfd, name, AT_SYMLINK_FOLLOW))
        return 0;
    if (errno != ENOENT || n->pfd < 0)
        return errno;
    return linkat(n->pfd, n->name, dirfd, name, 0) ? errno : 0;
}

int vmm__host_node_fsstat(const struct vmm__host_node *n, struct vmm__host_fsstat *out)
{
    struct statfs sf;
    uint64_t fsid = 0;

    if (fstatfs(n->fd, &sf))
        return errno;
    memcpy(&fsid, &sf.f_fsid, sizeof fsid < sizeof sf.f_fsid ? sizeof fsid : sizeof sf.f_fsid);
    out->type = (uint32_t)sf.f_type;
    out->bsize = (uint32_t)sf.f_bsize;
    out->blocks = (uint64_t)sf.f_blocks;
    out->bfree = (uint64_t)sf.f_bfree;
    out->bavail = (uint64_t)sf.f_bavail;
    out->files = (uint64_t)sf.f_files;
    out->ffree = (uint64_t)sf.f_ffree;
    out->fsid = fsid;
    out->namelen = (uint32_t)sf.f_namelen;
    return 0;
}

void vmm__host_stat_times(const struct stat *st, struct timespec out[3])
{
    out[0] = st->st_atim;
    out[1] = st->st_mtim;
    out[2] = st->st_ctim;
}

uint8_t vmm__host_dirent_type(DIR *dir, const struct dirent *de)
{
    (void)dir;
    return de->d_type;
}

/* ---- the I/O thread's event loop ------------------------------------------------------------ */

int vmm__host_wakeup_open(struct vmm__host_wakeup *w)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); /* eventfd(2): one fd, a counter */
    if (fd < 0)
        return errno;
    w->rfd = w->wfd = fd;
    return 0;
}

void vmm__host_wakeup_signal(struct vmm__host_wakeup *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wfd, &one, sizeof one); /* EAGAIN only when the counter is near 2^64: it is readable */
    (void)r;
}

void vmm__host_wakeup_drain(struct vmm__host_wakeup *w)
{
    uint64_t n;
    ssize_t r = read(w->rfd, &n, sizeof n);
    (void)r;
}

void vmm__host_wakeup_close(struct vmm__host_wakeup *w)
{
    if (w->rfd >= 0)
        close(w->rfd);
    w->rfd = w->wfd = -1;
}

int vmm__host_tap_open(const char *name, int *out)
{
    struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
    int fd;

    if (!name || !*name || strlen(name) >= IFNAMSIZ)
        return EINVAL;
    if ((fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0)
        return errno;
    memcpy(ifr.ifr_name, name, strlen(name));
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { /* Documentation/networking/tuntap.rst */
        int e = errno;
        close(fd);
        return e;
    }
    *out = fd;
    return 0;
}

#endif
