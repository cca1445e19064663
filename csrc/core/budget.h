/*
 * budget.h - a cap on a host resource a guest can make a device spend (bytes of memory, file
 * descriptors, ...). Every allocation the guest causes is taken from the budget before it is made and
 * given back when freed, so a hostile guest meets an error answer, never the host's limit. Thread-safe.
 */
#ifndef VMM_BUDGET_H
#define VMM_BUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct vmm_budget {
    atomic_uint_fast64_t used;
    uint64_t max;
};

static inline void vmm__budget_init(struct vmm_budget *b, uint64_t max)
{
    atomic_init(&b->used, 0);
    b->max = max;
}

/* Take n units if they fit under the cap: false (and nothing taken) if not. */
static inline bool vmm__budget_take(struct vmm_budget *b, uint64_t n)
{
    uint_fast64_t cur = atomic_load(&b->used);

    do {
        if (n > b->max || cur > b->max - n)
            return false;
    } while (!atomic_compare_exchange_weak(&b->used, &cur, cur + n));
    return true;
}

static inline void vmm__budget_give(struct vmm_budget *b, uint64_t n)
{
    atomic_fetch_sub(&b->used, n);
}

static inline uint64_t vmm__budget_used(struct vmm_budget *b)
{
    return atomic_load(&b->used);
}

#endif
