/* vm.h - internal VM and vCPU state shared by the core, arm models, devices and backends. */
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
#include "board.h"

#define VMM_MAX_REGIONS 48
#define VMM_ERRMSG_LEN 512

/* An MMIO device window on the bus. Offsets are relative to base. */
struct vmm_mmio_ops {
    uint64_t (*read)(void *dev, uint64_t off, unsigned size);
    void (*write)(void *dev, uint64_t off, unsigned size, uint64_t val);
};

struct vmm_region {
    uint64_t base, size;
    const char *name;
    const struct vmm_mmio_ops *ops;
    void *dev;
    struct vmm_vm *vm;
};

/* One generic-timer channel (virtual or EL1 physical): CNT{V,P}_CTL_EL0 and _CVAL_EL0. */
struct vmm_timer {
    uint64_t ctl; /* ENABLE (bit 0) and IMASK (bit 1); ISTATUS is computed */
    uint64_t cval;
};
enum { TIMER_VIRT = 0, TIMER_PHYS = 1, TIMER_COUNT };

struct vmm_vcpu {
    struct vmm_vm *vm;
    unsigned id;
    void *bstate;    /* the backend's per-vCPU state */
    bool on;         /* powered on (vCPU 0 at boot) */
    bool idle;       /* in WFI, waiting for an interrupt */
    bool yielded;    /* it spins waiting for another vCPU: end its turn (set by the backend) */
    atomic_bool irq; /* the GIC asserts this vCPU's IRQ line */
    uint64_t mpidr;  /* affinity: Aff0 = id */
    struct vmm_timer timer[TIMER_COUNT];
    bool timer_level[TIMER_COUNT]; /* the PPI levels last driven */
    /*
     * Instruction budget (soft backend): vcpu_run() returns once insns
     * reaches insn_limit. In deterministic mode this vCPU's clock is
     * vm->vtime_ns + (insns - quantum_start) ns.
     */
    uint64_t insns;
    uint64_t insn_limit;
    uint64_t quantum_start;
};

struct vmm_console;
struct vmm_gic;
struct vmm_virtio_mmio_bus;

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

    struct vmm_vcpu vcpus[VMM_MAX_CPUS];

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
    struct vmm_gic *gic;
    struct vmm_console *console;
    struct vmm_park park;

    /* stats (updated by the thread running the VM) */
    struct vmm_stats stats;

    /* guest-error rate limit, under gerr_lock (a leaf) */
    pthread_mutex_t gerr_lock;
    uint64_t gerr_window_start;
    unsigned gerr_in_window;
    unsigned gerr_suppressed;

    char errmsg[VMM_ERRMSG_LEN];
};

/* errors and logging (vm.c, log.c) */
int vmm__set_error(struct vmm_vm *vm, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void vmm__log(struct vmm_vm *vm, int level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A rate-limited "guest error: ..." warning; counts vm->stats.guest_errors. */
void vmm__guest_error(struct vmm_vm *vm, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t vmm__now_ns(void);

/* Wake the run loop (and the clock thread) to look again: an idle loop may have work (takes vm->lock). */
void vmm__wake_run_loop(struct vmm_vm *vm);

/* VMM_EBUSY with "<what> while the VM runs" unless the VM is idle (takes and drops vm->lock). */
int vmm__check_idle(struct vmm_vm *vm, const char *what);

/*
 * Count an event in vm->stats: atomically when vCPUs run on threads of their
 * own (threaded backends), a plain increment on the soft backend's one thread.
 */
static inline void vmm__count(struct vmm_vm *vm, uint64_t *counter)
{
    if (vm->ops && vm->ops->threaded)
        __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    else
        (*counter)++;
}

/* guest memory (mem.c): NULL unless [gpa, gpa+len) lies inside RAM */
void *vmm__gpa_ptr(struct vmm_vm *vm, uint64_t gpa, uint64_t len);

/* MMIO bus (mmio.c) */
int vmm__bus_add(struct vmm_vm *vm, uint64_t base, uint64_t size, const char *name, const struct vmm_mmio_ops *ops,
                 void *dev);
/* Serve one access; unclaimed addresses in the device window are RAZ/WI. */
void vmm__bus_access(struct vmm_vm *vm, uint64_t gpa, unsigned size, bool is_write, uint64_t *val);
/* The same for a known region (the soft backend maps regions directly). */
uint64_t vmm__region_read(struct vmm_region *r, uint64_t off, unsigned size);
void vmm__region_write(struct vmm_region *r, uint64_t off, unsigned size, uint64_t val);
/* The unclaimed parts of the low device window as RAZ/WI regions, for backends that must map them. */
int vmm__bus_gaps(struct vmm_vm *vm, struct vmm_region *gaps, unsigned max);

/* clock and timers (arm/timer.c) */
#define TIMER_FREQ_HZ 62500000ULL
#define TIMER_NS_PER_TICK 16
uint64_t vmm__clock_ns(struct vmm_vm *vm, struct vmm_vcpu *vcpu);
/* Re-evaluate every timer against the clock: drive PPI levels, update next_deadline_ns. */
void vmm__timers_update(struct vmm_vm *vm);
int vmm__timer_sysreg(struct vmm_vcpu *vcpu, uint32_t id, bool is_read, uint64_t *val);
bool vmm__timer_sysreg_is_ours(uint32_t id);

/* interrupts (irq.c): route a device line to the GIC; SPI n is INTID 32+n */
void vmm__irq_set(struct vmm_vm *vm, unsigned cpu, unsigned intid, bool level);
/* Whether a vCPU other than this one could run now (not off, not waiting without an interrupt). */
bool vmm__others_runnable(struct vmm_vcpu *vcpu);
/* true if we are on the run thread (inside vmm_run) */
bool vmm__on_run_thread(struct vmm_vm *vm);

/* parking at a round boundary, deterministic mode (run.c) */
void vmm__park_source(struct vmm_vm *vm, uint64_t (*progress)(void *opaque), void *opaque);
int vmm__park_arm(struct vmm_vm *vm, uint64_t target);      /* VMM_ESTATE in real-time mode */
int vmm__park_wait(struct vmm_vm *vm, uint64_t timeout_ns); /* 0 parked, 1 timeout, VMM_EEOF: no run */
void vmm__park_release(struct vmm_vm *vm);

/* console output buffer and input queue (console.c) */
int vmm__console_create(struct vmm_console **out, struct vmm_vm *vm);
/*
 * Input notification for the UART model: cb(opaque) runs (without the
 * console lock held, from any thread) whenever queued input goes from empty
 * to non-empty.
 */
void vmm__console_set_input_cb(struct vmm_console *c, void (*cb)(void *opaque), void *opaque);
/*
 * Deterministic mode: input written with a virtual timestamp waits until the
 * run loop calls this with the clock; bytes due at or before now_ns enter the
 * input queue. Returns the time of the next scheduled byte (UINT64_MAX: none).
 */
void vmm__console_set_deterministic(struct vmm_console *c, bool on);
uint64_t vmm__console_advance(struct vmm_console *c, uint64_t now_ns);
void vmm__console_destroy(struct vmm_console *c);
void vmm__console_put(struct vmm_console *c, const void *buf, size_t len);
/* output dropped because nobody read it (stats.serial_dropped); host memory of the buffers */
uint64_t vmm__console_dropped(struct vmm_console *c);
size_t vmm__console_host_mem(struct vmm_console *c);
/* next input byte, or -1 when none is queued */
int vmm__console_getc(struct vmm_console *c);
bool vmm__console_has_input(struct vmm_console *c);
void vmm__console_set_running(struct vmm_console *c, bool running);

#endif
