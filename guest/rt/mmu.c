/* mmu.c - identity-mapped stage 1 translation for EL1&0: 4 KiB granule, 1 GiB / 2 MiB blocks. */
#include "rt.h"

#define GIB (1UL << 30)
#define BLOCK_2M (1UL << 21)
#define ENTRIES 512
#define MAX_RAM_GIB 4

/* descriptor bits */
#define PT_BLOCK 1UL /* valid block (levels 1 and 2) */
#define PT_TABLE 3UL /* valid table (levels 0 to 2) */
#define PT_ATTR(i) ((uint64_t)(i) << 2)
#define PT_AP_EL0 (1UL << 6) /* AP[1]: EL0 may access (EL1 may never execute it then) */
#define PT_AP_RO (1UL << 7)  /* AP[2]: read-only */
#define PT_SH_INNER (3UL << 8)
#define PT_AF (1UL << 10)
#define PT_PXN (1UL << 53)
#define PT_UXN (1UL << 54)

/* MAIR_EL1: attribute 0 device nGnRnE, attribute 1 normal write-back read/write-allocate */
#define ATTR_DEVICE 0
#define ATTR_NORMAL 1
#define MAIR_VALUE 0xff00UL

#define DESC_DEVICE (PT_BLOCK | PT_ATTR(ATTR_DEVICE) | PT_AF | PT_PXN | PT_UXN)
#define DESC_NORMAL (PT_BLOCK | PT_ATTR(ATTR_NORMAL) | PT_AF | PT_SH_INNER | PT_UXN)
#define DESC_EL1_RX (PT_BLOCK | PT_ATTR(ATTR_NORMAL) | PT_AF | PT_SH_INNER | PT_AP_RO | PT_UXN)
#define DESC_NORMAL_EL0 (PT_BLOCK | PT_ATTR(ATTR_NORMAL) | PT_AF | PT_SH_INNER | PT_AP_EL0 | PT_PXN)

/* TCR_EL1: TTBR0 walks write-back cacheable, inner shareable, 4 KiB granule; no TTBR1 walks */
#define TCR_T0SZ(bits) (64UL - (bits))
#define TCR_IRGN0_WB (1UL << 8)
#define TCR_ORGN0_WB (1UL << 10)
#define TCR_SH0_INNER (3UL << 12)
#define TCR_EPD1 (1UL << 23)
#define TCR_IPS_SHIFT 32

#define SCTLR_M (1UL << 0)
#define SCTLR_A (1UL << 1)
#define SCTLR_C (1UL << 2)
#define SCTLR_I (1UL << 12)
#define SCTLR_WXN (1UL << 19)
#define SCTLR_SPAN (1UL << 23) /* keep PSTATE.PAN on exception entry (RES1 before Armv8.1) */
#define SCTLR_E0E (1UL << 24)
#define SCTLR_EE (1UL << 25)

/* L0 (48-bit only), L1, and up to one L2 per GiB of RAM */
static uint64_t tables[2 + MAX_RAM_GIB][ENTRIES] __attribute__((aligned(4096)));

/* What the boot CPU programmed, for secondary CPUs (mmu_enable_secondary). Written with the MMU off
   and invalidated from the caches with the tables, so a secondary reads it with its MMU off too. It
   fills whole cache lines: nothing else shares them. */
static struct {
    uint64_t on, mair, tcr, ttbr0, sctlr;
} saved __attribute__((aligned(64)));

static int in_el0_region(const struct mmu_config *cfg, uint64_t pa)
{
    return cfg->el0_size && pa >= cfg->el0_base && pa - cfg->el0_base < cfg->el0_size;
}

static int config_ok(const struct mmu_config *cfg)
{
    if (cfg->va_bits != 39 && cfg->va_bits != 48)
        return 0;
    if (!cfg->ram_size || (cfg->ram_size & (GIB - 1)) || cfg->ram_size > MAX_RAM_GIB * GIB)
        return 0;
    if (!cfg->el0_size)
        return 1;
    return !((cfg->el0_base | cfg->el0_size) & (BLOCK_2M - 1)) && cfg->el0_base >= RAM_BASE &&
           cfg->el0_base - RAM_BASE + cfg->el0_size <= cfg->ram_size;
}

/* [start, start + size) was written with the MMU (and so the data cache) off: drop any stale lines */
static void invalidate(const void *start, size_t size)
{
    uint64_t line = 4UL << ((read_sysreg(ctr_el0) >> 16) & 0xf);

    dsb(sy);
    for (uintptr_t a = (uintptr_t)start & ~(line - 1); a < (uintptr_t)start + size; a += line)
        __asm__ volatile("dc ivac, %0" ::"r"(a) : "memory");
    dsb(sy);
}

/* MAIR, TCR, TTBR0, TLB invalidate, then SCTLR: the same on every CPU */
static void program(void)
{
    write_sysreg(mair_el1, saved.mair);
    write_sysreg(tcr_el1, saved.tcr);
    write_sysreg(ttbr0_el1, saved.ttbr0);
    isb();
    __asm__ volatile("tlbi vmalle1\n dsb nsh" ::: "memory");
    isb();
    write_sysreg(sctlr_el1, saved.sctlr);
    isb();
}

int mmu_enable(const struct mmu_config *cfg)
{
    static const struct mmu_config defaults = MMU_CONFIG_DEFAULT;
    unsigned used = 0;
    uint64_t *root, *l1;

    if (!cfg)
        cfg = &defaults;
    if (!config_ok(cfg) || (read_sysreg(sctlr_el1) & SCTLR_M))
        return -1;

    for (unsigned t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (unsigned i = 0; i < ENTRIES; i++)
            tables[t][i] = 0;
    root = l1 = tables[used++];
    if (cfg->va_bits == 48) { /* level 0 entry 0 covers the first 512 GiB */
        l1 = tables[used++];
        root[0] = (uintptr_t)l1 | PT_TABLE;
    }

    l1[0] = 0 | DESC_DEVICE; /* 0-1 GiB: flash, GIC, UART, RTC, virtio-mmio, PCIe windows */
    for (uint64_t base = RAM_BASE; base < RAM_BASE + cfg->ram_size; base += GIB) {
        int el0_here = cfg->el0_size && cfg->el0_base < base + GIB && cfg->el0_base + cfg->el0_size > base;
        uint64_t *l2;

        if (!cfg->ram_2m_blocks && !el0_here) {
            l1[base / GIB] = base | DESC_NORMAL;
            continue;
        }
        l2 = tables[used++];
        for (uint64_t i = 0; i < ENTRIES; i++) {
            uint64_t pa = base + i * BLOCK_2M;
            l2[i] = pa | (!in_el0_region(cfg, pa) ? DESC_NORMAL : cfg->el0_rx_el1 ? DESC_EL1_RX : DESC_NORMAL_EL0);
        }
        l1[base / GIB] = (uintptr_t)l2 | PT_TABLE;
    }

    uint64_t ips = read_sysreg(id_aa64mmfr0_el1) & 0xf; /* PARange, same encoding as IPS */
    if (ips > 5)
        ips = 5; /* 48 bits; 52 would need FEAT_LPA2 descriptors */
    uint64_t sctlr = read_sysreg(sctlr_el1);
    sctlr &= ~(SCTLR_A | SCTLR_WXN | SCTLR_E0E | SCTLR_EE);
    sctlr |= SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_SPAN;

    saved.mair = MAIR_VALUE;
    saved.tcr =
        TCR_T0SZ(cfg->va_bits) | TCR_IRGN0_WB | TCR_ORGN0_WB | TCR_SH0_INNER | TCR_EPD1 | (ips << TCR_IPS_SHIFT);
    saved.ttbr0 = (uintptr_t)root;
    saved.sctlr = sctlr;
    saved.on = 1;
    invalidate(tables, sizeof(tables));
    invalidate(&saved, sizeof(saved));
    program();
    return 0;
}

int mmu_enable_secondary(void)
{
    if (!saved.on || (read_sysreg(sctlr_el1) & SCTLR_M))
        return -1;
    program();
    return 0;
}
