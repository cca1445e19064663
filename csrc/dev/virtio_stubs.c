/* virtio_stubs.c - placeholders for devices being written (virtio-blk, virtio-rng, virtio-9p). */
#include "../core/vm.h"

VMM_EXPORT int vmm_add_disk(vmm_vm *vm, const char *path, int readonly)
{
    (void)path;
    (void)readonly;
    return vm ? vmm__set_error(vm, VMM_ENOTSUP, "virtio-blk is not built yet") : VMM_EINVAL;
}

VMM_EXPORT int vmm_add_share(vmm_vm *vm, const char *host_dir, const char *tag, int readonly)
{
    (void)host_dir;
    (void)tag;
    (void)readonly;
    return vm ? vmm__set_error(vm, VMM_ENOTSUP, "virtio-9p is not built yet") : VMM_EINVAL;
}

VMM_EXPORT int vmm_add_rng(vmm_vm *vm)
{
    return vm ? vmm__set_error(vm, VMM_ENOTSUP, "virtio-rng is not built yet") : VMM_EINVAL;
}
