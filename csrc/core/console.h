/* console.h - the console stream (console.c): output buffer and per-port input queues. */
#ifndef VMM_CONSOLE_H
#define VMM_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmm_console;

struct vmm_vm;
int vmm__console_create(struct vmm_console **out, struct vmm_vm *vm); /* vm: for log lines */
/*
 * Input notification for the UART model: cb(opaque) runs (without the
 * console lock held, from any thread) whenever queued input goes from empty
 * to non-empty.
 */
void vmm__console_set_input_cb(struct vmm_console *c, void (*cb)(void *opaque), void *opaque);
/*
 * Deterministic mode: input written with a virtual timestamp waits until the
 * run loop calls this with the clock; bytes due at or before now_ns enter the
 * input queue. Returns the time of the next scheduled byte (UINT64_MAX: none).
 */
void vmm__console_set_deterministic(struct vmm_console *c, bool on);
uint64_t vmm__console_advance(struct vmm_console *c, uint64_t now_ns);
void vmm__console_destroy(struct vmm_console *c);
void vmm__console_put(struct vmm_console *c, const void *buf, size_t len);
/* output dropped because nobody read it (stats.serial_dropped); host memory of the buffers */
uint64_t vmm__console_dropped(struct vmm_console *c);
size_t vmm__console_host_mem(struct vmm_console *c);
/* next input byte, or -1 when none is queued */
int vmm__console_getc(struct vmm_console *c);
bool vmm__console_has_input(struct vmm_console *c);
/*
 * Input ports (enum vmm_console_port): the PL011 reads port 0 through the
 * three calls above, the virtio console port 1 through these. One reader
 * device a port (VMM_EBUSY); cb as for vmm__console_set_input_cb.
 */
#define VMM_CONSOLE_PORTS 2
int vmm__console_set_port_input_cb(struct vmm_console *c, unsigned port, void (*cb)(void *opaque), void *opaque);
size_t vmm__console_port_read(struct vmm_console *c, unsigned port, void *buf, size_t len);
bool vmm__console_port_has_input(struct vmm_console *c, unsigned port);
void vmm__console_set_running(struct vmm_console *c, bool running);
/*
 * Snapshots: unread output (the latest 16 MiB) and every port's queued and scheduled input; loading
 * replaces the console's. The section is opened by the caller.
 */
struct vmm_snap;
int vmm__console_snap(struct vmm_console *c, struct vmm_snap *s);
/* Only the ports' queued and scheduled input (what the guest will read): a live VM's checkpoint. */
int vmm__console_snap_input(struct vmm_console *c, struct vmm_snap *s);
/*
 * Reverse execution: the count of output bytes the guest has produced, and rewinding it to a checkpoint's.
 * Output the guest produces again below the most it ever produced is dropped (shown once).
 */
uint64_t vmm__console_out_mark(struct vmm_console *c);
void vmm__console_out_rewind(struct vmm_console *c, uint64_t mark);
void vmm__console_out_diverged(struct vmm_console *c); /* the run from here is not a replay: show its output */

#endif
