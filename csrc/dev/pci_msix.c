/*
 * pci_msix.c - MSI-X (PCI Local Bus 3.0 §6.8.2): the vector table and the Pending Bit Array in a
 * function's BAR, and delivery. A vector the device signals while it is masked (its entry's Mask bit
 * or the Function Mask) sets its pending bit; unmasking it sends the message then and clears the bit
 * (§6.8.2.9). Messages go to the irqchip as writes of Message Data to Message Address by the
 * function's requester ID (vmm__irq_msi). Callers hold the host lock (pci.h).
 */
#include <inttypes.h>

#include "../core/irq.h"
#include "../core/snapshot.h"
#include "../core/vm.h"
#include "pci.h"

enum { ENTRY_ADDR_LO, ENTRY_ADDR_HI, ENTRY_DATA, ENTRY_CTRL };

static uint16_t ctrl(const struct vmm_pci_func *f)
{
    const uint8_t *p = f->cfg + f->msix.cap + PCI_MSIX_CTRL;
    return (uint16_t)(p[0] | p[1] << 8);
}

bool vmm__pci_msix_enabled_locked(const struct vmm_pci_func *f)
{
    return f->msix.nvec && (ctrl(f) & PCI_MSIX_CTRL_ENABLE);
}

static bool masked(const struct vmm_pci_func *f, unsigned vec)
{
    return (ctrl(f) & PCI_MSIX_CTRL_MASKALL) || (f->msix.table[vec][ENTRY_CTRL] & PCI_MSIX_ENTRY_CTRL_MASK);
}

static bool pending(const struct vmm_pci_func *f, unsigned vec)
{
    return f->msix.pba[vec / 64] >> (vec % 64) & 1;
}

static void set_pending(struct vmm_pci_func *f, unsigned vec, bool on)
{
    if (on)
        f->msix.pba[vec / 64] |= 1ULL << (vec % 64);
    else
        f->msix.pba[vec / 64] &= ~(1ULL << (vec % 64));
}

static void send(struct vmm_pci_func *f, unsigned vec)
{
    const uint32_t *e = f->msix.table[vec];
    uint64_t addr = (uint64_t)e[ENTRY_ADDR_HI] << 32 | e[ENTRY_ADDR_LO];

    vmm__irq_msi(vmm__pci_vm(f->host), addr, e[ENTRY_DATA], vmm__pci_requester_id(f));
}

void vmm__pci_msix_signal_locked(struct vmm_pci_func *f, unsigned vec)
{
    if (!vmm__pci_msix_enabled_locked(f) || vec >= f->msix.nvec)
        return;
    if (masked(f, vec))
        set_pending(f, vec, true);
    else
        send(f, vec);
}

/* Every pending vector that is no longer masked: send it, clear its bit. */
static void deliver_unmasked(struct vmm_pci_func *f)
{
    if (!vmm__pci_msix_enabled_locked(f))
        return;
    for (unsigned v = 0; v < f->msix.nvec; v++) {
        if (pending(f, v) && !masked(f, v)) {
            set_pending(f, v, false);
            send(f, v);
        }
    }
}

void vmm__pci_msix_ctrl_changed(struct vmm_pci_func *f)
{
    deliver_unmasked(f);
}

void vmm__pci_msix_reset(struct vmm_pci_func *f)
{
    for (unsigned v = 0; v < f->msix.nvec; v++) {
        f->msix.table[v][ENTRY_ADDR_LO] = f->msix.table[v][ENTRY_ADDR_HI] = f->msix.table[v][ENTRY_DATA] = 0;
        f->msix.table[v][ENTRY_CTRL] = PCI_MSIX_ENTRY_CTRL_MASK; /* §6.8.2.9: masked after reset */
    }
    for (unsigned i = 0; i < PCI_MSIX_MAX / 64; i++)
        f->msix.pba[i] = 0;
}

/* Is [off, off+size) of the BAR inside the table or the PBA? */
bool vmm__pci_msix_in_bar(const struct vmm_pci_func *f, unsigned bar, uint64_t off, unsigned size)
{
    const struct vmm_pci_msix *m = &f->msix;
    uint64_t tend = m->table_off + (uint64_t)m->nvec * PCI_MSIX_ENTRY_SIZE;
    uint64_t pend = m->pba_off + (uint64_t)(m->nvec + 63) / 64 * 8;

    if (!m->nvec || bar != m->bar)
        return false;
    return (off >= m->table_off && off + size <= tend) || (off >= m->pba_off && off + size <= pend);
}

static bool bad_size(struct vmm_pci_func *f, uint64_t off, unsigned size, const char *what)
{
    /* §6.8.2: DWORD or aligned QWORD accesses only */
    if ((size == 4 || size == 8) && !(off & (size - 1)))
        return false;
    vmm__guest_error(vmm__pci_vm(f->host), "pci", "%s: %u-byte MSI-X %s at 0x%" PRIx64 " (DWORD/QWORD only)", f->name,
                     size, what, off);
    return true;
}

uint64_t vmm__pci_msix_read(struct vmm_pci_func *f, uint64_t off, unsigned size)
{
    struct vmm_pci_msix *m = &f->msix;
    uint64_t val;

    if (bad_size(f, off, size, "read"))
        return 0;
    if (off >= m->pba_off && off < m->pba_off + (uint64_t)(m->nvec + 63) / 64 * 8) {
        uint64_t w = m->pba[(off - m->pba_off) / 8];
        return size == 8 ? w : (uint32_t)(w >> (8 * ((off - m->pba_off) & 4)));
    }
    off -= m->table_off;
    val = m->table[off / PCI_MSIX_ENTRY_SIZE][off % PCI_MSIX_ENTRY_SIZE / 4];
    if (size == 8)
        val |= (uint64_t)m->table[off / PCI_MSIX_ENTRY_SIZE][off % PCI_MSIX_ENTRY_SIZE / 4 + 1] << 32;
    return val;
}

static void write_dword(struct vmm_pci_func *f, unsigned vec, unsigned word, uint32_t val)
{
    if (word == ENTRY_CTRL)
        val &= PCI_MSIX_ENTRY_CTRL_MASK; /* the other bits are reserved (RsvdP: we keep them 0) */
    f->msix.table[vec][word] = val;
    if (word == ENTRY_CTRL && !(val & PCI_MSIX_ENTRY_CTRL_MASK) && pending(f, vec) && !masked(f, vec) &&
        vmm__pci_msix_enabled_locked(f)) {
        set_pending(f, vec, false);
        send(f, vec);
    }
}

void vmm__pci_msix_write(struct vmm_pci_func *f, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_pci_msix *m = &f->msix;

    if (bad_size(f, off, size, "write"))
        return;
    if (off >= m->pba_off && off < m->pba_off + (uint64_t)(m->nvec + 63) / 64 * 8) {
        vmm__guest_error(vmm__pci_vm(f->host), "pci", "%s: write to the MSI-X PBA (read-only)", f->name);
        return;
    }
    off -= m->table_off;
    write_dword(f, (unsigned)(off / PCI_MSIX_ENTRY_SIZE), (unsigned)(off % PCI_MSIX_ENTRY_SIZE / 4), (uint32_t)val);
    if (size == 8)
        write_dword(f, (unsigned)(off / PCI_MSIX_ENTRY_SIZE), (unsigned)(off % PCI_MSIX_ENTRY_SIZE / 4 + 1),
                    (uint32_t)(val >> 32));
}

/* The table and the PBA; loaded values checked as the guest's writes would be. */
void vmm__pci_msix_snap(struct vmm_pci_func *f, struct vmm_snap *s)
{
    struct vmm_pci_msix *m = &f->msix;
    uint32_t nvec = m->nvec;

    vmm__snap_u32(s, &nvec);
    if (vmm__snap_loading(s) && !vmm__snap_error(s) && nvec != m->nvec) {
        vmm__snap_fail(s, "%s: %u MSI-X vectors saved, this function has %u", f->name, nvec, m->nvec);
        return;
    }
    for (unsigned v = 0; v < m->nvec; v++)
        for (unsigned w = 0; w < 4; w++)
            vmm__snap_u32(s, &m->table[v][w]);
    for (unsigned i = 0; i < (m->nvec + 63) / 64; i++)
        vmm__snap_u64(s, &m->pba[i]);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    for (unsigned v = 0; v < m->nvec; v++) {
        if (m->table[v][ENTRY_CTRL] & ~PCI_MSIX_ENTRY_CTRL_MASK) {
            vmm__snap_fail(s, "%s: MSI-X vector %u control 0x%x has reserved bits", f->name, v,
                           m->table[v][ENTRY_CTRL]);
            return;
        }
        if (pending(f, v) && !masked(f, v) && vmm__pci_msix_enabled_locked(f)) { /* sent when unmasked, live */
            vmm__snap_fail(s, "%s: MSI-X vector %u is pending with neither it nor the function masked", f->name, v);
            return;
        }
    }
    if (m->nvec % 64 && m->pba[m->nvec / 64] >> (m->nvec % 64))
        vmm__snap_fail(s, "%s: MSI-X pending bits beyond vector %u", f->name, m->nvec - 1);
}

/* Device-side entry points: they take the host lock. */
bool vmm__pci_msix_enabled(struct vmm_pci_func *f)
{
    bool on;

    vmm__pci_lock(f->host);
    on = vmm__pci_msix_enabled_locked(f);
    vmm__pci_unlock(f->host);
    return on;
}

void vmm__pci_set_intx(struct vmm_pci_func *f, bool level)
{
    vmm__pci_lock(f->host);
    f->intx_level = level;
    vmm__pci_intx_update(f);
    vmm__pci_unlock(f->host);
}
