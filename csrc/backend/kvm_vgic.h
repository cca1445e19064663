/* kvm_vgic.h - KVM's in-kernel vGICv3 as an irqchip (core/irqchip.h); used by kvm.c only. */
#ifndef VMM_KVM_VGIC_H
#define VMM_KVM_VGIC_H

#include <stddef.h>

struct vmm_vm;
struct vmm_irqchip;

/* Whether KVM on this host can give guests a GICv3 (a scratch VM); 0 or VMM_ENOBACKEND with a reason in why. */
int vmm__kvm_vgic_probe(int sys_fd, char *why, size_t len);
/*
 * Create the vGICv3 at our layout's distributor and redistributor addresses
 * on the VM `vm_fd` (which must outlive it). Lines driven before
 * vmm__kvm_vgic_ready() are kept and replayed then.
 */
int vmm__kvm_vgic_create(struct vmm_vm *vm, int vm_fd, struct vmm_irqchip **out);
/* Every vCPU exists: size (128 INTIDs) and initialise the vGIC. */
int vmm__kvm_vgic_ready(struct vmm_irqchip *chip);

#endif
