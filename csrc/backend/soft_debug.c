/*
 * soft_debug.c - a debugger's breakpoints, watchpoints and single-step on the soft backend (debug.h),
 * from Unicorn hooks that exist only while a debugger asks for them: with none, the engine runs the
 * code it runs without a debugger (no hook, no check; the translation cache is flushed when they go).
 *
 * Measured on Unicorn 2.1.4 (tests/test_gdb.py pins each):
 *  - uc_emu_stop() in a UC_HOOK_CODE callback stops before that instruction executes: PC is its
 *    address and the earlier instructions of its block have run. A code hook bounded to one address
 *    instruments only that instruction, so a breakpoint costs nothing elsewhere.
 *  - UC_HOOK_MEM_WRITE runs before the store; uc_emu_stop() there lets the store complete and leaves
 *    PC at the storing instruction with its base-register writeback not done, so the instruction runs
 *    again on resume: harmless for a plain store (same value, same place), wrong for a store-exclusive
 *    or an atomic read-modify-write, and for a load whose destination is its base register.
 *    Those (and every read watchpoint) stop at the next block instead: PC is past the access.
 *  - Hooks added after code was translated are not seen by it: every change flushes the cache.
 * The block hook counts a block's instructions before they run (soft.c on_block); a stop inside a
 * block takes back the part that did not run, so instruction counts and the deterministic clock are
 * those of a run without the debugger.
 */
#include <stdlib.h>
#include <string.h>

#include "../arm/arm.h"
#include "../core/debug.h"
#include "soft.h"

#define SOFT_DBG_MAX_POINTS 64

struct soft_debug {
    uc_hook hooks[SOFT_DBG_MAX_POINTS + 3]; /* the block hook, the points, step, count */
    unsigned nhooks;
    struct vmm_debug_point points[SOFT_DBG_MAX_POINTS];
    unsigned npoints;
    unsigned step_hits; /* code-hook calls since the step began */
    uint64_t count_at;  /* the count stop's instruction count (cfg->count) */
    bool skip;          /* step_over: the hit at (skip_pc, skip_count) is not reported */
    uint64_t skip_pc, skip_count;
    uint64_t blk_addr; /* the block executing now (start, bytes): for the partial-block count */
    uint32_t blk_size;
};

void vmm__soft_debug_free(struct soft_vcpu *sv)
{
    free(sv->debugger);
    sv->debugger = NULL;
}

/* The block did not run past pc: take back the instructions on_block counted beyond it. */
static void uncount_rest(struct soft_vcpu *sv, uint64_t pc)
{
    struct soft_debug *d = sv->debugger;
    uint64_t end = d->blk_addr + d->blk_size;

    if (pc >= d->blk_addr && pc < end && sv->vcpu->insns >= (end - pc) / 4)
        vmm__add_own(&sv->vcpu->insns, -((end - pc) / 4)); /* (unsigned: wraps to a subtraction) */
    d->blk_size = 0;
}

static void debug_exit(struct soft_vcpu *sv, int point, uint64_t addr)
{
    sv->exit->kind = VMM_EXIT_DEBUG;
    sv->exit->debug.point = point;
    sv->exit->debug.addr = addr;
}

/* Instructions executed before the one at pc, in the block running now (on_block counted all of it). */
static uint64_t done_before(struct soft_vcpu *sv, uint64_t pc)
{
    struct soft_debug *d = sv->debugger;
    uint64_t end = d->blk_addr + d->blk_size, done = sv->vcpu->insns;

    if (d->blk_size && pc >= d->blk_addr && pc < end)
        done -= (end - pc) / 4;
    return done;
}

/* The hit step_over said to pass: consumed once. */
static bool skipped(struct soft_vcpu *sv, uint64_t pc)
{
    struct soft_debug *d = sv->debugger;

    if (!d->skip || pc != d->skip_pc || done_before(sv, pc) != d->skip_count)
        return false;
    d->skip = false;
    return true;
}

static void on_dbg_block(uc_engine *uc, uint64_t addr, uint32_t size, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    (void)uc;
    sv->debugger->blk_addr = addr;
    sv->debugger->blk_size = size;
}

static void on_break(uc_engine *uc, uint64_t addr, uint32_t size, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    (void)uc;
    (void)size;
    if (sv->exit->kind == VMM_EXIT_DEBUG || skipped(sv, addr))
        return;                /* a deferred watchpoint stop is on its way, or the hit passed over */
    int type = VMM_DBG_HBREAK; /* gdb's swbreak/hwbreak stop reason follows the kind it inserted */
    for (unsigned i = 0; i < sv->debugger->npoints; i++)
        if (sv->debugger->points[i].addr == addr && sv->debugger->points[i].type == VMM_DBG_BREAK)
            type = VMM_DBG_BREAK;
    uncount_rest(sv, addr);
    debug_exit(sv, type, addr);
    vmm__soft_stop(sv);
}

static void on_step(uc_engine *uc, uint64_t addr, uint32_t size, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    (void)uc;
    (void)size;
    if (++sv->debugger->step_hits < 2 || sv->exit->kind == VMM_EXIT_DEBUG)
        return;
    uncount_rest(sv, addr);
    debug_exit(sv, -1, 0);
    vmm__soft_stop(sv);
}

/* The count stop: this instruction would be the one executed after count_at (on_block counted its block). */
static void on_count(uc_engine *uc, uint64_t addr, uint32_t size, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    (void)uc;
    (void)size;
    if (sv->exit->kind == VMM_EXIT_DEBUG || done_before(sv, addr) != sv->debugger->count_at)
        return;
    uncount_rest(sv, addr);
    debug_exit(sv, VMM_DBG_COUNT, addr);
    vmm__soft_stop(sv);
}

/* Store-exclusive, load/store-exclusive pair, CAS (C4.1.94 "Load/store exclusive") or an LSE atomic. */
static bool insn_is_atomic(uint32_t insn)
{
    return (insn & 0x3f000000u) == 0x08000000u || (insn & 0x3b200c00u) == 0x38200000u;
}

static void on_watch(uc_engine *uc, uc_mem_type type, uint64_t addr, int size, int64_t value, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    struct soft_debug *d = sv->debugger;
    bool write = type == UC_MEM_WRITE;
    (void)value;

    if (sv->exit->kind == VMM_EXIT_DEBUG)
        return;
    for (unsigned i = 0; i < d->npoints; i++) {
        const struct vmm_debug_point *p = &d->points[i];
        bool kind_ok = p->type == VMM_DBG_WATCH_ACCESS || (p->type == VMM_DBG_WATCH_WRITE && write) ||
                       (p->type == VMM_DBG_WATCH_READ && !write);
        if (!kind_ok || p->type < VMM_DBG_WATCH_WRITE || addr >= p->addr + p->len || addr + (uint64_t)size <= p->addr)
            continue;
        uint64_t pc = soft__reg(uc, UC_ARM64_REG_PC);
        uint32_t insn = 0;
        if (skipped(sv, pc))
            return;
        debug_exit(sv, p->type, p->addr);
        if (write && uc_vmem_read(uc, pc, UC_PROT_EXEC, &insn, 4) == UC_ERR_OK && !insn_is_atomic(insn)) {
            uncount_rest(sv, pc); /* stops at the store (see the top of this file) */
            vmm__soft_stop(sv);
        } else {
            vmm__soft_end_at_block(sv); /* at the next block, past this instruction */
        }
        return;
    }
}

static void remove_hooks(struct soft_vcpu *sv)
{
    struct soft_debug *d = sv->debugger;
    for (unsigned i = 0; i < d->nhooks; i++)
        uc_hook_del(sv->uc, d->hooks[i]);
    d->nhooks = 0;
}

static int add_hook(struct soft_vcpu *sv, int type, void *cb, uint64_t begin, uint64_t end)
{
    struct soft_debug *d = sv->debugger;
    if (d->nhooks >= sizeof d->hooks / sizeof d->hooks[0])
        return VMM_ERANGE;
    if (uc_hook_add(sv->uc, &d->hooks[d->nhooks], type, cb, sv, begin, end) != UC_ERR_OK)
        return vmm__set_error(sv->vcpu->vm, VMM_EBACKEND, "soft: cannot add a debug hook");
    d->nhooks++;
    return 0;
}

static int soft_set_debug(struct vmm_vcpu *vcpu, const struct vmm_debug_cfg *cfg)
{
    struct soft_vcpu *sv = vcpu->bstate;
    bool had = sv->debugger && sv->debugger->nhooks;
    int rc = 0;

    if (cfg->npoints > SOFT_DBG_MAX_POINTS)
        return vmm__set_error(vcpu->vm, VMM_ERANGE, "at most %d breakpoints and watchpoints", SOFT_DBG_MAX_POINTS);
    if (!sv->debugger && !(sv->debugger = calloc(1, sizeof *sv->debugger)))
        return vmm__set_error(vcpu->vm, VMM_ENOMEM, "out of memory");
    remove_hooks(sv);
    memcpy(sv->debugger->points, cfg->points, cfg->npoints * sizeof *cfg->points);
    sv->debugger->npoints = cfg->npoints;
    sv->debugger->step_hits = 0;
    sv->debugger->blk_size = 0;
    sv->debugger->count_at = cfg->count_at;
    sv->debugger->skip = false;
    if (cfg->npoints || cfg->step || cfg->count)
        rc = add_hook(sv, UC_HOOK_BLOCK, (void *)on_dbg_block, 1, 0);
    for (unsigned i = 0; i < cfg->npoints && !rc; i++) {
        const struct vmm_debug_point *p = &cfg->points[i];
        if (p->type == VMM_DBG_BREAK || p->type == VMM_DBG_HBREAK) {
            rc = add_hook(sv, UC_HOOK_CODE, (void *)on_break, p->addr, p->addr);
        } else {
            /* the hook matches an access by its first byte: start 7 earlier for one that straddles */
            int t = p->type == VMM_DBG_WATCH_WRITE  ? UC_HOOK_MEM_WRITE
                    : p->type == VMM_DBG_WATCH_READ ? UC_HOOK_MEM_READ
                                                    : UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE;
            uint64_t lo = p->addr > 7 ? p->addr - 7 : 0;
            rc = add_hook(sv, t, (void *)on_watch, lo, p->addr + p->len - 1);
        }
    }
    if (cfg->step && !rc)
        rc = add_hook(sv, UC_HOOK_CODE, (void *)on_step, 1, 0);
    if (cfg->count && !rc)
        rc = add_hook(sv, UC_HOOK_CODE, (void *)on_count, 1, 0);
    if (rc)
        remove_hooks(sv);
    if (had || sv->debugger->nhooks)
        uc_ctl_flush_tb(sv->uc); /* translated code must see the new set of hooks */
    return rc;
}

static void soft_step_over(struct vmm_vcpu *vcpu)
{
    struct soft_vcpu *sv = vcpu->bstate;

    if (!sv->debugger)
        return;
    sv->debugger->skip = true;
    sv->debugger->skip_pc = sv->pc;
    sv->debugger->skip_count = vcpu->insns;
}

static void soft_mem_changed(struct vmm_vcpu *vcpu)
{
    struct soft_vcpu *sv = vcpu->bstate;
    uc_ctl_flush_tb(sv->uc);
    uc_ctl_flush_tlb(sv->uc); /* the write may have been to page tables (or a checkpoint restored all RAM) */
}

/* The Unicorn register behind a debugger register number, and its size (0: none). */
static unsigned uc_reg_of(unsigned regno, int *reg)
{
    if (regno <= 30)
        *reg = vmm__soft_xreg(regno);
    else if (regno == VMM_DBG_REG_SP)
        *reg = UC_ARM64_REG_SP;
    else if (regno == VMM_DBG_REG_PC)
        *reg = UC_ARM64_REG_PC;
    else if (regno == VMM_DBG_REG_PSTATE)
        *reg = UC_ARM64_REG_PSTATE;
    else if (regno >= VMM_DBG_REG_V0 && regno < VMM_DBG_REG_V0 + 32)
        *reg = UC_ARM64_REG_Q0 + (int)(regno - VMM_DBG_REG_V0);
    else if (regno == VMM_DBG_REG_FPSR)
        *reg = UC_ARM64_REG_FPSR;
    else if (regno == VMM_DBG_REG_FPCR)
        *reg = UC_ARM64_REG_FPCR;
    else
        return 0;
    return vmm__dbg_reg_size(regno);
}

static int soft_reg_read(struct vmm_vcpu *vcpu, unsigned regno, uint8_t *buf, unsigned size)
{
    struct soft_vcpu *sv = vcpu->bstate;
    uint8_t v[16] = { 0 };
    int reg;
    unsigned n = uc_reg_of(regno, &reg);

    if (!n || size != n)
        return VMM_EINVAL;
    if (regno == VMM_DBG_REG_PC)
        memcpy(v, &sv->pc, 8); /* where the next run starts */
    else if (uc_reg_read(sv->uc, reg, v) != UC_ERR_OK)
        return VMM_EBACKEND;
    memcpy(buf, v, n);
    return 0;
}

static int soft_reg_write(struct vmm_vcpu *vcpu, unsigned regno, const uint8_t *buf, unsigned size)
{
    struct soft_vcpu *sv = vcpu->bstate;
    uint8_t v[16] = { 0 };
    int reg;
    unsigned n = uc_reg_of(regno, &reg);

    if (!n || size != n)
        return VMM_EINVAL;
    memcpy(v, buf, n);
    if (uc_reg_write(sv->uc, reg, v) != UC_ERR_OK)
        return VMM_EBACKEND;
    if (regno == VMM_DBG_REG_PC)
        memcpy(&sv->pc, v, 8);
    if (regno == VMM_DBG_REG_PSTATE) /* a CP write makes QEMU rebuild its cached flags (ARCHITECTURE.md) */
        vmm__soft_cp_write(sv->uc, REG_HCR_EL2, HCR_BASE | (sv->virq ? HCR_VI : 0));
    return 0;
}

/* SP_EL0/SP_EL1 are banked: Unicorn has them as registers of their own. */
#define ID_SP_EL0 ((uint32_t)SYSREG(3, 0, 4, 1, 0))
#define ID_SP_EL1 ((uint32_t)SYSREG(3, 4, 4, 1, 0))

static int soft_sysreg_read(struct vmm_vcpu *vcpu, uint32_t id, uint64_t *val)
{
    struct soft_vcpu *sv = vcpu->bstate;
    if (id == ID_SP_EL0 || id == ID_SP_EL1)
        return uc_reg_read(sv->uc, id == ID_SP_EL0 ? UC_ARM64_REG_SP_EL0 : UC_ARM64_REG_SP_EL1, val) ? VMM_EBACKEND : 0;
    *val = vmm__soft_cp_read(sv->uc, id);
    return 0;
}

static int soft_sysreg_write(struct vmm_vcpu *vcpu, uint32_t id, uint64_t val)
{
    struct soft_vcpu *sv = vcpu->bstate;
    if (id == ID_SP_EL0 || id == ID_SP_EL1)
        return uc_reg_write(sv->uc, id == ID_SP_EL0 ? UC_ARM64_REG_SP_EL0 : UC_ARM64_REG_SP_EL1, &val) ? VMM_EBACKEND
                                                                                                       : 0;
    return vmm__soft_cp_write(sv->uc, id, val);
}

const struct vmm_debug_ops vmm__soft_debug_ops = {
    .reg_read = soft_reg_read,
    .reg_write = soft_reg_write,
    .sysreg_read = soft_sysreg_read,
    .sysreg_write = soft_sysreg_write,
    .set_debug = soft_set_debug,
    .step_over = soft_step_over,
    .mem_changed = soft_mem_changed,
};
