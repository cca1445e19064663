/* backend.h - the vCPU backend ops table and normalized exits. */
#ifndef VMM_BACKEND_H
#define VMM_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_vcpu;
struct vmm_snap;

/*
 * What a backend's vcpu_run() reports. Backends decode their native exits
 * (KVM_EXIT_*, HVF syndromes, Unicorn hooks) into this. A backend may serve
 * MMIO and sysreg accesses inline by calling the core handlers
 * (vmm__bus_access, vmm__sysreg_access) instead of returning them; the soft
 * backend does, for speed. HVC/SMC calls are always served by the backend
 * (soft and hvf call vmm__psci_call and report the exit it names, KVM serves
 * PSCI in the kernel), so there is no call exit.
 */
enum vmm_exit_kind {
    VMM_EXIT_NONE = 0,    /* slice ended or kicked: just loop */
    VMM_EXIT_MMIO,        /* complete with ops->complete_mmio() */
    VMM_EXIT_WFI,         /* idle until an interrupt or deadline */
    VMM_EXIT_SHUTDOWN,    /* system off: exit.status */
    VMM_EXIT_RESET,       /* system reset */
    VMM_EXIT_CPU_OFF,     /* this vCPU turned itself off */
    VMM_EXIT_GUEST_ERROR, /* the guest cannot continue; message set */
    VMM_EXIT_HOST_ERROR,  /* the backend failed; message set */
    VMM_EXIT_DEBUG,       /* a debugger's breakpoint, watchpoint or step stopped the vCPU (debug.h) */
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
        int status;
        struct {
            int point;     /* enum vmm_debug_point_type, or -1 for a finished step */
            uint64_t addr; /* the watchpoint's address */
        } debug;
    };
};

struct vmm_debug_ops; /* debug.h */

/*
 * What a backend does itself, as bits in vmm_backend_ops.caps. Each bit the
 * core asks about means exactly one thing; a clear bit means the core does it.
 *
 *  VCPU_THREADS    every vCPU runs on a thread of its own (run.c's threaded
 *                  loop); else all run round-robin on the caller's thread.
 *  KERNEL_IRQCHIP  the backend brings the interrupt controller: its vm_init
 *                  sets vm->irqchip (irqchip.h); else the core creates our
 *                  GICv3 model, whose CPU interface is served by sysreg traps.
 *  KERNEL_TIMERS   the generic timers are the backend's (the host kernel's);
 *                  else arm/timer.c emulates them and the loops drive their PPIs.
 *  KERNEL_PSCI     PSCI (CPU_ON/OFF, SYSTEM_OFF...) is served by the backend,
 *                  which powers vCPUs on and off without the core seeing it;
 *                  else the backend passes HVC/SMC calls to arm/psci.c
 *                  (vmm__psci_call) and vcpu->on is ours.
 *  HOST_CPU        the vCPU is the host's CPU (the cpu_model is ignored).
 *
 * WFI: a backend with KERNEL_IRQCHIP and KERNEL_TIMERS waits in the kernel
 * and never reports VMM_EXIT_WFI; any other backend must return it (the core
 * knows the interrupt line and the timer deadlines, the backend does not).
 * KVM sets all five; a Hypervisor.framework backend would set VCPU_THREADS
 * and HOST_CPU only (our GIC, timers and PSCI); "soft" sets none and
 * "soft-threaded" (a test vehicle for that combination) VCPU_THREADS only.
 */
#define VMM_CAP_VCPU_THREADS (1u << 0)
#define VMM_CAP_KERNEL_IRQCHIP (1u << 1)
#define VMM_CAP_KERNEL_TIMERS (1u << 2)
#define VMM_CAP_KERNEL_PSCI (1u << 3)
#define VMM_CAP_HOST_CPU (1u << 4)

struct vmm_backend_ops {
    const char *name;
    unsigned caps; /* VMM_CAP_* */
    /* Only chosen by name, never by "auto" (test vehicles). */
    bool not_auto;
    /* 0 if usable on this host, else VMM_ENOBACKEND with a reason in why. */
    int (*probe)(char *why, size_t len);
    /*
     * Optional, for a backend without VMM_CAP_VCPU_THREADS: the same backend (same name, same
     * snapshots) with a thread per vCPU, or NULL when it cannot run that way on this host. vm.c
     * picks it for a real-time VM of more than one vCPU unless vmm_config.vcpu_threads says one.
     */
    const struct vmm_backend_ops *(*threaded_variant)(void);
    int (*vm_init)(struct vmm_vm *vm);
    void (*vm_fini)(struct vmm_vm *vm);
    int (*vcpu_init)(struct vmm_vcpu *vcpu);
    void (*vcpu_fini)(struct vmm_vcpu *vcpu);
    /* Put the vCPU at `entry` in EL1h, DAIF masked, MMU off, x0 = arg. */
    int (*vcpu_reset)(struct vmm_vcpu *vcpu, uint64_t entry, uint64_t x0);
    /* Run until an exit; a failure is an exit too (VMM_EXIT_HOST_ERROR, message set). */
    void (*vcpu_run)(struct vmm_vcpu *vcpu, struct vmm_exit *exit);
    /* Finish an MMIO read exit with its value; NULL if MMIO is served inline. */
    void (*complete_mmio)(struct vmm_vcpu *vcpu, uint64_t value);
    /* Thread-safe: make vcpu_run() return soon. */
    void (*kick)(struct vmm_vcpu *vcpu);
    /*
     * Any thread: vcpu->irq changed. Apply it now if the vCPU is executing on
     * this thread, else before its next run (kicking it if it runs elsewhere).
     * NULL when the backend has its own interrupt controller (KERNEL_IRQCHIP).
     */
    void (*irq_notify)(struct vmm_vcpu *vcpu);
    /*
     * VCPU_THREADS backends, optional: the vCPU's thread stops running it (the run
     * ended). Finish what the last exit left pending, so that registers and
     * the PC are final while the VM is paused.
     */
    void (*vcpu_leave)(struct vmm_vcpu *vcpu);
    uint64_t (*get_pc)(struct vmm_vcpu *vcpu);
    /*
     * Snapshots (snapshot.c; the VM paused, the core has written/read its own vCPU fields in the
     * open "vcpu.N" section): everything the guest can observe of the vCPU's registers. load runs
     * on a new VM before any vCPU runs and validates what it reads. NULL: the backend cannot
     * snapshot (VMM_ENOTSUP).
     */
    int (*vcpu_save)(struct vmm_vcpu *vcpu, struct vmm_snap *s);
    int (*vcpu_load)(struct vmm_vcpu *vcpu, struct vmm_snap *s);
    /* Host memory the backend uses for this vCPU, beyond guest RAM (estimate). */
    uint64_t (*mem_overhead)(struct vmm_vcpu *vcpu);
    /* What a debugger (core/gdbstub.c) needs; NULL: the backend cannot be debugged. */
    const struct vmm_debug_ops *debug;
};

/* Whether the backend does all of `cap` (VMM_CAP_* bits) itself. */
static inline bool vmm__has_cap(const struct vmm_backend_ops *ops, unsigned cap)
{
    return ops && (ops->caps & cap) == cap;
}

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

/*
 * Hypervisor.framework (hvf.c): macOS on Apple Silicon. The Python build on Linux compiles it too,
 * with -DVMM_HAVE_HVF=1, against the framework simulator in csrc/backend/hvfsim/ (a test vehicle:
 * chosen by name only there, never by "auto").
 */
#ifndef VMM_HAVE_HVF
#if defined(__APPLE__) && defined(__aarch64__)
#define VMM_HAVE_HVF 1
#else
#define VMM_HAVE_HVF 0
#endif
#endif
#ifdef __APPLE__
#define VMM_HVF_BY_NAME_ONLY 0
#else
#define VMM_HVF_BY_NAME_ONLY 1
#endif

extern const struct vmm_backend_ops vmm__soft_backend;
extern const struct vmm_backend_ops vmm__soft_threaded_backend;
extern const struct vmm_backend_ops vmm__kvm_backend;
extern const struct vmm_backend_ops vmm__hvf_backend;

#endif
