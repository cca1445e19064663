/* vm.c - VM lifecycle: create/destroy, error names, boot layout (prepare), DTB and stats queries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console.h"
#include "../arm/arm.h"
#include "../host/host.h"
#include "board.h"
#include "fdt.h"
#include "layout.h"
#include "iothread.h"
#include "debug.h"
#include "vm.h"

#define ALIGN_UP(x, a) (((x) + (a)-1) & ~((uint64_t)(a)-1))
#define BOOT_ALIGN (2ULL << 20)

VMM_EXPORT const char *vmm_strerror(int err)
{
    switch (err) {
    case VMM_OK:
        return "success";
#define VMM__ERR_TEXT(name, code, text) \
    case VMM_E##name:                   \
        return text;
        VMM_ERRNO_MAP(VMM__ERR_TEXT)
#undef VMM__ERR_TEXT
    }
    return "unknown error";
}

VMM_EXPORT const char *vmm_err_name(int err)
{
    switch (err) {
    case VMM_OK:
        return "VMM_OK";
#define VMM__ERR_NAME(name, code, text) \
    case VMM_E##name:                   \
        return "VMM_E" #name;
        VMM_ERRNO_MAP(VMM__ERR_NAME)
#undef VMM__ERR_NAME
    }
    return "VMM_E?";
}

static int config_error(char *errbuf, size_t errlen, int code, const char *msg)
{
    if (errbuf && errlen)
        snprintf(errbuf, errlen, "%s", msg);
    return code;
}

/*
 * vmm_config.vcpu_threads: a thread per vCPU or one for all. A backend without vCPU threads (soft)
 * may have a threaded variant: by default a real-time VM of more than one vCPU runs on it (each vCPU
 * on a host thread of its own, as QEMU's MTTCG), which is what makes SMP guests fast.
 */
static int pick_threads(const struct vmm_backend_ops **ops, const struct vmm_config *c, bool deterministic, char *msg,
                        size_t len)
{
    const struct vmm_backend_ops *b = *ops;
    const struct vmm_backend_ops *t = b->threaded_variant && !deterministic ? b->threaded_variant() : NULL;

    switch (c->vcpu_threads) {
    case VMM_VCPU_THREADS_AUTO:
        if (t && c->ncpus > 1)
            *ops = t;
        return 0;
    case VMM_VCPU_THREADS_ONE:
        if (vmm__has_cap(b, VMM_CAP_VCPU_THREADS)) {
            snprintf(msg, len, "vcpu_threads=one: the %s backend runs a thread per vCPU", b->name);
            return VMM_EINVAL;
        }
        return 0;
    case VMM_VCPU_THREADS_PER_VCPU:
        if (vmm__has_cap(b, VMM_CAP_VCPU_THREADS))
            return 0;
        if (!t) {
            snprintf(msg, len, "vcpu_threads=per-vcpu: the %s backend cannot here (%s)", b->name,
                     deterministic ? "deterministic mode runs every vCPU on one thread"
                                   : "its engine cannot run vCPUs in parallel; for soft, build the patched Unicorn: "
                                     "make unicorn");
            return VMM_EINVAL;
        }
        *ops = t;
        return 0;
    default:
        snprintf(msg, len, "unknown vcpu_threads %u (0: auto, 1: one thread, 2: a thread per vCPU)", c->vcpu_threads);
        return VMM_EINVAL;
    }
}

/* struct vmm_vm with its vCPUs (the flexible array at its end), as vmm_create allocates it */
static size_t vm_size(unsigned ncpus)
{
    return sizeof(struct vmm_vm) + ncpus * sizeof(struct vmm_vcpu);
}

VMM_EXPORT int vmm_create(const struct vmm_config *cfg, vmm_vm **out, char *errbuf, size_t errlen)
{
    struct vmm_config c = { 0 };
    struct vmm_vm *vm;
    char msg[VMM_ERRMSG_LEN];
    int rc;

    if (!out)
        return VMM_EINVAL;
    *out = NULL;
    if (!cfg || cfg->size < offsetof(struct vmm_config, ram_size) || cfg->size > 4096)
        return config_error(errbuf, errlen, VMM_EINVAL, "struct vmm_config: set .size = sizeof(struct vmm_config)");
    memcpy(&c, cfg, cfg->size < sizeof c ? cfg->size : sizeof c);
    if (!c.ncpus)
        c.ncpus = 1;
    if (!c.ram_size)
        c.ram_size = LAYOUT_RAM_DEFAULT;
    if (!c.cpu_model)
        c.cpu_model = vmm__cpu_models[0].name;
    if (c.ncpus > VMM_MAX_CPUS) {
        snprintf(msg, sizeof msg, "%u vCPUs requested, at most %d are supported", c.ncpus, VMM_MAX_CPUS);
        return config_error(errbuf, errlen, VMM_EINVAL, msg);
    }
    if (c.ram_size < (2ULL << 20) || c.ram_size % (2ULL << 20) || c.ram_size > LAYOUT_RAM_MAX) {
        snprintf(msg, sizeof msg, "RAM size %llu bytes: must be a multiple of 2 MiB between 2 MiB and %llu GiB",
                 (unsigned long long)c.ram_size, LAYOUT_RAM_MAX >> 30);
        return config_error(errbuf, errlen, VMM_EINVAL, msg);
    }
    if (vmm__cpu_model_find(c.cpu_model) < 0) {
        int n = snprintf(msg, sizeof msg, "unknown CPU model '%.64s' (", c.cpu_model);
        for (unsigned i = 0; i < vmm__ncpu_models; i++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, "%s%s", i ? ", " : "", vmm__cpu_models[i].name);
        snprintf(msg + n, sizeof msg - (size_t)n, ")");
        return config_error(errbuf, errlen, VMM_EINVAL, msg);
    }
    bool deterministic = c.size >= offsetof(struct vmm_config, deterministic) + sizeof(uint32_t) && c.deterministic;
    uint32_t transport = c.size >= offsetof(struct vmm_config, transport) + sizeof(uint32_t) ? c.transport : 0;
    if (transport > VMM_TRANSPORT_PCI) {
        snprintf(msg, sizeof msg, "unknown virtio transport %u (0: virtio-mmio, 1: PCI)", transport);
        return config_error(errbuf, errlen, VMM_EINVAL, msg);
    }
    bool any_backend = !c.backend || !*c.backend || !strcmp(c.backend, "auto");
    /* deterministic mode counts instructions: only the soft backend can */
    const struct vmm_backend_ops *ops =
        vmm__backend_find(deterministic && any_backend ? "soft" : c.backend, msg, sizeof msg);
    if (!ops)
        return config_error(errbuf, errlen, VMM_ENOBACKEND, msg);
    if (deterministic && vmm__has_cap(ops, VMM_CAP_VCPU_THREADS)) {
        snprintf(msg, sizeof msg, "deterministic mode needs the soft backend (%s runs vCPUs in real time)", ops->name);
        return config_error(errbuf, errlen, VMM_EINVAL, msg);
    }
    if ((rc = pick_threads(&ops, &c, deterministic, msg, sizeof msg)))
        return config_error(errbuf, errlen, rc, msg);

    if (!(vm = calloc(1, vm_size(c.ncpus))))
        return config_error(errbuf, errlen, VMM_ENOMEM, "out of memory");
    vm->ram_size = c.ram_size;
    vm->ncpus = c.ncpus;
    snprintf(vm->cpu_model, sizeof vm->cpu_model, "%s", c.cpu_model);
    vm->log_fn = c.log_fn;
    vm->log_opaque = c.log_opaque;
    vm->log_level =
        c.size >= offsetof(struct vmm_config, log_level) + sizeof(int) && c.log_level ? c.log_level : VMM_LOG_INFO;
    vm->ops = ops;
    vm->count_atomic = vmm__has_cap(ops, VMM_CAP_VCPU_THREADS);
    vm->deterministic = deterministic;
    vm->transport = transport;
    /* virtio-pci's MSI-X goes through the ITS: PCI implies it */
    vm->its =
        (c.size >= offsetof(struct vmm_config, its) + sizeof(uint32_t) && c.its) || transport == VMM_TRANSPORT_PCI;
    vm->clock_base_ns = vmm__now_ns();
    atomic_init(&vm->next_deadline_ns, UINT64_MAX);
    atomic_init(&vm->stop_at_ns, UINT64_MAX);
    pthread_mutex_init(&vm->lock, NULL);
    pthread_mutex_init(&vm->gerr_lock, NULL);
    vmm__host_cond_init(&vm->cond);
    for (unsigned i = 0; i < vm->ncpus; i++) {
        vm->vcpus[i] = (struct vmm_vcpu){ .vm = vm, .id = i, .mpidr = i, .insn_limit = UINT64_MAX };
        atomic_init(&vm->vcpus[i].deadline_ns, UINT64_MAX);
        vmm__host_cond_init(&vm->vcpus[i].wake);
    }

    /* RAM is reserved lazily: untouched pages cost nothing */
    vm->ram = vmm__host_ram_alloc(vm->ram_size);
    if (!vm->ram) {
        rc = vmm__set_error(vm, VMM_ENOMEM, "cannot reserve %llu MiB of guest RAM",
                            (unsigned long long)(vm->ram_size >> 20));
        goto fail;
    }
    if ((rc = vmm__console_create(&vm->console, vm))) {
        vmm__set_error(vm, rc, "out of memory for the console");
        goto fail;
    }
    vmm__console_set_deterministic(vm->console, vm->deterministic);
    if ((rc = vmm__board_init(vm)))
        goto fail;
    if ((rc = ops->vm_init(vm)))
        goto fail;
    if (!vm->irqchip) {
        ops->vm_fini(vm);
        rc = vmm__set_error(vm, VMM_EBACKEND, "the %s backend brought no interrupt controller", ops->name);
        goto fail;
    }
    for (unsigned i = 0; i < vm->ncpus; i++) {
        if ((rc = ops->vcpu_init(&vm->vcpus[i]))) {
            while (i-- > 0)
                ops->vcpu_fini(&vm->vcpus[i]);
            ops->vm_fini(vm);
            goto fail;
        }
    }
    *out = vm;
    return 0;
fail:
    config_error(errbuf, errlen, rc, vm->errmsg);
    vm->ops = NULL; /* backend parts are already torn down */
    vmm_destroy(vm);
    return rc;
}

VMM_EXPORT void vmm_destroy(vmm_vm *vm)
{
    if (!vm)
        return;
    vmm__gdb_destroy(vm);                /* its thread first: it may be reading the vCPUs */
    vmm__board_quiesce(vm);              /* back-ends detach: no other VM or host thread calls in */
    vmm__iothread_destroy(vm->iothread); /* then: it delivers into devices and raises their interrupts */
    vm->iothread = NULL;
    if (vm->ops) {
        for (unsigned i = 0; i < vm->ncpus; i++)
            vm->ops->vcpu_fini(&vm->vcpus[i]);
        vm->ops->vm_fini(vm); /* destroys an irqchip the backend brought */
    }
    vmm__board_destroy(vm);
    vmm__machine_free(&vm->machine);
    vmm__console_destroy(vm->console);
    vmm__host_ram_free(vm->ram, vm->ram_size);
    free(vm->initrd);
    free(vm->cmdline);
    free(vm->dtb);
    pthread_mutex_destroy(&vm->lock);
    pthread_mutex_destroy(&vm->gerr_lock);
    pthread_cond_destroy(&vm->cond);
    for (unsigned i = 0; i < vm->ncpus; i++)
        pthread_cond_destroy(&vm->vcpus[i].wake);
    free(vm);
}

int vmm__check_idle(struct vmm_vm *vm, const char *what)
{
    pthread_mutex_lock(&vm->lock);
    bool running = vm->state == VM_STATE_RUNNING, debugger = vm->dbg_busy;
    pthread_mutex_unlock(&vm->lock);
    if (debugger)
        return vmm__set_error(vm, VMM_EBUSY, "%s while the debugger accesses the VM", what);
    return running ? vmm__set_error(vm, VMM_EBUSY, "%s while the VM runs", what) : 0;
}

VMM_EXPORT const char *vmm_last_error(const vmm_vm *vm)
{
    return vm ? vm->errmsg : "no VM";
}

VMM_EXPORT int vmm_is_deterministic(const vmm_vm *vm)
{
    return vm && vm->deterministic;
}

VMM_EXPORT const char *vmm_backend_name(const vmm_vm *vm)
{
    return vm && vm->ops ? vm->ops->name : "";
}

/* Place initrd and DTB above the kernel, build the DTB, reset the boot vCPU. */
static int prepare_locked(struct vmm_vm *vm)
{
    uint64_t ram_end = LAYOUT_RAM_BASE + vm->ram_size;
    uint64_t at;
    int rc;

    if (!vm->kernel.present)
        return vmm__set_error(vm, VMM_ESTATE, "no kernel loaded");
    vm->boot = (struct vmm_boot_info){ .size = sizeof vm->boot,
                                       .entry = vm->kernel.entry,
                                       .kernel_start = vm->kernel.start,
                                       .kernel_end = vm->kernel.end,
                                       .ram_base = LAYOUT_RAM_BASE,
                                       .ram_size = vm->ram_size };
    at = ALIGN_UP(vm->kernel.end, BOOT_ALIGN);
    if (vm->initrd) {
        if (at > ram_end || vm->initrd_len > ram_end - at)
            return vmm__set_error(vm, VMM_ERANGE,
                                  "kernel (%llu MiB) and initrd (%zu KiB) do not fit in %llu MiB of guest RAM",
                                  (unsigned long long)((vm->kernel.end - LAYOUT_RAM_BASE) >> 20), vm->initrd_len >> 10,
                                  (unsigned long long)(vm->ram_size >> 20));
        memcpy(vmm__gpa_ptr(vm, at, vm->initrd_len), vm->initrd, vm->initrd_len);
        vm->boot.initrd_start = at;
        vm->boot.initrd_end = at + vm->initrd_len;
        at = ALIGN_UP(vm->boot.initrd_end, BOOT_ALIGN);
    }
    free(vm->dtb);
    vm->dtb = NULL;
    if ((rc = vmm__fdt_build(vm, &vm->dtb, &vm->dtb_len)))
        return rc;
    /* the kernel may sit high in RAM (an ELF linked anywhere): fall back below it */
    if (at > ram_end || vm->dtb_len > ram_end - at) {
        if (vm->kernel.start - LAYOUT_RAM_BASE >= ALIGN_UP(vm->dtb_len, 8) + BOOT_ALIGN && !vm->initrd)
            at = LAYOUT_RAM_BASE;
        else
            return vmm__set_error(vm, VMM_ERANGE, "no room for the device tree above the kernel in %llu MiB of RAM",
                                  (unsigned long long)(vm->ram_size >> 20));
    }
    memcpy(vmm__gpa_ptr(vm, at, vm->dtb_len), vm->dtb, vm->dtb_len);
    vm->boot.dtb_addr = at;
    vm->boot.dtb_size = vm->dtb_len;

    for (unsigned i = 0; i < vm->ncpus; i++)
        vm->vcpus[i].on = i == 0;
    if ((rc = vm->ops->vcpu_reset(&vm->vcpus[0], vm->boot.entry, vm->boot.dtb_addr)))
        return rc;
    vm->state = VM_STATE_PREPARED;
    return 0;
}

int vmm__prepare_locked(struct vmm_vm *vm)
{
    return vm->state == VM_STATE_NEW ? prepare_locked(vm) : 0;
}

VMM_EXPORT int vmm_prepare(vmm_vm *vm)
{
    int rc;

    if (!vm)
        return VMM_EINVAL;
    pthread_mutex_lock(&vm->lock);
    rc = vmm__prepare_locked(vm);
    pthread_mutex_unlock(&vm->lock);
    return rc;
}

VMM_EXPORT int vmm_boot_info(vmm_vm *vm, struct vmm_boot_info *info)
{
    int rc;

    if (!vm || !info || info->size < sizeof(uint32_t))
        return VMM_EINVAL;
    if ((rc = vmm_prepare(vm)))
        return rc;
    uint32_t sz = info->size < sizeof vm->boot ? info->size : (uint32_t)sizeof vm->boot;
    memcpy(info, &vm->boot, sz);
    info->size = sz;
    return 0;
}

VMM_EXPORT int vmm_get_dtb(vmm_vm *vm, void *buf, size_t len, size_t *len_out)
{
    int rc;

    if (!vm || (!buf && len))
        return VMM_EINVAL;
    if ((rc = vmm_prepare(vm)))
        return rc;
    if (len_out)
        *len_out = vm->dtb_len;
    if (len < vm->dtb_len)
        return len ? vmm__set_error(vm, VMM_ERANGE, "buffer too small for the DTB (%zu bytes)", vm->dtb_len) : 0;
    memcpy(buf, vm->dtb, vm->dtb_len);
    return 0;
}

_Static_assert(sizeof(struct vmm_stats) == offsetof(struct vmm_stats, mmio_exits) + 21 * sizeof(uint64_t),
               "vmm_stats: uint64_t counters after `size` (vmm_get_stats reads them one by one)");

VMM_EXPORT int vmm_get_stats(vmm_vm *vm, struct vmm_stats *st)
{
    if (!vm || !st || st->size < sizeof(uint32_t))
        return VMM_EINVAL;
    struct vmm_stats s = { 0 };
    /* the counters are written by the run's threads as this reads them: each is read whole (vmm__count) */
    for (size_t off = offsetof(struct vmm_stats, mmio_exits); off + sizeof(uint64_t) <= sizeof s;
         off += sizeof(uint64_t))
        *(uint64_t *)((char *)&s + off) = __atomic_load_n((uint64_t *)((char *)&vm->stats + off), __ATOMIC_RELAXED);
    s.size = st->size < sizeof s ? st->size : (uint32_t)sizeof s;
    s.host_mem_bytes = vm_size(vm->ncpus) + vm->dtb_len + vm->initrd_len + vmm__board_host_mem(vm);
    s.insns = 0;
    for (unsigned i = 0; i < vm->ncpus; i++) {
        if (vm->ops->mem_overhead)
            s.host_mem_bytes += vm->ops->mem_overhead(&vm->vcpus[i]);
        s.insns += __atomic_load_n(&vm->vcpus[i].insns, __ATOMIC_RELAXED);
    }
    s.clock_ns = vmm__clock_ns(vm, NULL);
    s.host_mem_bytes += vmm__console_host_mem(vm->console);
    s.serial_dropped = vmm__console_dropped(vm->console);
    memcpy(st, &s, s.size);
    return 0;
}
