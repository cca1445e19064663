/* exit_code.c - ends with a semihosting exit, status 7. */
#include "rt.h"

int main(uint64_t dtb)
{
    (void)dtb;
    printf("exiting with 7\n");
    uart_flush();
    semihost_exit(7);
    printf("FAIL semihosting exit returned (no semihosting host?)\n");
    psci_system_off();
}
