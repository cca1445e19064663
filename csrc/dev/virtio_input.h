/* virtio_input.h - virtio-input (virtio 1.2 §5.8): a keyboard and an absolute tablet. */
#ifndef VMM_VIRTIO_INPUT_H
#define VMM_VIRTIO_INPUT_H

struct vmm_vm;
struct vmm_input;

#define VMM_INPUT_KEYBOARD 0
#define VMM_INPUT_TABLET 1
#define VMM_INPUT_DEVICES 2

/* Board init (vmm_config.input): the keyboard, then the tablet, on the next virtio-mmio slots (vm->input[]). */
int vmm__input_create(struct vmm_vm *vm);

#endif
