/*
 * soft_engine.c - what the Unicorn in this process can do beyond 2.1.4: the
 * functions of our patch (third_party/unicorn/), found at run time.
 *
 * libvmm is built against the unicorn wheel's headers and links libunicorn by
 * soname; vmmpy._ffi loads either the wheel's library or our patched build
 * (build/unicorn/) before the extension. The patch adds uc_vmmpy_*: a kick
 * that is safe from any thread, an instruction count kept by the engine at
 * block entry, and MRS/MSR hooks that complete an instruction QEMU lacks
 * without a PC write. With those the soft backend needs no block hook in real
 * time on one vCPU (about a quarter of a Linux boot). Looked up by name in the
 * process's global symbols (dlopen(NULL)), so the same libvmm runs on both.
 * The patch also drops Unicorn's exit-check call after every guest load and
 * store and makes the one at each block start inline (about a fifth of a
 * 1-vCPU boot's CPU time); libvmm needs no call for that, and what it stops
 * inside an access (a debugger's write watchpoint, an access above RAM)
 * stops where it did (third_party/unicorn/README.md).
 */
#include <dlfcn.h>
#include <pthread.h>

#include "soft.h"

/* the patch's feature bits (its unicorn.h: UC_VMMPY_*) */
#define UC_VMMPY_KICK 1u
#define UC_VMMPY_INSNS 2u
#define UC_VMMPY_SYS_CONTINUE 4u
#define UC_VMMPY_ALL (UC_VMMPY_KICK | UC_VMMPY_INSNS | UC_VMMPY_SYS_CONTINUE)
#define UC_VMMPY_SYS_RESULT 8u /* a later addition: looked up on its own */
#define UC_VMMPY_CALL 16u      /* so are these two */
#define UC_VMMPY_COUNTER 32u
#define UC_VMMPY_VIRQ 64u

static struct soft_engine engine;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

static void engine_lookup(void)
{
    void *self = dlopen(NULL, RTLD_LAZY);
    uint32_t (*features)(void);

    if (!self)
        return;
    *(void **)&features = dlsym(self, "uc_vmmpy_features");
    *(void **)&engine.kick = dlsym(self, "uc_vmmpy_kick");
    *(void **)&engine.insns = dlsym(self, "uc_vmmpy_insns");
    *(void **)&engine.sys_continue = dlsym(self, "uc_vmmpy_sys_continue");
    /* all or nothing: a partial set is some other build, run it as the wheel */
    engine.patched =
        features && engine.kick && engine.insns && engine.sys_continue && (features() & UC_VMMPY_ALL) == UC_VMMPY_ALL;
    /* the parallel patch (third_party/unicorn/parallel.patch): on top of the others */
    *(void **)&engine.parallel = dlsym(self, "uc_vmmpy_parallel");
    if (engine.patched && (features() & UC_VMMPY_SYS_RESULT)) {
        *(void **)&engine.sys_result = dlsym(self, "uc_vmmpy_sys_result");
        *(void **)&engine.sys_el = dlsym(self, "uc_vmmpy_sys_el");
        if (!engine.sys_result || !engine.sys_el)
            engine.sys_result = NULL, engine.sys_el = NULL;
    }
    if (engine.patched && (features() & UC_VMMPY_CALL))
        *(void **)&engine.call_hook = dlsym(self, "uc_vmmpy_call_hook");
    if (engine.patched && (features() & UC_VMMPY_COUNTER))
        *(void **)&engine.counter = dlsym(self, "uc_vmmpy_counter");
    if (engine.patched && (features() & UC_VMMPY_VIRQ))
        *(void **)&engine.virq = dlsym(self, "uc_vmmpy_virq");
    if (engine.patched) /* its own patch file (no feature bit): the symbol says it is there */
        *(void **)&engine.sys_filter = dlsym(self, "uc_vmmpy_sys_filter");
    if (!engine.patched)
        engine.kick = NULL, engine.insns = NULL, engine.sys_continue = NULL, engine.parallel = NULL;
    dlclose(self);
}

const struct soft_engine *vmm__soft_engine(void)
{
    pthread_once(&engine_once, engine_lookup);
    return &engine;
}

/*
 * The fast engine's count into vcpu->insns: after a run, and for a PMU counter read during one.
 * Returns how many it added (0 on the wheel's engine).
 */
uint64_t vmm__soft_sync_insns(struct soft_vcpu *sv)
{
    uint64_t n = sv->engine_insns;

    if (!sv->fast)
        return 0;
    sv->fast->insns(sv->uc, &sv->engine_insns);
    vmm__add_own(&sv->vcpu->insns, sv->engine_insns - n); /* vmm_get_stats reads it from another thread */
    return sv->engine_insns - n;
}

/* End this run at the next block's start: from a memory or system-register hook, where uc_emu_stop is unsafe. */
void vmm__soft_end_at_block(struct soft_vcpu *sv)
{
    sv->yield_req = true; /* the block hook's check */
    if (sv->fast)
        sv->fast->kick(sv->uc); /* the engine's, with no block hook */
}
