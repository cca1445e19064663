/* backend.h - the vCPU backend ops table and normalized exits. */
#ifndef VMM_BACKEND_H
#define VMM_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_vcpu;

/*
 * What a backend's vcpu_run() reports. Backends decode their native exits
 * (KVM_EXIT_*, HVF syndromes, Unicorn hooks) into this. A backend may serve
 * MMIO, sysreg and HVC exits inline by calling the core handlers
 * (vmm__bus_access, vmm__sysreg_access, vmm__psci_call) itself instead of
 * returning them; the soft backend does, for speed.
 */
enum vmm_exit_kind {
    VMM_EXIT_NONE = 0,    /* slice ended or kicked: just loop */
    VMM_EXIT_MMIO,        /* complete with ops->complete_mmio() */
    VMM_EXIT_HVC,         /* PSCI/SMCCC call: x0..x3 in exit.call */
    VMM_EXIT_WFI,         /* idle until an interrupt or deadline */
    VMM_EXIT_SHUTDOWN,    /* system off: exit.status */
    VMM_EXIT_RESET,       /* system reset */
    VMM_EXIT_CPU_OFF,     /* this vCPU turned itself off */
    VMM_EXIT_GUEST_ERROR, /* the guest cannot continue; message set */
    VMM_EXIT_HOST_ERROR,  /* the backend failed; message set */
};

struct vmm_exit {
    enum vmm_exit_kind kind;
    union {
        struct {
            uint64_t gpa;
            uint64_t data;
            unsigned size;
            bool is_write;
        } mmio;
        struct {
            uint64_t x[4];
        } call;
        int status;
    };
};

struct vmm_backend_ops {
    const char *name;
    /*
     * Hardware backends (KVM): every vCPU runs on a thread of its own, and
     * the GIC, the timers, PSCI and WFI live in the backend (in the host
     * kernel). The core then only serves MMIO and system events, routes
     * device interrupt lines to irq_line() and has no GIC model of its own.
     */
    bool threaded;
    /* 0 if usable on this host, else VMM_ENOBACKEND with a reason in why. */
    int (*probe)(char *why, size_t len);
    int (*vm_init)(struct vmm_vm *vm);
    void (*vm_fini)(struct vmm_vm *vm);
    int (*vcpu_init)(struct vmm_vcpu *vcpu);
    void (*vcpu_fini)(struct vmm_vcpu *vcpu);
    /* Put the vCPU at `entry` in EL1h, DAIF masked, MMU off, x0 = arg. */
    int (*vcpu_reset)(struct vmm_vcpu *vcpu, uint64_t entry, uint64_t x0);
    int (*vcpu_run)(struct vmm_vcpu *vcpu, struct vmm_exit *exit);
    /* Finish an MMIO read exit with its value; NULL if MMIO is served inline. */
    int (*complete_mmio)(struct vmm_vcpu *vcpu, uint64_t value);
    /* Finish an HVC exit: set x0..x3. NULL if calls are served inline. */
    int (*complete_call)(struct vmm_vcpu *vcpu, const uint64_t x[4]);
    /* Thread-safe: make vcpu_run() return soon. */
    void (*kick)(struct vmm_vcpu *vcpu);
    /*
     * Any thread: vcpu->irq changed. Apply it now if the vCPU is executing on
     * this thread, else before its next run (kicking it if it runs elsewhere).
     * NULL when the backend has its own interrupt controller.
     */
    void (*irq_notify)(struct vmm_vcpu *vcpu);
    /*
     * Threaded backends, optional: the vCPU's thread stops running it (the run
     * ended). Finish what the last exit left pending, so that registers and
     * the PC are final while the VM is paused.
     */
    void (*vcpu_leave)(struct vmm_vcpu *vcpu);
    /* Threaded backends: drive a device line (SPI INTID 32.., or a PPI of `cpu`). Any thread. */
    void (*irq_line)(struct vmm_vm *vm, unsigned cpu, unsigned intid, bool level);
    uint64_t (*get_pc)(struct vmm_vcpu *vcpu);
    /* Host memory the backend uses for this vCPU, beyond guest RAM (estimate). */
    uint64_t (*mem_overhead)(struct vmm_vcpu *vcpu);
};

/* The registry: the only place that knows which backends were built. */
const struct vmm_backend_ops *vmm__backend_find(const char *name, char *why, size_t len);

/*
 * Which backends this build has. The soft backend needs Unicorn (the
 * cross-build for arm64 hosts leaves it out with -DVMM_HAVE_SOFT=0); KVM
 * needs an arm64 Linux host.
 */
#ifndef VMM_HAVE_SOFT
#define VMM_HAVE_SOFT 1
#endif
#ifndef VMM_HAVE_KVM
#if defined(__aarch64__) && defined(__linux__)
#define VMM_HAVE_KVM 1
#else
#define VMM_HAVE_KVM 0
#endif
#endif

extern const struct vmm_backend_ops vmm__soft_backend;
extern const struct vmm_backend_ops vmm__kvm_backend;

#endif
