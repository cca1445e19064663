/*
 * gdb_proto.c - the GDB remote protocol's commands (GDB manual, appendix E "Remote Protocol"),
 * answered through a target ops table (gdb_packet.h): what gdb-multiarch sends to an all-stop,
 * non-multiprocess aarch64 target. vCPU n is thread n + 1. No VM here: the fuzzer links it alone.
 */
#include <stdio.h>
#include <string.h>

#include "gdb_packet.h"

#define SYSREG_ID(op0, op1, crn, crm, op2) ((op0) << 14 | (op1) << 11 | (crn) << 7 | (crm) << 3 | (op2))

/* The system registers of the "org.vmmpy-project.aarch64.sys" feature (Arm ARM D19 encodings). */
const struct gdb_sysreg vmm__gdb_sysregs[] = {
    { "sctlr_el1", SYSREG_ID(3, 0, 1, 0, 0) },  { "ttbr0_el1", SYSREG_ID(3, 0, 2, 0, 0) },
    { "ttbr1_el1", SYSREG_ID(3, 0, 2, 0, 1) },  { "tcr_el1", SYSREG_ID(3, 0, 2, 0, 2) },
    { "mair_el1", SYSREG_ID(3, 0, 10, 2, 0) },  { "esr_el1", SYSREG_ID(3, 0, 5, 2, 0) },
    { "far_el1", SYSREG_ID(3, 0, 6, 0, 0) },    { "vbar_el1", SYSREG_ID(3, 0, 12, 0, 0) },
    { "elr_el1", SYSREG_ID(3, 0, 4, 0, 1) },    { "spsr_el1", SYSREG_ID(3, 0, 4, 0, 0) },
    { "sp_el0", SYSREG_ID(3, 0, 4, 1, 0) },     { "sp_el1", SYSREG_ID(3, 4, 4, 1, 0) },
    { "tpidr_el1", SYSREG_ID(3, 0, 13, 0, 4) }, { "mpidr_el1", SYSREG_ID(3, 0, 0, 0, 5) },
};
const unsigned vmm__gdb_nsysregs = sizeof vmm__gdb_sysregs / sizeof vmm__gdb_sysregs[0];

unsigned vmm__gdb_reg_size(unsigned regno)
{
    if (regno <= GDB_REG_PC)
        return 8;
    if (regno == GDB_REG_CPSR || regno == GDB_REG_FPSR || regno == GDB_REG_FPCR)
        return 4;
    if (regno >= GDB_REG_V0 && regno < GDB_REG_V0 + 32)
        return 16;
    if (regno >= GDB_REG_SYS0 && regno < GDB_REG_SYS0 + vmm__gdb_nsysregs)
        return 8;
    return 0;
}

void vmm__gdb_session_init(struct gdb_session *s, const struct gdb_target_ops *ops, void *t)
{
    memset(s, 0, sizeof *s);
    s->ops = ops;
    s->t = t;
}

static long str_reply(char *out, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = 0;
    return (long)n;
}

#define ERR(code) str_reply(out, cap, "E" #code)
#define OK() str_reply(out, cap, "OK")
#define EMPTY() str_reply(out, cap, "")

/* ---- target description (GDB manual, "Target Descriptions"; gdb's aarch64 feature names) ---- */

static size_t xml_core_fpu(char *b, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(b + o, cap - o,
                          "<?xml version=\"1.0\"?><!DOCTYPE target SYSTEM \"gdb-target.dtd\">"
                          "<target><architecture>aarch64</architecture>"
                          "<feature name=\"org.gnu.gdb.aarch64.core\">");
    for (unsigned i = 0; i < 31; i++)
        o += (size_t)snprintf(b + o, cap - o, "<reg name=\"x%u\" bitsize=\"64\"/>", i);
    o += (size_t)snprintf(b + o, cap - o,
                          "<reg name=\"sp\" bitsize=\"64\" type=\"data_ptr\"/>"
                          "<reg name=\"pc\" bitsize=\"64\" type=\"code_ptr\"/>"
                          "<reg name=\"cpsr\" bitsize=\"32\"/></feature>"
                          "<feature name=\"org.gnu.gdb.aarch64.fpu\">"
                          "<vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/>"
                          "<vector id=\"v2u\" type=\"uint64\" count=\"2\"/>"
                          "<vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>"
                          "<vector id=\"v4u\" type=\"uint32\" count=\"4\"/>"
                          "<vector id=\"v16u\" type=\"uint8\" count=\"16\"/>"
                          "<union id=\"vnd\"><field name=\"f\" type=\"v2d\"/><field name=\"u\" type=\"v2u\"/></union>"
                          "<union id=\"vns\"><field name=\"f\" type=\"v4f\"/><field name=\"u\" type=\"v4u\"/></union>"
                          "<union id=\"aarch64v\"><field name=\"d\" type=\"vnd\"/><field name=\"s\" type=\"vns\"/>"
                          "<field name=\"b\" type=\"v16u\"/><field name=\"q\" type=\"uint128\"/></union>");
    for (unsigned i = 0; i < 32; i++)
        o += (size_t)snprintf(b + o, cap - o, "<reg name=\"v%u\" bitsize=\"128\" type=\"aarch64v\"/>", i);
    return o;
}

/* The whole document into b (cap >= 8192); its length. */
static size_t target_xml(char *b, size_t cap)
{
    size_t o = xml_core_fpu(b, cap);
    o += (size_t)snprintf(b + o, cap - o,
                          "<reg name=\"fpsr\" bitsize=\"32\"/><reg name=\"fpcr\" bitsize=\"32\"/></feature>"
                          "<feature name=\"org.vmmpy-project.aarch64.sys\">");
    for (unsigned i = 0; i < vmm__gdb_nsysregs; i++)
        o += (size_t)snprintf(b + o, cap - o, "<reg name=\"%s\" bitsize=\"64\" group=\"system\"/>",
                              vmm__gdb_sysregs[i].name);
    o += (size_t)snprintf(b + o, cap - o, "</feature></target>");
    return o < cap ? o : cap - 1;
}

/* qXfer:features:read:ANNEX:OFF,LEN */
static long xfer_features(const char *args, char *out, size_t cap)
{
    static const char annex[] = "target.xml:";
    char xml[8192];
    uint64_t off, len;
    size_t n, xl;

    if (strncmp(args, annex, sizeof annex - 1))
        return ERR(00);
    args += sizeof annex - 1;
    if (!(n = vmm__gdb_parse_hex(args, 17, &off)) || args[n] != ',' || !vmm__gdb_parse_hex(args + n + 1, 17, &len))
        return ERR(01);
    xl = target_xml(xml, sizeof xml);
    if (off >= xl)
        return str_reply(out, cap, "l");
    if (len > cap - 2)
        len = cap - 2;
    if (len > GDB_PKT_MAX / 2)
        len = GDB_PKT_MAX / 2;
    size_t take = xl - off < len ? xl - off : (size_t)len;
    out[0] = off + take < xl ? 'm' : 'l';
    memcpy(out + 1, xml + off, take);
    out[1 + take] = 0;
    return (long)(1 + take);
}

/* ---- threads ---- */

/* A thread id: -1 (all), 0 (any) or N (vCPU N-1). Returns the digits consumed, 0 if malformed. */
static size_t parse_tid(const char *s, long *tid)
{
    uint64_t v;
    size_t n;

    if (s[0] == '-' && s[1] == '1') {
        *tid = -1;
        return 2;
    }
    if (!(n = vmm__gdb_parse_hex(s, 17, &v)) || v > GDB_MAX_THREADS)
        return 0;
    *tid = (long)v;
    return n;
}

static bool valid_cpu(struct gdb_session *s, long tid)
{
    return tid >= 1 && (unsigned long)tid <= s->ops->ncpus(s->t);
}

static long cmd_H(struct gdb_session *s, const char *p, char *out, size_t cap)
{
    long tid;
    size_t n = parse_tid(p + 1, &tid);

    if ((p[0] != 'g' && p[0] != 'c') || !n || p[1 + n])
        return ERR(01);
    if (tid > 0 && !valid_cpu(s, tid))
        return ERR(22);
    unsigned cpu = tid > 0 ? (unsigned)tid - 1 : 0;
    if (tid > 0 || tid == 0) {
        if (p[0] == 'g')
            s->g_cpu = cpu;
        else
            s->c_cpu = cpu;
    }
    return OK();
}

static long thread_list(struct gdb_session *s, char *out, size_t cap)
{
    size_t o = 0;
    unsigned n = s->ops->ncpus(s->t);

    out[o++] = 'm';
    for (unsigned i = 0; i < n && o + 12 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, i ? ",%x" : "%x", i + 1);
    out[o] = 0;
    return (long)o;
}

static long hex_text(const char *text, char *out, size_t cap)
{
    size_t n = strlen(text);
    if (2 * n + 1 > cap)
        n = (cap - 1) / 2;
    vmm__gdb_bin_to_hex((const uint8_t *)text, n, out);
    return (long)(2 * n);
}

static long thread_extra(struct gdb_session *s, const char *p, char *out, size_t cap)
{
    long tid;
    char text[64];

    if (!parse_tid(p, &tid) || !valid_cpu(s, tid))
        return ERR(22);
    snprintf(text, sizeof text, "vCPU %ld%s", tid - 1, s->ops->cpu_on(s->t, (unsigned)tid - 1) ? "" : " (off)");
    return hex_text(text, out, cap);
}

/* ---- registers ---- */

static long cmd_g(struct gdb_session *s, char *out, size_t cap)
{
    uint8_t buf[16];
    size_t o = 0;

    for (unsigned r = 0; r < GDB_G_REGS; r++) {
        unsigned sz = vmm__gdb_reg_size(r);
        if (o + 2 * sz + 1 > cap || s->ops->read_reg(s->t, s->g_cpu, r, buf) < 0)
            return ERR(14);
        vmm__gdb_bin_to_hex(buf, sz, out + o);
        o += 2 * sz;
    }
    return (long)o;
}

static long cmd_G(struct gdb_session *s, const char *p, size_t len, char *out, size_t cap)
{
    uint8_t buf[16];
    size_t o = 0;

    for (unsigned r = 0; r < GDB_G_REGS && o < len; r++) {
        unsigned sz = vmm__gdb_reg_size(r);
        if (len - o < 2 * sz || !vmm__gdb_hex_to_bin(p + o, sz, buf))
            return ERR(01);
        if (s->ops->write_reg(s->t, s->g_cpu, r, buf) < 0)
            return ERR(14);
        o += 2 * sz;
    }
    return o == len ? OK() : ERR(01);
}

static long cmd_p(struct gdb_session *s, const char *p, char *out, size_t cap)
{
    uint64_t r;
    uint8_t buf[16];
    size_t n = vmm__gdb_parse_hex(p, 17, &r);
    unsigned sz = n && !p[n] && r < 4096 ? vmm__gdb_reg_size((unsigned)r) : 0;

    if (!sz)
        return ERR(01);
    if (s->ops->read_reg(s->t, s->g_cpu, (unsigned)r, buf) < 0)
        return ERR(14);
    vmm__gdb_bin_to_hex(buf, sz, out);
    return (long)(2 * sz);
}

static long cmd_P(struct gdb_session *s, const char *p, size_t len, char *out, size_t cap)
{
    uint64_t r;
    uint8_t buf[16];
    size_t n = vmm__gdb_parse_hex(p, 17, &r);
    unsigned sz = n && p[n] == '=' && r < 4096 ? vmm__gdb_reg_size((unsigned)r) : 0;

    if (!sz || len - n - 1 != 2 * sz || !vmm__gdb_hex_to_bin(p + n + 1, sz, buf))
        return ERR(01);
    return s->ops->write_reg(s->t, s->g_cpu, (unsigned)r, buf) < 0 ? ERR(14) : OK();
}

/* ---- memory ---- */

/* "ADDR,LEN" then `sep` (0: end of packet); the bytes consumed or 0 */
static size_t parse_addr_len(const char *p, char sep, uint64_t *addr, uint64_t *len)
{
    size_t n = vmm__gdb_parse_hex(p, 17, addr), m;

    if (!n || p[n] != ',' || !(m = vmm__gdb_parse_hex(p + n + 1, 17, len)) || p[n + 1 + m] != sep)
        return 0;
    return n + 1 + m;
}

static long cmd_m(struct gdb_session *s, const char *p, char *out, size_t cap)
{
    uint64_t addr, len;
    uint8_t buf[GDB_MEM_MAX];

    if (!parse_addr_len(p, 0, &addr, &len))
        return ERR(01);
    if (len > GDB_MEM_MAX || 2 * len + 1 > cap)
        len = GDB_MEM_MAX < (cap - 1) / 2 ? GDB_MEM_MAX : (cap - 1) / 2;
    long got = len ? s->ops->read_mem(s->t, s->g_cpu, s->phys, addr, buf, (size_t)len) : 0;
    if (got <= 0 && len)
        return ERR(14);
    vmm__gdb_bin_to_hex(buf, (size_t)got, out);
    return 2 * got;
}

/* M (hex) and X (binary) */
static long cmd_write_mem(struct gdb_session *s, const char *p, size_t plen, bool binary, char *out, size_t cap)
{
    uint64_t addr, len;
    uint8_t buf[GDB_PKT_MAX];
    size_t n = parse_addr_len(p, ':', &addr, &len);

    if (!n || len > sizeof buf)
        return ERR(01);
    const char *data = p + n + 1;
    size_t dlen = plen - n - 1;
    if (binary) {
        if (dlen != len)
            return ERR(01);
        memcpy(buf, data, (size_t)len);
    } else if (dlen != 2 * len || !vmm__gdb_hex_to_bin(data, (size_t)len, buf)) {
        return ERR(01);
    }
    if (!len)
        return OK();
    long done = s->ops->write_mem(s->t, s->g_cpu, s->phys, addr, buf, (size_t)len);
    return done == (long)len ? OK() : ERR(14);
}

/* ---- breakpoints ---- */

static long cmd_Z(struct gdb_session *s, const char *p, bool insert, char *out, size_t cap)
{
    uint64_t addr, kind;
    int type = p[0] - '0';

    if (type < 0 || type > 4 || p[1] != ',')
        return ERR(01);
    size_t n = vmm__gdb_parse_hex(p + 2, 17, &addr), m;
    if (!n || p[2 + n] != ',' || !(m = vmm__gdb_parse_hex(p + 3 + n, 17, &kind)))
        return ERR(01);
    if (p[3 + n + m] && p[3 + n + m] != ';') /* conditions and commands (";X...") are not supported */
        return EMPTY();
    if (type >= GDB_WP_WRITE && (kind == 0 || kind > 8 * 1024 * 1024 || addr + kind - 1 < addr))
        return ERR(22); /* empty, huge, or wrapping past 2^64 (it would never match, and hook every access) */
    int r = s->ops->point(s->t, insert, (enum gdb_point)type, addr, kind);
    return r == 0 ? OK() : r == -2 ? EMPTY() : ERR(28);
}

/* ---- resuming ---- */

static long resume(struct gdb_session *s, const enum gdb_action *act, char *out, size_t cap)
{
    unsigned n = s->ops->ncpus(s->t);
    bool any = false;

    for (unsigned i = 0; i < n; i++)
        any |= act[i] != GDB_ACT_STOP;
    if (!any || s->ops->resume(s->t, act, n) < 0)
        return ERR(01);
    s->running = true;
    return -1;
}

/* c / s / C sig / S sig (an address argument is refused: gdb never sends one to aarch64) */
static long cmd_cont(struct gdb_session *s, const char *p, char *out, size_t cap)
{
    enum gdb_action act[GDB_MAX_THREADS];
    char c = p[0];
    unsigned n = s->ops->ncpus(s->t);
    uint64_t sig;

    if ((c == 'C' || c == 'S') && (!vmm__gdb_parse_hex(p + 1, 3, &sig) || strchr(p, ';')))
        return ERR(01);
    if ((c == 'c' || c == 's') && p[1])
        return ERR(01);
    for (unsigned i = 0; i < n; i++)
        act[i] = (c == 's' || c == 'S') ? (i == s->c_cpu ? GDB_ACT_STEP : GDB_ACT_STOP) : GDB_ACT_CONT;
    return resume(s, act, out, cap);
}

/* vCont;ACTION[:TID](;ACTION[:TID])*: the first action that names a thread wins; a bare one means the rest. */
static long cmd_vcont(struct gdb_session *s, const char *p, char *out, size_t cap)
{
    enum gdb_action act[GDB_MAX_THREADS];
    bool set[GDB_MAX_THREADS] = { false };
    unsigned n = s->ops->ncpus(s->t);
    uint64_t sig;

    while (*p == ';') {
        p++;
        char c = *p++;
        enum gdb_action a;
        if (c == 'c' || c == 'C')
            a = GDB_ACT_CONT;
        else if (c == 's' || c == 'S')
            a = GDB_ACT_STEP;
        else
            return ERR(01);
        if (c == 'C' || c == 'S') {
            size_t k = vmm__gdb_parse_hex(p, 3, &sig);
            if (!k)
                return ERR(01);
            p += k;
        }
        long tid = -1;
        if (*p == ':') {
            size_t k = parse_tid(p + 1, &tid);
            if (!k)
                return ERR(01);
            p += 1 + k;
            if (tid > 0 && !valid_cpu(s, tid))
                return ERR(22);
        }
        for (unsigned i = 0; i < n; i++)
            if (!set[i] && (tid <= 0 || (unsigned)tid == i + 1)) {
                act[i] = a;
                set[i] = true;
            }
    }
    if (*p)
        return ERR(01);
    for (unsigned i = 0; i < n; i++)
        if (!set[i])
            act[i] = GDB_ACT_STOP;
    return resume(s, act, out, cap);
}

size_t vmm__gdb_stop_reply(const struct gdb_stop *st, char *out, size_t cap)
{
    int n;

    if (st->kind == GDB_STOP_EXITED)
        n = snprintf(out, cap, "W%02x", st->value & 0xff);
    else if (st->kind == GDB_STOP_KILLED)
        n = snprintf(out, cap, "X%02x", st->value & 0xff);
    else if (st->replay_begin)
        n = snprintf(out, cap, "T%02xreplaylog:begin;thread:%x;", st->value, st->cpu + 1);
    else if (st->point == GDB_WP_WRITE || st->point == GDB_WP_READ || st->point == GDB_WP_ACCESS)
        n = snprintf(out, cap, "T%02x%s:%llx;thread:%x;", st->value,
                     st->point == GDB_WP_WRITE  ? "watch"
                     : st->point == GDB_WP_READ ? "rwatch"
                                                : "awatch",
                     (unsigned long long)st->data_addr, st->cpu + 1);
    else if (st->point == GDB_BP_SW || st->point == GDB_BP_HW)
        n = snprintf(out, cap, "T%02x%s:;thread:%x;", st->value, st->point == GDB_BP_SW ? "swbreak" : "hwbreak",
                     st->cpu + 1);
    else
        n = snprintf(out, cap, "T%02xthread:%x;", st->value, st->cpu + 1);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* ---- queries ---- */

static long cmd_rcmd(struct gdb_session *s, const char *hex, char *out, size_t cap)
{
    char cmd[256], text[1024];
    size_t n = strlen(hex);

    if (n % 2 || n / 2 >= sizeof cmd || !vmm__gdb_hex_to_bin(hex, n / 2, (uint8_t *)cmd))
        return ERR(01);
    cmd[n / 2] = 0;
    if (!strcmp(cmd, "phys on") || !strcmp(cmd, "phys off")) {
        s->phys = cmd[6] == 'n';
        snprintf(text, sizeof text, "memory access: %s addresses\n", s->phys ? "guest-physical" : "virtual");
    } else if (!strcmp(cmd, "phys")) {
        snprintf(text, sizeof text, "memory access: %s addresses\n", s->phys ? "guest-physical" : "virtual");
    } else if (s->ops->monitor(s->t, cmd, text, sizeof text) < 0) {
        snprintf(text, sizeof text,
                 "unknown command '%s'; commands: phys [on|off] (m/M/X use guest-physical addresses), "
                 "translate VA, info\n",
                 cmd);
    }
    return hex_text(text, out, cap);
}

static long query(struct gdb_session *s, const char *p, char *out, size_t cap)
{
    if (!strncmp(p, "qSupported", 10))
        return str_reply(out, cap,
                         s->ops->can_reverse && s->ops->can_reverse(s->t)
                             ? "PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;"
                               "QStartNoAckMode+;ReverseStep+;ReverseContinue+"
                             : "PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;"
                               "QStartNoAckMode+");
    if (!strncmp(p, "qXfer:features:read:", 20))
        return xfer_features(p + 20, out, cap);
    if (!strcmp(p, "qfThreadInfo"))
        return thread_list(s, out, cap);
    if (!strcmp(p, "qsThreadInfo"))
        return str_reply(out, cap, "l");
    if (!strcmp(p, "qC"))
        return snprintf(out, cap, "QC%x", s->g_cpu + 1);
    if (!strcmp(p, "qAttached"))
        return str_reply(out, cap, "1");
    if (!strncmp(p, "qThreadExtraInfo,", 17))
        return thread_extra(s, p + 17, out, cap);
    if (!strncmp(p, "qRcmd,", 6))
        return cmd_rcmd(s, p + 6, out, cap);
    if (!strncmp(p, "qSymbol:", 8))
        return OK();
    return EMPTY();
}

static long cmd_v(struct gdb_session *s, const char *p, char *out, size_t cap)
{
    if (!strcmp(p, "vCont?"))
        return str_reply(out, cap, "vCont;c;C;s;S");
    if (!strncmp(p, "vCont;", 5) && p[5] == ';')
        return cmd_vcont(s, p + 5, out, cap);
    if (!strncmp(p, "vKill", 5)) {
        s->ops->kill(s->t);
        s->ended = true;
        return OK();
    }
    return EMPTY();
}

/* bs / bc: reverse step (the Hc vCPU) or continue; refused with "E." and the reason (GDB manual, E.errtext) */
static long cmd_reverse(struct gdb_session *s, bool step, char *out, size_t cap)
{
    char why[200] = "reverse execution is not supported by this target";

    if (s->ops->reverse && s->ops->reverse(s->t, step, step ? s->c_cpu : GDB_CPU_STOPPED, why, sizeof why) == 0) {
        s->running = true;
        return -1;
    }
    return snprintf(out, cap, "E.%s", why);
}

long vmm__gdb_proto_handle(struct gdb_session *s, const char *pkt, size_t len, char *out, size_t cap)
{
    struct gdb_stop st;

    if (cap < GDB_PKT_MAX + 1 || !len)
        return EMPTY();
    switch (pkt[0]) {
    case '?':
        if (!s->ops->stop_state(s->t, &st))
            return str_reply(out, cap, "S05");
        if (st.kind == GDB_STOP_SIGNAL && st.cpu < s->ops->ncpus(s->t))
            s->g_cpu = s->c_cpu = st.cpu; /* the stopped thread is the one selected */
        return (long)vmm__gdb_stop_reply(&st, out, cap);
    case 'q':
        return query(s, pkt, out, cap);
    case 'Q':
        if (!strcmp(pkt, "QStartNoAckMode")) {
            s->no_ack = true;
            return OK();
        }
        return EMPTY();
    case 'H':
        return cmd_H(s, pkt + 1, out, cap);
    case 'T': {
        long tid;
        size_t n = parse_tid(pkt + 1, &tid);
        return n && !pkt[1 + n] && valid_cpu(s, tid) ? OK() : ERR(22);
    }
    case 'g':
        return len == 1 ? cmd_g(s, out, cap) : ERR(01);
    case 'G':
        return cmd_G(s, pkt + 1, len - 1, out, cap);
    case 'p':
        return cmd_p(s, pkt + 1, out, cap);
    case 'P':
        return cmd_P(s, pkt + 1, len - 1, out, cap);
    case 'm':
        return cmd_m(s, pkt + 1, out, cap);
    case 'M':
        return cmd_write_mem(s, pkt + 1, len - 1, false, out, cap);
    case 'X':
        return cmd_write_mem(s, pkt + 1, len - 1, true, out, cap);
    case 'Z':
    case 'z':
        return cmd_Z(s, pkt + 1, pkt[0] == 'Z', out, cap);
    case 'c':
    case 's':
    case 'C':
    case 'S':
        return cmd_cont(s, pkt, out, cap);
    case 'v':
        return cmd_v(s, pkt, out, cap);
    case 'b':
        if (len == 2 && (pkt[1] == 's' || pkt[1] == 'c'))
            return cmd_reverse(s, pkt[1] == 's', out, cap);
        return EMPTY();
    case 'D':
        s->ops->detach(s->t);
        s->ended = true;
        return OK();
    case 'k':
        s->ops->kill(s->t);
        s->ended = true;
        return -1;
    default:
        return EMPTY();
    }
}
