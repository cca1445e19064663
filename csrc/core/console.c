/* console.c - the serial console's host side: buffered output, queued input, waiting readers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    uint8_t *in;
    size_t in_rd, in_wr; /* ring of IN_CAP bytes, in_wr - in_rd queued */
    bool running;
    /* deterministic mode: input waiting for its virtual time, sorted by time */
    bool deterministic;
    struct vmm_timeq sched; /* of bytes */
    void (*input_cb)(void *opaque);
    void *input_opaque;
    struct vmm_vm *vm; /* for log lines */
};

int vmm__console_create(struct vmm_console **out, struct vmm_vm *vm)
{
    struct vmm_console *c = calloc(1, sizeof *c);
    pthread_condattr_t ca;

    if (!c || !(c->in = malloc(IN_CAP))) {
        free(c);
        return VMM_ENOMEM;
    }
    c->vm = vm;
    vmm__timeq_init(&c->sched, 1, IN_CAP);
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
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
    free(c->in);
    vmm__timeq_free(&c->sched);
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
    size_t n = c->out_cap + IN_CAP;
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

int vmm__console_getc(struct vmm_console *c)
{
    int ch = -1;

    pthread_mutex_lock(&c->lock);
    if (c->in_wr != c->in_rd)
        ch = c->in[c->in_rd++ % IN_CAP];
    pthread_mutex_unlock(&c->lock);
    return ch;
}

bool vmm__console_has_input(struct vmm_console *c)
{
    pthread_mutex_lock(&c->lock);
    bool has = c->in_wr != c->in_rd;
    pthread_mutex_unlock(&c->lock);
    return has;
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
        if (pthread_cond_timedwait(&c->cond, &c->lock, &dl) == ETIMEDOUT)
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

void vmm__console_set_input_cb(struct vmm_console *c, void (*cb)(void *opaque), void *opaque)
{
    pthread_mutex_lock(&c->lock);
    c->input_cb = cb;
    c->input_opaque = opaque;
    pthread_mutex_unlock(&c->lock);
}

void vmm__console_set_deterministic(struct vmm_console *c, bool on)
{
    c->deterministic = on;
}

/* Append to the input ring (lock held); true if it went from empty to non-empty. */
static bool push_input_locked(struct vmm_console *c, const uint8_t *p, size_t len)
{
    bool was_empty = c->in_wr == c->in_rd;
    for (size_t i = 0; i < len; i++)
        c->in[c->in_wr++ % IN_CAP] = p[i];
    return was_empty && len;
}

static void notify_input(struct vmm_console *c, bool became_ready)
{
    void (*cb)(void *) = c->input_cb;
    void *opaque = c->input_opaque;
    pthread_mutex_unlock(&c->lock);
    if (became_ready && cb)
        cb(opaque);
}

uint64_t vmm__console_advance(struct vmm_console *c, uint64_t now_ns)
{
    size_t n = 0;
    bool ready = false;
    uint64_t next;

    pthread_mutex_lock(&c->lock);
    while (n < c->sched.n && c->sched.at[n] <= now_ns && c->in_wr - c->in_rd < IN_CAP) {
        ready |= push_input_locked(c, vmm__timeq_item(&c->sched, n), 1);
        n++;
    }
    vmm__timeq_drop(&c->sched, n);
    next = vmm__timeq_next(&c->sched);
    notify_input(c, ready);
    return next;
}

VMM_EXPORT int vmm_console_write_at(vmm_vm *vm, uint64_t at_ns, const void *buf, size_t len)
{
    struct vmm_console *c;
    int rc = 0;
    bool ready = false;

    if (!vm || (!buf && len))
        return VMM_EINVAL;
    c = vm->console;
    pthread_mutex_lock(&c->lock);
    if (c->deterministic) {
        rc = vmm__timeq_add(&c->sched, at_ns, buf, len); /* kept until the clock reaches at_ns */
    } else if (len > IN_CAP - (c->in_wr - c->in_rd)) {
        rc = VMM_ENOMEM;
    } else {
        ready = push_input_locked(c, buf, len);
    }
    notify_input(c, ready);
    if (rc)
        return vmm__set_error(vm, rc, "serial input queue full (%u bytes)", IN_CAP);
    if (c->deterministic)
        vmm__wake_run_loop(vm); /* it delivers the input */
    return 0;
}

VMM_EXPORT int vmm_console_write(vmm_vm *vm, const void *buf, size_t len)
{
    return vmm_console_write_at(vm, 0, buf, len);
}
