/*
 * debug.h - what a debugger asks of a backend (gdbstub.c is the one user): registers in the debugger's
 * numbering, breakpoints, watchpoints and single-step installed only while asked for, and the hook
 * points of the run loop (gdbstub.c). A backend reports a hit as VMM_EXIT_DEBUG (backend.h).
 */
#ifndef VMM_DEBUG_H
#define VMM_DEBUG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_vcpu;
struct vmm_exit;

/* Register numbers (gdb's aarch64 order: core, then FP/SIMD). */
enum {
    VMM_DBG_REG_X0 = 0, /* .. X30 = 30 */
    VMM_DBG_REG_SP = 31,
    VMM_DBG_REG_PC = 32,
    VMM_DBG_REG_PSTATE = 33, /* 4 bytes */
    VMM_DBG_REG_V0 = 34,     /* .. V31 = 65, 16 bytes each */
    VMM_DBG_REG_FPSR = 66,   /* 4 bytes */
    VMM_DBG_REG_FPCR = 67,   /* 4 bytes */
    VMM_DBG_NREGS = 68,
};

/* A debugger register's size in bytes (the numbers above); what a backend maps it to is its own. */
static inline unsigned vmm__dbg_reg_size(unsigned regno)
{
    return regno >= VMM_DBG_REG_V0 && regno < VMM_DBG_REG_V0 + 32 ? 16 : regno >= VMM_DBG_REG_PSTATE ? 4 : 8;
}

enum vmm_debug_point_type {
    VMM_DBG_BREAK = 0,       /* software breakpoint (gdb Z0): the instruction at addr does not execute */
    VMM_DBG_HBREAK = 1,      /* hardware breakpoint (Z1): the same on the soft backend */
    VMM_DBG_WATCH_WRITE = 2, /* stores overlapping [addr, addr + len) */
    VMM_DBG_WATCH_READ = 3,
    VMM_DBG_WATCH_ACCESS = 4,
    VMM_DBG_COUNT = 5, /* only as a debug exit's point: the instruction-count stop of vmm_debug_cfg */
};

struct vmm_debug_point {
    enum vmm_debug_point_type type;
    uint64_t addr; /* virtual, in the vCPU's current translation regime */
    uint64_t len;  /* watchpoints: bytes watched */
};

struct vmm_debug_cfg {
    const struct vmm_debug_point *points;
    unsigned npoints;
    bool step; /* stop after one instruction of this vCPU (or on entry to an exception vector) */
    /*
     * Stop before the instruction this vCPU would execute with count_at instructions executed
     * (vcpu->insns == count_at): reverse execution's exact landing (gdb_reverse.c). A code hook on
     * every instruction while installed: meant for the last few hundred instructions of a replay.
     */
    bool count;
    uint64_t count_at;
};

struct vmm_debug_ops {
    /* a register's bytes (1..16, little-endian); 0 or VMM_E* */
    int (*reg_read)(struct vmm_vcpu *vcpu, unsigned regno, uint8_t *buf, unsigned size);
    int (*reg_write)(struct vmm_vcpu *vcpu, unsigned regno, const uint8_t *buf, unsigned size);
    int (*sysreg_read)(struct vmm_vcpu *vcpu, uint32_t id, uint64_t *val);
    int (*sysreg_write)(struct vmm_vcpu *vcpu, uint32_t id, uint64_t val);
    /*
     * Install what cfg asks for on this vCPU, replacing what was there; an empty cfg removes every
     * debug hook (no cost left behind). Called with the vCPU stopped.
     */
    int (*set_debug)(struct vmm_vcpu *vcpu, const struct vmm_debug_cfg *cfg);
    /*
     * Resume past the current stop: a breakpoint or watchpoint hit at this vCPU's PC with its
     * instruction count unchanged is not reported again (once). Reverse execution's scan records a
     * hit and goes on without removing the points (no translation flush). Optional.
     */
    void (*step_over)(struct vmm_vcpu *vcpu);
    /* The debugger wrote guest memory: drop translated code of this vCPU. */
    void (*mem_changed)(struct vmm_vcpu *vcpu);
    /*
     * Optional, for a backend whose timers are the host kernel's: the guest's counter stops (hold) and
     * goes on from where it stood. Called with every vCPU out of the guest.
     */
    void (*clock_hold)(struct vmm_vcpu *vcpu, bool hold);
    /*
     * Optional: a backend that plants breakpoint instructions in guest RAM shows the debugger the bytes
     * they replaced (read), or keeps them planted under a debugger's write and updates what they replaced.
     */
    void (*mem_shadow)(struct vmm_vm *vm, uint64_t gpa, uint8_t *buf, size_t len, bool write);
    /* Optional, for a backend that powers vCPUs on and off itself (VMM_CAP_KERNEL_PSCI): whether it is on. */
    bool (*powered)(struct vmm_vcpu *vcpu);
};

/* The EL1&0 stage-1 registers a walk needs, and the walk (arm/s1walk.c): 0 and *pa, or VMM_ERANGE. */
struct vmm_s1_regs {
    uint64_t sctlr, tcr, ttbr0, ttbr1;
};
int vmm__s1_translate(struct vmm_vm *vm, const struct vmm_s1_regs *r, uint64_t va, uint64_t *pa);

/* Run-loop hook points (run.c calls them only when vm->gdb is set). */
/* Stand still here while the debugger holds the VM (vcpu: the one about to run, or NULL). */
void vmm__gdb_hold(struct vmm_vm *vm, struct vmm_vcpu *vcpu);
/* After a vCPU's run: a debug exit or the end of a step stops the VM; true if it held. */
bool vmm__gdb_after_run(struct vmm_vcpu *vcpu, const struct vmm_exit *exit);
/* The run ended (reason, status); true if the debugger killed the VM (it must not run again). */
bool vmm__gdb_run_end(struct vmm_vm *vm, int reason, int status);
void vmm__gdb_destroy(struct vmm_vm *vm);

#endif
