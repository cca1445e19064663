/* irq.h - interrupt lines from devices to the irqchip (irq.c). */
#ifndef VMM_IRQ_H
#define VMM_IRQ_H

#include <stdbool.h>

struct vmm_vm;

/* Drive a device's interrupt line (SPI n is INTID 32+n; PPIs are per cpu). Any thread. */
void vmm__irq_set(struct vmm_vm *vm, unsigned cpu, unsigned intid, bool level);
/* true if we are on the run thread (inside vmm_run) */
bool vmm__on_run_thread(struct vmm_vm *vm);

#endif
