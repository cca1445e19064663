/* cpu_models.c - the table of CPU models (VMM__CPU_MODELS in arm.h) and its lookups. */
#include <string.h>

#include "arm.h"

#define VMM__CPU_MODEL_ENTRY(name, compatible, soft) { name, compatible },
const struct vmm__cpu_model vmm__cpu_models[] = { VMM__CPU_MODELS(VMM__CPU_MODEL_ENTRY) };
#undef VMM__CPU_MODEL_ENTRY
const unsigned vmm__ncpu_models = sizeof vmm__cpu_models / sizeof vmm__cpu_models[0];

int vmm__cpu_model_find(const char *name)
{
    for (unsigned i = 0; name && i < vmm__ncpu_models; i++)
        if (!strcmp(vmm__cpu_models[i].name, name))
            return (int)i;
    return -1;
}

VMM_EXPORT const char *vmm_cpu_model_name(unsigned i)
{
    return i < vmm__ncpu_models ? vmm__cpu_models[i].name : NULL;
}
