/* watchpoint.h - load/store decoding and DBGWCR/DBGWVR matching (watchpoint.c). */
#ifndef VMM_ARM_WATCHPOINT_H
#define VMM_ARM_WATCHPOINT_H

#include <stdbool.h>
#include <stdint.h>

/* The data access an instruction makes. */
struct vmm_ldst {
    uint64_t va;
    unsigned len;
    bool rd, wr;
    bool unpriv; /* LDTR/STTR: matched as an EL0 access (the privilege it is made with) */
};

/* How the decoder reads the vCPU's general-purpose registers: Xn, n 31 = SP when sp31, else XZR. */
struct vmm_ldst_regs {
    uint64_t (*xreg)(void *ctx, unsigned n, bool sp31);
    void *ctx;
};

/* The data access `insn` at `pc` is about to make; false: none (or a form not decoded). */
bool vmm__ldst_decode(const struct vmm_ldst_regs *r, uint32_t insn, uint64_t pc, struct vmm_ldst *a);
/* Whether the bytes a watchpoint (DBGWCR, DBGWVR) watches meet the access; *far = the first one. */
bool vmm__wpt_hit(uint64_t wcr, uint64_t wvr, const struct vmm_ldst *a, uint64_t *far);
/* Whether an enabled watchpoint applies at this EL (PAC, with HMC and SSC 0) and to this access (LSC). */
bool vmm__wpt_applies(uint64_t wcr, unsigned el, const struct vmm_ldst *a);

#endif
