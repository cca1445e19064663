/* gic_snap.c - the GICv3 model's state in a snapshot: one function saves and loads it (core/snapshot.h). */
#include "../core/snapshot.h"
#include "gic_internal.h"

static void sync_bits(struct vmm_snap *s, struct gic_bits *b)
{
    vmm__snap_u32(s, &b->group);
    vmm__snap_u32(s, &b->enable);
    vmm__snap_u32(s, &b->pending);
    vmm__snap_u32(s, &b->active);
    vmm__snap_u32(s, &b->level);
    vmm__snap_u32(s, &b->edge);
}

static bool prio_ok(const uint8_t *p, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (p[i] & ~GIC_PRIO_MASK)
            return false;
    return true;
}

/* What a loaded CPU interface may hold: what the registers could have been written to. */
static int check_cpu(struct vmm_snap *s, const struct gic_cpu *c, uint32_t aff, unsigned i)
{
    if (c->aff != aff)
        return vmm__snap_fail(s, "CPU %u: affinity 0x%x, expected 0x%x", i, c->aff, aff);
    if ((c->priv.edge & 0xffffu) != 0xffffu)
        return vmm__snap_fail(s, "CPU %u: an SGI is level-sensitive", i);
    if (!prio_ok(c->prio, GIC_NR_PRIVATE) || (c->pmr & ~GIC_PRIO_MASK))
        return vmm__snap_fail(s, "CPU %u: a priority has bits below the 5 implemented", i);
    if (c->bpr0 < GIC_MIN_BPR0 || c->bpr0 > 7 || c->bpr1 < GIC_MIN_BPR1 || c->bpr1 > 7)
        return vmm__snap_fail(s, "CPU %u: binary points %u/%u out of range", i, c->bpr0, c->bpr1);
    return 0;
}

static void sync_cpu(struct vmm_snap *s, struct gic_cpu *c)
{
    sync_bits(s, &c->priv);
    vmm__snap_bytes(s, c->prio, sizeof c->prio);
    vmm__snap_u32(s, &c->aff);
    vmm__snap_bool(s, &c->sleep);
    vmm__snap_u8(s, &c->pmr);
    vmm__snap_u8(s, &c->bpr0);
    vmm__snap_u8(s, &c->bpr1);
    vmm__snap_bool(s, &c->igrpen[0]);
    vmm__snap_bool(s, &c->igrpen[1]);
    vmm__snap_bool(s, &c->cbpr);
    vmm__snap_bool(s, &c->eoimode);
    vmm__snap_u32(s, &c->apr[0]);
    vmm__snap_u32(s, &c->apr[1]);
}

static int sync_locked(struct vmm_gic *g, struct vmm_snap *s)
{
    bool loading = vmm__snap_loading(s);
    uint32_t ncpus = g->ncpus;

    vmm__snap_u32(s, &ncpus);
    if (loading && !vmm__snap_error(s) && ncpus != g->ncpus)
        return vmm__snap_fail(s, "%u CPU interfaces for %u vCPUs", ncpus, g->ncpus);
    vmm__snap_u32(s, &g->ctlr);
    for (unsigned w = 0; w < GIC_NR_WORDS - 1; w++)
        sync_bits(s, &g->spi[w]);
    vmm__snap_bytes(s, g->spi_prio, sizeof g->spi_prio);
    for (unsigned i = 0; i < GIC_NR_SPI; i++)
        vmm__snap_u64(s, &g->irouter[i]);
    for (unsigned c = 0; c < g->ncpus; c++) {
        uint32_t aff = g->cpu[c].aff;
        sync_cpu(s, &g->cpu[c]);
        if (loading && !vmm__snap_error(s) && check_cpu(s, &g->cpu[c], aff, c))
            break;
    }
    if (g->lpis) { /* the redistributors' LPI side, then the ITS registers */
        vmm__gic_lpi_snap(g, s);
        vmm__gic_its_snap(g, s);
    }
    if (!loading || vmm__snap_error(s))
        return vmm__snap_error(s);
    if (g->ctlr & ~(uint32_t)(GICD_CTLR_EN_GRP0 | GICD_CTLR_EN_GRP1))
        return vmm__snap_fail(s, "GICD_CTLR 0x%x has bits we do not implement", g->ctlr);
    if (!prio_ok(g->spi_prio, GIC_NR_SPI))
        return vmm__snap_fail(s, "an SPI priority has bits below the 5 implemented");
    for (unsigned i = 0; i < GIC_NR_SPI; i++)
        if (g->irouter[i] & ~GICD_IROUTER_MASK)
            return vmm__snap_fail(s, "GICD_IROUTER%u 0x%llx has reserved bits", i + 32,
                                  (unsigned long long)g->irouter[i]);
    return 0;
}

/*
 * Save or load (the VM paused, no vCPU running). A load recomputes every CPU's HPPI and line on
 * the way out (vmm__gic_unlock), which reports each raised line to the vCPUs.
 */
int vmm__gic_snap(struct vmm_gic *g, struct vmm_snap *s)
{
    vmm__gic_lock(g);
    int rc = sync_locked(g, s);
    if (vmm__snap_loading(s))
        vmm__gic_dirty_all(g);
    vmm__gic_unlock(g);
    return rc;
}
