/* run.h - what the run loop (run.c) offers the rest of the library. */
#ifndef VMM_RUN_H
#define VMM_RUN_H

#include <stdbool.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_vcpu;

/*
 * Deterministic mode: instructions (= virtual ns) per vCPU per round. A vCPU's clock leads the VM's by
 * at most one translation block past a quantum's end, far less than this (snapshot.c refuses more).
 */
#define VMM_QUANTUM_INSNS 100000ULL

/* Wake the run loop (and the clock thread) to look again: an idle loop may have work (takes vm->lock). */
void vmm__wake_run_loop(struct vmm_vm *vm);
/* pthread_cond_broadcast(&vm->cond), and each vCPU thread's own wait (vcpu->wake): with vm->lock held. */
void vmm__vm_broadcast(struct vmm_vm *vm);
/* A line rose for vcpu (irq.c): wake its thread alone if it sleeps in the threaded loop, else as above. */
void vmm__wake_vcpu(struct vmm_vcpu *vcpu);

/* Whether a vCPU other than this one could run now (not off, not waiting without an interrupt). */
bool vmm__others_runnable(struct vmm_vcpu *vcpu);

/* parking at a round boundary, deterministic mode (run.c) */
void vmm__park_source(struct vmm_vm *vm, uint64_t (*progress)(void *opaque), void *opaque);
int vmm__park_arm(struct vmm_vm *vm, uint64_t target);      /* VMM_ESTATE in real-time mode */
int vmm__park_wait(struct vmm_vm *vm, uint64_t timeout_ns); /* 0 parked, 1 timeout, VMM_EEOF: no run */
void vmm__park_release(struct vmm_vm *vm);

#endif
