/* gic.c - placeholder GICv3 model (being replaced by the real one). */
#include <stdlib.h>

#include "gic.h"
#include "arm.h"

struct vmm_gic {
    struct vmm_vm *vm;
};

int vmm__gic_create(struct vmm_vm *vm, struct vmm_gic **out)
{
    struct vmm_gic *g = calloc(1, sizeof *g);
    if (!g)
        return vmm__set_error(vm, VMM_ENOMEM, "gic: out of memory");
    g->vm = vm;
    *out = g;
    return 0;
}

void vmm__gic_destroy(struct vmm_gic *gic)
{
    free(gic);
}

void vmm__gic_set_level(struct vmm_gic *gic, unsigned cpu, unsigned intid, bool level)
{
    (void)gic;
    (void)cpu;
    (void)intid;
    (void)level;
}

int vmm__gic_sysreg(struct vmm_gic *gic, unsigned cpu, uint32_t id, bool is_read, uint64_t *val)
{
    (void)gic;
    (void)cpu;
    (void)id;
    (void)is_read;
    (void)val;
    return VMM_ENOTSUP;
}

bool vmm__gic_irq_line(struct vmm_gic *gic, unsigned cpu)
{
    (void)gic;
    (void)cpu;
    return false;
}
