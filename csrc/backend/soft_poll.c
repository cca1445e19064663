/* soft_poll.c - spin and polling detection (SMP on one thread): which blocks wait for another vCPU. */
#include <string.h>

#include "soft.h"

#define INSN_WFE 0xd503205fu
#define INSN_YIELD 0xd503203fu

/*
 * Whether an instruction may change memory or system state, for polling
 * detection: false only for what surely does not (loads, MRS, hints,
 * barriers, data processing, branches). Unsure encodings count as writes.
 * Arm ARM C4.1 (the A64 encoding index).
 */
static bool insn_may_write(uint32_t insn)
{
    if ((insn & 0xffc00000u) == 0xd5000000u) /* system: hints, barriers and MRS only */
        return !((insn & 0xfffff01fu) == 0xd503201fu || (insn & 0xfffff01fu) == 0xd503301fu ||
                 (insn & 0xfff00000u) == 0xd5300000u);
    if ((insn & 0xff000000u) == 0xd4000000u) /* exception generation */
        return true;
    if ((insn & 0x0a000000u) != 0x08000000u) /* not a load or store */
        return false;
    if ((insn & 0x3b000000u) == 0x18000000u) /* load literal */
        return false;
    if ((insn & 0x3f000000u) == 0x08000000u) /* exclusives and acquire/release: L, and not CAS */
        return !((insn >> 22) & 1) || (((insn >> 23) & 1) && ((insn >> 21) & 1));
    if ((insn & 0x3a000000u) == 0x28000000u) /* pairs: L */
        return !((insn >> 22) & 1);
    if ((insn & 0xbf000000u) == 0x0c000000u) /* SIMD structures: L */
        return !((insn >> 22) & 1);
    if ((insn & 0x3a000000u) == 0x38000000u) {
        unsigned opc = (insn >> 22) & 3;
        if (!((insn >> 24) & 1) && ((insn >> 21) & 1) && ((insn >> 10) & 3) == 0)
            return true;                                 /* atomic memory operations */
        return (insn >> 26) & 1 ? !(opc & 1) : opc == 0; /* SIMD&FP: opc 00 and 10 store; else opc 00 */
    }
    return true;
}

/* Whether the block at addr ends in WFE or YIELD (looked up once per block, then cached). */
bool vmm__soft_block_spins(struct soft_vcpu *sv, uint64_t addr, uint32_t size)
{
    struct spin_entry *e = &sv->spin_cache[(addr >> 2) % (sizeof sv->spin_cache / sizeof sv->spin_cache[0])];
    uint32_t insn;

    if (e->addr != addr || e->size != size) {
        e->addr = addr;
        e->size = size;
        e->spins = size >= 4 && uc_vmem_read(sv->uc, addr + size - 4, UC_PROT_EXEC, &insn, 4) == UC_ERR_OK &&
                   (insn == INSN_WFE || insn == INSN_YIELD);
    }
    return e->spins;
}

/* Whether a block writes neither memory nor system state: decoded when a loop is checked, not per block. */
static bool block_reads_only(struct soft_vcpu *sv, uint64_t addr, uint32_t size)
{
    uint32_t insns[64];

    if (size < 4 || size > sizeof insns || uc_vmem_read(sv->uc, addr, UC_PROT_EXEC, insns, size) != UC_ERR_OK)
        return false;
    for (unsigned i = 0; i < size / 4; i++)
        if (insn_may_write(insns[i]))
            return false;
    return true;
}

/*
 * Polling without WFE (real time, SMP, one thread): a loop of at most
 * SOFT_POLL_BLOCKS + 1 blocks that write nothing, whose general registers,
 * SP and flags are the same at its head two passes in a row, cannot end
 * until something else writes memory or interrupts it: its vCPU gives up
 * the rest of its slice. The block hook runs for every block, so the
 * common path costs one compare: once every 2^POLL_SAMPLE_SHIFT instructions
 * the running block is taken as a candidate head and followed for two
 * passes at most (its blocks decoded, the registers read once per pass). A
 * candidate that is not polling (longer, writing, registers that move: a
 * pointer, a counter, a CNTVCT timeout) is remembered and skipped for twice
 * as many samples each time it comes back. Decided from the guest's own
 * execution alone.
 */

static bool poll_state(struct soft_vcpu *sv, uint64_t *regs)
{
    int ids[SOFT_POLL_REGS];
    void *ptrs[SOFT_POLL_REGS];

    for (unsigned i = 0; i < 31; i++)
        ids[i] = vmm__soft_xreg(i);
    ids[31] = UC_ARM64_REG_SP;
    ids[32] = UC_ARM64_REG_NZCV;
    for (unsigned i = 0; i < SOFT_POLL_REGS; i++) {
        regs[i] = 0; /* NZCV is read as 32 bits */
        ptrs[i] = &regs[i];
    }
    return uc_reg_read_batch(sv->uc, ids, ptrs, SOFT_POLL_REGS) == UC_ERR_OK;
}

/* The candidate is not polling: stop following it, and skip it for a while when it comes back. */
static void poll_reject(struct soft_poll *p)
{
    if (p->rejected == p->head) {
        if (p->backoff < (1u << 16))
            p->backoff *= 2;
    } else {
        p->rejected = p->head;
        p->backoff = 1;
    }
    p->skip = p->backoff;
    p->tracking = false;
}

/* A sample: follow the block at addr as the head of a polling loop, unless it was rejected lately. */
void vmm__soft_poll_sample(struct soft_poll *p, uint64_t addr, uint32_t size)
{
    if (addr == p->rejected && p->skip) {
        p->skip--;
        return;
    }
    p->head = addr;
    p->head_size = size;
    p->nblocks = 0;
    p->passes = 0;
    p->tracking = true;
}

/* While following a candidate: true when it has proved to be polling. */
bool vmm__soft_poll_follow(struct soft_vcpu *sv, uint64_t addr, uint32_t size)
{
    struct soft_poll *p = &sv->poll;
    uint64_t now[SOFT_POLL_REGS];

    if (addr != p->head) {
        if (p->nblocks >= SOFT_POLL_BLOCKS) {
            poll_reject(p); /* not a loop this short */
            return false;
        }
        p->blocks[p->nblocks].addr = addr;
        p->blocks[p->nblocks++].size = size;
        return false;
    }
    bool writes = !block_reads_only(sv, p->head, p->head_size);
    for (unsigned i = 0; i < p->nblocks && !writes; i++)
        writes = !block_reads_only(sv, p->blocks[i].addr, p->blocks[i].size);
    p->nblocks = 0;
    if (writes || !poll_state(sv, now)) {
        poll_reject(p);
        return false;
    }
    if (p->passes++ == 0) { /* back at the head once: its registers now, compared after the next pass */
        memcpy(p->regs, now, sizeof now);
        return false;
    }
    if (memcmp(now, p->regs, sizeof now)) {
        poll_reject(p);
        return false;
    }
    p->tracking = false;
    p->rejected = 0; /* a poller that wrote once (the answer it waited for) is not held back */
    return true;
}
