/* gic_irqchip.c - our GICv3 model behind the irqchip interface (core/irqchip.h). */
#include <stdlib.h>

#include "../core/irqchip.h"
#include "../core/vm.h"
#include "gic.h"

struct gic_chip {
    struct vmm_irqchip chip; /* first */
    struct vmm_gic *gic;
};

static struct vmm_gic *gic_of(struct vmm_irqchip *chip)
{
    return ((struct gic_chip *)chip)->gic;
}

static int gic_set_level(struct vmm_irqchip *chip, unsigned cpu, unsigned intid, bool level)
{
    vmm__gic_set_level(gic_of(chip), cpu, intid, level); /* INTIDs 128.. go nowhere, as on hardware */
    return 0;
}

static int gic_irq_line(struct vmm_irqchip *chip, unsigned cpu)
{
    return vmm__gic_irq_line(gic_of(chip), cpu);
}

static int gic_sysreg(struct vmm_irqchip *chip, unsigned cpu, uint32_t id, bool is_read, uint64_t *val)
{
    return vmm__gic_sysreg(gic_of(chip), cpu, id, is_read, val);
}

/* A device's MSI: a write of `data` to `doorbell` (our GITS_TRANSLATER) on behalf of DeviceID devid. */
static int gic_send_msi(struct vmm_irqchip *chip, uint64_t doorbell, uint32_t data, uint32_t devid)
{
    return vmm__gic_msi(gic_of(chip), doorbell, data, devid);
}

static int gic_snap(struct vmm_irqchip *chip, struct vmm_snap *s)
{
    return vmm__gic_snap(gic_of(chip), s);
}

static void gic_chip_destroy(struct vmm_irqchip *chip)
{
    vmm__gic_destroy(gic_of(chip));
    free(chip);
}

static const struct vmm_irqchip_ops gicv3_ops = {
    .name = "gicv3",
    .set_level = gic_set_level,
    .irq_line = gic_irq_line,
    .sysreg = gic_sysreg,
    .send_msi = gic_send_msi,
    .save = gic_snap,
    .load = gic_snap,
    .destroy = gic_chip_destroy,
};

int vmm__gicv3_irqchip_create(struct vmm_vm *vm, struct vmm_irqchip **out)
{
    struct gic_chip *c = calloc(1, sizeof *c);
    int rc;

    if (!c)
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the GIC");
    c->chip = (struct vmm_irqchip){ .ops = &gicv3_ops, .vm = vm, .its = vm->its };
    if ((rc = vmm__gic_create(vm, &c->gic))) {
        free(c);
        return rc;
    }
    *out = &c->chip;
    return 0;
}
