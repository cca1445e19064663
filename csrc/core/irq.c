/* irq.c - interrupt lines between devices, the irqchip and the vCPUs; test entry points for the GIC and sysregs. */
#include "run.h"
#include "../arm/arm.h"
#include "../arm/gic.h"
#include "gdb_reverse.h"
#include "irq.h"
#include "irqchip.h"
#include "vm.h"

void vmm__irq_set(struct vmm_vm *vm, unsigned cpu, unsigned intid, bool level)
{
    if (vm->irqchip && vm->irqchip->ops->set_level(vm->irqchip, cpu, intid, level))
        vmm__log(vm, VMM_LOG_WARN, "irq", "interrupt %u (cpu %u) cannot be driven on the %s irqchip", intid, cpu,
                 vm->irqchip->ops->name);
}

int vmm__irq_msi(struct vmm_vm *vm, uint64_t doorbell, uint32_t data, uint32_t devid)
{
    if (vm->irqchip && vm->irqchip->ops->send_msi)
        return vm->irqchip->ops->send_msi(vm->irqchip, doorbell, data, devid);
    /* a guest that enables MSI-X without an ITS sends one per request: rate-limited */
    vmm__guest_error(vm, "irq", "MSI to %#llx (device %u) dropped: the %s irqchip has no MSI support",
                     (unsigned long long)doorbell, devid, vm->irqchip ? vm->irqchip->ops->name : "missing");
    return VMM_ENOTSUP;
}

bool vmm__on_run_thread(struct vmm_vm *vm)
{
    return vm->run_thread_valid && pthread_equal(pthread_self(), vm->run_thread);
}

/*
 * The GIC changed what it signals to a vCPU. Record it; the backend applies
 * it to the vCPU (at once if that vCPU is executing on this thread, else
 * before it next runs), and an idle run loop wakes to look at it.
 */
void vmm__irq_line_changed(struct vmm_vm *vm, unsigned cpu, bool level)
{
    struct vmm_vcpu *vcpu;

    if (cpu >= vm->ncpus)
        return;
    vcpu = &vm->vcpus[cpu];
    atomic_store(&vcpu->irq, level);
    if (vm->ops && vm->ops->irq_notify)
        vm->ops->irq_notify(vcpu);
    /*
     * Nobody sleeps for a line its own vCPU thread raised (an SGI to self, a timer update), nor for one raised
     * for a vCPU whose thread is awake (running, or polling in WFI): it reads the line before it sleeps
     * (seq_cst on both sides, run_wait.c's vmm__run_vcpu_wait), and the kick above ends a run in progress.
     */
    if (level && !vmm__on_run_thread(vm) && !vmm__on_vcpu_thread(vcpu) && !atomic_load(&vcpu->awake))
        vmm__wake_vcpu(vcpu);
}

static int check_test_access(struct vmm_vm *vm, unsigned cpu)
{
    if (cpu >= vm->ncpus)
        return vmm__set_error(vm, VMM_EINVAL, "vCPU %u does not exist (the VM has %u)", cpu, vm->ncpus);
    return 0;
}

VMM_EXPORT int vmm_irq_set(vmm_vm *vm, unsigned cpu, unsigned intid, int level)
{
    if (!vm)
        return VMM_EINVAL;
    if (check_test_access(vm, cpu))
        return VMM_EINVAL;
    if (intid >= 1020)
        return vmm__set_error(vm, VMM_EINVAL, "INTID %u is not an SGI, PPI or SPI", intid);
    if (!vm->irqchip)
        return vmm__set_error(vm, VMM_ESTATE, "the VM has no interrupt controller");
    if (vm->irqchip->ops->set_level(vm->irqchip, cpu, intid, level != 0))
        return vmm__set_error(vm, VMM_ENOTSUP, "the %s backend's GIC (%s) takes PPIs and SPIs (INTID 16..127), not %u",
                              vm->ops->name, vm->irqchip->ops->name, intid);
    return 0;
}

VMM_EXPORT int vmm_irq_msi(vmm_vm *vm, uint64_t doorbell, uint32_t data, uint32_t devid)
{
    if (!vm)
        return VMM_EINVAL;
    if (!vmm__irqchip_has_its(vm->irqchip) || !vm->irqchip->ops->send_msi)
        return vmm__set_error(vm, VMM_ENOTSUP, "the %s interrupt controller has no ITS",
                              vm->irqchip ? vm->irqchip->ops->name : "(missing)");
    return vm->irqchip->ops->send_msi(vm->irqchip, doorbell, data, devid);
}

VMM_EXPORT int vmm_irq_line(vmm_vm *vm, unsigned cpu)
{
    if (!vm)
        return VMM_EINVAL;
    if (check_test_access(vm, cpu))
        return VMM_EINVAL;
    int line = vm->irqchip ? vm->irqchip->ops->irq_line(vm->irqchip, cpu) : VMM_ENOTSUP;
    if (line < 0)
        return vmm__set_error(vm, VMM_ENOTSUP,
                              "the %s backend's GIC is in the host kernel: its IRQ line cannot be read", vm->ops->name);
    return line;
}

static int sysreg_test_access(vmm_vm *vm, unsigned cpu, uint32_t id, bool is_read, uint64_t *val)
{
    int rc;

    if (!vm || !val)
        return VMM_EINVAL;
    if ((rc = check_test_access(vm, cpu)))
        return rc;
    if ((rc = vmm__check_idle(vm, "system registers cannot be accessed")))
        return rc;
    if (vmm__timer_sysreg_is_ours(id) ? vmm__has_cap(vm->ops, VMM_CAP_KERNEL_TIMERS)
                                      : vmm__gic_sysreg_is_ours(id) && !vmm__irqchip_has_sysregs(vm->irqchip))
        return vmm__set_error(vm, VMM_ENOTSUP, "the %s backend keeps this system register in the host kernel",
                              vm->ops->name);
    rc = vmm__sysreg_access(&vm->vcpus[cpu], id, is_read, val);
    if (!rc && !is_read)
        vmm__rev_host_changed(vm); /* no replay would make this write: reverse history starts again */
    if (rc == VMM_ENOTSUP)
        return vmm__set_error(vm, VMM_ENOTSUP, "S%u_%u_C%u_C%u_%u is not a system register libvmm emulates",
                              SYSREG_OP0(id), SYSREG_OP1(id), SYSREG_CRN(id), SYSREG_CRM(id), SYSREG_OP2(id));
    return rc;
}

VMM_EXPORT int vmm_sysreg_read(vmm_vm *vm, unsigned cpu, uint32_t id, uint64_t *val)
{
    return sysreg_test_access(vm, cpu, id, true, val);
}

VMM_EXPORT int vmm_sysreg_write(vmm_vm *vm, unsigned cpu, uint32_t id, uint64_t val)
{
    return sysreg_test_access(vm, cpu, id, false, &val);
}
