/* hvf.h - internals of the Hypervisor.framework backend, shared by hvf.c (threads, ops) and hvf_exits.c. */
#ifndef VMM_HVF_H
#define VMM_HVF_H

#include <Hypervisor/Hypervisor.h>
#include <pthread.h>

#include "../core/vm.h"

struct hvf_vcpu {
    struct vmm_vcpu *vcpu;
    /*
     * The thread that owns the framework's vCPU: it creates it and makes every call on it (the
     * framework refuses calls from any other thread). It lives as long as the vCPU; the run loop's
     * threads (one per run) hand it work through `call` and wait.
     */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int (*call)(struct hvf_vcpu *h, void *arg); /* work for the owner */
    void *arg;
    uint64_t posted, done; /* calls handed over and finished; the owner works while they differ */
    bool busy, quit, started;
    int result;

    hv_vcpu_t id;
    hv_vcpu_exit_t *exit;
    bool created;
    atomic_bool kicked; /* a stop, timeout or deadline: vcpu_run returns to the loop */
    /* the virtual timer: masked by the framework at its exit until its interrupt is over */
    bool vt_masked;
    bool vt_mirrored;   /* the core's CNTV model holds a deadline or level for the idle wait */
    uint64_t cntp_cval; /* CNTP_CVAL_EL0 as the guest wrote it (counter units); the core's is converted */
    uint64_t oslsr;     /* OSLSR_EL1.OSLK as OSLAR_EL1 set it */
    uint64_t pmuserenr; /* PMUSERENR_EL0 (EN, SW, CR, ER) as the guest wrote it */
};

/* Event counters of our PMU (PMCR_EL0.N) on hvf: the Cortex-A72's six, which the simulator's CPU has */
#define HVF_PMU_COUNTERS 6

struct hvf_vm {
    uint64_t tb_numer, tb_denom; /* host counter period, ns = ticks * numer / denom */
    uint64_t vt_offset;          /* CNTVOFF: the virtual counter is 0 at the VM's clock base */
};

/* hvf_exits.c: one HV_EXIT_REASON_EXCEPTION. Returns true when vcpu_run must return `exit` to the loop. */
bool vmm__hvf_exception(struct hvf_vcpu *h, struct vmm_exit *exit);
/* The virtual timer fired (HV_EXIT_REASON_VTIMER_ACTIVATED), and before each run: see hvf_exits.c. */
void vmm__hvf_vtimer_fired(struct hvf_vcpu *h);
void vmm__hvf_vtimer_sync(struct hvf_vcpu *h);
/* Host counter ticks <-> ns. */
uint64_t vmm__hvf_ticks_to_ns(const struct hvf_vm *hv, uint64_t ticks);
uint64_t vmm__hvf_ns_to_ticks(const struct hvf_vm *hv, uint64_t ns);

#endif
