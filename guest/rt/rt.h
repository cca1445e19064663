/* rt.h - the guest runtime API: UART, printf, exceptions, EL0 calls, PSCI, semihosting, MMU, exit,
   GICv3, generic timer and waits, SMP (secondary CPUs, spinlocks, atomics, barriers), DTB cpus, polled
   virtio-mmio and virtio-gpu 2D, a bitmap font. */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- machine (QEMU virt layout) ---- */
#define UART_BASE 0x09000000UL
#define GICD_BASE 0x08000000UL
#define GICR_BASE 0x080A0000UL
#define RAM_BASE 0x40000000UL

/* ---- system registers ---- */
#define read_sysreg(r)                                        \
    ({                                                        \
        uint64_t _v;                                          \
        __asm__ volatile("mrs %0, " #r : "=r"(_v)::"memory"); \
        _v;                                                   \
    })
#define write_sysreg(r, v) __asm__ volatile("msr " #r ", %0" ::"r"((uint64_t)(v)) : "memory")
/* the same for names the assembler may not know, given as macros (ICC_PMR_EL1 -> S3_0_C4_C6_0) */
#define read_sysreg_s(r) read_sysreg(r)
#define write_sysreg_s(r, v) write_sysreg(r, v)
#define isb() __asm__ volatile("isb" ::: "memory")
#define dsb(opt) __asm__ volatile("dsb " #opt ::: "memory")
#define dmb(opt) __asm__ volatile("dmb " #opt ::: "memory")

/*
 * Device register accesses are single plain LDR/STR instructions: a
 * hypervisor decodes a trapped access from the syndrome, which exists only
 * for those (KVM cannot emulate a post-indexed store the compiler might
 * pick for a volatile pointer in a loop).
 */
static inline uint32_t mmio_read32_at(uintptr_t a)
{
    uint32_t v;
    __asm__ volatile("ldr %w0, [%1]" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline void mmio_write32_at(uintptr_t a, uint32_t v)
{
    __asm__ volatile("str %w0, [%1]" ::"r"(v), "r"(a) : "memory");
}
static inline uint64_t mmio_read64_at(uintptr_t a)
{
    uint64_t v;
    __asm__ volatile("ldr %0, [%1]" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline void mmio_write64_at(uintptr_t a, uint64_t v)
{
    __asm__ volatile("str %0, [%1]" ::"r"(v), "r"(a) : "memory");
}
#define mmio_read32(a) mmio_read32_at((uintptr_t)(a))
#define mmio_write32(a, v) mmio_write32_at((uintptr_t)(a), (uint32_t)(v))
#define mmio_read64(a) mmio_read64_at((uintptr_t)(a))
#define mmio_write64(a, v) mmio_write64_at((uintptr_t)(a), (uint64_t)(v))

/* ---- PSTATE.I and idle ---- */
static inline void irq_enable(void)
{
    __asm__ volatile("msr daifclr, #2" ::: "memory");
}
static inline void irq_disable(void)
{
    __asm__ volatile("msr daifset, #2" ::: "memory");
}
static inline uint64_t irq_save(void) /* masks IRQs, returns the previous DAIF */
{
    uint64_t daif = read_sysreg(daif);
    irq_disable();
    return daif;
}
static inline void irq_restore(uint64_t daif)
{
    write_sysreg(daif, daif);
}
static inline void wfi(void)
{
    __asm__ volatile("wfi" ::: "memory");
}
static inline void cpu_relax(void)
{
    __asm__ volatile("yield" ::: "memory");
}

/* ---- UART (PL011, polled) ---- */
void uart_putc(char c); /* "\n" goes out as "\r\n" */
void uart_puts(const char *s);
int uart_getc(void);    /* waits for a byte */
int uart_trygetc(void); /* -1 if nothing is waiting */
void uart_flush(void);  /* waits (bounded) until the transmitter is idle */

/* ---- printf: %d %i %u %x %X %p %s %c %%, "l"/"ll"/"z" sizes, width, '0' and '-' flags ---- */
__attribute__((format(printf, 1, 2))) int printf(const char *fmt, ...);
int vprintf(const char *fmt, va_list ap);

/* ---- exceptions ---- */
/* Saved by the vectors (vectors.S) on every exception; changes are written back on return. */
struct exc_frame {
    uint64_t x[31];
    uint64_t sp_el0;
    uint64_t elr, spsr;
    uint64_t esr, far; /* read only */
    uint64_t vector;   /* 0..15 = offset from VBAR_EL1 / 0x80 (read only) */
    uint64_t pad;
};

/* vector index: group * 4 + kind */
#define VEC_GROUP(v) ((v) >> 2) /* 0 EL1 with SP_EL0, 1 EL1 with SP_EL1, 2 EL0 AArch64, 3 EL0 AArch32 */
#define VEC_KIND(v) ((v)&3)     /* 0 sync, 1 IRQ, 2 FIQ, 3 SError */
#define VEC_EL1_SYNC 4
#define VEC_EL0_SYNC 8

#define ESR_EC(esr) (((esr) >> 26) & 0x3f)
#define ESR_IL (1UL << 25)
#define ESR_ISS(esr) ((esr)&0x1ffffff)
#define ESR_MAKE(ec, iss) (((uint64_t)(ec) << 26) | ESR_IL | (iss)) /* a 32-bit A64 instruction's syndrome */
#define EC_UNKNOWN 0x00
#define EC_SVC64 0x15
#define EC_HVC64 0x16
#define EC_SYSREG 0x18
#define EC_IABT_LOW 0x20
#define EC_IABT_CUR 0x21
#define EC_DABT_LOW 0x24
#define EC_DABT_CUR 0x25
#define EC_BRK64 0x3c
#define ESR_DFSC(esr) ((esr)&0x3f)
#define ESR_WNR (1UL << 6)
#define ESR_FNV (1UL << 10)

/* Return nonzero if the exception was dealt with (the frame is restored and execution resumes at
   frame->elr); zero reports it on the UART and ends the guest with exit status 3. */
typedef int (*exc_handler_fn)(struct exc_frame *f);
exc_handler_fn exc_set_handler(exc_handler_fn fn); /* returns the previous handler */
/* IRQ exceptions go first to this handler (gic_init() installs the GIC dispatcher), then to the
   exception handler. Returns the previous one. */
exc_handler_fn exc_set_irq_handler(exc_handler_fn fn);
/* Called by the vectors. The default (weak) one calls the registered handler; a guest may define
   its own exc_handler instead. */
int exc_handler(struct exc_frame *f);
const char *exc_vector_name(uint64_t vector);

/* ---- EL0 ---- */
/* Runs entry(arg) at EL0 (SPSR = 0: EL0t, interrupts unmasked) on user_sp until an exception
   handler calls el0_return(); returns the value given there. entry must be EL0-executable. */
uint64_t el0_call(uintptr_t entry, uintptr_t user_sp, uint64_t arg);
/* From a handler for an exception taken from EL0: make el0_call() return value. */
void el0_return(struct exc_frame *f, uint64_t value);

/* ---- PSCI / SMCCC over HVC ---- */
#define SMCCC_VERSION 0x80000000U
#define PSCI_VERSION 0x84000000U
#define PSCI_CPU_OFF 0x84000002U
#define PSCI_AFFINITY_INFO 0xC4000004U
#define PSCI_SYSTEM_OFF 0x84000008U
#define PSCI_SYSTEM_RESET 0x84000009U
#define PSCI_FEATURES 0x8400000AU
#define PSCI_CPU_ON 0xC4000003U
#define PSCI_NOT_SUPPORTED (-1)
#define PSCI_INVALID_PARAMETERS (-2)
#define PSCI_DENIED (-3)
#define PSCI_ALREADY_ON (-4)
#define PSCI_ON_PENDING (-5)
#define PSCI_INTERNAL_FAILURE (-6)
/* AFFINITY_INFO results */
#define PSCI_AFF_ON 0
#define PSCI_AFF_OFF 1
#define PSCI_AFF_ON_PENDING 2

/* function id in w0, arguments in x1..x3; returns x0 (x4..x17 are treated as clobbered) */
uint64_t smccc_hvc(uint32_t fn, uint64_t a1, uint64_t a2, uint64_t a3);
uint32_t psci_version(void); /* major << 16 | minor */
int32_t psci_features(uint32_t fn);
int32_t psci_cpu_on(uint64_t mpidr, uintptr_t entry, uint64_t context);
int32_t psci_cpu_off(void); /* returns only on failure */
int32_t psci_affinity_info(uint64_t mpidr, unsigned level);
__attribute__((noreturn)) void psci_system_off(void);
/*
 * SYSTEM_OFF with the exit status in x4 and VMMPY_EXIT_TAG in x5: PSCI
 * ignores both; vmmpy's KVM backend reports the status (it has no semihosting).
 */
#define VMMPY_EXIT_TAG 0x564d4d5059455854ULL /* "VMMPYEXT" */
__attribute__((noreturn)) void psci_system_off_status(uint32_t status);
__attribute__((noreturn)) void psci_system_reset(void);

/* ---- semihosting (hlt #0xf000); without a semihosting host the call returns -1 ---- */
int64_t semihost_call(uint32_t op, const void *param);
void semihost_exit(int code); /* SYS_EXIT_EXTENDED, ADP_Stopped_ApplicationExit */

/* ---- MMU: identity map, 4 KiB granule ---- */
struct mmu_config {
    unsigned va_bits;   /* 39 (start at level 1) or 48 (start at level 0) */
    int ram_2m_blocks;  /* map RAM with 2 MiB blocks (otherwise 1 GiB blocks) */
    uint64_t ram_size;  /* bytes of normal memory from RAM_BASE, whole GiB, at most 4 GiB */
    uintptr_t el0_base; /* optional EL0 read/write/execute region (2 MiB aligned, in RAM) */
    uint64_t el0_size;  /* 0: none; forces 2 MiB blocks for the GiB holding it */
    int el0_rx_el1;     /* map the el0 region EL1 read-only and executable instead (EL0: no access) */
};
/* 0-1 GiB device nGnRnE (never executable); RAM normal write-back, EL1 read/write/execute;
   everything else unmapped. */
#define MMU_CONFIG_DEFAULT                                       \
    {                                                            \
        .va_bits = 39, .ram_2m_blocks = 1, .ram_size = 1UL << 30 \
    }
/* NULL: the default. Returns -1 (and changes nothing) if cfg is unsupported or the MMU is already on.
   Call it before starting secondary CPUs: they turn the MMU on with the same tables (smp.c). */
int mmu_enable(const struct mmu_config *cfg);
/* Secondary CPUs (rt/smp.c): the MMU as the boot CPU set it up, if it did. 0 = on, -1 = left off. */
int mmu_enable_secondary(void);

/* ---- GICv3 (rt/gic.c): system-register CPU interface, affinity routing, Group 1 only ---- */
/* CPU interface registers (Arm IHI0069, 12.2), by encoding so any assembler takes them */
#define ICC_PMR_EL1 S3_0_C4_C6_0
#define ICC_IAR1_EL1 S3_0_C12_C12_0
#define ICC_EOIR1_EL1 S3_0_C12_C12_1
#define ICC_HPPIR1_EL1 S3_0_C12_C12_2
#define ICC_BPR1_EL1 S3_0_C12_C12_3
#define ICC_CTLR_EL1 S3_0_C12_C12_4
#define ICC_SRE_EL1 S3_0_C12_C12_5
#define ICC_IGRPEN1_EL1 S3_0_C12_C12_7
#define ICC_RPR_EL1 S3_0_C12_C11_3
#define ICC_SGI1R_EL1 S3_0_C12_C11_5

/* distributor (GICD_BASE) registers */
#define GICD_CTLR 0x0000
#define GICD_TYPER 0x0004
#define GICD_IIDR 0x0008
#define GICD_IGROUPR 0x0080
#define GICD_ISENABLER 0x0100
#define GICD_ICENABLER 0x0180
#define GICD_ISPENDR 0x0200
#define GICD_ICPENDR 0x0280
#define GICD_ISACTIVER 0x0300
#define GICD_ICACTIVER 0x0380
#define GICD_IPRIORITYR 0x0400
#define GICD_ICFGR 0x0c00
#define GICD_IROUTER 0x6000 /* 64-bit, one per INTID (32..) */
#define GICD_CTLR_ENABLE_G1NS (1u << 1)
#define GICD_CTLR_ARE_NS (1u << 4)
#define GICD_CTLR_RWP (1u << 31)
/* redistributor: RD_base frame, then the SGI_base frame with the SGI/PPI registers (GICD offsets) */
#define GICR_STRIDE 0x20000UL
#define GICR_SGI_OFFSET 0x10000UL
#define GICR_CTLR 0x0000
#define GICR_TYPER 0x0008 /* 64-bit: affinity in [63:32], Last in bit 4 */
#define GICR_WAKER 0x0014
#define GICR_CTLR_RWP (1u << 3)
#define GICR_WAKER_PROCESSOR_SLEEP (1u << 1)
#define GICR_WAKER_CHILDREN_ASLEEP (1u << 2)

#define GIC_MAX_INTID 1020 /* 0..1019; 1020-1023 are special */
#define GIC_SPURIOUS 1023
#define INTID_VTIMER 27 /* EL1 virtual timer PPI */
#define INTID_PTIMER 30 /* EL1 physical timer PPI (WFI_UNTIL's wake-up timer) */
#define INTID_UART 33   /* PL011, SPI 1, level */
#define GIC_PRIO_DEFAULT 0xa0
#define GIC_PRIO_WAKEUP 0xe0 /* must stay below ICC_PMR_EL1 (0xff reads back as 0xf8 or 0xf0) */

/* An interrupt handler, called with IRQs masked between ICC_IAR1_EL1 and ICC_EOIR1_EL1 (EOImode 0).
   It may irq_enable() to let higher-priority interrupts preempt it; the dispatcher masks again. */
typedef void (*irq_fn)(unsigned intid, void *arg);

/* Boot CPU, once: distributor (ARE_NS, Group 1 enabled, every SPI disabled, Group 1, default priority,
   routed to this CPU), then gic_cpu_init(), then installs the IRQ dispatcher. 0, or -1 after a
   "gic: ..." line on the UART. */
int gic_init(void);
/* Every CPU (gic_init() does the boot CPU's): find its redistributor by GICR_TYPER affinity, wake it,
   SGIs/PPIs Group 1, disabled, default priority; ICC_SRE_EL1.SRE, PMR 0xff, BPR1 0, Group 1 on. */
int gic_cpu_init(void);
void gic_set_handler(unsigned intid, irq_fn fn, void *arg);
/* INTIDs below 32 act on the calling CPU's redistributor, others on the distributor. */
void gic_enable(unsigned intid);
void gic_disable(unsigned intid); /* waits for RWP */
void gic_set_priority(unsigned intid, uint8_t prio);
void gic_set_edge(unsigned intid, int edge); /* ICFGR: 1 edge-triggered, 0 level-sensitive */
int gic_is_edge(unsigned intid);
void gic_set_pending(unsigned intid);   /* ISPENDR */
void gic_clear_pending(unsigned intid); /* ICPENDR */
int gic_is_pending(unsigned intid);
int gic_is_active(unsigned intid);
void gic_clear_active(unsigned intid);
void gic_route(unsigned intid, uint64_t mpidr); /* SPIs: GICD_IROUTER to one CPU */
/* SGIs through ICC_SGI1R_EL1 (affinity routing): to one CPU, or with IRM to all but the sender */
void gic_send_sgi(unsigned intid, uint64_t mpidr);
void gic_send_sgi_list(unsigned intid, uint64_t aff321, uint16_t target_list); /* Aff0 bits, RS 0 */
void gic_send_sgi_others(unsigned intid);
unsigned gic_num_intids(void); /* 32 * (GICD_TYPER.ITLinesNumber + 1), at most 1020 */
#define GIC_LPI_BASE 8192
/* The handler of every LPI (INTID >= 8192; without one an LPI is counted unhandled and EOId). */
void gic_set_lpi_handler(irq_fn fn, void *arg);
uintptr_t gic_rd_base(void);   /* the calling CPU's RD_base (after gic_cpu_init) */

/* ---- GICv3 LPIs and ITS (rt/its.c): flat tables, 4 KiB pages, one command queue page ---- */
#define GITS_BASE 0x08080000UL
#define GITS_TRANSLATER (GITS_BASE + 0x10040)
#define ITS_LPI_IDBITS 14 /* LPIs 8192..16383: an 8 KiB configuration table */
enum {
    ITS_MOVI = 0x01, ITS_INT = 0x03, ITS_CLEAR = 0x04, ITS_SYNC = 0x05, ITS_MAPD = 0x08, ITS_MAPC = 0x09,
    ITS_MAPTI = 0x0a, ITS_MAPI = 0x0b, ITS_INV = 0x0c, ITS_INVALL = 0x0d, ITS_MOVALL = 0x0e, ITS_DISCARD = 0x0f,
};
/* Whether GICD_TYPER.LPIS and the calling CPU's GICR_TYPER.PLPIS say LPIs exist. */
int its_lpis_supported(void);
/* The calling CPU's LPIs: its pending table, the shared configuration table (every LPI disabled),
   GICR_CTLR.EnableLPIs. 0, or -1 after a "its: ..." line. */
int its_lpi_cpu_init(void);
/* The ITS: device and collection tables, command queue, GITS_CTLR.Enabled. 0 or -1 (with a line). */
int its_init(void);
/* An LPI's configuration byte (priority, enable); the ITS needs an INV or INVALL to see a change. */
void its_lpi_config(unsigned intid, uint8_t prio, int enable);
/* The RDbase the ITS wants for the calling CPU in MAPC/SYNC/MOVALL (GITS_TYPER.PTA: address or number). */
uint64_t its_rdbase(void);
/* Queue one command (dw[0] opcode and DeviceID, ...) and wait until the ITS consumed it; 0, or -1 if
   it stalled (GITS_CREADR.Stalled) or did not finish within 1 s. */
int its_cmd(uint64_t dw0, uint64_t dw1, uint64_t dw2, uint64_t dw3);
int its_mapd(uint32_t devid, unsigned event_bits);      /* a 256-byte aligned ITT from a static pool */
int its_mapc(unsigned icid, uint64_t rdbase);
int its_mapti(uint32_t devid, uint32_t event, unsigned intid, unsigned icid);
int its_event_cmd(unsigned op, uint32_t devid, uint32_t event); /* INT, CLEAR, DISCARD, INV */
int its_sync(uint64_t rdbase);
uint64_t its_creadr(void);
/* A stalled queue (GITS_CREADR.Stalled): replace the failing command with this one and resume it with
   GITS_CWRITER.Retry; 0 once the queue is drained, -1 if it was not stalled or stalls again. */
int its_retry(uint64_t dw0, uint64_t dw1, uint64_t dw2, uint64_t dw3);

/* ---- generic timer and bounded waits (rt/timer.c) ---- */
#define CNT_CTL_ENABLE (1u << 0)
#define CNT_CTL_IMASK (1u << 1)
#define CNT_CTL_ISTATUS (1u << 2)

uint64_t timer_freq(void); /* CNTFRQ_EL0, or 62.5 MHz if it reads 0 */
uint64_t timer_now(void);  /* CNTVCT_EL0 (isb first) */
uint64_t timer_ms_to_ticks(uint64_t ms);
uint64_t timer_ticks_to_us(uint64_t ticks);

/* A deadline on the virtual counter. It also expires if the counter does not move over 10 million
   consecutive checks, so a stopped counter cannot turn a bounded wait into a hang. */
struct deadline {
    uint64_t end, last;
    uint32_t same;
};
void deadline_set(struct deadline *d, uint64_t ms);
int deadline_passed(struct deadline *d);

/* Busy-wait until cond is true or ms pass; the value is whether cond became true. */
#define POLL_UNTIL(cond, ms)                               \
    ({                                                     \
        struct deadline _d;                                \
        int _ok;                                           \
        deadline_set(&_d, (ms));                           \
        while (!(_ok = !!(cond)) && !deadline_passed(&_d)) \
            cpu_relax();                                   \
        _ok;                                               \
    })

/* Sleep in WFI until cond is true or ms pass; the value is whether cond became true in time.
   cond is tested with IRQs masked and IRQs are taken only between tests, so an interrupt that makes
   it true cannot be missed before the WFI. The physical timer (PPI 30, owned by this while it waits,
   enabled on first use on each CPU) fires at the deadline to end the WFI; a cond that only became
   true after that counts as a timeout (so a wake-up the VMM lost shows). Needs gic_init()/
   gic_cpu_init() on this CPU and ICC_PMR_EL1 above GIC_PRIO_WAKEUP. */
struct wfi_wait {
    struct deadline d;
    uint64_t daif;
};
void wfi_wait_begin(struct wfi_wait *w, uint64_t ms);
int wfi_wait_step(struct wfi_wait *w); /* WFI then take IRQs; 0 once the deadline has passed */
int wfi_wait_end(struct wfi_wait *w);  /* nonzero if the wake-up timer fired (the wait ran out) */
#define WFI_UNTIL(cond, ms)                             \
    ({                                                  \
        struct wfi_wait _w;                             \
        int _ok;                                        \
        wfi_wait_begin(&_w, (ms));                      \
        while (!(_ok = !!(cond)) && wfi_wait_step(&_w)) \
            ;                                           \
        if (wfi_wait_end(&_w))                          \
            _ok = 0;                                    \
        _ok;                                            \
    })

/* ---- SMP (rt/smp.c, secondary entry in rt/start.S) ---- */
/* CPUs are numbered by MPIDR_EL1.Aff0 (QEMU virt and vmmpy: Aff0 = CPU index, Aff1-3 = 0 up to 8
   CPUs). Each secondary gets a 16 KiB stack picked by Aff0 (rt/link.ld). */
#define RT_MAX_CPUS 8
#define MPIDR_AFF_MASK 0xff00ffffffUL

typedef void (*smp_fn)(void *arg);
/* Per-CPU data, indexed by smp_cpu_id(); `state` is written by the CPU itself. */
enum cpu_state { CPU_OFF = 0, CPU_STARTING, CPU_RUNNING, CPU_STOPPING };
struct cpu_data {
    volatile uint32_t state;
    uint32_t id;
    uint64_t mpidr; /* MPIDR_EL1 & MPIDR_AFF_MASK, once it ran */
    smp_fn fn;      /* what a secondary runs (set by smp_start_cpu) */
    void *arg;
    uintptr_t gicr; /* RD_base (gic_cpu_init) */
    int wake_ready; /* WFI_UNTIL's timer PPI is set up on this CPU */
    volatile int wake_fired;
    volatile uint32_t irqs, spurious, unhandled, nesting;
} __attribute__((aligned(64)));
extern struct cpu_data cpu_data[RT_MAX_CPUS];

static inline unsigned smp_cpu_id(void)
{
    return (unsigned)(read_sysreg(mpidr_el1) & 0xff);
}
static inline struct cpu_data *this_cpu(void)
{
    return &cpu_data[smp_cpu_id() % RT_MAX_CPUS];
}
/* PSCI CPU_ON of `mpidr` at the runtime's secondary entry: it takes the stack for its Aff0, sets
   VBAR_EL1 and FP/SIMD access, turns the MMU on like the boot CPU (if it did), marks itself
   CPU_RUNNING and runs fn(arg); when fn returns it calls PSCI CPU_OFF. Returns the PSCI result
   (PSCI_INVALID_PARAMETERS without a call if Aff0 >= RT_MAX_CPUS or Aff1-3 are not 0). */
int32_t smp_start_cpu(uint64_t mpidr, smp_fn fn, void *arg);
/* The CPUs' MPIDR affinities into mpidrs[0..max), max <= RT_MAX_CPUS; returns how many (at most max).
   From the DTB's /cpus if there is one (*from_dtb = 1; QEMU gives none to an ELF linked at 0x40080000);
   otherwise PSCI AFFINITY_INFO of Aff0 = 0, 1, ... until it returns an error (*from_dtb = 0). */
int smp_find_cpus(uint64_t dtb, uint64_t *mpidrs, int max, int *from_dtb);
/* the entry point that smp_start_cpu gives PSCI (for a direct psci_cpu_on) */
void _start_secondary(void);

/* Spinlock (LDAXR/STXR, released by STLR). Exclusives need Normal memory: turn the MMU on first.
   Holds the owner's id + 1 (0: free, so a zeroed one is unlocked); a lock not obtained within 10 s
   prints "FAIL spinlock: ..." and exits with RT_EXIT_TIMEOUT. */
typedef struct {
    volatile uint32_t owner;
} spinlock_t;
int spin_trylock(spinlock_t *l);
void spin_lock(spinlock_t *l);
void spin_unlock(spinlock_t *l);

/* atomic read-modify-write (LDAXR/STLXR): return the new value */
uint32_t atomic_add32(volatile uint32_t *p, uint32_t v);
uint64_t atomic_add64(volatile uint64_t *p, uint64_t v);

/* Sense-reversing barrier for n CPUs; 0, or -1 if not all arrived within ms. */
struct smp_barrier {
    volatile uint32_t count, generation;
};
int smp_barrier_wait(struct smp_barrier *b, unsigned n, uint64_t ms);

/* printf under a lock with IRQs masked, so lines from several CPUs do not mix. Do not call it from
   an IRQ handler that may interrupt printf on the same CPU. */
__attribute__((format(printf, 1, 2))) int cpu_printf(const char *fmt, ...);
uint64_t cpu_print_begin(void);     /* takes that lock (IRQs masked) for several printf calls */
void cpu_print_end(uint64_t flags); /* and gives it back */

/* ---- test verdicts (rt/check.c) ---- */
/* Every failed check prints "FAIL <name>: <message>" at once (safe from any CPU); test_end() prints
   "PASS <name>" or "FAIL <name>: N check(s) failed" and returns the exit status (0 or 1). They print
   through cpu_printf's spinlock: turn the MMU on first. */
void test_begin(const char *name);
/* test_begin(), IRQs masked, the default MMU on and gic_init(); -1 (and a FAIL line) if the GIC fails. */
int test_begin_gic(const char *name);
__attribute__((format(printf, 2, 3))) int test_check(int ok, const char *fmt, ...); /* returns ok */
__attribute__((format(printf, 1, 2))) void test_fail(const char *fmt, ...);
void test_failv(const char *fmt, va_list ap);
int test_failures(void);
int test_end(void);

/* ---- device tree (rt/fdt.c): read-only, just what the guests need ---- */
/* The DTB: x0 if it holds one, else the start of RAM if it holds one (QEMU puts it there for a
   non-Linux kernel only if it fits below the image: not for these guests); 0 if none. */
uintptr_t fdt_find(uint64_t x0);
/* The `reg` (MPIDR affinity) of each /cpus/cpu@N node into mpidrs[0..max); returns how many there are
   (possibly more than max), or -1 if the DTB is malformed or has no /cpus. */
int fdt_cpus(uintptr_t fdt, uint64_t *mpidrs, int max);
/* Property `prop` of the node at absolute `path` ("/chosen", "/cpus/cpu@0"; "/" is the root): its value
   (big-endian, as stored) and length in *len, or 0 if there is no such node or property. */
const void *fdt_getprop(uintptr_t fdt, const char *path, const char *prop, uint32_t *len);

/* ---- virtio-mmio v2 (rt/virtio.c): polled split virtqueues, one request in flight ---- */
/* QEMU virt and vmmpy: 32 transports of 0x200 bytes from 0x0A000000, slot n on SPI 16 + n (INTID 48 + n).
   Only version 2 (non-legacy) transports and devices offering VIRTIO_F_VERSION_1 are driven. */
#define VIRTIO_MMIO_BASE 0x0A000000UL
#define VIRTIO_MMIO_STRIDE 0x200UL
#define VIRTIO_MMIO_SLOTS 32
#define VIRTIO_MMIO_INTID(slot) (48 + (slot))
#define VIRTIO_MMIO_CONFIG 0x100 /* device-specific configuration space */
#define VIRTIO_ID_GPU 16
#define VIRTIO_F_VERSION_1 32
#define VIRTQ_SIZE 8 /* entries per queue (less if the device's QueueNumMax is smaller) */
#define VIRTIO_MAX_QUEUES 2

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};
struct virtq_used_elem {
    uint32_t id, len;
};
/* one split virtqueue: the three rings (Virtio 1.1, 2.6) and the driver's position in them */
struct virtq {
    struct virtq_desc desc[VIRTQ_SIZE] __attribute__((aligned(16)));
    struct {
        uint16_t flags, idx, ring[VIRTQ_SIZE], used_event;
    } avail __attribute__((aligned(2)));
    struct {
        uint16_t flags, idx;
        struct virtq_used_elem ring[VIRTQ_SIZE];
        uint16_t avail_event;
    } used __attribute__((aligned(4)));
    uint16_t size, last_used;
} __attribute__((aligned(64)));

struct virtio_dev {
    uintptr_t base; /* the transport's registers (virtio-mmio) */
    int slot;       /* virtio-mmio slot, or PCI slot on bus 0 */
    int pci;        /* virtio-pci: where its structures are (rt/pci.c) */
    uintptr_t common, isr, device, notify;
    uint32_t notify_mult;
    uint32_t device_id, vendor_id;
    uint64_t features; /* negotiated */
    unsigned nqueues;  /* set up by virtio_queue_setup */
    struct virtq queue[VIRTIO_MAX_QUEUES];
};

/* The first slot >= from whose transport is version 2 with that device id, or -1. A transport with
   the device but version 1 (legacy; QEMU without -global virtio-mmio.force-legacy=false) is skipped
   with a "virtio: ..." line. */
int virtio_find(uint32_t device_id, int from);
/* Reset, ACKNOWLEDGE | DRIVER, features = VERSION_1 | (offered & wanted), FEATURES_OK (checked).
   0, or -1 after a "virtio: ..." line (status FAILED set). */
int virtio_init(struct virtio_dev *d, int slot, uint64_t wanted);
/* The first device of that id: on virtio-mmio (virtio_find), else on PCI bus 0 (virtio_pci_open), then
   negotiated as virtio_init does. 0, or -1 after a line. */
int virtio_open(struct virtio_dev *d, uint32_t device_id, uint64_t wanted);
/* Queue `index` with min(VIRTQ_SIZE, QueueNumMax) entries in d's static rings; 0 or -1 (+ a line). */
int virtio_queue_setup(struct virtio_dev *d, unsigned index);
/* DRIVER_OK; 0, or -1 if the device asked for a reset (DEVICE_NEEDS_RESET). */
int virtio_driver_ok(struct virtio_dev *d);
/* Submits a 2-descriptor chain (req: device-readable, resp: device-writable) on queue `index`, notifies,
   and polls the used ring up to timeout_ms (acknowledging InterruptStatus). Returns the number of bytes
   the device wrote, or -1 on timeout (+ a line). */
int virtio_request(struct virtio_dev *d, unsigned index, const void *req, uint32_t req_len, void *resp,
                   uint32_t resp_len, uint64_t timeout_ms);
uint32_t virtio_config_read32(struct virtio_dev *d, unsigned offset);
void virtio_config_write32(struct virtio_dev *d, unsigned offset, uint32_t v);
void virtio_reset(struct virtio_dev *d);

/* ---- PCI (rt/pci.c): bus 0 of a generic ECAM host, memory BARs, virtio-pci modern ---- */
/* QEMU virt (highmem-ecam=off) and vmmpy --transport pci: ECAM at 0x3F000000, the 32-bit MMIO
   window 0x10000000-0x3EFEFFFF; INTA# of slot s on SPI 3 + s % 4 (INTID 35 + s % 4). */
#define PCI_ECAM_BASE 0x3F000000UL
#define PCI_MMIO_BASE 0x10000000UL
#define PCI_MMIO_END 0x3EFF0000UL
#define PCI_INTX_INTID(slot) (35 + (slot) % 4)

static inline uint8_t mmio_read8(uintptr_t a)
{
    uint32_t v;
    __asm__ volatile("ldrb %w0, [%1]" : "=r"(v) : "r"(a) : "memory");
    return (uint8_t)v;
}
static inline uint16_t mmio_read16(uintptr_t a)
{
    uint32_t v;
    __asm__ volatile("ldrh %w0, [%1]" : "=r"(v) : "r"(a) : "memory");
    return (uint16_t)v;
}
static inline void mmio_write8(uintptr_t a, uint8_t v)
{
    __asm__ volatile("strb %w0, [%1]" ::"r"((uint32_t)v), "r"(a) : "memory");
}
static inline void mmio_write16(uintptr_t a, uint16_t v)
{
    __asm__ volatile("strh %w0, [%1]" ::"r"((uint32_t)v), "r"(a) : "memory");
}

/* config space of 00:slot.0 */
uint32_t pci_cfg_read32(unsigned slot, unsigned off);
uint16_t pci_cfg_read16(unsigned slot, unsigned off);
uint8_t pci_cfg_read8(unsigned slot, unsigned off);
void pci_cfg_write32(unsigned slot, unsigned off, uint32_t v);
void pci_cfg_write16(unsigned slot, unsigned off, uint16_t v);

struct pci_bar {
    uint64_t size, addr; /* size 0: no such BAR (or the upper half of a 64-bit one) */
    int is64;
};
/* Sizes BAR `bar` (all ones, read back, restore; §6.2.5.1 of PCI 3.0); 64-bit BARs take two. */
struct pci_bar pci_bar_size(unsigned slot, unsigned bar);
/* Programs the BAR with addr (a multiple of its size); returns what the BAR then reads back. */
uint64_t pci_bar_set(unsigned slot, unsigned bar, const struct pci_bar *b, uint64_t addr);
/* A bump allocator over the 32-bit window: the next free address aligned to size (0 if full). */
uint64_t pci_mmio_alloc(uint64_t size);
/* Offset of the first capability with this ID at or after `from` (0: from the list head), or 0. */
unsigned pci_find_cap(unsigned slot, uint8_t id, unsigned from);

/* A virtio-pci modern device (virtio 1.2 §4.1): where its structures are, once the BARs are set. */
struct virtio_pci {
    unsigned slot;
    uintptr_t bar_addr[6];
    uintptr_t common, isr, device, notify;
    uint32_t notify_mult;
    uint64_t features;
    struct virtq q;
};
/* Read the vendor capabilities (BARs must be programmed and decoding); 0, or -1 + a line. */
int virtio_pci_caps(struct virtio_pci *d);
/* Reset, ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK; queue 0 (VIRTQ_SIZE entries or fewer) enabled with
   MSI-X vector `vec` (0xffff: none); DRIVER_OK. 0, or -1 + a line. */
int virtio_pci_init(struct virtio_pci *d, uint16_t vec);
/* For rt/virtio.c's devices on PCI: find 1af4:(1040 + device_id) on bus 0, place its BARs, enable it
   and read its capabilities into d (d->pci set). 0, or -1 after a line. */
int virtio_pci_open(struct virtio_dev *d, uint32_t device_id);
/* The virtio-mmio register at `mmio_off` (rt/virtio.c's names), done the virtio-pci way: the common
   config's field, the ISR (read clears; InterruptACK does nothing), a notification, device config. */
uint32_t virtio_pci_reg_read(struct virtio_dev *d, unsigned mmio_off);
void virtio_pci_reg_write(struct virtio_dev *d, unsigned mmio_off, uint32_t v);
/* One device-writable buffer on queue 0 and its notification (no wait). */
void virtio_pci_submit(struct virtio_pci *d, void *buf, uint32_t len);
/* Bytes written in the next used element of queue 0, or -1 if there is none yet. */
int virtio_pci_used(struct virtio_pci *d);

/* ---- virtio-gpu 2D (rt/virtio_gpu.c): one resource shown on one scanout ---- */
#define VIRTIO_GPU_FORMAT_B8G8R8X8 2 /* bytes B, G, R, X: a pixel is the uint32_t 0x00RRGGBB */
#define GPU_RGB(r, g, b) (((uint32_t)(r) << 16) | ((uint32_t)(g) << 8) | (uint32_t)(b))

struct gpu {
    struct virtio_dev dev;
    uint32_t scanout, width, height; /* the first enabled scanout's mode (GET_DISPLAY_INFO) */
    uint32_t resource;               /* 0 until gpu_setup_framebuffer */
    uint32_t *fb;                    /* width * height pixels, row-major, stride width * 4 */
    uint32_t num_scanouts;
};
/* Finds the device, negotiates, sets up the control queue and DRIVER_OK, then GET_DISPLAY_INFO.
   0, or -1 after a "FAIL <test>: ..." line (test_fail). */
int gpu_init(struct gpu *g);
/* RESOURCE_CREATE_2D (B8G8R8X8, g->width x g->height), ATTACH_BACKING of fb (width * height * 4 bytes
   of guest RAM), SET_SCANOUT. 0 or -1 (+ a FAIL line). */
int gpu_setup_framebuffer(struct gpu *g, uint32_t *fb);
/* TRANSFER_TO_HOST_2D then RESOURCE_FLUSH of a rectangle: one frame for the host. 0 or -1 (+ FAIL). */
int gpu_flush(struct gpu *g, uint32_t x, uint32_t y, uint32_t w, uint32_t h);

/* ---- 5x7 bitmap font (rt/font.c): ASCII 32..126 ---- */
#define FONT_GLYPH_W 5
#define FONT_GLYPH_H 7
#define FONT_W 6 /* a character cell: the glyph, one blank column and one blank row */
#define FONT_H 8
/* Row `row` of c's glyph as FONT_GLYPH_W bits, the leftmost column in bit FONT_GLYPH_W - 1; 0 for rows
   outside the glyph and characters outside 32..126. */
unsigned font_row(char c, unsigned row);

/* ---- exit ---- */
/* 0: PSCI SYSTEM_OFF; otherwise a semihosting exit with that status, SYSTEM_OFF as the fallback.
   Returning from main(dtb) calls guest_exit() with main's return value. */
__attribute__((noreturn)) void guest_exit(int code);
#define RT_EXIT_EXCEPTION 3
#define RT_EXIT_TIMEOUT 4 /* a runtime wait that cannot fail gracefully (spinlock, atomics) ran out */

int main(uint64_t dtb);

/* linker symbols (rt/link.ld) */
extern char __user_start[], __user_end[];

#endif
