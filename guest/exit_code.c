/* exit_code.c - ends with status 7: a semihosting exit, or SYSTEM_OFF with x1 = 7 without a semihosting host (KVM). */
#include "rt.h"

int main(uint64_t dtb)
{
    (void)dtb;
    printf("exiting with 7\n");
    uart_flush();
    semihost_exit(7);
    printf("no semihosting host: PSCI SYSTEM_OFF with the status in x4\n");
    uart_flush();
    psci_system_off_status(7);
}
