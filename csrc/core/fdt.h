/* fdt.h - helpers for devices writing their device-tree nodes (board fdt_node hooks), and the DTB builder. */
#ifndef VMM_FDT_H
#define VMM_FDT_H

#include <stddef.h>
#include <stdint.h>

struct vmm_vm;

/* phandles of the nodes the core writes */
#define FDT_PH_GIC 1
#define FDT_PH_CLK 2 /* the 24 MHz APB clock ("apb-pclk") */
/* The GICv3 ITS (msi-controller, #msi-cells = 1: the DeviceID), if vmm__irqchip_has_its(): the PCI host's msi-map names
 * it */
#define FDT_PH_ITS 3

/* GIC interrupt specifier cells (bindings/interrupt-controller/arm,gic-v3.yaml) */
#define FDT_GIC_SPI 0
#define FDT_GIC_PPI 1
#define FDT_IRQ_TYPE_LEVEL_HIGH 4

/* Properties (libfdt sequential-write API); each returns libfdt's error code (negative) or 0. */
int vmm__fdt_prop_u64_pair(void *fdt, const char *name, uint64_t a, uint64_t b);
int vmm__fdt_prop_cells(void *fdt, const char *name, const uint32_t *cells, int n);  /* n <= 16 */
int vmm__fdt_prop_strings(void *fdt, const char *name, const char *const *s, int n); /* a NUL-separated list */
/* "interrupts" of one level-high SPI given by its INTID (32..) */
int vmm__fdt_prop_spi(void *fdt, unsigned intid);

/* The guest's DTB from the board (fdt.c). */
int vmm__fdt_build(struct vmm_vm *vm, void **out, size_t *len);

#endif
