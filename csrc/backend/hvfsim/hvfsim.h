/* hvfsim.h - internals of the Hypervisor.framework simulator (hvfsim.c, hvfsim_run.c, hvfsim_decode.c). */
#ifndef HVFSIM_H
#define HVFSIM_H

#include <pthread.h>
#include <stdatomic.h>

#include <unicorn/unicorn.h>

#include "Hypervisor/Hypervisor.h"

#define SIM_MAX_VCPUS 64
#define SIM_MAX_MAPS 32
#define SIM_IC_PAGES 256
#define SIM_WFE_CACHE 1024
/* Apple Silicon's counter runs at 24 MHz: mach_timebase_info is 125/3 ns per tick */
#define SIM_TB_NUMER 125u
#define SIM_TB_DENOM 3u
#define SIM_DEFAULT_IPA_BITS 36u
#define SIM_MAX_IPA_BITS 40u

/* encodings (op0:op1:CRn:CRm:op2, as hv_sys_reg_t) */
#define SIM_SYSREG(op0, op1, crn, crm, op2) \
    ((uint32_t)(((op0) << 14) | ((op1) << 11) | ((crn) << 7) | ((crm) << 3) | (op2)))

/* ESR_EL2 (Arm ARM D17.2.37); the ECs unsigned: 0x20 << ESR_EC_SHIFT and above overflow an int (UBSan) */
#define ESR_EC_SHIFT 26
#define ESR_IL (1u << 25)
#define EC_UNKNOWN 0x00u
#define EC_WFX 0x01u
#define EC_HVC64 0x16u
#define EC_SMC64 0x17u
#define EC_SYSREG 0x18u
#define EC_IABT_LOW 0x20u
#define EC_IABT_CUR 0x21u
#define EC_DABT_LOW 0x24u
#define EC_DABT_CUR 0x25u
#define EC_STEP_LOW 0x32u
#define ISS_STEP_ISV (1u << 24)
#define FSC_DEBUG 0x22
#define PSTATE_SS (1u << 21)
#define PSTATE_D (1u << 9)
#define MDSCR_SS (1u << 0)
#define MDSCR_KDE (1u << 13)
#define MDSCR_MDE (1u << 15)
#define EC_WPT_LOW 0x34u
#define ISS_WPT_WNR (1u << 6)
#define SIM_WPTS 4 /* the engine's Cortex-A72: ID_AA64DFR0_EL1.WRPs + 1 */

enum sim_stop {
    STOP_NONE = 0,
    STOP_CANCEL,
    STOP_VTIMER,
    STOP_SLICE,
    STOP_EXCEPTION, /* exit.exception filled */
    STOP_FATAL,     /* the engine failed: HV_EXIT_REASON_UNKNOWN */
};

struct sim_vcpu {
    hv_vcpu_t id;
    pthread_t owner;
    uc_engine *uc;
    uc_context *ctx;
    hv_vcpu_exit_t exit;
    atomic_bool cancel; /* hv_vcpus_exit: sticky until a run consumes it */
    bool irq, fiq;      /* hv_vcpu_set_pending_interrupt */
    bool virq_applied, vfiq_applied;
    /* the virtual timer (CNTV_*_EL0), ours because Unicorn's is not driven by any clock */
    bool vt_masked;
    uint64_t vt_ctl, vt_cval, vt_offset;
    uint64_t pfr0; /* ID_AA64PFR0_EL1 as the VMM set it (the guest reads this) */
    /* one run */
    enum sim_stop stop;
    unsigned blocks;
    bool vt_check;
    /* watchpoints: the guest's DBGWCR/DBGWVR and MDSCR_EL1 as last written, and the hook while armed */
    bool wpt_dirty, wpt_hooked;
    uc_hook wpt_hook;
    uint64_t wpt_mdscr, wcr[SIM_WPTS], wvr[SIM_WPTS];
    bool ss_at_trap;    /* the last exit trapped an instruction with PSTATE.SS set (a step in progress) */
    uint32_t prev_hint; /* the block before ended in WFE or YIELD (the instruction), else 0 */
    uint64_t prev_end;
    /* maintenance other vCPUs broadcast (applied before the next slice) */
    bool tb_flush, tlb_flush;
    unsigned nic_pages;
    uint64_t ic_pages[SIM_IC_PAGES];
    struct {
        uint64_t addr;
        uint32_t size;
        uint32_t hint;
    } wfe_cache[SIM_WFE_CACHE];
    size_t syndrome_off;
};

struct sim_map {
    void *host;
    uint64_t ipa, size;
    hv_memory_flags_t flags;
};

struct sim_vm {
    pthread_mutex_t mu; /* the VM's tables; engines are changed only under the engine lock too */
    bool created;
    uint32_t ipa_bits;
    struct sim_map maps[SIM_MAX_MAPS];
    unsigned nmaps;
    struct sim_vcpu *vcpus[SIM_MAX_VCPUS];
};

extern struct sim_vm hvfsim__vm;

/* The engine lock: one engine runs at a time (exclusives are not atomic across Unicorn engines). FIFO. */
void hvfsim__lock(void);
void hvfsim__unlock(void);
bool hvfsim__contended(void);

uint64_t hvfsim__cp_read(uc_engine *uc, uint32_t id);
void hvfsim__cp_write(uc_engine *uc, uint32_t id, uint64_t val);
int hvfsim__xreg(unsigned n);
uint64_t hvfsim__vcount(struct sim_vcpu *v);
int hvfsim__engine_setup(struct sim_vcpu *v);

/*
 * The ESR_EL2 ISS of a data abort on the load/store `insn` (Arm ARM D17.2.37, ISS encoding for an
 * exception from a Data Abort) and the virtual address it accesses, computed from the registers
 * before it executes. Returns false if insn is not a load or store.
 */
struct sim_ldst {
    bool isv, write;
    uint32_t iss;
    uint64_t va;
};
bool hvfsim__decode_ldst(uc_engine *uc, uint32_t insn, uint64_t pc, struct sim_ldst *out);

#endif
