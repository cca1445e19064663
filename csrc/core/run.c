/* run.c - the one vCPU loop: runs vCPUs round-robin, dispatches normalized exits, stop and timeout. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "../arm/arm.h"
#include "vm.h"

int vmm__prepare_locked(struct vmm_vm *vm);

struct run_ctx {
    struct vmm_vm *vm;
    struct vmm_run_result res;
    bool done;
};

static void end_run(struct run_ctx *rc, int reason, int status)
{
    if (rc->done)
        return;
    rc->res.reason = reason;
    rc->res.exit_status = status;
    rc->done = true;
}

static void kick_all(struct vmm_vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++)
        vm->ops->kick(&vm->vcpus[i]);
}

/* Timeout watchdog: sleeps on vm->cond until the deadline or the end of the run. */
struct watchdog {
    struct vmm_vm *vm;
    struct timespec deadline;
    bool finished;
    pthread_t thread;
};

static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;
    struct vmm_vm *vm = w->vm;

    pthread_mutex_lock(&vm->lock);
    while (!w->finished) {
        if (pthread_cond_timedwait(&vm->cond, &vm->lock, &w->deadline) == ETIMEDOUT && !w->finished) {
            atomic_store(&vm->timed_out, 1);
            kick_all(vm);
            pthread_cond_broadcast(&vm->cond);
            break;
        }
    }
    pthread_mutex_unlock(&vm->lock);
    return NULL;
}

static bool interrupted(struct vmm_vm *vm)
{
    return atomic_load(&vm->stop_requested) || atomic_load(&vm->timed_out);
}

/*
 * WFI with nothing that can raise an interrupt yet: sleep until a stop or
 * the timeout. The idle guest costs no host CPU.
 */
static void wait_for_wakeup(struct vmm_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    while (!interrupted(vm))
        pthread_cond_wait(&vm->cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
}

/* Returns true if the vCPU is idle (in WFI). */
static bool run_one(struct run_ctx *rc, struct vmm_vcpu *vcpu)
{
    struct vmm_vm *vm = rc->vm;
    const struct vmm_backend_ops *ops = vm->ops;
    struct vmm_exit exit;

    memset(&exit, 0, sizeof exit);
    int r = ops->vcpu_run(vcpu, &exit);
    if (r < 0) {
        end_run(rc, VMM_RUN_HOST_ERROR, 0);
        return false;
    }
dispatch:
    switch (exit.kind) {
    case VMM_EXIT_NONE:
        break;
    case VMM_EXIT_MMIO:
        vmm__bus_access(vm, exit.mmio.gpa, exit.mmio.size, exit.mmio.is_write, &exit.mmio.data);
        if (ops->complete_mmio)
            ops->complete_mmio(vcpu, exit.mmio.data);
        break;
    case VMM_EXIT_HVC: {
        /* the call's own outcome (off, reset, ...) is handled as the exit it is */
        enum vmm_exit_kind kind = vmm__psci_call(vcpu, exit.call.x);
        if (ops->complete_call)
            ops->complete_call(vcpu, exit.call.x);
        exit = (struct vmm_exit){ .kind = kind };
        goto dispatch;
    }
    case VMM_EXIT_WFI:
        vm->stats.wfi_exits++;
        return true;
    case VMM_EXIT_SHUTDOWN:
        end_run(rc, VMM_RUN_POWEROFF, exit.status);
        break;
    case VMM_EXIT_RESET:
        end_run(rc, VMM_RUN_RESET, 0);
        break;
    case VMM_EXIT_CPU_OFF:
        vcpu->on = false;
        break;
    case VMM_EXIT_GUEST_ERROR:
        end_run(rc, VMM_RUN_GUEST_ERROR, 0);
        break;
    case VMM_EXIT_HOST_ERROR:
        end_run(rc, VMM_RUN_HOST_ERROR, 0);
        break;
    }
    return false;
}

static void run_loop(struct run_ctx *rc)
{
    struct vmm_vm *vm = rc->vm;

    while (!rc->done) {
        bool any_on = false, all_idle = true;
        for (unsigned i = 0; i < vm->ncpus && !rc->done; i++) {
            struct vmm_vcpu *vcpu = &vm->vcpus[i];
            if (!vcpu->on)
                continue;
            any_on = true;
            if (!run_one(rc, vcpu))
                all_idle = false;
        }
        if (rc->done)
            break;
        if (atomic_load(&vm->stop_requested)) {
            end_run(rc, VMM_RUN_STOPPED, 0);
        } else if (atomic_load(&vm->timed_out)) {
            end_run(rc, VMM_RUN_TIMEOUT, 0);
        } else if (!any_on) {
            vmm__set_error(vm, VMM_ESTATE, "every vCPU is off");
            end_run(rc, VMM_RUN_GUEST_ERROR, 0);
        } else if (all_idle) {
            wait_for_wakeup(vm);
        }
    }
}

VMM_EXPORT int vmm_run(vmm_vm *vm, uint64_t timeout_ns, struct vmm_run_result *res)
{
    struct run_ctx rc = { .vm = vm };
    struct watchdog wd = { .vm = vm };
    bool have_wd = false;
    int err;

    if (!vm || !res || res->size < sizeof(uint32_t))
        return VMM_EINVAL;
    pthread_mutex_lock(&vm->lock);
    switch (vm->state) {
    case VM_STATE_RUNNING:
        pthread_mutex_unlock(&vm->lock);
        return vmm__set_error(vm, VMM_EBUSY, "the VM is already running");
    case VM_STATE_ENDED:
        pthread_mutex_unlock(&vm->lock);
        vmm__console_set_running(vm->console, false); /* undo vmm_run_pending() */
        return vmm__set_error(vm, VMM_ESTATE, "the VM has ended (powered off, reset or failed); create a new one");
    default:
        break;
    }
    if ((err = vmm__prepare_locked(vm))) {
        pthread_mutex_unlock(&vm->lock);
        vmm__console_set_running(vm->console, false);
        return err;
    }
    vm->state = VM_STATE_RUNNING;
    /* a stop requested before the run is honoured by it; only timeouts are per run */
    atomic_store(&vm->timed_out, 0);
    pthread_mutex_unlock(&vm->lock);
    vmm__console_set_running(vm->console, true);

    if (timeout_ns) {
        clock_gettime(CLOCK_MONOTONIC, &wd.deadline);
        wd.deadline.tv_sec += (time_t)(timeout_ns / 1000000000ULL);
        wd.deadline.tv_nsec += (long)(timeout_ns % 1000000000ULL);
        if (wd.deadline.tv_nsec >= 1000000000L) {
            wd.deadline.tv_sec++;
            wd.deadline.tv_nsec -= 1000000000L;
        }
        have_wd = pthread_create(&wd.thread, NULL, watchdog_main, &wd) == 0;
        if (!have_wd)
            vmm__log(vm, VMM_LOG_WARN, "core", "cannot start the timeout thread; running without a timeout");
    }

    run_loop(&rc);

    if (have_wd) {
        pthread_mutex_lock(&vm->lock);
        wd.finished = true;
        pthread_cond_broadcast(&vm->cond);
        pthread_mutex_unlock(&vm->lock);
        pthread_join(wd.thread, NULL);
    }
    pthread_mutex_lock(&vm->lock);
    if (rc.res.reason == VMM_RUN_STOPPED)
        atomic_store(&vm->stop_requested, 0);
    vm->state = rc.res.reason == VMM_RUN_STOPPED || rc.res.reason == VMM_RUN_TIMEOUT ? VM_STATE_PAUSED : VM_STATE_ENDED;
    pthread_mutex_unlock(&vm->lock);
    vmm__console_set_running(vm->console, false);

    rc.res.pc = vm->ops->get_pc(&vm->vcpus[0]);
    uint32_t sz = res->size < sizeof rc.res ? res->size : (uint32_t)sizeof rc.res;
    rc.res.size = sz;
    memcpy(res, &rc.res, sz);
    return 0;
}

VMM_EXPORT int vmm_run_pending(vmm_vm *vm)
{
    if (!vm)
        return VMM_EINVAL;
    vmm__console_set_running(vm->console, true);
    return 0;
}

VMM_EXPORT int vmm_request_stop(vmm_vm *vm)
{
    if (!vm)
        return VMM_EINVAL;
    pthread_mutex_lock(&vm->lock);
    atomic_store(&vm->stop_requested, 1);
    kick_all(vm);
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}
