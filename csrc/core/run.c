/* run.c - the one vCPU loop: runs vCPUs round-robin, dispatches normalized exits, stop and timeout. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "run.h"
#include "run_internal.h"
#include "../arm/arm.h"
#include "../host/host.h"
#include "board.h"
#include "debug.h"
#include "gdb_reverse.h"
#include "vm.h"

int vmm__prepare_locked(struct vmm_vm *vm);

static void kick_all(struct vmm_vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++)
        vm->ops->kick(&vm->vcpus[i]);
}

/* The first ending wins; with vCPU threads, the others are kicked out of the guest. */
static void end_run(struct run_ctx *rc, int reason, int status)
{
    struct vmm_vm *vm = rc->vm;

    if (rc->done)
        return;
    if (rc->threaded)
        pthread_mutex_lock(&vm->lock);
    if (!rc->done) {
        rc->res.reason = reason;
        rc->res.exit_status = status;
        rc->done = true;
    }
    if (rc->threaded) {
        vmm__vm_broadcast(vm);
        pthread_mutex_unlock(&vm->lock);
        kick_all(vm);
    }
}

#define SLICE_INSNS 50000ULL /* real time, SMP: instructions per round-robin slice */

/*
 * The clock thread: ends the run when its timeout passes and, in real-time
 * mode, kicks the vCPUs when the earliest timer deadline passes so that the
 * loop raises the timer interrupt. It sleeps on vm->cond; timer register
 * writes that bring the deadline closer broadcast it, and so does an update
 * after a slice or an exit that moves a deadline (timer.c deadline_moved: the
 * one after a fired timer's). With vCPU threads and
 * our timers it watches each vCPU's own deadline (vcpu->deadline_ns) and
 * kicks only that vCPU: its thread then updates its own timers.
 */
struct clock_thread {
    struct vmm_vm *vm;
    bool has_timeout;
    struct timespec timeout;
    bool finished;
    pthread_t thread;
};

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* The earliest deadline among the vCPUs' own that was not kicked yet (vCPU threads, our timers). */
static uint64_t vcpu_deadlines(struct vmm_vm *vm, const uint64_t *fired)
{
    uint64_t nd = UINT64_MAX;
    for (unsigned i = 0; i < vm->ncpus; i++) {
        uint64_t d = atomic_load(&vm->vcpus[i].deadline_ns);
        if (d != fired[i] && d < nd)
            nd = d;
    }
    return nd;
}

/* Kick the vCPUs whose own deadline has passed (once per deadline). */
static void kick_expired(struct vmm_vm *vm, uint64_t *fired)
{
    uint64_t now = vmm__clock_ns(vm, NULL);
    for (unsigned i = 0; i < vm->ncpus; i++) {
        uint64_t d = atomic_load(&vm->vcpus[i].deadline_ns);
        if (d != fired[i] && d <= now) {
            fired[i] = d;
            vm->ops->kick(&vm->vcpus[i]);
        }
    }
}

/*
 * Whether a vCPU whose own deadline is nd executes guest code (vCPU threads): only the clock thread's kick
 * reaches it then. A vCPU in WFI waits for its own deadline itself (vcpu_wait). `idle` is its thread's; a
 * stale read costs one poll, or one sleep (the kick then comes as late as before).
 */
static bool deadline_vcpu_runs(struct vmm_vm *vm, const uint64_t *fired, uint64_t nd)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vmm_vcpu *v = &vm->vcpus[i];
        if (atomic_load(&v->deadline_ns) == nd && fired[i] != nd && atomic_load(&v->awake) && !v->idle)
            return true;
    }
    return false;
}

static void *clock_main(void *arg)
{
    struct clock_thread *w = arg;
    struct vmm_vm *vm = w->vm;
    uint64_t fired = UINT64_MAX, vcpu_fired[VMM_MAX_CPUS];
    bool per_vcpu = vmm__has_cap(vm->ops, VMM_CAP_VCPU_THREADS) && !vmm__has_cap(vm->ops, VMM_CAP_KERNEL_TIMERS);

    for (unsigned i = 0; i < VMM_MAX_CPUS; i++)
        vcpu_fired[i] = UINT64_MAX;
    vmm__host_thread_name("vmm-clock");
    vmm__host_timer_slack(1); /* deadlines, not "about then" (Linux's default slack is 50 us) */

    pthread_mutex_lock(&vm->lock);
    while (!w->finished) {
        struct timespec dl = w->timeout;
        bool have = w->has_timeout, is_timer = false;
        uint64_t nd = per_vcpu ? vcpu_deadlines(vm, vcpu_fired) : atomic_load(&vm->next_deadline_ns);
        /* a debugger holding the clock (gdb_hold.c): no deadline passes until clock_go, which broadcasts */
        bool held = atomic_load(&vm->clock_held) != 0;
        if (!vm->deterministic && !held && nd != UINT64_MAX && nd != fired) {
            struct timespec t = ns_to_abs(vm->clock_base_ns, nd);
            if (!have || ts_before(&t, &dl)) {
                dl = t;
                have = is_timer = true;
            }
        }
        int r;
        if (is_timer && nd <= vmm__clock_ns(vm, NULL) + HALT_POLL_NS &&
            (!per_vcpu || deadline_vcpu_runs(vm, vcpu_fired, nd))) {
            /*
             * A near deadline is polled for (bounded by HALT_POLL_NS), then handled as if slept for. With vCPU
             * threads, only for a vCPU in guest code: sleeping here made bench/irq_latency.py's timer_spin (a
             * vCPU spinning with IRQs unmasked) wait for this thread's futex wake-up, 0.47x QEMU's latency on
             * one thread and 0.82-1.31x on a thread per vCPU.
             */
            vmm__count(vm, &vm->stats.clock_polls);
            pthread_mutex_unlock(&vm->lock);
            while (vmm__clock_ns(vm, NULL) < nd && !atomic_load(&vm->clock_held))
                vmm__host_cpu_relax();
            pthread_mutex_lock(&vm->lock);
            /* passed, or cut short by a debugger's hold (clock_go broadcasts, the loop looks again): taken as
             * passed, one thread would mark the deadline served and never kick for it */
            r = vmm__clock_ns(vm, NULL) >= nd ? ETIMEDOUT : 0;
        } else {
            r = have ? vmm__host_cond_timedwait(&vm->cond, &vm->lock, &dl) : pthread_cond_wait(&vm->cond, &vm->lock);
        }
        if (r != ETIMEDOUT || w->finished)
            continue;
        if (is_timer) {
            if (per_vcpu) {
                kick_expired(vm, vcpu_fired);
                continue;
            }
            fired = nd;
            kick_all(vm);
            continue;
        }
        if (!w->has_timeout)
            continue;
        atomic_store(&vm->timed_out, 1);
        kick_all(vm);
        vmm__vm_broadcast(vm);
        break;
    }
    pthread_mutex_unlock(&vm->lock);
    return NULL;
}

/* An idle vCPU whose IRQ line is up leaves WFI. */
static bool runnable(struct vmm_vcpu *v)
{
    if (v->idle && atomic_load(&v->irq))
        v->idle = false;
    return v->on && !v->idle && !v->dbg_frozen;
}

bool vmm__others_runnable(struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = vcpu->vm;
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vmm_vcpu *v = &vm->vcpus[i];
        if (v != vcpu && v->on && (!v->idle || atomic_load(&v->irq)))
            return true;
    }
    return false;
}

bool vmm__run_any_runnable(struct vmm_vm *vm)
{
    bool any = false;
    for (unsigned i = 0; i < vm->ncpus; i++)
        any |= runnable(&vm->vcpus[i]);
    return any;
}

/* Returns true if the vCPU is idle (in WFI). */
static bool run_one(struct run_ctx *rc, struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = rc->vm;
    const struct vmm_backend_ops *ops = vm->ops;
    struct vmm_exit exit;

    memset(&exit, 0, sizeof exit);
    if (vm->gdb) { /* a debugger may hold the VM here, and keep this vCPU stopped while another steps */
        vmm__gdb_hold(vm, vcpu);
        if (vcpu->dbg_frozen || (vm->gdb_rev && vmm__rev_unwinding(vm)))
            return false; /* frozen, or a reverse move begins: it rewinds at the top of the round */
    }
    if (vcpu->reset_pending) { /* PSCI CPU_ON: the reset runs here, on the vCPU's own thread */
        vcpu->reset_pending = false;
        if (ops->vcpu_reset(vcpu, vcpu->reset_entry, vcpu->reset_x0)) {
            end_run(rc, VMM_RUN_HOST_ERROR, 0);
            return false;
        }
    }
    if (!rc->threaded)
        vm->current = vcpu;
    vmm__count(vm, &vm->stats.vcpu_runs);
    ops->vcpu_run(vcpu, &exit);
    if (!rc->threaded)
        vm->current = NULL;
    if (vm->gdb)
        vmm__gdb_after_run(vcpu, &exit); /* a breakpoint, watchpoint or step: held there */
    switch (exit.kind) {
    case VMM_EXIT_NONE:
    case VMM_EXIT_DEBUG:
        break;
    case VMM_EXIT_MMIO:
        vmm__bus_access(vm, exit.mmio.gpa, exit.mmio.size, exit.mmio.is_write, &exit.mmio.data);
        if (ops->complete_mmio)
            ops->complete_mmio(vcpu, exit.mmio.data);
        break;
    case VMM_EXIT_WFI:
        vmm__count(vm, &vm->stats.wfi_exits);
        vcpu->idle = true;
        return true;
    case VMM_EXIT_SHUTDOWN:
        end_run(rc, VMM_RUN_POWEROFF, exit.status);
        break;
    case VMM_EXIT_RESET:
        end_run(rc, VMM_RUN_RESET, 0);
        break;
    case VMM_EXIT_CPU_OFF:
        pthread_mutex_lock(&vm->lock); /* against a CPU_ON from another vCPU thread */
        vcpu->on = false;
        vcpu->idle = false;
        pthread_mutex_unlock(&vm->lock);
        break;
    case VMM_EXIT_GUEST_ERROR:
        end_run(rc, VMM_RUN_GUEST_ERROR, 0);
        break;
    case VMM_EXIT_HOST_ERROR:
        end_run(rc, VMM_RUN_HOST_ERROR, 0);
        break;
    }
    return false;
}

static unsigned count_on(struct vmm_vm *vm)
{
    unsigned n = 0;
    for (unsigned i = 0; i < vm->ncpus; i++)
        n += vm->vcpus[i].on;
    return n;
}

/* Decide whether the run is over; false to go on. */
static bool check_end(struct run_ctx *rc)
{
    struct vmm_vm *vm = rc->vm;

    if (rc->done)
        return true;
    if (atomic_load(&vm->stop_requested))
        end_run(rc, VMM_RUN_STOPPED, 0);
    else if (atomic_load(&vm->timed_out))
        end_run(rc, VMM_RUN_TIMEOUT, 0);
    else if (rc->own_psci && !count_on(vm)) { /* a KERNEL_PSCI backend powers vCPUs on and off itself */
        vmm__set_error(vm, VMM_ESTATE, "every vCPU is off");
        end_run(rc, VMM_RUN_GUEST_ERROR, 0);
    }
    return rc->done;
}

/* Real time: round-robin slices on this thread; timers follow the host clock. */
static void run_loop_realtime(struct run_ctx *rc)
{
    struct vmm_vm *vm = rc->vm;

    vmm__timers_update(vm);
    while (!check_end(rc)) {
        bool ran = false;
        if (vm->gdb)
            vmm__gdb_hold(vm, NULL); /* every vCPU idle: a debugger's hold is taken here */
        bool smp = vm->ncpus > 1;    /* a CPU_ON may come at any time */
        for (unsigned i = 0; i < vm->ncpus && !rc->done; i++) {
            struct vmm_vcpu *vcpu = &vm->vcpus[i];
            if (!runnable(vcpu))
                continue;
            vcpu->insn_limit = smp ? vcpu->insns + SLICE_INSNS : UINT64_MAX;
            run_one(rc, vcpu);
            ran = true;
            vmm__timers_update(vm);
        }
        if (!ran && !rc->done && !interrupted(vm)) {
            vmm__run_wait_idle(vm, atomic_load(&vm->wake_seq));
            vmm__timers_update(vm);
        }
    }
}

/*
 * VMM_CAP_VCPU_THREADS: a thread per vCPU runs it and serves its exits
 * (run_one, the same dispatch as the other loops); this thread waits for
 * the end of the run and then collects them.
 *
 * With our irqchip, timers and PSCI (a Hypervisor.framework backend; here
 * "soft-threaded") each vCPU thread also does what the one-thread loop does
 * for all: after every exit it updates its own timers (vmm__timers_update_vcpu:
 * a vCPU's timer state is only touched on its thread), and a vCPU that is off
 * or in WFI sleeps on vm->cond until it is runnable (its IRQ line rose: the
 * GIC's report broadcasts; PSCI CPU_ON from another thread powered it on:
 * psci.c broadcasts), its own timer deadline passes, or the run ends (stop,
 * timeout and end_run broadcast). A vCPU executing guest code past its
 * deadline is kicked by the clock thread. Nothing is called with vm->lock
 * held (the GIC is above it in the lock order).
 */
struct vcpu_thread {
    struct run_ctx *rc;
    struct vmm_vcpu *vcpu;
    pthread_t thread;
};

bool vmm__run_thread_runnable(struct run_ctx *rc, struct vmm_vcpu *vcpu)
{
    return !rc->own_psci || runnable(vcpu); /* the kernel keeps an off vCPU inside vcpu_run */
}

/* The vCPU this thread runs (threaded loop), for vmm__on_vcpu_thread. */
static __thread struct vmm_vcpu *tls_vcpu;

bool vmm__on_vcpu_thread(const struct vmm_vcpu *vcpu)
{
    return tls_vcpu == vcpu;
}

static void *vcpu_thread_main(void *arg)
{
    struct vcpu_thread *t = arg;
    char name[16];
    sigset_t all;

    tls_vcpu = t->vcpu;
    /* the application's signals are for its own threads (a backend unblocks what it uses to kick) */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    snprintf(name, sizeof name, "vmm-vcpu%u", t->vcpu->id);
    vmm__host_thread_name(name);
    t->vcpu->insn_limit = UINT64_MAX;
    atomic_store(&t->vcpu->awake, true);
    if (t->rc->own_timers)
        vmm__timers_update_vcpu(t->vcpu);
    while (!check_end(t->rc)) {
        if (t->rc->vm->gdb) /* all-stop: an idle or off vCPU's thread parks too (gdbstub.c) */
            vmm__gdb_hold(t->rc->vm, t->vcpu);
        if (!vmm__run_thread_runnable(t->rc, t->vcpu))
            vmm__run_vcpu_wait(t->rc, t->vcpu);
        else
            run_one(t->rc, t->vcpu);
        if (t->rc->own_timers)
            vmm__timers_update_vcpu(t->vcpu);
    }
    atomic_store(&t->vcpu->awake, false); /* the line's wake-up is the loop's again */
    if (t->rc->vm->ops->vcpu_leave)
        t->rc->vm->ops->vcpu_leave(t->vcpu);
    return NULL;
}

static void run_loop_threaded(struct run_ctx *rc)
{
    struct vmm_vm *vm = rc->vm;
    struct vcpu_thread threads[VMM_MAX_CPUS];
    unsigned started = 0;

    for (; started < vm->ncpus; started++) {
        threads[started] = (struct vcpu_thread){ .rc = rc, .vcpu = &vm->vcpus[started] };
        int err = pthread_create(&threads[started].thread, NULL, vcpu_thread_main, &threads[started]);
        if (err) {
            vmm__set_error(vm, VMM_ENOMEM, "cannot start a thread for vCPU %u: %s", started, strerror(err));
            end_run(rc, VMM_RUN_HOST_ERROR, 0);
            break;
        }
    }
    pthread_mutex_lock(&vm->lock);
    while (!rc->done && !interrupted(vm))
        pthread_cond_wait(&vm->cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
    check_end(rc); /* a stop or the timeout: record it before the threads see it */
    kick_all(vm);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i].thread, NULL);
}

/*
 * Parking (deterministic mode): the host asks the loop to stand still at the first round boundary where a
 * device's progress counter (a display's frame count) reaches a target, to schedule input at an exact
 * virtual time. A round boundary is a point where nothing of the guest is half-done, so parking changes
 * nothing the guest executes. The counter is read before vm->lock is taken (its device lock nests outside
 * nothing of ours): only this thread advances it.
 */
static void park_point(struct vmm_vm *vm)
{
    struct vmm_park *p = &vm->park;

    if (!p->progress)
        return;
    uint64_t n = p->progress(p->opaque);
    pthread_mutex_lock(&vm->lock);
    if (p->target && n >= p->target) {
        p->target = 0;
        p->parked = true;
        vmm__vm_broadcast(vm);
        while (p->parked && !interrupted(vm))
            pthread_cond_wait(&vm->cond, &vm->lock);
        p->parked = false;
    }
    pthread_mutex_unlock(&vm->lock);
}

void vmm__park_source(struct vmm_vm *vm, uint64_t (*progress)(void *opaque), void *opaque)
{
    vm->park.progress = progress;
    vm->park.opaque = opaque;
}

int vmm__park_arm(struct vmm_vm *vm, uint64_t target)
{
    if (!vm->deterministic)
        return vmm__set_error(vm, VMM_ESTATE, "pausing at a frame needs deterministic mode");
    pthread_mutex_lock(&vm->lock);
    vm->park.target = target;
    pthread_mutex_unlock(&vm->lock);
    vmm__wake_run_loop(vm); /* an idle deterministic loop looks again: the target may be reached */
    return 0;
}

int vmm__park_wait(struct vmm_vm *vm, uint64_t timeout_ns)
{
    struct timespec dl = ns_to_abs(vmm__now_ns(), timeout_ns); /* (capped at 2^62 ns: ~146 years) */
    bool timed_out = false;
    int rc;

    pthread_mutex_lock(&vm->lock);
    for (;;) { /* a pause reached as the wait times out still counts */
        if (vm->park.parked) {
            rc = 0;
            break;
        }
        if (!vm->park.running) {
            rc = VMM_EEOF;
            break;
        }
        if (timed_out) {
            rc = 1;
            break;
        }
        timed_out = vmm__host_cond_timedwait(&vm->cond, &vm->lock, &dl) == ETIMEDOUT;
    }
    pthread_mutex_unlock(&vm->lock);
    return rc == VMM_EEOF ? vmm__set_error(vm, VMM_EEOF, "the VM is not running: it cannot reach the pause") : rc;
}

void vmm__park_release(struct vmm_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    vm->park.parked = false;
    vmm__vm_broadcast(vm);
    pthread_mutex_unlock(&vm->lock);
}

/*
 * How far the clock moves after a round that ran: a whole quantum while a vCPU can still run; once every
 * vCPU has stopped in WFI (or is off) before the quantum's end, only as far as the one that ran longest,
 * so that the idle jump that follows lands exactly on the next deadline. (Moving a whole quantum made a
 * timer that expired in the idle rest of the round fire up to a quantum late: bench_irq's timer_wfi
 * measured 47-80 us of virtual time from deadline to handler.)
 */
static uint64_t round_length(struct vmm_vm *vm, uint64_t quantum)
{
    uint64_t used = 0;

    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vmm_vcpu *v = &vm->vcpus[i];
        if (runnable(v))
            return quantum;
        if (v->insns - v->quantum_start > used)
            used = v->insns - v->quantum_start;
    }
    return used < quantum ? used : quantum;
}

/*
 * A run that ends partway through a round (timeout, stop request, poweroff) keeps that round's
 * instructions on the clock: it moves on as far as the vCPU that ran longest, and every vCPU starts its
 * next quantum there. (Dropped, as before, the next round reset quantum_start with vtime_ns unmoved, and a
 * vCPU's CNTVCT went back by up to a quantum at the next run or vmm_clock_advance: ~3,500 ticks seen.)
 */
static void close_partial_round(struct vmm_vm *vm)
{
    uint64_t used = 0;

    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vmm_vcpu *v = &vm->vcpus[i];
        if (v->insns - v->quantum_start > used)
            used = v->insns - v->quantum_start;
    }
    vmm__vtime_advance(vm, used);
}

/*
 * Deterministic: each round gives every runnable vCPU a quantum of
 * VMM_QUANTUM_INSNS instructions, in vCPU order, all starting at the same
 * virtual time; then the clock moves on by one quantum (less when all stopped early:
 * round_length). A vCPU whose last block ran past the quantum's end starts the next one that far
 * in, with that much less of it (vmm__vtime_advance). Timer deadlines cut
 * a vCPU's budget so it stops exactly there; serial and keyboard/tablet input enter between
 * rounds; when every vCPU waits the clock jumps to the next event. A vmm_stop_at() time
 * shortens the round that would pass it and ends the run with VMM_RUN_STOPPED at the
 * boundary where the clock is exactly there (an idle guest jumps there).
 */
static void run_loop_deterministic(struct run_ctx *rc)
{
    struct vmm_vm *vm = rc->vm;

    while (!check_end(rc)) {
        bool ran = false;
        if (vm->gdb)
            vmm__gdb_hold(vm, NULL);
        if (vm->gdb_rev)
            vmm__rev_round(vm);                    /* reverse execution: checkpoints, rewinds (gdb_reverse.c) */
        park_point(vm);                            /* a host pause: it schedules input at vtime_ns */
        uint64_t seq = atomic_load(&vm->wake_seq); /* what is scheduled after this wakes the wait below */
        uint64_t stop_at = atomic_load(&vm->stop_at_ns);
        if (vm->vtime_ns >= stop_at) { /* vmm_stop_at(): before the input due now enters */
            atomic_compare_exchange_strong(&vm->stop_at_ns, &stop_at, UINT64_MAX);
            end_run(rc, VMM_RUN_STOPPED, 0);
            break;
        }
        uint64_t quantum = stop_at - vm->vtime_ns < VMM_QUANTUM_INSNS ? stop_at - vm->vtime_ns : VMM_QUANTUM_INSNS;
        uint64_t next_input = vmm__board_advance(vm, vm->vtime_ns); /* serial, keyboard, tablet, ... */
        vmm__timers_update(vm);
        for (unsigned i = 0; i < vm->ncpus && !rc->done; i++) {
            struct vmm_vcpu *vcpu = &vm->vcpus[i];
            vcpu->yielded = false;
            while (!rc->done && !interrupted(vm) && runnable(vcpu) && !vcpu->yielded &&
                   vcpu->insns - vcpu->quantum_start < quantum && !(vm->gdb_rev && vmm__rev_unwinding(vm))) {
                vcpu->insn_limit = vcpu->quantum_start + quantum;
                vmm__timers_update(vm); /* may cut the budget to a deadline */
                if (vm->gdb_rev)
                    vmm__rev_slice(vcpu); /* a replay's stop at an exact instruction */
                run_one(rc, vcpu);
                ran = true;
            }
            /* its lead (a block past the last quantum's end) covers this quantum: the round still passes */
            ran |= vcpu->insns - vcpu->quantum_start >= quantum && runnable(vcpu);
        }
        if (vm->gdb_rev && vmm__rev_unwinding(vm))
            continue; /* a rewind abandons the round: the clock does not move on */
        if (rc->done || interrupted(vm)) {
            close_partial_round(vm);
            continue;
        }
        if (ran) {
            vmm__vtime_advance(vm, round_length(vm, quantum));
            continue;
        }
        /* everyone waits: jump to the next timer deadline, scheduled input or vmm_stop_at() time */
        vmm__timers_update(vm);
        uint64_t next = atomic_load(&vm->next_deadline_ns);
        if (next_input < next)
            next = next_input;
        stop_at = atomic_load(&vm->stop_at_ns);
        if (stop_at < next)
            next = stop_at;
        if (vmm__run_any_runnable(vm))
            continue;
        if (next != UINT64_MAX)
            vmm__vtime_advance(vm, next > vm->vtime_ns ? next - vm->vtime_ns : 1);
        else
            vmm__run_wait_idle(
                vm, seq); /* nothing scheduled: only a stop, the timeout, new input or vmm_stop_at() ends this */
    }
    atomic_store(&vm->stop_at_ns, UINT64_MAX); /* reached, or the run ended otherwise: disarmed */
}

/* Whether a run is under way (or announced): stream readers and frame waiters see end-of-stream without. */
static void set_running(struct vmm_vm *vm, bool running)
{
    pthread_mutex_lock(&vm->lock);
    vm->park.running = running;
    vmm__vm_broadcast(vm); /* a vmm__park_wait() sees the end */
    pthread_mutex_unlock(&vm->lock);
    vmm__board_set_running(vm, running);
}

VMM_EXPORT int vmm_run(vmm_vm *vm, uint64_t timeout_ns, struct vmm_run_result *res)
{
    struct run_ctx rc = { .vm = vm };
    struct clock_thread wd = { .vm = vm };
    bool have_wd = false;
    int err;

    if (!vm || !res || res->size < sizeof(uint32_t))
        return VMM_EINVAL;
    pthread_mutex_lock(&vm->lock);
    while (vm->dbg_busy) /* a debugger is reading the paused VM: one packet, then it is ours */
        pthread_cond_wait(&vm->cond, &vm->lock);
    switch (vm->state) {
    case VM_STATE_RUNNING:
        pthread_mutex_unlock(&vm->lock);
        return vmm__set_error(vm, VMM_EBUSY, "the VM is already running");
    case VM_STATE_ENDED:
        pthread_mutex_unlock(&vm->lock);
        set_running(vm, false); /* undo vmm_run_pending() */
        return vmm__set_error(vm, VMM_ESTATE, "the VM has ended (powered off, reset or failed); create a new one");
    default:
        break;
    }
    if ((err = vmm__prepare_locked(vm))) {
        pthread_mutex_unlock(&vm->lock);
        set_running(vm, false);
        return err;
    }
    vm->state = VM_STATE_RUNNING;
    /* a stop requested before the run is honoured by it; only timeouts are per run */
    atomic_store(&vm->timed_out, 0);
    pthread_mutex_unlock(&vm->lock);
    set_running(vm, true);

    if (timeout_ns) {
        wd.has_timeout = true;
        wd.timeout = ns_to_abs(vmm__now_ns(), timeout_ns);
    }
    if (timeout_ns || !vm->deterministic) {
        have_wd = pthread_create(&wd.thread, NULL, clock_main, &wd) == 0;
        if (!have_wd)
            vmm__log(vm, VMM_LOG_WARN, "core", "cannot start the clock thread; running without timeout or timers");
    }
    vm->run_thread = pthread_self();
    vm->run_thread_valid = true;
    long old_slack = vmm__host_timer_slack(1); /* the caller's thread: restored below */
    rc.threaded = vmm__has_cap(vm->ops, VMM_CAP_VCPU_THREADS);
    rc.own_timers = !vmm__has_cap(vm->ops, VMM_CAP_KERNEL_TIMERS);
    rc.own_psci = !vmm__has_cap(vm->ops, VMM_CAP_KERNEL_PSCI);
    if (rc.threaded)
        run_loop_threaded(&rc);
    else if (vm->deterministic)
        run_loop_deterministic(&rc);
    else
        run_loop_realtime(&rc);
    vm->run_thread_valid = false;
    if (old_slack > 0)
        vmm__host_timer_slack(old_slack);

    if (have_wd) {
        pthread_mutex_lock(&vm->lock);
        wd.finished = true;
        vmm__vm_broadcast(vm);
        pthread_mutex_unlock(&vm->lock);
        pthread_join(wd.thread, NULL);
    }
    pthread_mutex_lock(&vm->lock);
    if (rc.res.reason == VMM_RUN_STOPPED)
        atomic_store(&vm->stop_requested, 0);
    vm->state = rc.res.reason == VMM_RUN_STOPPED || rc.res.reason == VMM_RUN_TIMEOUT ? VM_STATE_PAUSED : VM_STATE_ENDED;
    pthread_mutex_unlock(&vm->lock);
    if (vm->gdb && vmm__gdb_run_end(vm, rc.res.reason, rc.res.exit_status)) {
        pthread_mutex_lock(&vm->lock);
        vm->state = VM_STATE_ENDED; /* the debugger killed it */
        pthread_mutex_unlock(&vm->lock);
    }
    set_running(vm, false);

    rc.res.pc = vm->ops->get_pc(&vm->vcpus[0]);
    for (unsigned i = 0; i < vm->ncpus; i++)
        rc.res.insns += vm->vcpus[i].insns;
    uint32_t sz = res->size < sizeof rc.res ? res->size : (uint32_t)sizeof rc.res;
    rc.res.size = sz;
    memcpy(res, &rc.res, sz);
    return 0;
}

VMM_EXPORT int vmm_run_pending(vmm_vm *vm)
{
    if (!vm)
        return VMM_EINVAL;
    set_running(vm, true);
    return 0;
}

VMM_EXPORT int vmm_request_stop(vmm_vm *vm)
{
    if (!vm)
        return VMM_EINVAL;
    pthread_mutex_lock(&vm->lock);
    atomic_store(&vm->stop_requested, 1);
    kick_all(vm);
    vmm__vm_broadcast(vm);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

void vmm__vm_broadcast(struct vmm_vm *vm)
{
    pthread_cond_broadcast(&vm->cond);
    for (unsigned i = 0; i < vm->ncpus; i++)
        pthread_cond_broadcast(&vm->vcpus[i].wake); /* no waiter: no system call */
}

/*
 * A line rose for this vCPU (irq.c, from another thread). A vCPU thread asleep in vmm__run_vcpu_wait is
 * woken alone; anything else (the one-thread loop) as vmm__wake_run_loop does. `waiting` is read under
 * vm->lock, which the sleeper holds from its last look at the line until its wait releases it.
 */
void vmm__wake_vcpu(struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = vcpu->vm;

    pthread_mutex_lock(&vm->lock);
    atomic_fetch_add(&vm->wake_seq, 1);
    if (vcpu->waiting)
        pthread_cond_signal(&vcpu->wake);
    else
        vmm__vm_broadcast(vm);
    pthread_mutex_unlock(&vm->lock);
}

void vmm__wake_run_loop(struct vmm_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    atomic_fetch_add(&vm->wake_seq, 1);
    vmm__vm_broadcast(vm);
    pthread_mutex_unlock(&vm->lock);
}

VMM_EXPORT int vmm_stop_at(vmm_vm *vm, uint64_t at_ns)
{
    if (!vm)
        return VMM_EINVAL;
    if (!vm->deterministic)
        return vmm__set_error(vm, VMM_ESTATE, "stopping at a virtual time needs deterministic mode");
    atomic_store(&vm->stop_at_ns, at_ns);
    vmm__wake_run_loop(vm); /* an idle loop looks again: it may have to jump there */
    return 0;
}
