/* bench_msi.c - MSI latency through the ITS (bench/msi.py): a virtio-rng-pci request's completion
   as an MSI-X message to GITS_TRANSLATER, translated by the ITS to an LPI, taken by the handler.
   Every time is CNTVCT_EL0, taken just before the queue's notify write:
   - msi_spin: to the first instruction of the LPI handler, IRQs unmasked, polling a flag;
   - msi_wfi: the same, waiting in WFI with IRQs masked and unmasking once woken;
   - used_poll: to the used element seen by polling with IRQs masked and the vector masked (the device's
     part alone: its notify exit and the request; msi_spin minus it is what the MSI and the LPI add).
   Each BENCH line is the mean over N requests; REPEATS lines per name (the harness keeps the minimum). */
#include "rt.h"
#include "pci_regs.h"

#ifndef N
#define N 200
#endif
#define REPEATS 5
#define CC_Q_SELECT 0x16
#define CC_Q_NOTIFY_OFF 0x1e
#define VIRTQ_DESC_F_WRITE 2 /* virtio 1.2 §2.7.5 */
#define EVENT 3
#define LPI (GIC_LPI_BASE + 3)
#define WAIT_MS 2000

static struct virtio_pci rng;
static uint8_t buf[8] __attribute__((aligned(16)));
static uintptr_t table, notify;
static uint64_t freq;
static volatile uint64_t t_handler;
static volatile unsigned lpis;

static uint64_t counter(void)
{
    uint64_t t;
    __asm__ volatile("isb\n mrs %0, cntvct_el0\n isb" : "=r"(t)::"memory");
    return t;
}

static void on_lpi(unsigned intid, void *arg)
{
    uint64_t t = counter(); /* first thing in the handler */
    (void)arg;
    if (intid == LPI) {
        t_handler = t;
        lpis++;
    }
}

static int setup(void)
{
    int slot = -1;
    for (unsigned s = 0; s < 32 && slot < 0; s++)
        if (pci_cfg_read32(s, 0) == (DEVICE_RNG << 16 | VENDOR_VIRTIO))
            slot = (int)s;
    if (!test_check(slot >= 0, "no virtio-rng-pci (1af4:1044) on bus 0"))
        return -1;
    rng.slot = (unsigned)slot;
    for (unsigned bar = 0; bar < 6; bar++) {
        struct pci_bar b = pci_bar_size(rng.slot, bar);
        if (!b.size)
            continue;
        rng.bar_addr[bar] = pci_mmio_alloc(b.size < 4096 ? 4096 : b.size);
        pci_bar_set(rng.slot, bar, &b, rng.bar_addr[bar]);
        bar += b.is64;
    }
    pci_cfg_write16(rng.slot, PCI_COMMAND, pci_cfg_read16(rng.slot, PCI_COMMAND) | CMD_MEM | CMD_MASTER);
    unsigned cap = pci_find_cap(rng.slot, CAP_MSIX, 0);
    if (!test_check(cap != 0, "no MSI-X capability") || virtio_pci_caps(&rng))
        return -1;
    uint32_t t = pci_cfg_read32(rng.slot, cap + MSIX_TABLE);
    table = rng.bar_addr[t & 7] + (t & ~7u);

    /* the ITS: requester ID (bus 0) = devfn = slot << 3, EVENT -> LPI on this CPU */
    uint32_t devid = rng.slot << 3;
    uint64_t rd = its_rdbase();
    if (!test_check(its_lpis_supported(), "no LPIs"))
        return -1;
    its_lpi_config(LPI, GIC_PRIO_DEFAULT, 1);
    if (its_lpi_cpu_init() || its_init())
        return -1;
    gic_set_lpi_handler(on_lpi, 0);
    if (!test_check(!its_mapd(devid, 4) && !its_mapc(0, rd) && !its_mapti(devid, EVENT, LPI, 0) && !its_sync(rd),
                    "ITS commands failed"))
        return -1;

    uint16_t ctrl = pci_cfg_read16(rng.slot, cap + MSIX_CTRL) & 0x7ff;
    pci_cfg_write16(rng.slot, cap + MSIX_CTRL, ctrl | MSIX_ENABLE | MSIX_MASKALL);
    mmio_write32(table, (uint32_t)GITS_TRANSLATER);
    mmio_write32(table + 4, 0);
    mmio_write32(table + 8, EVENT);
    mmio_write32(table + 12, 0);
    pci_cfg_write16(rng.slot, cap + MSIX_CTRL, ctrl | MSIX_ENABLE);
    if (virtio_pci_init(&rng, 0))
        return -1;
    mmio_write16(rng.common + CC_Q_SELECT, 0);
    notify = rng.notify + (uintptr_t)mmio_read16(rng.common + CC_Q_NOTIFY_OFF) * rng.notify_mult;
    printf("bench_msi: virtio-rng-pci 00:%02x.0, DeviceID 0x%x EventID %u -> LPI %u\n", rng.slot, devid, EVENT, LPI);
    return 0;
}

/* the descriptor and avail entry of one request, in RAM: no exit */
static void queue_request(void)
{
    struct virtq *q = &rng.q;
    uint16_t head = q->avail.idx % q->size;

    q->desc[head] = (struct virtq_desc){ .addr = (uintptr_t)buf, .len = sizeof buf, .flags = VIRTQ_DESC_F_WRITE };
    q->avail.ring[head] = head;
    dmb(ish);
    q->avail.idx++;
    dsb(ish);
}

/* One request; ticks from its notify write to the LPI handler (0 after a test failure). */
static uint64_t one_msi(int wfi)
{
    unsigned before = lpis;
    queue_request();
    uint64_t t0 = counter();
    mmio_write16(notify, 0);
    if (wfi) { /* IRQs masked: WFI wakes on the pending LPI, unmasking takes it (no lost wake-up) */
        while (lpis == before && counter() - t0 < freq * WAIT_MS / 1000) {
            irq_disable();
            if (lpis == before)
                __asm__ volatile("wfi" ::: "memory");
            irq_enable();
        }
        if (lpis == before)
            return test_fail("no LPI within %u ms", WAIT_MS), 0;
    } else if (!POLL_UNTIL(lpis != before, WAIT_MS)) {
        return test_fail("no LPI within %u ms", WAIT_MS), 0;
    }
    uint64_t dt = t_handler - t0;
    if (!test_check(virtio_pci_used(&rng) == (int)sizeof buf, "no used element after the LPI"))
        return 0;
    return dt;
}

static uint64_t one_poll(void)
{
    int len = -1;
    queue_request();
    uint64_t t0 = counter();
    mmio_write16(notify, 0);
    while ((len = virtio_pci_used(&rng)) < 0)
        if (counter() - t0 > freq * WAIT_MS / 1000)
            return test_fail("no used element within %u ms", WAIT_MS), 0;
    return counter() - t0;
}

static void measure(const char *name, int mode)
{
    for (unsigned r = 0; r < REPEATS && test_failures() == 0; r++) {
        uint64_t sum = 0;
        if (mode != 2)
            irq_enable();
        for (unsigned i = 0; i < N && test_failures() == 0; i++)
            sum += mode == 2 ? one_poll() : one_msi(mode);
        irq_disable();
        printf("BENCH name=%s iters=%u ticks=%lu freq=%lu\n", name, N, sum, freq);
    }
}

int main(uint64_t x0)
{
    (void)x0;
    if (test_begin_gic("bench_msi"))
        return test_end();
    freq = read_sysreg(cntfrq_el0);
    if (setup())
        return test_end();
    measure("msi_spin", 0);
    measure("msi_wfi", 1);
    mmio_write32(table + 12, 1); /* vector masked: the device sets its PBA bit, sends nothing */
    measure("used_poll", 2);
    return test_end();
}
