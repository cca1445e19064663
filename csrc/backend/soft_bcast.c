/*
 * soft_bcast.c - broadcast cache and TLB maintenance between the soft
 * backend's engines (SMP).
 *
 * Each vCPU is its own Unicorn engine, with its own translation cache and
 * TLB: broadcast maintenance (IC IALLUIS, IC IVAU, TLBI ...IS) only reaches
 * the engine that executes it. A SYS hook passes it on to the others, which
 * apply it before they next execute guest code.
 *
 * All vCPUs on one thread: only one engine runs at a time, so "before it next
 * runs" is exact and nothing waits.
 *
 * A thread per vCPU: the others may be executing right now. The issuer posts
 * the work under the VM's broadcast lock and kicks them (they leave their
 * engine at the start of their next block). For a TLBI it also ends its own
 * run at its next block and waits, outside its engine, until each other vCPU
 * has taken the work or is outside its engine (it takes it before it enters
 * again); for an IC the kick is enough (vmm__soft_on_sys says why). The
 * issuer's DSB that completes a TLBI (Arm ARM D8.13.5 / B2.3.11) is in the
 * same block or a later one, so no other vCPU uses a stale translation once
 * it has completed. QEMU under MTTCG does the same
 * (tlb_flush_*_all_cpus_synced: the issuer leaves its block and the others
 * flush in an exclusive section). A waiting vCPU holds no lock and is
 * outside its engine, so two vCPUs that broadcast at once do not wait for
 * each other.
 */
#include <inttypes.h>
#include <string.h>

#include "../arm/arm.h"
#include "../core/layout.h"
#include "soft.h"

#define REG_SCTLR_EL1 SYSREG(3, 0, 1, 0, 0)

/*
 * IC IVAU names one line by virtual address. The others drop only the
 * translations of the physical page that holds it: Linux issues one per
 * cache line of every module it loads and of every instruction it patches,
 * and a whole-cache flush each time made the other vCPU translate its
 * working set again (40 % of a 2-vCPU boot that loads modules). The address
 * is translated here, in the regime of the vCPU that issued it, as the
 * architecture says; one that does not translate flushes everything.
 */
static bool ic_page(struct soft_vcpu *o, uint64_t page)
{
    if (o->tb_flush || (o->nic_pages && o->ic_pages[o->nic_pages - 1] == page))
        return false; /* a line after line of one page: once is enough while it waits */
    if (o->nic_pages == SOFT_IC_PAGES) {
        o->tb_flush = true;
        o->nic_pages = 0;
        return true;
    }
    o->ic_pages[o->nic_pages++] = page;
    return true;
}

bool vmm__soft_sys_broadcasts(uint32_t op1, uint32_t crn, uint32_t crm, uint32_t op2, bool *ivau)
{
    *ivau = crn == 7 && op1 == 3 && crm == 5 && op2 == 1;
    if (*ivau || (crn == 7 && op1 == 0 && op2 == 0 && (crm == 1 || crm == 5))) /* IC IVAU, IALLUIS, IALLU */
        return true;
    return crn == 8 && op1 == 0 && (crm == 3 || crm == 0); /* TLBI ...E1IS / IPAS2..IS */
}

uint32_t vmm__soft_on_sys(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *opaque)
{
    struct soft_vcpu *sv = opaque;
    struct vmm_vm *vm = sv->vcpu->vm;
    struct soft_vm *s = sv->svm;
    bool ivau, tlbi = cp->crn == 8;
    uint64_t pa = 0;
    (void)reg;

    if (!vmm__soft_sys_broadcasts(cp->op1, cp->crn, cp->crm, cp->op2, &ivau) || vm->ncpus < 2)
        return 0; /* QEMU performs it locally */
    bool ic = !tlbi;
    bool by_page = ivau && uc_vmem_translate(uc, cp->val, UC_PROT_READ, &pa) == UC_ERR_OK && pa >= LAYOUT_RAM_BASE &&
                   pa - LAYOUT_RAM_BASE < vm->ram_size;
    bool sync = sv->parallel;
    bool news[VMM_MAX_CPUS] = { false };
    if (sync)
        pthread_mutex_lock(&s->bc_lock);
    for (unsigned i = 0; i < vm->ncpus; i++) {
        struct soft_vcpu *o = vm->vcpus[i].bstate;
        if (!o || o == sv)
            continue;
        if (by_page) {
            news[i] = ic_page(o, pa & ~0xfffull);
        } else if (ic) {
            news[i] = !o->tb_flush;
            o->tb_flush = true;
        }
        o->tlb_flush |= tlbi;
        news[i] |= tlbi;
        sv->bc_want[i] = ++o->bc_posted;
    }
    if (sync) {
        pthread_mutex_unlock(&s->bc_lock);
        for (unsigned i = 0; i < vm->ncpus; i++)
            if (news[i])
                vmm__soft_kick(vm->vcpus[i].bstate);
        /*
         * A TLBI completes (at the issuer's DSB) only once no other vCPU can use the old translation:
         * the issuer waits. For an IC the kick is enough: it is set before this instruction completes,
         * and every block another vCPU starts after it reads it (acquire) and leaves to drop the
         * translations first; the rest of a block it is in may still run old code, which the
         * architecture allows until that vCPU's own context synchronization (an ISB ends the block).
         */
        if (tlbi) {
            sv->bc_wait = true;
            vmm__soft_end_at_block(sv);
        }
    }
    return 0; /* QEMU still performs it locally */
}

/* What others posted for one engine, taken under the broadcast lock and applied after it is dropped. */
struct bc_work {
    bool tb_flush, tlb_flush;
    unsigned npages;
    uint64_t pages[SOFT_IC_PAGES];
};

/* Take what others posted for this engine (under bc_lock with a thread per vCPU): it counts as taken. */
static void take(struct soft_vcpu *sv, struct bc_work *w)
{
    w->tb_flush = sv->tb_flush;
    w->tlb_flush = sv->tlb_flush;
    w->npages = sv->tb_flush ? 0 : sv->nic_pages;
    memcpy(w->pages, sv->ic_pages, w->npages * sizeof w->pages[0]);
    sv->tb_flush = sv->tlb_flush = false;
    sv->nic_pages = 0;
    sv->bc_taken = sv->bc_posted;
}

/*
 * Drop the translations of the pages other vCPUs invalidated. Unicorn
 * removes translations by virtual address, translated in the engine's
 * current regime; with stage 1 off for the moment (SCTLR_EL1.M, TLB flushed
 * around it) a virtual address is the physical one, so each page goes
 * exactly, whatever this vCPU maps or may access. Nothing runs meanwhile.
 */
static void apply_ic_pages(struct soft_vcpu *sv, struct bc_work *w)
{
    uint64_t sctlr = vmm__soft_cp_read(sv->uc, REG_SCTLR_EL1);

    if (sctlr & 1) {
        vmm__soft_cp_write(sv->uc, REG_SCTLR_EL1, sctlr & ~1ull);
        uc_ctl_flush_tlb(sv->uc);
    }
    for (unsigned i = 0; i < w->npages; i++)
        uc_ctl_remove_cache(sv->uc, w->pages[i], w->pages[i] + 0x1000);
    if (sctlr & 1) {
        vmm__soft_cp_write(sv->uc, REG_SCTLR_EL1, sctlr);
        w->tlb_flush = true;
    }
}

/*
 * Apply taken work on the engine's own thread, before it executes. With a thread per vCPU this runs after
 * bc_lock is dropped: the work already counts as taken and the vCPU as inside its engine, which is exact
 * because this thread executes no guest code until it is done (a whole translation flush no longer holds
 * up the other vCPUs' broadcasts).
 */
static void apply(struct soft_vcpu *sv, struct bc_work *w)
{
    if (w->tb_flush)
        uc_ctl_flush_tb(sv->uc);
    else if (w->npages)
        apply_ic_pages(sv, w);
    if (w->tlb_flush)
        uc_ctl_flush_tlb(sv->uc);
}

/* All vCPUs on one thread: at the start of each run (nothing else runs meanwhile). */
void vmm__soft_bcast_apply(struct soft_vcpu *sv)
{
    struct bc_work w;

    if (sv->parallel)
        return;
    take(sv, &w);
    apply(sv, &w);
}

/* A thread per vCPU, right before uc_emu_start: take what others posted, under the lock, and be inside. */
void vmm__soft_bcast_enter(struct soft_vcpu *sv)
{
    struct soft_vm *s = sv->svm;
    struct bc_work w;

    if (!sv->parallel)
        return;
    pthread_mutex_lock(&s->bc_lock);
    take(sv, &w);
    sv->in_engine = true;
    pthread_mutex_unlock(&s->bc_lock);
    apply(sv, &w);
}

static bool others_done(const struct soft_vcpu *sv)
{
    struct vmm_vm *vm = sv->vcpu->vm;

    for (unsigned i = 0; i < vm->ncpus; i++) {
        const struct soft_vcpu *o = vm->vcpus[i].bstate;
        if (o && o != sv && o->in_engine && o->bc_taken < sv->bc_want[i])
            return false;
    }
    return true;
}

/* After uc_emu_start (vCPU threads): we are outside; if we broadcast, wait until every other vCPU took it. */
void vmm__soft_bcast_leave(struct soft_vcpu *sv)
{
    struct soft_vm *s = sv->svm;

    if (!sv->parallel)
        return;
    pthread_mutex_lock(&s->bc_lock);
    sv->in_engine = false;
    pthread_cond_broadcast(&s->bc_cond);
    if (sv->bc_wait) {
        sv->bc_wait = false;
        if (!others_done(sv))
            vmm__count(sv->vcpu->vm, &sv->vcpu->vm->stats.bcast_waits);
        while (!others_done(sv))
            pthread_cond_wait(&s->bc_cond, &s->bc_lock);
    }
    pthread_mutex_unlock(&s->bc_lock);
}
