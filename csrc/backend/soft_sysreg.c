/* soft_sysreg.c - the soft backend's MRS/MSR hooks: the timer, GIC CPU interface, PMU, debug and ID registers. */
#include <unicorn/unicorn.h>

#include "../arm/arm.h"
#include "../arm/gic.h"
#include "../arm/timer.h"
#include "../core/irqchip.h"
#include "soft.h"

/*
 * MRS/MSR of the registers the core emulates, caught before QEMU executes
 * them: the generic timer's (QEMU has them, so they would not trap) and the
 * GIC CPU interface's (QEMU lacks them without its own GIC: they would
 * UNDEF, and the exception path costs several times more). Returning 1
 * skips QEMU's own access; for a register QEMU lacks that is not enough (its
 * translation ends the block at the instruction and would run it again), so
 * we also step PC past it (finish_lacked). At EL0 the hook declines what
 * the architecture refuses there (the GIC's registers; a timer register
 * CNTKCTL_EL1 does not open), and QEMU's UNDEF or access check traps it.
 */

#define REG_CNTKCTL_EL1 SYSREG(3, 0, 14, 1, 0)

/* The instruction's exception level: the engine's word where it has one (a PSTATE read is slower) */
static unsigned hook_el(struct soft_vcpu *sv)
{
    if (sv->sys_el)
        return sv->sys_el(sv->uc);
    return (unsigned)(soft__reg(sv->uc, UC_ARM64_REG_PSTATE) >> 2) & 3;
}

/*
 * A generic timer register at EL0 only where CNTKCTL_EL1 allows it; otherwise the hook declines and QEMU's
 * own access check (gt_*_access) traps it to EL1 as EC 0x18 (the exceptions guest checks both).
 */
static bool timer_access_ok(struct soft_vcpu *sv, uint32_t id, bool is_read)
{
    return hook_el(sv) != 0 || vmm__timer_el0_allowed(id, is_read, vmm__soft_cp_read(sv->uc, REG_CNTKCTL_EL1));
}

static bool ours(struct soft_vcpu *sv, uint32_t id, bool is_read, bool *lacked, uint64_t *pc)
{
    *lacked = false;
    if (!vmm__gic_sysreg_is_ours(id))
        return vmm__timer_sysreg_is_ours(id) && timer_access_ok(sv, id, is_read);
    if (!sv->icc)
        return false;
    /*
     * PSTATE for the EL, and the instruction's address (Unicorn synced PC before the hook) when we
     * must step past it ourselves: one call
     */
    int regs[2] = { UC_ARM64_REG_PSTATE, UC_ARM64_REG_PC };
    uint64_t ps = 0;
    void *vals[2] = { &ps, pc };
    if (sv->sys_continue && sv->sys_el) /* the engine's EL: a PSTATE read was a quarter of an ICC_PMR read */
        ps = (uint64_t)sv->sys_el(sv->uc) << 2;
    else if (uc_reg_read_batch(sv->uc, regs, vals, sv->sys_continue ? 1 : 2) != UC_ERR_OK)
        return false;
    if (((ps >> 2) & 3) == 0)
        return false;
    *lacked = true;
    return true;
}

/* An MRS's value into its register: by the engine as the hook returns where it can (a sixth of a timer read) */
static void mrs_result(struct soft_vcpu *sv, uc_arm64_reg reg, const uint64_t *val)
{
    if (reg == UC_ARM64_REG_XZR)
        return;
    if (sv->sys_result)
        sv->sys_result(sv->uc, *val);
    else
        uc_reg_write(sv->uc, reg, val);
}

/*
 * Complete an access to a register QEMU lacks: the value of an MRS and PC
 * past the instruction in one batch (one PC write, which is what ends the
 * translation block: Unicorn resumes at once inside uc_emu_start, a new
 * cpu_exec). The patched engine in real time completes the instruction
 * itself and goes on in the same block (an MSR ends it, as QEMU's own
 * system-register writes do): only the value is written. Deterministic mode
 * keeps the PC write on both engines, so instruction counts (virtual time)
 * do not depend on the engine.
 */
static uint32_t finish_lacked(struct soft_vcpu *sv, uint64_t insn_pc, uc_arm64_reg reg, const uint64_t *val)
{
    int regs[2] = { UC_ARM64_REG_PC, reg };
    uint64_t pc = insn_pc + 4;
    const void *vals[2] = { &pc, val };
    bool value = val && reg != UC_ARM64_REG_XZR;

    /*
     * Completed by the engine, a software step over it too: QEMU ends a stepped instruction with the
     * step exception unless it raised one, and it raises none now (the test: dbgexc's emulated step).
     */
    if (sv->sys_continue) {
        if (value)
            mrs_result(sv, reg, val);
        return 1;
    }
    uc_reg_write_batch(sv->uc, regs, (void *const *)vals, value ? 2 : 1);
    vmm__soft_step_done(sv, pc); /* a software step completes with it */
    return 1;
}

#define REG_ICC_SGI0R_EL1 SYSREG(3, 0, 12, 11, 7)
#define REG_ICC_SGI1R_EL1 SYSREG(3, 0, 12, 11, 5)
#define REG_ICC_ASGI1R_EL1 SYSREG(3, 0, 12, 11, 6)

/* Whether an ICC_SGI*R_EL1 value (IHI0069 §12.2.21) names a CPU other than the sender. */
static bool sgi_to_others(const struct vmm_vcpu *vcpu, uint64_t val)
{
    const uint64_t group = 0x00fff0ff00ff0000ull; /* Aff3 [55:48], RS [47:44], Aff2 [39:32], Aff1 [23:16] */
    uint64_t m = vcpu->mpidr;
    uint64_t self = ((m >> 32) & 0xff) << 48 | (uint64_t)((m & 0xff) >> 4) << 44 | ((m >> 16) & 0xff) << 32 |
                    ((m >> 8) & 0xff) << 16;
    uint64_t targets = val & 0xffff;

    if (val & (1ull << 40)) /* IRM: every CPU but the sender */
        return true;
    if (!targets)
        return false;
    return (val & group) != self || (targets & ~(1ull << (m & 0xf))) != 0;
}

/* Where the PMU's registers are: CRn 9, and CRn 14 from CRm 8 (PMEVCNTR, PMEVTYPER, PMCCFILTR; below: the timer) */
static bool pmu_space(uint32_t id)
{
    return SYSREG_CRN(id) == 9 || (SYSREG_CRN(id) == 14 && SYSREG_CRM(id) >= 8);
}

uint32_t vmm__soft_on_mrs(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    uint32_t id = SYSREG(cp->op0, cp->op1, cp->crn, cp->crm, cp->op2);
    uint64_t val = 0;
    uint64_t pc = 0;
    bool lacked;
    (void)uc;

    /*
     * ID registers we correct, MDSCR_EL1 under the OS lock (soft_dbgarch.c): EL1 registers, so at EL0 QEMU's
     * own access check decides (UNDEFINED; an ID register traps as EC 0x18 with FEAT_IDST)
     */
    if (((SYSREG_OP0(id) == 3 && SYSREG_CRN(id) == 0) || SYSREG_OP0(id) == 2) && hook_el(sv) != 0 &&
        ((SYSREG_OP0(id) == 3 && vmm__soft_idreg(sv, id, &val)) ||
         (SYSREG_OP0(id) == 2 && vmm__soft_dbg_mrs(sv, id, &val)))) {
        mrs_result(sv, reg, &val);
        return 1;
    }
    if (pmu_space(id) && vmm__soft_pmu_hook(sv, id, true, reg, &val))
        return 1;

    if (!ours(sv, id, true, &lacked, &pc) || vmm__sysreg_access(sv->vcpu, id, true, &val))
        return 0;
    if (lacked)
        return finish_lacked(sv, pc, reg, &val);
    mrs_result(sv, reg, &val);
    return 1;
}

/*
 * The encodings the hooks above (and vmm__soft_on_sys) may handle: a superset, decided from the encoding
 * alone (they still decline at run time: the EL, CNTKCTL_EL1, PMUSERENR_EL0, no GIC). The patched engine
 * emits the hook call for these only (uc_vmmpy_sys_filter); Unicorn emitted one for every op0 2/3 MRS and
 * MSR, such as SP_EL0 in each of Linux's `current`, TPIDR_EL1 in each per-CPU access and DAIF in each
 * local_irq_save(), CTR_EL0 in each cache-maintenance loop, DCZID_EL0 in each memset(): 2.41 M MRS and
 * 104 k MSR hook calls in a 1-vCPU Linux boot to /init, 1.1 k and 1.4 k with the filter.
 */
bool vmm__soft_sys_wanted(void *opaque, uint32_t op0, uint32_t op1, uint32_t crn, uint32_t crm, uint32_t op2,
                          bool is_read)
{
    uint32_t id = SYSREG(op0, op1, crn, crm, op2);
    bool ivau;
    (void)opaque;

    if (op0 == 1) /* SYS: the IC and TLBI others must see */
        return vmm__soft_sys_broadcasts(op1, crn, crm, op2, &ivau);
    if (op0 == 2) /* the debug registers: MDSCR_EL1, the OS lock, watchpoints */
        return true;
    return op0 == 3 && ((is_read && vmm__soft_idreg_is_ours(id)) || pmu_space(id) || vmm__gic_sysreg_is_ours(id) ||
                        vmm__timer_sysreg_is_ours(id));
}

uint32_t vmm__soft_on_msr(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    uint32_t id = SYSREG(cp->op0, cp->op1, cp->crn, cp->crm, cp->op2);
    uint64_t val = cp->val, pc = 0;
    bool lacked;
    (void)uc;
    (void)reg;

    if (SYSREG_OP0(id) == 2) /* the debug registers: watchpoints and the OS lock (EL1's: QEMU checks EL0) */
        return hook_el(sv) != 0 && vmm__soft_dbg_msr(sv, id, val);
    if (pmu_space(id) && vmm__soft_pmu_hook(sv, id, false, reg, &val))
        return 1;
    if (!ours(sv, id, false, &lacked, &pc) || vmm__sysreg_access(sv->vcpu, id, false, &val))
        return 0;
    /*
     * An SGI to another vCPU ends this slice at the next block (real time, one thread): the target runs
     * now, not after the sender's 50 000 instructions. Its line may not even rise yet (the SGI before is
     * still active there), so irq_notify alone is not enough for a sender that then polls memory.
     */
    if ((id == REG_ICC_SGI1R_EL1 || id == REG_ICC_SGI0R_EL1 || id == REG_ICC_ASGI1R_EL1) && sv->vcpu->vm->ncpus > 1 &&
        !sv->threaded && !sv->vcpu->vm->deterministic && sgi_to_others(sv->vcpu, val)) {
        vmm__count(sv->vcpu->vm, &sv->vcpu->vm->stats.ipi_yields);
        vmm__soft_end_at_block(sv);
    }
    return lacked ? finish_lacked(sv, pc, reg, NULL) : 1;
}
