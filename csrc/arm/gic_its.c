/*
 * gic_its.c - the GICv3 Interrupt Translation Service (IHI0069 §5.2-5.3): GITS_* registers, the
 * command queue and the translation of (DeviceID, EventID) into an LPI on a redistributor.
 *
 * Two 64 KiB frames at LAYOUT_GITS_BASE: the control frame (GITS_CTLR .. GITS_BASER<n>) and the
 * translation frame (GITS_TRANSLATER at +0x10040). Everything runs under the GIC state lock. A
 * CWRITER write runs up to ITS_BATCH commands before it returns; each read of GITS_CREADR or
 * GITS_CTLR runs the next batch (drivers poll CREADR until it reaches CWRITER), so a guest can hold
 * the lock for one batch at a time, not for a whole 1 MiB queue of INVALLs and MOVALLs.
 * GITS_CTLR.Quiescent reads 0 while commands remain; a command that completed has taken full effect,
 * so SYNC has nothing to wait for.
 *
 * Tables (formats IMPLEMENTATION DEFINED, §5.2): 8-byte entries, flat or two-level
 * (GITS_BASER.Indirect is writable), 4, 16 or 64 KiB pages, all in guest RAM and bounds-checked
 * on every access; nothing is cached.
 *   device table entry:     Valid [63], ITT address [51:8], EventID bits - 1 [4:0]
 *   collection table entry: Valid [63], target processor number [15:0] (GITS_TYPER.PTA = 0)
 *   ITT entry:              Valid [63], ICID [47:32], pINTID [31:0]
 *
 * Command errors: GITS_TYPER.SEIS = 0 (no SError). Every error a command can have (§5.3, each
 * command's "errors") stalls the queue: GITS_CREADR.Stalled = 1 with CREADR at the failing command,
 * a guest error logged naming it. Writing GITS_CWRITER with Retry = 1 runs it again; writing
 * GITS_CBASER (ITS disabled) restarts the queue at 0. Translation errors (GITS_TRANSLATER, MSIs)
 * drop the interrupt, with a guest error.
 */
#include <inttypes.h>
#include <string.h>

#include "../core/layout.h"
#include "../core/snapshot.h"
#include "gic_internal.h"

enum {
    GITS_CTLR = 0x0000,
    GITS_IIDR = 0x0004,
    GITS_TYPER = 0x0008,
    GITS_CBASER = 0x0080,
    GITS_CWRITER = 0x0088,
    GITS_CREADR = 0x0090,
    GITS_BASER = 0x0100, /* + 8n, n = 0..7 */
    GITS_BASER_END = 0x0140,
    GITS_TRANSLATER = 0x10040,
};
_Static_assert(LAYOUT_GITS_BASE + GITS_TRANSLATER == LAYOUT_GITS_TRANSLATER, "the doorbell is GITS_TRANSLATER");

#define BLOCK "its"
#define GITS_PIDR0 0x94
#define GITS_CTLR_ENABLED (1u << 0)
#define GITS_CTLR_QUIESCENT (1u << 31)

/* ID sizes we advertise in GITS_TYPER */
#define DEV_BITS 16
#define EVENT_BITS 16
#define ICID_BITS 16 /* CIL = 0 */
#define ENTRY_SIZE 8 /* every table and the ITT */

/*
 * GITS_TYPER: Physical, ITT_entry_size 8, ID_bits 16, Devbits 16, SEIS 0, PTA 0 (RDbase is a
 * processor number), HCC 0 (every collection lives in the collection table), CIL 0.
 */
#define TYPER_VALUE (1ull | (ENTRY_SIZE - 1ull) << 4 | (EVENT_BITS - 1ull) << 8 | (DEV_BITS - 1ull) << 13)

/* GITS_CBASER: Valid [63], InnerCache [61:59], OuterCache [55:53], PA [51:12], Shareability [11:10], Size [7:0] */
#define CBASER_MASK 0xb8effffffffffcffull
#define CBASER_VALID (1ull << 63)
#define CBASER_PA(v) ((v)&0x000ffffffffff000ull)
#define CBASER_BYTES(v) ((((v)&0xff) + 1) * 4096u)
#define CMD_OFFSET_MASK 0xfffe0ull /* CWRITER/CREADR Offset [19:5] */
#define CWRITER_RETRY 1ull
#define CREADR_STALLED 1ull

/* GITS_BASER<n>: Valid, Indirect, InnerCache, Type (RO), OuterCache, Entry_Size (RO), PA [47:12], Shareability,
   Page_Size [9:8], Size [7:0] */
#define BASER_MASK 0xf8e0ffffffffffffull
#define BASER_RO_MASK 0x071f000000000000ull
#define BASER_VALID (1ull << 63)
#define BASER_INDIRECT (1ull << 62)
#define BASER_TYPE_DEVICE 1ull
#define BASER_TYPE_COLLECTION 4ull
#define BASER_PAGE_SIZE(v) (((v) >> 8) & 3)
#define BASER_PAGES(v) (((v)&0xff) + 1)

#define ENTRY_VALID (1ull << 63)
#define L1_PA(v) ((v)&0x000ffffffffff000ull)
#define DTE_ITT(v) ((v)&0x000fffffffffff00ull)
#define DTE_SIZE(v) ((unsigned)((v)&0x1f))

/* Commands (§5.3): 32 bytes, opcode in DW0 [7:0] */
enum {
    CMD_MOVI = 0x01,
    CMD_INT = 0x03,
    CMD_CLEAR = 0x04,
    CMD_SYNC = 0x05,
    CMD_MAPD = 0x08,
    CMD_MAPC = 0x09,
    CMD_MAPTI = 0x0a,
    CMD_MAPI = 0x0b,
    CMD_INV = 0x0c,
    CMD_INVALL = 0x0d,
    CMD_MOVALL = 0x0e,
    CMD_DISCARD = 0x0f,
};
#define CMD_SIZE 32
#define ITS_BATCH 256 /* commands per register access (a MOVALL moves at most GIC_NR_LPI pending bits) */

/* What can go wrong with a command or a translation; stored in gic_its.last_error (the snapshot keeps it). */
enum its_error {
    ITS_OK = 0,
    E_QUEUE_MEM,   /* the command queue is not in RAM */
    E_CWRITER_OOR, /* GITS_CWRITER beyond the queue */
    E_UNKNOWN_CMD,
    E_DEVICE_OOR, /* DeviceID beyond Devbits or the device table */
    E_DEVICE_UNMAPPED,
    E_SIZE_OOR,  /* MAPD Size beyond ID_bits */
    E_EVENT_OOR, /* EventID beyond the device's ITT size */
    E_ITE_UNMAPPED,
    E_LPI_OOR,  /* pINTID not an LPI we implement */
    E_ICID_OOR, /* ICID beyond the collection table */
    E_COLLECTION_UNMAPPED,
    E_RDBASE_OOR,   /* no such processor */
    E_TABLE_MEM,    /* a table entry (or a level-2 page) is not in RAM */
    E_TABLE_ABSENT, /* GITS_BASER<n> not valid */
    E_DISABLED,     /* translation while GITS_CTLR.Enabled = 0 */
    E_NR,
};

static const char *const error_text[E_NR] = {
    [E_QUEUE_MEM] = "the command queue is not in RAM",
    [E_CWRITER_OOR] = "GITS_CWRITER is beyond the command queue",
    [E_UNKNOWN_CMD] = "unknown command",
    [E_DEVICE_OOR] = "DeviceID out of range",
    [E_DEVICE_UNMAPPED] = "device not mapped",
    [E_SIZE_OOR] = "MAPD Size beyond 16 EventID bits",
    [E_EVENT_OOR] = "EventID out of range for the device",
    [E_ITE_UNMAPPED] = "event not mapped",
    [E_LPI_OOR] = "pINTID is not an LPI (8192..65535)",
    [E_ICID_OOR] = "ICID out of range",
    [E_COLLECTION_UNMAPPED] = "collection not mapped",
    [E_RDBASE_OOR] = "RDbase names no redistributor",
    [E_TABLE_MEM] = "a table entry is not in RAM",
    [E_TABLE_ABSENT] = "the table's GITS_BASER is not valid",
    [E_DISABLED] = "the ITS is disabled",
};

struct cmd {
    uint64_t dw[4];
};

/* An interrupt translation table entry, as read. */
struct ite {
    uint64_t gpa; /* where it lives */
    unsigned intid;
    unsigned icid;
};

/* ---- guest memory: 8-byte little-endian entries, bounds-checked ------------- */

static int read64(struct vmm_gic *g, uint64_t gpa, uint64_t *val)
{
    const uint8_t *p = vmm__gpa_ptr(g->vm, gpa, 8);

    if (!p)
        return E_TABLE_MEM;
    *val = 0;
    for (unsigned i = 0; i < 8; i++)
        *val |= (uint64_t)p[i] << (8 * i);
    return ITS_OK;
}

static int write64(struct vmm_gic *g, uint64_t gpa, uint64_t val)
{
    uint8_t *p = vmm__gpa_ptr(g->vm, gpa, 8);

    if (!p)
        return E_TABLE_MEM;
    for (unsigned i = 0; i < 8; i++)
        p[i] = (uint8_t)(val >> (8 * i));
    return ITS_OK;
}

/* ---- the device and collection tables (GITS_BASER0, GITS_BASER1) ------------- */

static uint64_t page_bytes(uint64_t baser)
{
    static const uint64_t sizes[4] = { 4096, 16384, 65536, 65536 };
    return sizes[BASER_PAGE_SIZE(baser)];
}

/* The table's base: PA [47:12]; with 64 KiB pages bits [15:12] hold PA [51:48]. */
static uint64_t baser_pa(uint64_t baser)
{
    uint64_t pa = baser & 0x0000fffffffff000ull;

    if (BASER_PAGE_SIZE(baser) >= 2)
        pa = (pa & ~0xffffull) | (pa & 0xf000ull) << 36;
    return pa;
}

/*
 * The guest address of entry `id` of table n (0: devices, 1: collections). For a two-level table
 * the level-1 entry (Valid [63], level-2 page address [51:12]) must be valid to read; `alloc` is not
 * ours to do: a missing level-2 page is E_DEVICE_OOR / E_ICID_OOR for the caller.
 */
static int table_entry(struct vmm_gic *g, unsigned n, uint64_t id, uint64_t *gpa)
{
    uint64_t baser = g->its.baser[n], psz = page_bytes(baser), bytes = BASER_PAGES(baser) * psz, l1;
    int oor = n == 0 ? E_DEVICE_OOR : E_ICID_OOR, rc;

    if (!(baser & BASER_VALID))
        return E_TABLE_ABSENT;
    if (!(baser & BASER_INDIRECT)) {
        if (id >= bytes / ENTRY_SIZE)
            return oor;
        *gpa = baser_pa(baser) + id * ENTRY_SIZE;
        return ITS_OK;
    }
    if (id / (psz / ENTRY_SIZE) >= bytes / 8)
        return oor;
    if ((rc = read64(g, baser_pa(baser) + id / (psz / ENTRY_SIZE) * 8, &l1)))
        return rc;
    if (!(l1 & ENTRY_VALID))
        return oor;
    *gpa = L1_PA(l1) + id % (psz / ENTRY_SIZE) * ENTRY_SIZE;
    return ITS_OK;
}

/* A valid device table entry for devid. */
static int device(struct vmm_gic *g, uint32_t devid, uint64_t *dte)
{
    uint64_t gpa;
    int rc;

    if (devid >= 1u << DEV_BITS)
        return E_DEVICE_OOR;
    if ((rc = table_entry(g, 0, devid, &gpa)) || (rc = read64(g, gpa, dte)))
        return rc;
    return *dte & ENTRY_VALID ? ITS_OK : E_DEVICE_UNMAPPED;
}

/* The processor a mapped collection targets. */
static int collection(struct vmm_gic *g, unsigned icid, unsigned *cpu)
{
    uint64_t gpa, cte;
    int rc;

    if (icid >= 1u << ICID_BITS)
        return E_ICID_OOR;
    if ((rc = table_entry(g, 1, icid, &gpa)) || (rc = read64(g, gpa, &cte)))
        return rc;
    if (!(cte & ENTRY_VALID))
        return E_COLLECTION_UNMAPPED;
    *cpu = (unsigned)(cte & 0xffff);
    return *cpu < g->ncpus ? ITS_OK : E_RDBASE_OOR;
}

/* The ITT entry slot of (devid, eventid), valid or not. */
static int ite_slot(struct vmm_gic *g, uint32_t devid, uint32_t eventid, uint64_t *gpa)
{
    uint64_t dte;
    int rc;

    if ((rc = device(g, devid, &dte)))
        return rc;
    if (eventid >= 1ull << (DTE_SIZE(dte) + 1))
        return E_EVENT_OOR;
    *gpa = DTE_ITT(dte) + (uint64_t)eventid * ENTRY_SIZE;
    return ITS_OK;
}

/* A valid ITT entry, and (if cpu is not NULL) the processor its collection targets. */
static int lookup(struct vmm_gic *g, uint32_t devid, uint32_t eventid, struct ite *e, unsigned *cpu)
{
    uint64_t v;
    int rc;

    if ((rc = ite_slot(g, devid, eventid, &e->gpa)) || (rc = read64(g, e->gpa, &v)))
        return rc;
    if (!(v & ENTRY_VALID))
        return E_ITE_UNMAPPED;
    e->intid = (unsigned)(v & 0xffffffff);
    e->icid = (unsigned)((v >> 32) & 0xffff);
    return cpu ? collection(g, e->icid, cpu) : ITS_OK;
}

static uint64_t ite_value(unsigned intid, unsigned icid)
{
    return ENTRY_VALID | (uint64_t)icid << 32 | intid;
}

/* ---- commands (§5.3) ------------------------------------------------------------- */

static uint32_t cmd_devid(const struct cmd *c)
{
    return (uint32_t)(c->dw[0] >> 32);
}

static uint32_t cmd_eventid(const struct cmd *c)
{
    return (uint32_t)c->dw[1];
}

static unsigned cmd_icid(const struct cmd *c)
{
    return (unsigned)(c->dw[2] & 0xffff);
}

/* RDbase [51:16]; with PTA = 0 a processor number */
static int rdbase(struct vmm_gic *g, uint64_t dw, unsigned *cpu)
{
    uint64_t n = (dw >> 16) & 0xfffffffffull;

    if (n >= g->ncpus)
        return E_RDBASE_OOR;
    *cpu = (unsigned)n;
    return ITS_OK;
}

/* MAPD: DeviceID, Size [4:0] of DW1, ITT_addr [51:8] and V [63] of DW2 */
static int cmd_mapd(struct vmm_gic *g, const struct cmd *c)
{
    unsigned size = (unsigned)(c->dw[1] & 0x1f);
    bool valid = c->dw[2] & ENTRY_VALID;
    uint64_t gpa;
    int rc;

    if (cmd_devid(c) >= 1u << DEV_BITS)
        return E_DEVICE_OOR;
    if (valid && size + 1 > EVENT_BITS)
        return E_SIZE_OOR;
    if ((rc = table_entry(g, 0, cmd_devid(c), &gpa)))
        return rc;
    return write64(g, gpa, valid ? ENTRY_VALID | DTE_ITT(c->dw[2]) | size : 0);
}

/* MAPC: ICID [15:0], RDbase [51:16], V [63] of DW2 */
static int cmd_mapc(struct vmm_gic *g, const struct cmd *c)
{
    bool valid = c->dw[2] & ENTRY_VALID;
    unsigned cpu = 0;
    uint64_t gpa;
    int rc;

    if (valid && (rc = rdbase(g, c->dw[2], &cpu)))
        return rc;
    if ((rc = table_entry(g, 1, cmd_icid(c), &gpa)))
        return rc;
    return write64(g, gpa, valid ? ENTRY_VALID | cpu : 0);
}

/* MAPTI (pINTID in DW1 [63:32]) and MAPI (pINTID = EventID): the collection need not be mapped yet */
static int cmd_mapti(struct vmm_gic *g, const struct cmd *c, bool mapi)
{
    uint32_t intid = mapi ? cmd_eventid(c) : (uint32_t)(c->dw[1] >> 32);
    uint64_t gpa, cte_gpa;
    int rc;

    if ((rc = ite_slot(g, cmd_devid(c), cmd_eventid(c), &gpa)))
        return rc;
    if (intid < GIC_LPI_BASE || intid >= GIC_LPI_MAX)
        return E_LPI_OOR;
    if ((rc = table_entry(g, 1, cmd_icid(c), &cte_gpa)))
        return rc;
    return write64(g, gpa, ite_value(intid, cmd_icid(c)));
}

/*
 * INV and INVALL name one redistributor, but every redistributor caches the (normally shared)
 * configuration table and a later MOVI/MOVALL must not find a stale copy: all of them re-read it.
 */
static void invalidate(struct vmm_gic *g, unsigned intid)
{
    for (unsigned c = 0; c < g->ncpus; c++)
        vmm__gic_lpi_invalidate(g, c, intid);
}

/* INT, CLEAR, DISCARD, INV: an event's LPI on its collection's redistributor */
static int cmd_event(struct vmm_gic *g, const struct cmd *c, unsigned op)
{
    struct ite e;
    unsigned cpu;
    int rc;

    if ((rc = lookup(g, cmd_devid(c), cmd_eventid(c), &e, &cpu)))
        return rc;
    switch (op) {
    case CMD_INT:
        vmm__gic_lpi_set_pending(g, cpu, e.intid, true);
        return ITS_OK;
    case CMD_INV:
        invalidate(g, e.intid);
        return ITS_OK;
    case CMD_DISCARD:
        vmm__gic_lpi_set_pending(g, cpu, e.intid, false);
        return write64(g, e.gpa, 0);
    default: /* CMD_CLEAR */
        vmm__gic_lpi_set_pending(g, cpu, e.intid, false);
        return ITS_OK;
    }
}

/* MOVI: the event moves to collection ICID; a pending LPI moves with it */
static int cmd_movi(struct vmm_gic *g, const struct cmd *c)
{
    struct ite e;
    unsigned from, to;
    int rc;

    if ((rc = lookup(g, cmd_devid(c), cmd_eventid(c), &e, &from)) || (rc = collection(g, cmd_icid(c), &to)))
        return rc;
    if (from != to && vmm__gic_lpi_pending(g, from, e.intid)) {
        vmm__gic_lpi_set_pending(g, from, e.intid, false);
        vmm__gic_lpi_set_pending(g, to, e.intid, true);
    }
    return write64(g, e.gpa, ite_value(e.intid, cmd_icid(c)));
}

static int run_command(struct vmm_gic *g, const struct cmd *c, bool *invall)
{
    unsigned op = (unsigned)(c->dw[0] & 0xff), cpu, to;
    int rc;

    switch (op) {
    case CMD_MAPD:
        return cmd_mapd(g, c);
    case CMD_MAPC:
        return cmd_mapc(g, c);
    case CMD_MAPTI:
    case CMD_MAPI:
        return cmd_mapti(g, c, op == CMD_MAPI);
    case CMD_INT:
    case CMD_CLEAR:
    case CMD_DISCARD:
    case CMD_INV:
        return cmd_event(g, c, op);
    case CMD_MOVI:
        return cmd_movi(g, c);
    case CMD_INVALL: /* every LPI (of the collection's redistributor, and the others: see invalidate()) */
        if ((rc = collection(g, cmd_icid(c), &cpu)))
            return rc;
        *invall = true; /* once per batch, after it: nothing reads the cache before */
        return ITS_OK;
    case CMD_SYNC: /* every earlier command has taken effect already */
        return rdbase(g, c->dw[2], &cpu);
    case CMD_MOVALL: /* RDbase1 in DW2, RDbase2 in DW3 */
        if ((rc = rdbase(g, c->dw[2], &cpu)) || (rc = rdbase(g, c->dw[3], &to)))
            return rc;
        vmm__gic_lpi_move_all(g, cpu, to);
        return ITS_OK;
    default: /* GICv4 commands (VMAPP, VSYNC, ...) and undefined opcodes */
        return E_UNKNOWN_CMD;
    }
}

static int read_command(struct vmm_gic *g, uint64_t gpa, struct cmd *c)
{
    for (unsigned i = 0; i < 4; i++)
        if (read64(g, gpa + 8 * i, &c->dw[i]))
            return E_QUEUE_MEM;
    return ITS_OK;
}

static void stall(struct vmm_gic *g, int err, const struct cmd *c)
{
    struct gic_its *its = &g->its;

    its->stalled = true;
    its->last_error = (unsigned)err;
    vmm__guest_error(g->vm, "gic",
                     "its: command 0x%02x at queue offset 0x%05" PRIx64 " (DeviceID %u, EventID %u): %s; "
                     "the queue stalls (GITS_CREADR.Stalled)",
                     c ? (unsigned)(c->dw[0] & 0xff) : 0u, its->creadr, c ? cmd_devid(c) : 0u, c ? cmd_eventid(c) : 0u,
                     error_text[err]);
}

static bool queue_live(const struct gic_its *its)
{
    return its->enabled && (its->cbaser & CBASER_VALID) && !its->stalled;
}

/* Run up to ITS_BATCH commands from CREADR towards CWRITER; each completes (or stalls the queue) before the next. */
static void run_batch(struct vmm_gic *g)
{
    struct gic_its *its = &g->its;
    uint64_t bytes = CBASER_BYTES(its->cbaser);
    bool invall = false;
    struct cmd c;
    int rc = ITS_OK;

    for (unsigned n = 0; n < ITS_BATCH && its->creadr != its->cwriter; n++) {
        if ((rc = read_command(g, CBASER_PA(its->cbaser) + its->creadr, &c))) {
            stall(g, rc, NULL);
            break;
        }
        if ((rc = run_command(g, &c, &invall))) {
            stall(g, rc, &c);
            break;
        }
        its->creadr = (its->creadr + CMD_SIZE) % bytes;
    }
    if (invall)
        invalidate(g, 0);
}

static void process(struct vmm_gic *g)
{
    struct gic_its *its = &g->its;

    if (!queue_live(its) || its->creadr == its->cwriter)
        return;
    if (its->cwriter >= CBASER_BYTES(its->cbaser)) {
        stall(g, E_CWRITER_OOR, NULL);
        return;
    }
    run_batch(g);
}

/* ---- translation: GITS_TRANSLATER and MSIs (§5.2) ----------------------------- */

static void translate(struct vmm_gic *g, uint32_t devid, uint32_t eventid)
{
    struct ite e;
    unsigned cpu;
    int rc = g->its.enabled ? lookup(g, devid, eventid, &e, &cpu) : E_DISABLED;

    if (rc) {
        g->its.last_error = (unsigned)rc;
        vmm__guest_error(g->vm, "gic", "its: MSI from DeviceID %u, EventID %u dropped: %s", devid, eventid,
                         error_text[rc]);
        return;
    }
    vmm__gic_lpi_set_pending(g, cpu, e.intid, true);
}

int vmm__gic_msi(struct vmm_gic *g, uint64_t doorbell, uint32_t data, uint32_t devid)
{
    if (doorbell != LAYOUT_GITS_TRANSLATER) {
        vmm__guest_error(g->vm, "gic", "MSI from DeviceID %u to 0x%" PRIx64 ", which is not GITS_TRANSLATER: dropped",
                         devid, doorbell);
        return 0;
    }
    vmm__gic_lock(g);
    translate(g, devid, data);
    vmm__gic_unlock(g);
    return 0;
}

/* ---- registers ------------------------------------------------------------------ */

static uint64_t baser_reset(unsigned n)
{
    uint64_t type = n == 0 ? BASER_TYPE_DEVICE : BASER_TYPE_COLLECTION;
    return type << 56 | (ENTRY_SIZE - 1ull) << 48;
}

/* 64-bit registers take 32-bit accesses to either half */
static uint64_t half(uint64_t r, uint64_t off, unsigned size)
{
    return size == 8 ? r : (uint32_t)(r >> (off & 4 ? 32 : 0));
}

static uint64_t merge(uint64_t old, uint64_t off, unsigned size, uint64_t val)
{
    unsigned shift = off & 4 ? 32 : 0;
    return size == 8 ? val : (old & ~(0xffffffffull << shift)) | (val & 0xffffffffull) << shift;
}

static bool its_read(struct vmm_gic *g, uint64_t off, unsigned size, uint64_t *val)
{
    struct gic_its *its = &g->its;
    uint64_t reg = off & ~7ull;

    *val = 0;
    if (off == GITS_CTLR || reg == GITS_CREADR)
        process(g); /* the next batch of a long queue */
    if (off == GITS_CTLR) {
        bool busy = queue_live(its) && its->creadr != its->cwriter;
        *val = (busy ? 0 : GITS_CTLR_QUIESCENT) | (its->enabled ? GITS_CTLR_ENABLED : 0);
    } else if (off == GITS_IIDR) {
        *val = GIC_IIDR;
    } else if (reg == GITS_TYPER) {
        *val = half(TYPER_VALUE, off, size);
    } else if (reg == GITS_CBASER) {
        *val = half(its->cbaser, off, size);
    } else if (reg == GITS_CWRITER) {
        *val = half(its->cwriter, off, size);
    } else if (reg == GITS_CREADR) {
        *val = half(its->creadr | (its->stalled ? CREADR_STALLED : 0), off, size);
    } else if (reg >= GITS_BASER && reg < GITS_BASER_END) {
        unsigned n = (unsigned)(reg - GITS_BASER) / 8;
        *val = n < 2 ? half(its->baser[n], off, size) : 0;
    } else if (off >= GIC_IDREGS && off < GIC_IDREGS_END) {
        *val = vmm__gic_id_reg(off, GITS_PIDR0);
    } else if (off == GITS_TRANSLATER) { /* write-only: RAZ */
    } else {
        return false;
    }
    return true;
}

/* Base registers change only while the ITS is disabled (UNPREDICTABLE otherwise: ignored and logged). */
static bool writable(struct vmm_gic *g, const char *name)
{
    if (!g->its.enabled)
        return true;
    vmm__guest_error(g->vm, "gic", "its: %s written while GITS_CTLR.Enabled = 1: ignored", name);
    return false;
}

static void write_baser(struct vmm_gic *g, unsigned n, uint64_t off, unsigned size, uint64_t val)
{
    uint64_t *b;

    if (n >= 2 || !writable(g, "GITS_BASER"))
        return; /* BASER2..7: Type 0, unimplemented: RAZ/WI */
    b = &g->its.baser[n];
    val = merge(*b, off, size, val);
    *b = (val & BASER_MASK & ~BASER_RO_MASK) | baser_reset(n);
    if (BASER_PAGE_SIZE(*b) == 3) /* reserved: 64 KiB */
        *b &= ~(1ull << 8);
}

static bool its_write(struct vmm_gic *g, uint64_t off, unsigned size, uint64_t val)
{
    struct gic_its *its = &g->its;
    uint64_t reg = off & ~7ull;

    if (off == GITS_CTLR) {
        its->enabled = val & GITS_CTLR_ENABLED;
        process(g); /* commands queued while it was disabled */
    } else if (reg == GITS_CBASER) {
        if (writable(g, "GITS_CBASER")) {
            its->cbaser = merge(its->cbaser, off, size, val) & CBASER_MASK;
            its->creadr = 0; /* a new queue starts at 0 and is not stalled */
            its->stalled = false;
        }
    } else if (reg == GITS_CWRITER) {
        val = merge(its->cwriter, off, size, val);
        its->cwriter = val & CMD_OFFSET_MASK;
        if (val & CWRITER_RETRY)
            its->stalled = false;
        process(g);
    } else if (reg >= GITS_BASER && reg < GITS_BASER_END) {
        write_baser(g, (unsigned)(reg - GITS_BASER) / 8, off, size, val);
    } else if (off == GITS_TRANSLATER) {
        translate(g, 0, (uint32_t)val); /* a CPU's write: DeviceID 0, as on QEMU's virt */
    } else {
        return false; /* IIDR, TYPER, CREADR, ID registers (read-only) and reserved offsets */
    }
    return true;
}

/* CTLR and IIDR are 32-bit, the 64-bit registers take 32 or 64, TRANSLATER 16 or 32 (§12, "GITS_TRANSLATER"). */
static unsigned widths(uint64_t off)
{
    if (off == GITS_TRANSLATER)
        return (1u << 1) | GIC_W32;
    if ((off >= GITS_TYPER && off < GITS_TYPER + 8) || (off >= GITS_CBASER && off < GITS_BASER_END))
        return GIC_W32 | GIC_W64;
    return GIC_W32;
}

static uint64_t gits_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_gic *g = dev;
    uint64_t val = 0;
    bool ok;

    if (!vmm__gic_access_ok(g, BLOCK, off, size, widths(off), false))
        return 0;
    vmm__gic_lock(g);
    ok = its_read(g, off, size, &val);
    vmm__gic_unlock(g);
    if (!ok)
        vmm__gic_bad_offset(g, BLOCK, off, size, false);
    return val;
}

static void gits_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_gic *g = dev;
    bool ok;

    if (!vmm__gic_access_ok(g, BLOCK, off, size, widths(off), true))
        return;
    vmm__gic_lock(g);
    ok = its_write(g, off, size, val);
    vmm__gic_unlock(g);
    if (!ok)
        vmm__gic_bad_offset(g, BLOCK, off, size, true);
}

const struct vmm_mmio_ops vmm__gic_its_ops = { .read = gits_read, .write = gits_write };

void vmm__gic_its_reset(struct vmm_gic *g)
{
    memset(&g->its, 0, sizeof g->its);
    g->its.baser[0] = baser_reset(0);
    g->its.baser[1] = baser_reset(1);
}

/* ---- snapshots ------------------------------------------------------------------- */

void vmm__gic_its_snap(struct vmm_gic *g, struct vmm_snap *s)
{
    struct gic_its *its = &g->its;

    vmm__snap_bool(s, &its->enabled);
    vmm__snap_bool(s, &its->stalled);
    vmm__snap_u64(s, &its->cbaser);
    vmm__snap_u64(s, &its->cwriter);
    vmm__snap_u64(s, &its->creadr);
    vmm__snap_u64(s, &its->baser[0]);
    vmm__snap_u64(s, &its->baser[1]);
    vmm__snap_unsigned(s, &its->last_error);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    if ((its->cbaser & ~CBASER_MASK) || (its->cwriter & ~CMD_OFFSET_MASK) || (its->creadr & ~CMD_OFFSET_MASK) ||
        its->creadr >= CBASER_BYTES(its->cbaser) || its->last_error >= E_NR)
        vmm__snap_fail(s, "ITS command queue registers out of range");
    for (unsigned n = 0; n < 2; n++)
        if ((its->baser[n] & ~(BASER_MASK | BASER_RO_MASK)) || (its->baser[n] & BASER_RO_MASK) != baser_reset(n) ||
            BASER_PAGE_SIZE(its->baser[n]) == 3)
            vmm__snap_fail(s, "GITS_BASER%u 0x%llx: not a value the register can hold", n,
                           (unsigned long long)its->baser[n]);
}
