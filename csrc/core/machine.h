/*
 * machine.h - the machine description a VM was built from (machine.c): its creation parameters and
 * every vmm_add_*() call, in order, so that a snapshot can rebuild the same board (snapshot.c).
 */
#ifndef VMM_MACHINE_H
#define VMM_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

#include "board.h"

struct vmm_snap;
struct vmm_vm;

enum vmm_machine_kind {
    VMM_MK_GPU = 1,
    VMM_MK_INPUT,
    VMM_MK_DISK,
    VMM_MK_SHARE,
    VMM_MK_RNG,
    VMM_MK_TEST,
    VMM_MK_VCONSOLE,
    VMM_MK_LAST = VMM_MK_VCONSOLE,
};

#define VMM_MACHINE_PATH_MAX 4096
#define VMM_MACHINE_TAG_MAX 65

/* One vmm_add_*() call: its kind and a copy of its arguments. */
struct vmm_machine_dev {
    uint32_t kind;     /* enum vmm_machine_kind */
    uint32_t readonly; /* disk, share */
    uint32_t width, height;
    uint64_t max_mem; /* gpu */
    char *path;       /* disk image, share directory (absolute when it could be resolved) */
    char *tag;        /* share */
};

struct vmm_machine {
    struct vmm_machine_dev dev[VMM_BOARD_MAX_DEVICES];
    unsigned n;
    bool incomplete; /* a call could not be recorded (out of memory): the VM cannot be snapshotted */
};

void vmm__machine_free(struct vmm_machine *m);

/*
 * The "machine" section: the creation parameters (RAM, vCPUs, CPU model, backend, deterministic, transport)
 * and the device list. Saving reads them from vm; loading fills *cfg_out (strings point into
 * bufs, which must outlive its use) and m, every value checked.
 */
struct vmm_machine_cfg {
    uint64_t ram_size;
    uint32_t ncpus;
    uint32_t deterministic;
    uint32_t its;
    char cpu_model[32];
    char backend[16];
    uint32_t transport; /* enum vmm_transport (section version 2; 0 in version 1) */
};
int vmm__machine_save(struct vmm_vm *vm, struct vmm_snap *s);
int vmm__machine_load(struct vmm_snap *s, struct vmm_machine_cfg *cfg, struct vmm_machine *m);

/* Replay the device list on a new VM (the public calls, so the new VM records it in turn). */
int vmm__machine_replay(struct vmm_vm *vm, const struct vmm_machine *m);

#endif
