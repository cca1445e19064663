/* soft.h - internals of the software (Unicorn) backend, shared by soft.c and soft_exc.c. */
#ifndef VMM_SOFT_H
#define VMM_SOFT_H

#include <unicorn/unicorn.h>

#include "../core/vm.h"

#define SOFT_MAX_GAPS 16
#define SOFT_POLL_REGS 33  /* X0..X30, SP, NZCV */
#define SOFT_POLL_BLOCKS 8 /* blocks of a polling loop besides its head */

/* HCR_EL2 as we keep it: EL1 is AArch64, IRQ/FIQ routed to "EL2" so that VI/VF are virtual interrupts */
#define REG_HCR_EL2 SYSREG(3, 4, 1, 1, 0)
#define HCR_FMO (1ull << 3)
#define HCR_IMO (1ull << 4)
#define HCR_VI (1ull << 7)
#define HCR_RW (1ull << 31)
#define HCR_APK (1ull << 40) /* pointer authentication: its keys and instructions do not trap to EL2 */
#define HCR_API (1ull << 41)
#define HCR_BASE (HCR_RW | HCR_IMO | HCR_FMO | HCR_APK | HCR_API)

struct soft_vm {
    size_t syndrome_off; /* where exception.syndrome sits in a uc_context (soft_exc.c) */
    /* broadcast maintenance with a thread per vCPU (soft_bcast.c): guards every vCPU's bc_* and flush requests */
    pthread_mutex_t bc_lock;
    pthread_cond_t bc_cond; /* a vCPU left its engine */
    struct vmm_region gaps[SOFT_MAX_GAPS];
    unsigned ngaps;
};

#define SOFT_IC_PAGES 256
#define SOFT_WPTS 16 /* DBGWCR/DBGWVR pairs tracked (ID_AA64DFR0_EL1.WRPs + 1 is at most 16) */

/* The guest's debug state as soft_dbgarch.c keeps it (watchpoints, the OS lock) */
struct soft_dbgarch {
    uint64_t mdscr; /* MDSCR_EL1 as the guest wrote it (QEMU's copy loses MDE and SS under the OS lock) */
    bool oslk;      /* OSLSR_EL1.OSLK */
    unsigned nwpts; /* watchpoints QEMU's CPU has (ID_AA64DFR0_EL1.WRPs + 1) */
    uint64_t wcr[SOFT_WPTS], wvr[SOFT_WPTS];
    bool hooked; /* the watchpoint hooks are installed */
    bool dirty;  /* they should change: applied before the next run */
    uc_hook hook_code, hook_block;
    uint64_t block; /* the translation block executing, and its instructions (for decoding) */
    unsigned nblock;
    uint32_t insns[512];
};

struct soft_vcpu {
    struct vmm_vcpu *vcpu;
    struct soft_vm *svm;
    uc_engine *uc;
    uc_context *ctx; /* scratch for reading the syndrome */
    atomic_int kick; /* set by any thread; polled by the block hook */
    bool threaded;   /* VMM_CAP_VCPU_THREADS (soft-threaded): this engine runs on a thread of its own */
    /*
     * The patched engine in real time on one vCPU (or a thread per vCPU): no block hook. Kicks go
     * through its safe kick and it counts instructions (engine_insns: its count at the last look).
     */
    const struct soft_engine *fast;
    uint64_t engine_insns;
    uc_hook block_hook; /* the fast engine's block hook, there only while a PMU overflow interrupt is due */
    bool sys_continue;  /* the engine completes hooked MRS/MSR of registers QEMU lacks (real time) */
    bool icc;           /* the VM's irqchip serves the ICC_* registers (set at each run: one load per access) */
    bool virq;          /* HCR_EL2.VI as last written: the GIC's IRQ line as this engine sees it */
    bool tb_flush;      /* another vCPU invalidated the whole instruction cache: drop all our translations */
    /* the engine's MRS result and EL for hooks (NULL without them): see struct soft_engine */
    uc_err (*sys_result)(uc_engine *uc, uint64_t val);
    unsigned (*sys_el)(uc_engine *uc);
    uc_err (*set_virq)(uc_engine *uc, bool level); /* the engine's HCR_EL2.VI setter (NULL: a CP_REG write) */
    /*
     * Another vCPU invalidated these instruction-cache lines by address (IC IVAU): the 4 KiB
     * guest-physical pages that hold them, whose translations we drop before we next run.
     * More pages than fit: tb_flush instead.
     */
    unsigned nic_pages;
    uint64_t ic_pages[SOFT_IC_PAGES];
    bool tlb_flush; /* another vCPU broadcast a TLB invalidation */
    /*
     * Broadcast maintenance with a thread per vCPU (soft_bcast.c; under svm->bc_lock): requests
     * posted for this engine and taken by it, whether it is inside uc_emu_start, and what this
     * vCPU waits for each other one to have taken after it broadcast.
     */
    uint64_t bc_posted, bc_taken;
    bool in_engine, bc_wait;
    uint64_t bc_want[VMM_MAX_CPUS];
    bool parallel; /* a thread per vCPU on SMP: the engine translates for parallel execution */
    struct vmm_exit *exit;
    bool stopped;     /* we called uc_emu_stop during this run */
    bool first_block; /* the next block is the first of this run */
    bool yield_req;   /* end this run at the next block (set where uc_emu_stop is unsafe) */
    uint64_t pc;      /* where the next run starts */
    struct {
        bool pending, fetch, write;
        uint64_t addr;
    } fault;              /* an access outside every mapping, from the unmapped hook */
    uint64_t last_vector; /* exception-loop guard */
    /*
     * Spin detection (SMP): which translation blocks end in WFE or YIELD,
     * the hint a waiting CPU executes in its spin loop. Unicorn treats both
     * as no-ops, so a waiting vCPU would burn its whole slice while the one
     * it waits for cannot run (they share one thread).
     */
    struct spin_entry {
        uint64_t addr;
        uint32_t size;
        bool spins;
    } spin_cache[4096]; /* 64 KiB: a miss reads guest memory through the MMU (a page walk) */
    /* polling detection (soft.c poll_*): the candidate loop followed now, its blocks, its registers */
    struct soft_poll {
        bool tracking;
        uint64_t head;
        uint32_t head_size;
        unsigned nblocks, passes;
        uint64_t rejected; /* the last head that was not polling, skipped `skip` more samples */
        unsigned skip, backoff;
        struct {
            uint64_t addr;
            uint32_t size;
        } blocks[SOFT_POLL_BLOCKS]; /* the others of this pass */
        uint64_t regs[SOFT_POLL_REGS];
    } poll;
    unsigned vector_repeats;
    struct soft_dbgarch dbg;
    struct soft_debug *debugger; /* a debugger's hooks (soft_debug.c); NULL until one asks */
};

/* The patched engine's additions (soft_engine.c), all NULL on the wheel's Unicorn. */
struct soft_engine {
    bool patched;
    uc_err (*kick)(uc_engine *uc);                  /* from any thread: return at the next block's start */
    uc_err (*insns)(uc_engine *uc, uint64_t *n);    /* instructions of the blocks entered so far */
    uc_err (*sys_continue)(uc_engine *uc, bool on); /* hooked MRS/MSR QEMU lacks: no PC write needed */
    uc_err (*parallel)(bool on); /* this thread translates for vCPUs running in parallel (NULL: cannot) */
    /* from an MRS/MSR hook: the engine writes an MRS's value as the hook returns; the instruction's EL (or NULL) */
    uc_err (*sys_result)(uc_engine *uc, uint64_t val);
    unsigned (*sys_el)(uc_engine *uc);
    /* HVC/SMC served in the block by a callback given x0-x3 (or NULL) */
    uc_err (*call_hook)(uc_engine *uc, uint32_t (*cb)(uc_engine *, uint32_t, uint64_t *, void *), void *opaque);
    /* CNTVCT_EL0/CNTPCT_EL0 read by the engine from our clock's words (or NULL) */
    uc_err (*counter)(uc_engine *uc, const uint64_t *held, const uint64_t *base_ns, uint32_t ns_per_tick);
    /* HCR_EL2.VI and the engine's IRQ line, without a register lookup (or NULL) */
    uc_err (*virq)(uc_engine *uc, bool level);
    /* which MRS/MSR/SYS encodings get the hook call at all (vmmpy_sysfilter.patch; or NULL: every one) */
    uc_err (*sys_filter)(uc_engine *uc, bool (*cb)(void *, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t, bool),
                         void *opaque);
};
const struct soft_engine *vmm__soft_engine(void);
uint64_t vmm__soft_sync_insns(struct soft_vcpu *sv);
void vmm__soft_end_at_block(struct soft_vcpu *sv);
void vmm__soft_kick(struct soft_vcpu *sv);

/* broadcast cache and TLB maintenance between engines (soft_bcast.c) */
uint32_t vmm__soft_on_sys(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *opaque);
/* Whether a SYS instruction (op0 1) is an IC or TLBI that vmm__soft_on_sys broadcasts; *ivau: IC IVAU. */
bool vmm__soft_sys_broadcasts(uint32_t op1, uint32_t crn, uint32_t crm, uint32_t op2, bool *ivau);
/* The MRS/MSR/SYS encodings the hooks may handle: the engine calls them for no other (uc_vmmpy_sys_filter). */
bool vmm__soft_sys_wanted(void *opaque, uint32_t op0, uint32_t op1, uint32_t crn, uint32_t crm, uint32_t op2,
                          bool is_read);
void vmm__soft_bcast_apply(struct soft_vcpu *sv);
void vmm__soft_bcast_enter(struct soft_vcpu *sv);
void vmm__soft_bcast_leave(struct soft_vcpu *sv);

static inline uint64_t soft__reg(uc_engine *uc, int reg)
{
    uint64_t v = 0;
    uc_reg_read(uc, reg, &v);
    return v;
}

static inline void soft__set_reg(uc_engine *uc, int reg, uint64_t v)
{
    uc_reg_write(uc, reg, &v);
}

int vmm__soft_xreg(unsigned n);
uint64_t vmm__soft_cp_read(uc_engine *uc, uint32_t id);
int vmm__soft_cp_write(uc_engine *uc, uint32_t id, uint64_t val);
void vmm__soft_stop(struct soft_vcpu *sv);

int vmm__soft_calibrate(struct vmm_vm *vm, uc_engine *uc, size_t *syndrome_off);
int vmm__soft_boot_state(struct soft_vcpu *sv, uint64_t entry, uint64_t x0);
/* Enter the guest's EL1 synchronous vector for the exception Unicorn just raised. */
void vmm__soft_deliver_sync(struct soft_vcpu *sv, uint64_t pc);
/* Enter it for the access recorded in sv->fault (a synchronous external abort). */
void vmm__soft_deliver_external_abort(struct soft_vcpu *sv);
/* soft_poll.c: blocks that wait for another vCPU (spin loops ending in WFE/YIELD, polling loops) */
#define POLL_SAMPLE_SHIFT 8 /* a polling candidate every 256 instructions */
bool vmm__soft_block_spins(struct soft_vcpu *sv, uint64_t addr, uint32_t size);
void vmm__soft_poll_sample(struct soft_poll *p, uint64_t addr, uint32_t size);
bool vmm__soft_poll_follow(struct soft_vcpu *sv, uint64_t addr, uint32_t size);

/* AArch64 exception entry to EL1's synchronous vector with this syndrome (soft_exc.c) */
void vmm__soft_enter_el1(struct soft_vcpu *sv, uint32_t esr, bool set_far, uint64_t far, uint64_t elr);

/* soft_dbgarch.c: the guest's debug architecture, its PMU registers, the ID registers we correct */
/* the ID registers vmm__soft_idreg corrects (a pure function of the encoding) */
bool vmm__soft_idreg_is_ours(uint32_t id);
bool vmm__soft_idreg(struct soft_vcpu *sv, uint32_t id, uint64_t *val);
void vmm__soft_dbgarch_init(struct soft_vcpu *sv);
/* An MRS/MSR hook for a PMU register: 1 when served (a read's value written to reg), 0 to leave it to QEMU */
uint32_t vmm__soft_pmu_hook(struct soft_vcpu *sv, uint32_t id, bool is_read, int reg, uint64_t *val);
uint64_t vmm__soft_pmu_limit(struct soft_vcpu *sv, uint64_t limit);
uint32_t vmm__soft_dbg_msr(struct soft_vcpu *sv, uint32_t id, uint64_t val);
bool vmm__soft_dbg_mrs(struct soft_vcpu *sv, uint32_t id, uint64_t *val);
bool vmm__soft_udef_is_step(struct soft_vcpu *sv);
bool vmm__soft_step_done(struct soft_vcpu *sv, uint64_t next_pc);

/* UC_HOOK_INSN MRS and MSR hooks (soft_sysreg.c): 1 when the access is served, 0 to let QEMU (or its UNDEF) have it */
uint32_t vmm__soft_on_mrs(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *opaque);
uint32_t vmm__soft_on_msr(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *opaque);
int vmm__soft_dbg_apply(struct soft_vcpu *sv);
void vmm__soft_dbg_reload(struct soft_vcpu *sv);

/* A debugger's breakpoints, watchpoints and stepping (soft_debug.c). */
struct vmm_debug_ops;
extern const struct vmm_debug_ops vmm__soft_debug_ops;
void vmm__soft_debug_free(struct soft_vcpu *sv);
/* Snapshots (soft_snap.c): backend.h vcpu_save / vcpu_load. */
int vmm__soft_vcpu_save(struct vmm_vcpu *vcpu, struct vmm_snap *s);
int vmm__soft_vcpu_load(struct vmm_vcpu *vcpu, struct vmm_snap *s);

#endif
