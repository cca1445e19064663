/* pci_enum.c - PCI from the guest's side, INTx stage: walk bus 0 through ECAM, size and place every
   memory BAR in the 32-bit window, read the virtio capabilities, then drive a virtio-rng-pci with its
   INTA# (the interrupt-map swizzle: slot s on INTID 35 + s % 4): a request completes with an interrupt,
   PCI Status.Interrupt Status shows it until the ISR read clears it; Command.Interrupt Disable holds it
   back until cleared; the BAR moved elsewhere (memory decoding off meanwhile) keeps working. MSI-X is
   a stage of its own (it needs an ITS). */
#include "rt.h"
#include "pci_regs.h"

#define PCI_STATUS 0x06
#define PCI_CLASS 0x08
#define PCI_HEADER_TYPE 0x0e
#define PCI_INT_PIN 0x3d
#define CMD_INTX_DISABLE 0x400
#define STATUS_INTX 0x8
#define WAIT_MS 2000
#define QUIET_MS 20

static volatile unsigned irqs, isr_bits, status_in_handler;
static struct virtio_pci rng;
static uint8_t buf[16] __attribute__((aligned(16)));

static void on_intx(unsigned intid, void *arg)
{
    struct virtio_pci *d = arg;

    (void)intid;
    status_in_handler |= pci_cfg_read16(d->slot, PCI_STATUS);
    isr_bits |= mmio_read8(d->isr); /* reading the ISR clears it and lowers INTA# (§4.1.4.5) */
    irqs++;
}

/* every function on bus 0; returns the slot of the first virtio-rng, or -1 */
static int enumerate(void)
{
    int found = -1, n = 0;

    for (unsigned slot = 0; slot < 32; slot++) {
        uint32_t id = pci_cfg_read32(slot, 0);
        if ((id & 0xffff) == 0xffff)
            continue;
        n++;
        printf("pci: 00:%02x.0 %04x:%04x class %06x header %u\n", slot, id & 0xffff, id >> 16,
               pci_cfg_read32(slot, PCI_CLASS) >> 8, pci_cfg_read8(slot, PCI_HEADER_TYPE) & 0x7f);
        if (id == (DEVICE_RNG << 16 | VENDOR_VIRTIO) && found < 0)
            found = (int)slot;
    }
    printf("pci: %d functions on bus 0\n", n);
    return found;
}

/* size every memory BAR, place it in the window, enable decoding and bus mastering */
static void place_bars(struct virtio_pci *d)
{
    for (unsigned bar = 0; bar < 6; bar++) {
        struct pci_bar b = pci_bar_size(d->slot, bar);
        if (!b.size)
            continue;
        test_check(!(b.size & (b.size - 1)), "BAR%u size 0x%lx is not a power of two", bar, (unsigned long)b.size);
        uint64_t at = pci_mmio_alloc(b.size < 4096 ? 4096 : b.size);
        uint64_t back = pci_bar_set(d->slot, bar, &b, at);
        test_check(back == at, "BAR%u reads back 0x%lx after writing 0x%lx", bar, (unsigned long)back,
                   (unsigned long)at);
        printf("pci: 00:%02x.0 BAR%u: %s, %lu KiB\n", d->slot, bar, b.is64 ? "64-bit" : "32-bit",
               (unsigned long)(b.size >> 10));
        d->bar_addr[bar] = at;
        bar += b.is64;
    }
    pci_cfg_write16(d->slot, PCI_COMMAND, pci_cfg_read16(d->slot, PCI_COMMAND) | CMD_MEM | CMD_MASTER);
}

/* one 16-byte entropy request, completed by an interrupt; the bytes written */
static int request_irq(struct virtio_pci *d)
{
    unsigned before = irqs;
    int len = -1;

    isr_bits = status_in_handler = 0;
    virtio_pci_submit(d, buf, sizeof buf);
    if (!WFI_UNTIL(irqs != before, WAIT_MS))
        return -1;
    POLL_UNTIL((len = virtio_pci_used(d)) >= 0, WAIT_MS);
    return len;
}

static void intx_disable(struct virtio_pci *d, unsigned intid)
{
    unsigned before = irqs;
    int len = -1;

    pci_cfg_write16(d->slot, PCI_COMMAND, pci_cfg_read16(d->slot, PCI_COMMAND) | CMD_INTX_DISABLE);
    virtio_pci_submit(d, buf, sizeof buf);
    POLL_UNTIL((len = virtio_pci_used(d)) >= 0, WAIT_MS);
    test_check(len == (int)sizeof buf, "request with INTx disabled: %d bytes", len);
    irq_enable();
    POLL_UNTIL(0, QUIET_MS);
    irq_disable();
    test_check(irqs == before, "an interrupt came with Command.Interrupt Disable set");
    test_check(pci_cfg_read16(d->slot, PCI_STATUS) & STATUS_INTX,
               "Status.Interrupt Status clear while the device's interrupt is pending (disabled)");
    test_check(!gic_is_pending(intid), "INTID %u pending with Interrupt Disable set", intid);
    pci_cfg_write16(d->slot, PCI_COMMAND, pci_cfg_read16(d->slot, PCI_COMMAND) & ~CMD_INTX_DISABLE);
    test_check(WFI_UNTIL(irqs != before, WAIT_MS), "no interrupt once Interrupt Disable was cleared");
    printf("pci: interrupt disable: held back, delivered when cleared\n");
}

/* memory decoding off, BAR 0-5 moved up by their size, decoding on: the device answers there */
static void move_bars(struct virtio_pci *d)
{
    pci_cfg_write16(d->slot, PCI_COMMAND, pci_cfg_read16(d->slot, PCI_COMMAND) & ~CMD_MEM);
    for (unsigned bar = 0; bar < 6; bar++) {
        struct pci_bar b = pci_bar_size(d->slot, bar);
        if (!b.size)
            continue;
        uint64_t at = pci_mmio_alloc(b.size < 4096 ? 4096 : b.size);
        test_check(pci_bar_set(d->slot, bar, &b, at) == at, "BAR%u did not move", bar);
        d->bar_addr[bar] = at;
        bar += b.is64;
    }
    pci_cfg_write16(d->slot, PCI_COMMAND, pci_cfg_read16(d->slot, PCI_COMMAND) | CMD_MEM);
}

int main(uint64_t x0)
{
    (void)x0;
    if (test_begin_gic("pci_enum"))
        return test_end();
    int slot = enumerate();
    if (!test_check(slot >= 0, "no virtio-rng-pci (1af4:1044) on bus 0"))
        return test_end();
    rng.slot = (unsigned)slot;
    place_bars(&rng);
    unsigned msix = pci_find_cap(rng.slot, CAP_MSIX, 0);
    printf("pci: 00:%02x.0 MSI-X capability: %s\n", rng.slot, msix ? "present" : "absent");
    unsigned pin = pci_cfg_read8(rng.slot, PCI_INT_PIN), intid = PCI_INTX_INTID(rng.slot);
    test_check(pin == 1, "Interrupt Pin %u, want 1 (INTA#)", pin);
    printf("pci: 00:%02x.0 INTA# -> INTID %u\n", rng.slot, intid);
    if (virtio_pci_caps(&rng) || virtio_pci_init(&rng, 0xffff)) {
        test_fail("virtio-pci setup failed");
        return test_end();
    }
    gic_set_handler(intid, on_intx, &rng);
    gic_enable(intid);

    int len = request_irq(&rng);
    test_check(len == (int)sizeof buf, "entropy request: %d bytes, want %u", len, (unsigned)sizeof buf);
    test_check(isr_bits & 1, "ISR read in the handler: 0x%x, want the queue bit", isr_bits);
    test_check(status_in_handler & STATUS_INTX, "Status.Interrupt Status clear in the INTx handler");
    test_check(!(pci_cfg_read16(rng.slot, PCI_STATUS) & STATUS_INTX), "Interrupt Status still set after the ISR read");
    printf("pci: entropy over INTx: %d bytes, isr 0x%x\n", len, isr_bits);

    intx_disable(&rng, intid);

    move_bars(&rng);
    if (!test_check(virtio_pci_caps(&rng) == 0, "capabilities after the move"))
        return test_end();
    len = request_irq(&rng);
    test_check(len == (int)sizeof buf, "request after moving the BAR: %d bytes", len);
    printf("pci: BAR moved, entropy over INTx: %d bytes\n", len);
    return test_end();
}
