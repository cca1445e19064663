/* console.c - the serial console's host side: buffered output, queued input, waiting readers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
};

int vmm__console_create(struct vmm_console **out)
{
    struct vmm_console *c = calloc(1, sizeof *c);
    pthread_condattr_t ca;

    if (!c || !(c->in = malloc(IN_CAP))) {
        free(c);
        return VMM_ENOMEM;
    }
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
        if (pthread_cond_timedwait(&c->cond, &c->lock, &dl) == ETIMEDOUT)
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

VMM_EXPORT int vmm_console_write(vmm_vm *vm, const void *buf, size_t len)
{
    struct vmm_console *c;
    const uint8_t *p = buf;

    if (!vm || (!buf && len))
        return VMM_EINVAL;
    c = vm->console;
    pthread_mutex_lock(&c->lock);
    if (len > IN_CAP - (c->in_wr - c->in_rd)) {
        pthread_mutex_unlock(&c->lock);
        return vmm__set_error(vm, VMM_ENOMEM, "serial input queue full (%u bytes)", IN_CAP);
    }
    for (size_t i = 0; i < len; i++)
        c->in[c->in_wr++ % IN_CAP] = p[i];
    pthread_mutex_unlock(&c->lock);
    return 0;
}
