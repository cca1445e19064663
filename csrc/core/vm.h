/*
 * vm.h - the VM and vCPU state shared by the core, arm models, devices and backends, with errors,
 * logging and guest memory. Each part has its own header: bus.h (mmio.c), board.h, console.h, irq.h,
 * run.h (the run loop), ../arm/timer.h; backend.h and irqchip.h for backends.
 */
#ifndef VMM_VM_H
#define VMM_VM_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm.h"
#include "backend.h"
#include "../arm/timer.h"
#include "../arm/pmu.h"
#include "board.h"
#include "bus.h"
#include "machine.h"

#define VMM_ERRMSG_LEN 512

struct vmm_vcpu {
    struct vmm_vm *vm;
    unsigned id;
    void *bstate;     /* the backend's per-vCPU state */
    atomic_bool on;   /* powered on (vCPU 0 at boot); atomic: other vCPU threads read it (PSCI, count_on) */
    atomic_bool idle; /* in WFI, waiting for an interrupt; atomic, as `on` */
    bool yielded;     /* it spins waiting for another vCPU: end its turn (set by the backend) */
    atomic_bool irq;  /* the GIC asserts this vCPU's IRQ line */
    uint64_t mpidr;   /* affinity: Aff0 = id */
    struct vmm_timer timer[TIMER_COUNT];
    bool timer_level[TIMER_COUNT];    /* the PPI levels last driven */
    atomic_uint_fast64_t deadline_ns; /* its earliest enabled timer deadline (UINT64_MAX: none) */
    struct vmm_pmu pmu;               /* our PMUv3 (arm/pmu.c), where the backend's CPU has none that counts */
    /*
     * PSCI CPU_ON (ours) asks for a reset at entry with x0 = context; the
     * vCPU's own run applies it (run_one), because a backend may only touch
     * a vCPU's registers on the vCPU's thread (Hypervisor.framework).
     */
    atomic_bool reset_pending; /* set last, after reset_entry and reset_x0: its load orders their reads */
    uint64_t reset_entry, reset_x0;
    /*
     * Instruction budget (soft backend): vcpu_run() returns once insns
     * reaches insn_limit. In deterministic mode this vCPU's clock is
     * vm->vtime_ns + (insns - quantum_start) ns.
     */
    uint64_t insns;
    uint64_t insn_limit;
    uint64_t quantum_start;
    bool dbg_frozen; /* a debugger keeps this vCPU stopped while it steps another (gdbstub.c) */
    /*
     * Thread per vCPU (run_wait.c, vmm__run_vcpu_wait): its thread is not committed to sleeping (it runs, or polls in
     * WFI), so a line raised for it needs the backend's kick only, no wake-up of vm->cond. halt_poll_ns is how long its
     * next WFI polls before it sleeps (adaptive; touched by its own thread only).
     */
    atomic_bool awake;
    uint64_t halt_poll_ns;
    /* Thread per vCPU: its thread sleeps on `wake` (under vm->lock, `waiting` set) instead of vm->cond, so that a
       line raised for it wakes it alone (irq.c); vmm__vm_broadcast() wakes it with everyone else. */
    bool waiting;
    pthread_cond_t wake;
};

struct vmm_console;
struct vmm_gdb;
struct gdb_rev;
struct vmm_irqchip;
struct vmm_virtio_mmio_bus;
struct vmm_pci_host;
struct vmm_iothread;

/*
 * Deterministic mode: the run loop parks at a round boundary once a device's progress counter reaches
 * a target (run.c; the screen's frames for vmm_screen_pause_at). Guarded by vm->lock.
 */
struct vmm_park {
    uint64_t (*progress)(void *opaque); /* the source: called on the run thread, without vm->lock */
    void *opaque;
    uint64_t target; /* park once progress >= target (0: not armed) */
    bool parked;     /* the loop stands still until vmm__park_release(), a stop or the timeout */
    bool running;    /* a run is under way or announced (vmm_run_pending) */
};

enum vmm_vm_state {
    VM_STATE_NEW = 0,  /* configuring */
    VM_STATE_PREPARED, /* memory laid out, DTB built, vCPUs reset */
    VM_STATE_RUNNING,
    VM_STATE_PAUSED, /* stopped or timed out: may run again */
    VM_STATE_ENDED,  /* powered off, reset or failed */
};

struct vmm_loaded_kernel {
    bool present;
    uint64_t start, end; /* guest physical, end exclusive (reserved size) */
    uint64_t entry;
};

struct vmm_vm {
    /* configuration */
    uint64_t ram_size;
    unsigned ncpus;
    char cpu_model[32];
    vmm_log_fn log_fn;
    void *log_opaque;
    int log_level;

    const struct vmm_backend_ops *ops;
    void *bstate; /* the backend's per-VM state */

    uint8_t *ram; /* host mapping of guest RAM */

    struct vmm_region regions[VMM_MAX_REGIONS];
    unsigned nregions;

    /* boot */
    struct vmm_loaded_kernel kernel;
    uint8_t *initrd;
    size_t initrd_len;
    char *cmdline;
    void *dtb;
    size_t dtb_len;
    struct vmm_boot_info boot;

    /* lifecycle; `lock` guards state and the wait condition */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC: run-state changes, WFI wakeups */
    enum vmm_vm_state state;
    atomic_int stop_requested;
    atomic_int timed_out;
    atomic_uint_fast64_t wake_seq; /* bumped (under lock) by vmm__wake_run_loop: a wake-up is never lost */

    /* clock: real time from the host's monotonic clock, or virtual time (deterministic) */
    bool deterministic;
    bool its;                              /* vmm_config.its: the GIC has LPIs and an ITS */
    uint64_t clock_base_ns;                /* real time: host time at creation */
    uint64_t vtime_ns;                     /* deterministic: the clock at the start of the current quantum */
    atomic_uint_fast64_t next_deadline_ns; /* earliest enabled timer deadline (UINT64_MAX: none) */
    atomic_uint_fast64_t stop_at_ns;       /* deterministic: vmm_stop_at() (UINT64_MAX: none) */
    struct vmm_vcpu *current;              /* the vCPU executing on the run thread, or NULL */
    pthread_t run_thread;
    bool run_thread_valid;

    /* the machine: every device (board.c), the interrupt controller, the console stream */
    struct vmm_board board;
    struct vmm_virtio_mmio_bus *virtio; /* the virtio-mmio window (dev/virtio_mmio.c, a board device) */
    struct vmm_pci_host *pci;           /* the PCIe host bridge (dev/pci_host.c), with VMM_TRANSPORT_PCI */
    uint32_t transport;                 /* enum vmm_transport: where virtio devices go */
    struct vmm_irqchip *irqchip;        /* core/irqchip.h: our GICv3 model or the backend's */
    struct vmm_console *console;
    struct vmm_park park;
    struct vmm_iothread *iothread; /* core/iothread.h: created by the first back-end that needs it */

    /* what the VM was built from: every vmm_add_*() call (machine.c), for snapshots */
    struct vmm_machine machine;
    bool ram_from_file; /* guest RAM is (partly) a private mapping of a snapshot (snapshot.c) */

    /* the GDB server (gdbstub.c), NULL without one; dbg_halt: the debugger wants the run loop to hold */
    struct vmm_gdb *gdb;
    struct gdb_rev *gdb_rev; /* reverse execution (gdb_reverse.c): deterministic soft VMs being debugged */
    atomic_bool dbg_halt;
    bool dbg_busy; /* under lock: the debugger reads or writes the stopped VM (vmm__check_idle refuses) */
    atomic_uint_fast64_t clock_held; /* real time, held by the debugger: 1 + the clock where it stands, else 0 */

    /* stats (updated by the vCPU threads through vmm__count) */
    struct vmm_stats stats;
    bool count_atomic; /* the backend has VMM_CAP_VCPU_THREADS (set with ops: a load less per count) */

    /* guest-error rate limit, under gerr_lock (a leaf) */
    pthread_mutex_t gerr_lock;
    uint64_t gerr_window_start;
    unsigned gerr_in_window;
    unsigned gerr_suppressed;

    char errmsg[VMM_ERRMSG_LEN];

    /* last and sized to ncpus (vmm_create): a read past the last vCPU leaves the allocation, which ASan reports */
    struct vmm_vcpu vcpus[];
};

/* errors and logging (vm.c, log.c) */
int vmm__set_error(struct vmm_vm *vm, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void vmm__log(struct vmm_vm *vm, int level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Whether vmm__log at this level would log: a hot caller skips the varargs call (an unknown HVC: 3 of 10 ns). */
static inline bool vmm__log_on(const struct vmm_vm *vm, int level)
{
    return vm->log_fn && level <= vm->log_level;
}
/* A rate-limited "guest error: ..." warning; counts vm->stats.guest_errors. */
void vmm__guest_error(struct vmm_vm *vm, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t vmm__now_ns(void);

/* VMM_EBUSY with "<what> while the VM runs" unless the VM is idle (takes and drops vm->lock). */
int vmm__check_idle(struct vmm_vm *vm, const char *what);

/* Add to a counter this thread alone writes and other threads may read (relaxed: whole values, no order). */
static inline void vmm__add_own(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/*
 * Count an event in vm->stats: an atomic add when vCPUs run on threads of their own
 * (VMM_CAP_VCPU_THREADS); with one run thread, the only writer, a relaxed load and store (plain moves,
 * no locked add), so that vmm_get_stats on another thread reads whole values (ThreadSanitizer agrees).
 */
static inline void vmm__count_n(struct vmm_vm *vm, uint64_t *counter, uint64_t n)
{
    if (vm->count_atomic)
        __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
    else
        vmm__add_own(counter, n);
}

static inline void vmm__count(struct vmm_vm *vm, uint64_t *counter)
{
    vmm__count_n(vm, counter, 1);
}

/* guest memory (mem.c): NULL unless [gpa, gpa+len) lies inside RAM */
void *vmm__gpa_ptr(struct vmm_vm *vm, uint64_t gpa, uint64_t len);

#endif
