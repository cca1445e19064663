/* soft_exc.c - the soft backend's CPU state work: boot state, syndrome calibration, exception entry. */
#include <inttypes.h>
#include <string.h>

#include "../arm/arm.h"
#include "../core/layout.h"
#include "soft.h"
#include "soft_syndrome.h"

#define REG_SCR_EL3 SYSREG(3, 6, 1, 1, 0)
#define REG_CNTHCTL_EL2 SYSREG(3, 4, 14, 1, 0)
#define REG_VMPIDR_EL2 SYSREG(3, 4, 0, 0, 5)
#define REG_SPSR_EL1 SYSREG(3, 0, 4, 0, 0)
#define REG_SCTLR_EL1 SYSREG(3, 0, 1, 0, 0)
#define REG_ID_AA64MMFR1_EL1 SYSREG(3, 0, 0, 7, 1)
#define REG_ID_AA64PFR0_EL1 SYSREG(3, 0, 0, 4, 0)
#define REG_CPTR_EL3 SYSREG(3, 6, 1, 1, 2)
#define REG_ZCR_EL3 SYSREG(3, 6, 1, 2, 0)
#define REG_ZCR_EL2 SYSREG(3, 4, 1, 2, 0)
#define CPTR_EL3_EZ (1u << 8)
#define ZCR_LEN_MAX 0xfu

#define SCR_NS (1u << 0)
#define SCR_HCE (1u << 8)
#define SCR_RW (1u << 10)
#define SCR_APK (1u << 16) /* pointer authentication keys and instructions do not trap to EL3 */
#define SCR_API (1u << 17)

#define PSTATE_EL1H 0x5u /* M[3:0] = EL1h */
#define PSTATE_DAIF (0xfu << 6)
#define PSTATE_PAN (1u << 22)
#define SCTLR_SPAN (1ull << 23)

/* ESR_ELx fields (Arm ARM D17.2.40) */
#define ESR_EC_SHIFT 26
#define ESR_IL (1u << 25)
#define EC_IABT_LOW 0x20
#define EC_IABT_CUR 0x21
#define EC_DABT_LOW 0x24
#define EC_DABT_CUR 0x25
#define ISS_FNV (1u << 10)
#define ISS_WNR (1u << 6)
#define FSC_SYNC_EXTERNAL 0x10

#define VECTOR_LOOP_LIMIT 3

/*
 * QEMU keeps the syndrome of the exception being raised in
 * env->exception.{syndrome, fsr, vaddress}; Unicorn offers no accessor, but
 * uc_context_save() copies the whole CPU state. Find the offset once per VM
 * by raising two exceptions with known syndromes in a scratch page.
 */
int vmm__soft_calibrate(struct vmm_vm *vm, uc_engine *uc, size_t *syndrome_off)
{
    size_t off = vmm__uc_syndrome_offset(uc, 0x1000);

    if (!off)
        return vmm__set_error(vm, VMM_EBACKEND,
                              "soft: cannot locate the exception syndrome in this Unicorn build; "
                              "the supported version is 2.1.x");
    *syndrome_off = off;
    return 0;
}

int vmm__soft_boot_state(struct soft_vcpu *sv, uint64_t entry, uint64_t x0)
{
    uc_engine *uc = sv->uc;
    int rc = 0;

    /* Non-secure EL1 under an idle EL2/EL3, so that HVC and SMC reach us. */
    soft__set_reg(uc, UC_ARM64_REG_PSTATE, PSTATE_DAIF | PSTATE_EL1H);
    for (unsigned i = 0; i < 31; i++)
        soft__set_reg(uc, vmm__soft_xreg(i), 0);
    soft__set_reg(uc, UC_ARM64_REG_X0, x0);
    soft__set_reg(uc, UC_ARM64_REG_PC, entry);
    rc |= vmm__soft_cp_write(uc, REG_SCR_EL3, SCR_NS | SCR_HCE | SCR_RW | SCR_APK | SCR_API);
    rc |= vmm__soft_cp_write(uc, REG_HCR_EL2, HCR_BASE);
    /*
     * SVE (the max model): the idle EL3 and EL2 let EL1 have it, as firmware would. CPTR_EL3.EZ, and
     * ZCR_EL3/ZCR_EL2.LEN at their maximum so that ZCR_EL1 alone picks the vector length (Arm ARM
     * D17.2.34, D13.3.x "Configurable vector length"); CPTR_EL2.TZ is 0 after reset. Without this
     * every SVE instruction and ZCR_EL1 access trapped to EL3 (EC 0x19).
     */
    if ((vmm__soft_cp_read(uc, REG_ID_AA64PFR0_EL1) >> 32) & 0xf) {
        rc |= vmm__soft_cp_write(uc, REG_CPTR_EL3, CPTR_EL3_EZ);
        rc |= vmm__soft_cp_write(uc, REG_ZCR_EL3, ZCR_LEN_MAX);
        rc |= vmm__soft_cp_write(uc, REG_ZCR_EL2, ZCR_LEN_MAX);
    }
    sv->virq = false;
    rc |= vmm__soft_cp_write(uc, REG_CNTHCTL_EL2, 3); /* EL1PCTEN | EL1PCEN */
    rc |= vmm__soft_cp_write(uc, REG_VMPIDR_EL2, 0x80000000ull | sv->vcpu->id);
    /* a CP-register write after the PSTATE write makes QEMU rebuild its cached EL/MMU state */
    rc |= vmm__soft_cp_write(uc, REG_SPSR_EL1, 0);
    sv->pc = entry;
    sv->last_vector = 0;
    sv->vector_repeats = 0;
    return rc ? vmm__set_error(sv->vcpu->vm, VMM_EBACKEND, "soft: cannot set the boot CPU state") : 0;
}

static void guest_fatal(struct soft_vcpu *sv, const char *what, uint32_t esr, uint64_t pc, uint64_t vbar)
{
    struct vmm_vm *vm = sv->vcpu->vm;
    vmm__set_error(vm, VMM_EINVAL, "vCPU %u: %s (ESR 0x%08" PRIx32 ", pc 0x%" PRIx64 ", VBAR_EL1 0x%" PRIx64 ")",
                   sv->vcpu->id, what, esr, pc, vbar);
    vmm__guest_error(vm, "soft", "%s", vm->errmsg);
    sv->exit->kind = VMM_EXIT_GUEST_ERROR;
    vmm__soft_stop(sv);
}

/* AArch64 exception entry to EL1 (Arm ARM D1.10.2), done by hand. */
static void enter_el1(struct soft_vcpu *sv, uint32_t esr, bool set_far, uint64_t far, uint64_t elr)
{
    uc_engine *uc = sv->uc;
    uint64_t ps = soft__reg(uc, UC_ARM64_REG_PSTATE);
    unsigned el = (ps >> 2) & 3;
    uint64_t vbar = soft__reg(uc, UC_ARM64_REG_VBAR_EL1);
    uint64_t target = vbar + (el == 0 ? 0x400 : (ps & 1) ? 0x200 : 0x000);
    uint64_t pa, new_ps = PSTATE_DAIF | PSTATE_EL1H;

    if (el > 1) {
        guest_fatal(sv, "exception at an EL the soft backend never runs", esr, elr, vbar);
        return;
    }
    /* the handler's first instruction faulting again and again: no handler */
    if (elr == sv->last_vector) {
        if (++sv->vector_repeats >= VECTOR_LOOP_LIMIT) {
            guest_fatal(sv, "exception loop: the exception vector itself faults", esr, elr, vbar);
            return;
        }
    } else {
        sv->vector_repeats = 0;
    }
    if (el == 0 || !(ps & 1)) { /* from SP_EL0: bank it and switch to SP_EL1 */
        soft__set_reg(uc, UC_ARM64_REG_SP_EL0, soft__reg(uc, UC_ARM64_REG_SP));
        soft__set_reg(uc, UC_ARM64_REG_SP, soft__reg(uc, UC_ARM64_REG_SP_EL1));
    }
    soft__set_reg(uc, UC_ARM64_REG_ESR_EL1, esr);
    if (set_far)
        soft__set_reg(uc, UC_ARM64_REG_FAR_EL1, far);
    soft__set_reg(uc, UC_ARM64_REG_ELR_EL1, elr);
    /* PAN is set on entry unless SCTLR_EL1.SPAN says otherwise (FEAT_PAN) */
    if (((vmm__soft_cp_read(uc, REG_ID_AA64MMFR1_EL1) >> 20) & 0xf) &&
        !(vmm__soft_cp_read(uc, REG_SCTLR_EL1) & SCTLR_SPAN))
        new_ps |= PSTATE_PAN;
    else
        new_ps |= ps & PSTATE_PAN;
    soft__set_reg(uc, UC_ARM64_REG_PSTATE, new_ps);
    vmm__soft_cp_write(uc, REG_SPSR_EL1, ps); /* also makes QEMU rebuild its cached EL state */
    if (uc_vmem_translate(uc, target, UC_PROT_EXEC, &pa) != UC_ERR_OK || !vmm__gpa_ptr(sv->vcpu->vm, pa, 4)) {
        guest_fatal(sv, "exception with no executable vector table in RAM", esr, elr, vbar);
        return;
    }
    soft__set_reg(uc, UC_ARM64_REG_PC, target);
    sv->last_vector = target;
    sv->pc = target;
    vmm__count(sv->vcpu->vm, &sv->vcpu->vm->stats.exceptions);
}

void vmm__soft_enter_el1(struct soft_vcpu *sv, uint32_t esr, bool set_far, uint64_t far, uint64_t elr)
{
    enter_el1(sv, esr, set_far, far, elr);
}

void vmm__soft_deliver_sync(struct soft_vcpu *sv, uint64_t pc)
{
    struct {
        uint32_t syndrome, fsr;
        uint64_t vaddress;
    } exc;

    uc_context_save(sv->uc, sv->ctx);
    memcpy(&exc, (const uint8_t *)sv->ctx + sv->svm->syndrome_off, sizeof exc);
    unsigned ec = exc.syndrome >> ESR_EC_SHIFT;
    bool abort = ec == EC_IABT_LOW || ec == EC_IABT_CUR || ec == EC_DABT_LOW || ec == EC_DABT_CUR || ec == 0x22;
    enter_el1(sv, exc.syndrome, abort, exc.vaddress, pc);
}

void vmm__soft_deliver_external_abort(struct soft_vcpu *sv)
{
    bool cur = ((soft__reg(sv->uc, UC_ARM64_REG_PSTATE) >> 2) & 3) == 1;
    uint32_t ec = sv->fault.fetch ? (cur ? EC_IABT_CUR : EC_IABT_LOW) : (cur ? EC_DABT_CUR : EC_DABT_LOW);
    /* FnV: we know the physical address, not the virtual one, so FAR is not valid */
    uint32_t iss = FSC_SYNC_EXTERNAL | ISS_FNV | (sv->fault.write ? ISS_WNR : 0);

    enter_el1(sv, (ec << ESR_EC_SHIFT) | ESR_IL | iss, false, 0, sv->pc);
}
