/* pl011.c - Arm PrimeCell UART (PL011, Arm DDI 0183G): TX into the console buffer, RX from its input queue, IRQs. */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>

#include <libfdt.h>
#include <stdio.h>

#include "../core/irq.h"
#include "../core/console.h"
#include "../core/board.h"
#include "../core/fdt.h"
#include "../core/snapshot.h"
#include "pl011.h"

/* register offsets, DDI 0183G §3.2 */
enum {
    UARTDR = 0x000,
    UARTRSR = 0x004, /* write: UARTECR */
    UARTFR = 0x018,
    UARTILPR = 0x020,
    UARTIBRD = 0x024,
    UARTFBRD = 0x028,
    UARTLCR_H = 0x02c,
    UARTCR = 0x030,
    UARTIFLS = 0x034,
    UARTIMSC = 0x038,
    UARTRIS = 0x03c,
    UARTMIS = 0x040,
    UARTICR = 0x044,
    UARTDMACR = 0x048,
    UARTPERIPHID0 = 0xfe0,
};

/* UARTFR bits */
#define FR_TXFE (1u << 7)
#define FR_RXFE (1u << 4)

/* interrupt bits (UARTRIS/MIS/IMSC/ICR), DDI 0183G §3.3 */
#define INT_RX (1u << 4)
#define INT_TX (1u << 5)
#define INT_RT (1u << 6)
#define INT_ALL 0x7ffu

/* PeriphID0..3 then PCellID0..3, DDI 0183G §3.3.14-15 */
static const uint8_t pl011_id[8] = { 0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1 };

/*
 * The vCPU thread (MMIO), a Python thread (test MMIO API) and whoever queues
 * console input (input callback) all reach this state: `lock` guards it. It
 * nests outside the console's lock and is never held across vmm__irq_set().
 */
struct vmm_pl011 {
    struct vmm_vm *vm;
    uint64_t base;
    unsigned intid;
    pthread_mutex_t lock;
    pthread_cond_t driven; /* `driving` went false */
    uint32_t ilpr, ibrd, fbrd, lcr_h, cr, ifls, imsc, dmacr;
    uint32_t ris; /* latched interrupt bits (TX); RX and RT are computed */
    bool level;   /* the level last driven (or being driven) on the SPI */
    bool driving; /* a thread is in update_irq_unlock()'s GIC call (the others wait on `driven`) */
};

/*
 * Interrupt semantics (DDI 0183G chapter 2, "Interrupts").
 *
 * RX (bit 4) is a level: raised while input is queued. We have no RX FIFO and
 * so no trigger level (UARTIFLS is stored, not used). The receive timeout RT
 * (bit 6) fires on hardware for data left below the trigger level; with no
 * trigger level it behaves exactly like RX for a non-empty FIFO. Linux's
 * amba-pl011 enables RXIM|RTIM and drains on either. UARTICR cannot clear RX
 * or RT while input is queued: reading UARTDR until it is empty does.
 *
 * TX (bit 5): bytes go to the console at once, so the transmit FIFO is always
 * empty, i.e. at or below its trigger level. Hardware latches TXRIS when the
 * FIFO drains through the trigger level and clears it on UARTICR.TXIC (or on
 * filling the FIFO above the level). As QEMU does, TX is latched, set by every
 * UARTDR write (the byte leaves at once: the FIFO drains through the level)
 * and cleared only by UARTICR; unlike QEMU it is also set at reset, because
 * the condition (FIFO at or below the level) holds then too. So:
 * - Linux never writes TXIC. It sets TXIM only while its circular buffer holds
 *   data, refills the FIFO from the handler and clears TXIM when the buffer is
 *   empty: it gets a TX interrupt whenever it asks for one, and none after.
 *   (It rarely asks: it writes until UARTFR.TXFF, which we never set.)
 * - A guest that acknowledges TX through UARTICR and leaves TXIM set sees no
 *   further TX interrupt until it writes again, as on hardware: no storm.
 * - A polling guest leaves UARTIMSC at 0 and the line never rises.
 * UARTCR does not gate interrupts (nor RX and TX themselves), as on QEMU.
 */
static uint32_t raw_status(struct vmm_pl011 *u)
{
    uint32_t ris = u->ris;
    if (vmm__console_has_input(u->vm->console))
        ris |= INT_RX | INT_RT;
    return ris;
}

/*
 * Drive the SPI to (UARTMIS != 0) if it changed. Called with u->lock held;
 * returns with it released, and only once the line shows the state as it was
 * at the call or later. One thread at a time calls the GIC (`driving`), so
 * calls for an older state never overtake a newer one; another thread waits
 * for that call to end and then evaluates again. (It used to leave at once,
 * trusting the driver's re-evaluation: a vCPU that drained UARTDR while the
 * console thread was still inside its GIC call raising the line, and was
 * descheduled there, took the stale interrupt again with UARTMIS 0, 5,334
 * times in one loaded run of test_uart_rx_interrupt_echo.)
 */
static void update_irq_unlock(struct vmm_pl011 *u)
{
    while (u->driving)
        pthread_cond_wait(&u->driven, &u->lock);
    for (;;) {
        bool level = (raw_status(u) & u->imsc) != 0;
        if (level == u->level)
            break;
        u->level = level;
        u->driving = true;
        pthread_mutex_unlock(&u->lock);
        vmm__irq_set(u->vm, 0, u->intid, level);
        pthread_mutex_lock(&u->lock);
        u->driving = false;
        pthread_cond_broadcast(&u->driven);
    }
    pthread_mutex_unlock(&u->lock);
}

/* Console input arrived (any thread, console lock not held). */
static void pl011_input(void *opaque)
{
    struct vmm_pl011 *u = opaque;

    pthread_mutex_lock(&u->lock);
    update_irq_unlock(u);
}

/* u->lock held. False if `reg` is not a readable register. */
static bool reg_read(struct vmm_pl011 *u, uint64_t reg, uint32_t *val)
{
    switch (reg) {
    case UARTDR: {
        int ch = vmm__console_getc(u->vm->console); /* RX works whether or not UARTCR enabled it, as on QEMU */
        *val = ch < 0 ? 0 : (uint32_t)ch;
        return true;
    }
    case UARTRSR:
        *val = 0;
        return true;
    case UARTFR:
        *val = FR_TXFE | (vmm__console_has_input(u->vm->console) ? 0 : FR_RXFE);
        return true;
    case UARTILPR:
        *val = u->ilpr;
        return true;
    case UARTIBRD:
        *val = u->ibrd;
        return true;
    case UARTFBRD:
        *val = u->fbrd;
        return true;
    case UARTLCR_H:
        *val = u->lcr_h;
        return true;
    case UARTCR:
        *val = u->cr;
        return true;
    case UARTIFLS:
        *val = u->ifls;
        return true;
    case UARTIMSC:
        *val = u->imsc;
        return true;
    case UARTRIS:
        *val = raw_status(u);
        return true;
    case UARTMIS:
        *val = raw_status(u) & u->imsc;
        return true;
    case UARTDMACR:
        *val = u->dmacr;
        return true;
    }
    if (reg >= UARTPERIPHID0 && reg < UARTPERIPHID0 + 32) {
        *val = pl011_id[(reg - UARTPERIPHID0) / 4];
        return true;
    }
    return false;
}

enum { WRITE_OK, WRITE_READ_ONLY, WRITE_UNKNOWN };

/* u->lock held. */
static int reg_write(struct vmm_pl011 *u, uint64_t reg, uint32_t val)
{
    switch (reg) {
    case UARTDR: {
        uint8_t ch = (uint8_t)val;
        /* Like most models, transmit even if the guest never enabled the UART:
         * early boot code often skips UARTCR. */
        vmm__console_put(u->vm->console, &ch, 1);
        u->ris |= INT_TX; /* the FIFO drained through its trigger level */
        return WRITE_OK;
    }
    case UARTRSR:
        return WRITE_OK; /* UARTECR: clears errors; we never have any */
    case UARTILPR:
        u->ilpr = val & 0xff;
        return WRITE_OK;
    case UARTIBRD:
        u->ibrd = val & 0xffff;
        return WRITE_OK;
    case UARTFBRD:
        u->fbrd = val & 0x3f;
        return WRITE_OK;
    case UARTLCR_H:
        u->lcr_h = val & 0xff;
        return WRITE_OK;
    case UARTCR:
        u->cr = val & 0xff87;
        return WRITE_OK;
    case UARTIFLS:
        u->ifls = val & 0x3f;
        return WRITE_OK;
    case UARTIMSC:
        u->imsc = val & INT_ALL;
        return WRITE_OK;
    case UARTICR:
        u->ris &= ~val; /* latched bits only: RX/RT hold while input is queued */
        return WRITE_OK;
    case UARTDMACR:
        u->dmacr = val & 7;
        return WRITE_OK;
    case UARTFR:
    case UARTRIS:
    case UARTMIS:
        return WRITE_READ_ONLY;
    }
    return WRITE_UNKNOWN;
}

static uint64_t pl011_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_pl011 *u = dev;
    uint64_t reg = off & ~3ULL;
    uint32_t v = 0;
    bool ok;

    if (size > 4 || (off & (size - 1))) {
        vmm__guest_error(u->vm, "pl011", "bad %u-byte read at offset 0x%" PRIx64, size, off);
        return 0;
    }
    pthread_mutex_lock(&u->lock);
    ok = reg_read(u, reg, &v);
    if (reg == UARTDR)
        update_irq_unlock(u); /* the queue may have drained: RX drops */
    else
        pthread_mutex_unlock(&u->lock);
    if (!ok) {
        vmm__guest_error(u->vm, "pl011", "read of unknown register 0x%03" PRIx64, reg);
        return 0;
    }
    v >>= 8 * (off & 3);
    return size == 4 ? v : v & ((1u << (8 * size)) - 1);
}

static void pl011_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_pl011 *u = dev;
    int rc;

    if (size > 4 || (off & 3)) {
        vmm__guest_error(u->vm, "pl011", "bad %u-byte write at offset 0x%" PRIx64, size, off);
        return;
    }
    pthread_mutex_lock(&u->lock);
    rc = reg_write(u, off, (uint32_t)val);
    /*
     * The line's level is RIS (and queued input, whose arrival updates it) masked by IMSC: only DR, IMSC and ICR
     * writes change it. Re-evaluating it for the others took the console's lock too (a fifth of a UARTIBRD write).
     */
    if (off == UARTDR || off == UARTIMSC || off == UARTICR)
        update_irq_unlock(u);
    else
        pthread_mutex_unlock(&u->lock);
    if (rc == WRITE_READ_ONLY)
        vmm__guest_error(u->vm, "pl011", "write to read-only register 0x%03" PRIx64, off);
    else if (rc == WRITE_UNKNOWN)
        vmm__guest_error(u->vm, "pl011", "write to unknown register 0x%03" PRIx64, off);
}

static const struct vmm_mmio_ops pl011_ops = { .read = pl011_read, .write = pl011_write };

static int pl011_fdt_node(void *dev, struct vmm_vm *vm, void *fdt)
{
    static const char *const compat[] = { "arm,pl011", "arm,primecell" };
    static const char *const clk_names[] = { "uartclk", "apb_pclk" };
    static const uint32_t clks[] = { FDT_PH_CLK, FDT_PH_CLK };
    struct vmm_pl011 *u = dev;
    char name[32];
    int err;

    (void)vm;
    snprintf(name, sizeof name, "pl011@%llx", (unsigned long long)u->base);
    if ((err = fdt_begin_node(fdt, name)) < 0 || (err = vmm__fdt_prop_strings(fdt, "compatible", compat, 2)) < 0 ||
        (err = vmm__fdt_prop_u64_pair(fdt, "reg", u->base, PL011_SIZE)) < 0 ||
        (err = vmm__fdt_prop_spi(fdt, u->intid)) < 0 ||
        (err = vmm__fdt_prop_strings(fdt, "clock-names", clk_names, 2)) < 0 ||
        (err = vmm__fdt_prop_cells(fdt, "clocks", clks, 2)) < 0)
        return err;
    return fdt_end_node(fdt);
}

static void pl011_destroy(void *dev)
{
    struct vmm_pl011 *u = dev;

    vmm__console_set_input_cb(u->vm->console, NULL, NULL);
    pthread_cond_destroy(&u->driven);
    pthread_mutex_destroy(&u->lock);
    free(u);
}

/* Snapshots: the registers, each checked against what a guest write could leave in it. */
static int pl011_sync(void *dev, struct vmm_snap *s)
{
    struct vmm_pl011 *u = dev;
    static const uint32_t masks[] = { 0xff, 0xffff, 0x3f, 0xff, 0xff87, 0x3f, INT_ALL, 7, INT_TX };

    pthread_mutex_lock(&u->lock);
    uint32_t *regs[] = { &u->ilpr, &u->ibrd, &u->fbrd, &u->lcr_h, &u->cr, &u->ifls, &u->imsc, &u->dmacr, &u->ris };
    for (unsigned i = 0; i < sizeof regs / sizeof regs[0]; i++) {
        vmm__snap_u32(s, regs[i]);
        if (vmm__snap_loading(s) && (*regs[i] & ~masks[i]))
            vmm__snap_fail(s, "register %u holds 0x%x", i, *regs[i]);
    }
    vmm__snap_bool(s, &u->level); /* the SPI's level, as the loaded GIC has it */
    pthread_mutex_unlock(&u->lock);
    return vmm__snap_error(s);
}

static const struct vmm_device_ops pl011_device = {
    .name = "pl011",
    .fdt_node = pl011_fdt_node,
    .save = pl011_sync,
    .load = pl011_sync,
    .snap_version = 1,
    .destroy = pl011_destroy,
};

int vmm__pl011_create(struct vmm_vm *vm, uint64_t base, unsigned intid)
{
    struct vmm_pl011 *u = calloc(1, sizeof *u);
    char path[40];
    int rc;

    if (!u)
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the PL011");
    u->vm = vm;
    u->base = base;
    u->intid = intid;
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->driven, NULL);
    u->cr = 0x300; /* TXE | RXE, reset value */
    u->ifls = 0x12;
    u->ris = INT_TX; /* the transmit FIFO is empty */
    if ((rc = vmm__board_add(vm, &pl011_device, u))) {
        pthread_cond_destroy(&u->driven);
        pthread_mutex_destroy(&u->lock);
        free(u);
        return rc;
    }
    if ((rc = vmm__bus_add(vm, base, PL011_SIZE, "pl011", &pl011_ops, u))) {
        vmm__board_remove(vm, u);
        pl011_destroy(u);
        return rc;
    }
    vmm__console_set_input_cb(vm->console, pl011_input, u);
    snprintf(path, sizeof path, "/pl011@%llx", (unsigned long long)base);
    vmm__board_set_stdout(vm, path);
    return 0;
}
