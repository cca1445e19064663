/*
 * checkpoint.c - in-memory checkpoints of a live VM for reverse execution (checkpoint.h). The state is
 * snapshot.c's section stream (vmm__snapshot_live: the same sync functions as a snapshot file, so what a
 * checkpoint holds is what a snapshot holds); RAM is a copy of its non-zero 4 KiB pages, a zero page
 * costing nothing. Restoring writes back the saved pages and zeroes the pages that were zero then and are
 * not now, then drops every vCPU's translated code and TLB (the code and page tables may have changed).
 */
#include <stdlib.h>
#include <string.h>

#include "../host/host.h"
#include "checkpoint.h"
#include "console.h"
#include "debug.h"
#include "snapshot.h"
#include "vm.h"

#define PAGE 4096u

static bool page_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    for (unsigned i = 0; i < PAGE / 8; i++)
        if (w[i])
            return false;
    return true;
}

/*
 * Which 4 KiB pages of RAM the host says were ever touched (the rest are zero and are not even read, so
 * a large RAM the guest never used costs nothing): a map of one byte per page, or NULL when the host
 * cannot tell or RAM is mapped from a snapshot file (then every page is looked at).
 */
static uint8_t *touched_map(struct vmm_vm *vm)
{
    size_t hp = vmm__host_page_size(), n = (size_t)(vm->ram_size / PAGE);
    size_t nh = (size_t)((vm->ram_size + hp - 1) / hp);
    uint8_t *host, *map;

    if (vm->ram_from_file || hp % PAGE || (uintptr_t)vm->ram % hp || !(host = malloc(nh)))
        return NULL;
    if (vmm__host_ram_touched(vm->ram, nh, host) || !(map = malloc(n))) {
        free(host);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        map[i] = host[i * PAGE / hp];
    free(host);
    return map;
}

/* The non-zero pages into ck (grown by doubling); false when out of memory. */
static bool copy_ram(struct vmm_vm *vm, struct vmm_checkpoint *ck)
{
    size_t n = (size_t)(vm->ram_size / PAGE), cap = 0, want = 256;
    uint8_t *touched = touched_map(vm);

    if (touched) /* at most the touched pages: one allocation, no copying as it grows */
        for (size_t i = want = 0; i < n; i++)
            want += touched[i];
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = vm->ram + i * PAGE;
        if ((touched && !touched[i]) || page_zero(p))
            continue;
        if (ck->npages == cap) {
            size_t nc = cap ? 2 * cap : want ? want : 256;
            uint32_t *pg = realloc(ck->pages, nc * sizeof *pg);
            if (pg)
                ck->pages = pg;
            uint8_t *d = pg ? realloc(ck->data, nc * PAGE) : NULL;
            if (!d) {
                free(touched);
                return false;
            }
            ck->data = d;
            cap = nc;
        }
        ck->pages[ck->npages] = (uint32_t)i;
        memcpy(ck->data + ck->npages * PAGE, p, PAGE);
        ck->npages++;
    }
    free(touched);
    ck->bytes += ck->npages * (PAGE + sizeof(uint32_t)); /* malloc's pages beyond npages are never touched */
    return true;
}

int vmm__checkpoint_take(struct vmm_vm *vm, struct vmm_checkpoint **out)
{
    struct vmm_checkpoint *ck = calloc(1, sizeof *ck);
    struct vmm_snap s;
    int err;

    if (!ck)
        return vmm__set_error(vm, VMM_ENOMEM, "checkpoint: out of memory");
    if (vm->ram_size / PAGE > UINT32_MAX) {
        free(ck);
        return vmm__set_error(vm, VMM_ERANGE, "checkpoint: RAM too large");
    }
    vmm__snap_init_save(&s);
    if ((err = vmm__snapshot_live(vm, &s))) {
        if (s.errmsg[0])
            vmm__set_error(vm, err, "checkpoint: %s", s.errmsg);
        vmm__snap_free(&s);
        free(ck);
        return err;
    }
    ck->state = s.buf; /* the stream's buffer is the checkpoint's now */
    ck->state_len = s.len;
    ck->bytes = sizeof *ck + s.cap;
    ck->vtime = vm->vtime_ns;
    for (unsigned i = 0; i < vm->ncpus; i++)
        ck->insns[i] = vm->vcpus[i].insns;
    ck->out_mark = vmm__console_out_mark(vm->console);
    if (!copy_ram(vm, ck)) {
        vmm__checkpoint_free(ck);
        return vmm__set_error(vm, VMM_ENOMEM, "checkpoint: out of memory for a copy of guest RAM");
    }
    *out = ck;
    return 0;
}

int vmm__checkpoint_restore(struct vmm_vm *vm, const struct vmm_checkpoint *ck)
{
    struct vmm_snap s;
    size_t n = (size_t)(vm->ram_size / PAGE), j = 0;
    uint8_t *touched = touched_map(vm);
    int err;

    for (size_t i = 0; i < n; i++) {
        uint8_t *p = vm->ram + i * PAGE;
        if (j < ck->npages && ck->pages[j] == i)
            memcpy(p, ck->data + j++ * PAGE, PAGE);
        else if ((!touched || touched[i]) && !page_zero(p))
            memset(p, 0, PAGE);
    }
    free(touched);
    vmm__snap_init_load(&s, ck->state, ck->state_len);
    if ((err = vmm__snapshot_live(vm, &s)))
        return s.errmsg[0] ? vmm__set_error(vm, err, "checkpoint: %s", s.errmsg) : err;
    vm->vtime_ns = ck->vtime;
    vmm__console_out_rewind(vm->console, ck->out_mark);
    for (unsigned i = 0; i < vm->ncpus; i++)
        vm->ops->debug->mem_changed(&vm->vcpus[i]);
    return 0;
}

void vmm__checkpoint_free(struct vmm_checkpoint *ck)
{
    if (!ck)
        return;
    free(ck->state);
    free(ck->pages);
    free(ck->data);
    free(ck);
}
