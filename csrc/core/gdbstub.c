/*
 * gdbstub.c - the GDB remote serial protocol server of a VM: a thread of its own that listens on TCP
 * or a Unix socket, speaks the protocol (gdb_packet.c, gdb_proto.c) and holds the run loop while the
 * debugger has the VM (all-stop). No Python in the loop.
 *
 * The run threads' side, where they stand while the debugger has the VM, is gdb_hold.c; the state both
 * sides share is struct vmm_gdb (gdb_internal.h). This thread reads and writes the vCPUs through the
 * backend's debug ops only while the VM is held or no run is under way (accessible(), the busy mark).
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
#include "gdb_internal.h"
#include "gdb_packet.h"
#include "gdb_reverse.h"
#include "gdb_socket.h"
#include "run.h"
#include "../host/host.h"
#include "vm.h"

#define ACCESS_WAIT_NS 5000000000ULL /* a packet that needs the VM held waits this long for the hold */

_Static_assert((int)GDB_REG_PC == (int)VMM_DBG_REG_PC && (int)GDB_REG_FPCR == (int)VMM_DBG_REG_FPCR &&
                   (int)GDB_REG_SYS0 == (int)VMM_DBG_NREGS,
               "gdb and debug.h register numbers agree");

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
        vmm__vm_broadcast(vm);
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
    vmm__gdb_go(g);
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
    g->killed = true; /* the run is stopped once the reply is sent (on_packet) */
    pthread_mutex_unlock(&g->vm->lock);
}

/* Detach: every point goes, every vCPU runs on, nothing holds the VM any more. */
static void release(struct vmm_gdb *g)
{
    struct vmm_vm *vm = g->vm;
    pthread_mutex_lock(&vm->lock);
    if (vm->state == VM_STATE_RUNNING && !g->held && !g->ended)
        vmm__gdb_request_hold(g, 5); /* points are removed from stopped vCPUs only: stop them, then let them go */
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
        vmm__gdb_go(g);
    vmm__vm_broadcast(vm);
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
        vmm__gdb_go(g);
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
    vmm__vm_broadcast(g->vm); /* vmm__gdb_destroy waits for an exit to be reported */
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
    bool sent = n < 0 || send_packet(g, g->out, (size_t)n);
    pthread_mutex_lock(&g->vm->lock);
    bool killed = g->killed;
    pthread_mutex_unlock(&g->vm->lock);
    /*
     * A kill ends the run only after its reply went out: the run's end may close the socket at once
     * (vmmrun exits), and gdb then printed "Remote connection closed" instead of "killed" (seen once
     * under ASan with two vCPU threads).
     */
    if (killed)
        vmm_request_stop(g->vm);
    if (!sent)
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
                vmm__gdb_request_hold(g, 2);
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
        vmm__gdb_request_hold(g, 5); /* gdb expects the target stopped when it attaches */
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
    vmm__gdb_notify(g);
    if (g->cfd >= 0)                 /* the server thread closes cfd under vm->lock: this is still its connection */
        shutdown(g->cfd, SHUT_RDWR); /* a send blocked on a debugger that stopped reading returns */
    pthread_mutex_unlock(&vm->lock);
    if (g->thread_started)
        pthread_join(g->thread, NULL);
    vmm__rev_destroy(vm);
    vm->gdb = NULL;
    gdb_free(g);
}
