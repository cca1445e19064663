/* fdt.c - just enough of a flattened device tree reader to find the DTB and list /cpus. */
#include "rt.h"

#define FDT_MAGIC 0xd00dfeedu
#define FDT_BEGIN_NODE 1
#define FDT_END_NODE 2
#define FDT_PROP 3
#define FDT_NOP 4
#define FDT_END 9
#define RAM_PROBE_LIMIT (1UL << 30) /* x0 is trusted only inside the first GiB of RAM */

/* the DTB is big-endian and its strings are only 4-byte aligned: read bytes */
static uint32_t be32(uintptr_t p)
{
    const volatile uint8_t *b = (const volatile uint8_t *)p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static int str_prefix(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

static uintptr_t align4(uintptr_t p)
{
    return (p + 3) & ~3UL;
}

/* Past a node's NUL-terminated name (and its padding). */
static uintptr_t after_name(uintptr_t p, uintptr_t end)
{
    while (p < end && *(const volatile char *)p)
        p++;
    return align4(p + 1);
}

uintptr_t fdt_find(uint64_t x0)
{
    if (x0 >= RAM_BASE && x0 < RAM_BASE + RAM_PROBE_LIMIT && !(x0 & 7) && be32(x0) == FDT_MAGIC)
        return x0;
    if (be32(RAM_BASE) == FDT_MAGIC) /* QEMU, for a kernel it does not boot as Linux */
        return RAM_BASE;
    return 0;
}

int fdt_cpus(uintptr_t fdt, uint64_t *mpidrs, int max)
{
    if (!fdt || be32(fdt) != FDT_MAGIC)
        return -1;
    uintptr_t p = fdt + be32(fdt + 8), end = p + be32(fdt + 36); /* off_dt_struct, size_dt_struct */
    uintptr_t strings = fdt + be32(fdt + 12);                    /* off_dt_strings */
    int depth = 0, in_cpus = 0, is_cpu = 0, count = 0;
    uint64_t reg = 0;
    int have_reg = 0;

    while (p + 4 <= end) {
        uint32_t token = be32(p);
        p += 4;
        switch (token) {
        case FDT_BEGIN_NODE: {
            const char *name = (const char *)p;
            depth++;
            if (depth == 2 && str_eq(name, "cpus"))
                in_cpus = 1;
            else if (depth == 3 && in_cpus && str_prefix(name, "cpu@"))
                is_cpu = 1, have_reg = 0;
            p = after_name(p, end);
            break;
        }
        case FDT_END_NODE:
            if (depth == 3 && is_cpu) {
                if (have_reg && count < max)
                    mpidrs[count] = reg;
                count += have_reg;
                is_cpu = 0;
            } else if (depth == 2 && in_cpus) {
                return count; /* /cpus is complete */
            }
            if (--depth < 0)
                return -1;
            break;
        case FDT_PROP: {
            uint32_t len = be32(p), nameoff = be32(p + 4);
            uintptr_t val = p + 8;
            if (depth == 3 && is_cpu && str_eq((const char *)(strings + nameoff), "reg")) {
                if (len == 4)
                    reg = be32(val), have_reg = 1;
                else if (len == 8)
                    reg = (uint64_t)be32(val) << 32 | be32(val + 4), have_reg = 1;
            }
            p = align4(val + len);
            break;
        }
        case FDT_NOP:
            break;
        case FDT_END:
            return in_cpus ? -1 : count;
        default:
            return -1;
        }
    }
    return -1;
}

/* Whether node name `name` equals the path component [c, c_end). */
static int comp_eq(const char *name, const char *c, const char *c_end)
{
    while (c < c_end && *name && *name == *c)
        name++, c++;
    return c == c_end && !*name;
}

/* The start of component i (0-based) of an absolute path "/a/b", its end in *end; 0 if there is none. */
static const char *component(const char *path, int i, const char **end)
{
    const char *c = path;
    for (int k = 0; k <= i; k++) {
        if (*c != '/' || !c[1])
            return 0;
        c++;
        const char *e = c;
        while (*e && *e != '/')
            e++;
        if (k == i) {
            *end = e;
            return c;
        }
        c = e;
    }
    return 0;
}

const void *fdt_getprop(uintptr_t fdt, const char *path, const char *prop, uint32_t *len)
{
    if (!fdt || be32(fdt) != FDT_MAGIC)
        return 0;
    int ncomp = 0;
    const char *e;
    while (component(path, ncomp, &e))
        ncomp++;
    uintptr_t p = fdt + be32(fdt + 8), end = p + be32(fdt + 36);
    uintptr_t strings = fdt + be32(fdt + 12);
    int depth = 0, matched = 0; /* the root is depth 1; matched: leading path components the stack matches */

    while (p + 4 <= end) {
        uint32_t token = be32(p);
        p += 4;
        switch (token) {
        case FDT_BEGIN_NODE: {
            const char *name = (const char *)p;
            depth++;
            const char *c = component(path, depth - 2, &e);
            if (depth >= 2 && matched == depth - 2 && c && comp_eq(name, c, e))
                matched = depth - 1;
            p = after_name(p, end);
            break;
        }
        case FDT_END_NODE:
            if (matched == depth - 1 && depth >= 2)
                matched--;
            if (--depth < 0)
                return 0;
            break;
        case FDT_PROP: {
            uint32_t plen = be32(p), nameoff = be32(p + 4);
            uintptr_t val = p + 8;
            if (depth == ncomp + 1 && matched == ncomp && str_eq((const char *)(strings + nameoff), prop)) {
                if (len)
                    *len = plen;
                return (const void *)val;
            }
            p = align4(val + plen);
            break;
        }
        case FDT_NOP:
            break;
        default:
            return 0;
        }
    }
    return 0;
}
