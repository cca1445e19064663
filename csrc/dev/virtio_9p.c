/* virtio_9p.c - virtio-9p (virtio 1.2 §5.11 is not there: the device is QEMU's/Linux's, id 9) over p9_server.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/board.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "p9_server.h"
#include "virtio.h"

/*
 * Device id 9, one request queue. Config space: tag_len (le16) then the
 * mount tag's bytes (no NUL), offered with feature VIRTIO_9P_MOUNT_TAG.
 * Each chain's readable part is one T-message (at most P9_MAX_MSIZE bytes
 * are read: a longer one is answered EMSGSIZE by its size field), its
 * writable part receives the R-message. Requests are served at once, in
 * order, on the thread that notifies (no request ever blocks on the guest).
 */
#define VIRTIO_9P_MOUNT_TAG 0
#define P9_QUEUE_SIZE 128
#define P9_TAG_MAX 64

struct vmm_virtio_9p {
    struct vmm_virtio *v;
    struct vmm_vm *vm;
    struct p9_server *srv;
    uint32_t cfg_size;
    uint8_t cfg[2 + P9_TAG_MAX];
    struct virtq_chain chain;
    uint8_t *req, *resp; /* bounce buffers of P9_MAX_MSIZE */
};

static void p9dev_config_read(void *dev, uint32_t off, void *buf, uint32_t len)
{
    struct vmm_virtio_9p *d = dev;
    memcpy(buf, d->cfg + off, len); /* off + len <= cfg_size: checked by the transport */
}

static void p9dev_queue_notify(void *dev, unsigned qi)
{
    struct vmm_virtio_9p *d = dev;
    struct vmm_virtq *q = vmm__virtio_queue(d->v, qi);
    struct virtq_chain *c = &d->chain;
    bool pushed = false;

    while (q && vmm__virtq_pop(q, c) > 0) {
        size_t n = vmm__virtq_read(c, 0, d->req, P9_MAX_MSIZE);
        size_t cap = c->write_len < P9_MAX_MSIZE ? (size_t)c->write_len : P9_MAX_MSIZE;
        size_t out = p9_handle(d->srv, d->req, n, d->resp, cap);
        uint32_t written = 0;

        if (n < 7 || !out)
            vmm__guest_error(d->vm, "virtio-9p", "request chain with %zu readable and %zu writable bytes", n, cap);
        if (out)
            written = (uint32_t)vmm__virtq_write(c, 0, d->resp, out);
        vmm__virtq_push(q, c, written);
        pushed = true;
    }
    if (pushed)
        vmm__virtio_notify(d->v, qi);
}

static void p9dev_reset(void *dev)
{
    struct vmm_virtio_9p *d = dev;
    p9_server_reset(d->srv); /* a new driver: every fid is gone */
}

static void p9dev_free(struct vmm_virtio_9p *d)
{
    if (!d)
        return;
    p9_server_free(d->srv); /* fsyncs the files still open */
    free(d->req);
    free(d->resp);
    free(d);
}

static void p9dev_destroy(void *dev)
{
    p9dev_free(dev);
}

/*
 * Snapshots: the virtio core's state, the mount tag (must be the same: the guest mounted it), then the
 * server's session and fids (p9_snap.c). Requests are served completely when notified: none in flight.
 * Files still open are fsync()ed at save, like at a reset, so what the guest wrote is on the host.
 */
static int p9dev_snap(void *dev, struct vmm_snap *s)
{
    struct vmm_virtio_9p *d = dev;
    uint8_t cfg[sizeof d->cfg];
    uint32_t cfg_size = d->cfg_size;

    if (vmm__virtio_snap(d->v, s))
        return vmm__snap_error(s);
    memcpy(cfg, d->cfg, sizeof cfg);
    vmm__snap_u32(s, &cfg_size);
    if (vmm__snap_loading(s) && !vmm__snap_error(s) && cfg_size != d->cfg_size)
        return vmm__snap_fail(s, "the share's mount tag was %u bytes long, it is now %u", cfg_size - 2,
                              d->cfg_size - 2);
    vmm__snap_bytes(s, cfg, cfg_size);
    if (vmm__snap_loading(s) && !vmm__snap_error(s) && memcmp(cfg, d->cfg, cfg_size))
        return vmm__snap_fail(s, "the share's mount tag was \"%.*s\", it is now \"%.*s\"", (int)cfg_size - 2,
                              (const char *)cfg + 2, (int)d->cfg_size - 2, (const char *)d->cfg + 2);
    vmm__virtio_lock(d->v);
    p9_server_snap(d->srv, s);
    vmm__virtio_unlock(d->v);
    return vmm__snap_error(s);
}

static const struct vmm_device_ops p9_device = {
    .name = "virtio-9p",
    .save = p9dev_snap,
    .load = p9dev_snap,
    .snap_version = 1,
    .destroy = p9dev_destroy,
};

static const struct vmm_virtio_ops p9_ops = {
    .name = "9p",
    .device_id = VIRTIO_ID_9P,
    .features = 1ULL << VIRTIO_9P_MOUNT_TAG,
    .num_queues = 1,
    .queue_max = P9_QUEUE_SIZE,
    .config_size = 0, /* per device: set from the tag below */
    .config_read = p9dev_config_read,
    .queue_notify = p9dev_queue_notify,
    .reset = p9dev_reset,
};

int vmm__dev_add_share(struct vmm_vm *vm, const char *host_dir, const char *tag, int readonly)
{
    struct vmm_virtio_9p *d;
    struct vmm_virtio_ops *ops;
    size_t tlen;
    int fd, rc;

    if (!vm)
        return VMM_EINVAL;
    if (!host_dir || !*host_dir)
        return vmm__set_error(vm, VMM_EINVAL, "share: no host directory given");
    if (!tag || !(tlen = strlen(tag)) || tlen > P9_TAG_MAX)
        return vmm__set_error(vm, VMM_EINVAL, "share %s: the mount tag must be 1 to %d bytes", host_dir, P9_TAG_MAX);
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)tag[i] <= ' ' || (unsigned char)tag[i] >= 0x7f)
            return vmm__set_error(vm, VMM_EINVAL, "share %s: mount tag \"%s\": printable ASCII without spaces only",
                                  host_dir, tag);
    if ((rc = vmm__check_idle(vm, "adding a share")))
        return rc;
    if ((fd = open(host_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        int e = errno;
        if (e == ENOENT)
            return vmm__set_error(vm, VMM_ENOENT, "share %s: no such directory", host_dir);
        if (e == ENOTDIR)
            return vmm__set_error(vm, VMM_EINVAL, "share %s: not a directory", host_dir);
        return vmm__set_error(vm, VMM_EIO, "share %s: %s", host_dir, strerror(e));
    }
    if (!(d = calloc(1, sizeof *d + sizeof *ops))) {
        close(fd);
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for share %s", host_dir);
    }
    d->vm = vm;
    d->srv = p9_server_new(fd, readonly != 0); /* owns fd from here */
    d->req = malloc(P9_MAX_MSIZE);
    d->resp = malloc(P9_MAX_MSIZE);
    if (!d->srv || !d->req || !d->resp) {
        p9dev_free(d);
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for share %s", host_dir);
    }
    d->cfg[0] = (uint8_t)tlen;
    d->cfg[1] = (uint8_t)(tlen >> 8);
    memcpy(d->cfg + 2, tag, tlen);
    d->cfg_size = (uint32_t)(2 + tlen);
    /* the ops live with the device: the config size depends on the tag */
    ops = (struct vmm_virtio_ops *)(d + 1);
    *ops = p9_ops;
    ops->config_size = d->cfg_size;
    if ((rc = vmm__virtio_add(vm, ops, &p9_device, d, &d->v))) {
        p9dev_free(d);
        return rc;
    }
    vmm__log(vm, VMM_LOG_DEBUG, "virtio-9p", "sharing %s as \"%s\"%s", host_dir, tag, readonly ? " (read-only)" : "");
    return 0;
}
