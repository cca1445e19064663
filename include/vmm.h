/* vmm.h - the public interface of libvmm, an aarch64 virtual machine monitor. */
#ifndef VMM_H
#define VMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(VMM_BUILDING)
#define VMM_EXPORT __attribute__((visibility("default")))
#else
#define VMM_EXPORT
#endif

/*
 * Errors. Every function that can fail returns 0 (or a count) on success and
 * a negative VMM_E* code on failure; vmm_last_error() then holds a sentence
 * with the detail ("kernel.elf: not an aarch64 ELF (e_machine 62)").
 */
#define VMM_ERRNO_MAP(XX)                                   \
    XX(INVAL, -1, "invalid argument")                       \
    XX(NOMEM, -2, "out of memory")                          \
    XX(NOENT, -3, "no such file or directory")              \
    XX(IO, -4, "input/output error")                        \
    XX(FORMAT, -5, "unrecognized or corrupt file")          \
    XX(ARCH, -6, "wrong architecture")                      \
    XX(RANGE, -7, "does not fit in guest memory")           \
    XX(NOBACKEND, -8, "backend not available on this host") \
    XX(BACKEND, -9, "backend failure")                      \
    XX(STATE, -10, "not allowed in the VM's current state") \
    XX(BUSY, -11, "VM is running")                          \
    XX(EOF, -12, "end of stream")                           \
    XX(NOTSUP, -13, "not supported")

enum vmm_errno {
    VMM_OK = 0,
#define VMM__ERR_ENUM(name, code, text) VMM_E##name = (code),
    VMM_ERRNO_MAP(VMM__ERR_ENUM)
#undef VMM__ERR_ENUM
};

/* Text for an error code ("invalid argument") and its name ("VMM_EINVAL"). */
VMM_EXPORT const char *vmm_strerror(int err);
VMM_EXPORT const char *vmm_err_name(int err);

/* Log levels, as in syslog order: lower is more severe. */
enum vmm_log_level {
    VMM_LOG_ERROR = 0,
    VMM_LOG_WARN = 1,
    VMM_LOG_INFO = 2,
    VMM_LOG_DEBUG = 3,
};

/*
 * Log callback. `subsys` names the part that logs ("soft", "pl011",
 * "loader", ...). Messages about the guest misbehaving carry the prefix
 * "guest error: " and are rate limited. Called from the thread running
 * vmm_run() or the API call that logged; must not call back into the VM.
 */
typedef void (*vmm_log_fn)(void *opaque, int level, const char *subsys, const char *msg);

typedef struct vmm_vm vmm_vm;

/*
 * VM configuration. Set .size = sizeof(struct vmm_config) so the struct can
 * grow without breaking callers; zero fields take defaults.
 */
struct vmm_config {
    uint32_t size;
    uint32_t ncpus;        /* default 1, at most VMM_MAX_CPUS */
    uint64_t ram_size;     /* bytes, default 256 MiB, multiple of 2 MiB */
    const char *backend;   /* "soft", "kvm", "auto" or NULL (= auto) */
    const char *cpu_model; /* soft backend: one of vmm_cpu_model_name()'s; NULL = the first */
    vmm_log_fn log_fn;     /* may be NULL */
    void *log_opaque;
    int log_level; /* messages above this level are dropped; default VMM_LOG_INFO */
    /*
     * Deterministic mode: every vCPU runs on one host thread in fixed
     * instruction quanta and the guest's clock counts instructions retired
     * (1 ns each), not host time; an idle guest jumps to its next timer
     * deadline. The same guest with the same inputs gives the same output.
     */
    uint32_t deterministic;
    /*
     * Where virtio devices sit (enum vmm_transport): VMM_TRANSPORT_MMIO (0, the default) puts each on a
     * virtio-mmio slot; VMM_TRANSPORT_PCI on bus 0 of a PCIe host bridge (generic ECAM at 0x3F00_0000,
     * 32-bit MMIO window 0x1000_0000-0x3EFE_FFFF, INTx on SPIs 3-6; docs/PCI.md).
     */
    uint32_t transport;
    /*
     * 1: the GICv3 has LPIs and an ITS at 0x08080000 (an MSI controller in the DTB; QEMU's virt
     * has one too), for MSI-capable devices and guests that drive it. 0 (default): none, and the
     * GIC is as without this field. VMM_TRANSPORT_PCI turns it on: its MSI-X needs it. Linux
     * probes an ITS when it sees one: measured on the soft backend, +23 ms of virtual boot time to
     * /init (0.924 s vs 0.901 s) and ~300 KiB of its RAM.
     */
    uint32_t its;
    /*
     * How vCPUs map to host threads (enum vmm_vcpu_threads). VMM_VCPU_THREADS_AUTO (0, the
     * default): the backend's choice; the soft backend runs a real-time VM of more than one vCPU
     * with a thread per vCPU when its engine can (the patched Unicorn), else all on one thread;
     * deterministic mode is always one thread. VMM_VCPU_THREADS_ONE: every vCPU on the thread
     * that calls vmm_run, round-robin (soft only). VMM_VCPU_THREADS_PER_VCPU: a thread per vCPU
     * (an error where the backend cannot, or in deterministic mode).
     */
    uint32_t vcpu_threads;
};

enum vmm_vcpu_threads {
    VMM_VCPU_THREADS_AUTO = 0,
    VMM_VCPU_THREADS_ONE = 1,
    VMM_VCPU_THREADS_PER_VCPU = 2,
};

enum vmm_transport {
    VMM_TRANSPORT_MMIO = 0,
    VMM_TRANSPORT_PCI = 1,
};

#define VMM_MAX_CPUS 8

/*
 * Create a VM. On failure returns a negative code, sets *out to NULL and
 * copies the reason into errbuf (if not NULL).
 */
VMM_EXPORT int vmm_create(const struct vmm_config *cfg, vmm_vm **out, char *errbuf, size_t errlen);
VMM_EXPORT void vmm_destroy(vmm_vm *vm);
VMM_EXPORT const char *vmm_last_error(const vmm_vm *vm);
/* Name of the backend chosen for this VM ("soft"). */
VMM_EXPORT const char *vmm_backend_name(const vmm_vm *vm);
/* 1 if the VM runs in deterministic mode (vmm_config.deterministic, or a restored snapshot's), else 0. */
VMM_EXPORT int vmm_is_deterministic(const vmm_vm *vm);
/*
 * The CPU models struct vmm_config.cpu_model accepts: the i-th name ("cortex-a72", ...; 0 is the
 * default), NULL past the end.
 */
VMM_EXPORT const char *vmm_cpu_model_name(unsigned i);

/* Kernel formats understood by vmm_load_kernel(). */
enum vmm_kernel_format {
    VMM_KERNEL_AUTO = 0, /* ELF64, arm64 Image (optionally gzip-compressed) */
    VMM_KERNEL_ELF = 1,
    VMM_KERNEL_IMAGE = 2, /* arm64 Linux Image, raw or gzip */
    VMM_KERNEL_RAW = 3,   /* flat binary: needs load_addr and entry */
};

struct vmm_kernel_opts {
    uint32_t size;      /* sizeof(struct vmm_kernel_opts) */
    int format;         /* enum vmm_kernel_format */
    uint64_t load_addr; /* RAW: guest physical load address (default: RAM base) */
    uint64_t entry;     /* RAW: entry point (default: load_addr) */
};

/* Load the kernel from a file (opts may be NULL for auto-detection). */
VMM_EXPORT int vmm_load_kernel(vmm_vm *vm, const char *path, const struct vmm_kernel_opts *opts);
/* Load the kernel from memory; `name` is used in messages. */
VMM_EXPORT int vmm_load_kernel_mem(vmm_vm *vm, const void *data, size_t len, const char *name,
                                   const struct vmm_kernel_opts *opts);
VMM_EXPORT int vmm_load_initrd(vmm_vm *vm, const char *path);
VMM_EXPORT int vmm_set_cmdline(vmm_vm *vm, const char *cmdline);

/*
 * Boot information, valid once the VM is prepared (first vmm_run() or
 * vmm_prepare()): where the kernel, initrd and DTB landed.
 */
struct vmm_boot_info {
    uint32_t size;
    uint64_t entry;
    uint64_t kernel_start, kernel_end;
    uint64_t initrd_start, initrd_end; /* 0 if none */
    uint64_t dtb_addr, dtb_size;
    uint64_t ram_base, ram_size;
};

/* Lay out memory and build the device tree; vmm_run() does it if needed. */
VMM_EXPORT int vmm_prepare(vmm_vm *vm);
VMM_EXPORT int vmm_boot_info(vmm_vm *vm, struct vmm_boot_info *info);
/* Copy the generated DTB; *len_out receives its size even if buf is short. */
VMM_EXPORT int vmm_get_dtb(vmm_vm *vm, void *buf, size_t len, size_t *len_out);

/* Why vmm_run() returned. */
enum vmm_run_reason {
    VMM_RUN_POWEROFF = 1,    /* PSCI SYSTEM_OFF or semihosting exit; see exit_status */
    VMM_RUN_RESET = 2,       /* PSCI SYSTEM_RESET */
    VMM_RUN_STOPPED = 3,     /* vmm_request_stop() */
    VMM_RUN_TIMEOUT = 4,     /* the timeout passed to vmm_run() expired */
    VMM_RUN_GUEST_ERROR = 5, /* the guest did something it cannot continue from */
    VMM_RUN_HOST_ERROR = 6,  /* the backend failed; see vmm_last_error() */
};

struct vmm_run_result {
    uint32_t size;
    int reason;      /* enum vmm_run_reason */
    int exit_status; /* POWEROFF: 0 for PSCI SYSTEM_OFF, the code of a semihosting exit; 0 for every other reason */
    uint64_t pc;     /* vCPU 0 PC when the run ended */
    uint64_t insns;  /* instructions retired by all vCPUs (soft backend) */
};

/*
 * Run the VM until it powers off or resets, a stop is requested, the
 * timeout (nanoseconds, 0 = none) expires, or an error occurs. A VM that
 * was stopped or timed out can be run again; one that powered off, reset
 * or failed cannot (VMM_ESTATE). Returns 0 when `res` says why it ended,
 * negative for misuse.
 */
VMM_EXPORT int vmm_run(vmm_vm *vm, uint64_t timeout_ns, struct vmm_run_result *res);
/*
 * Thread-safe: announce that vmm_run() is about to be called from another
 * thread, so that vmm_console_read() waits for output instead of reporting
 * end-of-stream in the gap before the run starts. The run clears it when it
 * returns (whatever it returns).
 */
VMM_EXPORT int vmm_run_pending(vmm_vm *vm);
/* Thread-safe: ask a running vmm_run() to return with VMM_RUN_STOPPED. */
VMM_EXPORT int vmm_request_stop(vmm_vm *vm);

/*
 * GDB remote serial protocol server (docs/gdb.md), on a thread of its own: `address` is
 * "[HOST:]PORT" (TCP; HOST defaults to 127.0.0.1; PORT 0 picks a free one) or "unix:PATH". With
 * wait != 0 the first vmm_run() holds before the guest's first instruction until a debugger
 * attaches and continues (QEMU's -S). All-stop: while the debugger holds the VM, vmm_run() stands
 * still and the guest's clock does not move. A power-off is reported to the debugger as the exit of
 * the inferior with the guest's status; its "kill" ends the run with VMM_RUN_STOPPED and the VM
 * cannot run again. Call before the first vmm_run(), not while the VM runs (VMM_EBUSY); one server
 * per VM. Backends with vCPU threads (kvm) are not supported yet (VMM_ENOTSUP). The server stops in
 * vmm_destroy().
 */
VMM_EXPORT int vmm_gdb_listen(vmm_vm *vm, const char *address, int wait);
/* The address the server listens on, as "HOST:PORT" (the bound port) or "unix:PATH". */
VMM_EXPORT int vmm_gdb_address(vmm_vm *vm, char *buf, size_t len);

/*
 * Serial console (the PL011). Output is buffered in the library (a ring of at
 * most 64 MiB of unread bytes: when it is full the oldest are dropped, counted
 * in vmm_stats.serial_dropped, with one log line); reading
 * never blocks the vCPUs. vmm_console_read() waits up to timeout_ns for at
 * least one byte and returns the count, 0 on timeout, or VMM_EEOF when the
 * VM is not running and nothing is left to read. Thread-safe.
 */
VMM_EXPORT int vmm_console_read(vmm_vm *vm, void *buf, size_t len, uint64_t timeout_ns);
/* Queue bytes for the guest to receive on the serial port. Thread-safe. */
VMM_EXPORT int vmm_console_write(vmm_vm *vm, const void *buf, size_t len);

/* Guest physical memory access for tests and tools (RAM only). */
VMM_EXPORT int vmm_mem_read(vmm_vm *vm, uint64_t gpa, void *buf, size_t len);
VMM_EXPORT int vmm_mem_write(vmm_vm *vm, uint64_t gpa, const void *buf, size_t len);

/*
 * Perform an MMIO access on the device bus as a vCPU would, for device-level
 * tests. size is 1, 2, 4 or 8. Not allowed while the VM runs (VMM_EBUSY).
 */
VMM_EXPORT int vmm_mmio_read(vmm_vm *vm, uint64_t gpa, unsigned size, uint64_t *val);
VMM_EXPORT int vmm_mmio_write(vmm_vm *vm, uint64_t gpa, unsigned size, uint64_t val);

/*
 * Interrupts and system registers, for device-level tests: drive the GIC's
 * inputs and read or write a vCPU's trapped system registers (GIC CPU
 * interface ICC_*, generic timer CNT*) as that vCPU would. `id` is the
 * MRS/MSR encoding op0<<14 | op1<<11 | CRn<<7 | CRm<<3 | op2. The sysreg
 * calls are not allowed while the VM runs (VMM_EBUSY); vmm_irq_set() is
 * thread-safe. For SGIs and PPIs (intid < 32) `cpu` selects the bank.
 */
VMM_EXPORT int vmm_irq_set(vmm_vm *vm, unsigned cpu, unsigned intid, int level);
/* 1 if the GIC asserts vCPU `cpu`'s IRQ line, 0 if not, negative on error. */
VMM_EXPORT int vmm_irq_line(vmm_vm *vm, unsigned cpu);
/*
 * A message-signalled interrupt as a device would send it: a write of `data` to guest-physical
 * `doorbell` on behalf of DeviceID `devid`. The GIC's ITS takes it at GITS_TRANSLATER
 * (0x08090040) as EventID `data`; what it cannot translate is dropped, as on hardware (a counted
 * guest error). VMM_ENOTSUP if the interrupt controller has no ITS. Thread-safe.
 */
VMM_EXPORT int vmm_irq_msi(vmm_vm *vm, uint64_t doorbell, uint32_t data, uint32_t devid);
VMM_EXPORT int vmm_sysreg_read(vmm_vm *vm, unsigned cpu, uint32_t id, uint64_t *val);
VMM_EXPORT int vmm_sysreg_write(vmm_vm *vm, unsigned cpu, uint32_t id, uint64_t val);

/*
 * The guest's clock: nanoseconds since the VM was created (real-time mode)
 * or virtual nanoseconds (deterministic mode). The generic timer counts at
 * 62.5 MHz, one tick per 16 ns.
 */
VMM_EXPORT uint64_t vmm_clock_ns(vmm_vm *vm);
/*
 * Deterministic VMs that are not running: move the virtual clock forward by
 * ns, firing the timers that expire (VMM_ESTATE in real-time mode).
 */
VMM_EXPORT int vmm_clock_advance(vmm_vm *vm, uint64_t ns);
/*
 * Queue serial input for delivery at virtual time at_ns (deterministic
 * mode; a time already past means "at the next quantum"). In real-time mode
 * it is vmm_console_write(). Thread-safe.
 */
VMM_EXPORT int vmm_console_write_at(vmm_vm *vm, uint64_t at_ns, const void *buf, size_t len);
/*
 * Console input by port: VMM_CONSOLE_SERIAL is the PL011 (vmm_console_write_at),
 * VMM_CONSOLE_VIRTIO the virtio console (hvc0; VMM_ENOTSUP without one). Each
 * port has its own queue, so the two devices never share a byte; output of
 * both joins the one stream vmm_console_read() returns.
 */
enum vmm_console_port { VMM_CONSOLE_SERIAL = 0, VMM_CONSOLE_VIRTIO = 1 };
VMM_EXPORT int vmm_console_write_port(vmm_vm *vm, unsigned port, uint64_t at_ns, const void *buf, size_t len);

/*
 * Devices. The machine always has its interrupt controller and a PL011 UART;
 * every other device is added with one of these calls, after vmm_create()
 * and before the VM is prepared (first vmm_run/vmm_prepare). Each virtio
 * device takes the next virtio-mmio slot (0x0A00_0000 + 0x200·n, SPI 16+n),
 * so the order of the calls is the order the guest sees.
 * - a GPU: virtio-gpu (2D), one scanout of width x height (default 1280 x
 *   800; cfg may be NULL), max_mem capping the host memory of the guest's
 *   resources (default 256 MiB). One per VM (the screen API below).
 * - input: a virtio-input keyboard, then an absolute tablet (vmm_input_event
 *   devices 0 and 1). Once per VM.
 * - a disk: virtio-blk over a raw image file (read-only if readonly != 0);
 * - a share: virtio-9p (9P2000.L) exporting host_dir under mount tag `tag`,
 *   confined to that directory; readonly refuses every change with EROFS;
 * - an entropy source: virtio-rng fed by the host's getrandom();
 * - tests only: the virtio transport test device (device id 0xfff0, see
 *   csrc/dev/virtio_dummy.c).
 * - a virtio console (below).
 * Disks, shares, entropy sources and test devices: several of a kind are fine.
 */
struct vmm_gpu_config {
    uint32_t size;          /* sizeof(struct vmm_gpu_config) */
    uint32_t width, height; /* the display mode offered; 0 x 0: 1280 x 800 */
    uint64_t max_mem;       /* bytes; 0: 256 MiB */
};
VMM_EXPORT int vmm_add_gpu(vmm_vm *vm, const struct vmm_gpu_config *cfg);
VMM_EXPORT int vmm_add_input(vmm_vm *vm);
VMM_EXPORT int vmm_add_disk(vmm_vm *vm, const char *path, int readonly);
VMM_EXPORT int vmm_add_share(vmm_vm *vm, const char *host_dir, const char *tag, int readonly);
VMM_EXPORT int vmm_add_rng(vmm_vm *vm);
VMM_EXPORT int vmm_add_test_device(vmm_vm *vm);

/*
 * A virtio console (virtio 1.2 §5.3, one port: Linux's hvc0), at most one.
 * What the guest writes joins the console stream (vmm_console_read); its
 * input is port VMM_CONSOLE_VIRTIO of vmm_console_write_port().
 */
VMM_EXPORT int vmm_add_virtio_console(vmm_vm *vm);

/*
 * Networking (docs/devices.md#network): a virtio-net NIC (virtio 1.2 §5.1; one RX/TX queue pair,
 * MAC, link status, mergeable RX buffers, checksum offload both ways) on one back-end:
 * - VMM_NET_USER: NAT through libslirp (the guest is 10.0.2.15 by DHCP, the host 10.0.2.2, DNS
 *   10.0.2.3); `hostfwd` rules "tcp:HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT" (or "udp:"; HOSTADDR
 *   empty = 127.0.0.1, GUESTADDR empty = 10.0.2.15) forward host ports into the guest.
 *   VMM_ENOTSUP if libvmm was built without libslirp.
 * - VMM_NET_TAP: the existing host tap interface `tap` (Linux; it must exist and be usable).
 * - VMM_NET_SWITCH: a port on `sw`, an in-process L2 switch that VMs of this process share.
 * `capture` writes the NIC's frames (both ways) to a pcap file. Frames the guest has not taken
 * wait in a bounded queue (256 frames); beyond it they are dropped and counted.
 * The default MAC is 52:54:00:12:34:56 + n for the n-th NIC of a VM (user, tap), and
 * 52:54:00:12:35:p for port p of a switch (so VMs on one switch differ), stable run after run.
 * A VM with a NIC cannot be snapshotted (VMM_ENOTSUP): its back-end holds host connections.
 */
enum vmm_net_backend { VMM_NET_USER = 1, VMM_NET_TAP = 2, VMM_NET_SWITCH = 3 };
typedef struct vmm_net_switch vmm_net_switch;
struct vmm_net_config {
    uint32_t size;              /* sizeof(struct vmm_net_config) */
    int backend;                /* enum vmm_net_backend */
    const char *const *hostfwd; /* USER: nhostfwd port-forward rules */
    uint32_t nhostfwd;
    const char *tap;     /* TAP: interface name */
    vmm_net_switch *sw;  /* SWITCH: the switch (the NIC holds a reference) */
    const uint8_t *mac;  /* 6 bytes, or NULL for the default */
    const char *capture; /* pcap file of this NIC's traffic, or NULL */
};
VMM_EXPORT int vmm_add_net(vmm_vm *vm, const struct vmm_net_config *cfg);

/* Counters of NIC `nic` (0 = the first vmm_add_net()). Thread-safe. */
struct vmm_net_stats {
    uint32_t size;
    uint64_t tx_frames, tx_bytes; /* frames the guest sent that went to the back-end */
    uint64_t rx_frames, rx_bytes; /* frames delivered into the guest's buffers */
    uint64_t tx_dropped;          /* sent while the link was down */
    uint64_t tx_malformed;        /* refused: bad header, too short or too long (guest errors) */
    uint64_t rx_dropped;          /* for the guest, dropped: its queue full, link down, or too big */
    uint64_t rx_queued;           /* waiting for guest buffers now (at most 256) */
    uint64_t capture_dropped;     /* frames the pcap file did not take (its 1 GiB cap, write errors) */
    uint32_t link_up;
    uint8_t mac[6];
};
VMM_EXPORT int vmm_net_stats(vmm_vm *vm, unsigned nic, struct vmm_net_stats *st);
/* Link status (config space status, VIRTIO_NET_S_LINK_UP): down drops frames both ways. Thread-safe. */
VMM_EXPORT int vmm_net_set_link(vmm_vm *vm, unsigned nic, int up);

/*
 * An in-process L2 switch (a learning bridge): frames go to the port that last sent from the
 * destination MAC, or to every other port (broadcast, multicast, unknown). `capture` (may be NULL)
 * writes every frame it forwards to a pcap file. Reference-counted: each NIC on it holds one, so
 * vmm_net_switch_release() may come before the VMs are destroyed. Thread-safe.
 */
VMM_EXPORT int vmm_net_switch_create(vmm_net_switch **out, const char *capture, char *errbuf, size_t errlen);
VMM_EXPORT void vmm_net_switch_release(vmm_net_switch *sw);
/* Frames the switch took from its ports, and frames its capture file did not take. */
VMM_EXPORT int vmm_net_switch_counts(vmm_net_switch *sw, uint64_t *forwarded, uint64_t *capture_dropped);

/*
 * The screen (virtio-gpu scanout 0). A *frame* is a RESOURCE_FLUSH that
 * touches the resource shown on scanout 0; frames are numbered from 1.
 * Thread-safe; VMM_ENOTSUP if the VM has no GPU (vmm_add_gpu).
 */
struct vmm_screen_info {
    uint32_t size;
    uint32_t width, height; /* of the scanout (0 while the guest has set none) */
    uint64_t frames;        /* frames so far */
    uint64_t converted;     /* pixels converted from the guest's format so far: a flush nobody looks at adds none */
};
VMM_EXPORT int vmm_screen_info(vmm_vm *vm, struct vmm_screen_info *info);
/* Wait until at least `frame` frames have been flushed: 0, or VMM_EEOF if the VM ended first, 1 on timeout. */
VMM_EXPORT int vmm_screen_wait_frame(vmm_vm *vm, uint64_t frame, uint64_t timeout_ns);
/*
 * Ask the library to keep a copy of frame `frame` when it is flushed (at
 * most 64 pending holds), so that vmm_screen_capture() can return exactly
 * that frame however late it is called. Call it before the frame happens.
 */
VMM_EXPORT int vmm_screen_hold(vmm_vm *vm, uint64_t frame);
/*
 * Copy a frame as 32-bit RGBA pixels (R, G, B, A bytes; row-major, no
 * padding) into buf (len >= width * height * 4). frame = 0: the latest
 * image; otherwise a frame kept by vmm_screen_hold() (VMM_ESTATE if it was
 * not held or has not happened yet). *width, *height and *frame_out (may be
 * NULL) describe what was copied; VMM_ERANGE with the sizes set when buf is
 * too small.
 */
VMM_EXPORT int vmm_screen_capture(vmm_vm *vm, uint64_t frame, void *buf, size_t len, uint32_t *width, uint32_t *height,
                                  uint64_t *frame_out);
/*
 * Deterministic mode: a pause for exact host input. vmm_screen_pause_at(vm, n) arms it (0 disarms): the run
 * loop parks at the first round boundary where frame n exists, i.e. at the end of the round that flushed
 * it. vmm_screen_pause_wait() waits up to timeout_ns until it is parked (0; 1 on timeout; VMM_EEOF if the
 * run ended). While parked, vmm_clock_ns() is exact, and input scheduled at it (vmm_input_event_at,
 * vmm_console_write_at) enters as the loop goes on; vmm_screen_resume() lets it go on (a stop or the
 * timeout also do). Parking does not change what the guest executes. Arm it before the VM runs or while
 * it is parked: armed later, it parks wherever the loop is (arming wakes an idle loop so it looks).
 * VMM_ESTATE in real-time mode.
 */
VMM_EXPORT int vmm_screen_pause_at(vmm_vm *vm, uint64_t frame);
VMM_EXPORT int vmm_screen_pause_wait(vmm_vm *vm, uint64_t timeout_ns);
VMM_EXPORT int vmm_screen_resume(vmm_vm *vm);

/*
 * virtio-input (vmm_add_input). Thread-safe, also before the VM runs.
 * device: 0 = keyboard, 1 = tablet. Events use Linux evdev numbers
 * (EV_SYN 0, EV_KEY 1, EV_REL 2, EV_ABS 3); only codes the device
 * advertises are accepted (VMM_EINVAL otherwise; tablet ABS_X/ABS_Y
 * range 0..32767). Events wait in a per-device queue of 4096 and are
 * delivered into the guest's eventq buffers when a SYN_REPORT completes a
 * report; when the queue is full the oldest complete report is dropped
 * and counted. VMM_ENOTSUP without input devices.
 */
VMM_EXPORT int vmm_input_event(vmm_vm *vm, int device, uint16_t type, uint16_t code, int32_t value);
VMM_EXPORT int vmm_input_stats(vmm_vm *vm, int device, uint64_t *delivered, uint64_t *pending, uint64_t *dropped);
/* The keyboard's LEDs as last set by the guest via statusq: bit 0 NUML, 1 CAPSL, 2 SCROLLL. */
VMM_EXPORT int vmm_input_leds(vmm_vm *vm, uint32_t *leds);
/*
 * vmm_input_event() at virtual time at_ns. Deterministic mode: the event waits (up to 65536 per device)
 * until the run loop's clock reaches at_ns and enters the device between rounds, so the guest sees it at
 * the same point every run; a time already past means "at the next round" (so does vmm_input_event()).
 * Events due at the same time keep the order they were sent in. Due events enter only as whole
 * reports that fit in the queue's free space; the rest waits for later rounds (never dropped). In
 * real-time mode at_ns is ignored.
 */
VMM_EXPORT int vmm_input_event_at(vmm_vm *vm, int device, uint64_t at_ns, uint16_t type, uint16_t code, int32_t value);

/* Counters, for tests and benchmarks. */
struct vmm_stats {
    uint32_t size;
    uint64_t mmio_exits;     /* MMIO accesses served */
    uint64_t hvc_exits;      /* HVC and SMC calls */
    uint64_t sysreg_exits;   /* trapped system-register accesses */
    uint64_t wfi_exits;      /* WFI instructions that waited */
    uint64_t guest_errors;   /* guest misbehaviour events */
    uint64_t exceptions;     /* synchronous exceptions delivered to the guest */
    uint64_t host_mem_bytes; /* host memory the VM uses besides guest RAM (estimate) */
    uint64_t irqs;           /* interrupts acknowledged through ICC_IAR1_EL1 */
    uint64_t insns;          /* instructions retired (counted per translation block; soft backend) */
    uint64_t clock_ns;       /* the guest clock (see vmm_clock_ns) */
    uint64_t serial_dropped; /* serial output dropped unread (the console keeps the latest 64 MiB) */
    uint64_t vcpu_runs;      /* entries into guest code (each exit, kick or end of a slice ends one) */
    uint64_t spin_yields;    /* slices ended because the vCPU waits for another (WFE/YIELD, polling; one thread) */
    uint64_t ipi_yields;     /* slices ended because an IPI went to another vCPU (one thread) */
    uint64_t bcast_waits;    /* broadcast TLB/IC maintenance that waited for other vCPU threads to take it */
    /*
     * The run loop's waits (real time; docs/ARCHITECTURE.md, "Counting the waits"): sleeps on the host (every vCPU idle
     * on one thread, or a vCPU thread in WFI); waits for a timer deadline less than 50 us away, spun instead of slept
     * (a futex wake-up comes tens of us late on a loaded host); and a vCPU thread's halt polls, WFIs that polled for a
     * wake-up before sleeping (the window adapts as KVM's halt polling does), with those a wake-up ended while polling.
     * clock_polls: timer deadlines less than 50 us away that the clock thread spun to instead of sleeping, so that its
     * kick comes at the deadline (real time; with vCPU threads only for a vCPU executing guest code).
     * halt_poll_miss_ns: the windows of the halt polls that no wake-up ended, in ns: the host CPU time halt polling
     * spent in vain (a poll runs its whole window then; time the host took the thread away is not counted).
     */
    uint64_t wait_sleeps;
    uint64_t deadline_polls;
    uint64_t halt_polls;
    uint64_t halt_poll_hits;
    uint64_t clock_polls;
    uint64_t halt_poll_miss_ns;
};
VMM_EXPORT int vmm_get_stats(vmm_vm *vm, struct vmm_stats *st);

/*
 * Deterministic mode: end the run with VMM_RUN_STOPPED exactly when the virtual clock reaches at_ns
 * (vmm_clock_ns() is then at_ns): the round that would pass it is shortened, and an idle guest's clock
 * jumps there. The stop comes at a round boundary, before input due at at_ns enters. A time already
 * past stops at the next round boundary. Set it before the run or while the VM stands still (e.g.
 * parked at a screen pause) for a host-independent stop point; set while it runs freely, it is only as
 * exact as the moment it is set. One time at a time (a new call replaces it; UINT64_MAX disarms); it is
 * disarmed when reached or when the run ends otherwise. Thread-safe. VMM_ESTATE in real-time mode (use
 * vmm_request_stop() there).
 */
VMM_EXPORT int vmm_stop_at(vmm_vm *vm, uint64_t at_ns);

/*
 * Snapshots (docs/snapshots.md). vmm_snapshot_save() writes the whole VM -- its machine description
 * (vmm_config and every vmm_add_*() call), vCPU, interrupt controller, timer, clock, console and
 * device state, and the non-zero pages of RAM -- to `path` (written to a temporary file in the same
 * directory, then renamed: a reader never sees half a snapshot; not fsynced). The VM must be prepared
 * (it has run, or vmm_prepare()) and not running: VMM_EBUSY while vmm_run() runs (stop it first),
 * VMM_ESTATE before it is prepared or after it ended. VMM_ENOTSUP when its backend or a device cannot
 * snapshot.
 *
 * vmm_snapshot_restore() creates a VM from a snapshot: the same devices, in the same order, and the
 * state they had; RAM maps the file copy-on-write, so restoring costs milliseconds and VMs restored
 * from one file share its pages in the host's page cache. The new VM is paused: vmm_run() continues
 * where the saved one stood (in deterministic mode, exactly: the same inputs give the same output).
 * The kernel is not loaded again (it is in RAM). A file that is not a snapshot, is truncated or
 * corrupt, or was written by another format version or for another architecture fails with one
 * sentence in errbuf (VMM_EFORMAT, VMM_ENOTSUP, VMM_EARCH), never a crash: every value is checked.
 * The file must stay in place (and unchanged) while a VM restored from it exists.
 */
struct vmm_restore_config {
    uint32_t size;     /* sizeof(struct vmm_restore_config) */
    vmm_log_fn log_fn; /* may be NULL */
    void *log_opaque;
    int log_level; /* default VMM_LOG_INFO */
    /* NULL, "" or "auto": the snapshot's backend; another name than the snapshot's is refused */
    const char *backend;
    /*
     * Host paths to use instead of the recorded ones: disk_paths[i] for the i-th disk
     * (vmm_add_disk order), share_paths[i] for the i-th share; a NULL entry, or an index past
     * n*_paths, keeps the recorded path.
     */
    const char *const *disk_paths;
    uint32_t ndisk_paths;
    const char *const *share_paths;
    uint32_t nshare_paths;
};
VMM_EXPORT int vmm_snapshot_save(vmm_vm *vm, const char *path);
/* rc may be NULL (everything as recorded). On failure *out is NULL and errbuf (if not NULL) says why. */
VMM_EXPORT int vmm_snapshot_restore(const char *path, const struct vmm_restore_config *rc, vmm_vm **out, char *errbuf,
                                    size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
