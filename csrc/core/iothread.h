/*
 * iothread.h - the VM's I/O thread (iothread.c): one event loop over the host layer's poll
 * (host.h) that serves the back-ends receiving from the host (network now; the design in
 * docs/ARCHITECTURE.md "The I/O thread").
 *
 * Two kinds of users:
 * - a *client* (a back-end with host fds: libslirp's sockets, a tap fd) adds its fds to every poll
 *   round (fill) and handles what is ready (dispatch); fill may lower the round's timeout for
 *   its timers;
 * - a *work* item (a NIC with frames waiting for the guest) is scheduled from any thread, without
 *   a lock (an atomic flag and a wake-up), and runs once on the I/O thread soon after.
 * Both run on the I/O thread with no lock of the loop held, so they may take device locks; the
 * loop's own lock is a leaf taken only to copy its lists.
 */
#ifndef VMM_IOTHREAD_H
#define VMM_IOTHREAD_H

#include <stdatomic.h>
#include <stdbool.h>

struct vmm_vm;
struct vmm_iothread;
struct vmm_io_set;

struct vmm_io_client_ops {
    /* Before the poll: add fds (vmm__io_add) and lower *timeout_ms (-1: no timeout of its own). */
    void (*fill)(void *c, struct vmm_io_set *set, int *timeout_ms);
    /* After it (also on a timeout): handle ready fds (vmm__io_revents with fill's indices) and timers. */
    void (*dispatch)(void *c, struct vmm_io_set *set);
};

/* Add fd for `events` (VMM_HOST_POLL*) to this round: its index, or -1 if the round is full (1024 fds). */
int vmm__io_add(struct vmm_io_set *set, int fd, short events);
/* What happened to the fd at idx this round (0 for a bad index). */
short vmm__io_revents(const struct vmm_io_set *set, int idx);

struct vmm_io_work {
    void (*fn)(void *opaque);
    void *opaque;
    atomic_bool pending;
};

/* The VM's I/O thread, created and started on first use (before the VM is prepared). */
int vmm__iothread_get(struct vmm_vm *vm, struct vmm_iothread **out);
/* Stop and join the thread, free it. vmm_destroy() calls it before any device is destroyed. */
void vmm__iothread_destroy(struct vmm_iothread *io);

/* A client that adds at most nfds fds to a round (refused, naming `what`, when the round has no room). */
int vmm__iothread_add_client(struct vmm_iothread *io, const struct vmm_io_client_ops *ops, void *c, unsigned nfds,
                             const char *what);
int vmm__iothread_add_work(struct vmm_iothread *io, struct vmm_io_work *w);
/* Remove a client or work item; on return the loop no longer calls it (waits for its round to end). */
void vmm__iothread_remove(struct vmm_iothread *io, void *c_or_w);
/* Run w->fn on the I/O thread soon (coalesced while pending). Any thread, lock-free. */
void vmm__iothread_schedule(struct vmm_iothread *io, struct vmm_io_work *w);
/* Start a new poll round now (a client's fds or timers changed). Any thread, lock-free. */
void vmm__iothread_kick(struct vmm_iothread *io);

#endif
