/* log.c - error messages, the per-VM log callback and the guest-error rate limit. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vm.h"

#define GERR_WINDOW_NS 1000000000ULL
#define GERR_PER_WINDOW 10

uint64_t vmm__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int vmm__set_error(struct vmm_vm *vm, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vm->errmsg, sizeof vm->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

static void vlog(struct vmm_vm *vm, int level, const char *subsys, const char *prefix, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n = strlen(prefix);

    if (!vm->log_fn || level > vm->log_level)
        return;
    memcpy(msg, prefix, n);
    vsnprintf(msg + n, sizeof msg - n, fmt, ap);
    vm->log_fn(vm->log_opaque, level, subsys, msg);
}

void vmm__log(struct vmm_vm *vm, int level, const char *subsys, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(vm, level, subsys, "", fmt, ap);
    va_end(ap);
}

void vmm__guest_error(struct vmm_vm *vm, const char *subsys, const char *fmt, ...)
{
    uint64_t now = vmm__now_ns();
    unsigned suppressed = 0;
    bool log_it;
    va_list ap;

    /* a leaf lock: vCPU threads (VMM_CAP_VCPU_THREADS) and device threads may report at once */
    pthread_mutex_lock(&vm->gerr_lock);
    __atomic_fetch_add(&vm->stats.guest_errors, 1, __ATOMIC_RELAXED); /* vmm_get_stats reads it unlocked */
    if (now - vm->gerr_window_start >= GERR_WINDOW_NS) {
        suppressed = vm->gerr_suppressed;
        vm->gerr_window_start = now;
        vm->gerr_in_window = 0;
        vm->gerr_suppressed = 0;
    }
    log_it = vm->gerr_in_window < GERR_PER_WINDOW;
    if (log_it)
        vm->gerr_in_window++;
    else
        vm->gerr_suppressed++;
    pthread_mutex_unlock(&vm->gerr_lock);

    if (suppressed)
        vmm__log(vm, VMM_LOG_WARN, subsys, "guest error: %u more suppressed", suppressed);
    if (!log_it)
        return;
    va_start(ap, fmt);
    vlog(vm, VMM_LOG_WARN, subsys, "guest error: ", fmt, ap);
    va_end(ap);
}
