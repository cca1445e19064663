/* psci.c - PSCI 1.1 and SMCCC queries; the RESET build ends with SYSTEM_RESET instead of SYSTEM_OFF. */
#include "rt.h"

#define NOT_SUPPORTED ((uint64_t)-1)

static int failures;

static void check(const char *what, uint64_t got, uint64_t want)
{
    if (got == want) {
        printf_("PASS %s\n", what);
    } else {
        printf_("FAIL %s: got 0x%lx want 0x%lx\n", what, got, want);
        failures++;
    }
}

int main(uint64_t dtb)
{
    (void)dtb;
    uint64_t v = smccc(PSCI_VERSION, 0, 0, 0);
    printf_("psci version %u.%u\n", (unsigned)(v >> 16), (unsigned)(v & 0xffff));
    check("version is 1.1", v, 0x10001);
    check("features(VERSION)", smccc(PSCI_FEATURES, PSCI_VERSION, 0, 0), 0);
    check("features(SYSTEM_OFF)", smccc(PSCI_FEATURES, PSCI_SYSTEM_OFF, 0, 0), 0);
    check("features(SYSTEM_RESET)", smccc(PSCI_FEATURES, PSCI_SYSTEM_RESET, 0, 0), 0);
    check("features(FEATURES)", smccc(PSCI_FEATURES, PSCI_FEATURES, 0, 0), 0);
    check("features(unknown)", smccc(PSCI_FEATURES, 0x8400FFFF, 0, 0), NOT_SUPPORTED);
    check("unknown function", smccc(0x8400FFFF, 0, 0, 0), NOT_SUPPORTED);
    printf_("smccc version 0x%lx\n", smccc(SMCCC_VERSION, 0, 0, 0));
    puts_(failures ? "SOME FAILED\n" : "ALL PASS\n");
#ifdef RESET
    puts_("resetting\n");
    smccc(PSCI_SYSTEM_RESET, 0, 0, 0);
    puts_("FAIL reset returned\n");
#endif
    return failures ? 1 : 0;
}
