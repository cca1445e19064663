/* arm.h - architecture services the core provides to every backend: CPU models, PSCI, sysregs, semihosting. */
#ifndef VMM_ARM_H
#define VMM_ARM_H

#include "../core/vm.h"

/*
 * The CPU models (struct vmm_config.cpu_model), the one list: X(name, DT compatible, soft) where
 * soft is the suffix of Unicorn's UC_CPU_ARM64_* (the soft backend builds its table from this list,
 * so nothing outside the soft backend needs Unicorn). The first is the default. Hardware vCPUs
 * (KVM) are the host's CPU whatever the model.
 */
#define VMM__CPU_MODELS(X)                 \
    X("cortex-a72", "arm,cortex-a72", A72) \
    X("cortex-a57", "arm,cortex-a57", A57) \
    X("cortex-a53", "arm,cortex-a53", A53) \
    X("max", "arm,armv8", MAX)

struct vmm__cpu_model {
    const char *name;
    const char *dt_compatible;
};
extern const struct vmm__cpu_model vmm__cpu_models[];
extern const unsigned vmm__ncpu_models;
/* Index of the model called `name` in vmm__cpu_models, or -1. */
int vmm__cpu_model_find(const char *name);

/*
 * Firmware calls return the exit they cause: VMM_EXIT_NONE to go on, or
 * VMM_EXIT_SHUTDOWN, VMM_EXIT_RESET, VMM_EXIT_CPU_OFF. The vCPU loop handles
 * those like any backend exit, so there is one place that ends a run.
 */
/*
 * PSCI 1.1 / SMCCC 1.1 over HVC (Arm DEN0022, DEN0028). x[0..3] are the
 * caller's registers; the results are written back into x[0..3].
 */
enum vmm_exit_kind vmm__psci_call(struct vmm_vcpu *vcpu, uint64_t x[4]);
/* How many of x1..x3 the call `fn` (w0) reads: a backend may fetch only those (the others are passed as 0). */
unsigned vmm__psci_nargs(uint32_t fn);

/* System register encoding: op0, op1, CRn, CRm, op2 as in MRS/MSR. */
#define SYSREG(op0, op1, crn, crm, op2) \
    ((uint32_t)(((op0) << 14) | ((op1) << 11) | ((crn) << 7) | ((crm) << 3) | (op2)))
#define SYSREG_OP0(id) (((id) >> 14) & 3)
#define SYSREG_OP1(id) (((id) >> 11) & 7)
#define SYSREG_CRN(id) (((id) >> 7) & 15)
#define SYSREG_CRM(id) (((id) >> 3) & 15)
#define SYSREG_OP2(id) ((id)&7)

/*
 * A trapped MRS/MSR. Returns 0 when served (reads fill *val) or VMM_ENOTSUP
 * when the register does not exist: the backend then makes the instruction
 * UNDEFINED for the guest, as hardware would.
 */
int vmm__sysreg_access(struct vmm_vcpu *vcpu, uint32_t id, bool is_read, uint64_t *val);

/*
 * Arm semihosting (HLT #0xF000 on AArch64). op = w0, param = x1; *ret is
 * returned in x0. read_mem reads guest virtual memory for parameter blocks.
 */
struct vmm_semihost_env {
    struct vmm_vcpu *vcpu;
    int (*read_mem)(struct vmm_vcpu *vcpu, uint64_t va, void *buf, size_t len);
};
#define SEMIHOST_HLT_IMM 0xf000
enum vmm_exit_kind vmm__semihost_call(const struct vmm_semihost_env *env, uint64_t op, uint64_t param, uint64_t *ret,
                                      int *exit_status);

#endif
