/*
 * gdb_packet.h - the GDB remote serial protocol without a VM: framing (gdb_packet.c) and the command
 * interpreter (gdb_proto.c) that answers packets through a target ops table. The stub (gdbstub.c)
 * supplies the ops for a VM; the fuzzer (fuzz/fuzz_gdb.c) supplies a small in-memory one.
 */
#ifndef VMM_GDB_PACKET_H
#define VMM_GDB_PACKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest packet payload we accept and send (advertised as PacketSize, in hex). */
#define GDB_PKT_MAX 16384
/* Memory moved by one m/M/X packet: what fits a reply in hex with room to spare. */
#define GDB_MEM_MAX ((GDB_PKT_MAX - 16) / 2)

/* ---- framing (gdb_packet.c) ---- */

enum gdb_rx_event {
    GDB_RX_NONE = 0, /* keep feeding */
    GDB_RX_PACKET,   /* rx->buf[0..len) is a packet with a good checksum (NUL-terminated) */
    GDB_RX_BADSUM,   /* a packet whose checksum is wrong: answer '-' */
    GDB_RX_TOOBIG,   /* a packet longer than GDB_PKT_MAX: answer '+' and an error */
    GDB_RX_INTR,     /* ^C outside a packet: interrupt the target */
    GDB_RX_ACK,      /* '+' */
    GDB_RX_NACK,     /* '-': resend the last reply */
};

struct gdb_rx {
    int state;
    size_t len;
    bool overflow;
    uint8_t sum, cs;
    char buf[GDB_PKT_MAX + 1];
};

void vmm__gdb_rx_init(struct gdb_rx *rx);
enum gdb_rx_event vmm__gdb_rx_byte(struct gdb_rx *rx, uint8_t c);

/* Frame payload as "$...#cs" into out (escaping $ # } *); the framed length, or 0 if it does not fit. */
size_t vmm__gdb_frame(char *out, size_t cap, const char *payload, size_t len);

/* hex helpers: digits consumed (0: none); a number longer than 16 digits fails */
int vmm__gdb_hexval(char c);
size_t vmm__gdb_parse_hex(const char *s, size_t n, uint64_t *v);
/* n hex digit pairs into bytes; false on a bad digit */
bool vmm__gdb_hex_to_bin(const char *hex, size_t nbytes, uint8_t *out);
void vmm__gdb_bin_to_hex(const uint8_t *in, size_t n, char *out);

/* ---- the command interpreter (gdb_proto.c) ---- */

/* Register numbers: the order of the target description (and of the g packet). */
enum {
    GDB_REG_X0 = 0,
    GDB_REG_SP = 31,
    GDB_REG_PC = 32,
    GDB_REG_CPSR = 33, /* 32 bits */
    GDB_REG_V0 = 34,   /* 128 bits each */
    GDB_REG_FPSR = 66, /* 32 bits */
    GDB_REG_FPCR = 67,
    GDB_REG_SYS0 = 68, /* the system registers of vmm__gdb_sysregs[], 64 bits each */
};
#define GDB_G_REGS GDB_REG_SYS0 /* the g packet: core and FP/SIMD */

struct gdb_sysreg {
    const char *name;
    uint32_t id; /* op0<<14 | op1<<11 | CRn<<7 | CRm<<3 | op2 */
};
extern const struct gdb_sysreg vmm__gdb_sysregs[];
extern const unsigned vmm__gdb_nsysregs;
/* bytes in register regno, 0 if there is none */
unsigned vmm__gdb_reg_size(unsigned regno);

/* breakpoint and watchpoint kinds (Z0..Z4) */
enum gdb_point { GDB_BP_SW = 0, GDB_BP_HW = 1, GDB_WP_WRITE = 2, GDB_WP_READ = 3, GDB_WP_ACCESS = 4 };

/* What to do with each vCPU when the target resumes. */
enum gdb_action { GDB_ACT_STOP = 0, GDB_ACT_CONT, GDB_ACT_STEP };
#define GDB_MAX_THREADS 64

/* Why the target stopped, for a stop reply. */
struct gdb_stop {
    enum { GDB_STOP_SIGNAL, GDB_STOP_EXITED, GDB_STOP_KILLED } kind;
    int value;          /* signal number (5 = SIGTRAP, 2 = SIGINT), or the exit status */
    unsigned cpu;       /* the vCPU that stopped (thread cpu + 1) */
    int point;          /* -1, or the enum gdb_point that fired */
    uint64_t data_addr; /* a watchpoint's address */
    bool replay_begin;  /* reverse execution reached the start of history ("replaylog:begin") */
};

struct gdb_target_ops {
    unsigned (*ncpus)(void *t);
    bool (*cpu_on)(void *t, unsigned cpu);
    /* a register's bytes (target byte order, vmm__gdb_reg_size(regno) of them): 0 or negative */
    int (*read_reg)(void *t, unsigned cpu, unsigned regno, uint8_t *buf);
    int (*write_reg)(void *t, unsigned cpu, unsigned regno, const uint8_t *buf);
    /* memory through cpu's stage-1 translation (phys: guest-physical addresses); bytes done, or negative */
    long (*read_mem)(void *t, unsigned cpu, bool phys, uint64_t addr, uint8_t *buf, size_t len);
    long (*write_mem)(void *t, unsigned cpu, bool phys, uint64_t addr, const uint8_t *buf, size_t len);
    /* insert or remove a breakpoint/watchpoint: 0, or negative (not supported / no room) */
    int (*point)(void *t, bool insert, enum gdb_point type, uint64_t addr, uint64_t len);
    /* start the target with one action per vCPU; the stop comes later (gdb_proto_stopped) */
    int (*resume)(void *t, const enum gdb_action *act, unsigned n);
    /* the current stop, if the target is stopped (the reply to '?') */
    bool (*stop_state)(void *t, struct gdb_stop *st);
    void (*kill)(void *t);
    void (*detach)(void *t);
    /* "monitor" commands: write a text answer into out (NUL-terminated); negative: unknown command */
    int (*monitor)(void *t, const char *cmd, char *out, size_t cap);
    /*
     * Reverse execution (optional: NULL for none): whether it is offered (qSupported), and a reverse
     * step of cpu or a reverse continue (bs/bc; cpu GDB_CPU_STOPPED: the vCPU that stopped). 0: the
     * stop comes later, as for resume; negative: refused, the reason in why.
     */
    bool (*can_reverse)(void *t);
    int (*reverse)(void *t, bool step, unsigned cpu, char *why, size_t cap);
};
#define GDB_CPU_STOPPED 0xffffffffu

struct gdb_session {
    const struct gdb_target_ops *ops;
    void *t;
    unsigned g_cpu, c_cpu; /* Hg / Hc selections (vCPU index) */
    bool no_ack;           /* QStartNoAckMode */
    bool phys;             /* "monitor phys on": m/M/X take guest-physical addresses */
    bool running;          /* a resume was sent; its stop reply is owed */
    bool ended;            /* detach or kill: close the connection after the reply */
};

void vmm__gdb_session_init(struct gdb_session *s, const struct gdb_target_ops *ops, void *t);
/*
 * Answer one packet (NUL-terminated, len bytes). The reply payload (unframed) goes into out (cap >=
 * GDB_PKT_MAX + 1); returns its length, or -1 when no reply is due now (a resume: the stop reply
 * comes from vmm__gdb_stop_reply when the target stops).
 */
long vmm__gdb_proto_handle(struct gdb_session *s, const char *pkt, size_t len, char *out, size_t cap);
/* A stop reply ("T05thread:1;", "W00", "X09") for st; its length. */
size_t vmm__gdb_stop_reply(const struct gdb_stop *st, char *out, size_t cap);

#endif
