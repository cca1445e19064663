/*
 * pci_cfg.c - a type 0 PCI function's configuration space (PCI Local Bus 3.0 §6): the header with its
 * write masks, memory BARs (sizing by writing all ones, §6.2.5.1), the capability list, and INTA#
 * (Interrupt Disable, Interrupt Status). Callers hold the host lock (pci.h).
 */
#include <string.h>

#include "../core/irq.h"
#include "../core/snapshot.h"
#include "pci.h"

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static uint32_t get32(const uint8_t *p)
{
    return p[0] + ((uint32_t)p[1] << 8) + ((uint32_t)p[2] << 16) + ((uint32_t)p[3] << 24);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

void vmm__pci_func_init(struct vmm_pci_func *f, uint16_t vendor, uint16_t device, uint32_t class_rev,
                        uint16_t subsys_vendor, uint16_t subsys_id)
{
    memset(f->cfg, 0, sizeof f->cfg);
    memset(f->wmask, 0, sizeof f->wmask);
    memset(f->bar_size, 0, sizeof f->bar_size);
    memset(&f->msix, 0, sizeof f->msix);
    f->hook_at = f->hook_len = 0;
    put16(f->cfg + PCI_VENDOR_ID, vendor);
    put16(f->cfg + PCI_DEVICE_ID, device);
    put32(f->cfg + PCI_REVISION, class_rev); /* revision, prog-if, subclass, class */
    put16(f->cfg + PCI_SUBSYS_VENDOR, subsys_vendor);
    put16(f->cfg + PCI_SUBSYS_ID, subsys_id);
    /* Command: memory space, bus master, Interrupt Disable are ours to honour; the rest reads 0 */
    put16(f->wmask + PCI_COMMAND, PCI_CMD_MEM | PCI_CMD_MASTER | PCI_CMD_INTX_DISABLE);
    f->wmask[0x0c] = 0xff;         /* cache line size: a plain register */
    f->wmask[PCI_INT_LINE] = 0xff; /* firmware's scratch */
    f->cap_end = 0x40;
    f->cap_last = 0;
    f->intx_level = f->intx_driven = false;
}

void vmm__pci_func_add_bar(struct vmm_pci_func *f, unsigned bar, uint64_t size)
{
    if (bar >= PCI_NUM_BARS || size < 4096 || size > (1u << 30) || (size & (size - 1)))
        return; /* a programming error of ours: the BAR stays absent (and the device unusable) */
    f->bar_size[bar] = size;
    put32(f->wmask + PCI_BAR0 + 4 * bar, (uint32_t) ~(size - 1)); /* the low flag bits are read-only 0 */
}

uint8_t vmm__pci_func_add_cap(struct vmm_pci_func *f, uint8_t id, unsigned len)
{
    unsigned at = (f->cap_end + 3u) & ~3u;

    if (len < 2 || at + len > PCI_CFG_SIZE)
        return 0;
    f->cfg[at] = id;
    f->cfg[at + 1] = 0;
    if (f->cap_last)
        f->cfg[f->cap_last + 1] = (uint8_t)at;
    else
        f->cfg[PCI_CAP_PTR] = (uint8_t)at;
    put16(f->cfg + PCI_STATUS, get16(f->cfg + PCI_STATUS) | PCI_STATUS_CAPS);
    f->cap_last = (uint8_t)at;
    f->cap_end = (uint8_t)(at + len < PCI_CFG_SIZE ? at + len : PCI_CFG_SIZE - 1);
    return (uint8_t)at;
}

int vmm__pci_func_add_msix(struct vmm_pci_func *f, unsigned nvec, unsigned bar, uint32_t table_off, uint32_t pba_off)
{
    uint8_t at;

    if (!nvec || nvec > PCI_MSIX_MAX || bar >= PCI_NUM_BARS || (table_off & 7) || (pba_off & 7) ||
        table_off + nvec * PCI_MSIX_ENTRY_SIZE > f->bar_size[bar] || pba_off + (nvec + 63) / 64 * 8 > f->bar_size[bar])
        return -1;
    if (!(at = vmm__pci_func_add_cap(f, PCI_CAP_ID_MSIX, 12)))
        return -1;
    put16(f->cfg + at + PCI_MSIX_CTRL, (uint16_t)(nvec - 1));
    put32(f->cfg + at + PCI_MSIX_TABLE, table_off | bar);
    put32(f->cfg + at + PCI_MSIX_PBA, pba_off | bar);
    put16(f->wmask + at + PCI_MSIX_CTRL, PCI_MSIX_CTRL_ENABLE | PCI_MSIX_CTRL_MASKALL);
    f->msix = (struct vmm_pci_msix){
        .nvec = nvec, .cap = at, .bar = (uint8_t)bar, .table_off = table_off, .pba_off = pba_off
    };
    vmm__pci_msix_reset(f);
    return 0;
}

/* What the function drives on INTA#: its level unless disabled or replaced by MSI-X; the SPI is the
 * wired-OR of every function sharing it. */
void vmm__pci_intx_update(struct vmm_pci_func *f)
{
    bool on =
        f->intx_level && !(get16(f->cfg + PCI_COMMAND) & PCI_CMD_INTX_DISABLE) && !vmm__pci_msix_enabled_locked(f);

    if (f->intx_intid && on != f->intx_driven) {
        f->intx_driven = on;
        vmm__irq_set(vmm__pci_vm(f->host), 0, f->intx_intid, vmm__pci_intx_wired_or(f->host, f->intx_intid));
    }
}

uint32_t vmm__pci_cfg_read(struct vmm_pci_func *f, unsigned off, unsigned size)
{
    uint32_t v = 0;

    if (off + size > PCI_CFG_SIZE) /* off < 4 KiB, size <= 4: no overflow */
        return 0;                  /* extended config space: no capabilities there (a 0 header ends the list) */
    for (unsigned i = 0; i < size; i++) {
        uint8_t b = f->cfg[off + i];
        if (off + i == PCI_STATUS && f->intx_level) /* Interrupt Status: the function's own INTx state */
            b |= PCI_STATUS_INTX;
        v |= (uint32_t)b << (8 * i);
    }
    return v;
}

static bool touches(unsigned off, unsigned size, unsigned reg, unsigned reg_size)
{
    return off < reg + reg_size && reg < off + size;
}

void vmm__pci_cfg_write(struct vmm_pci_func *f, unsigned off, unsigned size, uint32_t val)
{
    if (off + size > PCI_CFG_SIZE)
        return;
    for (unsigned i = 0; i < size; i++) {
        uint8_t m = f->wmask[off + i], b = (uint8_t)(val >> (8 * i));
        f->cfg[off + i] = (uint8_t)((f->cfg[off + i] & ~m) | (b & m));
    }
    if (touches(off, size, PCI_COMMAND, 2))
        vmm__pci_intx_update(f);
    if (f->msix.nvec && touches(off, size, f->msix.cap + PCI_MSIX_CTRL, 2)) {
        vmm__pci_msix_ctrl_changed(f);
        vmm__pci_intx_update(f);
    }
}

bool vmm__pci_bar_decode(const struct vmm_pci_func *f, uint64_t gpa, unsigned *bar, uint64_t *off)
{
    if (!(get16(f->cfg + PCI_COMMAND) & PCI_CMD_MEM))
        return false;
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        uint64_t size = f->bar_size[i], base = get32(f->cfg + PCI_BAR0 + 4 * i) & ~0xfu;
        if (size && base && gpa >= base && gpa - base < size) {
            *bar = i;
            *off = gpa - base;
            return true;
        }
    }
    return false;
}

/* Power-on values of everything the guest can write (a system reset, or the device's reset). */
void vmm__pci_func_reset(struct vmm_pci_func *f)
{
    for (unsigned i = 0; i < PCI_CFG_SIZE; i++)
        f->cfg[i] &= (uint8_t)~f->wmask[i];
    if (f->msix.nvec)
        vmm__pci_msix_reset(f);
    vmm__pci_intx_update(f);
}

/*
 * Snapshots: the config space as the guest left it (only bits it can write may differ from the
 * function as built), the MSI-X table and PBA, INTA#'s level; then the line driven as loaded.
 */
void vmm__pci_func_snap(struct vmm_pci_func *f, struct vmm_snap *s)
{
    uint8_t built[PCI_CFG_SIZE];

    memcpy(built, f->cfg, sizeof built);
    vmm__snap_bytes(s, f->cfg, sizeof f->cfg);
    vmm__snap_bool(s, &f->intx_level);
    if (vmm__snap_loading(s) && !vmm__snap_error(s)) {
        for (unsigned i = 0; i < PCI_CFG_SIZE; i++) {
            if ((f->cfg[i] ^ built[i]) & ~f->wmask[i]) {
                vmm__snap_fail(s, "%s: config byte 0x%02x is 0x%02x, its read-only bits say 0x%02x", f->name, i,
                               f->cfg[i], built[i]);
                break;
            }
        }
    }
    if (f->msix.nvec && !vmm__snap_error(s))
        vmm__pci_msix_snap(f, s);
    if (vmm__snap_loading(s) && vmm__snap_error(s)) {
        memcpy(f->cfg, built, sizeof built); /* not half a state */
        f->intx_level = false;
        if (f->msix.nvec)
            vmm__pci_msix_reset(f);
    }
    if (vmm__snap_loading(s))
        vmm__pci_intx_update(f);
}
