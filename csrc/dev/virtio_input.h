/* virtio_input.h - virtio-input (virtio 1.2 §5.8): a keyboard and an absolute tablet (vmm_add_input). */
#ifndef VMM_VIRTIO_INPUT_H
#define VMM_VIRTIO_INPUT_H

/* the `device` argument of vmm_input_event() */
#define VMM_INPUT_KEYBOARD 0
#define VMM_INPUT_TABLET 1
#define VMM_INPUT_DEVICES 2

#endif
