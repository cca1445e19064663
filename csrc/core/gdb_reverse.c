/*
 * gdb_reverse.c - reverse execution (gdb's reverse-stepi and reverse-continue) on top of deterministic
 * replay. In deterministic mode a run from a given state is the same run every time, so "go back" is
 * "restore an earlier checkpoint and run forward to the place meant".
 *
 * Positions. A place in the past is named by one vCPU and its executed-instruction count: (cpu, n) is
 * the moment that vCPU is about to execute an instruction with n executed (vcpu->insns == n). The
 * round-robin order of the deterministic loop makes that one moment of the whole VM: every other vCPU
 * is wherever the schedule had it then. reverse-stepi of vCPU c at count n goes to (c, n - 1), the
 * moment before c's previous instruction; in SMP the other vCPUs go back as far as the schedule says
 * (they may go back by a whole slice).
 *
 * History. While a debugger is attached the loop takes a checkpoint (checkpoint.c) at a round boundary
 * every `interval` ns of virtual time, the first at once; they are kept within a memory budget (the
 * first always; others thinned where they are densest). A replay takes no checkpoint; a write of guest
 * memory or registers by the debugger makes the checkpoints after the current round stale (dropped).
 *
 * Landing exactly. The soft backend stops a vCPU's slice only at translation-block starts
 * (vcpu->insn_limit is checked per block), so a replay runs block-granular up to REV_MARGIN
 * instructions before the target, then with the count hook (debug.h vmm_debug_cfg.count), which stops
 * before exactly the instruction meant, as a breakpoint does. Slices cut at block starts are what the
 * deterministic loop does anyway, so the replay is the run.
 *
 * reverse-continue scans: from the newest checkpoint before the current position up to it, with the
 * debugger's breakpoints and watchpoints installed, recording each hit (its vCPU, count, kind, address)
 * and stepping past it instead of stopping; if the segment had none, the segment before it; and so on
 * back to the first checkpoint. The last hit found is the one meant: one more replay lands there and
 * reports it as a hit. None: the VM goes back to the first checkpoint and reports "replaylog:begin"
 * (gdb: "No more reverse-execution history.").
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "console.h"
#include "debug.h"
#include "gdb_packet.h"
#include "gdb_reverse.h"
#include "machine.h"
#include "vm.h"

#define REV_MAX_CKPT 256
#define REV_MARGIN 4096 /* instructions: more than one translation block (TCG: at most 512) */
#define REV_MAX_POINTS 64
#define REV_INTERVAL_NS 10000000ULL /* 10 ms of virtual time between checkpoints, at least */
#define REV_COST_SHARE 9            /* and host time between them >= 9x the last one's cost: <= 10% of it */
#define REV_BUDGET (256ull << 20)   /* bytes of checkpoints kept */

enum rev_mode { REV_IDLE, REV_SCAN, REV_LAND };
enum rev_cfg { CFG_UNKNOWN, CFG_NONE, CFG_POINTS, CFG_COUNT, CFG_POINTS_COUNT, CFG_STEP };

struct rev_hit {
    unsigned cpu, ck;
    uint64_t insns, addr;
    int point;
};

struct gdb_rev {
    struct vmm_vm *vm;
    struct vmm_checkpoint *ck[REV_MAX_CKPT];
    unsigned nck;
    size_t bytes;
    /* under vm->lock: the server's settings and requests */
    uint64_t interval_ns, budget;
    bool attached, diverged;
    bool req_step;
    unsigned req_cpu;
    struct vmm_debug_point pts[REV_MAX_POINTS];
    unsigned npts;
    atomic_bool req;    /* a move asked for: the run thread takes it at the top of a round */
    atomic_bool rewind; /* the replay's segment ended: the next step at the top of a round */
    /* the move under way (run thread) */
    enum rev_mode mode;
    unsigned cpu; /* the count target: (cpu, at) */
    uint64_t at;  /* UINT64_MAX: none (a segment that ends at a checkpoint) */
    unsigned seg; /* the checkpoint the replay started from */
    bool seg_to_ck;
    uint64_t seg_end_vtime;
    uint64_t origin_vtime; /* the round the move began in: a replay never goes past it */
    bool have_hit;
    struct rev_hit hit;
    struct gdb_stop land; /* what a landing reports */
    int stepover;         /* the vCPU stepping past a recorded hit, or -1 */
    enum rev_cfg cfg[VMM_MAX_CPUS];
    bool warned;
    /* for "monitor reverse" */
    uint64_t moves, restores, last_take_ns, last_restore_ns, last_end_ns;
};

const char *vmm__rev_why_not(struct vmm_vm *vm)
{
    if (!vm->deterministic)
        return "reverse execution needs deterministic mode (--deterministic, Machine(deterministic=True))";
    if (vmm__has_cap(vm->ops, VMM_CAP_VCPU_THREADS) || !vm->ops->vcpu_save || !vm->ops->vcpu_load)
        return "reverse execution needs the soft backend (its vCPU state is what a checkpoint saves)";
    if (!vm->gdb_rev)
        return "reverse execution is not available (out of memory)";
    for (unsigned i = 0; i < vm->machine.n; i++) {
        const struct vmm_machine_dev *d = &vm->machine.dev[i];
        if ((d->kind == VMM_MK_DISK || d->kind == VMM_MK_SHARE) && !d->readonly)
            return "reverse execution cannot take back what the guest wrote to a host file: attach disks "
                   "and shared directories read-only";
    }
    return NULL;
}

struct gdb_rev *vmm__rev_create(struct vmm_vm *vm)
{
    struct gdb_rev *r;

    if (!vm->deterministic || vmm__has_cap(vm->ops, VMM_CAP_VCPU_THREADS) || !vm->ops->vcpu_save ||
        !vm->ops->vcpu_load || !(r = calloc(1, sizeof *r)))
        return NULL;
    r->vm = vm;
    r->interval_ns = REV_INTERVAL_NS;
    r->budget = REV_BUDGET;
    r->stepover = -1;
    return r;
}

static void drop_from(struct gdb_rev *r, unsigned from)
{
    while (r->nck > from) {
        struct vmm_checkpoint *c = r->ck[--r->nck];
        r->bytes -= c->bytes;
        vmm__checkpoint_free(c);
    }
}

void vmm__rev_destroy(struct vmm_vm *vm)
{
    struct gdb_rev *r = vm->gdb_rev;
    if (!r)
        return;
    drop_from(r, 0);
    free(r);
    vm->gdb_rev = NULL;
}

void vmm__rev_attach(struct vmm_vm *vm, bool attached)
{
    if (vm->gdb_rev)
        vm->gdb_rev->attached = attached;
}

void vmm__rev_diverged(struct vmm_vm *vm)
{
    if (!vm->gdb_rev)
        return;
    vm->gdb_rev->diverged = true;
    vmm__console_out_diverged(vm->console); /* no longer a replay: its output is not the old run's */
}

void vmm__rev_host_changed(struct vmm_vm *vm)
{
    if (!vm->gdb_rev)
        return;
    pthread_mutex_lock(&vm->lock);
    vmm__rev_diverged(vm);
    pthread_mutex_unlock(&vm->lock);
}

int vmm__rev_request(struct vmm_vm *vm, bool step, unsigned cpu, const struct vmm_debug_point *pts, unsigned n,
                     char *why, size_t cap)
{
    struct gdb_rev *r = vm->gdb_rev;
    const char *no = vmm__rev_why_not(vm);

    if (!no && r->diverged)
        no = "no execution history: the debugger changed the guest, history starts again when it runs";
    else if (!no && !r->nck)
        no = "no execution history yet (it starts when the VM runs)";
    else if (!no && cpu >= vm->ncpus)
        no = "no such vCPU";
    if (no) {
        snprintf(why, cap, "%s", no);
        return -1;
    }
    r->req_step = step;
    r->req_cpu = cpu;
    r->npts = n < REV_MAX_POINTS ? n : REV_MAX_POINTS;
    memcpy(r->pts, pts, r->npts * sizeof *pts);
    atomic_store(&r->req, true);
    return 0;
}

/* ---- the run thread's side ---- */

bool vmm__rev_unwinding(struct vmm_vm *vm)
{
    struct gdb_rev *r = vm->gdb_rev;
    return atomic_load(&r->req) || atomic_load(&r->rewind);
}

void vmm__rev_resumed(struct vmm_vm *vm)
{
    struct gdb_rev *r = vm->gdb_rev;
    if (r->mode == REV_IDLE)
        return;
    r->mode = REV_IDLE; /* ^C during a replay: the move is over where it stands (a state of the past) */
    r->stepover = -1;
    atomic_store(&r->rewind, false);
}

/*
 * The debugger wrote guest memory or registers: a replay from any checkpoint would run without that write,
 * so history starts anew (the next round boundary takes its first checkpoint).
 */
static void prune(struct gdb_rev *r)
{
    struct vmm_vm *vm = r->vm;
    bool diverged;

    pthread_mutex_lock(&vm->lock);
    diverged = r->diverged;
    r->diverged = false;
    pthread_mutex_unlock(&vm->lock);
    if (diverged)
        drop_from(r, 0);
}

static int restore(struct gdb_rev *r, unsigned k)
{
    struct vmm_vm *vm = r->vm;
    uint64_t t0 = vmm__now_ns();
    int err = vmm__checkpoint_restore(vm, r->ck[k]);

    r->last_restore_ns = vmm__now_ns() - t0;
    r->restores++;
    for (unsigned i = 0; i < VMM_MAX_CPUS; i++)
        r->cfg[i] = CFG_UNKNOWN;
    r->stepover = -1;
    if (err)
        vmm__log(vm, VMM_LOG_ERROR, "gdb", "reverse: %s", vm->errmsg);
    return err;
}

/* The newest checkpoint where vCPU cpu had executed at most n instructions; -1 if none. */
static int before(struct gdb_rev *r, unsigned cpu, uint64_t n)
{
    for (unsigned k = r->nck; k-- > 0;)
        if (r->ck[k]->insns[cpu] <= n)
            return (int)k;
    return -1;
}

static void stop(struct gdb_rev *r, const struct gdb_stop *st)
{
    r->mode = REV_IDLE;
    vmm__gdb_stop_here(r->vm, st);
}

/* The replay went past where the move began without reaching its target: say so, stop where it stands. */
static void lost(struct gdb_rev *r)
{
    struct gdb_stop st = { .kind = GDB_STOP_SIGNAL, .value = 5, .cpu = r->cpu, .point = -1 };
    vmm__log(r->vm, VMM_LOG_ERROR, "gdb", "reverse: vCPU %u did not reach instruction %" PRIu64 " in the replay",
             r->cpu, r->at);
    stop(r, &st);
}

/* The start of history: back to the first checkpoint, reported as gdb's "replaylog:begin". */
static void at_begin(struct gdb_rev *r, unsigned cpu)
{
    struct gdb_stop st = { .kind = GDB_STOP_SIGNAL, .value = 5, .cpu = cpu, .point = -1, .replay_begin = true };
    if (r->nck)
        restore(r, 0);
    stop(r, &st);
}

static void land(struct gdb_rev *r, unsigned k, unsigned cpu, uint64_t at, const struct gdb_stop *st)
{
    if (restore(r, k)) {
        struct gdb_stop err = { .kind = GDB_STOP_SIGNAL, .value = 5, .cpu = cpu, .point = -1 };
        stop(r, &err);
        return;
    }
    r->mode = REV_LAND;
    r->cpu = cpu;
    r->at = at;
    r->land = *st;
}

static void start_move(struct gdb_rev *r)
{
    struct vmm_vm *vm = r->vm;

    pthread_mutex_lock(&vm->lock);
    bool step = r->req_step;
    unsigned c = r->req_cpu;
    atomic_store(&r->req, false);
    pthread_mutex_unlock(&vm->lock);
    prune(r);
    r->moves++;
    r->origin_vtime = vm->vtime_ns;
    uint64_t n = vm->vcpus[c].insns;
    int k = before(r, c, step ? n - 1 : n);
    if (!n || k < 0) {
        at_begin(r, c);
        return;
    }
    if (step) {
        struct gdb_stop st = { .kind = GDB_STOP_SIGNAL, .value = 5, .cpu = c, .point = -1 };
        land(r, (unsigned)k, c, n - 1, &st);
        return;
    }
    r->have_hit = false;
    r->seg = (unsigned)k;
    r->seg_to_ck = false;
    if (restore(r, (unsigned)k)) {
        at_begin(r, c);
        return;
    }
    r->mode = REV_SCAN;
    r->cpu = c;
    r->at = n;
}

/* A scanned segment is over: land on its last hit, scan the segment before, or stop at the beginning. */
static void next_segment(struct gdb_rev *r)
{
    atomic_store(&r->rewind, false);
    if (r->have_hit) {
        struct gdb_stop st = {
            .kind = GDB_STOP_SIGNAL, .value = 5, .cpu = r->hit.cpu, .point = r->hit.point, .data_addr = r->hit.addr
        };
        land(r, r->hit.ck, r->hit.cpu, r->hit.insns, &st);
        return;
    }
    if (r->seg == 0) {
        at_begin(r, r->cpu);
        return;
    }
    r->seg_end_vtime = r->ck[r->seg]->vtime;
    r->seg_to_ck = true;
    r->seg--;
    r->at = UINT64_MAX;
    if (restore(r, r->seg))
        at_begin(r, r->cpu);
}

/* Thin the history where it is densest (never the first or the newest checkpoint). */
static bool evict_one(struct gdb_rev *r)
{
    unsigned best = 0;
    uint64_t gap = UINT64_MAX;

    for (unsigned i = 1; i + 1 < r->nck; i++)
        if (r->ck[i + 1]->vtime - r->ck[i - 1]->vtime < gap) {
            gap = r->ck[i + 1]->vtime - r->ck[i - 1]->vtime;
            best = i;
        }
    if (!best)
        return false;
    r->bytes -= r->ck[best]->bytes;
    vmm__checkpoint_free(r->ck[best]);
    memmove(&r->ck[best], &r->ck[best + 1], (r->nck - best - 1) * sizeof r->ck[0]);
    r->nck--;
    return true;
}

static void maybe_checkpoint(struct gdb_rev *r)
{
    struct vmm_vm *vm = r->vm;
    struct vmm_checkpoint *c;

    pthread_mutex_lock(&vm->lock);
    bool attached = r->attached;
    uint64_t interval = r->interval_ns, budget = r->budget;
    pthread_mutex_unlock(&vm->lock);
    if (!attached) { /* no debugger: no history, no cost */
        drop_from(r, 0);
        return;
    }
    prune(r);
    if (r->nck && (vm->vtime_ns <= r->ck[r->nck - 1]->vtime || vm->vtime_ns - r->ck[r->nck - 1]->vtime < interval))
        return;
    /* a guest with much RAM written costs more per checkpoint: they come less often (host time only decides
       where they are, never what the guest does) */
    if (r->nck && vmm__now_ns() - r->last_end_ns < REV_COST_SHARE * r->last_take_ns)
        return;
    uint64_t t0 = vmm__now_ns();
    if (vmm__checkpoint_take(vm, &c)) {
        if (!r->warned)
            vmm__log(vm, VMM_LOG_WARN, "gdb", "reverse: no checkpoint: %s", vm->errmsg);
        r->warned = true;
        return;
    }
    r->last_end_ns = vmm__now_ns();
    r->last_take_ns = r->last_end_ns - t0;
    if (r->nck == REV_MAX_CKPT)
        evict_one(r);
    while (r->bytes + c->bytes > budget && evict_one(r))
        ;
    if (r->bytes + c->bytes > budget && r->nck) { /* the first and the newest alone exceed it */
        if (!r->warned)
            vmm__log(vm, VMM_LOG_WARN, "gdb", "reverse: checkpoint budget of %" PRIu64 " MiB reached", budget >> 20);
        r->warned = true;
        if (r->nck < 2) {
            vmm__checkpoint_free(c);
            return;
        }
        drop_from(r, r->nck - 1); /* the newest gives way to this one */
    }
    if (!r->nck && c->bytes > budget) {
        vmm__log(vm, VMM_LOG_WARN, "gdb", "reverse: one checkpoint (%zu MiB) exceeds the budget (%" PRIu64 " MiB)",
                 c->bytes >> 20, budget >> 20);
        vmm__checkpoint_free(c);
        return;
    }
    r->ck[r->nck++] = c;
    r->bytes += c->bytes;
}

void vmm__rev_round(struct vmm_vm *vm)
{
    struct gdb_rev *r = vm->gdb_rev;

    for (;;) {
        if (atomic_load(&r->req))
            start_move(r); /* may stop and hold, and the debugger ask again */
        else if (atomic_load(&r->rewind))
            next_segment(r);
        else if (r->mode == REV_SCAN && r->seg_to_ck && vm->vtime_ns == r->seg_end_vtime)
            atomic_store(&r->rewind, true);
        else if (r->mode == REV_SCAN && vm->vtime_ns > r->origin_vtime)
            atomic_store(&r->rewind, true); /* the place the move began from was not an instruction of its vCPU */
        else if (r->mode == REV_LAND && vm->vtime_ns > r->origin_vtime)
            lost(r);
        else
            break;
    }
    if (r->mode == REV_IDLE)
        maybe_checkpoint(r);
}

static enum rev_cfg wanted(struct gdb_rev *r, struct vmm_vcpu *v, bool near)
{
    if (r->stepover == (int)v->id)
        return CFG_STEP;
    if (r->mode == REV_SCAN)
        return near ? CFG_POINTS_COUNT : CFG_POINTS;
    return near ? CFG_COUNT : CFG_NONE;
}

void vmm__rev_slice(struct vmm_vcpu *vcpu)
{
    struct gdb_rev *r = vcpu->vm->gdb_rev;
    bool target = r->mode != REV_IDLE && vcpu->id == r->cpu && r->at != UINT64_MAX;

    if (r->mode == REV_IDLE)
        return;
    if (target && vcpu->insns > r->at) { /* cannot happen if the replay is the run; say so if it does */
        lost(r);
        return;
    }
    bool near = target && r->at - vcpu->insns <= REV_MARGIN;
    if (target && !near && vcpu->insn_limit > r->at - REV_MARGIN)
        vcpu->insn_limit = r->at - REV_MARGIN; /* block-granular up to the margin */
    enum rev_cfg want = wanted(r, vcpu, near);
    if (r->cfg[vcpu->id] == want)
        return;
    bool pts = want == CFG_POINTS || want == CFG_POINTS_COUNT;
    struct vmm_debug_cfg cfg = { .points = r->pts,
                                 .npoints = pts ? r->npts : 0,
                                 .step = want == CFG_STEP,
                                 .count = want == CFG_COUNT || want == CFG_POINTS_COUNT,
                                 .count_at = r->at };
    if (vcpu->vm->ops->debug->set_debug(vcpu, &cfg))
        vmm__log(vcpu->vm, VMM_LOG_WARN, "gdb", "reverse: vCPU %u: %s", vcpu->id, vcpu->vm->errmsg);
    r->cfg[vcpu->id] = want;
}

int vmm__rev_after_run(struct vmm_vcpu *vcpu, const struct vmm_exit *exit, struct gdb_stop *st)
{
    struct gdb_rev *r = vcpu->vm->gdb_rev;

    if (r->mode == REV_IDLE || exit->kind != VMM_EXIT_DEBUG)
        return REV_PASS;
    bool at_target = vcpu->id == r->cpu && vcpu->insns == r->at;
    int point = exit->debug.point;
    if (point == VMM_DBG_COUNT || (at_target && r->mode == REV_SCAN)) {
        if (!at_target)
            return REV_SWALLOW;
        if (r->mode == REV_LAND) {
            *st = r->land;
            r->mode = REV_IDLE;
            return REV_STOP;
        }
        atomic_store(&r->rewind, true); /* the scanned segment reached where the move began */
        return REV_SWALLOW;
    }
    if (point == -1 && r->stepover == (int)vcpu->id) {
        r->stepover = -1; /* stepped past the hit: the points go back in */
        return REV_SWALLOW;
    }
    if (r->mode == REV_SCAN && point >= VMM_DBG_BREAK && point <= VMM_DBG_WATCH_ACCESS) {
        r->hit = (struct rev_hit){
            .cpu = vcpu->id, .ck = r->seg, .insns = vcpu->insns, .addr = exit->debug.addr, .point = point
        };
        r->have_hit = true;
        if (vcpu->vm->ops->debug->step_over)
            vcpu->vm->ops->debug->step_over(vcpu); /* on, points in place */
        else
            r->stepover = (int)vcpu->id; /* one instruction without the points */
    }
    return REV_SWALLOW;
}

/* ---- "monitor reverse [interval MS | budget MIB]" ---- */

int vmm__rev_monitor(struct vmm_vm *vm, const char *args, char *out, size_t cap)
{
    struct gdb_rev *r = vm->gdb_rev;
    unsigned long long v;
    char extra;

    if (!r) {
        snprintf(out, cap, "%s\n", vmm__rev_why_not(vm));
        return 0;
    }
    pthread_mutex_lock(&vm->lock);
    if (sscanf(args, " interval %llu %c", &v, &extra) == 1 && v >= 1 && v <= 3600000)
        r->interval_ns = v * 1000000ULL;
    else if (sscanf(args, " budget %llu %c", &v, &extra) == 1 && v >= 1 && v <= (1ull << 20))
        r->budget = v << 20;
    else if (*args) {
        pthread_mutex_unlock(&vm->lock);
        snprintf(out, cap, "usage: monitor reverse [interval MS (1..3600000) | budget MIB (1..1048576)]\n");
        return 0;
    }
    snprintf(out, cap,
             "reverse execution: %u checkpoint(s), %.1f MiB of %" PRIu64 " MiB, one every %" PRIu64
             " ms of guest time; history from %" PRIu64 " ns; last checkpoint took %.2f ms, last restore %.2f ms; "
             "%" PRIu64 " reverse move(s)\n",
             r->nck, (double)r->bytes / (1 << 20), r->budget >> 20, r->interval_ns / 1000000,
             r->nck ? r->ck[0]->vtime : 0, (double)r->last_take_ns / 1e6, (double)r->last_restore_ns / 1e6, r->moves);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}
