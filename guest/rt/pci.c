/* pci.c - bus 0 of a generic ECAM host bridge (config accesses, BAR sizing and placement, capability
   lists) and a minimal virtio-pci modern driver (virtio 1.2 §4.1) with one split virtqueue. */
#include "rt.h"
#include "pci_regs.h"
#include "virtio_mmio.h"

/* type 0 header */
#define PCI_BAR0 0x10
#define PCI_CAP_PTR 0x34
#define PCI_STATUS 0x06
#define PCI_STATUS_CAPS 0x10

/* virtio_pci_cap (§4.1.4) */
#define CAP_VNDR 0x09
#define VCAP_TYPE 3
#define VCAP_BAR 4
#define VCAP_OFFSET 8
#define VCAP_NOTIFY_MULT 16
enum { VIRTIO_PCI_CAP_COMMON = 1, VIRTIO_PCI_CAP_NOTIFY, VIRTIO_PCI_CAP_ISR, VIRTIO_PCI_CAP_DEVICE };

/* virtio_pci_common_cfg (§4.1.4.3) */
#define CC_DFSELECT 0x00
#define CC_DF 0x04
#define CC_GFSELECT 0x08
#define CC_GF 0x0c
#define CC_STATUS 0x14
#define CC_Q_SELECT 0x16
#define CC_Q_SIZE 0x18
#define CC_Q_MSIX 0x1a
#define CC_Q_ENABLE 0x1c
#define CC_Q_NOTIFY_OFF 0x1e
#define CC_Q_DESC 0x20
#define CC_Q_DRIVER 0x28
#define CC_Q_DEVICE 0x30

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define VIRTQ_DESC_F_WRITE 2

static uintptr_t cfg_addr(unsigned slot, unsigned off)
{
    return PCI_ECAM_BASE + ((uintptr_t)slot << 15) + off;
}

uint32_t pci_cfg_read32(unsigned slot, unsigned off)
{
    return mmio_read32(cfg_addr(slot, off));
}

uint16_t pci_cfg_read16(unsigned slot, unsigned off)
{
    return mmio_read16(cfg_addr(slot, off));
}

uint8_t pci_cfg_read8(unsigned slot, unsigned off)
{
    return mmio_read8(cfg_addr(slot, off));
}

void pci_cfg_write32(unsigned slot, unsigned off, uint32_t v)
{
    mmio_write32(cfg_addr(slot, off), v);
}

void pci_cfg_write16(unsigned slot, unsigned off, uint16_t v)
{
    mmio_write16(cfg_addr(slot, off), v);
}

struct pci_bar pci_bar_size(unsigned slot, unsigned bar)
{
    unsigned off = PCI_BAR0 + 4 * bar;
    uint32_t old = pci_cfg_read32(slot, off), lo, hi = 0xffffffffu, old_hi = 0;
    struct pci_bar b = { 0, 0, 0 };

    if (old & 1) /* I/O BAR: not handled */
        return b;
    b.is64 = (old & 6) == 4 && bar < 5;
    pci_cfg_write32(slot, off, 0xffffffffu);
    lo = pci_cfg_read32(slot, off);
    pci_cfg_write32(slot, off, old);
    if (b.is64) {
        old_hi = pci_cfg_read32(slot, off + 4);
        pci_cfg_write32(slot, off + 4, 0xffffffffu);
        hi = pci_cfg_read32(slot, off + 4);
        pci_cfg_write32(slot, off + 4, old_hi);
    }
    uint64_t mask = (uint64_t)hi << 32 | (lo & ~0xfu);
    if (!(lo & ~0xfu))
        return b;
    b.size = ~mask + 1;
    if (!b.is64)
        b.size &= 0xffffffffu;
    b.addr = ((uint64_t)old_hi << 32 | old) & ~0xfULL;
    return b;
}

uint64_t pci_bar_set(unsigned slot, unsigned bar, const struct pci_bar *b, uint64_t addr)
{
    unsigned off = PCI_BAR0 + 4 * bar;

    pci_cfg_write32(slot, off, (uint32_t)addr);
    if (b->is64)
        pci_cfg_write32(slot, off + 4, (uint32_t)(addr >> 32));
    uint64_t v = pci_cfg_read32(slot, off) & ~0xfu;
    if (b->is64)
        v |= (uint64_t)pci_cfg_read32(slot, off + 4) << 32;
    return v;
}

static uint64_t mmio_next = PCI_MMIO_BASE;

uint64_t pci_mmio_alloc(uint64_t size)
{
    uint64_t a = (mmio_next + size - 1) & ~(size - 1);

    if (!size || a + size > PCI_MMIO_END)
        return 0;
    mmio_next = a + size;
    return a;
}

unsigned pci_find_cap(unsigned slot, uint8_t id, unsigned from)
{
    unsigned p, hops = 0;

    if (!(pci_cfg_read16(slot, PCI_STATUS) & PCI_STATUS_CAPS))
        return 0;
    p = from ? pci_cfg_read8(slot, from + 1) : pci_cfg_read8(slot, PCI_CAP_PTR);
    while (p >= 0x40 && hops++ < 48) { /* a bounded walk: a looping list ends here */
        p &= ~3u;
        if (pci_cfg_read8(slot, p) == id)
            return p;
        p = pci_cfg_read8(slot, p + 1);
    }
    return 0;
}

int virtio_pci_caps(struct virtio_pci *d)
{
    unsigned found = 0;

    for (unsigned c = pci_find_cap(d->slot, CAP_VNDR, 0); c; c = pci_find_cap(d->slot, CAP_VNDR, c)) {
        unsigned type = pci_cfg_read8(d->slot, c + VCAP_TYPE), bar = pci_cfg_read8(d->slot, c + VCAP_BAR);
        uintptr_t at;
        if (bar > 5 || !d->bar_addr[bar] || type < 1 || type > 4 || (found & (1u << type)))
            continue; /* the first of each type we can use (§4.1.4: in order of preference) */
        at = d->bar_addr[bar] + pci_cfg_read32(d->slot, c + VCAP_OFFSET);
        found |= 1u << type;
        printf("pci: 00:%02x.0 virtio cap type %u: BAR%u + 0x%x\n", d->slot, type, bar,
               pci_cfg_read32(d->slot, c + VCAP_OFFSET));
        if (type == VIRTIO_PCI_CAP_COMMON)
            d->common = at;
        else if (type == VIRTIO_PCI_CAP_ISR)
            d->isr = at;
        else if (type == VIRTIO_PCI_CAP_DEVICE)
            d->device = at;
        else {
            d->notify = at;
            d->notify_mult = pci_cfg_read32(d->slot, c + VCAP_NOTIFY_MULT);
        }
    }
    if ((found & 0xe) != 0xe) { /* common, notify, ISR are required */
        printf("pci: 00:%02x.0: virtio capabilities missing (found mask 0x%x)\n", d->slot, found);
        return -1;
    }
    return 0;
}

static void set_status(struct virtio_pci *d, uint8_t s)
{
    mmio_write8(d->common + CC_STATUS, s);
}

/* 64-bit fields as two 32-bit writes, low half first (as Linux's vp_iowrite64_twopart) */
static void write64_twopart(uintptr_t a, uint64_t v)
{
    mmio_write32(a, (uint32_t)v);
    mmio_write32(a + 4, (uint32_t)(v >> 32));
}

int virtio_pci_init(struct virtio_pci *d, uint16_t vec)
{
    struct virtq *q = &d->q;
    uint64_t offered;
    uint16_t max;

    set_status(d, 0);
    if (!POLL_UNTIL(mmio_read8(d->common + CC_STATUS) == 0, 1000))
        return printf("pci: reset did not complete\n"), -1;
    set_status(d, STATUS_ACKNOWLEDGE);
    set_status(d, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    mmio_write32(d->common + CC_DFSELECT, 1);
    offered = (uint64_t)mmio_read32(d->common + CC_DF) << 32;
    mmio_write32(d->common + CC_DFSELECT, 0);
    offered |= mmio_read32(d->common + CC_DF);
    if (!(offered & (1ULL << VIRTIO_F_VERSION_1)))
        return printf("pci: device does not offer VERSION_1\n"), -1;
    d->features = 1ULL << VIRTIO_F_VERSION_1;
    mmio_write32(d->common + CC_GFSELECT, 0);
    mmio_write32(d->common + CC_GF, 0);
    mmio_write32(d->common + CC_GFSELECT, 1);
    mmio_write32(d->common + CC_GF, 1);
    set_status(d, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(mmio_read8(d->common + CC_STATUS) & STATUS_FEATURES_OK))
        return printf("pci: FEATURES_OK not accepted\n"), -1;

    mmio_write16(d->common + CC_Q_SELECT, 0);
    max = mmio_read16(d->common + CC_Q_SIZE);
    if (!max)
        return printf("pci: queue 0 is not available\n"), -1;
    q->size = max < VIRTQ_SIZE ? max : VIRTQ_SIZE;
    q->last_used = 0;
    q->avail.idx = q->avail.flags = 0;
    q->used.idx = 0;
    mmio_write16(d->common + CC_Q_SIZE, q->size);
    mmio_write16(d->common + CC_Q_MSIX, vec);
    write64_twopart(d->common + CC_Q_DESC, (uintptr_t)q->desc);
    write64_twopart(d->common + CC_Q_DRIVER, (uintptr_t)&q->avail);
    write64_twopart(d->common + CC_Q_DEVICE, (uintptr_t)&q->used);
    mmio_write16(d->common + CC_Q_ENABLE, 1);
    set_status(d, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    return 0;
}

void virtio_pci_submit(struct virtio_pci *d, void *buf, uint32_t len)
{
    struct virtq *q = &d->q;
    uint16_t head = q->avail.idx % q->size;

    q->desc[head] = (struct virtq_desc){ .addr = (uintptr_t)buf, .len = len, .flags = VIRTQ_DESC_F_WRITE };
    q->avail.ring[q->avail.idx % q->size] = head;
    dmb(ish);
    q->avail.idx++;
    dsb(ish);
    mmio_write16(d->common + CC_Q_SELECT, 0);
    uint16_t off = mmio_read16(d->common + CC_Q_NOTIFY_OFF);
    mmio_write16(d->notify + (uintptr_t)off * d->notify_mult, 0);
}

int virtio_pci_used(struct virtio_pci *d)
{
    struct virtq *q = &d->q;
    int len;

    dmb(ish);
    if (*(volatile uint16_t *)&q->used.idx == q->last_used)
        return -1;
    dmb(ish);
    len = (int)q->used.ring[q->last_used % q->size].len;
    q->last_used++;
    return len;
}

/* ---- rt/virtio.c's devices on PCI: its virtio-mmio register names (§4.2.2, virtio_mmio.h) mapped onto §4.1 ---- */

int virtio_pci_open(struct virtio_dev *d, uint32_t device_id)
{
    static struct virtio_pci p; /* the capability walk's result */
    uint32_t want = (0x1040 + device_id) << 16 | 0x1af4;
    unsigned slot;

    for (slot = 0; slot < 32 && pci_cfg_read32(slot, 0) != want; slot++)
        ;
    if (slot == 32) {
        printf("virtio: no device %u on virtio-mmio or PCI bus 0\n", device_id);
        return -1;
    }
    p.slot = slot;
    p.common = p.isr = p.device = p.notify = 0;
    for (unsigned bar = 0; bar < 6; bar++) {
        p.bar_addr[bar] = 0;
    }
    for (unsigned bar = 0; bar < 6; bar++) {
        struct pci_bar b = pci_bar_size(slot, bar);
        if (!b.size)
            continue;
        p.bar_addr[bar] = pci_mmio_alloc(b.size < 4096 ? 4096 : b.size);
        pci_bar_set(slot, bar, &b, p.bar_addr[bar]);
        bar += b.is64;
    }
    pci_cfg_write16(slot, PCI_COMMAND, pci_cfg_read16(slot, PCI_COMMAND) | 0x6); /* memory, bus master */
    if (virtio_pci_caps(&p))
        return -1;
    d->slot = (int)slot; /* field by field: the struct holds the queues (no memset here) */
    d->pci = 1;
    d->base = 0;
    d->common = p.common;
    d->isr = p.isr;
    d->device = p.device;
    d->notify = p.notify;
    d->notify_mult = p.notify_mult;
    d->device_id = device_id;
    d->vendor_id = 0x1af4;
    return 0;
}

/* A common-config field as a virtio-mmio register: its offset and width (0: none) */
static unsigned common_field(unsigned mmio_off, unsigned *width)
{
    *width = 4;
    switch (mmio_off) {
    case MMIO_DEVICE_FEATURES_SEL:
        return CC_DFSELECT;
    case MMIO_DEVICE_FEATURES:
        return CC_DF;
    case MMIO_DRIVER_FEATURES_SEL:
        return CC_GFSELECT;
    case MMIO_DRIVER_FEATURES:
        return CC_GF;
    }
    if (mmio_off >= MMIO_QUEUE_DESC_LOW && mmio_off < MMIO_QUEUE_DESC_LOW + 0x28) /* DESC, DRIVER, DEVICE */
        return CC_Q_DESC + (mmio_off - MMIO_QUEUE_DESC_LOW) / 0x10 * 8 + (mmio_off & 4);
    *width = 2;
    switch (mmio_off) {
    case MMIO_QUEUE_SEL:
        return CC_Q_SELECT;
    case MMIO_QUEUE_NUM_MAX: /* queue_size reads the maximum until the driver writes it */
    case MMIO_QUEUE_NUM:
        return CC_Q_SIZE;
    case MMIO_QUEUE_READY:
        return CC_Q_ENABLE;
    }
    *width = mmio_off == MMIO_STATUS;
    return CC_STATUS;
}

uint32_t virtio_pci_reg_read(struct virtio_dev *d, unsigned off)
{
    unsigned w, at;

    if (off >= MMIO_CONFIG)
        return mmio_read32(d->device + off - MMIO_CONFIG);
    if (off == MMIO_INTERRUPT_STATUS)
        return mmio_read8(d->isr); /* and clears it */
    if (off == MMIO_DEVICE_ID || off == MMIO_VENDOR_ID)
        return off == MMIO_DEVICE_ID ? d->device_id : d->vendor_id;
    at = common_field(off, &w);
    return w == 4   ? mmio_read32(d->common + at)
           : w == 2 ? mmio_read16(d->common + at)
           : w      ? mmio_read8(d->common + at)
                    : 0;
}

void virtio_pci_reg_write(struct virtio_dev *d, unsigned off, uint32_t v)
{
    unsigned w, at;

    if (off >= MMIO_CONFIG) {
        mmio_write32(d->device + off - MMIO_CONFIG, v);
    } else if (off == MMIO_QUEUE_NOTIFY) {
        mmio_write16(d->common + CC_Q_SELECT, (uint16_t)v);
        mmio_write16(d->notify + (uintptr_t)mmio_read16(d->common + CC_Q_NOTIFY_OFF) * d->notify_mult, (uint16_t)v);
    } else if (off != MMIO_INTERRUPT_ACK) { /* the ISR read acknowledged already */
        at = common_field(off, &w);
        if (w == 4)
            mmio_write32(d->common + at, v);
        else if (w == 2)
            mmio_write16(d->common + at, (uint16_t)v);
        else if (w)
            mmio_write8(d->common + at, (uint8_t)v);
    }
}
