/* mem.c - checked access to guest RAM. */
#include <string.h>

#include "gdb_reverse.h"
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

/* Shared by the two public accessors: *out is the RAM span or the call fails. */
static int ram_span(struct vmm_vm *vm, uint64_t gpa, const void *buf, size_t len, void **out)
{
    if (!vm || (!buf && len))
        return VMM_EINVAL;
    *out = vmm__gpa_ptr(vm, gpa, len);
    if (!*out)
        return vmm__set_error(vm, VMM_ERANGE, "0x%llx+0x%zx is not guest RAM", (unsigned long long)gpa, len);
    return 0;
}

VMM_EXPORT int vmm_mem_read(vmm_vm *vm, uint64_t gpa, void *buf, size_t len)
{
    void *p;
    int rc = ram_span(vm, gpa, buf, len, &p);

    if (!rc)
        memcpy(buf, p, len);
    return rc;
}

VMM_EXPORT int vmm_mem_write(vmm_vm *vm, uint64_t gpa, const void *buf, size_t len)
{
    void *p;
    int rc = ram_span(vm, gpa, buf, len, &p);

    if (!rc) {
        memcpy(p, buf, len);
        vmm__rev_host_changed(vm); /* no replay would make this write: reverse history starts again */
    }
    return rc;
}
