/* printf.c - a small printf to the UART: %d %i %u %x %X %p %s %c %%, l/ll/z sizes, width, '0' and '-'. */
#include "rt.h"

struct spec {
    int width, zero, left;
};

static int pad(int n, char c)
{
    int k = 0;

    while (n-- > 0) {
        uart_putc(c);
        k++;
    }
    return k;
}

static int put_str(const char *s, const struct spec *sp)
{
    int len = 0, k;

    if (!s)
        s = "(null)";
    while (s[len])
        len++;
    k = sp->left ? 0 : pad(sp->width - len, ' ');
    uart_puts(s);
    k += len;
    return k + (sp->left ? pad(sp->width - len, ' ') : 0);
}

static int put_num(uint64_t v, unsigned base, int upper, int neg, const char *prefix, const struct spec *sp)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char buf[24];
    int n = 0, k = 0, plen = 0, len;

    do {
        buf[n++] = digits[v % base];
        v /= base;
    } while (v);
    while (prefix[plen])
        plen++;
    len = n + neg + plen;
    if (!sp->left && !sp->zero)
        k += pad(sp->width - len, ' ');
    if (neg)
        k += pad(1, '-');
    for (const char *p = prefix; *p; p++)
        k += pad(1, *p);
    if (!sp->left && sp->zero)
        k += pad(sp->width - len, '0');
    while (n) {
        uart_putc(buf[--n]);
        k++;
    }
    if (sp->left)
        k += pad(sp->width - len, ' ');
    return k;
}

int vprintf(const char *fmt, va_list ap)
{
    int count = 0;

    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            uart_putc(*fmt);
            count++;
            continue;
        }
        struct spec sp = { 0 };
        int size = 0; /* number of 'l' (or 'z') modifiers */
        for (fmt++;; fmt++) {
            if (*fmt == '0')
                sp.zero = 1;
            else if (*fmt == '-')
                sp.left = 1;
            else
                break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            sp.width = sp.width * 10 + (*fmt++ - '0');
        for (; *fmt == 'l' || *fmt == 'z'; fmt++)
            size++;

        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v = size ? va_arg(ap, int64_t) : va_arg(ap, int);
            count += put_num(v < 0 ? -(uint64_t)v : (uint64_t)v, 10, 0, v < 0, "", &sp);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = size ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            count += put_num(v, *fmt == 'u' ? 10 : 16, *fmt == 'X', 0, "", &sp);
            break;
        }
        case 'p':
            count += put_num((uintptr_t)va_arg(ap, void *), 16, 0, 0, "0x", &sp);
            break;
        case 's':
            count += put_str(va_arg(ap, const char *), &sp);
            break;
        case 'c':
            uart_putc((char)va_arg(ap, int));
            count++;
            break;
        case '%':
            uart_putc('%');
            count++;
            break;
        case '\0': /* a lone '%' at the end */
            return count;
        default: /* unknown conversion: print it as written */
            uart_putc('%');
            uart_putc(*fmt);
            count += 2;
        }
    }
    return count;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}
