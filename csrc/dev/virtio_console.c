/* virtio_console.c - virtio console (virtio 1.2 §5.3), one port (Linux's hvc0); vmm_add_virtio_console(). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../core/console.h"
#include "../core/board.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "virtio.h"

/*
 * One port, no MULTIPORT: receiveq0 (queue 0, host -> guest) and transmitq0
 * (queue 1, guest -> host), §5.3.2. Features: SIZE (cols/rows in config
 * space, a fixed 80x24) and EMERG_WRITE (a byte written to emerg_wr is
 * printed at once, §5.3.6.1). Config space (§5.3.4): le16 cols, le16 rows,
 * le32 max_nr_ports (1), le32 emerg_wr.
 *
 * Output: each transmitq chain's readable bytes join the console stream
 * (vmm__console_put) in pieces of at most CHUNK bytes; at most TX_CHAIN_MAX
 * bytes of one chain are printed (the rest is consumed and dropped: the
 * console keeps 64 MiB anyway, and this bounds the time a hostile chain of
 * 256 RAM-sized buffers can take). Writable parts of a transmitq chain are
 * ignored (returned with length 0).
 *
 * Input: console port VMM_CONSOLE_VIRTIO (vmm_console_write_port), its own
 * queue apart from the PL011's, so the two never take each other's bytes.
 * When bytes are queued and the driver has posted receiveq buffers, a
 * chain is popped and filled with up to its writable length; bytes stay in
 * the console's queue until a buffer takes them (nothing is lost across a
 * device reset). A receiveq chain with no writable byte breaks the rules:
 * NEEDS_RESET. Deterministic mode: bytes enter the queue between rounds
 * (vmm__console_advance), like serial input.
 *
 * Locking: device state is guarded by the device's virtio lock, which the
 * core holds around callbacks and the input callback takes; console calls
 * take the console lock inside it (order: virtio lock -> console lock).
 */
#define CONSOLE_F_SIZE 0
#define CONSOLE_F_EMERG_WRITE 2
#define CONSOLE_QUEUE_MAX 128
#define CONSOLE_COLS 80
#define CONSOLE_ROWS 24
#define CHUNK 4096u
#define TX_CHAIN_MAX (1u << 20)
enum { RECEIVEQ = 0, TRANSMITQ = 1 };

struct console_config {
    uint16_t cols, rows;
    uint32_t max_nr_ports, emerg_wr;
};

struct vmm_virtio_console {
    struct vmm_vm *vm;
    struct vmm_virtio *v;
    struct virtq_chain chain;
    uint8_t buf[CHUNK];
};

static void console_config_read(void *dev, uint32_t off, void *buf, uint32_t len)
{
    struct console_config cfg = { .cols = CONSOLE_COLS, .rows = CONSOLE_ROWS, .max_nr_ports = 1 };

    (void)dev;
    memcpy(buf, (uint8_t *)&cfg + off, len); /* off + len <= sizeof cfg: checked by the core; emerg_wr reads 0 */
}

static void console_config_write(void *dev, uint32_t off, const void *buf, uint32_t len)
{
    struct vmm_virtio_console *d = dev;

    /* §5.3.6.1: the driver writes one character to emerg_wr (any width that covers offset 8; low byte) */
    if (off == offsetof(struct console_config, emerg_wr)) {
        uint8_t ch = *(const uint8_t *)buf;
        vmm__console_put(d->vm->console, &ch, 1);
        return;
    }
    vmm__virtio_guest_error(d->v, "%u-byte write to read-only config field at 0x%x", len, off);
}

/* Fill posted receiveq buffers from the port's input queue. Device lock held. */
static void console_rx(struct vmm_virtio_console *d)
{
    struct vmm_virtq *q = vmm__virtio_queue(d->v, RECEIVEQ);
    struct virtq_chain *c = &d->chain;
    bool pushed = false;

    if (!vmm__virtio_live(d->v) || !vmm__virtq_ready(q))
        return;
    while (vmm__console_port_has_input(d->vm->console, VMM_CONSOLE_VIRTIO) && vmm__virtq_pop(q, c) > 0) {
        uint64_t done = 0;
        if (!c->write_len) {
            vmm__virtq_push(q, c, 0);
            vmm__virtio_needs_reset(d->v, "receiveq buffer with no writable byte");
            break;
        }
        while (done < c->write_len) {
            size_t want = c->write_len - done < CHUNK ? (size_t)(c->write_len - done) : CHUNK;
            size_t n = vmm__console_port_read(d->vm->console, VMM_CONSOLE_VIRTIO, d->buf, want);
            if (!n)
                break;
            vmm__virtq_write(c, done, d->buf, n);
            done += n;
        }
        vmm__virtq_push(q, c, (uint32_t)done);
        pushed = true;
    }
    if (pushed)
        vmm__virtio_notify(d->v, RECEIVEQ);
}

static void console_tx(struct vmm_virtio_console *d)
{
    struct vmm_virtq *q = vmm__virtio_queue(d->v, TRANSMITQ);
    struct virtq_chain *c = &d->chain;
    bool pushed = false;

    while (vmm__virtq_pop(q, c) > 0) {
        uint64_t len = c->read_len < TX_CHAIN_MAX ? c->read_len : TX_CHAIN_MAX;
        for (uint64_t off = 0; off < len;) {
            size_t n = vmm__virtq_read(c, off, d->buf, len - off < CHUNK ? (size_t)(len - off) : CHUNK);
            if (!n)
                break;
            vmm__console_put(d->vm->console, d->buf, n);
            off += n;
        }
        vmm__virtq_push(q, c, 0); /* §5.3.6.2: nothing written back */
        pushed = true;
    }
    if (pushed)
        vmm__virtio_notify(d->v, TRANSMITQ);
}

static void console_queue_notify(void *dev, unsigned q)
{
    struct vmm_virtio_console *d = dev;

    if (q == RECEIVEQ)
        console_rx(d);
    else
        console_tx(d);
}

/* Input arrived on the port (any thread, console lock not held). */
static void console_input(void *opaque)
{
    struct vmm_virtio_console *d = opaque;

    if (!d->v) /* input written while vmm_add_virtio_console() is still adding the device */
        return;
    vmm__virtio_lock(d->v);
    console_rx(d);
    vmm__virtio_unlock(d->v);
}

static void console_destroy(void *dev)
{
    struct vmm_virtio_console *d = dev;

    vmm__console_set_port_input_cb(d->vm->console, VMM_CONSOLE_VIRTIO, NULL, NULL);
    free(d);
}

static const struct vmm_virtio_ops console_ops = {
    .name = "console",
    .device_id = VIRTIO_ID_CONSOLE,
    .features = (1ULL << CONSOLE_F_SIZE) | (1ULL << CONSOLE_F_EMERG_WRITE),
    .num_queues = 2,
    .queue_max = CONSOLE_QUEUE_MAX,
    .config_size = sizeof(struct console_config),
    .config_read = console_config_read,
    .config_write = console_config_write,
    .queue_notify = console_queue_notify,
};

/*
 * Snapshots: the core's state only. The port's input bytes wait in the console stream (core/console.c,
 * saved with the VM), output went out at once, and chains are served completely when notified.
 */
static int console_snap(void *dev, struct vmm_snap *s)
{
    struct vmm_virtio_console *d = dev;
    return vmm__virtio_snap(d->v, s);
}

static const struct vmm_device_ops console_device = {
    .name = "virtio-console",
    .save = console_snap,
    .load = console_snap,
    .snap_version = 1,
    .destroy = console_destroy,
};

int vmm__dev_add_virtio_console(struct vmm_vm *vm)
{
    struct vmm_virtio_console *d;
    int rc;

    if (!vm)
        return VMM_EINVAL;
    if (!(d = calloc(1, sizeof *d)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the virtio console");
    d->vm = vm;
    if (vmm__console_set_port_input_cb(vm->console, VMM_CONSOLE_VIRTIO, console_input, d)) {
        free(d);
        return vmm__set_error(vm, VMM_ENOTSUP, "the VM has a virtio console already (one is supported)");
    }
    if ((rc = vmm__virtio_add(vm, &console_ops, &console_device, d, &d->v))) {
        vmm__console_set_port_input_cb(vm->console, VMM_CONSOLE_VIRTIO, NULL, NULL);
        free(d);
    }
    return rc;
}
