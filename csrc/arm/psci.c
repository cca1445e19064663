/* psci.c - PSCI 1.1 and SMCCC 1.1 firmware calls (Arm DEN0022E, DEN0028). */
#include <inttypes.h>

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

#define PSCI_VERSION_1_1 0x00010001u
#define SMCCC_VERSION_1_1 0x00010001u
#define MIGRATE_INFO_NOT_REQUIRED 2 /* no Trusted OS that needs migration */

static bool implemented(uint32_t fn)
{
    switch (fn) {
    case PSCI_VERSION:
    case PSCI_MIGRATE_INFO_TYPE:
    case PSCI_SYSTEM_OFF:
    case PSCI_SYSTEM_RESET:
    case PSCI_FEATURES:
    case SMCCC_VERSION:
        return true;
    }
    return false;
}

enum vmm_exit_kind vmm__psci_call(struct vmm_vcpu *vcpu, uint64_t x[4])
{
    uint32_t fn = (uint32_t)x[0];

    vcpu->vm->stats.hvc_exits++;
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
    vmm__log(vcpu->vm, VMM_LOG_DEBUG, "psci", "vCPU %u: unsupported function 0x%08" PRIx32, vcpu->id, fn);
    x[0] = PSCI_RET_NOT_SUPPORTED;
    return VMM_EXIT_NONE;
}
