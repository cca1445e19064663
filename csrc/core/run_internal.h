/* run_internal.h - what the run loop (run.c) shares with its waits (run_wait.c); nothing else includes it. */
#ifndef VMM_RUN_INTERNAL_H
#define VMM_RUN_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "vm.h"

struct run_ctx {
    struct vmm_vm *vm;
    struct vmm_run_result res;
    atomic_bool done;
    bool threaded;   /* VMM_CAP_VCPU_THREADS: vCPU threads may end the run at once, vm->lock orders them */
    bool own_timers; /* !VMM_CAP_KERNEL_TIMERS: the loop drives the timer PPIs (timer.c) */
    bool own_psci;   /* !VMM_CAP_KERNEL_PSCI: vcpu->on is ours (CPU_ON/CPU_OFF through psci.c) */
};

/*
 * A deadline this close is polled for, not slept for: a futex wake-up comes
 * tens of µs late on a loaded host, longer than the wait itself (KVM polls a
 * halted vCPU for the same reason). Only a deadline already this close when
 * the wait begins is polled: an idle guest's periodic tick (ms away) sleeps.
 */
#define HALT_POLL_NS 50000ULL

/* An absolute CLOCK_MONOTONIC time; ns saturates at the horizon, so the sum cannot wrap into the past. */
static inline struct timespec ns_to_abs(uint64_t clock_ns_base, uint64_t ns)
{
    uint64_t abs = clock_ns_base + (ns < VMM_CLOCK_HORIZON_NS ? ns : VMM_CLOCK_HORIZON_NS);
    return (struct timespec){ .tv_sec = (time_t)(abs / 1000000000ULL), .tv_nsec = (long)(abs % 1000000000ULL) };
}

/* A stop was requested or the run's timeout passed. */
static inline bool interrupted(struct vmm_vm *vm)
{
    return atomic_load(&vm->stop_requested) || atomic_load(&vm->timed_out);
}

/* run.c: whether any vCPU can run now (an idle one whose line is up leaves WFI); a vCPU thread's own test. */
bool vmm__run_any_runnable(struct vmm_vm *vm);
bool vmm__run_thread_runnable(struct run_ctx *rc, struct vmm_vcpu *vcpu);

/* run_wait.c: the one-thread loop's sleep while every vCPU waits; a vCPU thread's sleep (halt polling first). */
void vmm__run_wait_idle(struct vmm_vm *vm, uint64_t seen_seq);
void vmm__run_vcpu_wait(struct run_ctx *rc, struct vmm_vcpu *vcpu);

#endif
