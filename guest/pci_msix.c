/* pci_msix.c - PCI from the guest's side, MSI-X stage: a virtio-rng-pci with MSI-X enabled signals its
   queue vector, never INTA#; while the vector (or the whole function) is masked its Pending Bit Array
   bit is set, and unmasking sends the message and clears the bit (PCI 3.0 §6.8.2.9). The message goes
   to the ITS's GITS_TRANSLATER with data = an EventID; the ITS translates (DeviceID = the function's
   requester ID, bus << 8 | devfn, as the host bridge's msi-map is the identity; EventID) to an LPI
   through the tables the guest set up with MAPD/MAPC/MAPTI (IHI0069 §5.2), and the LPI is taken. */
#include "rt.h"
#include "pci_regs.h"

#define CC_Q_SELECT 0x16
#define CC_Q_MSIX 0x1a
#define CC_MSIX_CONFIG 0x10
#define WAIT_MS 2000
#define QUIET_MS 20
#define EVENT 5                 /* the vector's message data: an EventID */
#define LPI (GIC_LPI_BASE + 37) /* what the ITS maps it to */

static volatile unsigned intx_irqs, lpis, last_lpi;
static struct virtio_pci rng;
static uint8_t buf[16] __attribute__((aligned(16)));
static uintptr_t table, pba;

static void on_intx(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    mmio_read8(rng.isr);
    intx_irqs++;
}

static void on_lpi(unsigned intid, void *arg)
{
    (void)arg;
    last_lpi = intid;
    lpis++;
}

/* LPIs on, the ITS's tables and queue, (devid, EVENT) -> LPI on collection 0 = this CPU */
static int its_setup(uint32_t devid)
{
    uint64_t rd = its_rdbase();

    if (!test_check(its_lpis_supported(), "GICD_TYPER.LPIS or GICR_TYPER.PLPIS is 0"))
        return -1;
    its_lpi_config(LPI, GIC_PRIO_DEFAULT, 1);
    if (its_lpi_cpu_init() || its_init())
        return -1;
    gic_set_lpi_handler(on_lpi, 0);
    if (!test_check(!its_mapd(devid, 5) && !its_mapc(0, rd) && !its_mapti(devid, EVENT, LPI, 0) && !its_sync(rd),
                    "ITS commands failed (GITS_CREADR 0x%lx)", its_creadr()))
        return -1;
    printf("pci_msix: ITS maps DeviceID 0x%x EventID %u -> LPI %u\n", devid, EVENT, LPI);
    return 0;
}

/* IRQs unmasked until an LPI came (or WAIT_MS), then QUIET_MS more: how many LPIs were taken */
static unsigned take_lpis(void)
{
    lpis = 0;
    irq_enable();
    POLL_UNTIL(lpis > 0, WAIT_MS);
    POLL_UNTIL(0, QUIET_MS);
    irq_disable();
    return lpis;
}

static void lpi_once(const char *when)
{
    unsigned n = take_lpis();
    test_check(n == 1 && last_lpi == LPI, "%s: %u LPI(s), last %u (want 1 x %u)", when, n, last_lpi, LPI);
}

static int find_rng(void)
{
    for (unsigned slot = 0; slot < 32; slot++)
        if (pci_cfg_read32(slot, 0) == (DEVICE_RNG << 16 | VENDOR_VIRTIO))
            return (int)slot;
    return -1;
}

static void place_bars(struct virtio_pci *d)
{
    for (unsigned bar = 0; bar < 6; bar++) {
        struct pci_bar b = pci_bar_size(d->slot, bar);
        if (!b.size)
            continue;
        uint64_t at = pci_mmio_alloc(b.size < 4096 ? 4096 : b.size);
        pci_bar_set(d->slot, bar, &b, at);
        d->bar_addr[bar] = at;
        bar += b.is64;
    }
    pci_cfg_write16(d->slot, PCI_COMMAND, pci_cfg_read16(d->slot, PCI_COMMAND) | CMD_MEM | CMD_MASTER);
}

static int pending(unsigned vec)
{
    return (mmio_read32(pba + 4 * (vec / 32)) >> (vec % 32)) & 1;
}

static void set_entry(unsigned vec, uint64_t addr, uint32_t data, int masked)
{
    uintptr_t e = table + 16 * vec;
    mmio_write32(e, (uint32_t)addr);
    mmio_write32(e + 4, (uint32_t)(addr >> 32));
    mmio_write32(e + 8, data);
    mmio_write32(e + 12, (uint32_t)masked);
}

static void set_ctrl(unsigned cap, uint16_t bits)
{
    uint16_t ctrl = pci_cfg_read16(rng.slot, cap + MSIX_CTRL) & 0x7ff;
    pci_cfg_write16(rng.slot, cap + MSIX_CTRL, ctrl | bits);
}

/* one request; its used element polled (no interrupt is taken) */
static int request(void)
{
    int len = -1;
    virtio_pci_submit(&rng, buf, sizeof buf);
    POLL_UNTIL((len = virtio_pci_used(&rng)) >= 0, WAIT_MS);
    return len;
}

static void no_intx(const char *when, unsigned intid)
{
    irq_enable();
    POLL_UNTIL(0, QUIET_MS);
    irq_disable();
    test_check(intx_irqs == 0 && !gic_is_pending(intid), "INTx with MSI-X enabled (%s)", when);
}

int main(uint64_t x0)
{
    (void)x0;
    if (test_begin_gic("pci_msix"))
        return test_end();
    int slot = find_rng();
    if (!test_check(slot >= 0, "no virtio-rng-pci (1af4:1044) on bus 0"))
        return test_end();
    rng.slot = (unsigned)slot;
    place_bars(&rng);
    unsigned cap = pci_find_cap(rng.slot, CAP_MSIX, 0), intid = PCI_INTX_INTID(rng.slot);
    if (!test_check(cap != 0, "no MSI-X capability") || virtio_pci_caps(&rng))
        return test_end();
    unsigned nvec = (pci_cfg_read16(rng.slot, cap + MSIX_CTRL) & 0x7ff) + 1;
    uint32_t t = pci_cfg_read32(rng.slot, cap + MSIX_TABLE), p = pci_cfg_read32(rng.slot, cap + MSIX_PBA);
    table = rng.bar_addr[t & 7] + (t & ~7u);
    pba = rng.bar_addr[p & 7] + (p & ~7u);
    printf("pci_msix: %u vectors, table BAR%u, PBA BAR%u\n", nvec, t & 7, p & 7);
    for (unsigned v = 0; v < nvec; v++)
        test_check(mmio_read32(table + 16 * v + 12) & 1, "vector %u not masked after reset", v);
    gic_set_handler(intid, on_intx, &rng);
    gic_enable(intid);
    if (its_setup(rng.slot << 3)) /* bus 0, function 0: requester ID = devfn = slot << 3 */
        return test_end();

    /* MSI-X on (function masked while the table is written), queue 0 on vector 0 */
    set_ctrl(cap, MSIX_ENABLE | MSIX_MASKALL);
    set_entry(0, GITS_TRANSLATER, EVENT, 1);
    set_ctrl(cap, MSIX_ENABLE);
    if (virtio_pci_init(&rng, 0)) {
        test_fail("virtio-pci setup failed");
        return test_end();
    }
    mmio_write16(rng.common + CC_Q_SELECT, 0);
    test_check(mmio_read16(rng.common + CC_Q_MSIX) == 0, "queue 0 vector reads 0x%x, want 0",
               mmio_read16(rng.common + CC_Q_MSIX));
    mmio_write16(rng.common + CC_MSIX_CONFIG, (uint16_t)nvec); /* beyond the table: NO_VECTOR */
    test_check(mmio_read16(rng.common + CC_MSIX_CONFIG) == 0xffff, "config vector %u accepted of %u",
               mmio_read16(rng.common + CC_MSIX_CONFIG), nvec);

    test_check(request() == (int)sizeof buf, "request with vector 0 masked");
    test_check(pending(0), "masked vector 0 signalled: its PBA bit is clear");
    no_intx("vector masked", intid);
    test_check(take_lpis() == 0, "LPI taken while vector 0 was masked");
    mmio_write32(table + 12, 0); /* unmask: the message goes out, the bit clears */
    test_check(!pending(0), "PBA bit still set after unmasking vector 0");
    lpi_once("vector 0 unmasked");
    printf("pci_msix: masked vector pending, delivered on unmask\n");

    set_ctrl(cap, MSIX_ENABLE | MSIX_MASKALL);
    test_check(request() == (int)sizeof buf, "request with the function masked");
    test_check(pending(0), "function masked: vector 0's PBA bit is clear");
    test_check(take_lpis() == 0, "LPI taken while the function was masked");
    set_ctrl(cap, MSIX_ENABLE);
    test_check(!pending(0), "PBA bit still set after clearing the function mask");
    lpi_once("function mask cleared");
    no_intx("function mask", intid);
    printf("pci_msix: function mask holds, clearing it delivers\n");

    test_check(request() == (int)sizeof buf, "request with vector 0 unmasked");
    test_check(!pending(0), "unmasked vector 0 left pending");
    lpi_once("request completed");
    no_intx("vector unmasked", intid);
    printf("pci_msix: request completion -> LPI %u taken through the ITS\n", last_lpi);
    return test_end();
}
