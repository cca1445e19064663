/* sysreg.c - the dispatcher for trapped system registers (MRS/MSR the backend cannot serve). */
#include "../core/irqchip.h"
#include "gic.h"
#include "arm.h"
#include "pmu.h"

/*
 * Three blocks own emulated registers: the GIC CPU interface (ICC_*, served
 * when the irqchip's CPU interface is ours), the generic timer (CNT*) and, for a
 * backend whose CPU has no counting PMU (soft), the PMU (PM*). Everything else
 * is UNDEFINED for the guest.
 */
int vmm__sysreg_access(struct vmm_vcpu *vcpu, uint32_t id, bool is_read, uint64_t *val)
{
    struct vmm_vm *vm = vcpu->vm;
    int rc = VMM_ENOTSUP;

    vmm__count(vm, &vm->stats.sysreg_exits);
    if (vmm__gic_sysreg_is_ours(id)) /* first: the ICC registers are the ones guests use most */
        rc = vmm__irqchip_has_sysregs(vm->irqchip) ? vm->irqchip->ops->sysreg(vm->irqchip, vcpu->id, id, is_read, val)
                                                   : VMM_ENOTSUP;
    else if (vmm__timer_sysreg_is_ours(id))
        rc = vmm__timer_sysreg(vcpu, id, is_read, val);
    else if (vmm__pmu_sysreg_is_ours(id) && (!vmm__has_cap(vm->ops, VMM_CAP_HOST_CPU) || vcpu->pmu.host_clock))
        rc = vmm__pmu_sysreg(vcpu, id, is_read, val);
    if (rc != VMM_ENOTSUP)
        return rc;
    vmm__guest_error(vm, "sysreg", "vCPU %u: %s of unknown system register S%u_%u_C%u_C%u_%u: UNDEFINED", vcpu->id,
                     is_read ? "read" : "write", SYSREG_OP0(id), SYSREG_OP1(id), SYSREG_CRN(id), SYSREG_CRM(id),
                     SYSREG_OP2(id));
    return VMM_ENOTSUP;
}
