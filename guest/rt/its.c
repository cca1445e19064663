/* its.c - GICv3 LPIs and the ITS (IHI0069 §5.1-5.3): tables in RAM, the command queue, the usual commands. */
#include "rt.h"

#define GICD_TYPER_LPIS (1u << 17)
#define GICR_TYPER_PLPIS (1u << 0)
#define GICR_CTLR_ENABLE_LPIS (1u << 0)
#define GICR_PROPBASER 0x0070
#define GICR_PENDBASER 0x0078

#define GITS_CTLR (GITS_BASE + 0x0000)
#define GITS_TYPER (GITS_BASE + 0x0008)
#define GITS_CBASER (GITS_BASE + 0x0080)
#define GITS_CWRITER (GITS_BASE + 0x0088)
#define GITS_CREADR (GITS_BASE + 0x0090)
#define GITS_BASER(n) (GITS_BASE + 0x0100 + 8 * (n))
#define GITS_CTLR_ENABLED (1u << 0)
#define GITS_CTLR_QUIESCENT (1u << 31)
#define GITS_TYPER_PTA (1ul << 19)
#define GITS_CREADR_STALLED 1ul

#define VALID (1ul << 63)
#define RAWAWB 7ul  /* Normal Inner Read-allocate, Write-allocate, Write-back */
#define INNER_SH 1ul /* Inner Shareable */
#define BASER_TYPE(v) (((v) >> 56) & 7)
#define BASER_ESIZE(v) ((((v) >> 48) & 0x1f) + 1)
#define BASER_TYPE_DEVICE 1
#define BASER_TYPE_COLLECTION 4
#define BASER_64K (2ul << 8)

#define QUEUE_BYTES 4096
#define TABLE_BYTES 0x10000 /* one page of up to 64 KiB */
#define NR_LPIS ((1u << ITS_LPI_IDBITS) - GIC_LPI_BASE)
#define ITT_BYTES 1024
#define NR_ITTS 8

static uint8_t prop_table[NR_LPIS] __attribute__((aligned(4096)));
static uint8_t pend_tables[RT_MAX_CPUS][TABLE_BYTES] __attribute__((aligned(TABLE_BYTES)));
static uint8_t cmd_queue[QUEUE_BYTES] __attribute__((aligned(TABLE_BYTES)));
static uint8_t dev_table[TABLE_BYTES] __attribute__((aligned(TABLE_BYTES)));
static uint8_t coll_table[TABLE_BYTES] __attribute__((aligned(TABLE_BYTES)));
static uint8_t itts[NR_ITTS][ITT_BYTES] __attribute__((aligned(256)));
static unsigned itts_used;
static uint64_t cwriter;

int its_lpis_supported(void)
{
    return (mmio_read32(GICD_BASE + GICD_TYPER) & GICD_TYPER_LPIS) &&
           (mmio_read64(gic_rd_base() + GICR_TYPER) & GICR_TYPER_PLPIS);
}

void its_lpi_config(unsigned intid, uint8_t prio, int enable)
{
    if (intid < GIC_LPI_BASE || intid - GIC_LPI_BASE >= NR_LPIS)
        return;
    prop_table[intid - GIC_LPI_BASE] = (uint8_t)((prio & 0xfc) | (enable ? 1 : 0));
    dsb(ish); /* the GIC reads it from memory */
}

int its_lpi_cpu_init(void)
{
    uintptr_t rd = gic_rd_base();
    unsigned cpu = smp_cpu_id() % RT_MAX_CPUS;

    if (mmio_read32(rd + GICR_CTLR) & GICR_CTLR_ENABLE_LPIS) {
        printf("its: cpu %u: GICR_CTLR.EnableLPIs already set\n", cpu);
        return -1;
    }
    dsb(ish);
    mmio_write64(rd + GICR_PROPBASER, (uintptr_t)prop_table | RAWAWB << 7 | INNER_SH << 10 | (ITS_LPI_IDBITS - 1));
    mmio_write64(rd + GICR_PENDBASER, (uintptr_t)pend_tables[cpu] | RAWAWB << 7 | INNER_SH << 10);
    if ((mmio_read64(rd + GICR_PROPBASER) & 0xfffffffff000ul) != (uintptr_t)prop_table) {
        printf("its: cpu %u: GICR_PROPBASER does not hold the table address\n", cpu);
        return -1;
    }
    mmio_write32(rd + GICR_CTLR, mmio_read32(rd + GICR_CTLR) | GICR_CTLR_ENABLE_LPIS);
    if (!(mmio_read32(rd + GICR_CTLR) & GICR_CTLR_ENABLE_LPIS)) {
        printf("its: cpu %u: GICR_CTLR.EnableLPIs stays 0\n", cpu);
        return -1;
    }
    return 0;
}

/* One table per GITS_BASER<n> we need: a 4 KiB page if the ITS takes that size, else 64 KiB. */
static int setup_table(unsigned n, uint8_t *table)
{
    uint64_t b = mmio_read64(GITS_BASER(n)), want;

    want = VALID | RAWAWB << 59 | (uintptr_t)table | INNER_SH << 10;
    mmio_write64(GITS_BASER(n), want);
    if ((mmio_read64(GITS_BASER(n)) & VALID) == 0 || ((mmio_read64(GITS_BASER(n)) >> 8) & 3) != 0)
        mmio_write64(GITS_BASER(n), want | BASER_64K); /* 4 KiB pages not supported */
    b = mmio_read64(GITS_BASER(n));
    if (!(b & VALID) || (b & 0xfffffffff000ul) != (uintptr_t)table) {
        printf("its: GITS_BASER%u = 0x%lx does not take the table\n", n, b);
        return -1;
    }
    return 0;
}

int its_init(void)
{
    int need_dev = 1, need_coll = 1;

    mmio_write32(GITS_CTLR, 0);
    if (!POLL_UNTIL(mmio_read32(GITS_CTLR) & GITS_CTLR_QUIESCENT, 1000)) {
        printf("its: GITS_CTLR.Quiescent stays 0\n");
        return -1;
    }
    for (unsigned n = 0; n < 8; n++) {
        uint64_t b = mmio_read64(GITS_BASER(n));
        if (BASER_TYPE(b) == BASER_TYPE_DEVICE && need_dev) {
            if (setup_table(n, dev_table))
                return -1;
            need_dev = 0;
        } else if (BASER_TYPE(b) == BASER_TYPE_COLLECTION && need_coll) {
            if (setup_table(n, coll_table))
                return -1;
            need_coll = 0;
        }
    }
    if (need_dev || need_coll) {
        printf("its: no GITS_BASER for the %s table\n", need_dev ? "device" : "collection");
        return -1;
    }
    cwriter = 0;
    mmio_write64(GITS_CBASER, VALID | RAWAWB << 59 | (uintptr_t)cmd_queue | INNER_SH << 10 | (QUEUE_BYTES / 4096 - 1));
    mmio_write64(GITS_CWRITER, 0);
    dsb(ish);
    mmio_write32(GITS_CTLR, GITS_CTLR_ENABLED);
    if (!(mmio_read32(GITS_CTLR) & GITS_CTLR_ENABLED)) {
        printf("its: GITS_CTLR.Enabled stays 0\n");
        return -1;
    }
    return 0;
}

uint64_t its_rdbase(void)
{
    if (mmio_read64(GITS_TYPER) & GITS_TYPER_PTA)
        return gic_rd_base() & 0xffffffff0000ul; /* the physical address of RD_base, [51:16] */
    return ((mmio_read64(gic_rd_base() + GICR_TYPER) >> 8) & 0xffff) << 16; /* Processor_Number */
}

uint64_t its_creadr(void)
{
    return mmio_read64(GITS_CREADR);
}

int its_cmd(uint64_t dw0, uint64_t dw1, uint64_t dw2, uint64_t dw3)
{
    volatile uint64_t *slot = (volatile uint64_t *)(cmd_queue + cwriter);

    slot[0] = dw0;
    slot[1] = dw1;
    slot[2] = dw2;
    slot[3] = dw3;
    cwriter = (cwriter + 32) % QUEUE_BYTES;
    dsb(ish); /* the command is in memory before the ITS is told */
    mmio_write64(GITS_CWRITER, cwriter);
    if (!POLL_UNTIL((its_creadr() & GITS_CREADR_STALLED) || its_creadr() == cwriter, 1000))
        return -1;
    return its_creadr() & GITS_CREADR_STALLED ? -1 : 0;
}

int its_mapd(uint32_t devid, unsigned event_bits)
{
    unsigned esize = (unsigned)((mmio_read64(GITS_TYPER) >> 4) & 0xf) + 1;

    if (itts_used == NR_ITTS || esize << event_bits > ITT_BYTES || event_bits < 1)
        return -1;
    return its_cmd(ITS_MAPD | (uint64_t)devid << 32, event_bits - 1, VALID | (uintptr_t)itts[itts_used++], 0);
}

int its_mapc(unsigned icid, uint64_t rdbase)
{
    return its_cmd(ITS_MAPC, 0, VALID | rdbase | (icid & 0xffff), 0);
}

int its_mapti(uint32_t devid, uint32_t event, unsigned intid, unsigned icid)
{
    return its_cmd(ITS_MAPTI | (uint64_t)devid << 32, event | (uint64_t)intid << 32, icid & 0xffff, 0);
}

int its_event_cmd(unsigned op, uint32_t devid, uint32_t event)
{
    return its_cmd(op | (uint64_t)devid << 32, event, 0, 0);
}

int its_sync(uint64_t rdbase)
{
    return its_cmd(ITS_SYNC, 0, rdbase, 0);
}

int its_retry(uint64_t dw0, uint64_t dw1, uint64_t dw2, uint64_t dw3)
{
    uint64_t at = its_creadr() & ~GITS_CREADR_STALLED;
    volatile uint64_t *slot = (volatile uint64_t *)(cmd_queue + at);

    if (!(its_creadr() & GITS_CREADR_STALLED) || at >= QUEUE_BYTES)
        return -1;
    slot[0] = dw0;
    slot[1] = dw1;
    slot[2] = dw2;
    slot[3] = dw3;
    dsb(ish);
    mmio_write64(GITS_CWRITER, cwriter | 1); /* Retry */
    if (!POLL_UNTIL((its_creadr() & GITS_CREADR_STALLED) || its_creadr() == cwriter, 1000))
        return -1;
    return its_creadr() & GITS_CREADR_STALLED ? -1 : 0;
}
