/*
 * gdb_reverse.h - reverse execution for the GDB server (gdb_reverse.c): reverse-stepi (`bs`) and
 * reverse-continue (`bc`) on top of deterministic replay, from in-memory checkpoints (checkpoint.c).
 * The server (gdbstub.c) asks through the first group of calls, on its own thread with the VM held;
 * the deterministic run loop (run.c) calls the second group on the run thread, only when vm->gdb_rev.
 */
#ifndef VMM_GDB_REVERSE_H
#define VMM_GDB_REVERSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmm_vm;
struct vmm_vcpu;
struct vmm_exit;
struct vmm_debug_point;
struct gdb_stop;

/* NULL when the VM cannot run backwards (vmm__rev_why_not says why) or out of memory. */
struct gdb_rev *vmm__rev_create(struct vmm_vm *vm);
void vmm__rev_destroy(struct vmm_vm *vm);
const char *vmm__rev_why_not(struct vmm_vm *vm);

/* The server's side (vm->lock held). */
void vmm__rev_attach(struct vmm_vm *vm, bool attached); /* history is kept while a debugger is attached */
void vmm__rev_diverged(struct vmm_vm *vm);              /* the debugger wrote guest state: the future is new */
void vmm__rev_host_changed(struct vmm_vm *vm);          /* the same from a host API call (takes vm->lock) */
/* Start a reverse move (VM held): 0, or -1 with a reason in why. cpu: the vCPU whose past is meant. */
int vmm__rev_request(struct vmm_vm *vm, bool step, unsigned cpu, const struct vmm_debug_point *pts, unsigned n,
                     char *why, size_t cap);
int vmm__rev_monitor(struct vmm_vm *vm, const char *args, char *out, size_t cap); /* "monitor reverse ..." */

/* The run loop's side (run thread). */
void vmm__rev_round(struct vmm_vm *vm);     /* at the top of each round: rewinds and checkpoints */
void vmm__rev_slice(struct vmm_vcpu *vcpu); /* before a vCPU's slice: the replay's debug set-up */
bool vmm__rev_unwinding(struct vmm_vm *vm); /* a rewind is due: the round is abandoned */
void vmm__rev_resumed(struct vmm_vm *vm);   /* the debugger resumed the VM from a hold */
enum { REV_PASS = 0, REV_SWALLOW, REV_STOP };
/* A vCPU's exit during a replay: REV_SWALLOW (not the debugger's), REV_STOP (stop with *st) or REV_PASS. */
int vmm__rev_after_run(struct vmm_vcpu *vcpu, const struct vmm_exit *exit, struct gdb_stop *st);

/* gdbstub.c: report st to the debugger and hold here (run thread). */
void vmm__gdb_stop_here(struct vmm_vm *vm, const struct gdb_stop *st);

#endif
