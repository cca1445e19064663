/* bus.h - the MMIO bus (mmio.c): device windows in the low 1 GiB and their dispatch. */
#ifndef VMM_BUS_H
#define VMM_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct vmm_vm;

#define VMM_MAX_REGIONS 48

/* An MMIO device window on the bus. Offsets are relative to base. */
struct vmm_mmio_ops {
    uint64_t (*read)(void *dev, uint64_t off, unsigned size);
    void (*write)(void *dev, uint64_t off, unsigned size, uint64_t val);
};

struct vmm_region {
    uint64_t base, size;
    const char *name;
    const struct vmm_mmio_ops *ops;
    void *dev;
    struct vmm_vm *vm;
};

int vmm__bus_add(struct vmm_vm *vm, uint64_t base, uint64_t size, const char *name, const struct vmm_mmio_ops *ops,
                 void *dev);
/* Serve one access; unclaimed addresses in the device window are RAZ/WI. */
void vmm__bus_access(struct vmm_vm *vm, uint64_t gpa, unsigned size, bool is_write, uint64_t *val);
/* The same for a known region (the soft backend maps regions directly). */
uint64_t vmm__region_read(struct vmm_region *r, uint64_t off, unsigned size);
void vmm__region_write(struct vmm_region *r, uint64_t off, unsigned size, uint64_t val);
/* The unclaimed parts of the low device window as RAZ/WI regions, for backends that must map them. */
int vmm__bus_gaps(struct vmm_vm *vm, struct vmm_region *gaps, unsigned max);

#endif
