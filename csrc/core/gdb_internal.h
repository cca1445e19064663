/*
 * gdb_internal.h - the GDB server's state, shared by its two sides: the server thread (gdbstub.c: the
 * socket, the packets, the target ops) and the run threads' hold (gdb_hold.c). Not a public header.
 */
#ifndef VMM_GDB_INTERNAL_H
#define VMM_GDB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include "debug.h"
#include "gdb_packet.h"
#include "vm.h"

#define GDB_MAX_POINTS 64

struct vmm_gdb {
    struct vmm_vm *vm;
    int lfd, wake[2];
    int cfd; /* the connection: set and closed by the server thread, under vm->lock (destroy shuts it down) */
    char addr[160];
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    pthread_t thread;
    bool thread_started;
    atomic_bool quit;
    /* under vm->lock */
    bool attached, held, ended, killed, pending_hit, stepping;
    bool busy;          /* this thread has marked the VM busy (vm->dbg_busy) for the packet it serves */
    bool clock_stopped; /* the guest's clock stands still (clock_stand) since held_since */
    uint64_t held_since;
    uint64_t gen;    /* bumped by each resume: a parked vCPU thread leaves once it moves (all-stop) */
    unsigned parked; /* run threads standing in vmm__gdb_hold (held: all of them) */
    bool owes_stop;  /* the debugger resumed the target and waits for a stop reply (or the exit) */
    int halt_sig;    /* the signal a requested hold reports: 5 on attach and --gdb-wait, 2 for ^C */
    int exit_status;
    uint64_t stop_seq;
    struct gdb_stop stop;
    enum gdb_action act[VMM_MAX_CPUS];
    struct vmm_debug_point points[GDB_MAX_POINTS];
    unsigned npoints;
    /* the server thread's own */
    struct gdb_session s;
    struct gdb_rx rx;
    uint64_t reported_seq;
    char out[GDB_PKT_MAX + 1];
    char frame[2 * GDB_PKT_MAX + 8];
    size_t frame_len;
};

/* gdb_hold.c, each with vm->lock held: wake the server thread; ask the run loop to hold with signal sig;
 * resume or detach (install the configuration, let the clock go, release the parked run threads) */
void vmm__gdb_notify(struct vmm_gdb *g);
void vmm__gdb_request_hold(struct vmm_gdb *g, int sig);
void vmm__gdb_go(struct vmm_gdb *g);

#endif
