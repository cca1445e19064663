/*
 * timeq.h - a queue of fixed-size items ordered by virtual time, stable for
 * equal times: input scheduled in deterministic mode (serial bytes,
 * keyboard and tablet events) waits here until the run loop's clock
 * reaches it. Not thread-safe: its owner's lock guards it.
 */
#ifndef VMM_TIMEQ_H
#define VMM_TIMEQ_H

#include <stddef.h>
#include <stdint.h>

struct vmm_timeq {
    uint64_t *at;   /* due times, ascending */
    uint8_t *items; /* n items of item_size bytes, in the same order */
    size_t item_size;
    size_t n, cap;
    size_t max; /* at most this many items queued */
};

void vmm__timeq_init(struct vmm_timeq *q, size_t item_size, size_t max);
void vmm__timeq_free(struct vmm_timeq *q);
/* Queue `count` items due at at_ns, after every item already due then. VMM_ENOMEM beyond max. */
int vmm__timeq_add(struct vmm_timeq *q, uint64_t at_ns, const void *items, size_t count);
/* Item i (0: the earliest) and its due time; i < q->n. */
void *vmm__timeq_item(struct vmm_timeq *q, size_t i);
/* Remove the first n items. */
void vmm__timeq_drop(struct vmm_timeq *q, size_t n);
/* The earliest due time, UINT64_MAX when empty. */
uint64_t vmm__timeq_next(const struct vmm_timeq *q);

#endif
