/* iothread.c - the VM's I/O thread: a poll loop over host fds, with work items other threads schedule. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../host/host.h"
#include "iothread.h"
#include "vm.h"

/*
 * A round polls at most IO_MAX_FDS fds: the wake-up fd and what the clients reserve when they join
 * (vmm__iothread_add_client: user networking USER_MAX_SOCKETS + its hostfwd listeners, a tap 1), so a
 * back-end that would not fit is refused with an error instead of having its sockets skipped.
 */
#define IO_MAX_FDS 1024
#define IO_MAX_ENTRIES 32 /* clients + work items of one VM (a NIC has at most 2) */

struct vmm_io_set {
    struct vmm__host_pollfd fd[IO_MAX_FDS];
    unsigned n;
};

struct io_entry {
    const struct vmm_io_client_ops *ops; /* NULL: a work item */
    void *p;
    unsigned nfds; /* fds a client reserved in every round */
};

struct vmm_iothread {
    struct vmm_vm *vm;
    pthread_t thread;
    struct vmm__host_wakeup wake;
    pthread_mutex_t lock; /* a leaf: guards the entries, stop and round */
    pthread_cond_t cond;
    struct io_entry e[IO_MAX_ENTRIES];
    unsigned n;
    unsigned nfds;          /* reserved by the entries, with the wake-up fd */
    struct vmm_io_set *set; /* the rounds' poll set (the thread's) */
    bool stop;
    uint64_t round;     /* bumped when a round's copy of the entries is taken */
    atomic_bool kicked; /* a kick since the last poll returned: later kicks need no wake-up write */
};

int vmm__io_add(struct vmm_io_set *set, int fd, short events)
{
    if (set->n >= IO_MAX_FDS || fd < 0)
        return -1;
    set->fd[set->n] = (struct vmm__host_pollfd){ .fd = fd, .events = events };
    return (int)set->n++;
}

short vmm__io_revents(const struct vmm_io_set *set, int idx)
{
    return idx >= 0 && (unsigned)idx < set->n ? set->fd[idx].revents : 0;
}

/* One round: copy the entries, let clients fill, poll, dispatch, run scheduled work. */
static void io_round(struct vmm_iothread *io, struct vmm_io_set *set)
{
    struct io_entry e[IO_MAX_ENTRIES];
    unsigned n, ready;
    int timeout = -1;

    pthread_mutex_lock(&io->lock);
    n = io->n;
    memcpy(e, io->e, n * sizeof e[0]);
    io->round++;
    pthread_cond_broadcast(&io->cond); /* a remover waits for a round that no longer holds its entry */
    pthread_mutex_unlock(&io->lock);

    set->n = 0;
    vmm__io_add(set, io->wake.rfd, VMM_HOST_POLLIN);
    for (unsigned i = 0; i < n; i++)
        if (e[i].ops)
            e[i].ops->fill(e[i].p, set, &timeout);
    /* work scheduled since the last round must not wait for the poll */
    for (unsigned i = 0; i < n; i++)
        if (!e[i].ops && atomic_load(&((struct vmm_io_work *)e[i].p)->pending))
            timeout = 0;
    if (vmm__host_poll(set->fd, set->n, timeout, &ready))
        set->n = 1;                   /* only EINVAL/ENOMEM: treat as a timeout, the next round tries again */
    atomic_store(&io->kicked, false); /* kicks from here on start another round */
    if (set->fd[0].revents)
        vmm__host_wakeup_drain(&io->wake);
    for (unsigned i = 0; i < n; i++) {
        if (e[i].ops) {
            e[i].ops->dispatch(e[i].p, set);
        } else {
            struct vmm_io_work *w = e[i].p;
            if (atomic_exchange(&w->pending, false))
                w->fn(w->opaque);
        }
    }
}

static void *io_main(void *arg)
{
    struct vmm_iothread *io = arg;

    vmm__host_thread_name("vmm-io");
    for (;;) {
        pthread_mutex_lock(&io->lock);
        bool stop = io->stop;
        pthread_mutex_unlock(&io->lock);
        if (stop)
            break;
        io_round(io, io->set);
    }
    pthread_mutex_lock(&io->lock);
    io->round = UINT64_MAX; /* no round will run again: removers need not wait */
    pthread_cond_broadcast(&io->cond);
    pthread_mutex_unlock(&io->lock);
    return NULL;
}

int vmm__iothread_get(struct vmm_vm *vm, struct vmm_iothread **out)
{
    struct vmm_iothread *io;
    int e;

    if (vm->iothread) {
        *out = vm->iothread;
        return 0;
    }
    if (!(io = calloc(1, sizeof *io)) || !(io->set = malloc(sizeof *io->set))) {
        free(io);
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the I/O thread");
    }
    io->vm = vm;
    io->nfds = 1; /* the wake-up fd */
    if ((e = vmm__host_wakeup_open(&io->wake))) {
        free(io->set);
        free(io);
        return vmm__set_error(vm, VMM_EIO, "I/O thread: cannot make its wake-up fd: %s", strerror(e));
    }
    pthread_mutex_init(&io->lock, NULL);
    vmm__host_cond_init(&io->cond);
    if ((e = pthread_create(&io->thread, NULL, io_main, io))) {
        vmm__host_wakeup_close(&io->wake);
        pthread_mutex_destroy(&io->lock);
        pthread_cond_destroy(&io->cond);
        free(io->set);
        free(io);
        return vmm__set_error(vm, VMM_ENOMEM, "cannot start the I/O thread: %s", strerror(e));
    }
    vm->iothread = *out = io;
    return 0;
}

void vmm__iothread_destroy(struct vmm_iothread *io)
{
    if (!io)
        return;
    pthread_mutex_lock(&io->lock);
    io->stop = true;
    pthread_mutex_unlock(&io->lock);
    vmm__host_wakeup_signal(&io->wake);
    pthread_join(io->thread, NULL);
    vmm__host_wakeup_close(&io->wake);
    pthread_mutex_destroy(&io->lock);
    pthread_cond_destroy(&io->cond);
    free(io->set);
    free(io);
}

static int add_entry(struct vmm_iothread *io, const struct vmm_io_client_ops *ops, void *p, unsigned nfds,
                     const char *what)
{
    pthread_mutex_lock(&io->lock);
    if (io->n >= IO_MAX_ENTRIES) {
        pthread_mutex_unlock(&io->lock);
        return vmm__set_error(io->vm, VMM_ENOMEM, "the I/O thread serves at most %d back-ends", IO_MAX_ENTRIES);
    }
    if (nfds > IO_MAX_FDS - io->nfds) {
        unsigned taken = io->nfds - 1;
        pthread_mutex_unlock(&io->lock);
        return vmm__set_error(io->vm, VMM_ENOMEM,
                              "%s needs up to %u host fds polled, and the VM's I/O thread polls at most %d (the "
                              "VM's other back-ends hold %u)",
                              what, nfds, IO_MAX_FDS - 1, taken);
    }
    io->e[io->n++] = (struct io_entry){ .ops = ops, .p = p, .nfds = nfds };
    io->nfds += nfds;
    pthread_mutex_unlock(&io->lock);
    vmm__host_wakeup_signal(&io->wake); /* a new round polls its fds */
    return 0;
}

int vmm__iothread_add_client(struct vmm_iothread *io, const struct vmm_io_client_ops *ops, void *c, unsigned nfds,
                             const char *what)
{
    return add_entry(io, ops, c, nfds, what);
}

int vmm__iothread_add_work(struct vmm_iothread *io, struct vmm_io_work *w)
{
    return add_entry(io, NULL, w, 0, "");
}

void vmm__iothread_remove(struct vmm_iothread *io, void *p)
{
    bool self = pthread_equal(pthread_self(), io->thread);

    pthread_mutex_lock(&io->lock);
    for (unsigned i = 0; i < io->n; i++) {
        if (io->e[i].p == p) {
            io->nfds -= io->e[i].nfds;
            memmove(&io->e[i], &io->e[i + 1], (io->n - i - 1) * sizeof io->e[0]);
            io->n--;
            break;
        }
    }
    /* the round under way may hold a copy: wait until the next one has started (or the loop ended) */
    uint64_t r = io->round;
    if (!self && r != UINT64_MAX) {
        vmm__host_wakeup_signal(&io->wake);
        while (io->round == r)
            pthread_cond_wait(&io->cond, &io->lock);
    }
    pthread_mutex_unlock(&io->lock);
}

void vmm__iothread_schedule(struct vmm_iothread *io, struct vmm_io_work *w)
{
    if (!atomic_exchange(&w->pending, true))
        vmm__host_wakeup_signal(&io->wake);
}

void vmm__iothread_kick(struct vmm_iothread *io)
{
    if (!atomic_exchange(&io->kicked, true)) /* one wake-up write per round, however many kicks */
        vmm__host_wakeup_signal(&io->wake);
}
