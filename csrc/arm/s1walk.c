/*
 * s1walk.c - a software walk of the EL1&0 stage-1 translation (Arm ARM D8.2 "Translation process",
 * VMSAv8-64, 4/16/64 KiB granules, 48-bit addresses) for the debugger: its memory accesses go
 * through the selected vCPU's page tables as the vCPU sees them. Descriptors are read from guest RAM
 * only (through the bounds-checked vmm__gpa_ptr); a walk is at most 4 levels.
 */
#include <string.h>

#include "../core/debug.h"
#include "../core/vm.h"

#define TCR_T0SZ(t) ((t)&63)
#define TCR_EPD0 (1ull << 7)
#define TCR_TG0(t) (((t) >> 14) & 3)
#define TCR_T1SZ(t) (((t) >> 16) & 63)
#define TCR_EPD1 (1ull << 23)
#define TCR_TG1(t) (((t) >> 30) & 3)
#define TCR_TBI0 (1ull << 37)
#define TCR_TBI1 (1ull << 38)
#define OA_MASK 0x0000fffffffff000ull /* output address bits [47:12] */

/* log2 of the granule: TG0 00 = 4K, 01 = 64K, 10 = 16K; TG1 01 = 16K, 10 = 4K, 11 = 64K (D19.2.139) */
static unsigned granule_bits(bool upper, unsigned tg)
{
    if (upper)
        return tg == 1 ? 14 : tg == 3 ? 16 : 12;
    return tg == 1 ? 16 : tg == 2 ? 14 : 12;
}

int vmm__s1_translate(struct vmm_vm *vm, const struct vmm_s1_regs *r, uint64_t va, uint64_t *pa)
{
    if (!(r->sctlr & 1)) { /* stage 1 off: flat */
        *pa = va;
        return 0;
    }
    bool upper = (va >> 55) & 1;
    unsigned tsz = upper ? TCR_T1SZ(r->tcr) : TCR_T0SZ(r->tcr);
    bool tbi = upper ? (r->tcr & TCR_TBI1) : (r->tcr & TCR_TBI0);
    if (tsz < 16)
        tsz = 16; /* 48-bit at most (no FEAT_LPA) */
    if (tsz > 39)
        tsz = 39;
    unsigned inbits = 64 - tsz;
    uint64_t top = tbi ? (va << 8) >> (8 + inbits) : va >> inbits; /* the bits that must all be 0 or 1 */
    uint64_t want = upper ? (tbi ? (1ull << (56 - inbits)) - 1 : (1ull << tsz) - 1) : 0;
    if (top != want || (r->tcr & (upper ? TCR_EPD1 : TCR_EPD0)))
        return VMM_ERANGE;
    unsigned g = granule_bits(upper, upper ? TCR_TG1(r->tcr) : TCR_TG0(r->tcr));
    unsigned stride = g - 3;
    int level = 4 - (int)((inbits - g + stride - 1) / stride);
    uint64_t table = (upper ? r->ttbr1 : r->ttbr0) & 0x0000fffffffffffeull;

    for (; level <= 3; level++) {
        unsigned shift = g + stride * (unsigned)(3 - level);
        unsigned bits = level == 4 - (int)((inbits - g + stride - 1) / stride) ? inbits - shift : stride;
        uint64_t idx = (va >> shift) & ((1ull << bits) - 1);
        uint64_t desc;
        const void *p = vmm__gpa_ptr(vm, (table & ~7ull) + idx * 8, 8);
        if (!p)
            return VMM_ERANGE;
        memcpy(&desc, p, 8);
        if (!(desc & 1))
            return VMM_ERANGE;
        bool is_table = (desc & 2) && level < 3;
        if (is_table) {
            table = desc & OA_MASK & ~((1ull << g) - 1);
            continue;
        }
        if (level == 3 ? !(desc & 2) : level < 1)
            return VMM_ERANGE; /* a reserved encoding, or a block where there can be none */
        uint64_t mask = (1ull << shift) - 1;
        *pa = ((desc & OA_MASK) & ~mask) | (va & mask);
        return 0;
    }
    return VMM_ERANGE;
}
