/*
 * console.c - the console's host side: one buffered output stream (the PL011
 * and the virtio console both print into it), waiting readers, and one input
 * queue per port (VMM_CONSOLE_SERIAL: the PL011, VMM_CONSOLE_VIRTIO: the
 * virtio console), so the two devices never take each other's bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "run.h"
#include "snapshot.h"
#include "console.h"
#include "../host/host.h"
#include "timeq.h"
#include "vm.h"

#define OUT_CAP (64u << 20) /* keep at most this much unread output (a power of two) */
#define IN_CAP (1u << 20)   /* queued input bytes */

struct vmm_console {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    /* unread output: a ring of out_cap bytes (a power of two, grown up to OUT_CAP); out_rd and out_wr count
     * bytes since the start, out_wr - out_rd are unread. A full ring drops its oldest bytes in O(1). */
    uint8_t *out;
    size_t out_cap;
    uint64_t out_rd, out_wr;
    uint64_t out_dropped;
    /* reverse execution (gdb_reverse.c): bytes the guest has produced in its own timeline (rewound with
     * it) and the most it ever produced; bytes below out_hw come again in a replay and are not shown twice */
    uint64_t guest_out, out_hw;
    struct vmm_vm *vm; /* for log lines */
    bool running;
    bool deterministic;
    struct console_port {
        uint8_t *in;
        size_t in_rd, in_wr;    /* ring of IN_CAP bytes, in_wr - in_rd queued */
        struct vmm_timeq sched; /* deterministic mode: bytes waiting for their virtual time */
        void (*input_cb)(void *opaque);
        void *input_opaque;
    } port[VMM_CONSOLE_PORTS];
};

int vmm__console_create(struct vmm_console **out, struct vmm_vm *vm)
{
    struct vmm_console *c = calloc(1, sizeof *c);

    if (!c)
        return VMM_ENOMEM;
    c->vm = vm;
    for (unsigned i = 0; i < VMM_CONSOLE_PORTS; i++) {
        if (!(c->port[i].in = malloc(IN_CAP))) {
            while (i--)
                free(c->port[i].in);
            free(c);
            return VMM_ENOMEM;
        }
        vmm__timeq_init(&c->port[i].sched, 1, IN_CAP);
    }
    pthread_mutex_init(&c->lock, NULL);
    vmm__host_cond_init(&c->cond);
    *out = c;
    return 0;
}

void vmm__console_destroy(struct vmm_console *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c->out);
    for (unsigned i = 0; i < VMM_CONSOLE_PORTS; i++) {
        free(c->port[i].in);
        vmm__timeq_free(&c->port[i].sched);
    }
    free(c);
}

/* Grow the ring to hold `need` unread bytes (lock held); false if it cannot (it stays as it was). */
static bool out_grow(struct vmm_console *c, size_t need)
{
    size_t cap = c->out_cap ? c->out_cap : 4096;
    size_t n = (size_t)(c->out_wr - c->out_rd);
    uint8_t *p;

    while (cap < need)
        cap *= 2;
    if (cap > OUT_CAP)
        cap = OUT_CAP;
    if (cap <= c->out_cap)
        return true;
    if (!(p = malloc(cap)))
        return false;
    for (size_t i = 0; i < n;) { /* unwrap into the new ring, from offset 0 */
        size_t at = (size_t)((c->out_rd + i) & (c->out_cap - 1));
        size_t k = c->out_cap - at < n - i ? c->out_cap - at : n - i;
        memcpy(p + i, c->out + at, k);
        i += k;
    }
    free(c->out);
    c->out = p;
    c->out_cap = cap;
    c->out_rd = 0;
    c->out_wr = n;
    return true;
}

void vmm__console_put(struct vmm_console *c, const void *buf, size_t len)
{
    const uint8_t *src = buf;

    pthread_mutex_lock(&c->lock);
    uint64_t at = c->guest_out;
    c->guest_out += len;
    if (at < c->out_hw) { /* a replay produces again what it produced before: shown once */
        size_t seen = c->out_hw - at < len ? (size_t)(c->out_hw - at) : len;
        src += seen;
        len -= seen;
    }
    if (c->guest_out > c->out_hw)
        c->out_hw = c->guest_out;
    if (!len) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    bool was_dropping = c->out_dropped != 0;
    if (len > OUT_CAP) { /* only the last OUT_CAP bytes can be kept */
        c->out_dropped += len - OUT_CAP;
        src += len - OUT_CAP;
        len = OUT_CAP;
    }
    size_t unread = (size_t)(c->out_wr - c->out_rd);
    if (unread + len > c->out_cap && !out_grow(c, unread + len) && !c->out_cap) {
        pthread_mutex_unlock(&c->lock);
        return; /* no memory at all: output is lost, the guest goes on */
    }
    if (len > c->out_cap) { /* out of memory to grow: keep what fits */
        src += len - c->out_cap;
        c->out_dropped += len - c->out_cap;
        len = c->out_cap;
    }
    unread = (size_t)(c->out_wr - c->out_rd);
    if (unread + len > c->out_cap) { /* a reader that never reads: drop the oldest, O(1) */
        size_t drop = unread + len - c->out_cap;
        c->out_rd += drop;
        c->out_dropped += drop;
    }
    for (size_t i = 0; i < len;) {
        size_t at = (size_t)(c->out_wr & (c->out_cap - 1));
        size_t k = c->out_cap - at < len - i ? c->out_cap - at : len - i;
        memcpy(c->out + at, src + i, k);
        c->out_wr += k;
        i += k;
    }
    bool first_drop = !was_dropping && c->out_dropped;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    if (first_drop)
        vmm__log(c->vm, VMM_LOG_WARN, "console",
                 "serial output is not being read: keeping the latest %u MiB, dropping older bytes "
                 "(counted in stats.serial_dropped)",
                 OUT_CAP >> 20);
}

uint64_t vmm__console_dropped(struct vmm_console *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t n = c->out_dropped;
    pthread_mutex_unlock(&c->lock);
    return n;
}

size_t vmm__console_host_mem(struct vmm_console *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->out_cap + (size_t)IN_CAP * VMM_CONSOLE_PORTS;
    pthread_mutex_unlock(&c->lock);
    return n;
}

void vmm__console_set_running(struct vmm_console *c, bool running)
{
    pthread_mutex_lock(&c->lock);
    c->running = running;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

size_t vmm__console_port_read(struct vmm_console *c, unsigned port, void *buf, size_t len)
{
    struct console_port *p = &c->port[port];
    uint8_t *out = buf;
    size_t n = 0;

    pthread_mutex_lock(&c->lock);
    while (n < len && p->in_wr != p->in_rd)
        out[n++] = p->in[p->in_rd++ % IN_CAP];
    pthread_mutex_unlock(&c->lock);
    return n;
}

bool vmm__console_port_has_input(struct vmm_console *c, unsigned port)
{
    pthread_mutex_lock(&c->lock);
    bool has = c->port[port].in_wr != c->port[port].in_rd;
    pthread_mutex_unlock(&c->lock);
    return has;
}

int vmm__console_getc(struct vmm_console *c)
{
    uint8_t ch;

    return vmm__console_port_read(c, VMM_CONSOLE_SERIAL, &ch, 1) ? ch : -1;
}

bool vmm__console_has_input(struct vmm_console *c)
{
    return vmm__console_port_has_input(c, VMM_CONSOLE_SERIAL);
}

VMM_EXPORT int vmm_console_read(vmm_vm *vm, void *buf, size_t len, uint64_t timeout_ns)
{
    struct vmm_console *c;
    struct timespec dl;
    size_t n;

    if (!vm || (!buf && len))
        return VMM_EINVAL;
    if (len > INT32_MAX)
        len = INT32_MAX;
    c = vm->console;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ns / 1000000000ULL);
    dl.tv_nsec += (long)(timeout_ns % 1000000000ULL);
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->lock);
    while (c->out_wr == c->out_rd && c->running && timeout_ns) {
        if (vmm__host_cond_timedwait(&c->cond, &c->lock, &dl) == ETIMEDOUT)
            break;
    }
    n = (size_t)(c->out_wr - c->out_rd);
    if (n > len)
        n = len;
    for (size_t i = 0; i < n;) {
        size_t at = (size_t)(c->out_rd & (c->out_cap - 1));
        size_t k = c->out_cap - at < n - i ? c->out_cap - at : n - i;
        memcpy((uint8_t *)buf + i, c->out + at, k);
        c->out_rd += k;
        i += k;
    }
    bool eof = !n && !c->running;
    pthread_mutex_unlock(&c->lock);
    return eof ? VMM_EEOF : (int)n;
}

int vmm__console_set_port_input_cb(struct vmm_console *c, unsigned port, void (*cb)(void *opaque), void *opaque)
{
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    if (cb && c->port[port].input_cb) {
        rc = VMM_EBUSY; /* one device reads a port */
    } else {
        c->port[port].input_cb = cb;
        c->port[port].input_opaque = opaque;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void vmm__console_set_input_cb(struct vmm_console *c, void (*cb)(void *opaque), void *opaque)
{
    vmm__console_set_port_input_cb(c, VMM_CONSOLE_SERIAL, cb, opaque);
}

void vmm__console_set_deterministic(struct vmm_console *c, bool on)
{
    c->deterministic = on;
}

/* Append to a port's input ring (lock held); true if it went from empty to non-empty. */
static bool push_input_locked(struct console_port *p, const uint8_t *b, size_t len)
{
    bool was_empty = p->in_wr == p->in_rd;
    for (size_t i = 0; i < len; i++)
        p->in[p->in_wr++ % IN_CAP] = b[i];
    return was_empty && len;
}

/* Unlock, then tell the ports' readers whose input became ready (bit i: port i). */
static void notify_input(struct vmm_console *c, unsigned ready)
{
    void (*cb[VMM_CONSOLE_PORTS])(void *);
    void *opaque[VMM_CONSOLE_PORTS];

    for (unsigned i = 0; i < VMM_CONSOLE_PORTS; i++) {
        cb[i] = c->port[i].input_cb;
        opaque[i] = c->port[i].input_opaque;
    }
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < VMM_CONSOLE_PORTS; i++)
        if ((ready >> i & 1) && cb[i])
            cb[i](opaque[i]);
}

uint64_t vmm__console_advance(struct vmm_console *c, uint64_t now_ns)
{
    unsigned ready = 0;
    uint64_t next = UINT64_MAX;

    pthread_mutex_lock(&c->lock);
    for (unsigned i = 0; i < VMM_CONSOLE_PORTS; i++) {
        struct console_port *p = &c->port[i];
        size_t n = 0;
        while (n < p->sched.n && p->sched.at[n] <= now_ns && p->in_wr - p->in_rd < IN_CAP) {
            if (push_input_locked(p, vmm__timeq_item(&p->sched, n), 1))
                ready |= 1u << i;
            n++;
        }
        vmm__timeq_drop(&p->sched, n);
        if (vmm__timeq_next(&p->sched) < next)
            next = vmm__timeq_next(&p->sched);
    }
    notify_input(c, ready);
    return next;
}

VMM_EXPORT int vmm_console_write_port(vmm_vm *vm, unsigned port, uint64_t at_ns, const void *buf, size_t len)
{
    static const char *const names[VMM_CONSOLE_PORTS] = { "serial", "virtio console" };
    struct console_port *p;
    struct vmm_console *c;
    int rc = 0;
    bool ready = false;

    if (!vm || (!buf && len))
        return VMM_EINVAL;
    if (port >= VMM_CONSOLE_PORTS)
        return vmm__set_error(vm, VMM_EINVAL, "no console port %u (0: serial, 1: virtio console)", port);
    c = vm->console;
    p = &c->port[port];
    pthread_mutex_lock(&c->lock);
    if (port != VMM_CONSOLE_SERIAL && !p->input_cb) {
        rc = VMM_ENOTSUP;
    } else if (c->deterministic) {
        rc = vmm__timeq_add(&p->sched, at_ns, buf, len); /* kept until the clock reaches at_ns */
    } else if (len > IN_CAP - (p->in_wr - p->in_rd)) {
        rc = VMM_ENOMEM;
    } else {
        ready = push_input_locked(p, buf, len);
    }
    notify_input(c, ready ? 1u << port : 0);
    if (rc == VMM_ENOTSUP)
        return vmm__set_error(vm, rc, "no virtio console: add one first (vmm_add_virtio_console)");
    if (rc)
        return vmm__set_error(vm, rc, "%s input queue full (%u bytes)", names[port], IN_CAP);
    if (c->deterministic)
        vmm__wake_run_loop(vm); /* it delivers the input */
    return 0;
}

VMM_EXPORT int vmm_console_write_at(vmm_vm *vm, uint64_t at_ns, const void *buf, size_t len)
{
    return vmm_console_write_port(vm, VMM_CONSOLE_SERIAL, at_ns, buf, len);
}

VMM_EXPORT int vmm_console_write(vmm_vm *vm, const void *buf, size_t len)
{
    return vmm_console_write_at(vm, 0, buf, len);
}

/* ---- snapshots ---- */

#define SNAP_OUT_MAX (16u << 20) /* unread output carried into a snapshot: the latest 16 MiB */

/* Unread output (the latest SNAP_OUT_MAX bytes; older ones count as dropped) and the dropped count. */
static void snap_output(struct vmm_console *c, struct vmm_snap *s)
{
    uint8_t *buf = NULL;
    size_t n = 0;

    if (!vmm__snap_loading(s)) {
        n = (size_t)(c->out_wr - c->out_rd);
        uint64_t skip = n > SNAP_OUT_MAX ? n - SNAP_OUT_MAX : 0;
        n -= (size_t)skip;
        uint64_t dropped = c->out_dropped + skip;
        vmm__snap_u64(s, &dropped);
        if (n && !(buf = malloc(n))) {
            vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory");
            return;
        }
        for (size_t i = 0; i < n; i++)
            buf[i] = c->out[(c->out_rd + skip + i) & (c->out_cap - 1)];
        vmm__snap_blob(s, (void **)&buf, &n, SNAP_OUT_MAX);
        free(buf);
        return;
    }
    uint64_t dropped = 0;
    vmm__snap_u64(s, &dropped);
    vmm__snap_blob(s, (void **)&buf, &n, SNAP_OUT_MAX);
    if (!vmm__snap_error(s) && n && !out_grow(c, n))
        vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory for %zu bytes of output", n);
    if (!vmm__snap_error(s)) {
        c->out_dropped = dropped;
        c->out_rd = c->out_wr = 0;
        if (n)
            memcpy(c->out, buf, n);
        c->out_wr = n;
    }
    free(buf);
}

/* A port's queued input (ring) and its scheduled input (deterministic mode: time, byte). */
static void snap_port(struct console_port *p, struct vmm_snap *s)
{
    uint64_t queued = p->in_wr - p->in_rd, nsched = p->sched.n;

    vmm__snap_u64(s, &queued);
    if (vmm__snap_loading(s) && queued > IN_CAP) {
        vmm__snap_fail(s, "%llu bytes of queued input (at most %u)", (unsigned long long)queued, IN_CAP);
        return;
    }
    for (uint64_t i = 0; i < queued && !vmm__snap_error(s); i++) {
        uint8_t b = vmm__snap_loading(s) ? 0 : p->in[(p->in_rd + i) % IN_CAP];
        vmm__snap_u8(s, &b);
        p->in[(p->in_rd + i) % IN_CAP] = b;
    }
    if (vmm__snap_loading(s))
        p->in_wr = p->in_rd + (size_t)queued;
    vmm__snap_u64(s, &nsched);
    if (vmm__snap_loading(s) && nsched > IN_CAP) {
        vmm__snap_fail(s, "%llu scheduled input bytes (at most %u)", (unsigned long long)nsched, IN_CAP);
        return;
    }
    for (uint64_t i = 0; i < nsched && !vmm__snap_error(s); i++) {
        uint64_t at = vmm__snap_loading(s) ? 0 : p->sched.at[i];
        uint8_t b = vmm__snap_loading(s) ? 0 : *(uint8_t *)vmm__timeq_item(&p->sched, (size_t)i);
        vmm__snap_u64(s, &at);
        vmm__snap_u8(s, &b);
        if (!vmm__snap_loading(s) || vmm__snap_error(s))
            continue;
        if (i && at < p->sched.at[p->sched.n - 1])
            vmm__snap_fail(s, "scheduled input out of time order");
        else if (vmm__timeq_add(&p->sched, at, &b, 1))
            vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory");
    }
}

uint64_t vmm__console_out_mark(struct vmm_console *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t m = c->guest_out;
    pthread_mutex_unlock(&c->lock);
    return m;
}

void vmm__console_out_diverged(struct vmm_console *c)
{
    pthread_mutex_lock(&c->lock);
    c->out_hw = c->guest_out; /* what the guest prints from here is new, even below what it printed before */
    pthread_mutex_unlock(&c->lock);
}

void vmm__console_out_rewind(struct vmm_console *c, uint64_t mark)
{
    pthread_mutex_lock(&c->lock);
    c->guest_out = mark;
    pthread_mutex_unlock(&c->lock);
}

int vmm__console_snap_input(struct vmm_console *c, struct vmm_snap *s)
{
    pthread_mutex_lock(&c->lock);
    for (unsigned i = 0; i < VMM_CONSOLE_PORTS && !vmm__snap_error(s); i++) {
        if (vmm__snap_loading(s)) {
            c->port[i].in_rd = c->port[i].in_wr = 0;
            vmm__timeq_drop(&c->port[i].sched, c->port[i].sched.n);
        }
        snap_port(&c->port[i], s);
    }
    pthread_mutex_unlock(&c->lock);
    return vmm__snap_error(s);
}

int vmm__console_snap(struct vmm_console *c, struct vmm_snap *s)
{
    pthread_mutex_lock(&c->lock);
    if (vmm__snap_loading(s)) { /* a new VM's console: empty, refilled from the file */
        for (unsigned i = 0; i < VMM_CONSOLE_PORTS; i++) {
            c->port[i].in_rd = c->port[i].in_wr = 0;
            vmm__timeq_drop(&c->port[i].sched, c->port[i].sched.n);
        }
    }
    snap_output(c, s);
    for (unsigned i = 0; i < VMM_CONSOLE_PORTS && !vmm__snap_error(s); i++)
        snap_port(&c->port[i], s);
    pthread_mutex_unlock(&c->lock);
    return vmm__snap_error(s);
}
