/* run_wait.c - the run loop's waits: every vCPU idle (one thread), a vCPU thread's halt polling and sleep. */
#include <errno.h>

#include "../arm/arm.h"
#include "../host/host.h"
#include "run_internal.h"

/* Real time: spin until the clock reaches `deadline`, a wake-up (seen_seq moved), a stop or the timeout. */
static void poll_until(struct vmm_vm *vm, uint64_t deadline, uint64_t seen_seq, struct vmm_vcpu *vcpu)
{
    vmm__count(vm, &vm->stats.deadline_polls);
    /* a vCPU thread polls awake, so a line raised for it bumps no wake_seq (irq.c): it watches its line too */
    while (vmm__clock_ns(vm, NULL) < deadline && atomic_load(&vm->wake_seq) == seen_seq && !interrupted(vm) &&
           !(vcpu && atomic_load(&vcpu->irq)))
        vmm__host_cpu_relax();
}

/*
 * Every vCPU is in WFI (or off): sleep until an interrupt line rises, the
 * next timer deadline (real time), scheduled input or a stop time
 * (deterministic), a stop or the timeout. A vmm__wake_run_loop() since the
 * caller read wake_seq (seen_seq) returns at once. The idle guest costs no
 * host CPU.
 */
void vmm__run_wait_idle(struct vmm_vm *vm, uint64_t seen_seq)
{
    pthread_mutex_lock(&vm->lock);
    while (!interrupted(vm) && !vmm__run_any_runnable(vm) && atomic_load(&vm->wake_seq) == seen_seq) {
        uint64_t nd = atomic_load(&vm->next_deadline_ns);
        if (vm->deterministic || nd == UINT64_MAX) {
            vmm__count(vm, &vm->stats.wait_sleeps);
            pthread_cond_wait(&vm->cond, &vm->lock);
            if (vm->deterministic)
                break; /* input may have been scheduled: the loop looks */
        } else if (nd <= vmm__clock_ns(vm, NULL) + HALT_POLL_NS) {
            pthread_mutex_unlock(&vm->lock);
            poll_until(vm, nd, seen_seq, NULL);
            return;
        } else {
            struct timespec dl = ns_to_abs(vm->clock_base_ns, nd);
            vmm__count(vm, &vm->stats.wait_sleeps);
            if (vmm__host_cond_timedwait(&vm->cond, &vm->lock, &dl) == ETIMEDOUT)
                break;
        }
    }
    pthread_mutex_unlock(&vm->lock);
}

/*
 * Halt polling (thread per vCPU): a vCPU entering WFI first polls for its line for up to halt_poll_ns, so
 * that an IPI from a vCPU on another thread costs neither the sender's futex wake-up nor the target's trip
 * through the host scheduler (bench/irq_latency.py's ipi_wfi: 48 us a round trip with both asleep, 13 us
 * for QEMU TCG). The window adapts as KVM's does (Documentation/virt/kvm/halt-polling.rst): it starts at
 * HALT_POLL_START_NS when a sleep ended within HALT_POLL_MAX_NS, doubles while wake-ups come later than it
 * and still within the maximum, and falls to 0 after a sleep longer than the maximum. An idle guest's
 * periodic tick (ms away) therefore sleeps without polling: idle stays ~0 % of a core (bench/idle.py).
 */
#define HALT_POLL_START_NS 10000ULL
#define HALT_POLL_MAX_NS 200000ULL

/*
 * Anything that ends a vCPU's wait, read without vm->lock (the locked loop decides): its own line and
 * deadline, the run's end, a debugger's hold. Not wake_seq: on vCPU threads it moves only for a wake-up of
 * another vCPU's sleeping thread (vmm__wake_vcpu), for PSCI CPU_ON of an off vCPU (which does not poll) or
 * with a hold (dbg_halt, read here), so a poll that ended on it only polled again (tests/test_run_waits.py:
 * 294-300 extra polls for 300 such wake-ups on a quiet host).
 */
static bool wait_over(struct run_ctx *rc, struct vmm_vcpu *vcpu, uint64_t deadline, uint64_t now)
{
    struct vmm_vm *vm = rc->vm;
    return atomic_load(&vcpu->irq) || now >= deadline || rc->done || interrupted(vm) || atomic_load(&vm->dbg_halt);
}

/* Poll for up to the vCPU's window (but not past its own deadline); true if something ended the wait. A miss polled
 * its whole window: that is the host CPU it cost (halt_poll_miss_ns). */
static bool halt_poll(struct run_ctx *rc, struct vmm_vcpu *vcpu, uint64_t start, uint64_t deadline)
{
    struct vmm_vm *vm = rc->vm;
    uint64_t end = start + vcpu->halt_poll_ns;
    uint64_t now = start;

    while (now < end) {
        if (wait_over(rc, vcpu, deadline, now))
            return true;
        vmm__host_cpu_relax();
        now = vmm__clock_ns(vm, NULL);
    }
    vmm__count_n(vm, &vm->stats.halt_poll_miss_ns, vcpu->halt_poll_ns);
    return false;
}

/* After a wait of `waited` ns (KVM's rule, shrinking to 0). */
static void halt_poll_adapt(struct vmm_vcpu *vcpu, uint64_t waited)
{
    if (waited > HALT_POLL_MAX_NS)
        vcpu->halt_poll_ns = 0;
    else if (waited > vcpu->halt_poll_ns)
        vcpu->halt_poll_ns = vcpu->halt_poll_ns ? vcpu->halt_poll_ns * 2 : HALT_POLL_START_NS;
    if (vcpu->halt_poll_ns > HALT_POLL_MAX_NS)
        vcpu->halt_poll_ns = HALT_POLL_MAX_NS;
}

/*
 * Sleep until the vCPU may run, its own timer deadline passes or the run ends. A deadline less than
 * HALT_POLL_NS away is polled for, as the one-thread loop does (a futex wake-up on a loaded host comes
 * tens of µs late). A vCPU in WFI polls first (halt_poll). While it sleeps its `awake` is false, so a line
 * raised for it wakes its own `wake` condition (irq.c); it is cleared under vm->lock before the locked
 * loop reads the line.
 */
void vmm__run_vcpu_wait(struct run_ctx *rc, struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = rc->vm;
    bool polls = vcpu->on && vcpu->idle; /* in WFI (the threaded loop is real time) */
    uint64_t start = polls ? vmm__clock_ns(vm, NULL) : 0;

    if (polls && vcpu->halt_poll_ns) {
        vmm__count(vm, &vm->stats.halt_polls);
        if (halt_poll(rc, vcpu, start, rc->own_timers ? atomic_load(&vcpu->deadline_ns) : UINT64_MAX)) {
            vmm__count(vm, &vm->stats.halt_poll_hits);
            halt_poll_adapt(vcpu, vmm__clock_ns(vm, NULL) - start);
            return;
        }
    }
    pthread_mutex_lock(&vm->lock);
    atomic_store(&vcpu->awake, false);
    vcpu->waiting = true;
    while (!rc->done && !interrupted(vm) && !vmm__run_thread_runnable(rc, vcpu) && !atomic_load(&vm->dbg_halt)) {
        uint64_t d = rc->own_timers && vcpu->on ? atomic_load(&vcpu->deadline_ns) : UINT64_MAX;
        if (d == UINT64_MAX) {
            vmm__count(vm, &vm->stats.wait_sleeps);
            pthread_cond_wait(&vcpu->wake, &vm->lock);
        } else if (d <= vmm__clock_ns(vm, NULL) + HALT_POLL_NS) {
            uint64_t seq = atomic_load(&vm->wake_seq);
            vcpu->waiting = false;
            atomic_store(&vcpu->awake, true);
            pthread_mutex_unlock(&vm->lock);
            poll_until(vm, d, seq, vcpu);
            goto out;
        } else {
            struct timespec dl = ns_to_abs(vm->clock_base_ns, d);
            vmm__count(vm, &vm->stats.wait_sleeps);
            if (vmm__host_cond_timedwait(&vcpu->wake, &vm->lock, &dl) == ETIMEDOUT)
                break;
        }
    }
    vcpu->waiting = false;
    atomic_store(&vcpu->awake, true);
    pthread_mutex_unlock(&vm->lock);
out:
    if (polls)
        halt_poll_adapt(vcpu, vmm__clock_ns(vm, NULL) - start);
}
