/* check.c - test verdicts for the guests: a FAIL line per failed check, then one PASS/FAIL verdict line. */
#include "rt.h"

static const char *test_name = "test";
static volatile uint32_t failures;

void test_begin(const char *name)
{
    test_name = name;
    failures = 0;
}

int test_begin_gic(const char *name)
{
    test_begin(name);
    irq_disable();
    mmu_enable(NULL); /* Normal memory: the verdict helpers and cpu_printf use exclusives (a spinlock) */
    if (gic_init()) {
        test_fail("GIC initialisation failed");
        return -1;
    }
    return 0;
}

void test_failv(const char *fmt, va_list ap)
{
    uint64_t flags = cpu_print_begin();

    printf("FAIL %s: ", test_name);
    vprintf(fmt, ap);
    printf("\n");
    cpu_print_end(flags);
    atomic_add32(&failures, 1);
}

void test_fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    test_failv(fmt, ap);
    va_end(ap);
}

int test_check(int ok, const char *fmt, ...)
{
    va_list ap;

    if (!ok) {
        va_start(ap, fmt);
        test_failv(fmt, ap);
        va_end(ap);
    }
    return ok;
}

int test_failures(void)
{
    return (int)failures;
}

int test_end(void)
{
    if (failures) {
        cpu_printf("FAIL %s: %u check(s) failed\n", test_name, failures);
        return 1;
    }
    cpu_printf("PASS %s\n", test_name);
    return 0;
}
