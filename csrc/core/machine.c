/*
 * machine.c - the public vmm_add_*() calls: each adds its device (the device's own entry point) and
 * records the call, so that a snapshot can describe the board and a restore can rebuild it (machine.h).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "machine.h"
#include "snapshot.h"
#include "vm.h"

void vmm__machine_free(struct vmm_machine *m)
{
    for (unsigned i = 0; i < m->n; i++) {
        free(m->dev[i].path);
        free(m->dev[i].tag);
    }
    m->n = 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The absolute form of a host path (so a restore from another directory finds it), else as given. */
static char *abs_path(const char *path)
{
    char buf[PATH_MAX];
    return realpath(path, buf) ? strdup(buf) : strdup(path);
}

/* Append a successful call to vm's record; a record that cannot grow marks the VM unsnapshottable. */
static void record(struct vmm_vm *vm, struct vmm_machine_dev d, const char *path, const char *tag)
{
    struct vmm_machine *m = &vm->machine;

    d.path = path ? abs_path(path) : NULL;
    d.tag = dup_or_null(tag);
    if (m->n >= VMM_BOARD_MAX_DEVICES || (path && !d.path) || (tag && !d.tag)) {
        free(d.path);
        free(d.tag);
        m->incomplete = true;
        return;
    }
    m->dev[m->n++] = d;
}

VMM_EXPORT int vmm_add_gpu(vmm_vm *vm, const struct vmm_gpu_config *cfg)
{
    int rc = vmm__dev_add_gpu(vm, cfg);
    if (!rc) {
        struct vmm_machine_dev d = { .kind = VMM_MK_GPU };
        if (cfg && cfg->size >= offsetof(struct vmm_gpu_config, max_mem) + sizeof cfg->max_mem) {
            d.width = cfg->width;
            d.height = cfg->height;
            d.max_mem = cfg->max_mem;
        } else if (cfg && cfg->size >= offsetof(struct vmm_gpu_config, height) + sizeof cfg->height) {
            d.width = cfg->width;
            d.height = cfg->height;
        }
        record(vm, d, NULL, NULL);
    }
    return rc;
}

static int add_simple(vmm_vm *vm, int (*add)(struct vmm_vm *), uint32_t kind)
{
    int rc = add(vm);
    if (!rc)
        record(vm, (struct vmm_machine_dev){ .kind = kind }, NULL, NULL);
    return rc;
}

VMM_EXPORT int vmm_add_input(vmm_vm *vm)
{
    return add_simple(vm, vmm__dev_add_input, VMM_MK_INPUT);
}

VMM_EXPORT int vmm_add_rng(vmm_vm *vm)
{
    return add_simple(vm, vmm__dev_add_rng, VMM_MK_RNG);
}

VMM_EXPORT int vmm_add_test_device(vmm_vm *vm)
{
    return add_simple(vm, vmm__dev_add_test_device, VMM_MK_TEST);
}

VMM_EXPORT int vmm_add_virtio_console(vmm_vm *vm)
{
    return add_simple(vm, vmm__dev_add_virtio_console, VMM_MK_VCONSOLE);
}

/* Not recorded: a VM with a NIC cannot be snapshotted (its save hook says why). */
VMM_EXPORT int vmm_add_net(vmm_vm *vm, const struct vmm_net_config *cfg)
{
    return vmm__dev_add_net(vm, cfg);
}

VMM_EXPORT int vmm_add_disk(vmm_vm *vm, const char *path, int readonly)
{
    int rc = vmm__dev_add_disk(vm, path, readonly);
    if (!rc)
        record(vm, (struct vmm_machine_dev){ .kind = VMM_MK_DISK, .readonly = readonly != 0 }, path, NULL);
    return rc;
}

VMM_EXPORT int vmm_add_share(vmm_vm *vm, const char *host_dir, const char *tag, int readonly)
{
    int rc = vmm__dev_add_share(vm, host_dir, tag, readonly);
    if (!rc)
        record(vm, (struct vmm_machine_dev){ .kind = VMM_MK_SHARE, .readonly = readonly != 0 }, host_dir, tag);
    return rc;
}

/* ---- the "machine" section ---- */

static void sync_dev(struct vmm_snap *s, struct vmm_machine_dev *d)
{
    char path[VMM_MACHINE_PATH_MAX] = "", tag[VMM_MACHINE_TAG_MAX] = "";
    bool has_path = d->path != NULL, has_tag = d->tag != NULL;

    vmm__snap_u32(s, &d->kind);
    vmm__snap_u32(s, &d->readonly);
    vmm__snap_u32(s, &d->width);
    vmm__snap_u32(s, &d->height);
    vmm__snap_u64(s, &d->max_mem);
    vmm__snap_bool(s, &has_path);
    vmm__snap_bool(s, &has_tag);
    if (!vmm__snap_loading(s)) {
        if (has_path)
            snprintf(path, sizeof path, "%s", d->path);
        if (has_tag)
            snprintf(tag, sizeof tag, "%s", d->tag);
    }
    if (has_path)
        vmm__snap_str(s, path, sizeof path);
    if (has_tag)
        vmm__snap_str(s, tag, sizeof tag);
    if (!vmm__snap_loading(s) || vmm__snap_error(s))
        return;
    if (d->kind < VMM_MK_GPU || d->kind > VMM_MK_LAST || d->readonly > 1) {
        vmm__snap_fail(s, "device kind %u (readonly %u) is unknown", d->kind, d->readonly);
        return;
    }
    if ((d->kind == VMM_MK_DISK || d->kind == VMM_MK_SHARE) != has_path || (d->kind == VMM_MK_SHARE) != has_tag) {
        vmm__snap_fail(s, "a device's paths do not match its kind %u", d->kind);
        return;
    }
    d->path = has_path ? strdup(path) : NULL;
    d->tag = has_tag ? strdup(tag) : NULL;
    if ((has_path && !d->path) || (has_tag && !d->tag))
        vmm__snap_fail_code(s, VMM_ENOMEM, "out of memory");
}

static void sync_machine(struct vmm_snap *s, struct vmm_machine_cfg *c, struct vmm_machine *m)
{
    vmm__snap_u64(s, &c->ram_size);
    vmm__snap_u32(s, &c->ncpus);
    vmm__snap_u32(s, &c->deterministic);
    vmm__snap_u32(s, &c->its);
    vmm__snap_str(s, c->cpu_model, sizeof c->cpu_model);
    vmm__snap_str(s, c->backend, sizeof c->backend);
    if (!vmm__snap_loading(s) || s->sec_version >= 2)
        vmm__snap_u32(s, &c->transport);
    vmm__snap_unsigned(s, &m->n);
    if (vmm__snap_loading(s) && m->n > VMM_BOARD_MAX_DEVICES) {
        vmm__snap_fail(s, "%u devices (at most %d)", m->n, VMM_BOARD_MAX_DEVICES);
        m->n = 0;
    }
    unsigned n = m->n;
    if (vmm__snap_loading(s))
        m->n = 0; /* counts the entries loaded, so a failure frees exactly those */
    for (unsigned i = 0; i < n && !vmm__snap_error(s); i++) {
        struct vmm_machine_dev *d = &m->dev[i];
        if (vmm__snap_loading(s))
            *d = (struct vmm_machine_dev){ 0 };
        sync_dev(s, d);
        if (vmm__snap_loading(s) && !vmm__snap_error(s))
            m->n = i + 1;
    }
}

int vmm__machine_save(struct vmm_vm *vm, struct vmm_snap *s)
{
    struct vmm_machine_cfg c = { .ram_size = vm->ram_size,
                                 .ncpus = vm->ncpus,
                                 .deterministic = vm->deterministic,
                                 .transport = vm->transport,
                                 .its = vm->its };
    uint32_t version = 2; /* 2: the transport and vmm_config.its */

    snprintf(c.cpu_model, sizeof c.cpu_model, "%s", vm->cpu_model);
    snprintf(c.backend, sizeof c.backend, "%s", vm->ops->name);
    if (vmm__snap_begin(s, "machine", &version))
        return vmm__snap_error(s);
    sync_machine(s, &c, &vm->machine);
    return vmm__snap_end(s);
}

int vmm__machine_load(struct vmm_snap *s, struct vmm_machine_cfg *c, struct vmm_machine *m)
{
    uint32_t version = 2;

    *c = (struct vmm_machine_cfg){ 0 };
    *m = (struct vmm_machine){ 0 };
    if (vmm__snap_begin(s, "machine", &version))
        return vmm__snap_error(s);
    sync_machine(s, c, m);
    if (!vmm__snap_error(s) && (c->deterministic > 1 || c->its > 1 || !c->ncpus || c->ncpus > VMM_MAX_CPUS))
        vmm__snap_fail(s, "%u vCPUs (deterministic %u, its %u)", c->ncpus, c->deterministic, c->its);
    if (!vmm__snap_error(s) && c->transport > VMM_TRANSPORT_PCI)
        vmm__snap_fail(s, "unknown virtio transport %u", c->transport);
    vmm__snap_end(s);
    if (vmm__snap_error(s))
        vmm__machine_free(m);
    return vmm__snap_error(s);
}

int vmm__machine_replay(struct vmm_vm *vm, const struct vmm_machine *m)
{
    for (unsigned i = 0; i < m->n; i++) {
        const struct vmm_machine_dev *d = &m->dev[i];
        struct vmm_gpu_config g = { .size = sizeof g, .width = d->width, .height = d->height, .max_mem = d->max_mem };
        int rc = 0;
        switch (d->kind) {
        case VMM_MK_GPU:
            rc = vmm_add_gpu(vm, &g);
            break;
        case VMM_MK_INPUT:
            rc = vmm_add_input(vm);
            break;
        case VMM_MK_DISK:
            rc = vmm_add_disk(vm, d->path, (int)d->readonly);
            break;
        case VMM_MK_SHARE:
            rc = vmm_add_share(vm, d->path, d->tag, (int)d->readonly);
            break;
        case VMM_MK_RNG:
            rc = vmm_add_rng(vm);
            break;
        case VMM_MK_TEST:
            rc = vmm_add_test_device(vm);
            break;
        case VMM_MK_VCONSOLE:
            rc = vmm_add_virtio_console(vm);
            break;
        }
        if (rc)
            return rc; /* the device said why (vmm_last_error) */
    }
    return 0;
}
