/* semihost.c - Arm semihosting calls (hlt #0xf000) and the extended exit. */
#include "rt.h"

#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

int64_t semihost_call(uint32_t op, const void *param)
{
    register uint64_t x0 __asm__("x0") = op;
    register uint64_t x1 __asm__("x1") = (uintptr_t)param;

    __asm__ volatile("hlt #0xf000" : "+r"(x0) : "r"(x1) : "memory");
    return (int64_t)x0;
}

void semihost_exit(int code)
{
    uint64_t block[2] = { ADP_STOPPED_APPLICATION_EXIT, (uint64_t)(int64_t)code };

    semihost_call(SYS_EXIT_EXTENDED, block);
}
