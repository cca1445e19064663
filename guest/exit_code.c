/* exit_code.c - ends through a semihosting exit with status 7. */
#include "rt.h"

int main(uint64_t dtb)
{
    (void)dtb;
    printf_("exiting with 7\n");
    return 7;
}
