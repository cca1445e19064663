/* console.c - the serial console's host side: buffered output, queued input, waiting readers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../host/host.h"
#include "timeq.h"
#include "vm.h"

#define OUT_CAP (64u << 20) /* keep at most this much unread output */
#define IN_CAP (1u << 20)   /* queued input bytes */

struct vmm_console {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    uint8_t *out;
    size_t out_len, out_cap, out_rd;
    uint64_t out_dropped;
    uint8_t *in;
    size_t in_rd, in_wr; /* ring of IN_CAP bytes, in_wr - in_rd queued */
    bool running;
    /* deterministic mode: input waiting for its virtual time, sorted by time */
    bool deterministic;
    struct vmm_timeq sched; /* of bytes */
    void (*input_cb)(void *opaque);
    void *input_opaque;
};

int vmm__console_create(struct vmm_console **out)
{
    struct vmm_console *c = calloc(1, sizeof *c);

    if (!c || !(c->in = malloc(IN_CAP))) {
        free(c);
        return VMM_ENOMEM;
    }
    vmm__timeq_init(&c->sched, 1, IN_CAP);
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
    free(c->in);
    vmm__timeq_free(&c->sched);
    free(c);
}

void vmm__console_put(struct vmm_console *c, const void *buf, size_t len)
{
    pthread_mutex_lock(&c->lock);
    if (c->out_rd && c->out_len + len > c->out_cap) { /* compact consumed bytes first */
        memmove(c->out, c->out + c->out_rd, c->out_len - c->out_rd);
        c->out_len -= c->out_rd;
        c->out_rd = 0;
    }
    if (c->out_len + len > OUT_CAP) { /* a reader that never reads: drop the oldest */
        size_t drop = c->out_len + len - OUT_CAP;
        if (drop > c->out_len)
            drop = c->out_len;
        memmove(c->out, c->out + drop, c->out_len - drop);
        c->out_len -= drop;
        c->out_dropped += drop;
    }
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p) {
            pthread_mutex_unlock(&c->lock);
            return; /* output is lost, the guest goes on */
        }
        c->out = p;
        c->out_cap = cap;
    }
    if (len <= OUT_CAP) {
        memcpy(c->out + c->out_len, buf, len);
        c->out_len += len;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
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
    while (c->out_len == c->out_rd && c->running && timeout_ns) {
        if (vmm__host_cond_timedwait(&c->cond, &c->lock, &dl) == ETIMEDOUT)
            break;
    }
    n = c->out_len - c->out_rd;
    if (n > len)
        n = len;
    if (n) {
        memcpy(buf, c->out + c->out_rd, n);
        c->out_rd += n;
        if (c->out_rd == c->out_len)
            c->out_rd = c->out_len = 0;
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
