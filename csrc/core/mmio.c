/* mmio.c - the MMIO bus: device windows, unclaimed-address policy, direct register access. */
#include <inttypes.h>

#include "gdb_reverse.h"
#include "layout.h"
#include "vm.h"

int vmm__bus_add(struct vmm_vm *vm, uint64_t base, uint64_t size, const char *name, const struct vmm_mmio_ops *ops,
                 void *dev)
{
    struct vmm_region *r;

    if (vm->nregions >= VMM_MAX_REGIONS)
        return vmm__set_error(vm, VMM_ENOMEM, "too many MMIO regions (adding %s)", name);
    if (!size || base + size < base || base + size > LAYOUT_DEV_END)
        return vmm__set_error(vm, VMM_EINVAL, "MMIO region %s outside the device window", name);
    for (unsigned i = 0; i < vm->nregions; i++) {
        struct vmm_region *o = &vm->regions[i];
        if (base < o->base + o->size && o->base < base + size)
            return vmm__set_error(vm, VMM_EINVAL, "MMIO region %s overlaps %s", name, o->name);
    }
    /* keep the array sorted by base: lookups and gap listing rely on it */
    unsigned at = vm->nregions;
    while (at > 0 && vm->regions[at - 1].base > base) {
        vm->regions[at] = vm->regions[at - 1];
        at--;
    }
    r = &vm->regions[at];
    *r = (struct vmm_region){ .base = base, .size = size, .name = name, .ops = ops, .dev = dev, .vm = vm };
    vm->nregions++;
    return 0;
}

static struct vmm_region *bus_find(struct vmm_vm *vm, uint64_t gpa)
{
    unsigned lo = 0, hi = vm->nregions;

    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        struct vmm_region *r = &vm->regions[mid];
        if (gpa < r->base)
            hi = mid;
        else if (gpa - r->base >= r->size)
            lo = mid + 1;
        else
            return r;
    }
    return NULL;
}

static const struct vmm_mmio_ops unclaimed_ops;

int vmm__bus_gaps(struct vmm_vm *vm, struct vmm_region *gaps, unsigned max)
{
    uint64_t at = LAYOUT_DEV_BASE;
    unsigned n = 0;

    for (unsigned i = 0; i <= vm->nregions; i++) {
        uint64_t next = i < vm->nregions ? vm->regions[i].base : LAYOUT_DEV_END;
        if (next > at) {
            if (n == max)
                return VMM_ENOMEM;
            gaps[n] = (struct vmm_region){
                .base = at, .size = next - at, .name = "unclaimed", .ops = &unclaimed_ops, .vm = vm
            };
            gaps[n].dev = &gaps[n];
            n++;
        }
        if (i < vm->nregions)
            at = vm->regions[i].base + vm->regions[i].size;
    }
    return (int)n;
}

uint64_t vmm__region_read(struct vmm_region *r, uint64_t off, unsigned size)
{
    vmm__count(r->vm, &r->vm->stats.mmio_exits);
    return r->ops->read(r->dev, off, size);
}

void vmm__region_write(struct vmm_region *r, uint64_t off, unsigned size, uint64_t val)
{
    vmm__count(r->vm, &r->vm->stats.mmio_exits);
    r->ops->write(r->dev, off, size, val);
}

/* Addresses in the device window that no device claims read as zero and ignore writes. */
static uint64_t unclaimed_read(void *dev, uint64_t off, unsigned size)
{
    struct vmm_region *r = dev;
    vmm__guest_error(r->vm, "mmio", "read of %u bytes at unclaimed address 0x%" PRIx64, size, r->base + off);
    return 0;
}

static void unclaimed_write(void *dev, uint64_t off, unsigned size, uint64_t val)
{
    struct vmm_region *r = dev;
    vmm__guest_error(r->vm, "mmio", "write of %u bytes (0x%" PRIx64 ") at unclaimed address 0x%" PRIx64, size, val,
                     r->base + off);
}

static const struct vmm_mmio_ops unclaimed_ops = { .read = unclaimed_read, .write = unclaimed_write };

void vmm__bus_access(struct vmm_vm *vm, uint64_t gpa, unsigned size, bool is_write, uint64_t *val)
{
    struct vmm_region *r = bus_find(vm, gpa);

    if (r) {
        if (is_write)
            vmm__region_write(r, gpa - r->base, size, *val);
        else
            *val = vmm__region_read(r, gpa - r->base, size);
        return;
    }
    struct vmm_region u = { .base = gpa, .size = size, .name = "unclaimed", .vm = vm };
    vmm__count(vm, &vm->stats.mmio_exits);
    if (is_write)
        unclaimed_write(&u, 0, size, *val);
    else
        *val = unclaimed_read(&u, 0, size);
}

static int check_direct(struct vmm_vm *vm, uint64_t gpa, unsigned size)
{
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return vmm__set_error(vm, VMM_EINVAL, "MMIO access size %u (want 1, 2, 4 or 8)", size);
    if (gpa >= LAYOUT_DEV_END || (gpa & (size - 1)))
        return vmm__set_error(vm, VMM_EINVAL, "0x%" PRIx64 " is not an aligned device-window address", gpa);
    return 0;
}

VMM_EXPORT int vmm_mmio_read(vmm_vm *vm, uint64_t gpa, unsigned size, uint64_t *val)
{
    int rc;

    if (!vm || !val)
        return VMM_EINVAL;
    /* device models take their own locks and may wake the run loop: do not hold vm->lock */
    if ((rc = check_direct(vm, gpa, size)) || (rc = vmm__check_idle(vm, "MMIO registers cannot be accessed")))
        return rc;
    vmm__bus_access(vm, gpa, size, false, val);
    return 0;
}

VMM_EXPORT int vmm_mmio_write(vmm_vm *vm, uint64_t gpa, unsigned size, uint64_t val)
{
    int rc;

    if (!vm)
        return VMM_EINVAL;
    /* device models take their own locks and may wake the run loop: do not hold vm->lock */
    if ((rc = check_direct(vm, gpa, size)) || (rc = vmm__check_idle(vm, "MMIO registers cannot be accessed")))
        return rc;
    vmm__bus_access(vm, gpa, size, true, &val);
    vmm__rev_host_changed(vm); /* no replay would make this write: reverse history starts again */
    return 0;
}
