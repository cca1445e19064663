/* clockstep.c - the virtual counter against the instructions run: for several loop lengths, read
   CNTVCT_EL0, run exactly 2*K instructions (K iterations of SUBS + B.NE), read it again and print the
   difference. In vmmpy's deterministic mode one instruction is one nanosecond and a tick is 16 ns,
   so with 2*K a multiple of 16 the difference is exactly 2*K/16 ticks, quantum boundaries or not. */
#include "rt.h"

/*
 * The soft backend counts a translation block's instructions when the block starts. Each MRS begins a
 * block (after an ISB, after the loop): the first block is MRS, SUBS, B.NE (counted 3 at the first
 * read), then K-1 loop blocks of SUBS, B.NE, then MRS, ISB (counted 2 at the second read): the clock
 * moves 3 + 2*(K-1) + 2 - 3 = 2*K between the reads, which is also what an exact count gives.
 */
static uint64_t delta(uint64_t k)
{
    uint64_t t0, t1;
    __asm__ volatile("isb\n"
                     "mrs %0, cntvct_el0\n"
                     "1: subs %2, %2, #1\n"
                     "b.ne 1b\n"
                     "mrs %1, cntvct_el0\n"
                     "isb\n"
                     : "=&r"(t0), "=&r"(t1), "+r"(k)
                     :
                     : "cc", "memory");
    return t1 - t0;
}

int main(uint64_t dtb)
{
    static const uint64_t ks[] = { 8, 800, 8000, 80000, 800000, 8000008 };
    (void)dtb;
    for (unsigned i = 0; i < sizeof(ks) / sizeof(ks[0]); i++)
        printf("clockstep k=%lu ticks=%lu\n", (unsigned long)ks[i], (unsigned long)delta(ks[i]));
    printf("clockstep done\n");
    return 0;
}
