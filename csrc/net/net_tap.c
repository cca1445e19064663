/* net_tap.c - a host tap interface as a NIC's back-end (Linux /dev/net/tun through the host layer). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/iothread.h"
#include "../core/vm.h"
#include "../host/host.h"
#include "net.h"

/*
 * The interface must exist (ip tuntap add NAME mode tap) and be usable by this process; the host
 * configures it (addresses, bridge, up). Frames from the guest are written to the tap fd at once
 * (non-blocking: a full host queue drops the frame, as a busy link would); frames from the host are
 * read on the I/O thread, at most TAP_BURST a round, into the NIC's bounded queue.
 */
#define TAP_BURST 64

struct net_tap {
    struct vmm_vm *vm;
    struct vmm_net_nic *nic;
    int fd, idx;
    bool client_added;
    uint64_t tx_errors;
    uint8_t buf[VMM_NET_FRAME_MAX];
};

static void tap_fill(void *c, struct vmm_io_set *set, int *timeout_ms)
{
    struct net_tap *t = c;
    (void)timeout_ms;
    t->idx = vmm__io_add(set, t->fd, VMM_HOST_POLLIN);
}

static void tap_dispatch(void *c, struct vmm_io_set *set)
{
    struct net_tap *t = c;

    if (!(vmm__io_revents(set, t->idx) & VMM_HOST_POLLIN))
        return;
    for (unsigned i = 0; i < TAP_BURST; i++) {
        ssize_t n = read(t->fd, t->buf, sizeof t->buf);
        if (n <= 0)
            break;
        vmm__net_nic_receive(t->nic, t->buf, (size_t)n);
    }
}

static const struct vmm_io_client_ops tap_client = {
    .fill = tap_fill,
    .dispatch = tap_dispatch,
};

static void tap_send(void *be, const uint8_t *frame, size_t len)
{
    struct net_tap *t = be;

    if (write(t->fd, frame, len) != (ssize_t)len && t->tx_errors++ == 0)
        vmm__log(t->vm, VMM_LOG_WARN, "net-tap", "write to the tap device failed (%s): frames are dropped",
                 strerror(errno));
}

static void tap_destroy(void *be)
{
    struct net_tap *t = be;

    if (t->client_added && t->vm->iothread)
        vmm__iothread_remove(t->vm->iothread, t);
    if (t->fd >= 0)
        close(t->fd);
    free(t);
}

static const struct vmm_net_backend_ops tap_ops = {
    .name = "tap",
    .send = tap_send,
    .destroy = tap_destroy,
};

int vmm__net_tap_create(struct vmm_vm *vm, struct vmm_net_nic *nic, const char *name,
                        const struct vmm_net_backend_ops **ops, void **be)
{
    struct vmm_iothread *io;
    struct net_tap *t;
    int rc, e;

    if (!name || !*name)
        return vmm__set_error(vm, VMM_EINVAL, "tap networking needs an interface name");
    if ((rc = vmm__iothread_get(vm, &io)))
        return rc;
    if (!(t = calloc(1, sizeof *t)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for a tap back-end");
    t->vm = vm;
    t->nic = nic;
    t->idx = -1;
    if ((e = vmm__host_tap_open(name, &t->fd))) {
        free(t);
        return vmm__set_error(vm, e == ENOTSUP ? VMM_ENOTSUP : VMM_EIO, "tap %s: %s", name,
                              e == ENOTSUP ? "this host has no tap devices" : strerror(e));
    }
    if ((rc = vmm__iothread_add_client(io, &tap_client, t, 1, "a tap network card"))) {
        tap_destroy(t);
        return rc;
    }
    t->client_added = true;
    *ops = &tap_ops;
    *be = t;
    return 0;
}
