/*
 * vmmrun.c - boot a kernel on libvmm from the command line, the guest's serial console on stdout.
 *
 * Uses the public API (include/vmm.h) only. One thread runs the VM; the main thread copies the
 * console to stdout as it arrives, forwards stdin to the guest with --stdin and turns SIGINT/SIGTERM
 * into vmm_request_stop(). Built for arm64 hosts by `make aarch64` (build/aarch64/vmmrun, static,
 * KVM backend) and natively by `make build/vmmrun` (soft backend).
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmm.h"

#define EXIT_ERROR 2
#define EXIT_RESET 3
#define EXIT_TIMEOUT 124
#define EXIT_SIGNAL 130

static const char usage_text[] =
    "usage: vmmrun [options] KERNEL\n"
    "       vmmrun [options] --restore SNAPSHOT\n"
    "\n"
    "Boot KERNEL (an aarch64 ELF, or an arm64 Linux Image, raw or gzip'd) on libvmm's virt board, or\n"
    "restore a snapshot, and copy the guest's serial console (PL011) to stdout as it arrives.\n"
    "\n"
    "options:\n"
    "  -b, --backend NAME   kvm, soft or auto (default auto: the first one this host can use)\n"
    "  -c, --cpus N         vCPUs, 1..%d (default 1)\n"
    "      --vcpu-threads T host threads for the vCPUs: auto (default: the backend's choice; soft runs an\n"
    "                       SMP VM with a thread per vCPU when the patched Unicorn is built), one (every\n"
    "                       vCPU on one thread, soft only) or per-vcpu (a thread each)\n"
    "  -m, --ram SIZE       guest RAM, a multiple of 2M; suffix K, M or G (default 256M)\n"
    "  -t, --timeout SECS   stop the guest after SECS seconds of host time (default: none)\n"
    "  -a, --cmdline TEXT   kernel command line (/chosen/bootargs)\n"
    "  -i, --initrd FILE    initial ramdisk\n"
    "      --stdin          forward stdin to the guest's serial port\n"
    "      --gpu[=WxH]      a virtio-gpu screen (default 1280x800); frames are not saved\n"
    "      --rng            a virtio-rng entropy source (the host's getrandom())\n"
    "      --transport T    where virtio devices sit: mmio (default, virtio-mmio slots) or pci\n"
    "                       (a PCIe host bridge, generic ECAM: docs/PCI.md)\n"
    "      --its            a GICv3 ITS (LPIs, an MSI controller) at 0x08080000\n"
    "      --snapshot-at PATTERN  when PATTERN appears on the serial console, stop the VM, save it to\n"
    "                       the --snapshot-out file and exit 0 (what the guest printed after the\n"
    "                       stop stays unread: the restored VM prints it)\n"
    "      --snapshot-out FILE    where --snapshot-at saves (both or neither)\n"
    "  -r, --restore FILE   run on from a snapshot (vmm_snapshot_restore) instead of booting KERNEL;\n"
    "                       the machine is the snapshot's (no --cpus, --ram, --cmdline, --initrd, --gpu,\n"
    "                       --its, --vcpu-threads);\n"
    "                       --backend other than auto must be the snapshot's\n"
    "      --gdb ADDR       a GDB server on [HOST:]PORT (TCP, host default 127.0.0.1) or unix:PATH\n"
    "                       (docs/gdb.md); the address is printed on stderr\n"
    "      --gdb-wait       the guest waits for the debugger before its first instruction\n"
    "  -s, --stats          print the VM's counters (exits, interrupts...) to stderr at the end\n"
    "  -q, --quiet          no library warnings on stderr (errors are still reported)\n"
    "  -v, --verbose        library log down to debug level on stderr\n"
    "  -h, --help           this text\n"
    "\n"
    "exit status: the guest's power-off status (0 for PSCI SYSTEM_OFF; the status of a semihosting\n"
    "exit or of SYSTEM_OFF with a status, where the backend supports one), 3 if the guest reset the\n"
    "system, 124 on --timeout, 130 on SIGINT/SIGTERM or a debugger's kill, and 2 on any error, with one line\n"
    "'vmmrun: <what went wrong>' on stderr.\n";

static struct {
    const char *backend;
    unsigned cpus;
    uint64_t ram;
    double timeout;
    const char *cmdline;
    const char *initrd;
    const char *kernel;
    int forward_stdin;
    int gpu;
    unsigned gpu_w, gpu_h;
    int rng;
    uint32_t transport;
    uint32_t vcpu_threads;
    int its;
    int stats;
    int log_level;
    const char *snapshot_at;
    const char *snapshot_out;
    const char *restore;
    const char *gdb;
    int gdb_wait;
    int machine_opts; /* options that describe a new machine: not with --restore */
} opt = { .cpus = 1, .log_level = VMM_LOG_WARN };

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    static const char msg[] = "vmmrun: second signal: exiting without waiting for the guest to stop\n";

    if (got_signal) { /* the first one asked for a stop that has not finished: do not make the user wait */
        ssize_t unused = write(2, msg, sizeof msg - 1);
        (void)unused;
        _exit(130);
    }
    got_signal = sig;
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("vmmrun: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_ERROR);
}

static void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("vmmrun: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (vmmrun --help for usage)\n", stderr);
    exit(EXIT_ERROR);
}

static uint64_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *s == '-')
        usage_error("bad size '%s'", s);
    unsigned shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case '\0':
        break;
    default:
        usage_error("bad size '%s' (want bytes or a number with K, M or G)", s);
    }
    if (*end && end[1] && strcmp(end + 1, "iB") && strcmp(end + 1, "B"))
        usage_error("bad size '%s' (want bytes or a number with K, M or G)", s);
    if (shift && v > (UINT64_MAX >> shift))
        usage_error("size '%s' is too large", s);
    return (uint64_t)v << shift;
}

static void parse_args(int argc, char **argv)
{
    enum {
        OPT_STDIN = 256,
        OPT_GPU,
        OPT_SNAP_AT,
        OPT_SNAP_OUT,
        OPT_RNG,
        OPT_TRANSPORT,
        OPT_ITS,
        OPT_GDB,
        OPT_GDB_WAIT,
        OPT_VCPU_THREADS
    };
    static const struct option longopts[] = {
        { "backend", required_argument, NULL, 'b' },
        { "cpus", required_argument, NULL, 'c' },
        { "ram", required_argument, NULL, 'm' },
        { "timeout", required_argument, NULL, 't' },
        { "cmdline", required_argument, NULL, 'a' },
        { "initrd", required_argument, NULL, 'i' },
        { "stdin", no_argument, NULL, OPT_STDIN },
        { "stats", no_argument, NULL, 's' },
        { "quiet", no_argument, NULL, 'q' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "gpu", optional_argument, NULL, OPT_GPU },
        { "rng", no_argument, NULL, OPT_RNG },
        { "transport", required_argument, NULL, OPT_TRANSPORT },
        { "its", no_argument, NULL, OPT_ITS },
        { "snapshot-at", required_argument, NULL, OPT_SNAP_AT },
        { "snapshot-out", required_argument, NULL, OPT_SNAP_OUT },
        { "restore", required_argument, NULL, 'r' },
        { "gdb", required_argument, NULL, OPT_GDB },
        { "gdb-wait", no_argument, NULL, OPT_GDB_WAIT },
        { "vcpu-threads", required_argument, NULL, OPT_VCPU_THREADS },
        { NULL, 0, NULL, 0 },
    };
    int c;
    char *end;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:c:m:t:a:i:r:sqvh", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (strcmp(optarg, "auto") && strcmp(optarg, "kvm") && strcmp(optarg, "soft"))
                usage_error("unknown backend '%s' (choose kvm, soft or auto)", optarg);
            opt.backend = optarg;
            break;
        case 'c': {
            opt.machine_opts = 1;

            errno = 0;
            long n = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || n < 1 || n > VMM_MAX_CPUS)
                usage_error("--cpus wants a number from 1 to %d, not '%s'", VMM_MAX_CPUS, optarg);
            opt.cpus = (unsigned)n;
            break;
        }
        case 'm':
            opt.machine_opts = 1;
            opt.ram = parse_size(optarg);
            if (!opt.ram)
                usage_error("--ram must not be 0");
            break;
        case 't':
            errno = 0;
            opt.timeout = strtod(optarg, &end);
            if (errno || end == optarg || *end || !isfinite(opt.timeout) || opt.timeout <= 0 || opt.timeout > 1e9)
                usage_error("--timeout wants a positive number of seconds, not '%s'", optarg);
            break;
        case 'a':
            opt.machine_opts = 1;
            opt.cmdline = optarg;
            break;
        case 'i':
            opt.machine_opts = 1;
            opt.initrd = optarg;
            break;
        case OPT_SNAP_AT:
            if (!*optarg)
                usage_error("--snapshot-at wants a non-empty pattern");
            if (strlen(optarg) > 4096)
                usage_error("--snapshot-at: the pattern is longer than 4096 bytes");
            opt.snapshot_at = optarg;
            break;
        case OPT_SNAP_OUT:
            if (!*optarg)
                usage_error("--snapshot-out wants a file name");
            opt.snapshot_out = optarg;
            break;
        case 'r':
            if (!*optarg)
                usage_error("--restore wants a snapshot file");
            opt.restore = optarg;
            break;
        case OPT_STDIN:
            opt.forward_stdin = 1;
            break;
        case OPT_GDB:
            if (!*optarg)
                usage_error("--gdb wants [HOST:]PORT or unix:PATH");
            opt.gdb = optarg;
            break;
        case OPT_GDB_WAIT:
            opt.gdb_wait = 1;
            break;
        case OPT_ITS:
            opt.machine_opts = 1;
            opt.its = 1;
            break;
        case OPT_GPU:
            opt.machine_opts = 1;
            opt.gpu = 1;
            if (optarg) {
                int n = -1;
                if (sscanf(optarg, "%ux%u%n", &opt.gpu_w, &opt.gpu_h, &n) != 2 || optarg[n] || opt.gpu_w < 1 ||
                    opt.gpu_h < 1 || opt.gpu_w > 8192 || opt.gpu_h > 8192)
                    usage_error("--gpu wants WIDTHxHEIGHT (1..8192 each), not '%s'", optarg);
            }
            break;
        case OPT_RNG:
            opt.machine_opts = 1;
            opt.rng = 1;
            break;
        case OPT_TRANSPORT:
            opt.machine_opts = 1;
            if (!strcmp(optarg, "pci"))
                opt.transport = VMM_TRANSPORT_PCI;
            else if (!strcmp(optarg, "mmio"))
                opt.transport = VMM_TRANSPORT_MMIO;
            else
                usage_error("unknown transport '%s' (choose mmio or pci)", optarg);
            break;
        case OPT_VCPU_THREADS:
            opt.machine_opts = 1;
            if (!strcmp(optarg, "auto"))
                opt.vcpu_threads = VMM_VCPU_THREADS_AUTO;
            else if (!strcmp(optarg, "one"))
                opt.vcpu_threads = VMM_VCPU_THREADS_ONE;
            else if (!strcmp(optarg, "per-vcpu"))
                opt.vcpu_threads = VMM_VCPU_THREADS_PER_VCPU;
            else
                usage_error("--vcpu-threads wants auto, one or per-vcpu, not '%s'", optarg);
            break;
        case 's':
            opt.stats = 1;
            break;
        case 'q':
            opt.log_level = VMM_LOG_ERROR;
            break;
        case 'v':
            opt.log_level = VMM_LOG_DEBUG;
            break;
        case 'h':
            printf(usage_text, VMM_MAX_CPUS);
            exit(0);
        case ':':
            usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            if (optopt)
                usage_error("unknown option '-%c'", optopt);
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!opt.snapshot_at != !opt.snapshot_out)
        usage_error("--snapshot-at and --snapshot-out go together");
    if (opt.gdb_wait && !opt.gdb)
        usage_error("--gdb-wait needs --gdb");
    if (opt.restore) {
        if (opt.machine_opts)
            usage_error(
                "--restore takes the machine from the snapshot: no --cpus, --ram, --cmdline, --initrd, --gpu, --its or "
                "--vcpu-threads");
        if (optind < argc)
            usage_error("unexpected argument '%s' with --restore (no kernel: the snapshot has one)", argv[optind]);
        return;
    }
    if (optind >= argc)
        usage_error("no kernel given");
    if (optind + 1 < argc)
        usage_error("unexpected argument '%s' after the kernel", argv[optind + 1]);
    opt.kernel = argv[optind];
}

/* Library messages: one line each on stderr, flushed after stdout so they land near the output they concern. */
static void log_cb(void *opaque, int level, const char *subsys, const char *msg)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    (void)opaque;
    fflush(stdout);
    fprintf(stderr, "vmmrun: %s: %s: %s\n", level >= 0 && level <= 3 ? names[level] : "log", subsys, msg);
}

struct runner {
    vmm_vm *vm;
    uint64_t timeout_ns;
    struct vmm_run_result res;
    int rc;
};

static void *run_thread(void *arg)
{
    struct runner *r = arg;
    sigset_t all;

    sigfillset(&all); /* signals go to the main thread, which asks the VM to stop */
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    r->res.size = sizeof r->res;
    r->rc = vmm_run(r->vm, r->timeout_ns, &r->res);
    return NULL;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* stdout gone (closed pipe): keep the guest running, drop its output */
        buf += n;
        len -= (size_t)n;
    }
}

/* --stdin: whatever is readable now goes to the guest's UART. Returns 0 once stdin hit end-of-file. */
static int forward_stdin(vmm_vm *vm)
{
    struct pollfd p = { .fd = 0, .events = POLLIN };
    char buf[256];

    if (poll(&p, 1, 0) <= 0)
        return 1;
    ssize_t n = read(0, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0)
        return 0;
    if (vmm_console_write(vm, buf, (size_t)n) < 0)
        die("console write: %s", vmm_last_error(vm));
    return 1;
}

/* This process's peak resident memory in KiB (VmHWM), 0 if unknown: guest RAM it touched included. */
static unsigned long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long kib = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lu kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void print_stats(vmm_vm *vm, double wall_s)
{
    struct vmm_stats st = { .size = sizeof st };

    if (vmm_get_stats(vm, &st) < 0) {
        fprintf(stderr, "vmmrun: stats: %s\n", vmm_last_error(vm));
        return;
    }
    fprintf(stderr,
            "vmmrun: stats: backend=%s wall_s=%.3f mmio_exits=%" PRIu64 " hvc_exits=%" PRIu64 " sysreg_exits=%" PRIu64
            " wfi_exits=%" PRIu64 " irqs=%" PRIu64 " exceptions=%" PRIu64 " guest_errors=%" PRIu64 " insns=%" PRIu64
            " clock_ns=%" PRIu64 " host_mem_bytes=%" PRIu64 " peak_rss_kib=%lu\n",
            vmm_backend_name(vm), wall_s, st.mmio_exits, st.hvc_exits, st.sysreg_exits, st.wfi_exits, st.irqs,
            st.exceptions, st.guest_errors, st.insns, st.clock_ns, st.host_mem_bytes, peak_rss_kib());
}

static const char *reason_name(int reason)
{
    switch (reason) {
    case VMM_RUN_POWEROFF:
        return "poweroff";
    case VMM_RUN_RESET:
        return "reset";
    case VMM_RUN_STOPPED:
        return "stopped";
    case VMM_RUN_TIMEOUT:
        return "timeout";
    case VMM_RUN_GUEST_ERROR:
        return "guest error";
    case VMM_RUN_HOST_ERROR:
        return "host error";
    default:
        return "unknown";
    }
}

/* --snapshot-at: finds the pattern in the console stream, across reads. */
struct matcher {
    const char *pat;
    char tail[4096]; /* the last strlen(pat) - 1 bytes seen */
    size_t ntail;
};

static int match(struct matcher *m, const char *buf, size_t n)
{
    size_t plen = strlen(m->pat), keep = plen - 1;
    char win[4096 * 2];

    while (n) { /* the tail and the next chunk of the read, searched together */
        size_t take = n < sizeof win - m->ntail ? n : sizeof win - m->ntail;
        memcpy(win, m->tail, m->ntail);
        memcpy(win + m->ntail, buf, take);
        size_t wlen = m->ntail + take;
        if (wlen >= plen && memmem(win, wlen, m->pat, plen))
            return 1;
        m->ntail = wlen < keep ? wlen : keep;
        memmove(m->tail, win + wlen - m->ntail, m->ntail);
        buf += take;
        n -= take;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    struct vmm_config cfg = { .size = sizeof cfg };
    struct runner r = { 0 };
    char errbuf[512] = "";
    char buf[4096];
    vmm_vm *vm;
    pthread_t thread;
    int err, stdin_open;

    parse_args(argc, argv);
    if (opt.restore) {
        struct vmm_restore_config rc = { .size = sizeof rc, .log_fn = log_cb, .log_level = opt.log_level };
        rc.backend = opt.backend; /* NULL or "auto": the snapshot's */
        err = vmm_snapshot_restore(opt.restore, &rc, &vm, errbuf, sizeof errbuf);
        if (err < 0)
            die("%s", *errbuf ? errbuf : vmm_strerror(err));
    } else {
        cfg.ncpus = opt.cpus;
        cfg.ram_size = opt.ram;
        cfg.backend = opt.backend;
        cfg.its = (uint32_t)opt.its;
        cfg.log_fn = log_cb;
        cfg.log_level = opt.log_level;
        cfg.transport = opt.transport;
        cfg.vcpu_threads = opt.vcpu_threads;

        err = vmm_create(&cfg, &vm, errbuf, sizeof errbuf);
        if (err < 0)
            die("%s", *errbuf ? errbuf : vmm_strerror(err));
        if (opt.gpu) {
            struct vmm_gpu_config gpu = { .size = sizeof gpu,
                                          .width = opt.gpu_w,
                                          .height = opt.gpu_h }; /* 0: default */
            if (vmm_add_gpu(vm, &gpu) < 0)
                die("%s", vmm_last_error(vm));
        }
        if (opt.rng && vmm_add_rng(vm) < 0)
            die("%s", vmm_last_error(vm));
        if (vmm_load_kernel(vm, opt.kernel, NULL) < 0)
            die("%s", vmm_last_error(vm));
        if (opt.initrd && vmm_load_initrd(vm, opt.initrd) < 0)
            die("%s", vmm_last_error(vm));
        if (opt.cmdline && vmm_set_cmdline(vm, opt.cmdline) < 0)
            die("%s", vmm_last_error(vm));
        if (vmm_prepare(vm) < 0)
            die("%s", vmm_last_error(vm));
    }

    if (opt.gdb) {
        char addr[256];
        if (vmm_gdb_listen(vm, opt.gdb, opt.gdb_wait) < 0 || vmm_gdb_address(vm, addr, sizeof addr) < 0)
            die("%s", vmm_last_error(vm));
        fprintf(stderr, "vmmrun: gdb server on %s%s\n", addr, opt.gdb_wait ? " (the guest waits for it)" : "");
    }

    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    r.vm = vm;
    r.timeout_ns = opt.timeout > 0 ? (uint64_t)(opt.timeout * 1e9) : 0;
    if (!r.timeout_ns && opt.timeout > 0)
        r.timeout_ns = 1;
    double t0 = now_s();
    vmm_run_pending(vm); /* so the console reads below wait for the run instead of reporting EOF */
    err = pthread_create(&thread, NULL, run_thread, &r);
    if (err)
        die("cannot start the vCPU thread: %s", strerror(err));

    stdin_open = opt.forward_stdin;
    int stop_sent = 0, snap_seen = 0;
    struct matcher m = { .pat = opt.snapshot_at };
    for (;;) {
        if (got_signal && !stop_sent) {
            vmm_request_stop(vm);
            stop_sent = 1;
        }
        if (snap_seen)
            break; /* read no further: what the guest prints from here on stays in the snapshot */
        if (stdin_open)
            stdin_open = forward_stdin(vm);
        int n = vmm_console_read(vm, buf, sizeof buf, stdin_open ? 20000000 : 100000000);
        if (n == VMM_EEOF)
            break;
        if (n < 0)
            die("console read: %s", vmm_last_error(vm));
        if (n > 0) {
            write_all(1, buf, (size_t)n);
            if (m.pat && !stop_sent && match(&m, buf, (size_t)n)) {
                vmm_request_stop(vm);
                stop_sent = snap_seen = 1;
            }
        }
    }
    pthread_join(thread, NULL);
    double wall = now_s() - t0;

    if (snap_seen && r.rc == 0 && r.res.reason == VMM_RUN_STOPPED) {
        double ts = now_s();
        if (opt.stats)
            print_stats(vm, wall);
        fflush(stdout);
        if (vmm_snapshot_save(vm, opt.snapshot_out) < 0)
            die("cannot save the snapshot to %s: %s", opt.snapshot_out, vmm_last_error(vm));
        if (opt.log_level >= VMM_LOG_WARN)
            fprintf(stderr, "vmmrun: snapshot saved to %s (%.0f ms)\n", opt.snapshot_out, (now_s() - ts) * 1e3);
        vmm_destroy(vm);
        return 0;
    }
    if (snap_seen && r.rc == 0 && r.res.reason != VMM_RUN_HOST_ERROR && r.res.reason != VMM_RUN_GUEST_ERROR)
        die("the guest ended (%s) before it could be stopped for the snapshot", reason_name(r.res.reason));
    if (m.pat && !snap_seen && r.rc == 0 && r.res.reason == VMM_RUN_POWEROFF)
        die("the guest powered off without printing '%s': no snapshot", opt.snapshot_at);

    if (opt.stats)
        print_stats(vm, wall);
    if (r.rc < 0)
        die("%s", vmm_last_error(vm));

    int status;
    switch (r.res.reason) {
    case VMM_RUN_POWEROFF:
        /* shells keep 8 bits: a non-zero status that would read as 0 there becomes 1 */
        status = r.res.exit_status & 0xff;
        if (r.res.exit_status && !status)
            status = 1;
        break;
    case VMM_RUN_RESET:
        if (opt.log_level >= VMM_LOG_WARN)
            fprintf(stderr, "vmmrun: the guest reset the system\n");
        status = EXIT_RESET;
        break;
    case VMM_RUN_TIMEOUT:
        fprintf(stderr, "vmmrun: timeout: the guest ran for %g s (vCPU 0 at pc 0x%" PRIx64 ")\n", opt.timeout,
                r.res.pc);
        status = EXIT_TIMEOUT;
        break;
    case VMM_RUN_STOPPED:
        if (got_signal)
            fprintf(stderr, "vmmrun: stopped by signal %d\n", (int)got_signal);
        else
            fprintf(stderr, "vmmrun: the debugger killed the VM\n");
        status = EXIT_SIGNAL;
        break;
    case VMM_RUN_GUEST_ERROR:
    case VMM_RUN_HOST_ERROR:
    default: {
        const char *msg = vmm_last_error(vm);
        die("%s: %s (vCPU 0 at pc 0x%" PRIx64 ")", reason_name(r.res.reason), msg && *msg ? msg : "no detail",
            r.res.pc);
    }
    }
    fflush(stdout);
    vmm_destroy(vm);
    return status;
}
