/* pl011.c - Arm PrimeCell UART (PL011, Arm DDI 0183G): TX into the console buffer, polled RX. */
#include <inttypes.h>
#include <stdlib.h>

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

/* interrupt bits (RIS/MIS/IMSC/ICR) */
#define INT_RX (1u << 4)
#define INT_TX (1u << 5)
#define INT_ALL 0x7ffu

/* PeriphID0..3 then PCellID0..3, DDI 0183G §3.3.14-15 */
static const uint8_t pl011_id[8] = { 0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1 };

struct vmm_pl011 {
    struct vmm_vm *vm;
    uint32_t ilpr, ibrd, fbrd, lcr_h, cr, ifls, imsc, ris, dmacr;
};

static uint32_t raw_status(struct vmm_pl011 *u)
{
    /* TX never backs up: the transmit interrupt condition always holds */
    uint32_t ris = (u->ris & ~(INT_RX | INT_TX)) | INT_TX;
    if (vmm__console_has_input(u->vm->console))
        ris |= INT_RX;
    return ris;
}

static uint32_t reg_read(struct vmm_pl011 *u, uint64_t reg)
{
    switch (reg) {
    case UARTDR: {
        int ch = vmm__console_getc(u->vm->console); /* RX works whether or not UARTCR enabled it, as on QEMU */
        return ch < 0 ? 0 : (uint32_t)ch;
    }
    case UARTRSR:
        return 0;
    case UARTFR:
        return FR_TXFE | (vmm__console_has_input(u->vm->console) ? 0 : FR_RXFE);
    case UARTILPR:
        return u->ilpr;
    case UARTIBRD:
        return u->ibrd;
    case UARTFBRD:
        return u->fbrd;
    case UARTLCR_H:
        return u->lcr_h;
    case UARTCR:
        return u->cr;
    case UARTIFLS:
        return u->ifls;
    case UARTIMSC:
        return u->imsc;
    case UARTRIS:
        return raw_status(u);
    case UARTMIS:
        return raw_status(u) & u->imsc;
    case UARTDMACR:
        return u->dmacr;
    }
    if (reg >= UARTPERIPHID0 && reg < UARTPERIPHID0 + 32)
        return pl011_id[(reg - UARTPERIPHID0) / 4];
    vmm__guest_error(u->vm, "pl011", "read of unknown register 0x%03" PRIx64, reg);
    return 0;
}

static void reg_write(struct vmm_pl011 *u, uint64_t reg, uint32_t val)
{
    switch (reg) {
    case UARTDR: {
        uint8_t ch = (uint8_t)val;
        /* Like most models, transmit even if the guest never enabled the UART:
         * early boot code often skips UARTCR. */
        vmm__console_put(u->vm->console, &ch, 1);
        return;
    }
    case UARTRSR:
        return; /* UARTECR: clears errors; we never have any */
    case UARTILPR:
        u->ilpr = val & 0xff;
        return;
    case UARTIBRD:
        u->ibrd = val & 0xffff;
        return;
    case UARTFBRD:
        u->fbrd = val & 0x3f;
        return;
    case UARTLCR_H:
        u->lcr_h = val & 0xff;
        return;
    case UARTCR:
        u->cr = val & 0xff87;
        return;
    case UARTIFLS:
        u->ifls = val & 0x3f;
        return;
    case UARTIMSC:
        u->imsc = val & INT_ALL;
        return;
    case UARTICR:
        u->ris &= ~val;
        return;
    case UARTDMACR:
        u->dmacr = val & 7;
        return;
    case UARTFR:
    case UARTRIS:
    case UARTMIS:
        vmm__guest_error(u->vm, "pl011", "write to read-only register 0x%03" PRIx64, reg);
        return;
    }
    vmm__guest_error(u->vm, "pl011", "write to unknown register 0x%03" PRIx64, reg);
}

static uint64_t pl011_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_pl011 *u = dev;

    if (size > 4 || (off & (size - 1))) {
        vmm__guest_error(u->vm, "pl011", "bad %u-byte read at offset 0x%" PRIx64, size, off);
        return 0;
    }
    uint32_t v = reg_read(u, off & ~3ULL) >> (8 * (off & 3));
    return size == 4 ? v : v & ((1u << (8 * size)) - 1);
}

static void pl011_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_pl011 *u = dev;

    if (size > 4 || (off & 3)) {
        vmm__guest_error(u->vm, "pl011", "bad %u-byte write at offset 0x%" PRIx64, size, off);
        return;
    }
    reg_write(u, off, (uint32_t)val);
}

static const struct vmm_mmio_ops pl011_ops = { .read = pl011_read, .write = pl011_write };

int vmm__pl011_create(struct vmm_vm *vm, uint64_t base, struct vmm_pl011 **out)
{
    struct vmm_pl011 *u = calloc(1, sizeof *u);
    int rc;

    if (!u)
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the PL011");
    u->vm = vm;
    u->cr = 0x300; /* TXE | RXE, reset value */
    u->ifls = 0x12;
    if ((rc = vmm__bus_add(vm, base, 0x1000, "pl011", &pl011_ops, u))) {
        free(u);
        return rc;
    }
    *out = u;
    return 0;
}

void vmm__pl011_destroy(struct vmm_pl011 *u)
{
    free(u);
}
