/* semihost.c - the exit and console subset of Arm semihosting (IHI 0098, "Semihosting for AArch32 and AArch64"). */
#include <string.h>

#include "../core/console.h"
#include "arm.h"

#define SYS_WRITEC 0x03
#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define SYS_EXIT_EXTENDED 0x20

#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static enum vmm_exit_kind do_exit(const struct vmm_semihost_env *env, uint64_t param, int *exit_status)
{
    uint64_t block[2];

    /* AArch64: x1 points to { reason, subcode } */
    if (env->read_mem(env->vcpu, param, block, sizeof block)) {
        vmm__guest_error(env->vcpu->vm, "semihost", "SYS_EXIT parameter block at 0x%llx unreadable",
                         (unsigned long long)param);
        *exit_status = 1;
        return VMM_EXIT_SHUTDOWN;
    }
    if (block[0] == ADP_STOPPED_APPLICATION_EXIT)
        *exit_status = (int)(uint32_t)block[1];
    else
        *exit_status = 1; /* any other stop reason is abnormal */
    return VMM_EXIT_SHUTDOWN;
}

enum vmm_exit_kind vmm__semihost_call(const struct vmm_semihost_env *env, uint64_t op, uint64_t param, uint64_t *ret,
                                      int *exit_status)
{
    struct vmm_vm *vm = env->vcpu->vm;
    char buf[256];

    *ret = 0;
    switch ((uint32_t)op) {
    case SYS_EXIT:
    case SYS_EXIT_EXTENDED:
        return do_exit(env, param, exit_status);
    case SYS_WRITEC:
        if (env->read_mem(env->vcpu, param, buf, 1) == 0)
            vmm__console_put(vm->console, buf, 1);
        return VMM_EXIT_NONE;
    case SYS_WRITE0:
        /* a NUL-terminated string, read in chunks; bounded so a missing NUL cannot hang us */
        for (unsigned total = 0; total < (1u << 20); total += sizeof buf) {
            size_t n = 0;
            if (env->read_mem(env->vcpu, param + total, buf, sizeof buf))
                break; /* reading past the end of a mapping: print byte by byte instead */
            while (n < sizeof buf && buf[n])
                n++;
            vmm__console_put(vm->console, buf, n);
            if (n < sizeof buf)
                return VMM_EXIT_NONE;
        }
        return VMM_EXIT_NONE;
    }
    vmm__guest_error(vm, "semihost", "unsupported semihosting operation 0x%llx", (unsigned long long)op);
    *ret = (uint64_t)-1;
    return VMM_EXIT_NONE;
}
