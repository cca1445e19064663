/* timer.h - the generic timer (timer.c, Arm ARM D11) and the guest clock. */
#ifndef VMM_TIMER_H
#define VMM_TIMER_H

#include <stdbool.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_vcpu;

/* One generic-timer channel (virtual or EL1 physical): CNT{V,P}_CTL_EL0 and _CVAL_EL0. */
struct vmm_timer {
    uint64_t ctl; /* ENABLE (bit 0) and IMASK (bit 1); ISTATUS is computed */
    uint64_t cval;
};
enum { TIMER_VIRT = 0, TIMER_PHYS = 1, TIMER_COUNT };

#define TIMER_FREQ_HZ 62500000ULL
#define TIMER_NS_PER_TICK 16
/* Guest clock values beyond this (2^62 ns, 146 years) mean "never": deadlines and timeouts saturate. */
#define VMM_CLOCK_HORIZON_NS (1ULL << 62)
uint64_t vmm__clock_ns(struct vmm_vm *vm, struct vmm_vcpu *vcpu);
/*
 * Deterministic mode: move the VM clock (vtime_ns) on by ns. A vCPU whose own clock was ahead of it (a
 * block that ran past a quantum's end) keeps what is left of its lead; every other vCPU's starts there.
 */
void vmm__vtime_advance(struct vmm_vm *vm, uint64_t ns);
/* Re-evaluate every timer against the clock: drive PPI levels, update next_deadline_ns. */
void vmm__timers_update(struct vmm_vm *vm);
/*
 * The same for one vCPU, on its own thread (threaded loop): drive its PPIs,
 * store and return its next deadline (vcpu->deadline_ns).
 */
uint64_t vmm__timers_update_vcpu(struct vmm_vcpu *vcpu);
/* Something with a deadline changed (a PMU on the VM's clock): re-arm the clock thread if it is sooner. */
void vmm__timers_changed(struct vmm_vcpu *vcpu);
int vmm__timer_sysreg(struct vmm_vcpu *vcpu, uint32_t id, bool is_read, uint64_t *val);
bool vmm__timer_sysreg_is_ours(uint32_t id);
/* Whether CNTKCTL_EL1 lets EL0 make this access to one of those registers (denied: it traps to EL1). */
bool vmm__timer_el0_allowed(uint32_t id, bool is_read, uint64_t cntkctl);

#endif
