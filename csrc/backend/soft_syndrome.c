/* soft_syndrome.c - find where Unicorn's QEMU keeps an exception's syndrome (soft_syndrome.h). */
#include <string.h>

#include "soft_syndrome.h"

struct calib {
    uc_context *ctx;
    size_t size, found;
    uint32_t want;
};

static void calib_intr(uc_engine *uc, uint32_t intno, void *opaque)
{
    struct calib *c = opaque;
    (void)intno;
    uc_context_save(uc, c->ctx);
    c->found = 0;
    for (size_t off = 0; off + 4 <= c->size; off += 4) {
        uint32_t v;
        memcpy(&v, (const uint8_t *)c->ctx + off, 4);
        if (v == c->want) {
            c->found = off;
            break;
        }
    }
    uc_emu_stop(uc);
}

size_t vmm__uc_syndrome_offset(uc_engine *uc, uint64_t page)
{
    static const uint32_t code[] = {
        0xd40b4b41u, /* svc #0x5a5a -> ESR 0x56005a5a */
        0xd4267ce0u, /* brk #0x33e7 -> ESR 0xf20033e7 */
    };
    struct calib c = { 0 };
    size_t first = 0;
    uc_hook h;

    if (uc_mem_map(uc, page, 0x1000, UC_PROT_ALL))
        return 0;
    if (!uc_mem_write(uc, page, code, sizeof code) && !uc_context_alloc(uc, &c.ctx)) {
        if (!uc_hook_add(uc, &h, UC_HOOK_INTR, (void *)calib_intr, &c, 1, 0)) {
            c.size = uc_context_size(uc);
            c.want = 0x56005a5au;
            uc_emu_start(uc, page, page + 4, 0, 1);
            first = c.found;
            c.want = 0xf20033e7u;
            uc_emu_start(uc, page + 4, page + 8, 0, 1);
            if (first != c.found)
                first = 0;
            uc_hook_del(uc, h);
        }
        uc_context_free(c.ctx);
    }
    uc_mem_unmap(uc, page, 0x1000);
    return first;
}
