/*
 * board.c - the machine: which devices it has at fixed addresses (layout.h), the list of every
 * device and the hooks the core calls over it. The only core file that names devices.
 */
#include <stdio.h>
#include <string.h>

#include "console.h"
#include "../dev/pci.h"
#include "../dev/pl011.h"
#include "../dev/virtio.h"
#include "board.h"
#include "snapshot.h"
#include "irqchip.h"
#include "layout.h"
#include "vm.h"

int vmm__board_init(struct vmm_vm *vm)
{
    int rc = 0;

    /* our GICv3 model on the bus before the devices and the backend; else vm_init brings the backend's */
    if (!vmm__has_cap(vm->ops, VMM_CAP_KERNEL_IRQCHIP))
        rc = vmm__gicv3_irqchip_create(vm, &vm->irqchip);
    if (!rc)
        rc = vmm__pl011_create(vm, LAYOUT_UART_BASE, LAYOUT_SPI_INTID(LAYOUT_UART_SPI));
    /* the virtio-mmio window before the backend maps the bus (vm_init); devices join it until prepare */
    if (!rc)
        rc = vmm__virtio_mmio_init(vm);
    /* the PCIe host bridge likewise (its ECAM and MMIO window are fixed bus regions) */
    if (!rc && vm->transport == VMM_TRANSPORT_PCI)
        rc = vmm__pci_host_init(vm);
    return rc;
}

void vmm__board_quiesce(struct vmm_vm *vm)
{
    struct vmm_board *b = &vm->board;

    for (unsigned i = 0; i < b->ndev; i++)
        if (b->dev[i].ops->quiesce)
            b->dev[i].ops->quiesce(b->dev[i].dev);
}

void vmm__board_destroy(struct vmm_vm *vm)
{
    struct vmm_board *b = &vm->board;

    while (b->ndev) {
        struct vmm_board_entry *e = &b->dev[--b->ndev];
        if (e->ops->destroy)
            e->ops->destroy(e->dev);
    }
    vmm__irqchip_destroy(vm->irqchip); /* ours (vm_fini destroyed a backend's and cleared it) */
    vm->irqchip = NULL;
}

int vmm__board_add(struct vmm_vm *vm, const struct vmm_device_ops *ops, void *dev)
{
    struct vmm_board *b = &vm->board;

    if (vm->state != VM_STATE_NEW)
        return vmm__set_error(vm, VMM_ESTATE, "%s: devices must be added before the VM is prepared", ops->name);
    if (b->ndev >= VMM_BOARD_MAX_DEVICES)
        return vmm__set_error(vm, VMM_ENOMEM, "%s: the board has room for %d devices", ops->name,
                              VMM_BOARD_MAX_DEVICES);
    b->dev[b->ndev++] = (struct vmm_board_entry){ .ops = ops, .dev = dev };
    vmm__log(vm, VMM_LOG_DEBUG, "board", "device %u: %s", b->ndev - 1, ops->name);
    return 0;
}

void vmm__board_remove(struct vmm_vm *vm, void *dev)
{
    struct vmm_board *b = &vm->board;

    if (b->ndev && b->dev[b->ndev - 1].dev == dev)
        b->ndev--;
}

void *vmm__board_find(struct vmm_vm *vm, const struct vmm_device_ops *ops, unsigned nth)
{
    struct vmm_board *b = &vm->board;

    for (unsigned i = 0; i < b->ndev; i++)
        if (b->dev[i].ops == ops && !nth--)
            return b->dev[i].dev;
    return NULL;
}

int vmm__board_fdt(struct vmm_vm *vm, void *fdt)
{
    struct vmm_board *b = &vm->board;
    int err;

    for (unsigned i = 0; i < b->ndev; i++)
        if (b->dev[i].ops->fdt_node && (err = b->dev[i].ops->fdt_node(b->dev[i].dev, vm, fdt)) < 0)
            return err;
    return 0;
}

uint64_t vmm__board_advance(struct vmm_vm *vm, uint64_t now_ns)
{
    struct vmm_board *b = &vm->board;
    uint64_t next = vmm__console_advance(vm->console, now_ns);

    for (unsigned i = 0; i < b->ndev; i++) {
        if (b->dev[i].ops->advance) {
            uint64_t t = b->dev[i].ops->advance(b->dev[i].dev, now_ns);
            if (t < next)
                next = t;
        }
    }
    return next;
}

void vmm__board_set_running(struct vmm_vm *vm, bool running)
{
    struct vmm_board *b = &vm->board;

    vmm__console_set_running(vm->console, running);
    for (unsigned i = 0; i < b->ndev; i++)
        if (b->dev[i].ops->set_running)
            b->dev[i].ops->set_running(b->dev[i].dev, running);
}

uint64_t vmm__board_host_mem(struct vmm_vm *vm)
{
    struct vmm_board *b = &vm->board;
    uint64_t n = 0;

    for (unsigned i = 0; i < b->ndev; i++)
        if (b->dev[i].ops->host_mem)
            n += b->dev[i].ops->host_mem(b->dev[i].dev);
    return n;
}

/* "<name>.<n>": the nth device with these ops (unique in a VM, stable across save and restore). */
static void section_name(struct vmm_board *b, unsigned i, char *out, size_t len)
{
    unsigned nth = 0;
    for (unsigned j = 0; j < i; j++)
        nth += b->dev[j].ops == b->dev[i].ops;
    snprintf(out, len, "%s.%u", b->dev[i].ops->name, nth);
}

int vmm__board_snap(struct vmm_vm *vm, struct vmm_snap *s)
{
    struct vmm_board *b = &vm->board;

    for (unsigned i = 0; i < b->ndev && !vmm__snap_error(s); i++) {
        const struct vmm_device_ops *ops = b->dev[i].ops;
        int (*fn)(void *, struct vmm_snap *) = vmm__snap_loading(s) ? ops->load : ops->save;
        if (!fn)
            continue;
        char name[VMM_SNAP_NAME_LEN];
        section_name(b, i, name, sizeof(name));
        if (vmm__snap_loading(s) && !vmm__snap_has(s, name))
            return vmm__snap_fail(s, "the snapshot has no state for device %s (was it made with other devices?)", name);
        uint32_t version = ops->snap_version;
        if (vmm__snap_begin(s, name, &version))
            break;
        int r = fn(b->dev[i].dev, s);
        if (r && !vmm__snap_error(s))
            vmm__snap_fail_code(s, r, "failed (%d)", r);
        vmm__snap_end(s);
    }
    return vmm__snap_error(s);
}

void vmm__board_reset(struct vmm_vm *vm)
{
    struct vmm_board *b = &vm->board;

    for (unsigned i = 0; i < b->ndev; i++)
        if (b->dev[i].ops->reset)
            b->dev[i].ops->reset(b->dev[i].dev);
}

void vmm__board_set_stdout(struct vmm_vm *vm, const char *path)
{
    snprintf(vm->board.stdout_path, sizeof vm->board.stdout_path, "%s", path);
}
