/* screen.c - placeholder for the screen API until virtio-gpu lands. */
#include "../core/vm.h"

VMM_EXPORT int vmm_screen_info(vmm_vm *vm, struct vmm_screen_info *info)
{
    (void)info;
    return vm ? vmm__set_error(vm, VMM_ENOTSUP, "this VM has no GPU") : VMM_EINVAL;
}

VMM_EXPORT int vmm_screen_wait_frame(vmm_vm *vm, uint64_t frame, uint64_t timeout_ns)
{
    (void)frame;
    (void)timeout_ns;
    return vm ? vmm__set_error(vm, VMM_ENOTSUP, "this VM has no GPU") : VMM_EINVAL;
}

VMM_EXPORT int vmm_screen_hold(vmm_vm *vm, uint64_t frame)
{
    (void)frame;
    return vm ? vmm__set_error(vm, VMM_ENOTSUP, "this VM has no GPU") : VMM_EINVAL;
}

VMM_EXPORT int vmm_screen_capture(vmm_vm *vm, uint64_t frame, void *buf, size_t len, uint32_t *width,
                                  uint32_t *height, uint64_t *frame_out)
{
    (void)frame;
    (void)buf;
    (void)len;
    (void)width;
    (void)height;
    (void)frame_out;
    return vm ? vmm__set_error(vm, VMM_ENOTSUP, "this VM has no GPU") : VMM_EINVAL;
}
