/*
 * mach_time.h - the two calls of macOS's <mach/mach_time.h> the hvf backend uses, for the simulator
 * (hvfsim.c): the host tick count that the vCPUs' counters derive from (CNTPCT_EL0 on Apple Silicon),
 * and its period as a fraction of a nanosecond. On macOS the system header is found instead.
 */
#ifndef HVFSIM_MACH_TIME_H
#define HVFSIM_MACH_TIME_H

#include <stdint.h>

typedef int kern_return_t;
struct mach_timebase_info {
    uint32_t numer;
    uint32_t denom;
};
typedef struct mach_timebase_info mach_timebase_info_data_t;
typedef struct mach_timebase_info *mach_timebase_info_t;

uint64_t mach_absolute_time(void);
kern_return_t mach_timebase_info(mach_timebase_info_t info);

#endif
