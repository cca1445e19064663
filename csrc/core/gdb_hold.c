/*
 * gdb_hold.c - the run threads' side of the GDB server: where they stand while the debugger has the VM.
 *
 * The debugger asks by setting vm->dbg_halt and kicking the vCPUs; the run loop calls vmm__gdb_hold()
 * before each vCPU slice and at the top of every round, and stands still there on vm->cond until the
 * debugger resumes it (or a stop, the timeout or a kill ends the run). With one thread per vCPU, every
 * thread parks and the VM counts as held only once all have (all-stop); a resume bumps the hold
 * generation, and a vCPU kept stopped (gdb's scheduler-locking) stays parked. While held, the server
 * thread (gdbstub.c) reads and writes the vCPUs through the backend's debug ops: the run threads touch
 * no vCPU then. Breakpoints and watchpoints change only while held and are installed as the VM leaves
 * the hold. In real-time mode the guest's clock does not move while held (clock_base_ns moves on by the
 * held time, and a backend with the host kernel's timers holds its counter).
 */
#include <stdatomic.h>
#include <unistd.h>

#include "gdb_internal.h"
#include "gdb_reverse.h"
#include "run.h"
#include "../host/host.h"

void vmm__gdb_notify(struct vmm_gdb *g)
{
    char c = 1;
    ssize_t r = write(g->wake[1], &c, 1); /* non-blocking: a full pipe already wakes the thread */
    (void)r;
}

static void kick_all(struct vmm_vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++)
        vm->ops->kick(&vm->vcpus[i]);
}

/* Ask the run loop to hold (vm->lock held). */
void vmm__gdb_request_hold(struct vmm_gdb *g, int sig)
{
    g->halt_sig = sig;
    atomic_store(&g->vm->dbg_halt, true);
    atomic_fetch_add(&g->vm->wake_seq, 1);
    vmm__vm_broadcast(g->vm);
    kick_all(g->vm);
}

static bool interrupted(struct vmm_vm *vm)
{
    return atomic_load(&vm->stop_requested) || atomic_load(&vm->timed_out);
}

/* ---- the run thread's side ---- */

/* The threads that run vCPUs: one per vCPU (VMM_CAP_VCPU_THREADS), else the one run loop. */
static bool threaded(const struct vmm_vm *vm)
{
    return vmm__has_cap(vm->ops, VMM_CAP_VCPU_THREADS);
}

static unsigned run_threads(const struct vmm_vm *vm)
{
    return threaded(vm) ? vm->ncpus : 1;
}

/*
 * The guest's clock stops (vm->lock held, every run thread parked): real time stands at its value
 * (clock_held) and a backend whose timers are the host kernel's stops its counter (clock_hold).
 */
static void clock_stand(struct vmm_gdb *g)
{
    struct vmm_vm *vm = g->vm;
    if (vm->deterministic || g->clock_stopped)
        return;
    g->clock_stopped = true;
    g->held_since = vmm__now_ns();
    atomic_store(&vm->clock_held, vmm__clock_ns(vm, NULL) + 1);
    if (vm->ops->debug->clock_hold)
        for (unsigned i = 0; i < vm->ncpus; i++)
            vm->ops->debug->clock_hold(&vm->vcpus[i], true);
}

/* ... and goes on from where it stood (vm->lock held, before any run thread leaves). */
static void clock_go(struct vmm_gdb *g)
{
    struct vmm_vm *vm = g->vm;
    if (!g->clock_stopped)
        return;
    g->clock_stopped = false;
    vm->clock_base_ns += vmm__now_ns() - g->held_since;
    atomic_store(&vm->clock_held, 0);
    if (vm->ops->debug->clock_hold)
        for (unsigned i = 0; i < vm->ncpus; i++)
            vm->ops->debug->clock_hold(&vm->vcpus[i], false);
    vmm__vm_broadcast(vm); /* the clock thread waits untimed while the clock stands (run.c clock_main) */
}

/*
 * Install the debugger's points and steps on every vCPU (vm->lock held, nothing runs: every run thread
 * is parked, or no run is under way and the debugger's busy mark keeps one from starting).
 */
static void apply_config(struct vmm_gdb *g)
{
    struct vmm_vm *vm = g->vm;

    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vmm_debug_cfg cfg = { .points = g->points, .npoints = g->npoints, .step = g->act[i] == GDB_ACT_STEP };
        /*
         * One run loop: a vCPU told to stay stopped is skipped by it (real time; deterministic: the schedule
         * goes on unchanged). A thread per vCPU: its thread stays parked in vmm__gdb_hold instead.
         */
        vm->vcpus[i].dbg_frozen = g->act[i] == GDB_ACT_STOP && !vm->deterministic && !threaded(vm);
        if (vm->ops->debug->set_debug(&vm->vcpus[i], &cfg))
            vmm__log(vm, VMM_LOG_WARN, "gdb", "vCPU %u: %s", i, vm->errmsg);
    }
}

/*
 * A resume or a detach (vm->lock held): install the configuration, let the guest's clock go and release
 * the parked run threads; a vCPU thread whose vCPU must stay stopped stays parked (and counted).
 */
void vmm__gdb_go(struct vmm_gdb *g)
{
    struct vmm_vm *vm = g->vm;
    bool held = g->held;

    apply_config(g);
    clock_go(g);
    g->held = false;
    g->gen++;
    g->parked = 0;
    if (held && threaded(vm))
        for (unsigned i = 0; i < vm->ncpus; i++)
            g->parked += g->act[i] == GDB_ACT_STOP;
    atomic_store(&vm->dbg_halt, false);
    vmm__vm_broadcast(vm);
}

/* A parked thread may leave: a resume released it (and its vCPU is not kept stopped), a stop or the timeout. */
static bool released(struct vmm_gdb *g, struct vmm_vcpu *vcpu, uint64_t gen)
{
    struct vmm_vm *vm = g->vm;
    if (vm->dbg_busy) /* the debugger is reading or writing a vCPU right now */
        return false;
    if (interrupted(vm))
        return true;
    return g->gen != gen && (!threaded(vm) || !vcpu || g->act[vcpu->id] != GDB_ACT_STOP);
}

void vmm__gdb_hold(struct vmm_vm *vm, struct vmm_vcpu *vcpu)
{
    struct vmm_gdb *g = vm->gdb;

    if (!atomic_load(&vm->dbg_halt))
        return;
    if (vcpu && threaded(vm) && vm->ops->vcpu_leave)
        vm->ops->vcpu_leave(vcpu); /* registers final (an MMIO load completed) before the debugger reads them */
    pthread_mutex_lock(&vm->lock);
    if (!atomic_load(&vm->dbg_halt) || interrupted(vm)) {
        pthread_mutex_unlock(&vm->lock);
        return;
    }
    uint64_t gen = g->gen;
    if (!g->parked && !g->pending_hit) { /* a requested stop names vCPU 0 (threads park in any order) */
        unsigned cpu = threaded(vm) ? 0 : vcpu ? vcpu->id : g->stop.cpu;
        g->stop = (struct gdb_stop){ .kind = GDB_STOP_SIGNAL, .value = g->halt_sig, .cpu = cpu, .point = -1 };
    }
    if (++g->parked >= run_threads(vm)) { /* the last one in: the VM is held */
        g->pending_hit = false;
        g->held = true;
        g->stop_seq++;
        clock_stand(g);
        vmm__vm_broadcast(vm);
        vmm__gdb_notify(g);
    }
    while (!released(g, vcpu, gen))
        pthread_cond_wait(&vm->cond, &vm->lock);
    bool resumed = g->gen != gen;
    if (interrupted(vm) && !resumed) { /* the run ends: nothing holds any more */
        g->held = false;
        clock_go(g);
    }
    pthread_mutex_unlock(&vm->lock);
    if (resumed && vm->gdb_rev) /* reverse execution runs on one run thread: it learns that the debugger resumed */
        vmm__rev_resumed(vm);
}

bool vmm__gdb_after_run(struct vmm_vcpu *vcpu, const struct vmm_exit *exit)
{
    struct vmm_vm *vm = vcpu->vm;
    struct vmm_gdb *g = vm->gdb;
    bool stop = false;

    if (vm->gdb_rev) { /* a replay of reverse execution: its own stops, the debugger's hits recorded */
        struct gdb_stop rst;
        int rk = vmm__rev_after_run(vcpu, exit, &rst);
        if (rk == REV_STOP)
            vmm__gdb_stop_here(vm, &rst);
        if (rk != REV_PASS)
            return rk == REV_STOP;
    }
    /* the common case takes no lock: `stepping` changes only while the VM is held, or on a detach */
    if (exit->kind != VMM_EXIT_DEBUG && !(__atomic_load_n(&g->stepping, __ATOMIC_RELAXED) &&
                                          (exit->kind == VMM_EXIT_WFI || exit->kind == VMM_EXIT_CPU_OFF)))
        return false;
    pthread_mutex_lock(&vm->lock);
    if (g->pending_hit) {
        stop = true; /* another vCPU's hit is being reported: this one stops with the rest */
    } else if (exit->kind == VMM_EXIT_DEBUG) {
        g->stop = (struct gdb_stop){ .kind = GDB_STOP_SIGNAL,
                                     .value = 5,
                                     .cpu = vcpu->id,
                                     .point = exit->debug.point,
                                     .data_addr = exit->debug.addr };
        stop = true;
    } else if (g->stepping && g->act[vcpu->id] == GDB_ACT_STEP &&
               (exit->kind == VMM_EXIT_WFI || exit->kind == VMM_EXIT_CPU_OFF)) {
        g->stop = (struct gdb_stop){ .kind = GDB_STOP_SIGNAL, .value = 5, .cpu = vcpu->id, .point = -1 };
        stop = true; /* a step that ended in WFI or CPU_OFF is over: nothing more runs on this vCPU */
    }
    if (stop) {
        g->pending_hit = true;
        atomic_store(&vm->dbg_halt, true);
        if (threaded(vm)) { /* all-stop: the other vCPU threads come out of the guest and park */
            atomic_fetch_add(&vm->wake_seq, 1);
            vmm__vm_broadcast(vm);
            kick_all(vm);
        }
    }
    pthread_mutex_unlock(&vm->lock);
    if (stop)
        vmm__gdb_hold(vm, vcpu);
    return stop;
}

/* Reverse execution's stops (gdb_reverse.c): report st and hold. */
void vmm__gdb_stop_here(struct vmm_vm *vm, const struct gdb_stop *st)
{
    struct vmm_gdb *g = vm->gdb;

    pthread_mutex_lock(&vm->lock);
    g->stop = *st;
    g->pending_hit = true;
    atomic_store(&vm->dbg_halt, true);
    pthread_mutex_unlock(&vm->lock);
    vmm__gdb_hold(vm, NULL);
}

bool vmm__gdb_run_end(struct vmm_vm *vm, int reason, int status)
{
    struct vmm_gdb *g = vm->gdb;
    bool killed;

    pthread_mutex_lock(&vm->lock);
    killed = g->killed;
    g->parked = 0; /* every run thread has left */
    g->held = false;
    g->pending_hit = false;
    clock_go(g);
    if (killed || (reason != VMM_RUN_STOPPED && reason != VMM_RUN_TIMEOUT)) {
        g->ended = true;
        g->exit_status = reason == VMM_RUN_POWEROFF ? status : killed ? 9 : 1;
    } else if (g->attached) { /* paused by the host: the debugger sees a stop, the next run holds */
        g->stop = (struct gdb_stop){ .kind = GDB_STOP_SIGNAL, .value = 2, .cpu = g->stop.cpu, .point = -1 };
        g->stop_seq++;
        g->halt_sig = 2;
        atomic_store(&vm->dbg_halt, true);
    }
    vmm__gdb_notify(g);
    pthread_mutex_unlock(&vm->lock);
    return killed;
}
