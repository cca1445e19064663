/*
 * hvf_exits.c - the Hypervisor.framework backend's exits, decoded from the exception syndrome
 * (ESR_EL2, Arm ARM D17.2.37) and served on the vCPU's owner thread: data aborts with a valid ISS
 * to the MMIO bus, trapped system registers to the sysreg dispatcher (the GIC's CPU interface, the
 * EL1 physical timer), HVC and SMC to PSCI, WFI to the run loop's wait, and the virtual timer.
 */
#include "../core/vm.h"

#if VMM_HAVE_HVF

#include <inttypes.h>
#include <mach/mach_time.h>

#include "../arm/arm.h"
#include "../arm/pmu.h"
#include "../arm/timer.h"
#include "../core/bus.h"
#include "../core/layout.h"
#include "hvf.h"

#define ESR_EC(esr) (((esr) >> 26) & 0x3f)
#define EC_UNKNOWN 0x00
#define EC_WFX 0x01
#define EC_HVC64 0x16
#define EC_SMC64 0x17
#define EC_SYSREG 0x18
#define EC_IABT_LOW 0x20u
#define EC_IABT_CUR 0x21u
#define EC_DABT_LOW 0x24u
#define EC_DABT_CUR 0x25u

#define EXIT_TAG 0x564d4d5059455854ULL /* "VMMPYEXT" in x5: x4 holds the guest's exit status */

#define R_CNTPCT SYSREG(3, 3, 14, 0, 1)
#define R_CNTP_TVAL SYSREG(3, 3, 14, 2, 0)
#define R_CNTP_CTL SYSREG(3, 3, 14, 2, 1)
#define R_CNTP_CVAL SYSREG(3, 3, 14, 2, 2)
#define R_CNTV_CTL SYSREG(3, 3, 14, 3, 1)
#define R_CNTV_CVAL SYSREG(3, 3, 14, 3, 2)
#define R_OSLAR SYSREG(2, 0, 1, 0, 4)
#define R_OSLSR SYSREG(2, 0, 1, 1, 4)
#define R_PMUSERENR SYSREG(3, 3, 9, 14, 0)
#define R_OSDLR SYSREG(2, 0, 1, 3, 4)

#define ISS_FNV (1u << 10)

#define CTL_ENABLE 1u
#define CTL_IMASK 2u
#define CTL_ISTATUS 4u

static uint64_t get_x(struct hvf_vcpu *h, unsigned n)
{
    uint64_t v = 0;
    if (n < 31)
        hv_vcpu_get_reg(h->id, (hv_reg_t)(HV_REG_X0 + n), &v);
    return v; /* 31: XZR */
}

static void set_x(struct hvf_vcpu *h, unsigned n, uint64_t v)
{
    if (n < 31)
        hv_vcpu_set_reg(h->id, (hv_reg_t)(HV_REG_X0 + n), v);
}

#define PSTATE_SS (1u << 21) /* software step (Arm ARM C5.2.18, SPSR_EL2.SS) */

static uint64_t get_pc(struct hvf_vcpu *h)
{
    uint64_t pc = 0;
    hv_vcpu_get_reg(h->id, HV_REG_PC, &pc);
    return pc;
}

/*
 * Complete an instruction we emulated: the PC past it and, as its execution would have, the
 * software-step state machine advanced (Arm ARM D2.12.5): a guest stepping itself (PSTATE.SS 1,
 * active-not-pending) is now active-pending, so the step exception is taken before the next
 * instruction, not after it. KVM does the same in kvm_skip_instr.
 */
static void advance_pc(struct hvf_vcpu *h)
{
    uint64_t cpsr = 0;
    hv_vcpu_set_reg(h->id, HV_REG_PC, get_pc(h) + 4);
    if (hv_vcpu_get_reg(h->id, HV_REG_CPSR, &cpsr) == HV_SUCCESS && (cpsr & PSTATE_SS))
        hv_vcpu_set_reg(h->id, HV_REG_CPSR, cpsr & ~(uint64_t)PSTATE_SS);
}

static void guest_error_exit(struct hvf_vcpu *h, struct vmm_exit *exit, const char *fmt, uint64_t esr)
{
    struct vmm_vm *vm = h->vcpu->vm;
    vmm__set_error(vm, VMM_EINVAL, "vCPU %u at pc 0x%" PRIx64 ": %s (ESR 0x%08" PRIx64 ")", h->vcpu->id, get_pc(h), fmt,
                   esr);
    vmm__guest_error(vm, "hvf", "%s", vm->errmsg);
    exit->kind = VMM_EXIT_GUEST_ERROR;
}

/*
 * Take a synchronous exception to the guest's EL1 (Arm ARM D1.10.2), as the hardware would have
 * without us: ESR/FAR/ELR/SPSR_EL1, EL1h with DAIF masked, PC at the vector for where it came from.
 */
static void inject_sync(struct hvf_vcpu *h, uint32_t esr, bool set_far, uint64_t far)
{
    uint64_t cpsr = 0, vbar = 0, pc = get_pc(h);
    hv_vcpu_get_reg(h->id, HV_REG_CPSR, &cpsr);
    hv_vcpu_get_sys_reg(h->id, HV_SYS_REG_VBAR_EL1, &vbar);
    unsigned el = (cpsr >> 2) & 3;
    uint64_t off = el == 0 ? 0x400 : (cpsr & 1) ? 0x200 : 0x000;

    hv_vcpu_set_sys_reg(h->id, HV_SYS_REG_ESR_EL1, esr);
    if (set_far)
        hv_vcpu_set_sys_reg(h->id, HV_SYS_REG_FAR_EL1, far);
    hv_vcpu_set_sys_reg(h->id, HV_SYS_REG_ELR_EL1, pc);
    hv_vcpu_set_sys_reg(h->id, HV_SYS_REG_SPSR_EL1, cpsr);
    hv_vcpu_set_reg(h->id, HV_REG_CPSR, 0x3c5 | (cpsr & (1u << 22))); /* EL1h, DAIF; PAN kept */
    hv_vcpu_set_reg(h->id, HV_REG_PC, vbar + off);
    vmm__count(h->vcpu->vm, &h->vcpu->vm->stats.exceptions);
}

/* UNDEFINED for the guest (EC 0, IL set): a register or call that does not exist. */
static void inject_undef(struct hvf_vcpu *h)
{
    inject_sync(h, 1u << 25, false, 0);
}

/* ---- data aborts: MMIO ---- */

static bool data_abort(struct hvf_vcpu *h, uint64_t esr, struct vmm_exit *exit)
{
    struct vmm_vm *vm = h->vcpu->vm;
    uint64_t pa = h->exit->exception.physical_address, va = h->exit->exception.virtual_address;
    bool isv = (esr >> 24) & 1, write = (esr >> 6) & 1;

    if (pa >= LAYOUT_RAM_BASE) { /* above RAM (stage-2 maps all of RAM): a synchronous external abort */
        uint64_t cpsr = 0;
        hv_vcpu_get_reg(h->id, HV_REG_CPSR, &cpsr);
        uint32_t ec = ((cpsr >> 2) & 3) ? EC_DABT_CUR : EC_DABT_LOW;
        (void)va;
        if (isv)
            vmm__guest_error(vm, "hvf", "vCPU %u: %u-byte %s at unmapped address 0x%" PRIx64, h->vcpu->id,
                             1u << ((esr >> 22) & 3), write ? "write" : "read", pa);
        else
            vmm__guest_error(vm, "hvf", "vCPU %u: %s at unmapped address 0x%" PRIx64, h->vcpu->id,
                             write ? "write" : "read", pa);
        /* the syndrome the soft and KVM backends give: FnV set (FAR not valid), WnR, DFSC 0x10 */
        inject_sync(h, ec << 26 | 1u << 25 | ISS_FNV | (write ? 1u << 6 : 0) | 0x10, false, 0);
        return false;
    }
    if (!isv) {
        guest_error_exit(h, exit,
                         "an MMIO access the hypervisor cannot decode (load/store pair, writeback or SIMD "
                         "register); access device registers with plain LDR/STR",
                         esr);
        return true;
    }
    unsigned sas = (esr >> 22) & 3, srt = (esr >> 16) & 31, size = 1u << sas;
    bool sse = (esr >> 21) & 1, sf = (esr >> 15) & 1;
    uint64_t data = write ? get_x(h, srt) : 0;
    if (write && size < 8)
        data &= (1ull << (8 * size)) - 1;
    vmm__bus_access(vm, pa, size, write, &data);
    if (!write) {
        if (sse && size < 8) /* sign-extend from the access size */
            data = (uint64_t)((int64_t)(data << (64 - 8 * size)) >> (64 - 8 * size));
        if (!sf)
            data = (uint32_t)data;
        set_x(h, srt, data);
    }
    advance_pc(h);
    return false;
}

/* ---- trapped system registers ---- */

/*
 * The EL1 physical timer is the core's (arm/timer.c, counting at TIMER_FREQ_HZ from the VM's clock
 * base); the guest sees it in the host counter's units, in which CNTPCT_EL0 is the host's count
 * (mach_absolute_time) and CNTVCT_EL0 = CNTPCT_EL0 - CNTVOFF, as on the hardware.
 */
static uint64_t ticks_to_core(const struct hvf_vm *hv, uint64_t ticks)
{
    if (ticks <= hv->vt_offset)
        return 0;
    uint64_t ns = vmm__hvf_ticks_to_ns(hv, ticks - hv->vt_offset);
    return (ns + TIMER_NS_PER_TICK - 1) / TIMER_NS_PER_TICK; /* never early */
}

static int phys_timer(struct hvf_vcpu *h, uint32_t id, bool read, uint64_t *val)
{
    struct vmm_vcpu *vcpu = h->vcpu;
    const struct hvf_vm *hv = vcpu->vm->bstate;
    uint64_t now = mach_absolute_time(), cval;

    switch (id) {
    case R_CNTPCT:
        if (read)
            *val = now;
        return 0;
    case R_CNTP_CTL:
        return vmm__timer_sysreg(vcpu, id, read, val);
    case R_CNTP_CVAL:
        if (read) {
            *val = h->cntp_cval;
            return 0;
        }
        h->cntp_cval = *val;
        break;
    default: /* TVAL: the signed 32-bit distance to CVAL */
        if (read) {
            *val = (uint32_t)(h->cntp_cval - now);
            return 0;
        }
        h->cntp_cval = now + (uint64_t)(int64_t)(int32_t)(uint32_t)*val;
        break;
    }
    cval = ticks_to_core(hv, h->cntp_cval);
    return vmm__timer_sysreg(vcpu, R_CNTP_CVAL, false, &cval);
}

/*
 * The PMU (MDCR_EL2.TPM traps it all to us, EL0 accesses included): arm/pmu.c, with the VM's clock
 * (pmu.host_clock: the framework does not count the guest's instructions). At EL0 PMUSERENR_EL0 decides
 * first, as the CPU would: a disallowed access is the EL1 trap it would have been (the same syndrome).
 */
static bool pmu_reg(struct hvf_vcpu *h, uint32_t id, uint64_t esr, bool read, unsigned rt, uint64_t val)
{
    uint64_t cpsr = 0;
    hv_vcpu_get_reg(h->id, HV_REG_CPSR, &cpsr);
    if (((cpsr >> 2) & 3) == 0 && !vmm__pmu_el0_allowed(id, read, h->pmuserenr)) {
        inject_sync(h, (uint32_t)esr, false, 0);
        return false;
    }
    if (vmm__sysreg_access(h->vcpu, id, read, &val)) {
        inject_undef(h);
        return false;
    }
    if (read)
        set_x(h, rt, val);
    else
        vmm__timers_changed(h->vcpu); /* an overflow interrupt may now be due sooner */
    advance_pc(h);
    return false;
}

static bool sysreg(struct hvf_vcpu *h, uint64_t esr, struct vmm_exit *exit)
{
    unsigned op0 = (esr >> 20) & 3, op2 = (esr >> 17) & 7, op1 = (esr >> 14) & 7, crn = (esr >> 10) & 15;
    unsigned rt = (esr >> 5) & 31, crm = (esr >> 1) & 15;
    bool read = esr & 1;
    uint32_t id = SYSREG(op0, op1, crn, crm, op2);
    uint64_t val = read ? 0 : get_x(h, rt);
    int rc;
    (void)exit;

    if (id == R_CNTPCT || (op0 == 3 && op1 == 3 && crn == 14 && crm == 2 && op2 <= 2)) {
        rc = phys_timer(h, id, read, &val);
    } else if (id == R_OSLAR || id == R_OSLSR || id == R_OSDLR) {
        /* the OS lock (Arm ARM D2.5): OSLSR_EL1 = OSLM 0b10 | OSLK; OSDLR RAZ/WI */
        if (id == R_OSLAR && !read)
            h->oslsr = (val & 1) << 1;
        val = id == R_OSLSR ? 0x8 | h->oslsr : 0;
        rc = 0;
    } else if (id == R_PMUSERENR) {
        if (!read)
            h->pmuserenr = val & 0xf;
        val = h->pmuserenr;
        rc = 0;
    } else if (vmm__pmu_sysreg_is_ours(id)) {
        return pmu_reg(h, id, esr, read, rt, val);
    } else if (op0 == 3 && crn == 9 && crm >= 12) {
        val = 0; /* the rest of the PMU's (PMMIR_EL1...): RAZ/WI */
        rc = 0;
    } else {
        rc = vmm__sysreg_access(h->vcpu, id, read, &val);
    }
    if (rc) { /* no such register: UNDEFINED, as the hardware would make it */
        inject_undef(h);
        return false;
    }
    if (read)
        set_x(h, rt, val);
    advance_pc(h);
    return false;
}

/* ---- HVC / SMC: PSCI and SMCCC ---- */

static bool call(struct hvf_vcpu *h, struct vmm_exit *exit)
{
    uint64_t x[4];
    for (unsigned i = 0; i < 4; i++)
        x[i] = get_x(h, i);
    enum vmm_exit_kind kind = vmm__psci_call(h->vcpu, x);
    for (unsigned i = 0; i < 4; i++)
        set_x(h, i, x[i]);
    if (kind == VMM_EXIT_NONE)
        return false;
    exit->kind = kind;
    exit->status = 0;
    /* a guest may pass an exit status in x4, tagged by x5 = "VMMPYEXT" (guest/rt/psci.c) */
    if (kind == VMM_EXIT_SHUTDOWN && get_x(h, 5) == EXIT_TAG)
        exit->status = (int)(uint32_t)get_x(h, 4);
    return true;
}

/* ---- the virtual timer ---- */

/*
 * The framework runs the virtual timer and reports its output rising (VTIMER_ACTIVATED, which masks
 * it); the interrupt is ours to raise in our GIC, and the core's model of CNTV (arm/timer.c) does it:
 * it mirrors the hardware timer's level, and while the vCPU waits in WFI its deadline (in the core's
 * clock), so that the run loop's wait ends there. The vtimer stays masked until the guest has
 * dealt with it: once its output is low (the handler moved CVAL, disabled or masked it), the level
 * drops and the mask is cleared (checked before every run; a handler's EOI is a trapped ICC
 * register write, so it comes right after).
 */
static void mirror(struct hvf_vcpu *h, uint64_t ctl, uint64_t cval)
{
    vmm__timer_sysreg(h->vcpu, R_CNTV_CVAL, false, &cval);
    vmm__timer_sysreg(h->vcpu, R_CNTV_CTL, false, &ctl);
}

void vmm__hvf_vtimer_fired(struct hvf_vcpu *h)
{
    h->vt_masked = true;
    h->vt_mirrored = true;
    mirror(h, CTL_ENABLE, 0); /* fired: the level is up */
}

static bool vtimer_output(struct hvf_vcpu *h, uint64_t *ctl, uint64_t *cval)
{
    hv_vcpu_get_sys_reg(h->id, HV_SYS_REG_CNTV_CTL_EL0, ctl);
    hv_vcpu_get_sys_reg(h->id, HV_SYS_REG_CNTV_CVAL_EL0, cval);
    return (*ctl & (CTL_ENABLE | CTL_IMASK | CTL_ISTATUS)) == (CTL_ENABLE | CTL_ISTATUS);
}

void vmm__hvf_vtimer_sync(struct hvf_vcpu *h)
{
    uint64_t ctl, cval;

    if (!h->vt_mirrored)
        return;
    if (vtimer_output(h, &ctl, &cval)) {
        if (!h->vt_masked) /* the deadline of the WFI passed: it fired while the vCPU waited */
            vmm__hvf_vtimer_fired(h);
        hv_vcpu_set_vtimer_mask(h->id, true);
        return;
    }
    h->vt_mirrored = false;
    mirror(h, 0, 0); /* the level drops */
    if (h->vt_masked) {
        h->vt_masked = false;
        hv_vcpu_set_vtimer_mask(h->id, false);
    }
}

/* WFI with the vtimer unmasked: hand its deadline to the core's wait. */
static void vtimer_deadline(struct hvf_vcpu *h)
{
    const struct hvf_vm *hv = h->vcpu->vm->bstate;
    uint64_t ctl, cval;

    if (h->vt_masked)
        return; /* its interrupt is up already */
    if (vtimer_output(h, &ctl, &cval)) {
        vmm__hvf_vtimer_fired(h);
        hv_vcpu_set_vtimer_mask(h->id, true);
        return;
    }
    if ((ctl & (CTL_ENABLE | CTL_IMASK)) != CTL_ENABLE)
        return;
    h->vt_mirrored = true;
    mirror(h, CTL_ENABLE, ticks_to_core(hv, cval + hv->vt_offset));
}

/*
 * An instruction fetch outside RAM: a synchronous external abort for the guest, unless it is the
 * fetch of an exception vector (the guest took an exception with no vector table in RAM: it would
 * fault again forever), which ends the run naming the exception it took.
 */
static bool fetch_abort(struct hvf_vcpu *h, struct vmm_exit *exit)
{
    struct vmm_vm *vm = h->vcpu->vm;
    uint64_t cpsr = 0, vbar = 0, pc = get_pc(h), esr1 = 0, elr1 = 0;

    hv_vcpu_get_reg(h->id, HV_REG_CPSR, &cpsr);
    hv_vcpu_get_sys_reg(h->id, HV_SYS_REG_VBAR_EL1, &vbar);
    if (pc - vbar < 0x800 && (pc & 0x7f) == 0) {
        hv_vcpu_get_sys_reg(h->id, HV_SYS_REG_ESR_EL1, &esr1);
        hv_vcpu_get_sys_reg(h->id, HV_SYS_REG_ELR_EL1, &elr1);
        vmm__set_error(vm, VMM_EINVAL,
                       "vCPU %u: exception with no executable vector table in RAM (ESR 0x%08" PRIx64 ", pc 0x%" PRIx64
                       ", VBAR_EL1 0x%" PRIx64 ")",
                       h->vcpu->id, esr1, elr1, vbar);
        vmm__guest_error(vm, "hvf", "%s", vm->errmsg);
        exit->kind = VMM_EXIT_GUEST_ERROR;
        return true;
    }
    vmm__guest_error(vm, "hvf", "vCPU %u: instruction fetch at unmapped address 0x%" PRIx64, h->vcpu->id,
                     h->exit->exception.physical_address);
    inject_sync(h, (((cpsr >> 2) & 3) ? EC_IABT_CUR : EC_IABT_LOW) << 26 | 1u << 25 | ISS_FNV | 0x10, false, 0);
    return false;
}

/* ---- the dispatch ---- */

bool vmm__hvf_exception(struct hvf_vcpu *h, struct vmm_exit *exit)
{
    uint64_t esr = h->exit->exception.syndrome;

    switch (ESR_EC(esr)) {
    case EC_DABT_LOW:
        return data_abort(h, esr, exit);
    case EC_SYSREG:
        return sysreg(h, esr, exit);
    case EC_HVC64: /* the PC is past the HVC already */
        return call(h, exit);
    case EC_SMC64: /* the PC is at the SMC */
        advance_pc(h);
        return call(h, exit);
    case EC_WFX:
        advance_pc(h);
        if (esr & 1) /* WFE: nothing to wait for here; the framework yields the CPU */
            return false;
        if (atomic_load(&h->vcpu->irq))
            return false; /* an interrupt is pending: WFI completes at once */
        vtimer_deadline(h);
        if (atomic_load(&h->vcpu->irq))
            return false;
        exit->kind = VMM_EXIT_WFI;
        return true;
    case EC_IABT_LOW:
        return fetch_abort(h, exit);
    default:
        guest_error_exit(h, exit, "an exception the hvf backend does not handle", esr);
        return true;
    }
}

#endif /* VMM_HAVE_HVF */
