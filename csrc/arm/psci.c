/* psci.c - PSCI 1.1 and SMCCC 1.1 firmware calls (Arm DEN0022E, DEN0028). */
#include <inttypes.h>

#include "../core/run.h"
#include "arm.h"

/* function IDs; SMC32 ids are used with w0, SMC64 ones with x0 */
#define PSCI_VERSION 0x84000000u
#define PSCI_CPU_SUSPEND 0x84000001u
#define PSCI_CPU_OFF 0x84000002u
#define PSCI_CPU_ON_32 0x84000003u
#define PSCI_CPU_ON_64 0xc4000003u
#define PSCI_AFFINITY_INFO_32 0x84000004u
#define PSCI_AFFINITY_INFO_64 0xc4000004u
#define PSCI_MIGRATE_INFO_TYPE 0x84000006u
#define PSCI_SYSTEM_OFF 0x84000008u
#define PSCI_SYSTEM_RESET 0x84000009u
#define PSCI_FEATURES 0x8400000au
#define SMCCC_VERSION 0x80000000u
#define SMCCC_ARCH_FEATURES 0x80000001u

#define PSCI_RET_SUCCESS 0
#define PSCI_RET_NOT_SUPPORTED ((uint64_t)-1)
#define PSCI_RET_INVALID_PARAMETERS ((uint64_t)-2)
#define PSCI_RET_ALREADY_ON ((uint64_t)-4)
#define PSCI_RET_INVALID_ADDRESS ((uint64_t)-9)

#define AFFINITY_ON 0
#define AFFINITY_OFF 1

#define PSCI_VERSION_1_1 0x00010001u
#define SMCCC_VERSION_1_1 0x00010001u
#define MIGRATE_INFO_NOT_REQUIRED 2 /* no Trusted OS that needs migration */

static bool implemented(uint32_t fn)
{
    switch (fn) {
    case PSCI_VERSION:
    case PSCI_CPU_SUSPEND:
    case PSCI_CPU_OFF:
    case PSCI_CPU_ON_32:
    case PSCI_CPU_ON_64:
    case PSCI_AFFINITY_INFO_32:
    case PSCI_AFFINITY_INFO_64:
    case PSCI_MIGRATE_INFO_TYPE:
    case PSCI_SYSTEM_OFF:
    case PSCI_SYSTEM_RESET:
    case PSCI_FEATURES:
    case SMCCC_VERSION:
        return true;
    }
    return false;
}

/* The vCPU whose MPIDR affinity is `mpidr` (Aff0 = index, Aff1..3 = 0), or NULL. */
static struct vmm_vcpu *by_mpidr(struct vmm_vm *vm, uint64_t mpidr)
{
    mpidr &= 0xff00ffffffull; /* Aff3 and Aff2..0 */
    for (unsigned i = 0; i < vm->ncpus; i++)
        if (vm->vcpus[i].mpidr == mpidr)
            return &vm->vcpus[i];
    return NULL;
}

/*
 * CPU_ON (DEN0022 §5.6): start `target` at `entry` in EL1h, MMU off, x0 =
 * context_id. The reset is the target's own run's first step (run_one), on
 * its thread; vm->lock makes the check and the power-on one step (with vCPU
 * threads two callers may race for one target) and wakes a vCPU thread that
 * sleeps while its vCPU is off.
 */
static uint64_t cpu_on(struct vmm_vcpu *caller, uint64_t mpidr, uint64_t entry, uint64_t context)
{
    struct vmm_vm *vm = caller->vm;
    struct vmm_vcpu *target = by_mpidr(vm, mpidr);

    if (!target)
        return PSCI_RET_INVALID_PARAMETERS;
    if (entry & 3 || !vmm__gpa_ptr(vm, entry, 4))
        return PSCI_RET_INVALID_ADDRESS;
    pthread_mutex_lock(&vm->lock);
    if (target->on) {
        pthread_mutex_unlock(&vm->lock);
        return PSCI_RET_ALREADY_ON;
    }
    target->reset_entry = entry;
    target->reset_x0 = context;
    target->reset_pending = true;
    target->on = true;
    target->idle = false;
    if (vm->deterministic) /* joins the current quantum now (one thread: with vCPU threads insns is its own) */
        target->quantum_start = target->insns;
    atomic_fetch_add(&vm->wake_seq, 1);
    vmm__vm_broadcast(vm);
    pthread_mutex_unlock(&vm->lock);
    vmm__log(vm, VMM_LOG_DEBUG, "psci", "vCPU %u: CPU_ON vCPU %u at 0x%" PRIx64, caller->id, target->id, entry);
    return PSCI_RET_SUCCESS;
}

static uint64_t affinity_info(struct vmm_vm *vm, uint64_t mpidr, uint64_t level)
{
    struct vmm_vcpu *target;

    if (level != 0) /* every vCPU is its own cluster of one at levels above 0: not reported */
        return PSCI_RET_INVALID_PARAMETERS;
    target = by_mpidr(vm, mpidr);
    if (!target)
        return PSCI_RET_INVALID_PARAMETERS;
    pthread_mutex_lock(&vm->lock); /* vCPU threads: CPU_ON and CPU_OFF write `on` under it */
    bool on = target->on;
    pthread_mutex_unlock(&vm->lock);
    return on ? AFFINITY_ON : AFFINITY_OFF;
}

unsigned vmm__psci_nargs(uint32_t fn)
{
    switch (fn) {
    case PSCI_FEATURES:
    case SMCCC_ARCH_FEATURES:
        return 1;
    case PSCI_AFFINITY_INFO_32:
    case PSCI_AFFINITY_INFO_64:
        return 2;
    case PSCI_CPU_ON_32:
    case PSCI_CPU_ON_64:
        return 3;
    }
    return 0; /* the rest, and every function we do not implement, read only the function ID */
}

enum vmm_exit_kind vmm__psci_call(struct vmm_vcpu *vcpu, uint64_t x[4])
{
    uint32_t fn = (uint32_t)x[0];

    vmm__count(vcpu->vm, &vcpu->vm->stats.hvc_exits);
    /* SMC32/HVC32 calls take w0 only; the top half of x0 is ignored (DEN0028 §2.6) */
    switch (fn) {
    case PSCI_VERSION:
        x[0] = PSCI_VERSION_1_1;
        return VMM_EXIT_NONE;
    case PSCI_FEATURES:
        /* PSCI_FEATURES takes a 32-bit function id in w1 */
        x[0] = implemented((uint32_t)x[1]) ? PSCI_RET_SUCCESS : PSCI_RET_NOT_SUPPORTED;
        return VMM_EXIT_NONE;
    case PSCI_MIGRATE_INFO_TYPE:
        x[0] = MIGRATE_INFO_NOT_REQUIRED;
        return VMM_EXIT_NONE;
    case PSCI_CPU_ON_32:
        x[0] = cpu_on(vcpu, (uint32_t)x[1], (uint32_t)x[2], (uint32_t)x[3]);
        return VMM_EXIT_NONE;
    case PSCI_CPU_ON_64:
        x[0] = cpu_on(vcpu, x[1], x[2], x[3]);
        return VMM_EXIT_NONE;
    case PSCI_CPU_OFF:
        return VMM_EXIT_CPU_OFF; /* does not return to the caller */
    case PSCI_AFFINITY_INFO_32:
        x[0] = affinity_info(vcpu->vm, (uint32_t)x[1], (uint32_t)x[2]);
        return VMM_EXIT_NONE;
    case PSCI_AFFINITY_INFO_64:
        x[0] = affinity_info(vcpu->vm, x[1], x[2]);
        return VMM_EXIT_NONE;
    case PSCI_CPU_SUSPEND:
        /* every power state is treated as standby: wait like WFI, return SUCCESS on wake-up */
        x[0] = PSCI_RET_SUCCESS;
        return VMM_EXIT_WFI;
    case PSCI_SYSTEM_OFF:
        return VMM_EXIT_SHUTDOWN;
    case PSCI_SYSTEM_RESET:
        return VMM_EXIT_RESET;
    case SMCCC_VERSION:
        x[0] = SMCCC_VERSION_1_1;
        return VMM_EXIT_NONE;
    case SMCCC_ARCH_FEATURES:
        /* no firmware workarounds to offer (DEN0028 §7.4) */
        x[0] = PSCI_RET_NOT_SUPPORTED;
        return VMM_EXIT_NONE;
    }
    if (vmm__log_on(vcpu->vm, VMM_LOG_DEBUG))
        vmm__log(vcpu->vm, VMM_LOG_DEBUG, "psci", "vCPU %u: unsupported function 0x%08" PRIx32, vcpu->id, fn);
    x[0] = PSCI_RET_NOT_SUPPORTED;
    return VMM_EXIT_NONE;
}
