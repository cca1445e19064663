/* irqchip.h - the interrupt controller interface: our GICv3 model, or one a backend brings (KVM's vGIC). */
#ifndef VMM_IRQCHIP_H
#define VMM_IRQCHIP_H

#include <stdbool.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_irqchip;
struct vmm_snap;

/*
 * Both implementations are a GICv3 at layout.h's distributor and
 * redistributor addresses with INTIDs 0..127, so the device tree node
 * (fdt.c) is the same for both. Device models never see the chip: they call
 * vmm__irq_set() (irq.c), which calls set_level().
 */
struct vmm_irqchip_ops {
    const char *name;
    /*
     * Drive an input line (any thread, no vm->lock held): an SGI/PPI
     * (intid < 32) of `cpu`, or an SPI (cpu ignored). Returns 0, or
     * VMM_ENOTSUP when this chip cannot drive that INTID from outside.
     */
    int (*set_level)(struct vmm_irqchip *chip, unsigned cpu, unsigned intid, bool level);
    /* Whether the chip asserts cpu's IRQ line now: 1 or 0, or VMM_ENOTSUP if that cannot be seen (in-kernel chip). */
    int (*irq_line)(struct vmm_irqchip *chip, unsigned cpu);
    /*
     * An MRS/MSR of an ICC_*_EL1 register by `cpu` (SYSREG() encoding):
     * 0 (reads fill *val) or VMM_ENOTSUP. NULL when the CPU interface is not
     * ours to serve (the vCPU's kernel or hardware has it).
     */
    int (*sysreg)(struct vmm_irqchip *chip, unsigned cpu, uint32_t id, bool is_read, uint64_t *val);
    /*
     * A message-signalled interrupt (any thread, no vm->lock held): a device
     * wrote `data` to guest-physical `doorbell` (for a GICv3 ITS, its
     * GITS_TRANSLATER; data is the EventID) on behalf of `devid` (the ITS
     * DeviceID: for PCI, the requester ID through the host bridge's msi-map).
     * Returns 0 (delivered, or dropped as the spec says, e.g. an unmapped
     * event), or VMM_ENOTSUP if this chip has no MSI support. NULL: none.
     */
    int (*send_msi)(struct vmm_irqchip *chip, uint64_t doorbell, uint32_t data, uint32_t devid);
    /*
     * Snapshots (the VM paused): write the chip's state into s / restore it (core/snapshot.h; the
     * core opens the "irqchip" section). load validates every value and re-evaluates the CPUs'
     * IRQ lines. NULL: this chip cannot be snapshotted (VMM_ENOTSUP).
     */
    int (*save)(struct vmm_irqchip *chip, struct vmm_snap *s);
    int (*load)(struct vmm_irqchip *chip, struct vmm_snap *s);
    void (*destroy)(struct vmm_irqchip *chip);
};

/* Implementations embed this first. */
struct vmm_irqchip {
    const struct vmm_irqchip_ops *ops;
    struct vmm_vm *vm;
    /*
     * A GICv3 ITS at LAYOUT_GITS_BASE (fdt.c writes its node, phandle FDT_PH_ITS, which a PCI host
     * bridge's msi-map names); send_msi then reaches it through GITS_TRANSLATER.
     */
    bool its;
};

static inline bool vmm__irqchip_has_its(const struct vmm_irqchip *chip)
{
    return chip && chip->its;
}

/*
 * Our GICv3 model (arm/gic_irqchip.c over arm/gic*.c): the distributor and
 * redistributors on the MMIO bus, the CPU interface through sysreg traps;
 * IRQ line changes reach vmm__irq_line_changed() (irq.c).
 */
int vmm__gicv3_irqchip_create(struct vmm_vm *vm, struct vmm_irqchip **out);

/* NULL-safe. */
static inline void vmm__irqchip_destroy(struct vmm_irqchip *chip)
{
    if (chip)
        chip->ops->destroy(chip);
}

/* Whether the CPU interface's system registers are ours to emulate (trap and serve). */
static inline bool vmm__irqchip_has_sysregs(const struct vmm_irqchip *chip)
{
    return chip && chip->ops->sysreg;
}

#endif
