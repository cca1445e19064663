/* mem.c - checked access to guest RAM. */
#include <string.h>

#include "layout.h"
#include "vm.h"

void *vmm__gpa_ptr(struct vmm_vm *vm, uint64_t gpa, uint64_t len)
{
    uint64_t off;

    if (gpa < LAYOUT_RAM_BASE)
        return NULL;
    off = gpa - LAYOUT_RAM_BASE;
    /* written so that neither off + len nor gpa + len can overflow */
    if (off > vm->ram_size || len > vm->ram_size - off)
        return NULL;
    return vm->ram + off;
}

VMM_EXPORT int vmm_mem_read(vmm_vm *vm, uint64_t gpa, void *buf, size_t len)
{
    void *p;

    if (!vm || (!buf && len))
        return VMM_EINVAL;
    p = vmm__gpa_ptr(vm, gpa, len);
    if (!p)
        return vmm__set_error(vm, VMM_ERANGE, "0x%llx+0x%zx is not guest RAM", (unsigned long long)gpa, len);
    memcpy(buf, p, len);
    return 0;
}

VMM_EXPORT int vmm_mem_write(vmm_vm *vm, uint64_t gpa, const void *buf, size_t len)
{
    void *p;

    if (!vm || (!buf && len))
        return VMM_EINVAL;
    p = vmm__gpa_ptr(vm, gpa, len);
    if (!p)
        return vmm__set_error(vm, VMM_ERANGE, "0x%llx+0x%zx is not guest RAM", (unsigned long long)gpa, len);
    memcpy(p, buf, len);
    return 0;
}
