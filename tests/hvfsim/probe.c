/*
 * probe.c - drives the Hypervisor.framework simulator (csrc/backend/hvfsim) through its C API alone,
 * for tests/test_hvfsim.py: each command runs a few instructions on a fresh vCPU and prints what the
 * framework reported, one "key=value ..." line per exit.
 *
 *   probe insn HEX [HEX...]   run these instructions (from RAM at 0x40000000) until the first exit;
 *                             x1 = 0x09000000 (nothing mapped there), x2 = 8, x3..x30 = 0x100 + n
 *   probe vtimer              the virtual timer's exit, its automatic mask and its offset
 *   probe threads             calls from a thread that does not own the vCPU; hv_vcpus_exit from one
 *   probe vm                  one VM per process; IPA size limits; map alignment
 */
#include <Hypervisor/Hypervisor.h>
#include <mach/mach_time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define RAM 0x40000000ull
#define RAM_SIZE 0x100000ull

static void *ram;
static hv_vcpu_t vcpu;
static hv_vcpu_exit_t *ex;

#define CHECK(call)                                           \
    do {                                                      \
        hv_return_t r_ = (call);                              \
        if (r_ != HV_SUCCESS) {                               \
            printf("error %s = 0x%x\n", #call, (unsigned)r_); \
            exit(1);                                          \
        }                                                     \
    } while (0)

static void setup(void)
{
    ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(hv_vm_create(NULL));
    CHECK(hv_vm_map(ram, RAM, RAM_SIZE, HV_MEMORY_READ | HV_MEMORY_WRITE | HV_MEMORY_EXEC));
    CHECK(hv_vcpu_create(&vcpu, &ex, NULL));
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_PC, RAM));
}

static void print_exit(void)
{
    uint64_t pc = 0;
    hv_vcpu_get_reg(vcpu, HV_REG_PC, &pc);
    printf("reason=%u esr=0x%llx va=0x%llx pa=0x%llx pc=0x%llx\n", (unsigned)ex->reason,
           (unsigned long long)ex->exception.syndrome, (unsigned long long)ex->exception.virtual_address,
           (unsigned long long)ex->exception.physical_address, (unsigned long long)(pc - RAM));
}

static int cmd_insn(int argc, char **argv)
{
    uint32_t *code = ram;
    int n = 0;
    for (int i = 0; i < argc; i++)
        code[n++] = (uint32_t)strtoul(argv[i], NULL, 16);
    code[n++] = 0x14000000u; /* b . */
    for (unsigned r = 3; r <= 30; r++)
        CHECK(hv_vcpu_set_reg(vcpu, (hv_reg_t)(HV_REG_X0 + r), 0x100 + r));
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_X1, 0x09000000));
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_X2, 8));
    CHECK(hv_vcpu_set_sys_reg(vcpu, HV_SYS_REG_SP_EL1, 0x09000100));
    CHECK(hv_vcpu_run(vcpu));
    print_exit();
    return 0;
}

/*
 * The guest arms watchpoint 0 on a doubleword (stores, EL0 and EL1) with its own MSRs, then stores
 * there: the watchpoint exception enters its EL1 vector (which makes HVC #1), no exit before that.
 */
static int cmd_watch(void)
{
    static const uint32_t code[] = {
        0xd518c008u, /* msr vbar_el1, x8 */
        0xd51000c3u, /* msr dbgwvr0_el1, x3 */
        0xd51000e4u, /* msr dbgwcr0_el1, x4 */
        0xd5100245u, /* msr mdscr_el1, x5 */
        0xd50348ffu, /* msr daifclr, #8 (PSTATE.D) */
        0xd5033fdfu, /* isb */
        0xf90000e6u, /* str x6, [x7]: the 7th instruction */
        0xd4000002u, /* hvc #0: not reached when the watchpoint is taken */
    };
    uint64_t esr = 0, far = 0, elr = 0;

    memcpy(ram, code, sizeof code);
    ((uint32_t *)ram)[(0x800 + 0x200) / 4] = 0xd4000022u; /* VBAR + 0x200 (EL1h sync): hvc #1 */
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_X8, RAM + 0x800));
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_X3, RAM + 0x1000));
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_X4, 0x1ff7)); /* BAS 0xff, LSC store, PAC EL0+EL1, E */
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_X5, 0xa000)); /* MDSCR_EL1.MDE, KDE */
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_X6, 0x1234));
    CHECK(hv_vcpu_set_reg(vcpu, HV_REG_X7, RAM + 0x1000));
    CHECK(hv_vcpu_run(vcpu));
    CHECK(hv_vcpu_get_sys_reg(vcpu, HV_SYS_REG_ESR_EL1, &esr));
    CHECK(hv_vcpu_get_sys_reg(vcpu, HV_SYS_REG_FAR_EL1, &far));
    CHECK(hv_vcpu_get_sys_reg(vcpu, HV_SYS_REG_ELR_EL1, &elr));
    printf("reason=%u esr=0x%llx esr1=0x%llx far=0x%llx elr=0x%llx mem=0x%llx\n", (unsigned)ex->reason,
           (unsigned long long)ex->exception.syndrome, (unsigned long long)esr, (unsigned long long)(far - RAM),
           (unsigned long long)(elr - RAM), (unsigned long long)((uint64_t *)ram)[0x1000 / 8]);
    return 0;
}

static void *cancel_later(void *arg)
{
    (void)arg;
    usleep(50000);
    hv_vcpus_exit(&vcpu, 1);
    return NULL;
}

static int cmd_vtimer(void)
{
    pthread_t t;
    bool masked = false;
    uint64_t v = 0;

    ((uint32_t *)ram)[0] = 0x14000000u; /* b . */
    CHECK(hv_vcpu_set_vtimer_offset(vcpu, mach_absolute_time()));
    CHECK(hv_vcpu_set_sys_reg(vcpu, HV_SYS_REG_CNTV_CVAL_EL0, 24000)); /* 1 ms at 24 MHz */
    CHECK(hv_vcpu_set_sys_reg(vcpu, HV_SYS_REG_CNTV_CTL_EL0, 1));
    CHECK(hv_vcpu_run(vcpu));
    CHECK(hv_vcpu_get_vtimer_mask(vcpu, &masked));
    CHECK(hv_vcpu_get_sys_reg(vcpu, HV_SYS_REG_CNTV_CTL_EL0, &v));
    printf("first reason=%u masked=%d ctl=%llu\n", (unsigned)ex->reason, masked, (unsigned long long)v);
    pthread_create(&t, NULL, cancel_later, NULL); /* masked: only the cancel ends this run */
    CHECK(hv_vcpu_run(vcpu));
    pthread_join(t, NULL);
    printf("masked reason=%u\n", (unsigned)ex->reason);
    CHECK(hv_vcpu_set_vtimer_mask(vcpu, false));
    CHECK(hv_vcpu_run(vcpu));
    printf("unmasked reason=%u\n", (unsigned)ex->reason);
    CHECK(hv_vcpu_set_vtimer_mask(vcpu, false));
    CHECK(hv_vcpu_set_sys_reg(vcpu, HV_SYS_REG_CNTV_CTL_EL0, 3)); /* IMASK: the output stays low */
    pthread_create(&t, NULL, cancel_later, NULL);
    CHECK(hv_vcpu_run(vcpu));
    pthread_join(t, NULL);
    printf("imask reason=%u\n", (unsigned)ex->reason);
    return 0;
}

static hv_return_t other_result;
static void *other_thread(void *arg)
{
    uint64_t v;
    (void)arg;
    other_result = hv_vcpu_get_reg(vcpu, HV_REG_PC, &v);
    return NULL;
}

static int cmd_threads(void)
{
    pthread_t t;
    ((uint32_t *)ram)[0] = 0x14000000u;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    printf("other_thread_get_reg=0x%x\n", (unsigned)other_result);
    CHECK(hv_vcpus_exit(&vcpu, 1)); /* before the run: the run returns at once */
    CHECK(hv_vcpu_run(vcpu));
    printf("pending_cancel reason=%u\n", (unsigned)ex->reason);
    pthread_create(&t, NULL, cancel_later, NULL);
    CHECK(hv_vcpu_run(vcpu));
    pthread_join(t, NULL);
    printf("cancel reason=%u\n", (unsigned)ex->reason);
    return 0;
}

static int cmd_vm(void)
{
    uint32_t max = 0, dflt = 0;
    printf("second_vm=0x%x\n", (unsigned)hv_vm_create(NULL));
    hv_vm_config_get_max_ipa_size(&max);
    hv_vm_config_get_default_ipa_size(&dflt);
    printf("ipa max=%u default=%u\n", max, dflt);
    printf("map_beyond_ipa=0x%x\n", (unsigned)hv_vm_map(ram, 1ull << dflt, 0x1000, HV_MEMORY_READ));
    printf("map_unaligned=0x%x\n", (unsigned)hv_vm_map((char *)ram + 8, 0x80000000ull, 0x1000, HV_MEMORY_READ));
    printf("map_overlap=0x%x\n", (unsigned)hv_vm_map(ram, RAM + 0x1000, 0x1000, HV_MEMORY_READ));
    printf("destroy_with_vcpu=0x%x\n", (unsigned)hv_vm_destroy());
    CHECK(hv_vcpu_destroy(vcpu));
    CHECK(hv_vm_unmap(RAM, RAM_SIZE));
    printf("destroy=0x%x\n", (unsigned)hv_vm_destroy());
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    setup();
    if (!strcmp(argv[1], "insn"))
        return cmd_insn(argc - 2, argv + 2);
    if (!strcmp(argv[1], "watch"))
        return cmd_watch();
    if (!strcmp(argv[1], "vtimer"))
        return cmd_vtimer();
    if (!strcmp(argv[1], "threads"))
        return cmd_threads();
    if (!strcmp(argv[1], "vm"))
        return cmd_vm();
    return 2;
}
