/* virtio_input.h - virtio-input (virtio 1.2 §5.8): a keyboard and an absolute tablet. */
#ifndef VMM_VIRTIO_INPUT_H
#define VMM_VIRTIO_INPUT_H

#include <stdint.h>

struct vmm_vm;
struct vmm_input;

#define VMM_INPUT_KEYBOARD 0
#define VMM_INPUT_TABLET 1
#define VMM_INPUT_DEVICES 2

/* Board init (vmm_config.input): the keyboard, then the tablet, on the next virtio-mmio slots (vm->input[]). */
int vmm__input_create(struct vmm_vm *vm);
/*
 * Deterministic mode, run loop between rounds: deliver the scheduled events due at now_ns. Returns the
 * time of the next scheduled event (UINT64_MAX: none).
 */
uint64_t vmm__input_advance(struct vmm_vm *vm, uint64_t now_ns);

#endif
