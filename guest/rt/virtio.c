/* virtio.c - a minimal polled virtio driver: device discovery, feature negotiation, split virtqueues in
   static memory, one request chain at a time with a bounded wait on the used ring. On virtio-mmio
   (version 2), or on virtio-pci (rt/pci.c maps the MMIO register names onto its structures). */
#include "rt.h"

#include "virtio_mmio.h"

#define VIRTIO_MAGIC 0x74726976 /* "virt" */

/* device status bits */
#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 64
#define STATUS_FAILED 128

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

static uint32_t rd(struct virtio_dev *d, unsigned off)
{
    return d->pci ? virtio_pci_reg_read(d, off) : mmio_read32(d->base + off);
}

static void wr(struct virtio_dev *d, unsigned off, uint32_t v)
{
    if (d->pci)
        virtio_pci_reg_write(d, off, v);
    else
        mmio_write32(d->base + off, v);
}

static uintptr_t slot_base(int slot)
{
    return VIRTIO_MMIO_BASE + (uintptr_t)slot * VIRTIO_MMIO_STRIDE;
}

int virtio_find(uint32_t device_id, int from)
{
    for (int slot = from < 0 ? 0 : from; slot < VIRTIO_MMIO_SLOTS; slot++) {
        uintptr_t b = slot_base(slot);

        if (mmio_read32(b + MMIO_MAGIC) != VIRTIO_MAGIC || mmio_read32(b + MMIO_DEVICE_ID) != device_id)
            continue;
        uint32_t version = mmio_read32(b + MMIO_VERSION);
        if (version == 2)
            return slot;
        printf("virtio: slot %d (device %u) has transport version %u, not 2: skipped\n", slot, device_id, version);
    }
    return -1;
}

void virtio_reset(struct virtio_dev *d)
{
    wr(d, MMIO_STATUS, 0);
    /* the reset is complete when status reads 0 again */
    POLL_UNTIL(rd(d, MMIO_STATUS) == 0, 1000);
}

static int fail(struct virtio_dev *d, const char *what)
{
    printf("virtio: %s %d: %s\n", d->pci ? "PCI slot" : "slot", d->slot, what);
    wr(d, MMIO_STATUS, rd(d, MMIO_STATUS) | STATUS_FAILED);
    return -1;
}

static int negotiate(struct virtio_dev *d, uint64_t wanted);

int virtio_init(struct virtio_dev *d, int slot, uint64_t wanted)
{
    d->pci = 0;
    d->base = slot_base(slot);
    d->slot = slot;
    d->nqueues = 0;
    if (rd(d, MMIO_MAGIC) != VIRTIO_MAGIC || rd(d, MMIO_VERSION) != 2) {
        printf("virtio: slot %d is not a version 2 virtio-mmio transport\n", slot);
        return -1;
    }
    d->device_id = rd(d, MMIO_DEVICE_ID);
    d->vendor_id = rd(d, MMIO_VENDOR_ID);
    return negotiate(d, wanted);
}

int virtio_open(struct virtio_dev *d, uint32_t device_id, uint64_t wanted)
{
    int slot = virtio_find(device_id, 0);

    if (slot >= 0)
        return virtio_init(d, slot, wanted);
    d->nqueues = 0;
    if (virtio_pci_open(d, device_id))
        return -1;
    return negotiate(d, wanted);
}

static int negotiate(struct virtio_dev *d, uint64_t wanted)
{
    uint64_t offered;

    virtio_reset(d);
    if (rd(d, MMIO_STATUS) != 0)
        return fail(d, "reset did not complete");
    wr(d, MMIO_STATUS, STATUS_ACKNOWLEDGE);
    wr(d, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);

    wr(d, MMIO_DEVICE_FEATURES_SEL, 0);
    offered = rd(d, MMIO_DEVICE_FEATURES);
    wr(d, MMIO_DEVICE_FEATURES_SEL, 1);
    offered |= (uint64_t)rd(d, MMIO_DEVICE_FEATURES) << 32;
    if (!(offered & (1UL << VIRTIO_F_VERSION_1)))
        return fail(d, "device does not offer VIRTIO_F_VERSION_1 (legacy only)");
    d->features = (offered & wanted) | (1UL << VIRTIO_F_VERSION_1);
    wr(d, MMIO_DRIVER_FEATURES_SEL, 0);
    wr(d, MMIO_DRIVER_FEATURES, (uint32_t)d->features);
    wr(d, MMIO_DRIVER_FEATURES_SEL, 1);
    wr(d, MMIO_DRIVER_FEATURES, (uint32_t)(d->features >> 32));

    wr(d, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(rd(d, MMIO_STATUS) & STATUS_FEATURES_OK))
        return fail(d, "FEATURES_OK not accepted");
    return 0;
}

int virtio_queue_setup(struct virtio_dev *d, unsigned index)
{
    struct virtq *q;
    uint32_t max;

    if (index >= VIRTIO_MAX_QUEUES)
        return fail(d, "queue index too large for the driver");
    q = &d->queue[index];
    wr(d, MMIO_QUEUE_SEL, index);
    if (rd(d, MMIO_QUEUE_READY))
        return fail(d, "queue already ready after reset");
    max = rd(d, MMIO_QUEUE_NUM_MAX);
    if (max == 0)
        return fail(d, "queue not available (QueueNumMax 0)");
    q->size = max < VIRTQ_SIZE ? (uint16_t)max : VIRTQ_SIZE;
    q->last_used = 0;
    for (unsigned i = 0; i < VIRTQ_SIZE; i++) {
        q->desc[i] = (struct virtq_desc){ 0 };
        q->avail.ring[i] = 0;
        q->used.ring[i] = (struct virtq_used_elem){ 0 };
    }
    q->avail.flags = 1; /* VIRTQ_AVAIL_F_NO_INTERRUPT: we poll (the device may still interrupt) */
    q->avail.idx = 0;
    q->used.flags = 0;
    q->used.idx = 0;
    dsb(sy);

    wr(d, MMIO_QUEUE_NUM, q->size);
    wr(d, MMIO_QUEUE_DESC_LOW, (uint32_t)(uintptr_t)q->desc);
    wr(d, MMIO_QUEUE_DESC_HIGH, (uint32_t)((uintptr_t)q->desc >> 32));
    wr(d, MMIO_QUEUE_DRIVER_LOW, (uint32_t)(uintptr_t)&q->avail);
    wr(d, MMIO_QUEUE_DRIVER_HIGH, (uint32_t)((uintptr_t)&q->avail >> 32));
    wr(d, MMIO_QUEUE_DEVICE_LOW, (uint32_t)(uintptr_t)&q->used);
    wr(d, MMIO_QUEUE_DEVICE_HIGH, (uint32_t)((uintptr_t)&q->used >> 32));
    wr(d, MMIO_QUEUE_READY, 1);
    if (index >= d->nqueues)
        d->nqueues = index + 1;
    return 0;
}

int virtio_driver_ok(struct virtio_dev *d)
{
    wr(d, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    if (rd(d, MMIO_STATUS) & STATUS_NEEDS_RESET)
        return fail(d, "DEVICE_NEEDS_RESET after DRIVER_OK");
    return 0;
}

int virtio_request(struct virtio_dev *d, unsigned index, const void *req, uint32_t req_len, void *resp,
                   uint32_t resp_len, uint64_t timeout_ms)
{
    struct virtq *q = &d->queue[index];
    volatile uint16_t *used_idx = &q->used.idx;
    uint16_t head, slot;

    if (index >= d->nqueues || !q->size)
        return fail(d, "request on a queue that is not set up");
    /* one chain in flight at a time: descriptors 0 and 1 */
    head = 0;
    q->desc[0] = (struct virtq_desc){ (uintptr_t)req, req_len, VIRTQ_DESC_F_NEXT, 1 };
    q->desc[1] = (struct virtq_desc){ (uintptr_t)resp, resp_len, VIRTQ_DESC_F_WRITE, 0 };
    slot = q->avail.idx % q->size;
    q->avail.ring[slot] = head;
    dmb(ish); /* the descriptors and ring entry before the index */
    q->avail.idx = (uint16_t)(q->avail.idx + 1);
    dsb(sy); /* the index in memory before the notification */
    wr(d, MMIO_QUEUE_NOTIFY, index);

    if (!POLL_UNTIL(*used_idx != q->last_used, timeout_ms)) {
        printf("virtio: slot %d queue %u: no response within %lu ms\n", d->slot, index, timeout_ms);
        return -1;
    }
    dmb(ish); /* the used element after its index */
    struct virtq_used_elem e = q->used.ring[q->last_used % q->size];
    q->last_used = (uint16_t)(q->last_used + 1);

    uint32_t isr = rd(d, MMIO_INTERRUPT_STATUS);
    if (isr)
        wr(d, MMIO_INTERRUPT_ACK, isr);
    if (e.id != head) {
        printf("virtio: slot %d queue %u: used id %u, expected %u\n", d->slot, index, e.id, head);
        return -1;
    }
    return (int)e.len;
}

uint32_t virtio_config_read32(struct virtio_dev *d, unsigned offset)
{
    return rd(d, VIRTIO_MMIO_CONFIG + offset);
}

void virtio_config_write32(struct virtio_dev *d, unsigned offset, uint32_t v)
{
    wr(d, VIRTIO_MMIO_CONFIG + offset, v);
}
