/* gic_internal.h - GICv3 model state and helpers shared by gic.c, gic_dist.c, gic_redist.c and gic_cpuif.c. */
#ifndef VMM_GIC_INTERNAL_H
#define VMM_GIC_INTERNAL_H

#include <pthread.h>

#include "arm.h"
#include "gic.h"

/*
 * What we implement of IHI0069: one Security state (GICD_CTLR.DS = 1),
 * affinity routing always on (ARE RAO/WI), SGIs, PPIs, 96 SPIs, LPIs
 * 8192..65535 (gic_lpi.c) and one ITS (gic_its.c); no extended SPI/PPI
 * ranges, NMIs, message-based SPIs or GICv4 virtual LPIs.
 *
 * 5 priority bits, as on GIC-600/700 and QEMU's TCG CPUs: priorities are
 * multiples of 8 (bits [2:0] RAZ/WI), and the 32 possible preemption levels
 * are exactly ICC_AP0R0_EL1 and ICC_AP1R0_EL1 (AP{0,1}R{1,2,3} do not exist).
 */
#define GIC_PRIBITS 5
#define GIC_PRIO_SHIFT (8 - GIC_PRIBITS)
#define GIC_PRIO_MASK ((0xffu << GIC_PRIO_SHIFT) & 0xffu) /* 0xf8 */
#define GIC_MIN_BPR0 (7 - GIC_PRIBITS)                    /* group priority [7:3] */
#define GIC_MIN_BPR1 (GIC_MIN_BPR0 + 1)                   /* the same split for Group 1 */
#define GIC_IDLE_PRIO 0xffu
#define GIC_NR_WORDS (GIC_NR_IRQS / 32) /* 32-interrupt blocks: word 0 is per CPU, 1..3 the SPIs */
#define GIC_NO_CPU 0xffu

/* GICD_CTLR with DS = 1 (§12.9.4) */
#define GICD_CTLR_EN_GRP0 (1u << 0)
#define GICD_CTLR_EN_GRP1 (1u << 1)
#define GICD_CTLR_ARE (1u << 4)
#define GICD_CTLR_DS (1u << 6)

/* GICD_IROUTER<n> (§12.9.22) */
#define GICD_IROUTER_IRM (1ull << 31)
#define GICD_IROUTER_MASK 0x000000ff80ffffffull /* Aff3, IRM, Aff2..0 */

/* GICD_IIDR / GICR_IIDR: implementer Arm (JEP106 0x43b), ProductID 0, r0p0 -- what QEMU reports */
#define GIC_IIDR 0x0000043bu

/* Offsets shared by the distributor and the redistributor's SGI_base frame (§12.9, §12.11) */
#define GIC_IGROUPR 0x0080
#define GIC_ISENABLER 0x0100
#define GIC_ICENABLER 0x0180
#define GIC_ISPENDR 0x0200
#define GIC_ICPENDR 0x0280
#define GIC_ISACTIVER 0x0300
#define GIC_ICACTIVER 0x0380
#define GIC_IPRIORITYR 0x0400
#define GIC_ICFGR 0x0c00
#define GIC_IGRPMODR 0x0d00
#define GIC_NSACR 0x0e00
#define GIC_IDREGS 0xffd0 /* PIDR4..7, PIDR0..3, CIDR0..3 */
#define GIC_IDREGS_END 0x10000

/* Access widths a register accepts (bit n: 2^n bytes) */
#define GIC_W8 (1u << 0)
#define GIC_W32 (1u << 2)
#define GIC_W64 (1u << 3)

/* One bit per interrupt for a block of 32 INTIDs. */
struct gic_bits {
    uint32_t group;   /* 1: Group 1 (I*_IGROUPR) */
    uint32_t enable;  /* I*_ISENABLER / ICENABLER */
    uint32_t pending; /* the latch: edges and ISPENDR writes; acknowledge and ICPENDR clear it */
    uint32_t active;
    uint32_t level; /* the input line */
    uint32_t edge;  /* 1: edge-triggered (ICFGR bit 2n+1) */
};

/* A level-sensitive interrupt is pending while its input is high, or while latched. */
static inline uint32_t gic_bits_pending(const struct gic_bits *b)
{
    return b->pending | (b->level & ~b->edge);
}

/*
 * LPIs (IHI0069 §5.1): INTIDs from 8192; GICD_TYPER.IDbits = 15 (16-bit
 * INTIDs) bounds them at 65535, whatever GICR_PROPBASER.IDbits asks for.
 */
#define GIC_LPI_BASE 8192u
#define GIC_LPI_IDBITS 16
#define GIC_LPI_MAX (1u << GIC_LPI_IDBITS) /* INTIDs below this */
#define GIC_NR_LPI (GIC_LPI_MAX - GIC_LPI_BASE)

/*
 * One redistributor's LPI side (gic_lpi.c). The configuration table lives in
 * guest memory; like hardware we cache it (re-read on EnableLPIs, INV and
 * INVALL, §5.1.1). Pending state is ours while EnableLPIs = 1: read from the
 * pending table when LPIs are enabled, written back when they are disabled.
 */
struct gic_lpi {
    uint64_t propbaser; /* GICR_PROPBASER */
    uint64_t pendbaser; /* GICR_PENDBASER (PTZ reads 0) */
    bool enabled;       /* GICR_CTLR.EnableLPIs */
    unsigned nr;        /* LPIs in range while enabled: INTIDs GIC_LPI_BASE .. + nr - 1 */
    uint8_t *cfg;       /* GIC_NR_LPI cached configuration bytes (allocated at the first enable) */
    uint32_t *pend;     /* GIC_NR_LPI pending bits */
    unsigned npend;     /* pending bits set */
    unsigned best;      /* highest priority pending enabled LPI, or GIC_SPURIOUS (valid unless best_stale) */
    uint8_t best_prio;
    bool best_stale;
};

/* One CPU: its redistributor (SGIs, PPIs, GICR_WAKER) and its CPU interface (ICC_*). */
struct gic_cpu {
    struct gic_bits priv;
    uint8_t prio[GIC_NR_PRIVATE];
    struct gic_lpi lpi;
    uint32_t aff;    /* Aff3.Aff2.Aff1.Aff0 of the vCPU's MPIDR, as in GICR_TYPER[63:32] */
    bool sleep;      /* GICR_WAKER.ProcessorSleep */
    uint8_t pmr;     /* ICC_PMR_EL1 */
    uint8_t bpr0;    /* ICC_BPR0_EL1 */
    uint8_t bpr1;    /* ICC_BPR1_EL1 */
    bool igrpen[2];  /* ICC_IGRPEN0_EL1, ICC_IGRPEN1_EL1 */
    bool cbpr;       /* ICC_CTLR_EL1.CBPR */
    bool eoimode;    /* ICC_CTLR_EL1.EOImode */
    uint32_t apr[2]; /* ICC_AP0R0_EL1, ICC_AP1R0_EL1: bit n = group priority n << GIC_PRIO_SHIFT active */
    /* derived state, valid whenever the lock is free */
    unsigned hppi;     /* highest priority pending interrupt that may reach this CPU, or GIC_SPURIOUS */
    uint8_t hppi_prio; /* its priority (GIC_IDLE_PRIO if none) */
    uint8_t hppi_grp;  /* its group */
    bool line;         /* the IRQ line as the state says */
    bool reported;     /* the IRQ line as vmm__irq_line_changed() was last told (or is being told) */
};

/*
 * The ITS (gic_its.c, §5.2): registers only. Its device, collection and
 * interrupt translation tables are in guest memory and read on every use
 * (no caching), so they need no invalidation and no snapshot of their own.
 */
struct gic_its {
    bool enabled; /* GITS_CTLR.Enabled */
    bool stalled; /* GITS_CREADR.Stalled: a command failed; CWRITER.Retry or a new CBASER resumes */
    uint64_t cbaser;
    uint64_t cwriter;    /* offset bits [19:5] and Retry (bit 0 is not kept) */
    uint64_t creadr;     /* offset bits [19:5] */
    uint64_t baser[2];   /* GITS_BASER0 (devices), GITS_BASER1 (collections); 2..7 RAZ/WI */
    unsigned last_error; /* the last command error (enum its_error in gic_its.c), 0 if none */
};

struct vmm_gic {
    struct vmm_vm *vm;
    unsigned ncpus;
    bool lpis; /* LPIs and the ITS exist (vmm_config.its); else the GIC is one without them */
    /*
     * One mutex guards everything below. Every entry point takes it with
     * vmm__gic_lock() and leaves through vmm__gic_unlock(), which recomputes
     * the CPUs marked in `dirty` (and the lines of those in `reline`) and reports line changes without it.
     * report_lock guards no state: it only orders those reports (lock order:
     * lock, then report_lock, then whatever vmm__irq_line_changed takes).
     */
    pthread_mutex_t lock;
    pthread_mutex_t report_lock;
    uint32_t dirty;  /* CPUs whose HPPI and line must be recomputed */
    uint32_t reline; /* CPUs whose line alone must be: their PMR, BPR, CTLR or APRs changed, not their HPPI */

    uint32_t ctlr; /* GICD_CTLR.EnableGrp0/EnableGrp1 */
    struct gic_bits spi[GIC_NR_WORDS - 1];
    uint8_t spi_prio[GIC_NR_SPI];
    uint64_t irouter[GIC_NR_SPI];
    struct gic_cpu cpu[VMM_MAX_CPUS];
    struct gic_its its;
};

/* gic.c: locking, interrupt state, priorities */
void vmm__gic_lock(struct vmm_gic *g);
void vmm__gic_unlock(struct vmm_gic *g);
struct gic_bits *vmm__gic_bank(struct vmm_gic *g, unsigned cpu, unsigned intid);
uint8_t *vmm__gic_prio(struct vmm_gic *g, unsigned cpu, unsigned intid);
/* The CPU an SPI is delivered to, or GIC_NO_CPU (IROUTER names no vCPU). */
unsigned vmm__gic_spi_target(const struct vmm_gic *g, unsigned intid);
/* Mark CPUs for recomputation: the one an interrupt reaches, or all of them. */
void vmm__gic_dirty_irq(struct vmm_gic *g, unsigned cpu, unsigned intid);
void vmm__gic_dirty_all(struct vmm_gic *g);

/* The set/clear bitmap registers (IGROUPR..ICACTIVER); `reg` is the block's base offset. */
uint32_t vmm__gic_bits_read(const struct gic_bits *b, unsigned reg);
void vmm__gic_bits_write(struct gic_bits *b, unsigned reg, uint32_t val);
/* ICFGR half `half` (0: interrupts 0-15 of the block, 1: 16-31); only bits in `writable` change. */
uint32_t vmm__gic_cfg_read(const struct gic_bits *b, unsigned half);
void vmm__gic_cfg_write(struct gic_bits *b, unsigned half, uint32_t val, uint32_t writable);
/* IPRIORITYR: `n` bytes of priority starting at p, little-endian as in the register. */
uint32_t vmm__gic_prio_read(const uint8_t *p, unsigned n);
void vmm__gic_prio_write(uint8_t *p, unsigned n, uint32_t val);

/* Priority arithmetic of the CPU interface (§4.8) */
unsigned vmm__gic_gprio_mask(const struct gic_cpu *c, unsigned grp);
unsigned vmm__gic_running_prio(const struct gic_cpu *c);
bool vmm__gic_hppi_can_preempt(const struct gic_cpu *c);
/* Acknowledge c's HPPI (it must be able to preempt); returns its INTID. */
unsigned vmm__gic_activate(struct vmm_gic *g, unsigned cpu);
void vmm__gic_deactivate(struct vmm_gic *g, unsigned cpu, unsigned intid);

/* MMIO helpers: whether `size` suits a register taking `widths` (logs a guest error if not). */
bool vmm__gic_access_ok(struct vmm_gic *g, const char *block, uint64_t off, unsigned size, unsigned widths,
                        bool is_write);
void vmm__gic_bad_offset(struct vmm_gic *g, const char *block, uint64_t off, unsigned size, bool is_write);
uint32_t vmm__gic_id_reg(uint64_t off, uint8_t pidr0);

/* gic_lpi.c: the redistributors' LPI side (state lock held throughout) */
bool vmm__gic_lpi_reg_read(struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t *val);
bool vmm__gic_lpi_reg_write(struct vmm_gic *g, unsigned c, uint64_t off, unsigned size, uint64_t val);
bool vmm__gic_lpi_in_range(const struct vmm_gic *g, unsigned c, unsigned intid);
/* Set or clear an LPI's pending state (dropped if c's LPIs are off or intid is out of its range). */
void vmm__gic_lpi_set_pending(struct vmm_gic *g, unsigned c, unsigned intid, bool pending);
bool vmm__gic_lpi_pending(const struct vmm_gic *g, unsigned c, unsigned intid);
/* Re-read one LPI's configuration byte, or (intid 0) the whole table. */
void vmm__gic_lpi_invalidate(struct vmm_gic *g, unsigned c, unsigned intid);
/* Every pending LPI of `from` becomes pending on `to` instead (MOVALL). */
void vmm__gic_lpi_move_all(struct vmm_gic *g, unsigned from, unsigned to);
/* c's highest priority pending enabled LPI (GIC_SPURIOUS if none) and its priority. */
unsigned vmm__gic_lpi_hppi(struct vmm_gic *g, unsigned c, uint8_t *prio);
void vmm__gic_lpi_free(struct vmm_gic *g);
struct vmm_snap;
void vmm__gic_lpi_snap(struct vmm_gic *g, struct vmm_snap *s);

/* gic_its.c */
void vmm__gic_its_reset(struct vmm_gic *g);
void vmm__gic_its_snap(struct vmm_gic *g, struct vmm_snap *s);

/* the MMIO frames (gic_dist.c, gic_redist.c, gic_its.c) */
extern const struct vmm_mmio_ops vmm__gic_dist_ops;
extern const struct vmm_mmio_ops vmm__gic_redist_ops;
extern const struct vmm_mmio_ops vmm__gic_its_ops;

#endif
