/* backends.c - the backend registry: the one place that knows which backends this build has. */
#include <stdio.h>
#include <string.h>

#include "../core/vm.h"

static const struct vmm_backend_ops *const backends[] = {
/* preferred first: hardware backends ahead of soft */
#if VMM_HAVE_KVM
    &vmm__kvm_backend,
#endif
#if VMM_HAVE_HVF
    &vmm__hvf_backend, /* by name only over the Linux simulator (VMM_HVF_BY_NAME_ONLY) */
#endif
#if VMM_HAVE_SOFT
    &vmm__soft_backend, &vmm__soft_threaded_backend, /* a test vehicle: by name only */
#endif
};

#define NBACKENDS (sizeof backends / sizeof backends[0])

static const char *const known_unbuilt[] = {
#if !VMM_HAVE_KVM
    "kvm",
#endif
#if !VMM_HAVE_SOFT
    "soft",
    "soft-threaded",
#endif
#if !VMM_HAVE_HVF
    "hvf",
#endif
};

const struct vmm_backend_ops *vmm__backend_find(const char *name, char *why, size_t len)
{
    bool any = !name || !*name || !strcmp(name, "auto");
    char reason[256] = "";

    for (size_t i = 0; i < NBACKENDS; i++) {
        const struct vmm_backend_ops *b = backends[i];
        if (any ? b->not_auto : strcmp(name, b->name) != 0)
            continue;
        if (b->probe(reason, sizeof reason) == 0)
            return b;
        if (!any) {
            snprintf(why, len, "backend '%s' is not available: %s", name, reason);
            return NULL;
        }
    }
    if (any) {
        snprintf(why, len, "no backend is available on this host (%s)", reason);
        return NULL;
    }
    for (size_t i = 0; i < sizeof known_unbuilt / sizeof known_unbuilt[0]; i++) {
        if (!strcmp(name, known_unbuilt[i])) {
            snprintf(why, len, "backend '%s' is not built into this library (%s)", name,
                     !strcmp(name, "kvm")        ? "it needs a Linux arm64 host"
                     : !strncmp(name, "soft", 4) ? "it was built without Unicorn"
                                                 : "it needs a macOS arm64 host");
            return NULL;
        }
    }
    snprintf(why, len, "unknown backend '%s' (choose soft, kvm, hvf or auto)", name);
    return NULL;
}
