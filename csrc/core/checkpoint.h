/*
 * checkpoint.h - in-memory checkpoints of a live VM (checkpoint.c), for reverse execution
 * (gdb_reverse.c): the guest-visible state (snapshot.c's sections without boot layout or console
 * output) and a copy of every non-zero page of guest RAM, taken and restored in place at a round
 * boundary of the deterministic run loop.
 */
#ifndef VMM_CHECKPOINT_H
#define VMM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "vmm.h"

struct vmm_vm;

struct vmm_checkpoint {
    uint64_t vtime;               /* the deterministic clock at the round boundary */
    uint64_t insns[VMM_MAX_CPUS]; /* each vCPU's executed instructions there */
    uint64_t out_mark;            /* console output produced by then (console.h) */
    uint8_t *state;               /* the section stream */
    size_t state_len;
    uint32_t *pages; /* indices of the non-zero 4 KiB pages, ascending */
    size_t npages;
    uint8_t *data; /* their bytes, npages * 4096 */
    size_t bytes;  /* host memory held: what the budget counts */
};

/* Take one now (the VM stands still at a round boundary); 0 or VMM_E* with the VM's error message. */
int vmm__checkpoint_take(struct vmm_vm *vm, struct vmm_checkpoint **out);
/* Put the VM back where ck was taken: state, RAM, clock, console output count; drops translated code. */
int vmm__checkpoint_restore(struct vmm_vm *vm, const struct vmm_checkpoint *ck);
void vmm__checkpoint_free(struct vmm_checkpoint *ck);

#endif
