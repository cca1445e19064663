/* irq.h - interrupt lines from devices to the irqchip (irq.c). */
#ifndef VMM_IRQ_H
#define VMM_IRQ_H

#include <stdbool.h>
#include <stdint.h>

struct vmm_vm;

/* Drive a device's interrupt line (SPI n is INTID 32+n; PPIs are per cpu). Any thread. */
void vmm__irq_set(struct vmm_vm *vm, unsigned cpu, unsigned intid, bool level);
/*
 * Send a message-signalled interrupt (MSI/MSI-X) through the irqchip: the
 * device's write of `data` to `doorbell` as requester `devid`. Any thread.
 * Returns 0, or VMM_ENOTSUP when the chip has no MSI (a rate-limited guest error:
 * a guest that enables MSI-X there makes one per request).
 */
int vmm__irq_msi(struct vmm_vm *vm, uint64_t doorbell, uint32_t data, uint32_t devid);
/* true if we are on the run thread (inside vmm_run) */
bool vmm__on_run_thread(struct vmm_vm *vm);
/* Whether this is the thread of the threaded loop that runs vcpu (run.c). */
struct vmm_vcpu;
bool vmm__on_vcpu_thread(const struct vmm_vcpu *vcpu);

#endif
