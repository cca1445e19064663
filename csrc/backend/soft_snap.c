/*
 * soft_snap.c - the soft backend's vCPU state in a snapshot (backend.h vcpu_save/vcpu_load).
 *
 * Unicorn's uc_context_save() copies QEMU's CPUARMState from its start up to cpu_watchpoint
 * (qemu/target/arm/unicorn_aarch64.c in 2.1.4: cpu_context_size = offsetof(CPUARMState,
 * cpu_watchpoint)): every register, the system registers (cp15), FP/SIMD, the exclusive monitor,
 * the pending exception's syndrome, the cached hflags. It holds no host pointer before
 * end_reset_fields; the 264 bytes after it are `features` and pointers (pmsav7/pmsav8/sau arrays,
 * nvic, boot_info, gicv3state, cpu_breakpoint[16]; all NULL for our A-profile CPUs without QEMU's
 * GIC) which a load never takes from the file: they are kept from the live engine. The layout is
 * QEMU's, so the blob is only valid for the same Unicorn version: we store the version and refuse a
 * mismatch. Alongside it goes a portable register list (X0-X30, SP, PC, PSTATE, V0-V31, FPCR/FPSR,
 * the EL0/EL1 system registers), which a load checks against the restored engine: a blob that
 * does not produce the same registers is refused.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arm/arm.h"
#include "../core/snapshot.h"
#include "soft.h"

#define SOFT_SNAP_VERSION 1
#define PTR_TAIL 264                /* bytes of the context from end_reset_fields on (2.1.4 layout) */
#define UC_VERSION_SNAP 0x020104u   /* major.minor.patch whose layout PTR_TAIL describes */
#define MAX_CONTEXT (1u << 20)      /* 2.1.4: about 11 KiB */
#define CORE(n) (0x80000000u | (n)) /* list ids outside the SYSREG() space */
#define CORE_SP CORE(31)
#define CORE_PC CORE(32)
#define CORE_PSTATE CORE(33)
#define CORE_V(n, hi) CORE(64 + 2 * (n) + (hi))

/* System registers by Unicorn register (readable through uc_reg_read) */
static const struct {
    uint32_t id;
    int reg;
} named[] = {
    { SYSREG(3, 0, 4, 1, 0), UC_ARM64_REG_SP_EL0 },     { SYSREG(3, 4, 4, 1, 0), UC_ARM64_REG_SP_EL1 },
    { SYSREG(3, 0, 4, 0, 1), UC_ARM64_REG_ELR_EL1 },    { SYSREG(3, 3, 4, 4, 0), UC_ARM64_REG_FPCR },
    { SYSREG(3, 3, 4, 4, 1), UC_ARM64_REG_FPSR },       { SYSREG(3, 0, 12, 0, 0), UC_ARM64_REG_VBAR_EL1 },
    { SYSREG(3, 0, 5, 2, 0), UC_ARM64_REG_ESR_EL1 },    { SYSREG(3, 0, 6, 0, 0), UC_ARM64_REG_FAR_EL1 },
    { SYSREG(3, 3, 13, 0, 2), UC_ARM64_REG_TPIDR_EL0 }, { SYSREG(3, 3, 13, 0, 3), UC_ARM64_REG_TPIDRRO_EL0 },
    { SYSREG(3, 0, 13, 0, 4), UC_ARM64_REG_TPIDR_EL1 }, { SYSREG(3, 0, 10, 2, 0), UC_ARM64_REG_MAIR_EL1 },
    { SYSREG(3, 0, 2, 0, 0), UC_ARM64_REG_TTBR0_EL1 },  { SYSREG(3, 0, 2, 0, 1), UC_ARM64_REG_TTBR1_EL1 },
    { SYSREG(3, 0, 1, 0, 2), UC_ARM64_REG_CPACR_EL1 },  { SYSREG(3, 0, 7, 4, 0), UC_ARM64_REG_PAR_EL1 },
};

/* ... and through the generic CP-register access */
static const uint32_t cp_regs[] = {
    SYSREG(3, 0, 4, 0, 0),  /* SPSR_EL1 */
    SYSREG(3, 0, 1, 0, 0),  /* SCTLR_EL1 */
    SYSREG(3, 0, 2, 0, 2),  /* TCR_EL1 */
    SYSREG(3, 0, 5, 1, 0),  /* AFSR0_EL1 */
    SYSREG(3, 0, 5, 1, 1),  /* AFSR1_EL1 */
    SYSREG(3, 0, 10, 3, 0), /* AMAIR_EL1 */
    SYSREG(3, 0, 13, 0, 1), /* CONTEXTIDR_EL1 */
    SYSREG(3, 0, 14, 1, 0), /* CNTKCTL_EL1 */
    SYSREG(2, 0, 0, 2, 2),  /* MDSCR_EL1 */
    SYSREG(3, 2, 0, 0, 0),  /* CSSELR_EL1 */
    SYSREG(3, 0, 0, 0, 5),  /* MPIDR_EL1 */
    REG_HCR_EL2,            /* ours: HCR_EL2.VI is the virtual IRQ line */
};

#define NREGS (31 + 3 + 64 + sizeof named / sizeof named[0] + sizeof cp_regs / sizeof cp_regs[0])

struct reg {
    uint32_t id;
    uint64_t val;
};

/* The engine's registers as the portable list (always the same ids, in the same order). */
static unsigned read_regs(uc_engine *uc, struct reg *r)
{
    unsigned n = 0;
    uint64_t v[2];

    for (unsigned i = 0; i < 31; i++)
        r[n++] = (struct reg){ CORE(i), soft__reg(uc, vmm__soft_xreg(i)) };
    r[n++] = (struct reg){ CORE_SP, soft__reg(uc, UC_ARM64_REG_SP) };
    r[n++] = (struct reg){ CORE_PC, soft__reg(uc, UC_ARM64_REG_PC) };
    r[n++] = (struct reg){ CORE_PSTATE, soft__reg(uc, UC_ARM64_REG_PSTATE) };
    for (unsigned i = 0; i < 32; i++) {
        memset(v, 0, sizeof v);
        uc_reg_read(uc, UC_ARM64_REG_V0 + (int)i, v);
        r[n++] = (struct reg){ CORE_V(i, 0), v[0] };
        r[n++] = (struct reg){ CORE_V(i, 1), v[1] };
    }
    for (unsigned i = 0; i < sizeof named / sizeof named[0]; i++)
        r[n++] = (struct reg){ named[i].id, soft__reg(uc, named[i].reg) };
    for (unsigned i = 0; i < sizeof cp_regs / sizeof cp_regs[0]; i++)
        r[n++] = (struct reg){ cp_regs[i], vmm__soft_cp_read(uc, cp_regs[i]) };
    return n;
}

/* The context's data: QEMU's CPU state after Unicorn's header (whose first field is its size). */
static int context_data(struct soft_vcpu *sv, struct vmm_snap *s, uint8_t **data, size_t *len)
{
    size_t total = uc_context_size(sv->uc), size;
    memcpy(&size, sv->ctx, sizeof size);
    if (size > total || total - size < sizeof size || total - size > 256 || size < PTR_TAIL || size > MAX_CONTEXT)
        return vmm__snap_fail_code(s, VMM_EBACKEND, "Unicorn's context layout is not the one we know");
    *data = (uint8_t *)sv->ctx + (total - size);
    *len = size;
    return 0;
}

static bool version_ok(uint32_t v)
{
    return (v >> 8) == UC_VERSION_SNAP;
}

int vmm__soft_vcpu_save(struct vmm_vcpu *vcpu, struct vmm_snap *s)
{
    struct soft_vcpu *sv = vcpu->bstate;
    struct reg regs[NREGS];
    uint32_t ucv = uc_version(NULL, NULL), n;
    uint8_t *data;
    size_t len;

    if (!version_ok(ucv))
        return vmm__snap_fail_code(s, VMM_ENOTSUP, "soft: snapshots need Unicorn 2.1.4 (this is %u.%u.%u)", ucv >> 24,
                                   (ucv >> 16) & 0xff, (ucv >> 8) & 0xff);
    if (uc_context_save(sv->uc, sv->ctx) != UC_ERR_OK || context_data(sv, s, &data, &len))
        return vmm__snap_fail_code(s, VMM_EBACKEND, "soft: vCPU %u: cannot save the CPU context", vcpu->id);
    n = read_regs(sv->uc, regs);
    vmm__snap_u64(s, &sv->pc);
    vmm__snap_u32(s, &ucv);
    vmm__snap_blob(s, (void **)&data, &len, MAX_CONTEXT);
    vmm__snap_u32(s, &n);
    for (unsigned i = 0; i < n; i++) {
        vmm__snap_u32(s, &regs[i].id);
        vmm__snap_u64(s, &regs[i].val);
    }
    return vmm__snap_error(s);
}

/* The loaded engine must hold what the register list says, in an EL and state we run. */
static int check_regs(struct soft_vcpu *sv, struct vmm_snap *s, const struct reg *want, unsigned n)
{
    struct reg have[NREGS];
    unsigned m = read_regs(sv->uc, have);

    if (n != m)
        return vmm__snap_fail(s, "%u registers where %u are expected", n, m);
    for (unsigned i = 0; i < n; i++)
        if (have[i].id != want[i].id || have[i].val != want[i].val)
            return vmm__snap_fail(s, "register 0x%x disagrees with the CPU state (corrupt)", want[i].id);
    uint64_t pstate = soft__reg(sv->uc, UC_ARM64_REG_PSTATE);
    if ((pstate & (1u << 4)) || ((pstate >> 2) & 3) > 1)
        return vmm__snap_fail(s, "PSTATE 0x%" PRIx64 " is not AArch64 EL0/EL1", pstate);
    if (sv->pc != soft__reg(sv->uc, UC_ARM64_REG_PC) || (sv->pc & 3))
        return vmm__snap_fail(s, "pc 0x%" PRIx64 " disagrees with the CPU state", sv->pc);
    return 0;
}

/* Copy the file's CPU state into the engine, keeping the live engine's pointer tail. */
static int restore_context(struct soft_vcpu *sv, struct vmm_snap *s, const uint8_t *blob, size_t blen)
{
    uint8_t *data, tail[PTR_TAIL];
    size_t len;

    if (uc_context_save(sv->uc, sv->ctx) != UC_ERR_OK || context_data(sv, s, &data, &len))
        return vmm__snap_fail_code(s, VMM_EBACKEND, "cannot read the CPU context");
    if (blen != len)
        return vmm__snap_fail(s, "CPU context of %zu bytes, this Unicorn's has %zu", blen, len);
    memcpy(tail, data + len - PTR_TAIL, PTR_TAIL);
    memcpy(data, blob, len - PTR_TAIL);
    memcpy(data + len - PTR_TAIL, tail, PTR_TAIL);
    if (uc_context_restore(sv->uc, sv->ctx) != UC_ERR_OK)
        return vmm__snap_fail_code(s, VMM_EBACKEND, "cannot restore the CPU context");
    return 0;
}

int vmm__soft_vcpu_load(struct vmm_vcpu *vcpu, struct vmm_snap *s)
{
    struct soft_vcpu *sv = vcpu->bstate;
    struct reg regs[NREGS];
    uint32_t ucv = 0, n = 0, mine = uc_version(NULL, NULL);
    void *blob = NULL;
    size_t blen = 0;

    vmm__snap_u64(s, &sv->pc);
    vmm__snap_u32(s, &ucv);
    if (!vmm__snap_error(s) && ucv != mine)
        return vmm__snap_fail_code(s, VMM_ENOTSUP, "the vCPU state is from Unicorn %u.%u.%u, this is %u.%u.%u",
                                   ucv >> 24, (ucv >> 16) & 0xff, (ucv >> 8) & 0xff, mine >> 24, (mine >> 16) & 0xff,
                                   (mine >> 8) & 0xff);
    vmm__snap_blob(s, &blob, &blen, MAX_CONTEXT);
    vmm__snap_u32(s, &n);
    if (!vmm__snap_error(s) && n != NREGS)
        vmm__snap_fail(s, "%u registers where %zu are expected", n, (size_t)NREGS);
    for (unsigned i = 0; i < n && !vmm__snap_error(s); i++) {
        vmm__snap_u32(s, &regs[i].id);
        vmm__snap_u64(s, &regs[i].val);
    }
    if (!vmm__snap_error(s) && !restore_context(sv, s, blob, blen) && !check_regs(sv, s, regs, n)) {
        /* rebuild QEMU's cached state from the registers (a PSTATE write, then a CP write: soft_exc.c) */
        soft__set_reg(sv->uc, UC_ARM64_REG_PSTATE, soft__reg(sv->uc, UC_ARM64_REG_PSTATE));
        sv->virq = atomic_load(&vcpu->irq);
        vmm__soft_cp_write(sv->uc, REG_HCR_EL2, HCR_BASE | (sv->virq ? HCR_VI : 0));
        atomic_store(&sv->kick, 0);
        sv->tb_flush = sv->tlb_flush = false;
        vmm__soft_dbg_reload(sv);
    }
    free(blob);
    return vmm__snap_error(s);
}
