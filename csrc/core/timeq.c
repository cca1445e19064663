/* timeq.c - input waiting for its virtual time (deterministic mode), in time order. */
#include <stdlib.h>
#include <string.h>

#include "vmm.h"
#include "timeq.h"

void vmm__timeq_init(struct vmm_timeq *q, size_t item_size, size_t max)
{
    *q = (struct vmm_timeq){ .item_size = item_size, .max = max };
}

void vmm__timeq_free(struct vmm_timeq *q)
{
    free(q->at);
    free(q->items);
    q->at = NULL;
    q->items = NULL;
    q->n = q->cap = 0;
}

static int grow(struct vmm_timeq *q, size_t need)
{
    size_t cap = q->cap ? q->cap : 256;

    while (cap < need)
        cap *= 2;
    uint64_t *at = realloc(q->at, cap * sizeof *at);
    if (!at)
        return VMM_ENOMEM;
    q->at = at;
    uint8_t *items = realloc(q->items, cap * q->item_size);
    if (!items)
        return VMM_ENOMEM;
    q->items = items;
    q->cap = cap;
    return 0;
}

int vmm__timeq_add(struct vmm_timeq *q, uint64_t at_ns, const void *items, size_t count)
{
    size_t pos = q->n;
    int rc;

    if (!count)
        return 0;
    if (count > q->max - q->n)
        return VMM_ENOMEM;
    if (q->n + count > q->cap && (rc = grow(q, q->n + count)))
        return rc;
    while (pos > 0 && q->at[pos - 1] > at_ns) /* stable: after the items due at the same time */
        pos--;
    memmove(q->at + pos + count, q->at + pos, (q->n - pos) * sizeof *q->at);
    memmove(q->items + (pos + count) * q->item_size, q->items + pos * q->item_size, (q->n - pos) * q->item_size);
    for (size_t i = 0; i < count; i++)
        q->at[pos + i] = at_ns;
    memcpy(q->items + pos * q->item_size, items, count * q->item_size);
    q->n += count;
    return 0;
}

void *vmm__timeq_item(struct vmm_timeq *q, size_t i)
{
    return q->items + i * q->item_size;
}

void vmm__timeq_drop(struct vmm_timeq *q, size_t n)
{
    if (n > q->n)
        n = q->n;
    if (!n)
        return; /* nothing to move (and the arrays may not exist yet) */
    memmove(q->at, q->at + n, (q->n - n) * sizeof *q->at);
    memmove(q->items, q->items + n * q->item_size, (q->n - n) * q->item_size);
    q->n -= n;
}

uint64_t vmm__timeq_next(const struct vmm_timeq *q)
{
    return q->n ? q->at[0] : UINT64_MAX;
}
