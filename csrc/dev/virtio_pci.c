/*
 * virtio_pci.c - the virtio-pci modern transport (virtio 1.2 §4.1): a PCI function per device
 * (vendor 1af4, device 1040 + type, revision 1: no legacy interface), its vendor capabilities (common
 * config, notify, ISR, device config) pointing into one memory BAR, MSI-X with a vector per queue plus
 * the config vector, and INTA# while MSI-X is off. Status, features, queues and the ISR live in the
 * core (virtio.c); config space, BARs and MSI-X in pci_cfg.c / pci_msix.c.
 *
 * BAR 0, 32 KiB:
 *   0x0000 common config (struct virtio_pci_common_cfg, §4.1.4.3)
 *   0x1000 ISR status (§4.1.4.5), read-to-clear
 *   0x2000 device config (§4.1.4.6), up to 4 KiB
 *   0x3000 notifications: queue q at 0x3000 + 4q (queue_notify_off = q, multiplier 4, §4.1.4.4)
 *   0x4000 MSI-X table, 0x5000 MSI-X PBA
 * and the VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9): any of these through config space.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/snapshot.h"
#include "../core/vm.h"
#include "pci.h"
#include "virtio_ids.h"
#include "virtio_transport.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE0 0x1040 /* + device type (§4.1.2.1), up to 0x107f */
#define VIRTIO_PCI_SUBSYS 0x1100  /* QEMU's subsystem ID for its devices; drivers do not match on it */

#define BAR_SIZE 0x8000u
#define OFF_COMMON 0x0000u
#define LEN_COMMON 0x3cu /* up to queue_reset */
#define OFF_ISR 0x1000u
#define OFF_DEVICE 0x2000u
#define OFF_NOTIFY 0x3000u
#define NOTIFY_MULT 4u
#define OFF_MSIX_TABLE 0x4000u
#define OFF_MSIX_PBA 0x5000u

/* cfg_type of struct virtio_pci_cap (§4.1.4) */
enum { CAP_COMMON = 1, CAP_NOTIFY = 2, CAP_ISR = 3, CAP_DEVICE = 4, CAP_PCI_CFG = 5 };
#define PCI_CFG_DATA 16 /* struct virtio_pci_cfg_cap: pci_cfg_data after the 16-byte virtio_pci_cap */

/* struct virtio_pci_common_cfg offsets (§4.1.4.3) */
enum {
    CC_DFSELECT = 0x00,
    CC_DF = 0x04,
    CC_GFSELECT = 0x08,
    CC_GF = 0x0c,
    CC_MSIX_CONFIG = 0x10,
    CC_NUM_QUEUES = 0x12,
    CC_STATUS = 0x14,
    CC_CFG_GENERATION = 0x15,
    CC_Q_SELECT = 0x16,
    CC_Q_SIZE = 0x18,
    CC_Q_MSIX = 0x1a,
    CC_Q_ENABLE = 0x1c,
    CC_Q_NOTIFY_OFF = 0x1e,
    CC_Q_DESC = 0x20,
    CC_Q_DRIVER = 0x28,
    CC_Q_DEVICE = 0x30,
    CC_Q_NOTIF_DATA = 0x38,
    CC_Q_RESET = 0x3a,
};

/* One device's transport: its PCI function and the registers of its own (selectors, vectors). */
struct vpci {
    struct vmm_pci_func f; /* first: the host holds &f */
    struct vmm_virtio *v;
    unsigned nvec;
    uint32_t dfselect, gfselect;
    uint16_t queue_select, config_vector;
    uint16_t queue_vector[VIRTIO_MAX_QUEUES];
};

/* Device lock held. MSI-X on: the queue's / config vector (LOWER sends nothing); off: INTA# = ISR != 0. */
static void vpci_interrupt(void *t, uint32_t isr, enum vmm_virtio_irq why, unsigned q)
{
    struct vpci *p = t;
    uint16_t vec = PCI_MSIX_NO_VECTOR;

    vmm__pci_lock(p->f.host);
    if (vmm__pci_msix_enabled_locked(&p->f)) {
        if (why == VMM_VIRTIO_IRQ_VRING && q < VIRTIO_MAX_QUEUES)
            vec = p->queue_vector[q];
        else if (why == VMM_VIRTIO_IRQ_CONFIG)
            vec = p->config_vector;
        if (vec != PCI_MSIX_NO_VECTOR) /* §4.1.5.1.3: NO_VECTOR means no notification */
            vmm__pci_msix_signal_locked(&p->f, vec);
        p->f.intx_level = false;
    } else {
        p->f.intx_level = isr != 0;
    }
    vmm__pci_intx_update(&p->f);
    vmm__pci_unlock(p->f.host);
}

static void vpci_reset(void *t)
{
    struct vpci *p = t;

    p->dfselect = p->gfselect = 0;
    p->queue_select = 0;
    p->config_vector = PCI_MSIX_NO_VECTOR;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        p->queue_vector[i] = PCI_MSIX_NO_VECTOR;
}

/* Device lock held: the function (config space, MSI-X) and our registers, checked as writes are. */
static void vpci_snap(void *t, struct vmm_snap *s)
{
    struct vpci *p = t;
    unsigned nq = vmm__virtio_num_queues(p->v);

    vmm__pci_lock(p->f.host);
    vmm__pci_func_snap(&p->f, s);
    vmm__pci_unlock(p->f.host);
    vmm__snap_u32(s, &p->dfselect);
    vmm__snap_u32(s, &p->gfselect);
    vmm__snap_u16(s, &p->queue_select);
    vmm__snap_u16(s, &p->config_vector);
    for (unsigned q = 0; q < nq; q++)
        vmm__snap_u16(s, &p->queue_vector[q]);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    if (p->config_vector != PCI_MSIX_NO_VECTOR && p->config_vector >= p->nvec)
        vmm__snap_fail(s, "%s: config vector %u of %u", p->f.name, p->config_vector, p->nvec);
    for (unsigned q = 0; q < nq && !vmm__snap_error(s); q++)
        if (p->queue_vector[q] != PCI_MSIX_NO_VECTOR && p->queue_vector[q] >= p->nvec)
            vmm__snap_fail(s, "%s: queue %u vector %u of %u", p->f.name, q, p->queue_vector[q], p->nvec);
    if (vmm__snap_error(s))
        vpci_reset(p);
    else
        vpci_interrupt(p, vmm__virtio_isr(p->v), VMM_VIRTIO_IRQ_LOWER, 0); /* INTA# as the ISR says */
}

static void vpci_destroy(void *t)
{
    free(t);
}

static const struct vmm_virtio_transport_ops vpci_transport = {
    .name = "virtio-pci",
    .config_max = OFF_NOTIFY - OFF_DEVICE,
    .interrupt = vpci_interrupt,
    .reset = vpci_reset,
    .snap = vpci_snap,
    .destroy = vpci_destroy,
};

/* A vector the driver asks for: one we have, or NO_VECTOR (read back so the driver sees it failed). */
static uint16_t vector(const struct vpci *p, uint32_t val)
{
    return val < p->nvec ? (uint16_t)val : PCI_MSIX_NO_VECTOR;
}

static enum vmm_virtq_reg ring_reg(uint64_t off)
{
    return off < CC_Q_DRIVER ? VMM_VIRTQ_DESC : off < CC_Q_DEVICE ? VMM_VIRTQ_DRIVER : VMM_VIRTQ_DEVICE;
}

/* The field an access names: its offset and width (64-bit fields also as 32-bit halves). */
static unsigned field_size(uint64_t off)
{
    if (off < CC_MSIX_CONFIG)
        return 4;
    if (off == CC_STATUS || off == CC_CFG_GENERATION)
        return 1;
    if (off >= CC_Q_DESC && off < CC_Q_NOTIF_DATA)
        return 8;
    return 2;
}

static bool access_ok(uint64_t off, unsigned size)
{
    unsigned fs;

    if (off >= LEN_COMMON)
        return false;
    fs = field_size(off);
    if (fs == 8)
        return (size == 8 && !(off & 7)) || (size == 4 && !(off & 3));
    return size == fs && !(off & (fs - 1));
}

static uint64_t common_read(struct vpci *p, uint64_t off)
{
    struct vmm_virtio *v = p->v;
    uint16_t q = p->queue_select;

    switch (off) {
    case CC_DFSELECT:
        return p->dfselect;
    case CC_DF:
        return vmm__virtio_device_features_word(v, p->dfselect);
    case CC_GFSELECT:
        return p->gfselect;
    case CC_GF:
        return vmm__virtio_driver_features_word(v, p->gfselect);
    case CC_MSIX_CONFIG:
        return p->config_vector;
    case CC_NUM_QUEUES:
        return vmm__virtio_num_queues(v);
    case CC_STATUS:
        return vmm__virtio_read_status(v);
    case CC_CFG_GENERATION:
        return vmm__virtio_config_generation(v) & 0xff;
    case CC_Q_SELECT:
        return q;
    case CC_Q_SIZE:
        return vmm__virtio_queue_reg(v, q, VMM_VIRTQ_NUM); /* 0 for a queue that does not exist */
    case CC_Q_MSIX:
        return q < VIRTIO_MAX_QUEUES ? p->queue_vector[q] : PCI_MSIX_NO_VECTOR;
    case CC_Q_ENABLE:
        return vmm__virtio_queue_enabled(v, q);
    case CC_Q_NOTIFY_OFF:
    case CC_Q_NOTIF_DATA:
        return q;
    case CC_Q_RESET:
        return 0; /* a queue reset completes at once */
    }
    return vmm__virtio_queue_reg(v, q, ring_reg(off)); /* the queue addresses */
}

static void common_write(struct vpci *p, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_virtio *v = p->v;
    uint16_t q = p->queue_select;

    switch (off) {
    case CC_DFSELECT:
        p->dfselect = (uint32_t)val;
        return;
    case CC_GFSELECT:
        p->gfselect = (uint32_t)val;
        return;
    case CC_GF:
        vmm__virtio_write_driver_features_word(v, p->gfselect, (uint32_t)val);
        return;
    case CC_MSIX_CONFIG:
        p->config_vector = vector(p, (uint32_t)val);
        return;
    case CC_STATUS:
        vmm__virtio_write_status(v, (uint32_t)val);
        return;
    case CC_Q_SELECT:
        p->queue_select = (uint16_t)val;
        return;
    case CC_Q_SIZE:
        vmm__virtio_set_queue_reg(v, q, VMM_VIRTQ_NUM, val);
        return;
    case CC_Q_MSIX:
        if (q < vmm__virtio_num_queues(v))
            p->queue_vector[q] = vector(p, (uint32_t)val);
        else
            vmm__virtio_guest_error(v, "MSI-X vector for queue %u, which does not exist", q);
        return;
    case CC_Q_ENABLE:
        if (val == 1)
            vmm__virtio_queue_enable(v, q, true);
        else
            vmm__virtio_guest_error(v, "queue_enable = %" PRIu64 " (only 1 may be written, §4.1.4.3.2)", val);
        return;
    case CC_Q_RESET:
        if (val == 1)
            vmm__virtio_queue_reset(v, q);
        return;
    case CC_Q_DESC:
    case CC_Q_DESC + 4:
    case CC_Q_DRIVER:
    case CC_Q_DRIVER + 4:
    case CC_Q_DEVICE:
    case CC_Q_DEVICE + 4: {
        enum vmm_virtq_reg r = ring_reg(off);
        uint64_t old = vmm__virtio_queue_reg(v, q, r);
        if (size == 8)
            old = val;
        else if (off & 4)
            old = (old & 0xffffffffULL) | val << 32;
        else
            old = (old & ~0xffffffffULL) | (val & 0xffffffffULL);
        vmm__virtio_set_queue_reg(v, q, r, old);
        return;
    }
    }
    vmm__virtio_guest_error(v, "write of 0x%" PRIx64 " to read-only common config field 0x%02" PRIx64, val, off);
}

static uint64_t common_access_read(struct vpci *p, uint64_t off, unsigned size)
{
    uint64_t val;

    if (!access_ok(off, size)) {
        vmm__virtio_guest_error(p->v, "%u-byte common config read at 0x%02" PRIx64, size, off);
        return 0;
    }
    if (field_size(off) == 8) {
        val = common_read(p, off & ~7ULL);
        return size == 8 ? val : (uint32_t)(val >> (8 * (off & 4)));
    }
    return common_read(p, off);
}

static uint64_t bar_read(void *opaque, unsigned bar, uint64_t off, unsigned size)
{
    struct vpci *p = opaque;
    struct vmm_virtio *v = p->v;
    uint64_t val = 0;

    (void)bar;
    vmm__virtio_lock(v);
    if (off < OFF_ISR)
        val = common_access_read(p, off, size);
    else if (off == OFF_ISR)
        val = vmm__virtio_read_clear_isr(v); /* §4.1.4.5: reading clears, and de-asserts INTx */
    else if (off >= OFF_DEVICE && off < OFF_NOTIFY)
        vmm__virtio_config_read(v, (uint32_t)(off - OFF_DEVICE), &val, size);
    else
        vmm__virtio_guest_error(v, "%u-byte read at BAR offset 0x%04" PRIx64, size, off);
    vmm__virtio_unlock(v);
    return val;
}

static void notify_write(struct vpci *p, uint64_t off, unsigned size)
{
    uint64_t q = (off - OFF_NOTIFY) / NOTIFY_MULT;

    if ((off - OFF_NOTIFY) % NOTIFY_MULT || size > 4 || q >= vmm__virtio_num_queues(p->v))
        vmm__virtio_guest_error(p->v, "%u-byte notification at BAR offset 0x%04" PRIx64, size, off);
    else
        vmm__virtio_queue_kick(p->v, (uint32_t)q);
}

static void bar_write(void *opaque, unsigned bar, uint64_t off, unsigned size, uint64_t val)
{
    struct vpci *p = opaque;
    struct vmm_virtio *v = p->v;

    (void)bar;
    vmm__virtio_lock(v);
    if (off < OFF_ISR) {
        if (access_ok(off, size))
            common_write(p, off, size, val);
        else
            vmm__virtio_guest_error(v, "%u-byte common config write at 0x%02" PRIx64, size, off);
    } else if (off >= OFF_DEVICE && off < OFF_NOTIFY) {
        vmm__virtio_config_write(v, (uint32_t)(off - OFF_DEVICE), &val, size);
    } else if (off >= OFF_NOTIFY && off < OFF_MSIX_TABLE) {
        notify_write(p, off, size);
    } else {
        vmm__virtio_guest_error(v, "%u-byte write at BAR offset 0x%04" PRIx64, size, off);
    }
    vmm__virtio_unlock(v);
}

static void release(void *opaque)
{
    struct vpci *p = opaque;

    vmm__virtio_destroy(p->v); /* frees p through vpci_destroy */
}

static uint32_t le32(const uint8_t *b)
{
    return b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
}

/*
 * VIRTIO_PCI_CAP_PCI_CFG (§4.1.4.9): the driver sets cap.bar, cap.offset and cap.length (1, 2 or 4,
 * offset aligned to it, inside BAR 0), then reading pci_cfg_data reads that much of the BAR there and
 * writing it writes its first cap.length bytes. The host calls this for pci_cfg_data, its lock not held.
 */
static void cfg_window(void *opaque, unsigned off, unsigned size, bool is_write, uint64_t *val)
{
    struct vpci *p = opaque;
    uint8_t *data = p->f.cfg + p->f.hook_at, *cap = data - PCI_CFG_DATA;
    unsigned first = off - p->f.hook_at;
    uint64_t v;

    vmm__virtio_lock(p->v);
    vmm__pci_lock(p->f.host);
    uint32_t bar = cap[4], boff = le32(cap + 8), len = le32(cap + 12);
    for (unsigned i = 0; is_write && i < size && first + i < 4; i++)
        data[first + i] = (uint8_t)(*val >> (8 * i));
    v = le32(data);
    vmm__pci_unlock(p->f.host);
    if (bar != 0 || (len != 1 && len != 2 && len != 4) || boff % len || boff >= BAR_SIZE) {
        vmm__virtio_guest_error(p->v, "PCI config window: bar %u offset 0x%x length %u", bar, boff, len);
    } else {
        if (len < 4)
            v &= (1u << (8 * len)) - 1;
        vmm__pci_bar_access(&p->f, 0, boff, len, is_write, &v);
        vmm__pci_lock(p->f.host);
        for (unsigned i = 0; !is_write && i < len; i++)
            data[i] = (uint8_t)(v >> (8 * i));
        vmm__pci_unlock(p->f.host);
    }
    if (!is_write) { /* what the access covers of pci_cfg_data, as stored now */
        uint64_t r = 0;
        vmm__pci_lock(p->f.host);
        for (unsigned i = 0; i < size && first + i < 4; i++)
            r |= (uint64_t)data[first + i] << (8 * i);
        vmm__pci_unlock(p->f.host);
        *val = r;
    }
    vmm__virtio_unlock(p->v);
}

static const struct vmm_pci_func_ops vpci_func_ops = {
    .read = bar_read, .write = bar_write, .release = release, .cfg_hook = cfg_window
};

/* struct virtio_pci_cap (§4.1.4): `extra` more bytes for the notify capability's multiplier */
static int add_vcap(struct vpci *p, uint8_t type, uint32_t off, uint32_t len, uint32_t extra)
{
    uint8_t at = vmm__pci_func_add_cap(&p->f, PCI_CAP_ID_VNDR, 16 + extra);
    uint8_t *c = p->f.cfg + at;

    if (!at)
        return -1;
    c[2] = (uint8_t)(16 + extra); /* cap_len */
    c[3] = type;
    c[4] = 0; /* bar */
    for (unsigned i = 0; i < 4; i++) {
        c[8 + i] = (uint8_t)(off >> (8 * i));
        c[12 + i] = (uint8_t)(len >> (8 * i));
        if (extra)
            c[16 + i] = (uint8_t)(NOTIFY_MULT >> (8 * i));
    }
    return 0;
}

/* The VIRTIO_PCI_CAP_PCI_CFG capability: bar, offset and length writable, pci_cfg_data ours (cfg_window). */
static int add_cfg_window(struct vpci *p)
{
    uint8_t at = vmm__pci_func_add_cap(&p->f, PCI_CAP_ID_VNDR, PCI_CFG_DATA + 4);

    if (!at)
        return -1;
    p->f.cfg[at + 2] = PCI_CFG_DATA + 4;
    p->f.cfg[at + 3] = CAP_PCI_CFG;
    p->f.wmask[at + 4] = 0xff;
    for (unsigned i = 8; i < PCI_CFG_DATA + 4; i++) /* offset, length; pci_cfg_data (for snapshots) */
        p->f.wmask[at + i] = 0xff;
    p->f.hook_at = (uint8_t)(at + PCI_CFG_DATA);
    p->f.hook_len = 4;
    return 0;
}

/* PCI class of each device type, as QEMU's virtio-*-pci give them (base class, subclass) */
static uint32_t class_of(uint32_t id)
{
    switch (id) {
    case VIRTIO_ID_BLOCK:
        return 0x0100; /* mass storage: SCSI */
    case VIRTIO_ID_CONSOLE:
        return 0x0780; /* communication: other */
    case VIRTIO_ID_GPU:
        return 0x0380; /* display: other */
    case VIRTIO_ID_INPUT:
        return 0x0980; /* input: other */
    case 1:
        return 0x0200; /* network: Ethernet */
    case VIRTIO_ID_9P:
        return 0x0280; /* network: other */
    default:
        return 0x00ff; /* unclassified: other */
    }
}

static int build_func(struct vpci *p, const struct vmm_virtio_ops *ops)
{
    vmm__pci_func_init(&p->f, VIRTIO_PCI_VENDOR, (uint16_t)(VIRTIO_PCI_DEVICE0 + ops->device_id),
                       class_of(ops->device_id) << 16 | 1, VIRTIO_PCI_VENDOR, VIRTIO_PCI_SUBSYS);
    vmm__pci_func_add_bar(&p->f, 0, BAR_SIZE);
    p->f.ops = &vpci_func_ops;
    p->f.opaque = p;
    if (add_vcap(p, CAP_COMMON, OFF_COMMON, LEN_COMMON, 0) ||
        add_vcap(p, CAP_NOTIFY, OFF_NOTIFY, NOTIFY_MULT * (ops->num_queues ? ops->num_queues : 1), 4) ||
        add_vcap(p, CAP_ISR, OFF_ISR, 1, 0) ||
        (ops->config_size && add_vcap(p, CAP_DEVICE, OFF_DEVICE, ops->config_size, 0)) || add_cfg_window(p))
        return -1;
    return vmm__pci_func_add_msix(&p->f, p->nvec, 0, OFF_MSIX_TABLE, OFF_MSIX_PBA);
}

int vmm__virtio_pci_add(struct vmm_vm *vm, const struct vmm_virtio_ops *ops, void *dev, struct vmm_virtio **out)
{
    struct vpci *p;
    char where[40];
    int rc;

    if (out)
        *out = NULL;
    if (ops->device_id > 0x3f) /* §4.1.2.1: 0x1040 + type must stay within 0x1040-0x107f */
        return vmm__set_error(vm, VMM_ENOTSUP, "virtio-%s: device type %" PRIu32 " has no virtio-pci device ID",
                              ops->name, ops->device_id);
    if (!(p = calloc(1, sizeof *p)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for virtio-%s", ops->name);
    p->nvec = ops->num_queues + 1; /* a vector per queue and one for configuration changes */
    vpci_reset(p);
    if (build_func(p, ops)) {
        free(p);
        return vmm__set_error(vm, VMM_EINVAL, "virtio-%s: its PCI capabilities do not fit", ops->name);
    }
    if ((rc = vmm__pci_host_add(vm, &p->f, "virtio-pci"))) {
        free(p);
        return rc;
    }
    snprintf(where, sizeof where, "%s", p->f.name);
    if ((rc = vmm__virtio_create(vm, ops, dev, &vpci_transport, p, where, &p->v))) {
        vmm__pci_host_remove(vm, &p->f);
        free(p);
        return rc;
    }
    if (out)
        *out = p->v;
    return 0;
}
