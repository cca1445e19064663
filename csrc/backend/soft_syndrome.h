/*
 * soft_syndrome.h - where Unicorn's QEMU keeps the syndrome of the exception it is raising. Used by the
 * soft backend (soft_exc.c) and the Hypervisor.framework simulator (hvfsim/), which both read it from a
 * saved CPU context. Unicorn only: no libvmm dependency, so hvfsim's standalone test probe can link it.
 */
#ifndef VMM_SOFT_SYNDROME_H
#define VMM_SOFT_SYNDROME_H

#include <stddef.h>

#include <unicorn/unicorn.h>

/*
 * The offset of the syndrome in uc_context_save()'s blob, found by raising two exceptions with known
 * syndromes (SVC #0x5a5a: 0x56005a5a; BRK #0x33e7: 0xf20033e7) on a scratch page at `page` (4 KiB,
 * unmapped before and after). 0 when it cannot be found (an unsupported Unicorn build) or on error.
 */
size_t vmm__uc_syndrome_offset(uc_engine *uc, uint64_t page);

#endif
