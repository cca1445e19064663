/* psci.c - PSCI/SMCCC queries over HVC; built as psci (then SYSTEM_OFF) and psci_reset (then SYSTEM_RESET). */
#include "rt.h"

#define UNKNOWN_FN 0x8400FFFFU
#define UNKNOWN_FN64 0xC400FFFFU /* an SMC64/HVC64 fast call nobody implements */

static int failures;

static void check(const char *what, int32_t got, int32_t want)
{
    if (got == want) {
        printf("PASS %s\n", what);
    } else {
        printf("FAIL %s: got %d want %d\n", what, got, want);
        failures++;
    }
}

/*
 * An HVC with x0-x17 set, then x0-x17 as it left them. SMCCC 1.1 (DEN0028 §2.6, §3.1): a call returns in
 * x0-x3 and preserves x4-x17. The soft backend's fast engine serves it without leaving the block, the
 * exception path otherwise: both must leave x4-x17 as they were.
 */
static void hvc_regs(const uint64_t in[18], uint64_t out[18])
{
    __asm__ volatile("ldp x0, x1, [%0, #0]\n ldp x2, x3, [%0, #16]\n ldp x4, x5, [%0, #32]\n"
                     "ldp x6, x7, [%0, #48]\n ldp x8, x9, [%0, #64]\n ldp x10, x11, [%0, #80]\n"
                     "ldp x12, x13, [%0, #96]\n ldp x14, x15, [%0, #112]\n ldp x16, x17, [%0, #128]\n"
                     "hvc #0\n"
                     "stp x0, x1, [%1, #0]\n stp x2, x3, [%1, #16]\n stp x4, x5, [%1, #32]\n"
                     "stp x6, x7, [%1, #48]\n stp x8, x9, [%1, #64]\n stp x10, x11, [%1, #80]\n"
                     "stp x12, x13, [%1, #96]\n stp x14, x15, [%1, #112]\n stp x16, x17, [%1, #128]\n"
                     :
                     : "r"(in), "r"(out)
                     : "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14",
                       "x15", "x16", "x17", "memory");
}

/* A call's x0 (the whole register: want64) or w0, and x4-x17 kept. */
static void check_call_regs(const char *what, uint32_t fn, uint64_t want, int want64)
{
    uint64_t in[18], out[18];
    int kept = 1;

    for (int i = 0; i < 18; i++)
        in[i] = 0x5a00000000000000UL | (uint64_t)i << 32 | (uint64_t)(i * 0x01010101U);
    in[0] = fn;
    hvc_regs(in, out);
    for (int i = 4; i < 18; i++)
        kept &= out[i] == in[i];
    if ((want64 ? out[0] == want : (uint32_t)out[0] == (uint32_t)want) && kept) {
        printf("PASS %s\n", what);
    } else {
        printf("FAIL %s: x0 0x%lx want 0x%lx, x4-x17 %s\n", what, out[0], want, kept ? "kept" : "changed");
        failures++;
    }
}

int main(uint64_t dtb)
{
    (void)dtb;
    uint32_t v = psci_version();
    printf("psci version %u.%u\n", v >> 16, v & 0xffff);
    if (v >= 0x10000) { /* PSCI_FEATURES is a 1.0 function */
        printf("PASS version is at least 1.0\n");
    } else {
        printf("FAIL version is at least 1.0: got 0x%x\n", v);
        failures++;
    }

    check("features(VERSION)", psci_features(PSCI_VERSION), 0);
    check("features(SYSTEM_OFF)", psci_features(PSCI_SYSTEM_OFF), 0);
    check("features(SYSTEM_RESET)", psci_features(PSCI_SYSTEM_RESET), 0);
    check("features(FEATURES)", psci_features(PSCI_FEATURES), 0);
    check("features(unknown)", psci_features(UNKNOWN_FN), PSCI_NOT_SUPPORTED);
    check("unknown function", (int32_t)smccc_hvc(UNKNOWN_FN, 0, 0, 0), PSCI_NOT_SUPPORTED);
    check_call_regs("unknown 32-bit function keeps x4-x17", UNKNOWN_FN, (uint64_t)PSCI_NOT_SUPPORTED, 0);
    check_call_regs("unknown 64-bit function keeps x4-x17", UNKNOWN_FN64, (uint64_t)(int64_t)PSCI_NOT_SUPPORTED, 1);
    check_call_regs("PSCI_VERSION keeps x4-x17", PSCI_VERSION, v, 0);

    /*
     * CPU_ON's argument checks (DEN0022 5.6), printed rather than judged: implementations differ.
     * vmmpy: INVALID_PARAMETERS (-2) for an MPIDR with no CPU, then INVALID_ADDRESS (-9) for an entry
     * that is misaligned or outside RAM, then ALREADY_ON (-4); QEMU says -2 for a misaligned entry
     * and KVM does not check the entry. This CPU (MPIDR 0) is on, so no call starts anything.
     */
    printf("cpu_on(no such cpu) = %d\n", psci_cpu_on(0xff, (uintptr_t)main, 0));
    printf("cpu_on(misaligned entry) = %d\n", psci_cpu_on(0, (uintptr_t)main + 2, 0));
    printf("cpu_on(entry outside RAM) = %d\n", psci_cpu_on(0, 0x1000, 0));
    printf("cpu_on(already on) = %d\n", psci_cpu_on(0, (uintptr_t)main, 0));

    int32_t smccc = (int32_t)smccc_hvc(SMCCC_VERSION, 0, 0, 0);
    if (smccc < 0)
        printf("smccc version not supported (%d)\n", smccc);
    else
        printf("smccc version 0x%x (%u.%u)\n", (unsigned)smccc, (unsigned)smccc >> 16, (unsigned)smccc & 0xffff);

    uart_puts(failures ? "SOME FAILED\n" : "ALL PASS\n");
#ifdef PSCI_RESET
    printf("resetting\n");
    uart_flush();
    int64_t r = (int64_t)smccc_hvc(PSCI_SYSTEM_RESET, 0, 0, 0);
    printf("FAIL SYSTEM_RESET returned %ld\n", r);
    return 1;
#else
    return failures ? 1 : 0;
#endif
}
