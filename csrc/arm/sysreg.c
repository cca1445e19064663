/* sysreg.c - the dispatcher for trapped system registers (MRS/MSR the backend cannot serve). */
#include "arm.h"

/*
 * Registers the core emulates. Each entry names a register and its handler;
 * the GIC CPU interface and the generic timer join this table when their
 * models land. Everything else is UNDEFINED for the guest.
 */
struct sysreg_desc {
    uint32_t id;
    const char *name;
    int (*access)(struct vmm_vcpu *vcpu, bool is_read, uint64_t *val);
};

static const struct sysreg_desc sysregs[] = {
    { 0, NULL, NULL },
};

static const struct sysreg_desc *find(uint32_t id)
{
    for (size_t i = 0; i < sizeof sysregs / sizeof sysregs[0]; i++)
        if (sysregs[i].access && sysregs[i].id == id)
            return &sysregs[i];
    return NULL;
}

bool vmm__sysreg_is_emulated(uint32_t id)
{
    return find(id) != NULL;
}

int vmm__sysreg_access(struct vmm_vcpu *vcpu, uint32_t id, bool is_read, uint64_t *val)
{
    const struct sysreg_desc *d = find(id);

    vcpu->vm->stats.sysreg_exits++;
    if (d)
        return d->access(vcpu, is_read, val);
    vmm__guest_error(vcpu->vm, "sysreg", "vCPU %u: %s of unknown system register S%u_%u_C%u_C%u_%u: UNDEFINED",
                     vcpu->id, is_read ? "read" : "write", SYSREG_OP0(id), SYSREG_OP1(id), SYSREG_CRN(id),
                     SYSREG_CRM(id), SYSREG_OP2(id));
    return VMM_ENOTSUP;
}
