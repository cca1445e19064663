/*
 * host.h - the host-OS layer: every call libvmm makes that POSIX.1-2008 (with
 * XSI) does not specify goes through these functions.
 *
 * Exactly one implementation is compiled in:
 *   host_linux.c  the default on Linux (getrandom, prctl, fallocate, O_PATH
 *                 and /proc/self/fd, pthread_setname_np, MAP_NORESERVE);
 *   host_posix.c  when VMM_HOST_POSIX is defined (make test-portable) and on
 *                 every host but Linux (macOS): only POSIX.1-2008 + XSI,
 *                 built with -D_XOPEN_SOURCE=700 and no _GNU_SOURCE for the
 *                 check, so a Linux-only call fails to compile.
 * Every other file in csrc/ (except csrc/backend/kvm.c) sticks to POSIX.
 *
 * Functions return 0 or a positive errno value unless stated otherwise; they
 * never print, exit or set errno-dependent state the caller must inspect.
 */
#ifndef VMM_HOST_H
#define VMM_HOST_H

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

/* ---- memory, randomness, threads, time --------------------------------------------------- */

/*
 * Reserve `size` bytes of zeroed, private, read-write memory for guest RAM;
 * pages cost nothing until touched (Linux: MAP_NORESERVE, no swap reserved).
 * NULL on failure. Free with vmm__host_ram_free().
 */
void *vmm__host_ram_alloc(size_t size);
/*
 * Which host pages of RAM from vmm__host_ram_alloc() may hold data: touched[i] for the page at
 * addr + i * page_size (page_size: vmm__host_page_size(); addr page-aligned). A page the process never
 * touched reads as zero and gets 0. Returns 0, or an errno when the host cannot tell (then the caller
 * must look at every page). Linux: /proc/self/pagemap (present or swapped); elsewhere ENOSYS.
 */
int vmm__host_ram_touched(const void *addr, size_t npages, uint8_t *touched);
void vmm__host_ram_free(void *p, size_t size);

/*
 * Snapshots: map len bytes of file fd at offset off over [addr, addr+len) of guest RAM, private and
 * copy-on-write (mmap MAP_PRIVATE | MAP_FIXED; Linux adds MAP_NORESERVE): the guest reads the file's
 * pages through the page cache, which every VM restored from the same file shares, and a write
 * copies only that page. addr, off and len must be multiples of the host page size. 0 or an errno.
 */
int vmm__host_ram_map_file(void *addr, size_t len, int fd, uint64_t off);
/* The host's page size (sysconf(_SC_PAGESIZE)). */
size_t vmm__host_page_size(void);

/* Fill buf with len bytes from the host's CSPRNG (getrandom(2) / /dev/urandom). 0 or an errno. */
int vmm__host_random(void *buf, size_t len);

/* Name the calling thread for debuggers and top (at most 15 characters are kept); best effort. */
void vmm__host_thread_name(const char *name);

/*
 * Set the calling thread's timer slack (how late the kernel may end a sleep
 * to batch wake-ups; Linux prctl(2) PR_SET_TIMERSLACK, default 50 us) to
 * `ns` and return the previous value, or -1 where the host has no such
 * setting (POSIX: a no-op). A value returned > 0 can be passed back to restore it.
 */
long vmm__host_timer_slack(long ns);

/* A spin-wait hint (x86 PAUSE, Arm YIELD): polling loops run it between looks. */
static inline void vmm__host_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

/*
 * A condition variable whose timed waits take an absolute CLOCK_MONOTONIC
 * deadline, immune to wall-clock steps where the host allows.
 * vmm__host_cond_timedwait(): as pthread_cond_timedwait(3p) (0, ETIMEDOUT, or
 * an error), with `abs_mono` a CLOCK_MONOTONIC time. ETIMEDOUT is returned
 * only once CLOCK_MONOTONIC has reached the deadline; like any condition
 * wait it may return 0 early, so callers re-check their predicate.
 * Linux: pthread_condattr_setclock(CLOCK_MONOTONIC). POSIX: the default
 * (CLOCK_REALTIME) clock and the deadline converted to it at each wait
 * (macOS has no pthread_condattr_setclock); a backward wall-clock step
 * during a wait lengthens that wait by the step.
 */
int vmm__host_cond_init(pthread_cond_t *c);
int vmm__host_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abs_mono);

/* ---- block devices --------------------------------------------------------------------------- */

/*
 * Deallocate [off, off+len) of a regular file, keeping its size; the range
 * then reads as zeros (Linux fallocate(2) FALLOC_FL_PUNCH_HOLE). EOPNOTSUPP
 * where the host or file system cannot (POSIX has no such call).
 */
int vmm__host_punch_hole(int fd, off_t off, off_t len);

/*
 * Make [off, off+len) read as zeros without writing them (Linux fallocate(2)
 * FALLOC_FL_ZERO_RANGE), keeping the size. EOPNOTSUPP if that is not possible:
 * the caller then writes zeros itself.
 */
int vmm__host_zero_range(int fd, off_t off, off_t len);

/*
 * Lock an open file against other open file descriptions, without waiting:
 * exclusive, or shared. EWOULDBLOCK if another holds a conflicting lock
 * (in this process too); released when the last fd of this open is closed.
 * flock(2) (4.2BSD: Linux, macOS, the BSDs); POSIX fcntl() record locks would
 * not do: they never conflict within one process and drop with any close.
 */
int vmm__host_file_lock(int fd, bool exclusive);

/* ---- file-system nodes: 9P confinement ------------------------------------------------------ */

#define VMM_HOST_NAME_MAX 255

/*
 * A file-system object reached from a directory by one name at a time, never
 * following a symlink. The 9P server keeps one per fid.
 *
 *   fd    Linux: an O_PATH fd of the object, whatever its type (or an
 *         ordinary fd after vmm__host_node_create()).
 *         POSIX: for a directory, an fd opened O_RDONLY | O_DIRECTORY |
 *         O_NOFOLLOW; -1 for anything else (files, symlinks, FIFOs, ... are
 *         never held open: opening one can block, have side effects, or be
 *         refused by its permissions).
 *   pfd   the directory it was reached from (-1 when unknown: the root, after
 *         ".."), and `name` its name there. Every non-directory node has one.
 *   dev, ino, mode  the object's identity and S_IFMT type when it was reached.
 *
 * POSIX confinement without O_PATH and /proc: a non-directory is acted on as
 * `name` in `pfd` with *at() calls that do not follow symlinks
 * (AT_SYMLINK_NOFOLLOW, O_NOFOLLOW, linkat without AT_SYMLINK_FOLLOW), after
 * checking that `name` still has the recorded st_dev/st_ino; opens are
 * O_NONBLOCK and fstat()ed afterwards, and an object that is not the recorded
 * one or not a regular file/directory is closed again (ENOENT / ENXIO). A
 * racing rename or symlink swap can therefore only ever touch an object in
 * the same exported directory `pfd` (which the guest may change anyway),
 * never anything outside the share. A non-directory renamed or removed
 * behind a fid (by the host, or by a rename the server did not see) makes
 * that fid stale: ENOENT.
 */
struct vmm__host_node {
    int fd;
    int pfd;
    dev_t dev;
    ino_t ino;
    mode_t mode;
    char name[VMM_HOST_NAME_MAX + 1];
};

/* An empty node (fd = pfd = -1), and closing one (idempotent). */
/* The implementations' shared helper: clear O_NONBLOCK after a guest-named open was checked (0 or errno). */
int vmm__host_blocking(int fd);

void vmm__host_node_init(struct vmm__host_node *n);
void vmm__host_node_close(struct vmm__host_node *n);

/* *out = the directory dirfd itself (a share root), pfd -1. dirfd stays the caller's. */
int vmm__host_node_root(int dirfd, struct vmm__host_node *out);

/*
 * *out = `name` in directory node `dir` (ENOTDIR if `dir` is not one), without
 * following a symlink: a symlink is the object itself. "." and ".." must be
 * directories; for them *out gets no parent (pfd -1). Otherwise *out's
 * parent is a new fd of `dir` and its name `name` (no "/", at most
 * VMM_HOST_NAME_MAX bytes: EINVAL / ENAMETOOLONG).
 */
int vmm__host_node_walk(const struct vmm__host_node *dir, const char *name, struct vmm__host_node *out);

/* *out = a copy of n with its own fds. */
int vmm__host_node_dup(const struct vmm__host_node *n, struct vmm__host_node *out);

/* lstat() of the object (ENOENT if, in POSIX, its name now holds another object). */
int vmm__host_node_stat(const struct vmm__host_node *n, struct stat *st);

/*
 * Open the object for I/O: `flags` are open(2) flags among O_RDONLY/O_WRONLY/
 * O_RDWR, O_TRUNC, O_APPEND, O_DSYNC, O_SYNC, O_DIRECTORY. Only a regular
 * file or a directory is opened (ELOOP for a symlink, ENXIO for anything
 * else, ENOTDIR / EISDIR if O_DIRECTORY does not match). *fd is blocking,
 * close-on-exec, and never a controlling terminal.
 */
int vmm__host_node_open(const struct vmm__host_node *n, int flags, int *fd);

/*
 * Create (or, without O_EXCL, open) regular file `name` in directory node
 * `dir` with open(2) `flags` (as above, plus O_EXCL) and `mode`; *fd is open
 * for I/O as in vmm__host_node_open() and *out is its node (parent `dir`).
 * ENXIO if `name` is an existing non-regular file (nothing is followed).
 */
int vmm__host_node_create(const struct vmm__host_node *dir, const char *name, int flags, mode_t mode,
                          struct vmm__host_node *out, int *fd);

/* chmod (EOPNOTSUPP for a symlink), chown (uid/gid (uid_t)-1 = unchanged; a symlink itself), times
 * (utimensat(2) semantics: UTIME_NOW, UTIME_OMIT; a symlink itself). */
int vmm__host_node_chmod(const struct vmm__host_node *n, mode_t mode);
int vmm__host_node_chown(const struct vmm__host_node *n, uid_t uid, gid_t gid);
int vmm__host_node_utimens(const struct vmm__host_node *n, const struct timespec ts[2]);

/* Read a symlink's target into buf (not NUL-terminated); *len = its length. EINVAL if not a symlink. */
int vmm__host_node_readlink(const struct vmm__host_node *n, char *buf, size_t cap, size_t *len);

/* A new hard link `name` in directory fd dirfd to the object (never to what a symlink names). */
int vmm__host_node_link(const struct vmm__host_node *n, int dirfd, const char *name);

/* File-system statistics of the file system holding the object (statfs(2) / fstatvfs(3p)). */
struct vmm__host_fsstat {
    uint32_t type; /* Linux f_type; POSIX: V9FS_MAGIC (0x01021997), there is no portable one */
    uint32_t bsize;
    uint64_t blocks, bfree, bavail, files, ffree, fsid;
    uint32_t namelen;
};
int vmm__host_node_fsstat(const struct vmm__host_node *n, struct vmm__host_fsstat *out);

/* atime, mtime, ctime of a struct stat (POSIX st_atim; macOS spells them st_atimespec). */
void vmm__host_stat_times(const struct stat *st, struct timespec out[3]);

/*
 * The Linux dirent type (DT_DIR = 4, DT_REG = 8, DT_LNK = 10, ...; the value
 * 9P2000.L Rreaddir carries) of entry `de` read from the directory stream
 * `dir`: d_type where the host has it, else an lstat of the entry
 * (0 = DT_UNKNOWN if that fails).
 */
uint8_t vmm__host_dirent_type(DIR *dir, const struct dirent *de);

/* ---- the I/O thread's event loop: poll, wake-ups, tap devices ---------------------------------- */

/* Events of vmm__host_poll() (the values are poll(2)'s POLLIN, POLLOUT, POLLERR, POLLHUP). */
#define VMM_HOST_POLLIN 0x001
#define VMM_HOST_POLLOUT 0x004
#define VMM_HOST_POLLERR 0x008
#define VMM_HOST_POLLHUP 0x010
struct vmm__host_pollfd {
    int fd;
    short events, revents;
};
/*
 * Wait up to timeout_ms (-1: for ever) until one of fds is ready (poll(2), POSIX); EINTR is
 * returned as 0 ready. *nready = the number of fds with revents set. 0 or an errno.
 */
int vmm__host_poll(struct vmm__host_pollfd *fds, unsigned n, int timeout_ms, unsigned *nready);

/*
 * A wake-up for a poll loop: w->rfd is polled for VMM_HOST_POLLIN; vmm__host_wakeup_signal() makes
 * it readable (from any thread, async-signal-safe) until vmm__host_wakeup_drain(). Linux: one
 * eventfd (rfd == wfd); POSIX: a non-blocking pipe. Close-on-exec.
 */
struct vmm__host_wakeup {
    int rfd, wfd;
};
int vmm__host_wakeup_open(struct vmm__host_wakeup *w);
void vmm__host_wakeup_signal(struct vmm__host_wakeup *w);
void vmm__host_wakeup_drain(struct vmm__host_wakeup *w);
void vmm__host_wakeup_close(struct vmm__host_wakeup *w);

/*
 * Attach to the existing tap interface `name` (Linux: /dev/net/tun, IFF_TAP | IFF_NO_PI: whole
 * Ethernet frames, no header); *fd is non-blocking and close-on-exec. ENOTSUP where the host has
 * no tap devices (POSIX).
 */
int vmm__host_tap_open(const char *name, int *fd);

#endif
