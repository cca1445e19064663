/* exit.c - guest_exit(): PSCI SYSTEM_OFF for status 0, a semihosting exit otherwise (SYSTEM_OFF with x1 = status without a semihosting host). */
#include "rt.h"

void guest_exit(int code)
{
    uart_flush();
    if (code != 0)
        semihost_exit(code); /* returns only without a semihosting host */
    psci_system_off_status((uint32_t)code);
}
