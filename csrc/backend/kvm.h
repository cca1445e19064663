/* kvm.h - the KVM backend's VM and vCPU state, shared by kvm.c and kvm_debug.c (arm64 Linux hosts only). */
#ifndef VMM_KVM_H
#define VMM_KVM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct vmm_vcpu;
struct vmm_exit;
struct kvm_dbg_vm;
struct kvm_dbg_vcpu;

struct kvm_vm_state {
    int sys_fd; /* /dev/kvm */
    int vm_fd;
    size_t run_size;
    struct kvm_dbg_vm *dbg; /* kvm_debug.c: the breakpoints planted in guest RAM (NULL: never debugged) */
};

struct kvm_vcpu_state {
    int fd;
    struct kvm_run *run;
    pthread_mutex_t kick_lock; /* guards running/thread against a kick's signal */
    bool running;              /* inside KVM_RUN, on `thread` */
    pthread_t thread;
    struct kvm_dbg_vcpu *dbg; /* kvm_debug.c: what the debugger set on this vCPU (NULL: nothing yet) */
};

/* kvm_debug.c: what a debugger needs (core/debug.h), and KVM_EXIT_DEBUG as VMM_EXIT_DEBUG. */
extern const struct vmm_debug_ops vmm__kvm_debug_ops;
void vmm__kvm_debug_exit(struct vmm_vcpu *vcpu, struct vmm_exit *exit);

#endif
