/* pl011.h - Arm PrimeCell UART (PL011) model. */
#ifndef VMM_PL011_H
#define VMM_PL011_H

#include "../core/vm.h"

/*
 * Create the UART at `base` on the MMIO bus. Its interrupt output drives SPI
 * LAYOUT_UART_SPI (level: UARTMIS != 0) and it registers itself as the
 * console's input callback, so queued input raises RX without a guest access.
 */
int vmm__pl011_create(struct vmm_vm *vm, uint64_t base, struct vmm_pl011 **out);
/* Unregister from the console and free (NULL is fine). Nothing may use the VM concurrently. */
void vmm__pl011_destroy(struct vmm_pl011 *u);

#endif
