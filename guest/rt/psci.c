/* psci.c - SMCCC calls over HVC and the PSCI functions the guests use. */
#include "rt.h"

uint64_t smccc_hvc(uint32_t fn, uint64_t a1, uint64_t a2, uint64_t a3)
{
    register uint64_t x0 __asm__("x0") = fn;
    register uint64_t x1 __asm__("x1") = a1;
    register uint64_t x2 __asm__("x2") = a2;
    register uint64_t x3 __asm__("x3") = a3;

    /* SMCCC 1.0 lets the callee change x4..x17 */
    __asm__ volatile("hvc #0"
                     : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)
                     :
                     : "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17",
                       "memory");
    return x0;
}

/* PSCI results are 32-bit signed values in w0 */
uint32_t psci_version(void)
{
    return (uint32_t)smccc_hvc(PSCI_VERSION, 0, 0, 0);
}

int32_t psci_features(uint32_t fn)
{
    return (int32_t)smccc_hvc(PSCI_FEATURES, fn, 0, 0);
}

int32_t psci_cpu_on(uint64_t mpidr, uintptr_t entry, uint64_t context)
{
    return (int32_t)smccc_hvc(PSCI_CPU_ON, mpidr, entry, context);
}

int32_t psci_cpu_off(void)
{
    return (int32_t)smccc_hvc(PSCI_CPU_OFF, 0, 0, 0);
}

int32_t psci_affinity_info(uint64_t mpidr, unsigned level)
{
    return (int32_t)smccc_hvc(PSCI_AFFINITY_INFO, mpidr, level, 0);
}

void psci_system_off(void)
{
    psci_system_off_status(0);
}

void psci_system_off_status(uint32_t status)
{
    /*
     * x4 = status, x5 = the tag that says so: KVM writes PSCI's return values
     * to x0..x3 before it reports the power-off, and other guests leave x4
     * and x5 as they happen to be.
     */
    register uint64_t x0 __asm__("x0") = PSCI_SYSTEM_OFF;
    register uint64_t x4 __asm__("x4") = status;
    register uint64_t x5 __asm__("x5") = VMMPY_EXIT_TAG;
    __asm__ volatile("hvc #0" : "+r"(x0), "+r"(x4), "+r"(x5)::"x1", "x2", "x3", "memory");
    for (;;)
        __asm__ volatile("wfi");
}

void psci_system_reset(void)
{
    smccc_hvc(PSCI_SYSTEM_RESET, 0, 0, 0);
    for (;;)
        __asm__ volatile("wfi");
}
