/* hello.c - the smallest guest: a greeting, the DTB address it was given, PSCI SYSTEM_OFF. */
#include "rt.h"

int main(uint64_t dtb)
{
    printf_("Hello from vmmpy guest!\n");
    printf_("dtb=0x%lx\n", dtb);
    return 0;
}
