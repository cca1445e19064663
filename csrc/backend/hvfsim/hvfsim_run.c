/*
 * hvfsim_run.c - hv_vcpu_run() for the simulator: a Unicorn engine plays the guest's EL1/EL0, and
 * what Apple's hypervisor would trap to EL2 ends the run with the exit the framework reports:
 *
 *  - a load or store to a guest-physical address nothing maps: HV_EXIT_REASON_EXCEPTION, EC 0x24 with
 *    the ISS decoded from the instruction (hvfsim_decode.c), FAR and the IPA; PC at the instruction;
 *  - an instruction fetch from one: EC 0x20;
 *  - MRS/MSR of a register the framework traps (the GIC CPU interface ICC_*, the EL1 physical timer
 *    CNTP_* and CNTPCT_EL0, the OS lock registers, the PMU): EC 0x18, ISS = op0, op2, op1, CRn, Rt,
 *    CRm, direction; PC at the instruction;
 *  - HVC: EC 0x16, ISS = imm16, PC past it (its preferred return address, Arm ARM D1.10.1);
 *    SMC (trapped by HCR_EL2.TSC): EC 0x17, PC at it (the trap is taken before it executes);
 *  - WFI/WFE: EC 0x01 (ISS.TI = 1 for WFE), PC at the instruction;
 *  - the virtual timer's output rising while its mask is clear: HV_EXIT_REASON_VTIMER_ACTIVATED, and
 *    the mask is set;
 *  - hv_vcpus_exit(): HV_EXIT_REASON_CANCELED.
 *
 * Everything else the guest does stays inside it: its own exceptions (SVC, BRK, stage-1 aborts,
 * UNDEFINED instructions) enter its EL1 vectors here, as the hardware would without involving EL2.
 * One engine runs at a time (hvfsim__lock); a run gives the lock up every SLICE_BLOCKS blocks when
 * another vCPU waits, and carries on.
 */
#include <string.h>

#include "hvfsim.h"
#include "../../arm/watchpoint.h"
#include "../soft_syndrome.h"

#define SLICE_BLOCKS 5000u
#define VTIMER_POLL_BLOCKS 64u

#define INSN_WFI 0xd503207fu
#define INSN_WFE 0xd503205fu
#define INSN_YIELD 0xd503203fu

/* QEMU's exception numbers (target/arm/cpu.h) as UC_HOOK_INTR reports them */
enum {
    EXCP_UDEF = 1,
    EXCP_SWI = 2,
    EXCP_PREFETCH_ABORT = 3,
    EXCP_DATA_ABORT = 4,
    EXCP_BKPT = 7,
    EXCP_HVC = 11,
    EXCP_SMC = 13
};

#define REG_SCR_EL3 SIM_SYSREG(3, 6, 1, 1, 0)
#define REG_HCR_EL2 SIM_SYSREG(3, 4, 1, 1, 0)
#define REG_CNTHCTL_EL2 SIM_SYSREG(3, 4, 14, 1, 0)
#define REG_MDCR_EL2 SIM_SYSREG(3, 4, 1, 1, 1)
#define REG_SCTLR_EL1 SIM_SYSREG(3, 0, 1, 0, 0)
#define REG_SPSR_EL1 SIM_SYSREG(3, 0, 4, 0, 0)
#define REG_ID_AA64PFR0_EL1 SIM_SYSREG(3, 0, 0, 4, 0)
#define REG_ID_AA64MMFR1_EL1 SIM_SYSREG(3, 0, 0, 7, 1)
#define HCR_FMO (1ull << 3)
#define HCR_IMO (1ull << 4)
#define HCR_VF (1ull << 6)
#define HCR_VI (1ull << 7)
#define HCR_RW (1ull << 31)

/* the virtual timer and counter, served from our state (Unicorn's timers are driven by no clock) */
#define R_CNTFRQ SIM_SYSREG(3, 3, 14, 0, 0)
#define R_CNTVCT SIM_SYSREG(3, 3, 14, 0, 2)
#define R_CNTV_TVAL SIM_SYSREG(3, 3, 14, 3, 0)
#define R_CNTV_CTL SIM_SYSREG(3, 3, 14, 3, 1)
#define R_CNTV_CVAL SIM_SYSREG(3, 3, 14, 3, 2)

static uint64_t reg(uc_engine *uc, int r)
{
    uint64_t v = 0;
    uc_reg_read(uc, r, &v);
    return v;
}

static void set_reg(uc_engine *uc, int r, uint64_t v)
{
    uc_reg_write(uc, r, &v);
}

static void stop(struct sim_vcpu *v, enum sim_stop why)
{
    v->stop = why;
    uc_emu_stop(v->uc);
}

static void exception_exit(struct sim_vcpu *v, uint32_t ec, uint32_t iss, uint64_t va, uint64_t pa)
{
    v->exit.reason = HV_EXIT_REASON_EXCEPTION;
    /* a trapped instruction (not executed) while the guest steps itself: see step_after_trap() */
    v->ss_at_trap = (ec == EC_SYSREG || ec == EC_DABT_LOW) && (reg(v->uc, UC_ARM64_REG_PSTATE) & PSTATE_SS);
    v->exit.exception.syndrome = (uint64_t)ec << ESR_EC_SHIFT | ESR_IL | iss;
    v->exit.exception.virtual_address = va;
    v->exit.exception.physical_address = pa;
    v->stop = STOP_EXCEPTION;
}

/* The registers Apple's framework traps to the hypervisor (when it runs no GIC of its own). */
static bool trapped(uint32_t id)
{
    unsigned op0 = id >> 14, op1 = (id >> 11) & 7, crn = (id >> 7) & 15, crm = (id >> 3) & 15, op2 = id & 7;
    if (op0 == 3 && op1 == 0 && ((crn == 12 && crm >= 8 && crm <= 12) || (crn == 4 && crm == 6 && op2 == 0)))
        return true; /* ICC_* */
    if (op0 == 3 && op1 == 3 && crn == 14 && (crm == 2 || (crm == 0 && op2 == 1)))
        return true; /* CNTP_*_EL0, CNTPCT_EL0 */
    if (op0 == 2 && op1 == 0 && crn == 1 && (crm == 0 || crm == 1 || crm == 3) && op2 == 4)
        return true; /* OSLAR_EL1, OSLSR_EL1, OSDLR_EL1 */
    if (op0 == 3 && (crn == 11 || crn == 15))
        return true;                          /* IMPLEMENTATION DEFINED (HCR_EL2.TIDCP) */
    return op0 == 3 && crn == 9 && crm >= 12; /* PMU */
}

static uint32_t sysreg_iss(uint32_t id, unsigned rt, bool read)
{
    return ((id >> 14) & 3) << 20 | (id & 7) << 17 | ((id >> 11) & 7) << 14 | ((id >> 7) & 15) << 10 | rt << 5 |
           ((id >> 3) & 15) << 1 | (read ? 1 : 0);
}

/* an EC 0x18 syndrome's register is the generic timer's (op0 3, op1 3, CRn 14) */
static bool timer_iss(uint32_t syndrome)
{
    return ((syndrome >> 20) & 3) == 3 && ((syndrome >> 14) & 7) == 3 && ((syndrome >> 10) & 15) == 14;
}

static bool at_el0(uc_engine *uc)
{
    return ((reg(uc, UC_ARM64_REG_PSTATE) >> 2) & 3) == 0;
}

static bool vtimer_due(struct sim_vcpu *v)
{
    return !v->vt_masked && (v->vt_ctl & 3) == 1 && hvfsim__vcount(v) >= v->vt_cval;
}

static bool vtimer_read(struct sim_vcpu *v, uint32_t id, uint64_t *val)
{
    switch (id) {
    case R_CNTFRQ:
        *val = 1000000000ull * SIM_TB_DENOM / SIM_TB_NUMER;
        return true;
    case R_CNTVCT:
        *val = hvfsim__vcount(v);
        return true;
    case R_CNTV_CTL:
        *val = v->vt_ctl | ((v->vt_ctl & 1) && hvfsim__vcount(v) >= v->vt_cval ? 4 : 0);
        return true;
    case R_CNTV_CVAL:
        *val = v->vt_cval;
        return true;
    case R_CNTV_TVAL:
        *val = (uint32_t)(v->vt_cval - hvfsim__vcount(v));
        return true;
    case REG_ID_AA64PFR0_EL1:
        *val = v->pfr0;
        return true;
    }
    return false;
}

static bool vtimer_write(struct sim_vcpu *v, uint32_t id, uint64_t val)
{
    switch (id) {
    case R_CNTV_CTL:
        v->vt_ctl = val & 3;
        break;
    case R_CNTV_CVAL:
        v->vt_cval = val;
        break;
    case R_CNTV_TVAL:
        v->vt_cval = hvfsim__vcount(v) + (uint64_t)(int64_t)(int32_t)(uint32_t)val;
        break;
    default:
        return false;
    }
    v->vt_check = true;
    return true;
}

/* CNTKCTL_EL1.EL0VCTEN (bit 1) for CNTVCT_EL0, EL0VTEN (bit 8) for CNTV_*, either counter bit for CNTFRQ */
static bool el0_timer_allowed(uc_engine *uc, uint32_t id)
{
    uint64_t kctl = hvfsim__cp_read(uc, SIM_SYSREG(3, 0, 14, 1, 0));
    if (id == R_CNTFRQ)
        return kctl & 3;
    if (id == R_CNTVCT)
        return kctl & 2;
    return kctl & (1u << 8);
}

static uint32_t on_mrs(uc_engine *uc, uc_arm64_reg r, const uc_arm64_cp_reg *cp, void *opaque)
{
    struct sim_vcpu *v = opaque;
    uint32_t id = SIM_SYSREG(cp->op0, cp->op1, cp->crn, cp->crm, cp->op2);
    uint64_t val;

    /* at EL0 only where CNTKCTL_EL1 allows it; otherwise QEMU's own check traps it to EL1 */
    if ((at_el0(uc) && !el0_timer_allowed(uc, id)) || !vtimer_read(v, id, &val))
        return 0;
    if (r != UC_ARM64_REG_XZR)
        uc_reg_write(uc, r, &val);
    return 1;
}

/* DBGWVR<n>_EL1 (op2 6), DBGWCR<n>_EL1 (op2 7), MDSCR_EL1: what arms a watchpoint */
static bool wpt_reg(uint32_t id)
{
    return ((id & ~(0xfu << 3 | 1u)) == SIM_SYSREG(2, 0, 0, 0, 6)) || id == HV_SYS_REG_MDSCR_EL1;
}

static uint32_t on_msr(uc_engine *uc, uc_arm64_reg r, const uc_arm64_cp_reg *cp, void *opaque)
{
    struct sim_vcpu *v = opaque;
    uint32_t id = SIM_SYSREG(cp->op0, cp->op1, cp->crn, cp->crm, cp->op2);
    (void)r;
    if (wpt_reg(id)) { /* QEMU performs the write; the watchpoint hook follows it before the next block */
        v->wpt_dirty = true;
        v->stop = STOP_SLICE;
        uc_emu_stop(uc);
        return 0;
    }
    if (at_el0(uc) && !el0_timer_allowed(uc, id))
        return 0;
    return vtimer_write(v, id, cp->val) ? 1 : 0;
}

/* ---- the guest's own exceptions: entered at its EL1 vectors (Arm ARM D1.10.2) ---- */

static void enter_el1(struct sim_vcpu *v, uint32_t esr, bool set_far, uint64_t far, uint64_t elr)
{
    uc_engine *uc = v->uc;
    uint64_t ps = reg(uc, UC_ARM64_REG_PSTATE);
    unsigned el = (ps >> 2) & 3;
    uint64_t vbar = reg(uc, UC_ARM64_REG_VBAR_EL1);
    uint64_t target = vbar + (el == 0 ? 0x400 : (ps & 1) ? 0x200 : 0x000);
    uint64_t new_ps = 0x3c5; /* EL1h, DAIF masked */

    if (el == 0 || !(ps & 1)) { /* from SP_EL0: bank it, use SP_EL1 */
        set_reg(uc, UC_ARM64_REG_SP_EL0, reg(uc, UC_ARM64_REG_SP));
        set_reg(uc, UC_ARM64_REG_SP, reg(uc, UC_ARM64_REG_SP_EL1));
    }
    set_reg(uc, UC_ARM64_REG_ESR_EL1, esr);
    if (set_far)
        set_reg(uc, UC_ARM64_REG_FAR_EL1, far);
    set_reg(uc, UC_ARM64_REG_ELR_EL1, elr);
    /* FEAT_PAN: PSTATE.PAN is set on entry unless SCTLR_EL1.SPAN (bit 23) */
    if (((hvfsim__cp_read(uc, REG_ID_AA64MMFR1_EL1) >> 20) & 0xf) &&
        !(hvfsim__cp_read(uc, REG_SCTLR_EL1) & (1ull << 23)))
        new_ps |= 1u << 22;
    else
        new_ps |= ps & (1u << 22);
    set_reg(uc, UC_ARM64_REG_PSTATE, new_ps);
    hvfsim__cp_write(uc, REG_SPSR_EL1, ps); /* also makes QEMU rebuild its cached EL state */
    set_reg(uc, UC_ARM64_REG_PC, target);
}

struct qemu_exc { /* QEMU's CPUARMState.exception */
    uint32_t syndrome, fsr;
    uint64_t vaddress;
    uint32_t target_el;
};

/* The exception QEMU just raised, whose syndrome only its CPU state holds (found by calibration). */
static struct qemu_exc raised(struct sim_vcpu *v)
{
    struct qemu_exc exc;
    uc_context_save(v->uc, v->ctx);
    memcpy(&exc, (const uint8_t *)v->ctx + v->syndrome_off, sizeof exc);
    return exc;
}

/* ... entered at the guest's EL1 vectors */
static void deliver_sync(struct sim_vcpu *v, uint64_t pc)
{
    struct qemu_exc exc = raised(v);
    unsigned ec = exc.syndrome >> ESR_EC_SHIFT;
    bool abort = ec == EC_IABT_LOW || ec == EC_IABT_CUR || ec == EC_DABT_LOW || ec == EC_DABT_CUR || ec == 0x22;
    enter_el1(v, exc.syndrome, abort, exc.vaddress, pc);
}

static void on_intr(uc_engine *uc, uint32_t intno, void *opaque)
{
    struct sim_vcpu *v = opaque;
    uint64_t pc = reg(uc, UC_ARM64_REG_PC);
    uint32_t insn = 0;

    switch (intno) {
    case EXCP_HVC: /* PC is past the HVC: its preferred return address */
        uc_vmem_read(uc, pc - 4, UC_PROT_EXEC, &insn, 4);
        exception_exit(v, EC_HVC64, (insn >> 5) & 0xffff, 0, 0);
        uc_emu_stop(uc);
        return;
    case EXCP_SMC: /* trapped before it executes: PC at the SMC */
        uc_vmem_read(uc, pc - 4, UC_PROT_EXEC, &insn, 4);
        exception_exit(v, EC_SMC64, (insn >> 5) & 0xffff, 0, 0);
        set_reg(uc, UC_ARM64_REG_PC, pc - 4);
        uc_emu_stop(uc);
        return;
    case EXCP_UDEF: {
        /*
         * The EL2 traps we configure (CNTHCTL_EL2, MDCR_EL2) come here with their EC 0x18 syndrome,
         * PC at the instruction; the GIC's registers, which QEMU's CPU lacks, as UNDEFINED: the same
         * trap for the framework (which traps them to EL2 when it runs no GIC).
         */
        struct qemu_exc exc = raised(v);
        /*
         * An EL0 access to a generic timer register that CNTKCTL_EL1 denies traps to the guest's EL1 first
         * (Arm ARM D13.11: QEMU's target_el 1). Other EL1-targeted traps stay the framework's: the PMU's, which
         * QEMU raises from its own PMUSERENR_EL0 while the VMM holds the guest's (hvf_exits.c decides).
         */
        if (exc.syndrome >> ESR_EC_SHIFT == EC_SYSREG && (exc.target_el >= 2 || !timer_iss(exc.syndrome))) {
            exception_exit(v, EC_SYSREG, exc.syndrome & 0x1ffffff, 0, 0);
            uc_emu_stop(uc);
            return;
        }
        if (exc.syndrome >> ESR_EC_SHIFT == EC_UNKNOWN && /* not a software step (EC 0x32/0x33) */
            uc_vmem_read(uc, pc, UC_PROT_EXEC, &insn, 4) == UC_ERR_OK && (insn & 0xffd00000u) == 0xd5100000u &&
            !at_el0(uc) && trapped((insn >> 5) & 0xffff)) {
            exception_exit(v, EC_SYSREG, sysreg_iss((insn >> 5) & 0xffff, insn & 31, (insn >> 21) & 1), 0, 0);
            uc_emu_stop(uc);
            return;
        }
        deliver_sync(v, pc);
        return;
    }
    case EXCP_SWI:
    case EXCP_PREFETCH_ABORT:
    case EXCP_DATA_ABORT:
    case EXCP_BKPT:
        deliver_sync(v, pc);
        return;
    default:
        stop(v, STOP_FATAL);
    }
}

/* ---- the guest's software step over an instruction the VMM completed (Arm ARM D2.12) ---- */

/*
 * Whether software step is active for the guest (D2.12.2): MDSCR_EL1.SS, and debug exceptions enabled
 * from where it runs (EL0 always; EL1, the debug target, with MDSCR_EL1.KDE and PSTATE.D clear). The
 * OS lock is the VMM's (trapped), so not seen here.
 */
static bool step_active(struct sim_vcpu *v, uint64_t ps)
{
    unsigned el = (ps >> 2) & 3;
    uint64_t mdscr = hvfsim__cp_read(v->uc, HV_SYS_REG_MDSCR_EL1);
    return (mdscr & MDSCR_SS) && (el == 0 || (el == 1 && (mdscr & MDSCR_KDE) && !(ps & PSTATE_D)));
}

/*
 * The VMM completed a trapped instruction (a data abort or a system register) and, as it must, cleared
 * PSTATE.SS with the PC past it: the step exception is taken before the next instruction. Its ISV is
 * what SoftwareStep_DidNotStep() returns, which the architecture leaves open after an exception to a
 * higher level ("might return TRUE or FALSE ... if another exception was taken before the Software
 * Step exception"); like an instruction the guest stepped (and as soft, KVM and QEMU report for the
 * same instruction when they run it without a trap), here ISV 1, EX 0. QEMU's engine alone would say
 * ISV 0 (it treats every active-pending start as "did not step"), which it still does after an HVC
 * (the HVC itself was the stepped instruction's exception, SPSR.SS 0 at the exit).
 */
static void step_after_trap(struct sim_vcpu *v)
{
    uint64_t ps = reg(v->uc, UC_ARM64_REG_PSTATE);
    bool was = v->ss_at_trap;
    v->ss_at_trap = false;
    if (!was || (ps & PSTATE_SS) || !step_active(v, ps))
        return;
    unsigned el = (ps >> 2) & 3;
    enter_el1(v, (EC_STEP_LOW + (el == 1)) << ESR_EC_SHIFT | ESR_IL | ISS_STEP_ISV | FSC_DEBUG, false, 0,
              reg(v->uc, UC_ARM64_REG_PC));
}

/* ---- watchpoints (Arm ARM D2.10): the hardware's, which Unicorn lacks ---- */

/*
 * On the hardware the guest owns its debug registers (the framework traps them only when the VMM asks,
 * hv_vcpu_set_trap_debug_reg_accesses, which hvf.c does not) and a watchpoint is taken at its EL1
 * without an exit. Unicorn compiled QEMU's watchpoints out, so here, while one is armed, a code hook
 * decodes each load and store before it executes (arm/watchpoint.c, shared with the soft backend) and
 * enters the watchpoint exception in its place: the access not made, ELR at the instruction.
 */
static uint64_t wpt_xreg(void *ctx, unsigned n, bool sp31)
{
    uc_engine *uc = ctx;
    if (n == 31)
        return sp31 ? reg(uc, UC_ARM64_REG_SP) : 0;
    return reg(uc, n == 29 ? UC_ARM64_REG_X29 : n == 30 ? UC_ARM64_REG_X30 : UC_ARM64_REG_X0 + (int)n);
}

static void on_insn_wpt(uc_engine *uc, uint64_t pc, uint32_t size, void *opaque)
{
    struct sim_vcpu *v = opaque;
    const struct vmm_ldst_regs regs = { wpt_xreg, uc };
    struct vmm_ldst a = { 0 };
    uint32_t insn;
    uint64_t far = 0;
    (void)size;

    if (uc_vmem_read(uc, pc, UC_PROT_EXEC, &insn, 4) != UC_ERR_OK || !vmm__ldst_decode(&regs, insn, pc, &a) || !a.len)
        return;
    uint64_t ps = reg(uc, UC_ARM64_REG_PSTATE);
    unsigned el = (ps >> 2) & 3;
    /* debug exceptions from EL1 to EL1 need KDE and PSTATE.D clear; from EL0 they are always on (D2.1) */
    if (el > 1 || (el == 1 && (!(v->wpt_mdscr & MDSCR_KDE) || (ps & PSTATE_D))))
        return;
    for (unsigned n = 0; n < SIM_WPTS; n++)
        if (vmm__wpt_applies(v->wcr[n], a.unpriv ? 0 : el, &a) && vmm__wpt_hit(v->wcr[n], v->wvr[n], &a, &far)) {
            uint32_t ec = EC_WPT_LOW + (el == 1);
            enter_el1(v, ec << ESR_EC_SHIFT | ESR_IL | (a.wr ? ISS_WPT_WNR : 0) | FSC_DEBUG, true, far, pc);
            return;
        }
}

/* After the guest wrote a debug register: the hook exists exactly while MDSCR_EL1.MDE and a DBGWCR.E. */
static void wpt_apply(struct sim_vcpu *v)
{
    bool want = false;

    v->wpt_dirty = false;
    v->wpt_mdscr = hvfsim__cp_read(v->uc, HV_SYS_REG_MDSCR_EL1);
    for (unsigned n = 0; n < SIM_WPTS; n++) {
        v->wcr[n] = hvfsim__cp_read(v->uc, SIM_SYSREG(2, 0, 0, n, 7));
        v->wvr[n] = hvfsim__cp_read(v->uc, SIM_SYSREG(2, 0, 0, n, 6));
        want |= (v->wpt_mdscr & MDSCR_MDE) && (v->wcr[n] & 1);
    }
    if (want == v->wpt_hooked)
        return;
    if (want && uc_hook_add(v->uc, &v->wpt_hook, UC_HOOK_CODE, (void *)on_insn_wpt, v, 1, 0))
        return; /* no hook, no watchpoints: as if none were armed */
    if (!want)
        uc_hook_del(v->uc, v->wpt_hook);
    uc_ctl_flush_tb(v->uc); /* translations made without (with) the hook would skip (call) it */
    v->wpt_hooked = want;
}

/* ---- the block hook: cancel, the timer, slices, WFE ---- */

/* The last instruction of a block when it is WFE or YIELD, else 0 (cached per block). */
static uint32_t block_hint(struct sim_vcpu *v, uint64_t addr, uint32_t size)
{
    typeof(v->wfe_cache[0]) *e = &v->wfe_cache[(addr >> 2) % SIM_WFE_CACHE];
    uint32_t insn = 0;
    if (e->addr != addr || e->size != size) {
        e->addr = addr;
        e->size = size;
        e->hint = 0;
        if (size >= 4 && uc_vmem_read(v->uc, addr + size - 4, UC_PROT_EXEC, &insn, 4) == UC_ERR_OK &&
            (insn == INSN_WFE || insn == INSN_YIELD))
            e->hint = insn;
    }
    return e->hint;
}

static void on_block(uc_engine *uc, uint64_t addr, uint32_t size, void *opaque)
{
    struct sim_vcpu *v = opaque;
    (void)uc;

    /* a stop here takes effect before this block executes */
    if (atomic_load_explicit(&v->cancel, memory_order_relaxed)) {
        stop(v, STOP_CANCEL);
        return;
    }
    if ((++v->blocks % VTIMER_POLL_BLOCKS == 0 || v->vt_check) && (v->vt_check = false, vtimer_due(v))) {
        stop(v, STOP_VTIMER);
        return;
    }
    /*
     * A vCPU that spins (YIELD) while others wait for the engine gives it up: on the hardware they would
     * run meanwhile, here the one it waits for may be among them.
     */
    if ((v->blocks >= SLICE_BLOCKS || v->prev_hint == INSN_YIELD) && hvfsim__contended()) {
        stop(v, STOP_SLICE);
        return;
    }
    /* the block before ended in a WFE that fell through to here: the trap comes after it (PC back at it) */
    if (v->prev_hint == INSN_WFE && addr == v->prev_end) {
        exception_exit(v, EC_WFX, 1, 0, 0);
        set_reg(v->uc, UC_ARM64_REG_PC, addr - 4);
        uc_emu_stop(v->uc);
        return;
    }
    v->prev_hint = block_hint(v, addr, size);
    v->prev_end = addr + size;
}

/* ---- maintenance broadcast between engines (each has its own TLB and translations) ---- */

static uint32_t on_sys(uc_engine *uc, uc_arm64_reg r, const uc_arm64_cp_reg *cp, void *opaque)
{
    struct sim_vcpu *v = opaque;
    bool ivau = cp->crn == 7 && cp->op1 == 3 && cp->crm == 5 && cp->op2 == 1;
    bool ic = ivau || (cp->crn == 7 && cp->op1 == 0 && cp->op2 == 0 && (cp->crm == 1 || cp->crm == 5));
    bool tlbi = cp->crn == 8 && cp->op1 == 0 && (cp->crm == 3 || cp->crm == 0);
    uint64_t pa = 0;
    (void)r;

    if (!ic && !tlbi)
        return 0;
    bool by_page = ivau && uc_vmem_translate(uc, cp->val, UC_PROT_READ, &pa) == UC_ERR_OK;
    for (unsigned i = 0; i < SIM_MAX_VCPUS; i++) {
        struct sim_vcpu *o = hvfsim__vm.vcpus[i];
        if (!o || o == v)
            continue;
        if (by_page && !o->tb_flush) {
            if (o->nic_pages == SIM_IC_PAGES)
                o->tb_flush = true;
            else if (!o->nic_pages || o->ic_pages[o->nic_pages - 1] != (pa & ~0xfffull))
                o->ic_pages[o->nic_pages++] = pa & ~0xfffull;
        } else if (ic) {
            o->tb_flush = true;
        }
        o->tlb_flush |= tlbi;
    }
    return 0; /* QEMU performs it locally */
}

static void apply_maintenance(struct sim_vcpu *v)
{
    if (v->tb_flush) {
        v->tb_flush = false;
        v->nic_pages = 0;
        uc_ctl_flush_tb(v->uc);
    } else if (v->nic_pages) {
        /* Unicorn drops translations by virtual address: with stage 1 off for a moment, the page's PA */
        uint64_t sctlr = hvfsim__cp_read(v->uc, REG_SCTLR_EL1);
        if (sctlr & 1) {
            hvfsim__cp_write(v->uc, REG_SCTLR_EL1, sctlr & ~1ull);
            uc_ctl_flush_tlb(v->uc);
        }
        for (unsigned i = 0; i < v->nic_pages; i++)
            uc_ctl_remove_cache(v->uc, v->ic_pages[i], v->ic_pages[i] + 0x1000);
        v->nic_pages = 0;
        if (sctlr & 1) {
            hvfsim__cp_write(v->uc, REG_SCTLR_EL1, sctlr);
            v->tlb_flush = true;
        }
    }
    if (v->tlb_flush) {
        v->tlb_flush = false;
        uc_ctl_flush_tlb(v->uc);
    }
}

/* ---- engine setup ---- */

/* Where QEMU keeps the syndrome of the exception it raises (no accessor in Unicorn): soft_syndrome.c. */
static int calibrate(struct sim_vcpu *v)
{
    v->syndrome_off = vmm__uc_syndrome_offset(v->uc, 0x1000);
    return v->syndrome_off ? 0 : -1;
}

/*
 * A fresh engine: an A72-class CPU (the CPU model is the simulator's; Apple's cores are v8.5+), EL1h
 * with DAIF masked and the MMU off (the framework's vCPU reset state) under an EL2/EL3 that only
 * routes virtual interrupts, and the hooks.
 */
int hvfsim__engine_setup(struct sim_vcpu *v)
{
    uc_hook h;

    if (uc_open(UC_ARCH_ARM64, UC_MODE_ARM, &v->uc) || uc_ctl_set_cpu_model(v->uc, UC_CPU_ARM64_A72) ||
        uc_ctl_set_tcg_buffer_size(v->uc, 128u << 20) || uc_context_alloc(v->uc, &v->ctx) || calibrate(v))
        return -1;
    hvfsim__cp_write(v->uc, REG_SCR_EL3, 1u | 1u << 8 | 1u << 10); /* NS, HCE, RW */
    hvfsim__cp_write(v->uc, REG_HCR_EL2, HCR_RW | HCR_IMO | HCR_FMO);
    /* EL1PCTEN = EL1PCEN = 0: the physical counter and timer trap; TPM, TPMCR, TDOSA: the PMU, OS lock */
    hvfsim__cp_write(v->uc, REG_CNTHCTL_EL2, 0);
    hvfsim__cp_write(v->uc, REG_MDCR_EL2, 1u << 5 | 1u << 6 | 1u << 10);
    set_reg(v->uc, UC_ARM64_REG_PSTATE, 0x3c5);
    hvfsim__cp_write(v->uc, REG_SPSR_EL1, 0);
    v->pfr0 = hvfsim__cp_read(v->uc, REG_ID_AA64PFR0_EL1);
    if (uc_hook_add(v->uc, &h, UC_HOOK_INTR, (void *)on_intr, v, 1, 0) ||
        uc_hook_add(v->uc, &h, UC_HOOK_BLOCK, (void *)on_block, v, 1, 0) ||
        uc_hook_add(v->uc, &h, UC_HOOK_INSN, (void *)on_mrs, v, 1, 0, UC_ARM64_INS_MRS) ||
        uc_hook_add(v->uc, &h, UC_HOOK_INSN, (void *)on_msr, v, 1, 0, UC_ARM64_INS_MSR) ||
        uc_hook_add(v->uc, &h, UC_HOOK_INSN, (void *)on_sys, v, 1, 0, UC_ARM64_INS_SYS))
        return -1;
    return 0;
}

/* ---- hv_vcpu_run ---- */

/* An access to an unmapped guest-physical address at pc: the stage-2 abort the hypervisor sees. */
static void unmapped_exit(struct sim_vcpu *v, uc_err e, uint64_t pc)
{
    uint64_t pa = 0;
    uint32_t insn = 0;
    struct sim_ldst d;
    bool cur = ((reg(v->uc, UC_ARM64_REG_PSTATE) >> 2) & 3) == 1;
    (void)cur; /* stage-2 faults from EL1 and EL0 are both "from a lower EL" at EL2 */

    if (e == UC_ERR_FETCH_UNMAPPED) {
        uc_vmem_translate(v->uc, pc, UC_PROT_EXEC, &pa);
        exception_exit(v, EC_IABT_LOW, 0x07, pc, pa); /* IFSC: translation fault, level 3 */
        return;
    }
    if (uc_vmem_read(v->uc, pc, UC_PROT_EXEC, &insn, 4) != UC_ERR_OK || !hvfsim__decode_ldst(v->uc, insn, pc, &d)) {
        exception_exit(v, EC_DABT_LOW, 0x07 | (e == UC_ERR_WRITE_UNMAPPED ? 1u << 6 : 0), 0, 0);
        return;
    }
    uc_vmem_translate(v->uc, d.va, d.write ? UC_PROT_WRITE : UC_PROT_READ, &pa);
    /* DFSC: translation fault, level 3 (the level is the stage-2 tables'; ours have none) */
    exception_exit(v, EC_DABT_LOW, (d.isv ? d.iss : (d.write ? 1u << 6 : 0)) | 0x07, d.va, pa);
}

static void apply_interrupts(struct sim_vcpu *v)
{
    if (v->irq == v->virq_applied && v->fiq == v->vfiq_applied)
        return;
    v->virq_applied = v->irq;
    v->vfiq_applied = v->fiq;
    hvfsim__cp_write(v->uc, REG_HCR_EL2, HCR_RW | HCR_IMO | HCR_FMO | (v->irq ? HCR_VI : 0) | (v->fiq ? HCR_VF : 0));
}

static bool stopped_at_wfi(struct sim_vcpu *v, uint64_t pc)
{
    uint32_t insn;
    return pc >= 4 && uc_vmem_read(v->uc, pc - 4, UC_PROT_EXEC, &insn, 4) == UC_ERR_OK && insn == INSN_WFI;
}

/* One slice under the engine lock; returns true when the run is over (v->exit is set). */
static bool run_slice(struct sim_vcpu *v)
{
    v->stop = STOP_NONE;
    v->blocks = 0;
    v->prev_hint = 0;
    if (atomic_exchange(&v->cancel, false)) {
        v->exit.reason = HV_EXIT_REASON_CANCELED;
        return true;
    }
    if (vtimer_due(v)) {
        v->vt_masked = true;
        v->exit.reason = HV_EXIT_REASON_VTIMER_ACTIVATED;
        return true;
    }
    apply_maintenance(v);
    apply_interrupts(v);
    if (v->wpt_dirty)
        wpt_apply(v);
    uint64_t pc = reg(v->uc, UC_ARM64_REG_PC);
    uc_err e = uc_emu_start(v->uc, pc, UINT64_MAX & ~3ull, 0, 0);
    pc = reg(v->uc, UC_ARM64_REG_PC);
    if (e == UC_ERR_READ_UNMAPPED || e == UC_ERR_WRITE_UNMAPPED || e == UC_ERR_FETCH_UNMAPPED) {
        unmapped_exit(v, e, pc);
        return true;
    }
    if (e || v->stop == STOP_FATAL) {
        v->exit.reason = HV_EXIT_REASON_UNKNOWN;
        return true;
    }
    switch (v->stop) {
    case STOP_CANCEL:
        atomic_store(&v->cancel, false);
        v->exit.reason = HV_EXIT_REASON_CANCELED;
        return true;
    case STOP_VTIMER:
        v->vt_masked = true;
        v->exit.reason = HV_EXIT_REASON_VTIMER_ACTIVATED;
        return true;
    case STOP_EXCEPTION:
        return true;
    case STOP_SLICE:
        return false;
    default:
        break;
    }
    if (stopped_at_wfi(v, pc)) { /* Unicorn halts after a WFI; the trap comes before it: PC back at it */
        set_reg(v->uc, UC_ARM64_REG_PC, pc - 4);
        exception_exit(v, EC_WFX, 0, 0, 0);
        return true;
    }
    return false; /* stopped for a reason of Unicorn's own (a PC write ended the block): go on */
}

hv_return_t hv_vcpu_run(hv_vcpu_t id)
{
    struct sim_vcpu *v = id < SIM_MAX_VCPUS ? hvfsim__vm.vcpus[id] : NULL;
    bool done;

    if (!v || !pthread_equal(v->owner, pthread_self()))
        return HV_BAD_ARGUMENT;
    memset(&v->exit, 0, sizeof v->exit);
    hvfsim__lock();
    step_after_trap(v);
    hvfsim__unlock();
    do {
        hvfsim__lock();
        done = run_slice(v);
        hvfsim__unlock();
    } while (!done);
    return HV_SUCCESS;
}
