/*
 * pci.h - the PCI side of the machine: a generic-ECAM host bridge with one bus (pci_host.c) and the
 * type 0 functions on it (pci_cfg.c: config space, BARs, capabilities, INTx; pci_msix.c: MSI-X).
 * Transports (virtio_pci.c) build a function, add it to the host, and get their BAR accesses back
 * through vmm_pci_func_ops.
 *
 * Locking: one mutex per host guards every function's config space, BAR decoding and MSI-X state.
 * It is a leaf but for the irqchip: device lock -> PCI lock -> GIC. BAR accesses are dispatched
 * with it released (the transport takes its device lock), MSI-X table and PBA accesses with it held.
 */
#ifndef VMM_PCI_H
#define VMM_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct vmm_vm;

#define PCI_CFG_SIZE 256 /* conventional config space; the rest of ECAM's 4 KiB reads 0 */
#define PCI_NUM_BARS 6
#define PCI_SLOTS 32
#define PCI_MSIX_MAX 128 /* vectors per function we model (the spec allows 2048) */
#define PCI_MSIX_NO_VECTOR 0xffffu

/* Type 0 header offsets (PCI Local Bus 3.0 §6.1) */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYS_VENDOR 0x2c
#define PCI_SUBSYS_ID 0x2e
#define PCI_CAP_PTR 0x34
#define PCI_INT_LINE 0x3c
#define PCI_INT_PIN 0x3d

#define PCI_CMD_MEM 0x0002u
#define PCI_CMD_MASTER 0x0004u
#define PCI_CMD_INTX_DISABLE 0x0400u
#define PCI_STATUS_INTX 0x0008u
#define PCI_STATUS_CAPS 0x0010u

#define PCI_BAR_MEM_64 0x4u /* memory BAR type 10b */

#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11
/* MSI-X capability (PCI 3.0 §6.8.2) */
#define PCI_MSIX_CTRL 2
#define PCI_MSIX_TABLE 4
#define PCI_MSIX_PBA 8
#define PCI_MSIX_CTRL_ENABLE 0x8000u
#define PCI_MSIX_CTRL_MASKALL 0x4000u
#define PCI_MSIX_ENTRY_SIZE 16
#define PCI_MSIX_ENTRY_CTRL_MASK 1u

/*
 * What a function's owner does: its memory BARs, as the host dispatches accesses to them (offsets
 * within the BAR; MSI-X table and PBA excepted), and its release when the host goes (may be NULL).
 */
struct vmm_pci_func_ops {
    uint64_t (*read)(void *opaque, unsigned bar, uint64_t off, unsigned size);
    void (*write)(void *opaque, unsigned bar, uint64_t off, unsigned size, uint64_t val);
    void (*release)(void *opaque);
    /* Config accesses touching [hook_at, hook_at + hook_len), served by the owner, host lock not held. */
    void (*cfg_hook)(void *opaque, unsigned off, unsigned size, bool is_write, uint64_t *val);
};

struct vmm_pci_msix {
    unsigned nvec; /* 0: no MSI-X capability */
    uint8_t cap;   /* its offset in config space */
    uint8_t bar;
    uint32_t table_off, pba_off; /* in the BAR */
    uint32_t table[PCI_MSIX_MAX][4];
    uint64_t pba[PCI_MSIX_MAX / 64];
};

struct vmm_pci_host;

struct vmm_pci_func {
    struct vmm_pci_host *host; /* set by vmm__pci_host_add */
    uint8_t devfn;             /* slot << 3 | function */
    unsigned intx_intid;       /* INTA# as swizzled by the host (0: none) */
    char name[32];             /* "virtio-pci.00:01.0": for logs */
    uint8_t cfg[PCI_CFG_SIZE];
    uint8_t wmask[PCI_CFG_SIZE]; /* bits the guest may write */
    uint64_t bar_size[PCI_NUM_BARS];
    uint8_t hook_at, hook_len; /* config bytes the owner serves (ops->cfg_hook); len 0: none */
    uint8_t cap_end;           /* where the next capability goes */
    uint8_t cap_last;          /* the last one added (0: none) */
    bool intx_level;           /* the function's INTA# before Interrupt Disable and MSI-X */
    bool intx_driven;          /* the level on the SPI */
    struct vmm_pci_msix msix;
    const struct vmm_pci_func_ops *ops;
    void *opaque;
};

/* pci_cfg.c: building a function (before it joins the host) */
void vmm__pci_func_init(struct vmm_pci_func *f, uint16_t vendor, uint16_t device, uint32_t class_rev,
                        uint16_t subsys_vendor, uint16_t subsys_id);
/* A 32-bit memory BAR of `size` bytes (a power of two, >= 4 KiB). */
void vmm__pci_func_add_bar(struct vmm_pci_func *f, unsigned bar, uint64_t size);
/* A capability of `len` bytes (header included): its config-space offset, 0 if it does not fit. */
uint8_t vmm__pci_func_add_cap(struct vmm_pci_func *f, uint8_t id, unsigned len);
/* An MSI-X capability of nvec vectors, its table and PBA in `bar` at those offsets. 0 or -1 (no room). */
int vmm__pci_func_add_msix(struct vmm_pci_func *f, unsigned nvec, unsigned bar, uint32_t table_off, uint32_t pba_off);

/* pci_cfg.c: config space and BAR decoding, with the host lock held */
uint32_t vmm__pci_cfg_read(struct vmm_pci_func *f, unsigned off, unsigned size);
void vmm__pci_cfg_write(struct vmm_pci_func *f, unsigned off, unsigned size, uint32_t val);
/* Does f decode gpa (memory enabled, inside a BAR)? Which BAR and the offset in it. */
bool vmm__pci_bar_decode(const struct vmm_pci_func *f, uint64_t gpa, unsigned *bar, uint64_t *off);
void vmm__pci_intx_update(struct vmm_pci_func *f);
void vmm__pci_func_reset(struct vmm_pci_func *f);
/* Snapshots (snapshot.h): config space, MSI-X, INTx; loading checks and re-drives the line. */
struct vmm_snap;
void vmm__pci_func_snap(struct vmm_pci_func *f, struct vmm_snap *s);

/* pci_msix.c, host lock held */
bool vmm__pci_msix_in_bar(const struct vmm_pci_func *f, unsigned bar, uint64_t off, unsigned size);
uint64_t vmm__pci_msix_read(struct vmm_pci_func *f, uint64_t off, unsigned size);
void vmm__pci_msix_write(struct vmm_pci_func *f, uint64_t off, unsigned size, uint64_t val);
/* Message Control changed: deliver what is pending and now unmasked. */
void vmm__pci_msix_ctrl_changed(struct vmm_pci_func *f);
bool vmm__pci_msix_enabled_locked(const struct vmm_pci_func *f);
void vmm__pci_msix_signal_locked(struct vmm_pci_func *f, unsigned vec);
void vmm__pci_msix_reset(struct vmm_pci_func *f);
void vmm__pci_msix_snap(struct vmm_pci_func *f, struct vmm_snap *s);

/* From a device (any thread, its own lock held): these take the host lock. */
void vmm__pci_set_intx(struct vmm_pci_func *f, bool level);
bool vmm__pci_msix_enabled(struct vmm_pci_func *f);

/* pci_host.c */
/* The host bridge (ECAM, the MMIO window, 00:00.0) on the bus and the board: once, at board init. */
int vmm__pci_host_init(struct vmm_vm *vm);
/* Put f on the next free slot of bus 0 (INTx swizzled as virt does). f stays the caller's. */
int vmm__pci_host_add(struct vmm_vm *vm, struct vmm_pci_func *f, const char *what);
/* An access to BAR `bar` of f at off, host lock not held: MSI-X table and PBA here, the rest to the owner. */
void vmm__pci_bar_access(struct vmm_pci_func *f, unsigned bar, uint64_t off, unsigned size, bool is_write,
                         uint64_t *val);
/* Undo the last vmm__pci_host_add of f (its owner failed to set up after it). */
void vmm__pci_host_remove(struct vmm_vm *vm, struct vmm_pci_func *f);
void vmm__pci_lock(struct vmm_pci_host *h);
void vmm__pci_unlock(struct vmm_pci_host *h);
struct vmm_vm *vmm__pci_vm(struct vmm_pci_host *h);
/* The level of a shared INTx SPI: whether any function swizzled onto it drives it (host lock held). */
bool vmm__pci_intx_wired_or(const struct vmm_pci_host *h, unsigned intid);
/* The MSI requester ID of f (bus 0: devfn), as msi-map maps it onto the ITS's device IDs. */
uint32_t vmm__pci_requester_id(const struct vmm_pci_func *f);

#endif
