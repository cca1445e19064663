/* pl011.h - Arm PrimeCell UART (PL011) model. */
#ifndef VMM_PL011_H
#define VMM_PL011_H

#include "../core/vm.h"

int vmm__pl011_create(struct vmm_vm *vm, uint64_t base, struct vmm_pl011 **out);
void vmm__pl011_destroy(struct vmm_pl011 *u);

#endif
