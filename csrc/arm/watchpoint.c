/*
 * watchpoint.c - watchpoints for engines that have none (Unicorn compiled QEMU's out): the data access
 * an A64 instruction is about to make, decoded before it executes, and whether a DBGWCR/DBGWVR pair
 * matches it (Arm ARM D2.10). Used by the soft backend (soft_dbgarch.c) and the Hypervisor.framework
 * simulator (backend/hvfsim), which both enter the watchpoint exception in the instruction's place.
 */
#include "watchpoint.h"

static int64_t sext(uint64_t v, unsigned bits)
{
    return (int64_t)(v << (64 - bits)) >> (64 - bits);
}

/* Register offset: Xm extended by option and shifted (Arm ARM C6.2 LDR (register)) */
static uint64_t ext_reg(const struct vmm_ldst_regs *r, uint32_t insn, unsigned shift)
{
    uint64_t m = r->xreg(r->ctx, insn >> 16 & 31, false);
    unsigned option = insn >> 13 & 7;
    if (option == 2)
        m = (uint32_t)m;
    else if (option == 6)
        m = (uint64_t)(int64_t)(int32_t)m;
    return insn >> 12 & 1 ? m << shift : m;
}

/* Load/store single register forms (C4.1.66 "Load/store register"): op = insn[29:24] 0x38/0x39/0x3c/0x3d */
static bool ldst_reg(const struct vmm_ldst_regs *r, uint32_t insn, struct vmm_ldst *a)
{
    unsigned size = insn >> 30, opc = insn >> 22 & 3, scale = size;
    bool simd = insn >> 26 & 1, uimm = insn >> 24 & 1;
    uint64_t base = r->xreg(r->ctx, insn >> 5 & 31, true);

    if (simd) {
        scale = (opc & 2) << 1 | size;
        if (scale > 4)
            return false;
        a->rd = opc & 1;
    } else if (size == 3 && opc == 2) {
        return false; /* PRFM: no access */
    } else {
        a->rd = opc != 0;
    }
    a->wr = !a->rd;
    a->len = 1u << scale;
    if (uimm) {
        a->va = base + ((uint64_t)(insn >> 10 & 0xfff) << scale);
        return true;
    }
    if (insn >> 21 & 1) {
        switch (insn >> 10 & 3) {
        case 2: /* register offset */
            a->va = base + ext_reg(r, insn, scale);
            return true;
        case 0: /* atomic memory operations (C6.2 LDADD, SWP, ...); LDAPR reads only */
            if (simd)
                return false;
            a->va = base;
            a->rd = true;
            a->wr = !((insn >> 15 & 1) && (insn >> 12 & 7) == 4);
            a->len = 1u << size;
            return true;
        default: /* LDRAA/LDRAB: pointer authentication, not decoded */
            return false;
        }
    }
    /* imm9: unscaled (00), post-index (01), unprivileged (10), pre-index (11) */
    a->unpriv = (insn >> 10 & 3) == 2;
    a->va = (insn >> 10 & 3) == 1 ? base : base + (uint64_t)sext(insn >> 12 & 0x1ff, 9);
    return true;
}

/* Pairs (C4.1.66 "Load/store register pair"): insn[29:24] 0x28/0x29/0x2c/0x2d */
static bool ldst_pair(const struct vmm_ldst_regs *r, uint32_t insn, struct vmm_ldst *a)
{
    unsigned opc = insn >> 30, scale;
    bool simd = insn >> 26 & 1;
    uint64_t base = r->xreg(r->ctx, insn >> 5 & 31, true);

    if (simd)
        scale = 2 + opc;
    else
        scale = opc == 2 ? 3 : 2;
    if (scale > 4 || (!simd && opc == 3))
        return false;
    a->rd = insn >> 22 & 1;
    a->wr = !a->rd;
    a->len = 2u << scale;
    a->va = (insn >> 23 & 3) == 1 ? base : base + ((uint64_t)sext(insn >> 15 & 0x7f, 7) << scale);
    return true;
}

/* Exclusives, acquire/release, compare-and-swap (C4.1.66 "Load/store exclusive and ordered"): 0x08 */
static bool ldst_excl(const struct vmm_ldst_regs *r, uint32_t insn, struct vmm_ldst *a)
{
    bool o2 = insn >> 23 & 1, load = insn >> 22 & 1, o1 = insn >> 21 & 1;
    unsigned size = insn >> 30;

    a->va = r->xreg(r->ctx, insn >> 5 & 31, true);
    a->len = 1u << size;
    a->rd = load;
    a->wr = !load;
    if (o1 && !o2) { /* LDXP/STXP (size 2/3), or CASP (size 0/1) */
        if (size < 2) {
            a->len = 8u << size;
            a->rd = a->wr = true;
        } else {
            a->len = 2u << size;
        }
    } else if (o1 && o2) { /* CAS */
        a->rd = a->wr = true;
    }
    return true;
}

/* SIMD structure loads/stores (C4.1.66 "Advanced SIMD load/store multiple/single structures") */
static bool ldst_simd(const struct vmm_ldst_regs *r, uint32_t insn, struct vmm_ldst *a)
{
    static const unsigned char multi_regs[16] = { 4, 0, 4, 0, 3, 0, 3, 1, 2, 0, 2, 0, 0, 0, 0, 0 };
    unsigned q = insn >> 30 & 1, opcode = insn >> 12 & 15;

    a->va = r->xreg(r->ctx, insn >> 5 & 31, true);
    a->rd = insn >> 22 & 1;
    a->wr = !a->rd;
    if (!(insn >> 24 & 1)) { /* multiple structures: every register, whole */
        if (!multi_regs[opcode])
            return false;
        a->len = multi_regs[opcode] * (q ? 16u : 8u);
        return true;
    }
    /* single structure: selem elements of one size */
    unsigned selem = ((insn >> 13 & 1) << 1 | (insn >> 21 & 1)) + 1, scale = insn >> 14 & 3;
    if (scale == 3)
        scale = insn >> 10 & 3; /* LDnR: replicate, the size field */
    else if (scale == 2 && (insn >> 10 & 1))
        scale = 3;
    a->len = selem << scale;
    return true;
}

/* The data access an instruction is about to make, for watchpoint matching; false: none (or not decoded). */
bool vmm__ldst_decode(const struct vmm_ldst_regs *r, uint32_t insn, uint64_t pc, struct vmm_ldst *a)
{
    if ((insn & 0x0a000000u) != 0x08000000u)
        return false; /* not in the loads and stores group */
    switch (insn >> 24 & 0x3f) {
    case 0x08:
        return ldst_excl(r, insn, a);
    case 0x18:
    case 0x1c: { /* load literal */
        unsigned opc = insn >> 30;
        bool simd = insn >> 26 & 1;
        if (!simd && opc == 3)
            return false; /* PRFM */
        a->len = simd ? 4u << opc : (opc == 1 ? 8 : 4);
        a->va = pc + ((uint64_t)sext(insn >> 5 & 0x7ffff, 19) << 2);
        a->rd = true;
        a->wr = false;
        return true;
    }
    case 0x19: /* LDAPUR/STLUR: unscaled imm9 (bit 21 set: the MTE tag stores, not decoded) */
        if ((insn >> 21 & 1) || (insn >> 10 & 3))
            return false;
        a->va = r->xreg(r->ctx, insn >> 5 & 31, true) + (uint64_t)sext(insn >> 12 & 0x1ff, 9);
        a->len = 1u << (insn >> 30);
        a->rd = (insn >> 22 & 3) != 0;
        a->wr = !a->rd;
        return true;
    case 0x28:
    case 0x29:
    case 0x2c:
    case 0x2d:
        return ldst_pair(r, insn, a);
    case 0x38:
    case 0x39:
    case 0x3c:
    case 0x3d:
        return ldst_reg(r, insn, a);
    case 0x0c:
    case 0x0d:
        return ldst_simd(r, insn, a);
    }
    return false;
}

/*
 * The bytes watchpoint n watches (D2.10.4): with DBGWCR.MASK the 2^MASK-byte block at DBGWVR, else
 * the BAS-selected bytes of the doubleword (or, with DBGWVR[2] set, the word) at DBGWVR.
 */
bool vmm__wpt_hit(uint64_t wcr, uint64_t wvr, const struct vmm_ldst *a, uint64_t *far)
{
    wvr &= 0x1ffffffffffffcull;
    unsigned mask = wcr >> 24 & 0x1f, bas = wcr >> 5 & 0xff;

    if (mask >= 3) {
        uint64_t lo = wvr & ~((1ull << mask) - 1), hi = lo + (1ull << mask);
        if (a->va < hi && a->va + a->len > lo) {
            *far = a->va > lo ? a->va : lo;
            return true;
        }
        return false;
    }
    uint64_t base = wvr & ~7ull;
    if (wvr & 4)
        bas = (bas & 0xf) << 4;
    for (unsigned b = 0; b < 8; b++) {
        uint64_t at = base + b;
        if ((bas >> b & 1) && at >= a->va && at - a->va < a->len) {
            *far = at;
            return true;
        }
    }
    return false;
}

/* Whether watchpoint n applies at this EL (DBGWCR.PAC, with HMC and SSC 0) and to this access (LSC). */
bool vmm__wpt_applies(uint64_t wcr, unsigned el, const struct vmm_ldst *a)
{
    unsigned pac = wcr >> 1 & 3, lsc = wcr >> 3 & 3;
    return (wcr & 1) && (pac >> (el == 0 ? 1 : 0) & 1) && ((a->rd && (lsc & 1)) || (a->wr && (lsc & 2)));
}
