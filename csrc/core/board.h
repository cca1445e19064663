/*
 * board.h - the machine (the role of QEMU's hw/arm/virt.c): its memory map (layout.h), interrupt
 * allocation and the list of devices. The core (vm.c, run.c, fdt.c) reaches devices only through it.
 */
#ifndef VMM_BOARD_H
#define VMM_BOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_snap;

#define VMM_BOARD_MAX_DEVICES 64

/*
 * What a device tells the board. Every hook but `name` may be NULL. Hooks are
 * called with no lock of the core held (a hook takes its device's own lock).
 */
struct vmm_device_ops {
    const char *name; /* "pl011", "virtio-gpu", ... for logs and snapshot sections */
    /* Write the device's node(s) into the device tree (libfdt sequential-write API, fdt.h helpers). */
    int (*fdt_node)(void *dev, struct vmm_vm *vm, void *fdt);
    /* Back to the power-on state (a system reset that keeps the VM). */
    void (*reset)(void *dev);
    /*
     * Deterministic mode, between rounds (run loop thread): move what the host scheduled for
     * virtual time <= now_ns into the device. Returns the time of the next scheduled event the idle
     * loop must wake for (UINT64_MAX: none).
     */
    uint64_t (*advance)(void *dev, uint64_t now_ns);
    /* A run is under way (or announced) / over: waiters on the device see end-of-stream without one. */
    void (*set_running)(void *dev, bool running);
    /* Host memory the device holds besides guest RAM (stats.host_mem_bytes). */
    uint64_t (*host_mem)(void *dev);
    /*
     * Snapshots (the VM stopped at a round boundary, no access half done): write the device's
     * guest-visible state into s / restore it (snapshot.h: usually one sync function for both).
     * The board opens the device's section around the call, with version snap_version when
     * saving; when loading s->sec_version is the version found (<= snap_version). A device without
     * state leaves both NULL. load runs on a VM built with the same configuration, before any
     * vCPU runs; it validates every value as it would a guest's register write.
     */
    int (*save)(void *dev, struct vmm_snap *s);
    int (*load)(void *dev, struct vmm_snap *s);
    uint32_t snap_version;
    /*
     * The VM is going away: stop taking work from other threads (back-ends, the I/O thread).
     * Called for every device before the I/O thread stops and before any destroy.
     */
    void (*quiesce)(void *dev);
    /* Free the device. Called once, in the reverse order of registration, when no vCPU runs. */
    void (*destroy)(void *dev);
};

struct vmm_board_entry {
    const struct vmm_device_ops *ops;
    void *dev;
};

struct vmm_board {
    struct vmm_board_entry dev[VMM_BOARD_MAX_DEVICES];
    unsigned ndev;
    char stdout_path[64]; /* /chosen/stdout-path: the boot console's node (set by the UART) */
};

/* The fixed devices of the machine: the interrupt controller, the UART, the virtio-mmio window. */
int vmm__board_init(struct vmm_vm *vm);
/* Every device's quiesce hook (vmm_destroy, before the I/O thread stops). */
void vmm__board_quiesce(struct vmm_vm *vm);
/* Destroy every device (reverse order of registration). */
void vmm__board_destroy(struct vmm_vm *vm);

/*
 * Register a device: the board calls its hooks from now on and destroys it with the VM. Only
 * before the VM is prepared. On failure nothing is registered (the caller frees dev).
 */
int vmm__board_add(struct vmm_vm *vm, const struct vmm_device_ops *ops, void *dev);
/* Undo the last vmm__board_add() of dev (its setup failed after registering); does not destroy it. */
void vmm__board_remove(struct vmm_vm *vm, void *dev);
/* The nth (from 0) registered device with these ops, or NULL. */
void *vmm__board_find(struct vmm_vm *vm, const struct vmm_device_ops *ops, unsigned nth);

/* The hooks over every device, in registration order. */
int vmm__board_fdt(struct vmm_vm *vm, void *fdt);
uint64_t vmm__board_advance(struct vmm_vm *vm, uint64_t now_ns); /* also the console's scheduled input */
void vmm__board_set_running(struct vmm_vm *vm, bool running);    /* also the console */
uint64_t vmm__board_host_mem(struct vmm_vm *vm);
void vmm__board_reset(struct vmm_vm *vm);
/*
 * Snapshots: every device's save (or, on a loading stream, load) hook, each in a section of its own
 * named "<ops name>.<n>" (n counts devices with the same ops), opened and closed by the board.
 * Loading fails if a device has no section or leaves bytes of it unread.
 */
int vmm__board_snap(struct vmm_vm *vm, struct vmm_snap *s);

/* The boot console's device-tree path (the UART sets it when it joins the board). */
void vmm__board_set_stdout(struct vmm_vm *vm, const char *path);

/*
 * The devices' entry points. The public vmm_add_*() calls are defined in core/machine.c, which records
 * each call (machine.h: a snapshot rebuilds the board from that record) and then calls these.
 */
struct vmm_gpu_config;
int vmm__dev_add_gpu(struct vmm_vm *vm, const struct vmm_gpu_config *cfg);
int vmm__dev_add_input(struct vmm_vm *vm);
int vmm__dev_add_disk(struct vmm_vm *vm, const char *path, int readonly);
int vmm__dev_add_share(struct vmm_vm *vm, const char *host_dir, const char *tag, int readonly);
int vmm__dev_add_rng(struct vmm_vm *vm);
int vmm__dev_add_test_device(struct vmm_vm *vm);
int vmm__dev_add_virtio_console(struct vmm_vm *vm);
struct vmm_net_config;
int vmm__dev_add_net(struct vmm_vm *vm, const struct vmm_net_config *cfg);

#endif
