/* hello.c - the smallest guest: a greeting, the DTB address it was given in x0, PSCI SYSTEM_OFF. */
#include "rt.h"

int main(uint64_t dtb)
{
    printf("Hello from vmmpy guest!\n");
    printf("dtb=0x%lx\n", dtb);
    return 0;
}
