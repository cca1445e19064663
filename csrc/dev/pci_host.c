/*
 * pci_host.c - the PCIe host bridge: a generic ECAM ("pci-host-ecam-generic", PCIe 5.0 §7.2.2) with
 * one populated bus, the 32-bit MMIO window where the guest places memory BARs, and the device-tree
 * node (bindings/pci/host-generic-pci.yaml) with `ranges`, INTx `interrupt-map` and `msi-map`.
 *
 * BARs move without the backends remapping anything: the whole window is one bus region, and each
 * access is routed here to the function whose enabled BAR covers it (pci_cfg.c decodes), as a
 * bridge forwards what falls in its window. Accesses nothing decodes read 0, writes are dropped.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>

#include "../core/board.h"
#include "../core/fdt.h"
#include "../core/irqchip.h"
#include "../core/layout.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "pci.h"

/* QEMU's generic PCIe host bridge function (hw/pci-host/gpex.c): Red Hat's 1b36:0008, class 06.00 */
#define HOST_VENDOR 0x1b36
#define HOST_DEVICE 0x0008
#define CLASS_HOST_BRIDGE 0x06000000u

struct vmm_pci_host {
    struct vmm_vm *vm;
    pthread_mutex_t lock;
    struct vmm_pci_func *slot[PCI_SLOTS];
    unsigned nslots;
    struct vmm_pci_func bridge; /* 00:00.0 */
};

void vmm__pci_lock(struct vmm_pci_host *h)
{
    pthread_mutex_lock(&h->lock);
}

void vmm__pci_unlock(struct vmm_pci_host *h)
{
    pthread_mutex_unlock(&h->lock);
}

struct vmm_vm *vmm__pci_vm(struct vmm_pci_host *h)
{
    return h->vm;
}

/* INTx# lines are open drain and shared (PCI Local Bus 3.0 §2.2.6): the slots equal mod 4 are swizzled onto
 * one SPI, which is high while any of them asserts; one letting go must not lower the others'. */
bool vmm__pci_intx_wired_or(const struct vmm_pci_host *h, unsigned intid)
{
    for (unsigned i = 0; i < h->nslots; i++)
        if (h->slot[i]->intx_intid == intid && h->slot[i]->intx_driven)
            return true;
    return false;
}

uint32_t vmm__pci_requester_id(const struct vmm_pci_func *f)
{
    return f->devfn; /* bus 0 */
}

/* ECAM: bus[27:20] device[19:15] function[14:12] register[11:0] (PCIe 5.0 §7.2.2.1) */
static struct vmm_pci_func *ecam_func(struct vmm_pci_host *h, uint64_t off)
{
    unsigned bus = (unsigned)(off >> 20), dev = (unsigned)(off >> 15) & 31, fn = (unsigned)(off >> 12) & 7;

    if (bus != 0 || fn != 0 || dev >= h->nslots)
        return NULL;
    return h->slot[dev];
}

static bool ecam_bad(struct vmm_pci_host *h, uint64_t off, unsigned size, const char *what)
{
    if ((size == 1 || size == 2 || size == 4) && !(off & (size - 1)))
        return false;
    vmm__guest_error(h->vm, "pci", "%u-byte ECAM %s at 0x%" PRIx64 ": config accesses are 1, 2 or 4 aligned bytes",
                     size, what, off);
    return true;
}

/*
 * Does this config access touch the range the function's owner serves itself? Accesses are aligned
 * and hook_at is 4-aligned: one that touches the range starts in it.
 */
static bool hooked(const struct vmm_pci_func *f, uint64_t reg)
{
    return f->hook_len && reg >= f->hook_at && reg < (unsigned)f->hook_at + f->hook_len;
}

static uint64_t ecam_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_pci_host *h = dev;
    struct vmm_pci_func *f;
    uint64_t val;

    if (ecam_bad(h, off, size, "read"))
        return 0;
    vmm__pci_lock(h);
    f = ecam_func(h, off);
    if (f && hooked(f, off & 0xfff)) {
        vmm__pci_unlock(h);
        val = 0;
        f->ops->cfg_hook(f->opaque, off & 0xfff, size, false, &val);
        return val;
    }
    /* no function there: the read completes as Unsupported Request, all ones (§7.2.2.3) */
    val = f ? vmm__pci_cfg_read(f, off & 0xfff, size) : (size == 4 ? 0xffffffffu : (1u << (8 * size)) - 1);
    vmm__pci_unlock(h);
    return val;
}

static void ecam_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_pci_host *h = dev;
    struct vmm_pci_func *f;

    if (ecam_bad(h, off, size, "write"))
        return;
    vmm__pci_lock(h);
    if ((f = ecam_func(h, off)) && hooked(f, off & 0xfff)) {
        vmm__pci_unlock(h);
        f->ops->cfg_hook(f->opaque, off & 0xfff, size, true, &val);
        return;
    }
    if (f)
        vmm__pci_cfg_write(f, off & 0xfff, size, (uint32_t)val);
    vmm__pci_unlock(h);
}

static const struct vmm_mmio_ops ecam_ops = { .read = ecam_read, .write = ecam_write };

/* The function decoding gpa; with the lock held. */
static struct vmm_pci_func *window_func(struct vmm_pci_host *h, uint64_t gpa, unsigned *bar, uint64_t *off)
{
    for (unsigned i = 0; i < h->nslots; i++)
        if (vmm__pci_bar_decode(h->slot[i], gpa, bar, off))
            return h->slot[i];
    return NULL;
}

void vmm__pci_bar_access(struct vmm_pci_func *f, unsigned bar, uint64_t off, unsigned size, bool is_write,
                         uint64_t *val)
{
    vmm__pci_lock(f->host);
    if (vmm__pci_msix_in_bar(f, bar, off, size)) {
        if (is_write)
            vmm__pci_msix_write(f, off, size, *val);
        else
            *val = vmm__pci_msix_read(f, off, size);
        vmm__pci_unlock(f->host);
        return;
    }
    vmm__pci_unlock(f->host);
    if (is_write)
        f->ops->write(f->opaque, bar, off, size, *val);
    else
        *val = f->ops->read(f->opaque, bar, off, size);
}

static void window_access(struct vmm_pci_host *h, uint64_t off, unsigned size, bool is_write, uint64_t *val)
{
    uint64_t gpa = LAYOUT_PCI_MMIO_BASE + off, boff;
    struct vmm_pci_func *f;
    unsigned bar;

    vmm__pci_lock(h);
    f = window_func(h, gpa, &bar, &boff);
    vmm__pci_unlock(h);
    if (f) {
        vmm__pci_bar_access(f, bar, boff, size, is_write, val);
        return;
    }
    vmm__guest_error(h->vm, "pci", "%s of %u bytes at 0x%" PRIx64 ": no BAR there", is_write ? "write" : "read", size,
                     gpa);
    if (!is_write)
        *val = 0;
}

static uint64_t window_read(void *dev, uint64_t off, unsigned size)
{
    uint64_t val = 0;

    window_access(dev, off, size, false, &val);
    return val;
}

static void window_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    window_access(dev, off, size, true, &val);
}

static const struct vmm_mmio_ops window_ops = { .read = window_read, .write = window_write };

/* interrupt-map: INTA..INTD of slots 0-3 (the mask repeats them): SPI base + (slot + pin) % 4 */
static int fdt_interrupt_map(void *fdt)
{
    fdt32_t map[4 * 4 * 10];
    unsigned n = 0;

    for (unsigned slot = 0; slot < 4; slot++) {
        for (unsigned pin = 0; pin < 4; pin++) {
            const uint32_t e[10] = { slot << 11,
                                     0,
                                     0,
                                     pin + 1,
                                     FDT_PH_GIC,
                                     0,
                                     0,
                                     FDT_GIC_SPI,
                                     LAYOUT_PCI_SPI0 + (slot + pin) % 4,
                                     FDT_IRQ_TYPE_LEVEL_HIGH };
            for (unsigned i = 0; i < 10; i++)
                map[n++] = cpu_to_fdt32(e[i]);
        }
    }
    return fdt_property(fdt, "interrupt-map", map, sizeof map);
}

static int host_fdt_node(void *dev, struct vmm_vm *vm, void *fdt)
{
    static const uint32_t bus_range[] = { 0, LAYOUT_PCI_BUSES - 1 };
    static const uint32_t ranges[] = { 0x02000000,
                                       0,
                                       (uint32_t)LAYOUT_PCI_MMIO_BASE,
                                       0,
                                       (uint32_t)LAYOUT_PCI_MMIO_BASE,
                                       0,
                                       (uint32_t)LAYOUT_PCI_MMIO_SIZE };
    static const uint32_t imask[] = { 3u << 11, 0, 0, 7 };
    static const uint32_t msi_map[] = { 0, FDT_PH_ITS, 0, 0x10000 }; /* requester ID = ITS device ID */
    char name[40];
    int err;

    (void)dev;
    snprintf(name, sizeof name, "pcie@%llx", (unsigned long long)LAYOUT_PCI_MMIO_BASE);
    if ((err = fdt_begin_node(fdt, name)) < 0 ||
        (err = fdt_property_string(fdt, "compatible", "pci-host-ecam-generic")) < 0 ||
        (err = fdt_property_string(fdt, "device_type", "pci")) < 0 ||
        (err = vmm__fdt_prop_u64_pair(fdt, "reg", LAYOUT_PCI_ECAM_BASE, LAYOUT_PCI_ECAM_SIZE)) < 0 ||
        (err = vmm__fdt_prop_cells(fdt, "bus-range", bus_range, 2)) < 0 ||
        (err = fdt_property_u32(fdt, "linux,pci-domain", 0)) < 0 ||
        (err = fdt_property_u32(fdt, "#address-cells", 3)) < 0 || (err = fdt_property_u32(fdt, "#size-cells", 2)) < 0 ||
        (err = vmm__fdt_prop_cells(fdt, "ranges", ranges, 7)) < 0 ||
        (err = fdt_property(fdt, "dma-coherent", NULL, 0)) < 0 ||
        (err = fdt_property_u32(fdt, "#interrupt-cells", 1)) < 0 ||
        (err = vmm__fdt_prop_cells(fdt, "interrupt-map-mask", imask, 4)) < 0 || (err = fdt_interrupt_map(fdt)) < 0)
        return err;
    /* MSIs only where the irqchip takes them (the GICv3 ITS); without, Linux stays on INTx */
    if (vmm__irqchip_has_its(vm->irqchip) && (err = vmm__fdt_prop_cells(fdt, "msi-map", msi_map, 4)) < 0)
        return err;
    return fdt_end_node(fdt);
}

static void host_reset(void *dev)
{
    struct vmm_pci_host *h = dev;

    vmm__pci_lock(h);
    for (unsigned i = 0; i < h->nslots; i++)
        vmm__pci_func_reset(h->slot[i]);
    vmm__pci_unlock(h);
}

/* Snapshots: the bridge function's registers and how many functions the bus has (each transport
 * saves its own function's, in its device's section). */
static int host_snap(void *dev, struct vmm_snap *s)
{
    struct vmm_pci_host *h = dev;
    uint32_t n = h->nslots;

    vmm__pci_lock(h);
    vmm__snap_u32(s, &n);
    if (vmm__snap_loading(s) && !vmm__snap_error(s) && n != h->nslots)
        vmm__snap_fail(s, "%u PCI functions saved, this bus has %u", n, h->nslots);
    else
        vmm__pci_func_snap(&h->bridge, s);
    vmm__pci_unlock(h);
    return vmm__snap_error(s);
}

/* After the devices (reverse order): each function's owner releases it (a virtio core and its transport). */
static void host_destroy(void *dev)
{
    struct vmm_pci_host *h = dev;

    for (unsigned i = 1; i < h->nslots; i++)
        if (h->slot[i]->ops->release)
            h->slot[i]->ops->release(h->slot[i]->opaque);
    h->vm->pci = NULL;
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static const struct vmm_device_ops host_device = {
    .name = "pci-host",
    .fdt_node = host_fdt_node,
    .reset = host_reset,
    .save = host_snap,
    .load = host_snap,
    .snap_version = 1,
    .destroy = host_destroy,
};

static uint64_t bridge_bar_read(void *opaque, unsigned bar, uint64_t off, unsigned size)
{
    (void)opaque, (void)bar, (void)off, (void)size;
    return 0; /* it has no BARs: never decoded */
}

static void bridge_bar_write(void *opaque, unsigned bar, uint64_t off, unsigned size, uint64_t val)
{
    (void)opaque, (void)bar, (void)off, (void)size, (void)val;
}

static const struct vmm_pci_func_ops bridge_ops = { .read = bridge_bar_read, .write = bridge_bar_write };

static int host_attach(struct vmm_vm *vm, struct vmm_pci_host *h)
{
    int rc;

    if ((rc = vmm__board_add(vm, &host_device, h)))
        return rc;
    if ((rc = vmm__bus_add(vm, LAYOUT_PCI_ECAM_BASE, LAYOUT_PCI_ECAM_SIZE, "pci-ecam", &ecam_ops, h)) ||
        (rc = vmm__bus_add(vm, LAYOUT_PCI_MMIO_BASE, LAYOUT_PCI_MMIO_SIZE, "pci-mmio", &window_ops, h))) {
        vmm__board_remove(vm, h);
        return rc;
    }
    return 0;
}

int vmm__pci_host_init(struct vmm_vm *vm)
{
    struct vmm_pci_host *h;
    int rc;

    if (!(h = calloc(1, sizeof *h)))
        return vmm__set_error(vm, VMM_ENOMEM, "out of memory for the PCI host bridge");
    h->vm = vm;
    pthread_mutex_init(&h->lock, NULL);
    vmm__pci_func_init(&h->bridge, HOST_VENDOR, HOST_DEVICE, CLASS_HOST_BRIDGE, HOST_VENDOR, 0x1100);
    h->bridge.host = h;
    h->bridge.ops = &bridge_ops;
    snprintf(h->bridge.name, sizeof h->bridge.name, "pci-host.00:00.0");
    h->slot[h->nslots++] = &h->bridge;
    if ((rc = host_attach(vm, h))) {
        pthread_mutex_destroy(&h->lock);
        free(h);
        return rc;
    }
    vm->pci = h;
    return 0;
}

int vmm__pci_host_add(struct vmm_vm *vm, struct vmm_pci_func *f, const char *what)
{
    struct vmm_pci_host *h = vm->pci; /* made by board init for the PCI transport, the only one adding functions */
    unsigned slot;

    if (h->nslots >= PCI_SLOTS)
        return vmm__set_error(vm, VMM_ENOMEM, "%s: all %d slots of PCI bus 0 are in use", what, PCI_SLOTS);
    slot = h->nslots;
    f->host = h;
    f->devfn = (uint8_t)(slot << 3);
    f->intx_intid = LAYOUT_SPI_INTID(LAYOUT_PCI_SPI0 + slot % 4); /* INTA# of slot s: (s + 0) % 4 */
    f->cfg[PCI_INT_PIN] = 1;                                      /* INTA# */
    snprintf(f->name, sizeof f->name, "%s.00:%02x.0", what, slot);
    vmm__pci_lock(h);
    h->slot[h->nslots++] = f;
    vmm__pci_unlock(h);
    vmm__log(vm, VMM_LOG_DEBUG, "pci", "%s on 00:%02x.0, INTA# = INTID %u", what, slot, f->intx_intid);
    return 0;
}

void vmm__pci_host_remove(struct vmm_vm *vm, struct vmm_pci_func *f)
{
    struct vmm_pci_host *h = vm->pci;

    vmm__pci_lock(h);
    if (h->nslots > 1 && h->slot[h->nslots - 1] == f)
        h->slot[--h->nslots] = NULL;
    vmm__pci_unlock(h);
}
