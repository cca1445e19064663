/*
 * gdbstub.c - the GDB remote serial protocol server of a VM: a thread of its own that listens on TCP
 * or a Unix socket, speaks the protocol (gdb_packet.c, gdb_proto.c) and holds the run loop while the
 * debugger has the VM (all-stop). No Python in the loop.
 *
 * Holding: the debugger asks by setting vm->dbg_halt and kicking the vCPUs; the run loop calls
 * vmm__gdb_hold() before each vCPU slice and at the top of every round, and stands still there on
 * vm->cond until the debugger resumes it (or a stop, the timeout or a kill ends the run). While it
 * stands, this thread reads and writes the vCPUs through the backend's debug ops: the run thread
 * touches no vCPU then. Breakpoints and watchpoints change only while held and are installed by the
 * run thread as it leaves the hold. In real-time mode the guest's clock does not move while held
 * (clock_base_ns moves on by the held time), so a guest's own timeouts do not fire during a stop.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "debug.h"
#include "gdb_packet.h"
#include "gdb_reverse.h"
#include "gdb_socket.h"
#include "run.h"
#include "../host/host.h"
#include "vm.h"

#define GDB_MAX_POINTS 64
#define ACCESS_WAIT_NS 5000000000ULL /* a packet that needs the VM held waits this long for the hold */

struct vmm_gdb {
    struct vmm_vm *vm;
    int lfd, wake[2];
    int cfd; /* the connection: set and closed by the server thread, under vm->lock (destroy shuts it down) */
    char addr[160];
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    pthread_t thread;
    bool thread_started;
    atomic_bool quit;
    /* under vm->lock */
    bool attached, held, ended, killed, pending_hit, stepping;
    bool busy;          /* this thread has marked the VM busy (vm->dbg_busy) for the packet it serves */
    bool clock_stopped; /* the guest's clock stands still (clock_stand) since held_since */
    uint64_t held_since;
    uint64_t gen;    /* bumped by each resume: a parked vCPU thread leaves once it moves (all-stop) */
    unsigned parked; /* run threads standing in vmm__gdb_hold (held: all of them) */
    bool owes_stop;  /* the debugger resumed the target and waits for a stop reply (or the exit) */
    int halt_sig;    /* the signal a requested hold reports: 5 on attach and --gdb-wait, 2 for ^C */
    int exit_status;
    uint64_t stop_seq;
    struct gdb_stop stop;
    enum gdb_action act[VMM_MAX_CPUS];
    struct vmm_debug_point points[GDB_MAX_POINTS];
    unsigned npoints;
    /* the server thread's own */
    struct gdb_session s;
    struct gdb_rx rx;
    uint64_t reported_seq;
    char out[GDB_PKT_MAX + 1];
    char frame[2 * GDB_PKT_MAX + 8];
    size_t frame_len;
};

_Static_assert((int)GDB_REG_PC == (int)VMM_DBG_REG_PC && (int)GDB_REG_FPCR == (int)VMM_DBG_REG_FPCR &&
                   (int)GDB_REG_SYS0 == (int)VMM_DBG_NREGS,
               "gdb and debug.h register numbers agree");

static void notify(struct vmm_gdb *g)
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
static void request_hold(struct vmm_gdb *g, int sig)
{
    g->halt_sig = sig;
    atomic_store(&g->vm->dbg_halt, true);
    atomic_fetch_add(&g->vm->wake_seq, 1);
    pthread_cond_broadcast(&g->vm->cond);
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
static void go(struct vmm_gdb *g)
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
    pthread_cond_broadcast(&vm->cond);
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
        pthread_cond_broadcast(&vm->cond);
        notify(g);
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
            pthread_cond_broadcast(&vm->cond);
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
    notify(g);
    pthread_mutex_unlock(&vm->lock);
    return killed;
}

/* ---- the target ops, on the server thread ---- */

/*
 * The VM stands still for the debugger: held by it, or no run under way (and one has been prepared).
 * Then the VM is marked busy until the packet is served (access_end): the host's calls that touch
 * vCPUs get VMM_EBUSY (vmm__check_idle), vmm_run() and a held run thread wait for it.
 */
static bool accessible(struct vmm_gdb *g)
{
    struct vmm_vm *vm = g->vm;
    struct timespec dl;
    uint64_t abs = vmm__now_ns() + ACCESS_WAIT_NS;
    bool ok;

    dl.tv_sec = (time_t)(abs / 1000000000ULL);
    dl.tv_nsec = (long)(abs % 1000000000ULL);
    pthread_mutex_lock(&vm->lock);
    for (;;) {
        ok = g->held || (vm->state != VM_STATE_RUNNING && vm->state != VM_STATE_NEW);
        if (ok || !atomic_load(&vm->dbg_halt) || vmm__host_cond_timedwait(&vm->cond, &vm->lock, &dl) == ETIMEDOUT)
            break;
    }
    if (ok && !g->busy)
        g->busy = vm->dbg_busy = true;
    pthread_mutex_unlock(&vm->lock);
    return ok;
}

static void access_end(struct vmm_gdb *g)
{
    struct vmm_vm *vm = g->vm;
    pthread_mutex_lock(&vm->lock);
    if (g->busy) {
        g->busy = vm->dbg_busy = false;
        pthread_cond_broadcast(&vm->cond);
    }
    pthread_mutex_unlock(&vm->lock);
}

static unsigned t_ncpus(void *t)
{
    return ((struct vmm_gdb *)t)->vm->ncpus;
}

/* Whether vCPU `cpu` is powered on; asks a KERNEL_PSCI backend only while the VM stands still. */
static bool powered(struct vmm_gdb *g, unsigned cpu, bool stopped)
{
    struct vmm_vm *vm = g->vm;
    if (cpu >= vm->ncpus)
        return false;
    if (vm->ops->debug->powered && stopped)
        return vm->ops->debug->powered(&vm->vcpus[cpu]);
    return vm->vcpus[cpu].on;
}

static bool t_cpu_on(void *t, unsigned cpu)
{
    struct vmm_gdb *g = t;
    return powered(g, cpu, accessible(g));
}

static int t_read_reg(void *t, unsigned cpu, unsigned regno, uint8_t *buf)
{
    struct vmm_gdb *g = t;
    const struct vmm_debug_ops *d = g->vm->ops->debug;
    unsigned sz = vmm__gdb_reg_size(regno);

    if (cpu >= g->vm->ncpus || !sz || !accessible(g))
        return -1;
    if (regno < GDB_REG_SYS0)
        return d->reg_read(&g->vm->vcpus[cpu], regno, buf, sz) ? -1 : 0;
    uint64_t v;
    if (d->sysreg_read(&g->vm->vcpus[cpu], vmm__gdb_sysregs[regno - GDB_REG_SYS0].id, &v))
        return -1;
    memcpy(buf, &v, 8);
    return 0;
}

/* The debugger changed the guest: no replay would reproduce that, reverse execution starts history again. */
static void rev_diverged(struct vmm_gdb *g)
{
    pthread_mutex_lock(&g->vm->lock);
    vmm__rev_diverged(g->vm);
    pthread_mutex_unlock(&g->vm->lock);
}

static int t_write_reg(void *t, unsigned cpu, unsigned regno, const uint8_t *buf)
{
    struct vmm_gdb *g = t;
    const struct vmm_debug_ops *d = g->vm->ops->debug;
    unsigned sz = vmm__gdb_reg_size(regno);

    if (cpu >= g->vm->ncpus || !sz || !accessible(g))
        return -1;
    rev_diverged(g);
    if (regno < GDB_REG_SYS0)
        return d->reg_write(&g->vm->vcpus[cpu], regno, buf, sz) ? -1 : 0;
    uint64_t v;
    memcpy(&v, buf, 8);
    return d->sysreg_write(&g->vm->vcpus[cpu], vmm__gdb_sysregs[regno - GDB_REG_SYS0].id, v) ? -1 : 0;
}

#define ID_SCTLR_EL1 ((3u << 14) | (1u << 7))
#define ID_TTBR0_EL1 ((3u << 14) | (2u << 7))
#define ID_TTBR1_EL1 ((3u << 14) | (2u << 7) | 1u)
#define ID_TCR_EL1 ((3u << 14) | (2u << 7) | 2u)

static int s1_regs(struct vmm_gdb *g, unsigned cpu, struct vmm_s1_regs *r)
{
    const struct vmm_debug_ops *d = g->vm->ops->debug;
    struct vmm_vcpu *v = &g->vm->vcpus[cpu];
    return d->sysreg_read(v, ID_SCTLR_EL1, &r->sctlr) || d->sysreg_read(v, ID_TCR_EL1, &r->tcr) ||
           d->sysreg_read(v, ID_TTBR0_EL1, &r->ttbr0) || d->sysreg_read(v, ID_TTBR1_EL1, &r->ttbr1);
}

/* Copy between buf and guest RAM page by page through the translation; bytes done, -1 if none. */
static long mem_xfer(struct vmm_gdb *g, unsigned cpu, bool phys, uint64_t addr, uint8_t *buf, size_t len, bool wr)
{
    struct vmm_s1_regs r;
    size_t done = 0;

    if (cpu >= g->vm->ncpus || !accessible(g) || (!phys && s1_regs(g, cpu, &r)))
        return -1;
    while (done < len) {
        uint64_t va = addr + done, pa;
        size_t chunk = 4096 - (va & 4095);
        if (chunk > len - done)
            chunk = len - done;
        if (phys)
            pa = va;
        else if (vmm__s1_translate(g->vm, &r, va, &pa))
            break;
        uint8_t *p = vmm__gpa_ptr(g->vm, pa, chunk); /* RAM only: no device side effects */
        if (!p)
            break;
        if (wr)
            memcpy(p, buf + done, chunk);
        else
            memcpy(buf + done, p, chunk);
        if (g->vm->ops->debug->mem_shadow) /* planted breakpoints stay invisible to the debugger */
            g->vm->ops->debug->mem_shadow(g->vm, pa, buf + done, chunk, wr);
        done += chunk;
    }
    if (wr && done)
        rev_diverged(g);
    if (wr && done)
        for (unsigned i = 0; i < g->vm->ncpus; i++)
            g->vm->ops->debug->mem_changed(&g->vm->vcpus[i]);
    return done ? (long)done : -1;
}

static long t_read_mem(void *t, unsigned cpu, bool phys, uint64_t addr, uint8_t *buf, size_t len)
{
    return mem_xfer(t, cpu, phys, addr, buf, len, false);
}

static long t_write_mem(void *t, unsigned cpu, bool phys, uint64_t addr, const uint8_t *buf, size_t len)
{
    return mem_xfer(t, cpu, phys, addr, (uint8_t *)buf, len, true);
}

static int t_point(void *t, bool insert, enum gdb_point type, uint64_t addr, uint64_t len)
{
    struct vmm_gdb *g = t;
    struct vmm_vm *vm = g->vm;
    int rc = 0;
    unsigned i;

    if (type <= GDB_BP_HW)
        len = 4;
    pthread_mutex_lock(&vm->lock);
    for (i = 0; i < g->npoints; i++)
        if (g->points[i].type == (enum vmm_debug_point_type)type && g->points[i].addr == addr &&
            g->points[i].len == len)
            break;
    if (insert && i == g->npoints) {
        if (g->npoints < GDB_MAX_POINTS)
            g->points[g->npoints++] =
                (struct vmm_debug_point){ .type = (enum vmm_debug_point_type)type, .addr = addr, .len = len };
        else
            rc = -1;
    } else if (!insert && i < g->npoints) {
        g->points[i] = g->points[--g->npoints];
    }
    pthread_mutex_unlock(&vm->lock);
    return rc;
}

static int t_resume(void *t, const enum gdb_action *act, unsigned n)
{
    struct vmm_gdb *g = t;
    struct vmm_vm *vm = g->vm;
    bool stepping = false;

    if (!accessible(g))
        return -1;
    pthread_mutex_lock(&vm->lock);
    for (unsigned i = 0; i < n && i < vm->ncpus; i++) {
        if (act[i] == GDB_ACT_STEP && !powered(g, i, true)) {
            pthread_mutex_unlock(&vm->lock);
            return -1; /* an off vCPU cannot step */
        }
        g->act[i] = act[i];
        stepping |= act[i] == GDB_ACT_STEP;
    }
    __atomic_store_n(&g->stepping, stepping, __ATOMIC_RELAXED);
    go(g);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

static bool t_stop_state(void *t, struct gdb_stop *st)
{
    struct vmm_gdb *g = t;
    accessible(g); /* right after attaching: the hold it asked for is what '?' reports */
    pthread_mutex_lock(&g->vm->lock);
    if (g->ended)
        *st = (struct gdb_stop){ .kind = GDB_STOP_EXITED, .value = g->exit_status };
    else
        *st = g->stop;
    pthread_mutex_unlock(&g->vm->lock);
    return true;
}

static void t_kill(void *t)
{
    struct vmm_gdb *g = t;
    pthread_mutex_lock(&g->vm->lock);
    g->killed = true;
    pthread_mutex_unlock(&g->vm->lock);
    vmm_request_stop(g->vm);
}

/* Detach: every point goes, every vCPU runs on, nothing holds the VM any more. */
static void release(struct vmm_gdb *g)
{
    struct vmm_vm *vm = g->vm;
    pthread_mutex_lock(&vm->lock);
    if (vm->state == VM_STATE_RUNNING && !g->held && !g->ended)
        request_hold(g, 5); /* points are removed from stopped vCPUs only: stop them, then let them go */
    pthread_mutex_unlock(&vm->lock);
    bool stopped = accessible(g);
    pthread_mutex_lock(&vm->lock);
    g->npoints = 0;
    for (unsigned i = 0; i < VMM_MAX_CPUS; i++)
        g->act[i] = GDB_ACT_CONT;
    __atomic_store_n(&g->stepping, false, __ATOMIC_RELAXED);
    g->attached = false;
    vmm__rev_attach(vm, false);
    if (stopped)
        go(g);
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    access_end(g);
}

static void t_detach(void *t)
{
    release(t);
}

static int t_monitor(void *t, const char *cmd, char *out, size_t cap)
{
    struct vmm_gdb *g = t;
    struct vmm_s1_regs r;
    uint64_t va, pa;

    if (!strcmp(cmd, "info")) {
        snprintf(out, cap, "vmmpy: %u vCPU(s), backend %s, %s mode, guest clock %" PRIu64 " ns\n", g->vm->ncpus,
                 g->vm->ops->name, g->vm->deterministic ? "deterministic" : "real-time", vmm__clock_ns(g->vm, NULL));
        return 0;
    }
    if (!strncmp(cmd, "reverse", 7) && (!cmd[7] || cmd[7] == ' ')) {
        if (!accessible(g))
            snprintf(out, cap, "the VM is running\n");
        else
            vmm__rev_monitor(g->vm, cmd + 7, out, cap);
        return 0;
    }
    if (!strncmp(cmd, "translate ", 10)) {
        char *end;
        va = strtoull(cmd + 10, &end, 0);
        if (*end || end == cmd + 10)
            return -1;
        if (!accessible(g) || s1_regs(g, g->s.g_cpu, &r))
            snprintf(out, cap, "the VM is running\n");
        else if (vmm__s1_translate(g->vm, &r, va, &pa))
            snprintf(out, cap, "0x%" PRIx64 ": no translation on vCPU %u\n", va, g->s.g_cpu);
        else
            snprintf(out, cap, "0x%" PRIx64 " -> physical 0x%" PRIx64 " (vCPU %u)\n", va, pa, g->s.g_cpu);
        return 0;
    }
    return -1;
}

static bool t_can_reverse(void *t)
{
    return ((struct vmm_gdb *)t)->vm->gdb_rev != NULL;
}

/* bs / bc: the run thread rewinds at the top of its round (gdb_reverse.c); the stop comes as for a resume. */
static int t_reverse(void *t, bool step, unsigned cpu, char *why, size_t cap)
{
    struct vmm_gdb *g = t;
    struct vmm_vm *vm = g->vm;

    if (!vm->gdb_rev) {
        snprintf(why, cap, "%s", vmm__rev_why_not(vm));
        return -1;
    }
    if (!accessible(g)) {
        snprintf(why, cap, "the VM is not stopped");
        return -1;
    }
    pthread_mutex_lock(&vm->lock);
    if (cpu == GDB_CPU_STOPPED)
        cpu = g->stop.cpu;
    int rc = vmm__rev_request(vm, step, cpu, g->points, g->npoints, why, cap);
    if (!rc) {
        for (unsigned i = 0; i < VMM_MAX_CPUS; i++)
            g->act[i] = GDB_ACT_CONT;
        __atomic_store_n(&g->stepping, false, __ATOMIC_RELAXED);
        go(g);
    }
    pthread_mutex_unlock(&vm->lock);
    return rc;
}

static const struct gdb_target_ops target_ops = {
    .ncpus = t_ncpus,
    .cpu_on = t_cpu_on,
    .read_reg = t_read_reg,
    .write_reg = t_write_reg,
    .read_mem = t_read_mem,
    .write_mem = t_write_mem,
    .point = t_point,
    .resume = t_resume,
    .stop_state = t_stop_state,
    .kill = t_kill,
    .detach = t_detach,
    .monitor = t_monitor,
    .can_reverse = t_can_reverse,
    .reverse = t_reverse,
};

/* ---- the server thread ---- */

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool send_packet(struct vmm_gdb *g, const char *payload, size_t len)
{
    g->frame_len = vmm__gdb_frame(g->frame, sizeof g->frame, payload, len);
    return g->frame_len && send_all(g->cfd, g->frame, g->frame_len);
}

/* A stop the debugger is owed: the hold after a resume, or the end of the VM. */
static bool report_stop(struct vmm_gdb *g)
{
    struct gdb_stop st;
    bool due;

    pthread_mutex_lock(&g->vm->lock);
    due = g->s.running && (g->ended || (g->held && g->stop_seq != g->reported_seq) ||
                           (g->vm->state != VM_STATE_RUNNING && g->stop_seq != g->reported_seq));
    if (due)
        g->reported_seq = g->stop_seq;
    pthread_mutex_unlock(&g->vm->lock);
    if (!due)
        return true;
    g->s.running = false;
    t_stop_state(g, &st);
    access_end(g);
    if (st.kind == GDB_STOP_SIGNAL) /* gdb reads the stopped thread's registers without an Hg first */
        g->s.g_cpu = g->s.c_cpu = st.cpu;
    size_t n = vmm__gdb_stop_reply(&st, g->out, sizeof g->out);
    bool ok = send_packet(g, g->out, n);
    pthread_mutex_lock(&g->vm->lock);
    g->owes_stop = false;
    pthread_cond_broadcast(&g->vm->cond); /* vmm__gdb_destroy waits for an exit to be reported */
    pthread_mutex_unlock(&g->vm->lock);
    return ok;
}

/* One packet in; false to close the connection. */
static bool on_packet(struct vmm_gdb *g)
{
    if (!g->s.no_ack && !send_all(g->cfd, "+", 1))
        return false;
    if (g->s.running) /* all-stop: only ^C is expected while the target runs */
        return send_packet(g, "E16", 3);
    pthread_mutex_lock(&g->vm->lock);
    uint64_t seq = g->stop_seq;
    pthread_mutex_unlock(&g->vm->lock);
    long n = vmm__gdb_proto_handle(&g->s, g->rx.buf, g->rx.len, g->out, sizeof g->out);
    access_end(g); /* the packet is served: the host may touch the VM again */
    if (n >= 0 && !send_packet(g, g->out, (size_t)n))
        return false;
    if (g->s.running) {
        pthread_mutex_lock(&g->vm->lock);
        g->reported_seq = seq; /* the stop that follows this resume is the one to report */
        g->owes_stop = true;
        pthread_mutex_unlock(&g->vm->lock);
    }
    return !g->s.ended;
}

static bool on_bytes(struct vmm_gdb *g, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (vmm__gdb_rx_byte(&g->rx, b[i])) {
        case GDB_RX_PACKET:
            if (!on_packet(g))
                return false;
            break;
        case GDB_RX_BADSUM:
            if (!send_all(g->cfd, "-", 1))
                return false;
            break;
        case GDB_RX_TOOBIG:
            if ((!g->s.no_ack && !send_all(g->cfd, "+", 1)) || !send_packet(g, "E22", 3))
                return false;
            break;
        case GDB_RX_INTR:
            if (g->s.running) {
                pthread_mutex_lock(&g->vm->lock);
                request_hold(g, 2);
                pthread_mutex_unlock(&g->vm->lock);
            }
            break;
        case GDB_RX_NACK:
            if (g->frame_len && !send_all(g->cfd, g->frame, g->frame_len))
                return false;
            break;
        default:
            break;
        }
    }
    return true;
}

static void serve(struct vmm_gdb *g)
{
    uint8_t buf[4096];

    vmm__gdb_session_init(&g->s, &target_ops, g);
    vmm__gdb_rx_init(&g->rx);
    g->frame_len = 0;
    pthread_mutex_lock(&g->vm->lock);
    g->attached = true;
    vmm__rev_attach(g->vm, true);
    g->reported_seq = g->stop_seq;
    if (!g->ended)
        request_hold(g, 5); /* gdb expects the target stopped when it attaches */
    pthread_mutex_unlock(&g->vm->lock);
    while (!atomic_load(&g->quit)) {
        struct pollfd p[2] = { { .fd = g->cfd, .events = POLLIN }, { .fd = g->wake[0], .events = POLLIN } };
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents) {
            while (read(g->wake[0], buf, sizeof buf) > 0)
                ;
            if (!report_stop(g))
                break;
        }
        if (p[0].revents) {
            ssize_t r = recv(g->cfd, buf, sizeof buf, 0);
            if (r <= 0 || !on_bytes(g, buf, (size_t)r))
                break;
        }
    }
    if (!g->s.ended)
        release(g); /* the debugger went away: the guest runs on, as after a detach */
    access_end(g);
    pthread_mutex_lock(&g->vm->lock);
    g->attached = false;
    close(g->cfd); /* under the lock: vmm__gdb_destroy never shuts down a number reused meanwhile */
    g->cfd = -1;
    pthread_mutex_unlock(&g->vm->lock);
}

static void *gdb_main(void *arg)
{
    struct vmm_gdb *g = arg;
    vmm__host_thread_name("vmm-gdb");
    while (!atomic_load(&g->quit)) {
        struct pollfd p[2] = { { .fd = g->lfd, .events = POLLIN }, { .fd = g->wake[0], .events = POLLIN } };
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents) {
            char b[64];
            while (read(g->wake[0], b, sizeof b) > 0)
                ;
        }
        if (!p[0].revents)
            continue;
        int fd = accept(g->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on a Unix socket */
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        pthread_mutex_lock(&g->vm->lock);
        g->cfd = fd;
        pthread_mutex_unlock(&g->vm->lock);
        vmm__log(g->vm, VMM_LOG_INFO, "gdb", "debugger connected on %s", g->addr);
        serve(g);
        vmm__log(g->vm, VMM_LOG_INFO, "gdb", "debugger disconnected");
    }
    return NULL;
}

/* ---- setting up ---- */

static void gdb_free(struct vmm_gdb *g)
{
    if (g->lfd >= 0)
        close(g->lfd);
    if (g->wake[0] >= 0)
        close(g->wake[0]);
    if (g->wake[1] >= 0)
        close(g->wake[1]);
    if (g->unix_path[0])
        unlink(g->unix_path);
    free(g);
}

VMM_EXPORT int vmm_gdb_listen(vmm_vm *vm, const char *address, int wait)
{
    struct vmm_gdb *g;
    int rc;

    if (!vm || !address)
        return VMM_EINVAL;
    if (vm->gdb)
        return vmm__set_error(vm, VMM_ESTATE, "gdb: already listening on %s", vm->gdb->addr);
    if (!vm->ops->debug)
        return vmm__set_error(vm, VMM_ENOTSUP, "gdb: the %s backend cannot be debugged yet", vm->ops->name);
    if ((rc = vmm__check_idle(vm, "starting the gdb server")))
        return rc;
    if (!(g = calloc(1, sizeof *g)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory");
    g->vm = vm;
    g->lfd = g->cfd = g->wake[0] = g->wake[1] = -1;
    g->stop.point = -1;
    for (unsigned i = 0; i < VMM_MAX_CPUS; i++)
        g->act[i] = GDB_ACT_CONT;
    rc = vmm__gdb_bind(vm, address, &g->lfd, g->addr, sizeof g->addr, g->unix_path, sizeof g->unix_path);
    if (!rc && listen(g->lfd, 1))
        rc = vmm__set_error(vm, VMM_EIO, "gdb: listen: %s", strerror(errno));
    if (!rc && pipe(g->wake))
        rc = vmm__set_error(vm, VMM_EIO, "gdb: pipe: %s", strerror(errno));
    if (!rc) {
        fcntl(g->lfd, F_SETFD, FD_CLOEXEC);
        for (int i = 0; i < 2; i++) {
            fcntl(g->wake[i], F_SETFD, FD_CLOEXEC);
            fcntl(g->wake[i], F_SETFL, O_NONBLOCK);
        }
        vm->gdb = g;
        /* reverse execution: NULL when not deterministic or not soft (vmm__rev_why_not) */
        vm->gdb_rev = vmm__rev_create(vm);
        if (wait) { /* like QEMU's -S: the first run holds before its first instruction */
            pthread_mutex_lock(&vm->lock);
            g->halt_sig = 5;
            atomic_store(&vm->dbg_halt, true);
            pthread_mutex_unlock(&vm->lock);
        }
        int e = pthread_create(&g->thread, NULL, gdb_main, g);
        if (e) {
            vmm__rev_destroy(vm);
            vm->gdb = NULL;
            atomic_store(&vm->dbg_halt, false);
            rc = vmm__set_error(vm, VMM_ENOMEM, "gdb: cannot start its thread: %s", strerror(e));
        }
        g->thread_started = !e;
    }
    if (rc)
        gdb_free(g);
    else
        vmm__log(vm, VMM_LOG_INFO, "gdb", "waiting for gdb on %s%s", g->addr, wait ? " (the VM waits for it)" : "");
    return rc;
}

VMM_EXPORT int vmm_gdb_address(vmm_vm *vm, char *buf, size_t len)
{
    if (!vm || !buf || !len)
        return VMM_EINVAL;
    if (!vm->gdb)
        return vmm__set_error(vm, VMM_ESTATE, "gdb: not listening");
    if (strlen(vm->gdb->addr) >= len)
        return vmm__set_error(vm, VMM_ERANGE, "gdb: address longer than the buffer");
    memcpy(buf, vm->gdb->addr, strlen(vm->gdb->addr) + 1);
    return 0;
}

void vmm__gdb_destroy(struct vmm_vm *vm)
{
    struct vmm_gdb *g = vm->gdb;
    if (!g)
        return;
    pthread_mutex_lock(&vm->lock);
    /* a guest that powered off under a debugger: it hears the exit before the connection goes */
    uint64_t abs = vmm__now_ns() + 2000000000ULL;
    struct timespec dl = { .tv_sec = (time_t)(abs / 1000000000ULL), .tv_nsec = (long)(abs % 1000000000ULL) };
    while (g->ended && g->owes_stop && g->cfd >= 0 && vmm__host_cond_timedwait(&vm->cond, &vm->lock, &dl) != ETIMEDOUT)
        ;
    atomic_store(&g->quit, true);
    notify(g);
    if (g->cfd >= 0)                 /* the server thread closes cfd under vm->lock: this is still its connection */
        shutdown(g->cfd, SHUT_RDWR); /* a send blocked on a debugger that stopped reading returns */
    pthread_mutex_unlock(&vm->lock);
    if (g->thread_started)
        pthread_join(g->thread, NULL);
    vmm__rev_destroy(vm);
    vm->gdb = NULL;
    gdb_free(g);
}
