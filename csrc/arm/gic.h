/* gic.h - the GICv3 model (Arm IHI0069): what the rest of libvmm sees of it. */
#ifndef VMM_GIC_H
#define VMM_GIC_H

#include <stdbool.h>
#include <stdint.h>

#include "arm.h"

struct vmm_vm;
struct vmm_gic;

/* INTID ranges */
#define GIC_NR_SGI 16
#define GIC_NR_PRIVATE 32 /* SGIs + PPIs, banked per CPU */
#define GIC_NR_SPI 96     /* INTIDs 32..127; GICD_TYPER.ITLinesNumber = 3 */
#define GIC_NR_IRQS (GIC_NR_PRIVATE + GIC_NR_SPI)
#define GIC_SPURIOUS 1023

/*
 * Create the model for vm->ncpus CPUs and put its distributor and
 * redistributor frames on the MMIO bus (layout.h). *out is set on success.
 */
int vmm__gic_create(struct vmm_vm *vm, struct vmm_gic **out);
void vmm__gic_destroy(struct vmm_gic *gic);

/*
 * Drive an interrupt input line (thread-safe). SGIs/PPIs (intid < 32) are
 * banked: `cpu` selects the CPU; for SPIs `cpu` is ignored. An edge-triggered
 * interrupt becomes pending on a rising edge; a level-sensitive one is pending
 * while the line is high (or set pending by software).
 */
void vmm__gic_set_level(struct vmm_gic *gic, unsigned cpu, unsigned intid, bool level);

/*
 * An MRS/MSR of a GIC CPU interface register (ICC_*_EL1) by `cpu`.
 * Returns 0 when served (reads fill *val), VMM_ENOTSUP if `id` (SYSREG()
 * encoding from arm.h) is not a register of the CPU interface.
 */
int vmm__gic_sysreg(struct vmm_gic *gic, unsigned cpu, uint32_t id, bool is_read, uint64_t *val);

/*
 * Whether `id` names an ICC_*_EL1 register of the CPU interface (a pure function of the encoding): op0 3,
 * op1 0, CRn 12 with CRm 8..12, and ICC_PMR_EL1 (CRn 4, CRm 6). Inline: it is asked on every trapped access.
 */
static inline bool vmm__gic_sysreg_is_ours(uint32_t id)
{
    if (SYSREG_OP0(id) != 3 || SYSREG_OP1(id) != 0)
        return false;
    if (SYSREG_CRN(id) == 4)
        return SYSREG_CRM(id) == 6 && SYSREG_OP2(id) == 0;
    return SYSREG_CRN(id) == 12 && SYSREG_CRM(id) >= 8 && SYSREG_CRM(id) <= 12;
}

/* Snapshots (gic_snap.c): save, or load and recompute the lines (the VM paused). */
struct vmm_snap;
int vmm__gic_snap(struct vmm_gic *gic, struct vmm_snap *s);

/*
 * A message-signalled interrupt (thread-safe): `data` written to `doorbell` on behalf of DeviceID
 * `devid`. At GITS_TRANSLATER it is EventID `data` of that device (gic_its.c); anything the ITS
 * cannot translate is dropped with a guest error, as is a doorbell elsewhere. Returns 0.
 */
int vmm__gic_msi(struct vmm_gic *gic, uint64_t doorbell, uint32_t data, uint32_t devid);

/* Whether the GIC currently asserts the IRQ line of `cpu` (thread-safe). */
bool vmm__gic_irq_line(struct vmm_gic *gic, unsigned cpu);

/*
 * Implemented by the core (irq.c): the GIC calls it, after dropping its own
 * lock, whenever the IRQ line of `cpu` changes. It may be called from any
 * thread.
 */
void vmm__irq_line_changed(struct vmm_vm *vm, unsigned cpu, bool level);

#endif
