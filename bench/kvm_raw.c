/*
 * kvm_raw.c - the floor for an MMIO exit on this host: bare KVM ioctls, no VMM around them.
 *
 *     kvm_raw [N]      (default N = 10000)
 *
 * Creates a VM with one vCPU and 64 KiB of RAM at 0x40000000 holding a few instructions: N word
 * writes to an address no memory slot covers (each a KVM_EXIT_MMIO), then N reads (answered with
 * 0), then an empty loop of N iterations. Each phase ends with a write to a marker address; the host
 * times the phases with CLOCK_MONOTONIC between markers and prints
 *
 *     KVMRAW name=<loop|mmio_write|mmio_read> iters=N ns=<total> ns_per_iter=<...>
 *
 * bench/kvm_exits.py runs it beside vmmrun's bench_exits guest (in the nested VM of tools/nested.py)
 * and reports vmmpy's cost per exit relative to this one. Static, cross-built by `make aarch64`.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RAM_BASE 0x40000000ULL
#define RAM_SIZE 0x10000ULL
#define MMIO_ADDR 0x0a000000ULL   /* no memory slot: every access exits */
#define MARKER_ADDR 0x0a001000ULL /* a write here ends a phase */

/* clang --target=aarch64-none-elf; x0 = count, x1 = MMIO_ADDR, x4 = MARKER_ADDR, x5 = N */
static const uint32_t code[] = {
    0xb9000023, /* loop_w: str w3, [x1] */
    0xf1000400, /*         subs x0, x0, #1 */
    0x54ffffc1, /*         b.ne loop_w */
    0xb9000083, /*         str w3, [x4]   marker 1 */
    0xaa0503e0, /*         mov x0, x5 */
    0xb9400023, /* loop_r: ldr w3, [x1] */
    0xf1000400, /*         subs x0, x0, #1 */
    0x54ffffc1, /*         b.ne loop_r */
    0xb9000083, /*         str w3, [x4]   marker 2 */
    0xaa0503e0, /*         mov x0, x5 */
    0xf1000400, /* loop_e: subs x0, x0, #1 */
    0x54ffffe1, /*         b.ne loop_e */
    0xb9000083, /*         str w3, [x4]   marker 3 */
    0x14000000, /*         b . */
};

static void die(const char *what)
{
    fprintf(stderr, "kvm_raw: %s: %s\n", what, strerror(errno));
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void set_reg(int vcpu, uint64_t id, uint64_t val)
{
    struct kvm_one_reg reg = { .id = id, .addr = (uint64_t)(uintptr_t)&val };
    if (ioctl(vcpu, KVM_SET_ONE_REG, &reg) < 0)
        die("KVM_SET_ONE_REG");
}

#define CORE_REG(field) (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offsetof(struct kvm_regs, field) / 4))

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 0) : 10000;
    static const char *const names[] = { "mmio_write", "mmio_read", "loop" };
    uint64_t exits[3] = { 0 }, t[4];
    int phase = 0;

    if (n == 0)
        n = 1;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("open /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    void *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED)
        die("mmap");
    memcpy(ram, code, sizeof code);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = RAM_BASE, .memory_size = RAM_SIZE, .userspace_addr = (uint64_t)(uintptr_t)ram
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        die("KVM_CREATE_VCPU");
    struct kvm_vcpu_init init;
    if (ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) < 0)
        die("KVM_ARM_PREFERRED_TARGET");
    if (ioctl(vcpu, KVM_ARM_VCPU_INIT, &init) < 0)
        die("KVM_ARM_VCPU_INIT");
    int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size < 0)
        die("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");

    set_reg(vcpu, CORE_REG(regs.pc), RAM_BASE);
    set_reg(vcpu, CORE_REG(regs.pstate), 0x3c5); /* EL1h, DAIF masked */
    set_reg(vcpu, CORE_REG(regs.regs[0]), n);
    set_reg(vcpu, CORE_REG(regs.regs[1]), MMIO_ADDR);
    set_reg(vcpu, CORE_REG(regs.regs[4]), MARKER_ADDR);
    set_reg(vcpu, CORE_REG(regs.regs[5]), n);

    t[0] = now_ns();
    while (phase < 3) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            die("KVM_RUN");
        }
        if (run->exit_reason != KVM_EXIT_MMIO) {
            fprintf(stderr, "kvm_raw: unexpected exit reason %u in phase %s\n", run->exit_reason, names[phase]);
            return 2;
        }
        if (run->mmio.phys_addr == MARKER_ADDR) {
            t[++phase] = now_ns();
            continue;
        }
        if (run->mmio.phys_addr != MMIO_ADDR) {
            fprintf(stderr, "kvm_raw: MMIO exit at 0x%llx\n", (unsigned long long)run->mmio.phys_addr);
            return 2;
        }
        if (!run->mmio.is_write)
            memset(run->mmio.data, 0, sizeof run->mmio.data);
        exits[phase]++;
    }
    for (int i = 0; i < 3; i++) {
        uint64_t ns = t[i + 1] - t[i];
        printf("KVMRAW name=%s iters=%llu exits=%llu ns=%llu ns_per_iter=%.1f\n", names[i], (unsigned long long)n,
               (unsigned long long)exits[i], (unsigned long long)ns, (double)ns / (double)n);
    }
    return 0;
}
