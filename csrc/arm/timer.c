/* timer.c - the Arm generic timer (Arm ARM D11): system counter, EL1 virtual and physical timers. */
#include <inttypes.h>

#include "../core/gdb_reverse.h"
#include "../core/irq.h"
#include "../core/layout.h"
#include "../core/run.h"
#include "arm.h"
#include "pmu.h"

/* CNT{V,P}_CTL_EL0 bits */
#define CTL_ENABLE (1u << 0)
#define CTL_IMASK (1u << 1)
#define CTL_ISTATUS (1u << 2)

#define R_CNTFRQ SYSREG(3, 3, 14, 0, 0)
/* CNTKCTL_EL1 bits: EL0 access to the counters and timers */
#define KCTL_EL0PCTEN (1u << 0)
#define KCTL_EL0VCTEN (1u << 1)
#define KCTL_EL0VTEN (1u << 8)
#define KCTL_EL0PTEN (1u << 9)
#define R_CNTPCT SYSREG(3, 3, 14, 0, 1)
#define R_CNTVCT SYSREG(3, 3, 14, 0, 2)
#define R_CNTP_TVAL SYSREG(3, 3, 14, 2, 0)
#define R_CNTP_CTL SYSREG(3, 3, 14, 2, 1)
#define R_CNTP_CVAL SYSREG(3, 3, 14, 2, 2)
#define R_CNTV_TVAL SYSREG(3, 3, 14, 3, 0)
#define R_CNTV_CTL SYSREG(3, 3, 14, 3, 1)
#define R_CNTV_CVAL SYSREG(3, 3, 14, 3, 2)

static const unsigned timer_ppi[TIMER_COUNT] = { LAYOUT_PPI_VIRT_TIMER, LAYOUT_PPI_PHYS_TIMER };

uint64_t vmm__clock_ns(struct vmm_vm *vm, struct vmm_vcpu *vcpu)
{
    if (vm->deterministic)
        return vm->vtime_ns + (vcpu ? vcpu->insns - vcpu->quantum_start : 0);
    uint64_t held = atomic_load(&vm->clock_held); /* a debugger holds the VM: its clock stands (gdbstub.c) */
    return held ? held - 1 : vmm__now_ns() - vm->clock_base_ns;
}

/*
 * A vCPU's lead over vtime_ns (insns - quantum_start) shrinks by ns and stops at 0: quantum_start moves by
 * ns, or up to insns. The lead is a translation block's overshoot of the quantum (the soft backend stops
 * at block starts only): dropping it stepped that vCPU's CNTVCT back, moving the VM clock past the quantum
 * instead moved vmm_stop_at() off its time. Being quantum_start, it is kept in snapshots and checkpoints.
 */
void vmm__vtime_advance(struct vmm_vm *vm, uint64_t ns)
{
    vm->vtime_ns += ns;
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vmm_vcpu *v = &vm->vcpus[i];
        v->quantum_start = v->insns - v->quantum_start > ns ? v->quantum_start + ns : v->insns;
    }
}

/* CNTVOFF is 0: the counts are the same (the patched engine computes them in real time itself: soft.c). */
static uint64_t counter(struct vmm_vcpu *vcpu)
{
    return vmm__clock_ns(vcpu->vm, vcpu) / TIMER_NS_PER_TICK;
}

static bool fired(const struct vmm_timer *t, uint64_t count)
{
    return (t->ctl & CTL_ENABLE) && count >= t->cval;
}

/*
 * The deadline, in clock ns, of a timer whose output can still rise; UINT64_MAX if none. A CVAL beyond
 * VMM_CLOCK_HORIZON_NS (146 years of guest time) is "never": the sums the clock thread, the idle wait
 * and the deterministic budget make with a deadline then cannot overflow (a CVAL near 2^60 used to wrap
 * the wait's absolute time into the past and spin a host core).
 */
static uint64_t deadline_ns(const struct vmm_timer *t, uint64_t count)
{
    if ((t->ctl & (CTL_ENABLE | CTL_IMASK)) != CTL_ENABLE || count >= t->cval)
        return UINT64_MAX;
    return t->cval > VMM_CLOCK_HORIZON_NS / TIMER_NS_PER_TICK ? UINT64_MAX : t->cval * TIMER_NS_PER_TICK;
}

/*
 * Drive one vCPU's timer PPIs from its timers; returns its earliest future
 * deadline. In deterministic mode a vCPU executing now also gets its
 * instruction budget cut so that it stops at that deadline.
 */
static uint64_t update_vcpu(struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = vcpu->vm;
    uint64_t count = counter(vcpu), next = UINT64_MAX;

    for (int i = 0; i < TIMER_COUNT; i++) {
        const struct vmm_timer *t = &vcpu->timer[i];
        bool level = fired(t, count) && !(t->ctl & CTL_IMASK);
        if (level != vcpu->timer_level[i]) {
            vcpu->timer_level[i] = level;
            vmm__irq_set(vm, vcpu->id, timer_ppi[i], level);
        }
        uint64_t d = deadline_ns(t, count);
        if (d < next)
            next = d;
    }
    if (vcpu->pmu.host_clock) { /* a PMU on the VM's clock: its overflow interrupt is a deadline too */
        vmm__pmu_sync(vcpu);
        uint64_t d = vmm__pmu_next_overflow(vcpu);
        if (d < next)
            next = d;
    }
    if (vm->deterministic && next != UINT64_MAX) {
        uint64_t now = vmm__clock_ns(vm, vcpu);
        uint64_t limit = vcpu->insns + (next - now);
        if (limit < vcpu->insn_limit)
            vcpu->insn_limit = limit;
    }
    atomic_store(&vcpu->deadline_ns, next);
    return next;
}

/*
 * The clock thread (run.c clock_main) sleeps on vm->cond until the earliest deadline: wake it to re-arm. Only
 * it: a deadline moves on the thread that runs its vCPU, so no vCPU thread sleeps on it (vmm__vm_broadcast
 * would also wake every sleeping vCPU thread's vcpu->wake for nothing).
 */
static void wake_clock_thread(struct vmm_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
}

/*
 * A deadline moved to `d` without a timer register write (an update after a slice or an exit): the clock
 * thread, which after a kick waits for the deadline to change, must re-arm for it, sooner or later. Without
 * this a second timer's deadline, which becomes the next one only once the first has fired, was never kicked
 * for while the vCPU executed (a guest spinning with CNTV and CNTP armed took CNTV's interrupt only).
 */
static void deadline_moved(struct vmm_vm *vm, uint64_t old, uint64_t d)
{
    if (d == old || d == UINT64_MAX || vm->deterministic)
        return;
    wake_clock_thread(vm);
}

uint64_t vmm__timers_update_vcpu(struct vmm_vcpu *vcpu)
{
    uint64_t old = atomic_load(&vcpu->deadline_ns);
    uint64_t d = update_vcpu(vcpu);

    deadline_moved(vcpu->vm, old, d);
    return d;
}

void vmm__timers_update(struct vmm_vm *vm)
{
    uint64_t next = UINT64_MAX;

    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct vmm_vcpu *vcpu = &vm->vcpus[i];
        uint64_t d = update_vcpu(vcpu);
        if (vcpu->on && d < next)
            next = d;
    }
    deadline_moved(vm, atomic_exchange(&vm->next_deadline_ns, next), next);
}

/*
 * A timer register changed: update its PPI and, if it now expires sooner,
 * wake the clock thread (a vCPU executing guest code past its deadline must
 * be kicked to see its timer fire). With vCPU threads the clock thread watches each
 * vCPU's own deadline (the global one is not kept: threads would race on it).
 */
static void timer_changed(struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = vcpu->vm;
    uint64_t old = atomic_load(&vcpu->deadline_ns);
    uint64_t d = update_vcpu(vcpu);
    bool threads = vmm__has_cap(vm->ops, VMM_CAP_VCPU_THREADS);
    /* threads: any new deadline (the clock thread may have served the old one, which can be in the past) */
    bool sooner = threads ? d != old && d != UINT64_MAX : d < atomic_load(&vm->next_deadline_ns);

    if (sooner) {
        if (!threads)
            atomic_store(&vm->next_deadline_ns, d);
        if (!vm->deterministic)
            wake_clock_thread(vm);
    }
}

void vmm__timers_changed(struct vmm_vcpu *vcpu)
{
    timer_changed(vcpu);
}

bool vmm__timer_sysreg_is_ours(uint32_t id)
{
    return SYSREG_OP0(id) == 3 && SYSREG_OP1(id) == 3 && SYSREG_CRN(id) == 14 &&
           (id == R_CNTFRQ || id == R_CNTPCT || id == R_CNTVCT || SYSREG_CRM(id) == 2 || SYSREG_CRM(id) == 3) &&
           SYSREG_OP2(id) <= 2;
}

/*
 * CNTKCTL_EL1's EL0 controls (Arm ARM D13.11: CNTFRQ_EL0, CNTPCT_EL0, CNTVCT_EL0, CNTP_*, CNTV_* "Accessibility";
 * QEMU 7.2's gt_cntfrq_access, gt_counter_access, gt_timer_access): an access they deny traps to EL1 (EC 0x18).
 */
bool vmm__timer_el0_allowed(uint32_t id, bool is_read, uint64_t cntkctl)
{
    switch (id) {
    case R_CNTFRQ:
        return is_read && (cntkctl & (KCTL_EL0PCTEN | KCTL_EL0VCTEN));
    case R_CNTPCT:
        return is_read && (cntkctl & KCTL_EL0PCTEN);
    case R_CNTVCT:
        return is_read && (cntkctl & KCTL_EL0VCTEN);
    }
    if (SYSREG_CRM(id) == 2) /* CNTP_TVAL, CNTP_CTL, CNTP_CVAL */
        return cntkctl & KCTL_EL0PTEN;
    if (SYSREG_CRM(id) == 3) /* the virtual timer's */
        return cntkctl & KCTL_EL0VTEN;
    return false;
}

int vmm__timer_sysreg(struct vmm_vcpu *vcpu, uint32_t id, bool is_read, uint64_t *val)
{
    struct vmm_timer *t;
    uint64_t count;

    switch (id) {
    case R_CNTFRQ:
        if (is_read)
            *val = TIMER_FREQ_HZ;
        return 0; /* writable only at the highest EL: ignored */
    case R_CNTPCT:
    case R_CNTVCT:
        if (is_read)
            *val = counter(vcpu);
        return 0;
    case R_CNTV_CTL:
    case R_CNTV_CVAL:
    case R_CNTV_TVAL:
        t = &vcpu->timer[TIMER_VIRT];
        break;
    case R_CNTP_CTL:
    case R_CNTP_CVAL:
    case R_CNTP_TVAL:
        t = &vcpu->timer[TIMER_PHYS];
        break;
    default:
        return VMM_ENOTSUP;
    }
    switch (SYSREG_OP2(id)) {
    case 1: /* CTL: the clock is read only when ISTATUS depends on it (a disabled timer's is 0) */
        if (is_read) {
            *val = t->ctl | ((t->ctl & CTL_ENABLE) && fired(t, counter(vcpu)) ? CTL_ISTATUS : 0);
            return 0;
        }
        t->ctl = *val & (CTL_ENABLE | CTL_IMASK);
        break;
    case 2: /* CVAL */
        if (is_read) {
            *val = t->cval;
            return 0;
        }
        t->cval = *val;
        break;
    default: /* TVAL: the signed 32-bit distance to CVAL */
        count = counter(vcpu);
        if (is_read) {
            *val = (uint32_t)(t->cval - count);
            return 0;
        }
        t->cval = count + (uint64_t)(int64_t)(int32_t)(uint32_t)*val;
        break;
    }
    timer_changed(vcpu);
    return 0;
}

VMM_EXPORT uint64_t vmm_clock_ns(vmm_vm *vm)
{
    return vm ? vmm__clock_ns(vm, NULL) : 0;
}

VMM_EXPORT int vmm_clock_advance(vmm_vm *vm, uint64_t ns)
{
    if (!vm)
        return VMM_EINVAL;
    if (!vm->deterministic)
        return vmm__set_error(vm, VMM_ESTATE, "the clock can only be moved in deterministic mode");
    int rc = vmm__check_idle(vm, "the clock cannot be moved");
    if (rc)
        return rc;
    vmm__vtime_advance(vm, ns);
    vmm__timers_update(vm);
    vmm__rev_host_changed(vm); /* a replay would not move the clock: reverse history starts again */
    return 0;
}
