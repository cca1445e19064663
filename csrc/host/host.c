/* host.c - the host layer's parts that are plain POSIX, shared by host_linux.c and host_posix.c. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "host.h"

void vmm__host_node_init(struct vmm__host_node *n)
{
    memset(n, 0, sizeof *n);
    n->fd = n->pfd = -1;
}

void vmm__host_node_close(struct vmm__host_node *n)
{
    if (n->fd >= 0)
        close(n->fd);
    if (n->pfd >= 0)
        close(n->pfd);
    vmm__host_node_init(n);
}

int vmm__host_node_dup(const struct vmm__host_node *n, struct vmm__host_node *out)
{
    int e;

    *out = *n;
    out->fd = out->pfd = -1;
    if (n->fd >= 0 && (out->fd = fcntl(n->fd, F_DUPFD_CLOEXEC, 0)) < 0)
        goto fail;
    if (n->pfd >= 0 && (out->pfd = fcntl(n->pfd, F_DUPFD_CLOEXEC, 0)) < 0)
        goto fail;
    return 0;
fail:
    e = errno;
    vmm__host_node_close(out);
    return e;
}

void vmm__host_ram_free(void *p, size_t size)
{
    if (p)
        munmap(p, size);
}

/* Clear the O_NONBLOCK an open of a guest-named object carries (no effect on files, but I/O is blocking). */
int vmm__host_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) ? errno : 0;
}

/* Map a file's pages copy-on-write over guest RAM (a snapshot's RAM section): a private copy is made only
   of the pages the guest writes; the others stay the page cache's, shared by every VM restored from it. */
int vmm__host_ram_map_file(void *addr, size_t len, int fd, uint64_t off)
{
    void *p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, (off_t)off);
    if (p == MAP_FAILED)
        return errno;
    return p == addr ? 0 : EINVAL;
}

size_t vmm__host_page_size(void)
{
    long n = sysconf(_SC_PAGESIZE);
    return n > 0 ? (size_t)n : 4096;
}

int vmm__host_poll(struct vmm__host_pollfd *fds, unsigned n, int timeout_ms, unsigned *nready)
{
    struct pollfd pf[256];
    int r;

    if (n > sizeof pf / sizeof pf[0])
        return EINVAL;
    for (unsigned i = 0; i < n; i++)
        pf[i] = (struct pollfd){ .fd = fds[i].fd, .events = fds[i].events };
    r = poll(pf, n, timeout_ms);
    *nready = 0;
    if (r < 0)
        return errno == EINTR ? 0 : errno;
    for (unsigned i = 0; i < n; i++)
        fds[i].revents = pf[i].revents;
    *nready = (unsigned)r;
    return 0;
}
