/*
 * soft_dbgarch.c - the guest's own debug and performance-monitor features on the soft backend:
 * the OS lock, watchpoints, the PMU registers and the ID registers we correct.
 *
 * What QEMU (inside Unicorn 2.1.4) already does, measured with guest/dbgexc.c: hardware breakpoints
 * (DBGBCR/DBGBVR, its cpu breakpoints, EC 0x30/0x31) and software step (MDSCR_EL1.SS with
 * PSTATE.SS/SPSR.SS, EC 0x32/0x33, active-pending included) reach us as exceptions with the right
 * syndrome, which soft_exc.c enters. What it does not:
 *
 * - Watchpoints: Unicorn compiled QEMU's watchpoint list out (cpu_watchpoint_insert is empty), so
 *   DBGWCR/DBGWVR are stored and never match. Here, while the guest has one enabled (DBGWCR.E and
 *   MDSCR_EL1.MDE, OS lock clear), a code hook decodes each load and store before it executes and
 *   enters the watchpoint exception (Arm ARM D2.10) in its place: the access is not performed, the
 *   instruction (base write-back included) has not happened, ELR is its address. Memory hooks cannot
 *   do that (they run inside the access, which then completes). Without an enabled watchpoint no hook
 *   exists, so the cost is zero; with one, every instruction pays for the hook.
 * - The OS lock (OSLSR_EL1.OSLK): QEMU 5.0 ignores it. While it is set the guest's MDSCR_EL1 is kept
 *   here and QEMU's copy has MDE and SS clear, so no breakpoint, watchpoint or step exception is
 *   generated (AArch64.GenerateDebugExceptionsFrom, Arm ARM D2.5); MRS MDSCR_EL1 reads the guest's.
 *
 * A debugger attached to the VM (GDB stub, soft_debug.c) has its own hooks; when both want the same
 * instruction the debugger wins: a hook that stopped the vCPU (vmm__soft_stop) before ours ran leaves
 * the instruction unexecuted, so ours does nothing, and matches again when the debugger resumes it.
 */
#include <inttypes.h>
#include <string.h>

#include "../arm/arm.h"
#include "../arm/pmu.h"
#include "../arm/watchpoint.h"
#include "../core/irqchip.h"
#include "soft.h"

#define REG_MDSCR_EL1 SYSREG(2, 0, 0, 2, 2)
#define REG_OSLAR_EL1 SYSREG(2, 0, 1, 0, 4)
#define REG_PMUSERENR_EL0 SYSREG(3, 3, 9, 14, 0)
#define REG_PMCR_EL0 SYSREG(3, 3, 9, 12, 0)
#define REG_ID_AA64PFR0_EL1 SYSREG(3, 0, 0, 4, 0)
#define REG_ID_AA64DFR0_EL1 SYSREG(3, 0, 0, 5, 0)
/* DBGWVR<n>_EL1: op0 2, op1 0, CRn 0, CRm n, op2 6; DBGWCR<n>_EL1: op2 7 (Arm ARM D17.3) */
#define IS_DBGW(id) (((id) & ~(0xfu << 3 | 1u)) == SYSREG(2, 0, 0, 0, 6))

#define MDSCR_SS (1u << 0)
#define MDSCR_KDE (1u << 13)
#define MDSCR_MDE (1u << 15)
#define PSTATE_D (1u << 9)

/* ESR for a watchpoint (D17.2.40, ISS D17.2.40.6): EC 0x34 lower EL / 0x35 same EL, IL, WnR, DFSC 0x22 */
#define EC_WPT_LOW 0x34u
#define ISS_WNR (1u << 6)
#define FSC_DEBUG 0x22u
#define EC_STEP_LOW 0x32u

/* ---- ID registers: advertise what works ---- */

#define PFR0_GIC_SYSREGS (1ull << 24) /* GIC field: the system-register CPU interface (v3.0/4.0) */
#define DFR0_PMUVER_SHIFT 8

/*
 * ID register reads the soft backend corrects. QEMU's CPU without its GIC says there is no GIC CPU
 * interface (ours has one). PMUVer: our PMU (arm/pmu.c) is PMUv3. SVE, which Unicorn's "max" has, is
 * not hidden: soft_exc.c lets EL1 use it (guest/idregs.c runs RDVL and ZCR_EL1 on it).
 */
bool vmm__soft_idreg_is_ours(uint32_t id)
{
    return id == REG_ID_AA64PFR0_EL1 || id == REG_ID_AA64DFR0_EL1;
}

bool vmm__soft_idreg(struct soft_vcpu *sv, uint32_t id, uint64_t *val)
{
    switch (id) {
    case REG_ID_AA64PFR0_EL1:
        *val = vmm__soft_cp_read(sv->uc, id);
        if (vmm__irqchip_has_sysregs(sv->vcpu->vm->irqchip))
            *val |= PFR0_GIC_SYSREGS;
        return true;
    case REG_ID_AA64DFR0_EL1:
        *val = (vmm__soft_cp_read(sv->uc, id) & ~(0xfull << DFR0_PMUVER_SHIFT)) | (uint64_t)PMU_VERSION
                                                                                      << DFR0_PMUVER_SHIFT;
        return true;
    }
    return false;
}

/* ---- PMU ---- */

/* A new engine: our PMU gets QEMU's counter count; the debug state starts from QEMU's reset values. */
void vmm__soft_dbgarch_init(struct soft_vcpu *sv)
{
    /* as many event counters as QEMU has registers for: the hooks then always skip a real register */
    unsigned n = (unsigned)(vmm__soft_cp_read(sv->uc, REG_PMCR_EL0) >> 11) & 0x1f;
    sv->vcpu->pmu.n = n < PMU_COUNTERS ? n : PMU_COUNTERS;
    sv->dbg.nwpts = (unsigned)(vmm__soft_cp_read(sv->uc, REG_ID_AA64DFR0_EL1) >> 20 & 0xf) + 1; /* WRPs + 1 */
    /* OSLSR_EL1.OSLK is 1 after a cold reset (Arm ARM D17.3.x): no debug exceptions until the OS clears it */
    vmm__soft_dbg_reload(sv);
}

/*
 * MRS/MSR of a PMU register, before QEMU performs it. At EL0 only where PMUSERENR_EL0 allows: otherwise
 * QEMU raises the EC 0x18 trap itself, from the same PMUSERENR_EL0 (which we leave to it). Every register
 * served here exists in QEMU's CPU (pmu.n is its count), so skipping its access is enough.
 */
uint32_t vmm__soft_pmu_hook(struct soft_vcpu *sv, uint32_t id, bool is_read, int reg, uint64_t *val)
{
    if (!vmm__pmu_sysreg_is_ours(id))
        return 0;
    unsigned el = (soft__reg(sv->uc, UC_ARM64_REG_PSTATE) >> 2) & 3;
    if (el == 0 && !vmm__pmu_el0_allowed(id, is_read, vmm__soft_cp_read(sv->uc, REG_PMUSERENR_EL0)))
        return 0;
    vmm__soft_sync_insns(sv); /* the fast engine's count so far: counters read mid-run are current */
    if (vmm__sysreg_access(sv->vcpu, id, is_read, val))
        return 0; /* not one we have (a counter beyond N): QEMU's UNDEF */
    if (is_read && reg != UC_ARM64_REG_XZR)
        uc_reg_write(sv->uc, reg, val);
    else if (!is_read) { /* an overflow that interrupts may be due sooner now: this run ends there */
        uint64_t limit = vmm__soft_pmu_limit(sv, sv->vcpu->insn_limit);
        /* the fast engine checks the limit only with its block hook: a new run adds it (soft_vcpu_run) */
        if (limit < sv->vcpu->insn_limit && sv->fast && !sv->block_hook)
            sv->fast->kick(sv->uc);
        sv->vcpu->insn_limit = limit;
    }
    return 1;
}

/* Before a run: end it when an overflow that interrupts is due (the run loop's budget is kept). */
uint64_t vmm__soft_pmu_limit(struct soft_vcpu *sv, uint64_t limit)
{
    uint64_t at = vmm__pmu_next_overflow(sv->vcpu);
    return at < limit ? at : limit;
}

/* ---- the OS lock and MDSCR_EL1 ---- */

static uint64_t effective_mdscr(const struct soft_dbgarch *d)
{
    return d->oslk ? d->mdscr & ~(uint64_t)(MDSCR_MDE | MDSCR_SS) : d->mdscr;
}

static bool wpt_armed(const struct soft_dbgarch *d)
{
    if (d->oslk || !(d->mdscr & MDSCR_MDE))
        return false;
    for (unsigned i = 0; i < SOFT_WPTS; i++)
        if (d->wcr[i] & 1)
            return true;
    return false;
}

/* A debug-register MSR (op0 2). Returns 1 when it was performed here (QEMU's own write skipped). */
uint32_t vmm__soft_dbg_msr(struct soft_vcpu *sv, uint32_t id, uint64_t val)
{
    struct soft_dbgarch *d = &sv->dbg;

    if (id == REG_MDSCR_EL1 || id == REG_OSLAR_EL1) {
        if (id == REG_MDSCR_EL1)
            d->mdscr = val;
        else {
            d->oslk = val & 1;
            vmm__soft_cp_write(sv->uc, id, val); /* OSLSR_EL1.OSLK follows */
        }
        vmm__soft_cp_write(sv->uc, REG_MDSCR_EL1, effective_mdscr(d)); /* also rebuilds QEMU's hflags */
    } else if (IS_DBGW(id)) {
        unsigned n = SYSREG_CRM(id);
        if (n >= d->nwpts)
            return 0; /* QEMU's: UNDEFINED beyond ID_AA64DFR0_EL1.WRPs */
        if (SYSREG_OP2(id) == 6)
            d->wvr[n] = val;
        else
            d->wcr[n] = val;
        vmm__soft_cp_write(sv->uc, id, val);
    } else {
        return 0;
    }
    if (wpt_armed(d) != d->hooked) {
        d->dirty = true;
        vmm__soft_end_at_block(sv); /* hooks change between runs: end this one at the next block */
    }
    return 1;
}

bool vmm__soft_dbg_mrs(struct soft_vcpu *sv, uint32_t id, uint64_t *val)
{
    if (id != REG_MDSCR_EL1)
        return false;
    *val = sv->dbg.mdscr;
    return true;
}

/* After a snapshot load: the state from QEMU's registers (an OS-locked MDSCR_EL1 comes back unlocked). */
void vmm__soft_dbg_reload(struct soft_vcpu *sv)
{
    struct soft_dbgarch *d = &sv->dbg;

    d->mdscr = vmm__soft_cp_read(sv->uc, REG_MDSCR_EL1);
    d->oslk = vmm__soft_cp_read(sv->uc, SYSREG(2, 0, 1, 1, 4)) >> 1 & 1; /* OSLSR_EL1 */
    for (unsigned n = 0; n < d->nwpts; n++) {
        d->wvr[n] = vmm__soft_cp_read(sv->uc, SYSREG(2, 0, 0, n, 6));
        d->wcr[n] = vmm__soft_cp_read(sv->uc, SYSREG(2, 0, 0, n, 7));
    }
    d->dirty = true;
}

/* An UNDEF exception that is really a software step completing (EC 0x32/0x33): not to be emulated. */
bool vmm__soft_udef_is_step(struct soft_vcpu *sv)
{
    if (!(sv->dbg.mdscr & MDSCR_SS))
        return false;
    uint32_t syndrome;
    uc_context_save(sv->uc, sv->ctx);
    memcpy(&syndrome, (const uint8_t *)sv->ctx + sv->svm->syndrome_off, sizeof syndrome);
    return (syndrome >> 26 & ~1u) == EC_STEP_LOW;
}

#define PSTATE_SS (1u << 21)
#define ISS_STEP_ISV (1u << 24)

/*
 * After an instruction the backend completed itself (a register QEMU lacks, served from the hook or
 * the UNDEF path, PC written past it): QEMU's translation of it as UNDEFINED never completes a step,
 * so if software step was active-not-pending (PSTATE.SS set, debug exceptions enabled) it completes
 * here, as for any instruction (Arm ARM D2.12.4): PSTATE.SS clears and the step exception is taken at
 * next_pc, ISV 1, EX 0. Returns whether it was taken.
 */
bool vmm__soft_step_done(struct soft_vcpu *sv, uint64_t next_pc)
{
    const struct soft_dbgarch *d = &sv->dbg;

    if (!(d->mdscr & MDSCR_SS) || d->oslk)
        return false;
    uint64_t ps = soft__reg(sv->uc, UC_ARM64_REG_PSTATE);
    unsigned el = (ps >> 2) & 3;
    if (!(ps & PSTATE_SS) || el > 1 || (el == 1 && (!(d->mdscr & MDSCR_KDE) || (ps & PSTATE_D))))
        return false;
    soft__set_reg(sv->uc, UC_ARM64_REG_PSTATE, ps & ~(uint64_t)PSTATE_SS);
    vmm__soft_enter_el1(sv, (EC_STEP_LOW + (el == 1)) << 26 | 1u << 25 | ISS_STEP_ISV | FSC_DEBUG, false, 0, next_pc);
    return true;
}

/* ---- watchpoints (the decoder and matching: arm/watchpoint.c) ---- */

static uint64_t xreg(void *ctx, unsigned n, bool sp31)
{
    uc_engine *uc = ctx;
    if (n == 31)
        return sp31 ? soft__reg(uc, UC_ARM64_REG_SP) : 0;
    return soft__reg(uc, vmm__soft_xreg(n));
}

static void on_block_insns(uc_engine *uc, uint64_t addr, uint32_t size, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    struct soft_dbgarch *d = &sv->dbg;

    d->block = addr;
    d->nblock = 0;
    if (size <= sizeof d->insns && uc_vmem_read(uc, addr, UC_PROT_EXEC, d->insns, size) == UC_ERR_OK)
        d->nblock = size / 4;
}

static void on_insn(uc_engine *uc, uint64_t pc, uint32_t size, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    struct soft_dbgarch *d = &sv->dbg;
    struct vmm_ldst a;
    const struct vmm_ldst_regs regs = { xreg, uc };
    uint64_t far = 0, i = (pc - d->block) / 4;
    (void)size;

    uint32_t insn;
    if (sv->stopped)
        return; /* a debugger's hook stopped here first (vmm__soft_stop): it wins; we match again on resume */
    if (pc >= d->block && i < d->nblock)
        insn = d->insns[i];
    else if (uc_vmem_read(uc, pc, UC_PROT_EXEC, &insn, 4) != UC_ERR_OK)
        return;
    a.unpriv = false;
    if (!vmm__ldst_decode(&regs, insn, pc, &a) || !a.len)
        return;
    uint64_t ps = soft__reg(uc, UC_ARM64_REG_PSTATE);
    unsigned el = (ps >> 2) & 3;
    /* debug exceptions from EL1 to EL1 need KDE and PSTATE.D clear; from EL0 they are always on (D2.1) */
    if (el > 1 || (el == 1 && (!(d->mdscr & MDSCR_KDE) || (ps & PSTATE_D))))
        return;
    for (unsigned n = 0; n < SOFT_WPTS; n++) {
        if (vmm__wpt_applies(d->wcr[n], a.unpriv ? 0 : el, &a) && vmm__wpt_hit(d->wcr[n], d->wvr[n], &a, &far)) {
            uint32_t ec = EC_WPT_LOW + (el == 1);
            uint32_t esr = ec << 26 | 1u << 25 | (a.wr ? ISS_WNR : 0) | FSC_DEBUG;
            vmm__soft_enter_el1(sv, esr, true, far, pc);
            return;
        }
    }
}

/* Between runs: add or remove the watchpoint hooks to match what the guest enabled. */
int vmm__soft_dbg_apply(struct soft_vcpu *sv)
{
    struct soft_dbgarch *d = &sv->dbg;
    bool want = wpt_armed(d);

    d->dirty = false;
    if (want == d->hooked)
        return 0;
    if (want) {
        if (uc_hook_add(sv->uc, &d->hook_block, UC_HOOK_BLOCK, (void *)on_block_insns, sv, 1, 0) ||
            uc_hook_add(sv->uc, &d->hook_code, UC_HOOK_CODE, (void *)on_insn, sv, 1, 0))
            return vmm__set_error(sv->vcpu->vm, VMM_EBACKEND, "soft: cannot add the watchpoint hooks");
        d->block = UINT64_MAX;
        uc_ctl_flush_tb(sv->uc); /* translations made without the hooks would skip them */
    } else {
        uc_hook_del(sv->uc, d->hook_code);
        uc_hook_del(sv->uc, d->hook_block);
    }
    d->hooked = want;
    return 0;
}
