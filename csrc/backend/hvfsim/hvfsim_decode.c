/*
 * hvfsim_decode.c - the syndrome of a stage-2 data abort: which load or store faulted, as ESR_EL2's
 * ISS describes it to the hypervisor (Arm ARM D17.2.37, "ISS encoding for an exception from a Data
 * Abort"), and the address it accessed. The A64 load/store encodings are from Arm ARM C4.1.66.
 *
 * ISV=1 (the syndrome describes the access) for a single general-purpose register load or store
 * without writeback: LDR/STR (unsigned offset, register offset, unscaled LDUR/STUR, unprivileged
 * LDTR/STTR, literal) and the load-acquire/store-release LDAR/STLR. Everything else (pairs,
 * writeback, SIMD&FP registers, exclusives, atomics) is ISV=0, which the hypervisor cannot emulate.
 */
#include "hvfsim.h"

#define ISS_ISV (1u << 24)
#define ISS_SAS_SHIFT 22
#define ISS_SSE (1u << 21)
#define ISS_SRT_SHIFT 16
#define ISS_SF (1u << 15)
#define ISS_AR (1u << 14)
#define ISS_WNR (1u << 6)

static uint64_t xreg(uc_engine *uc, unsigned n, bool sp)
{
    uint64_t v = 0;
    if (n == 31) {
        if (sp)
            uc_reg_read(uc, UC_ARM64_REG_SP, &v);
        return v; /* XZR */
    }
    uc_reg_read(uc, hvfsim__xreg(n), &v);
    return v;
}

static int64_t sext(uint64_t v, unsigned bits)
{
    return (int64_t)(v << (64 - bits)) >> (64 - bits);
}

/* A register offset, extended and shifted (Arm ARM "ExtendReg"). */
static uint64_t extend_reg(uint64_t v, unsigned option, unsigned shift)
{
    switch (option) {
    case 2: /* UXTW */
        v = (uint32_t)v;
        break;
    case 6: /* SXTW */
        v = (uint64_t)(int64_t)(int32_t)v;
        break;
    default: /* LSL / UXTX / SXTX */
        break;
    }
    return v << shift;
}

/* ISS for a general-purpose register access of 2^size bytes; opc as in the LDR/STR encodings. */
static bool gpr_iss(unsigned size, unsigned opc, unsigned rt, uint32_t *iss, bool *write)
{
    bool sign = opc >= 2, sf;
    if (size == 3 && opc >= 2)
        return false; /* PRFM / unallocated */
    if (size == 2 && opc == 3)
        return false; /* unallocated */
    *write = opc == 0;
    sf = sign ? opc == 2 : size == 3; /* signed: opc 10 extends to 64 bits, 11 to 32 */
    *iss = ISS_ISV | size << ISS_SAS_SHIFT | (sign ? ISS_SSE : 0) | rt << ISS_SRT_SHIFT | (sf ? ISS_SF : 0) |
           (*write ? ISS_WNR : 0);
    return true;
}

bool hvfsim__decode_ldst(uc_engine *uc, uint32_t insn, uint64_t pc, struct sim_ldst *o)
{
    unsigned size = insn >> 30, opc = (insn >> 22) & 3, rn = (insn >> 5) & 31, rt = insn & 31;
    bool simd = (insn >> 26) & 1;

    *o = (struct sim_ldst){ 0 };
    if ((insn & 0x0a000000u) != 0x08000000u)
        return false;
    if ((insn & 0x3b000000u) == 0x39000000u) { /* unsigned immediate offset */
        unsigned scale = simd ? (size | (opc & 2) << 1) : size;
        o->va = xreg(uc, rn, true) + (((insn >> 10) & 0xfff) << scale);
        if (!simd && gpr_iss(size, opc, rt, &o->iss, &o->write))
            o->isv = true;
        else
            o->write = !(opc & 1);
        return true;
    }
    if ((insn & 0x3b200000u) == 0x38000000u) { /* unscaled, post-index, unprivileged, pre-index */
        unsigned mode = (insn >> 10) & 3;
        int64_t imm = sext((insn >> 12) & 0x1ff, 9);
        o->va = xreg(uc, rn, true) + (mode == 1 ? 0 : (uint64_t)imm);
        if (!simd && (mode == 0 || mode == 2) && gpr_iss(size, opc, rt, &o->iss, &o->write))
            o->isv = true;
        else
            o->write = !(opc & 1);
        return true;
    }
    if ((insn & 0x3b200c00u) == 0x38200800u) { /* register offset */
        unsigned option = (insn >> 13) & 7, s = (insn >> 12) & 1;
        unsigned scale = simd ? (size | (opc & 2) << 1) : size;
        o->va = xreg(uc, rn, true) + extend_reg(xreg(uc, (insn >> 16) & 31, false), option, s ? scale : 0);
        if (!simd && gpr_iss(size, opc, rt, &o->iss, &o->write))
            o->isv = true;
        else
            o->write = !(opc & 1);
        return true;
    }
    if ((insn & 0x3b000000u) == 0x18000000u) { /* literal */
        o->va = pc + (uint64_t)(sext((insn >> 5) & 0x7ffff, 19) * 4);
        if (!simd && (insn >> 30) < 3) { /* not PRFM */
            static const unsigned sz[3] = { 2, 3, 2 };
            bool sign = (insn >> 30) == 2, sf = (insn >> 30) != 0;
            o->isv = true;
            o->iss = ISS_ISV | sz[insn >> 30] << ISS_SAS_SHIFT | (sign ? ISS_SSE : 0) | rt << ISS_SRT_SHIFT |
                     (sf ? ISS_SF : 0);
        }
        return true;
    }
    if ((insn & 0x3f000000u) == 0x08000000u) { /* exclusives, load-acquire/store-release */
        bool o2 = (insn >> 23) & 1, l = (insn >> 22) & 1, o1 = (insn >> 21) & 1;
        o->va = xreg(uc, rn, true);
        o->write = !l;
        if (o2 && !o1) { /* LDAR/STLR and the LORegion forms: one register, acquire/release */
            o->isv = true;
            o->iss = ISS_ISV | size << ISS_SAS_SHIFT | rt << ISS_SRT_SHIFT | (size == 3 ? ISS_SF : 0) | ISS_AR |
                     (o->write ? ISS_WNR : 0);
        }
        return true;
    }
    if ((insn & 0x3a000000u) == 0x28000000u) { /* pairs */
        unsigned mode = (insn >> 23) & 3, scale = simd ? 2 + opc : 2 + (opc >> 1);
        int64_t imm = sext((insn >> 15) & 0x7f, 7) * (int64_t)(1u << scale);
        o->va = xreg(uc, rn, true) + (mode == 1 ? 0 : (uint64_t)imm);
        o->write = !((insn >> 22) & 1);
        return true;
    }
    /* SIMD structures, atomics, RCpc and the rest: the base register is the address */
    o->va = xreg(uc, rn, true);
    o->write = (insn & 0xbf000000u) == 0x0c000000u || (insn & 0xbf000000u) == 0x0d000000u ? !((insn >> 22) & 1) : true;
    return true;
}
