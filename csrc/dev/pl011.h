/* pl011.h - Arm PrimeCell UART (PL011) model. */
#ifndef VMM_PL011_H
#define VMM_PL011_H

#include "../core/vm.h"

#define PL011_SIZE 0x1000u /* one 4 KiB register page, DDI 0183G §3.2 */

/*
 * Put a UART at `base` on the MMIO bus and the board (the boot console in the
 * device tree). Its interrupt output drives `intid` (level: UARTMIS != 0) and
 * it registers itself as the console's input callback, so queued input raises
 * RX without a guest access. The board destroys it.
 */
int vmm__pl011_create(struct vmm_vm *vm, uint64_t base, unsigned intid);

#endif
