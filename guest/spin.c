/* spin.c - every CPU spins in guest code forever, without an exit (no WFI, no MMIO, no HVC): the host can only
   end the run by kicking each vCPU out of the guest (a stop, the timeout). CPU 0 prints "spin: N cpus
   spinning" once every secondary has counted, then spins too. */
#include "rt.h"

static volatile uint64_t count[RT_MAX_CPUS];

static __attribute__((noreturn)) void spin(void)
{
    volatile uint64_t *c = &count[smp_cpu_id() % RT_MAX_CPUS];

    for (;;)
        *c += 1;
}

static void secondary(void *arg)
{
    (void)arg;
    spin();
}

int main(uint64_t dtb)
{
    uint64_t mpidrs[RT_MAX_CPUS];
    int from_dtb, n = smp_find_cpus(dtb, mpidrs, RT_MAX_CPUS, &from_dtb);

    irq_disable();
    for (int c = 1; c < n; c++)
        if (smp_start_cpu(mpidrs[c], secondary, 0) != 0) {
            printf("spin: CPU_ON(0x%lx) failed\n", mpidrs[c]);
            return 1;
        }
    for (int c = 1; c < n; c++)
        while (count[c] == 0)
            ;
    printf("spin: %d cpus spinning\n", n);
    spin();
}
