/* pmu.h - the Performance Monitors Extension, PMUv3 (pmu.c, Arm ARM D11), for backends whose CPU has none of its own.
 */
#ifndef VMM_PMU_H
#define VMM_PMU_H

#include <stdbool.h>
#include <stdint.h>

struct vmm_vcpu;

#define PMU_COUNTERS 31  /* at most (PMCR_EL0.N); a vCPU has pmu.n of them */
#define PMU_CYCLE_BIT 31 /* the cycle counter's bit in PMCNTEN, PMOVS and PMINTEN */
#define PMU_INTID 23     /* PPI 7, as on QEMU virt */
#define PMU_VERSION 1    /* ID_AA64DFR0_EL1.PMUVer: PMUv3 (32-bit event counters) */

/*
 * One vCPU's PMU. Its clock is the vCPU's instructions retired (vcpu->insns): a
 * "cycle" is an instruction, so the counters are monotonic, stand still while the
 * vCPU waits in WFI, and are the same on every run in deterministic mode.
 * Counters are kept as (value at `since`, counting or not) and brought up to date
 * when read or when their configuration changes (pmu_sync).
 */
struct vmm_pmu {
    unsigned n;    /* event counters (PMCR_EL0.N): the backend sets it before the vCPU runs */
    uint64_t pmcr; /* D, X, DP, LC, LP as written (E in bit 0); N, IMP read-only */
    uint32_t cnten, inten, ovs, selr;
    uint64_t ccnt;                 /* PMCCNTR_EL0 at insns == since */
    uint64_t evcnt[PMU_COUNTERS];  /* PMEVCNTR<n>_EL0 at insns == since (32 bits used) */
    uint32_t evtype[PMU_COUNTERS]; /* PMEVTYPER<n>_EL0 */
    uint32_t ccfiltr;              /* PMCCFILTR_EL0 */
    uint64_t since;                /* vcpu->insns the counts above refer to */
    bool level;                    /* the PPI as last driven */
    /*
     * The clock is the VM's clock in ns instead (a 1 GHz cycle counter, event counters' CPU_CYCLES
     * and INST_RETIRED alike): for a backend that runs guest code without counting it (hvf); its
     * overflow interrupt is then a timer deadline (arm/timer.c).
     */
    bool host_clock;
    /* The host kernel's PMU serves the guest (KVM_ARM_VCPU_PMU_V3): nothing here counts, the DT lists it. */
    bool in_kernel;
};

/* PMU registers that pmu.c serves (PMUSERENR_EL0 and PMMIR_EL1 are left to the CPU model). */
bool vmm__pmu_sysreg_is_ours(uint32_t id);
/* Whether an EL0 access to `id` is allowed by PMUSERENR_EL0 (Arm ARM D17.5.14): else it traps (EC 0x18). */
bool vmm__pmu_el0_allowed(uint32_t id, bool is_read, uint64_t pmuserenr);
int vmm__pmu_sysreg(struct vmm_vcpu *vcpu, uint32_t id, bool is_read, uint64_t *val);
/* Bring the counters up to vcpu->insns: overflow flags and the interrupt line. */
void vmm__pmu_sync(struct vmm_vcpu *vcpu);
struct vmm_snap;
/* Snapshots: the PMU's registers and counts (a section of its own, "pmu.N"; loading checks every field). */
void vmm__pmu_snap(struct vmm_vcpu *vcpu, struct vmm_snap *s);
/* The PMU's clock now: vcpu->insns, or the VM's clock in ns with host_clock. */
uint64_t vmm__pmu_clock(struct vmm_vcpu *vcpu);
/* vcpu->insns (the PMU's clock) at which a counting counter with its interrupt enabled next overflows (UINT64_MAX:
 * none). */
uint64_t vmm__pmu_next_overflow(struct vmm_vcpu *vcpu);

#endif
