/* rt.c - the guest runtime: polled PL011 output, a small printf, PSCI, semihosting, exceptions, MMU. */
#include "rt.h"

#define UART_DR (*(volatile uint32_t *)(UART_BASE + 0x00))
#define UART_FR (*(volatile uint32_t *)(UART_BASE + 0x18))
#define FR_TXFF (1u << 5)
#define FR_RXFE (1u << 4)

void putc_(char c)
{
    if (c == '\n')
        putc_('\r');
    while (UART_FR & FR_TXFF)
        ;
    UART_DR = (uint8_t)c;
}

void puts_(const char *s)
{
    while (*s)
        putc_(*s++);
}

int getc_(void)
{
    return (UART_FR & FR_RXFE) ? -1 : (int)(UART_DR & 0xff);
}

static void put_num(uint64_t v, unsigned base, int width, char pad, int neg)
{
    char buf[24];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        buf[n++] = '-';
    while (n < width--)
        putc_(pad);
    while (n)
        putc_(buf[--n]);
}

void printf_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putc_(*fmt);
            continue;
        }
        char pad = ' ';
        int width = 0, lng = 0;
        fmt++;
        if (*fmt == '0')
            pad = '0';
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l')
            lng++, fmt++;
        switch (*fmt) {
        case 'd': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            put_num(v < 0 ? (uint64_t)-v : (uint64_t)v, 10, width, pad, v < 0);
            break;
        }
        case 'u':
            put_num(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad, 0);
            break;
        case 'x':
            put_num(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad, 0);
            break;
        case 'p':
            puts_("0x");
            put_num((uint64_t)va_arg(ap, void *), 16, width, pad, 0);
            break;
        case 's':
            puts_(va_arg(ap, const char *));
            break;
        case 'c':
            putc_((char)va_arg(ap, int));
            break;
        default:
            putc_('%');
            putc_(*fmt);
        }
    }
    va_end(ap);
}

uint64_t smccc(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3)
{
    register uint64_t x0 __asm__("x0") = fn, x1 __asm__("x1") = a1, x2 __asm__("x2") = a2, x3 __asm__("x3") = a3;
    __asm__ volatile("hvc #0" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)::"memory");
    return x0;
}

void semihost_exit(int code)
{
    static volatile uint64_t block[2];
    block[0] = 0x20026; /* ADP_Stopped_ApplicationExit */
    block[1] = (uint64_t)code;
    register uint64_t x0 __asm__("x0") = 0x20; /* SYS_EXIT_EXTENDED */
    register uint64_t x1 __asm__("x1") = (uint64_t)block;
    __asm__ volatile("hlt #0xf000" : "+r"(x0) : "r"(x1) : "memory");
}

void guest_exit(int code)
{
    if (code)
        semihost_exit(code);
    smccc(PSCI_SYSTEM_OFF, 0, 0, 0);
    for (;;)
        __asm__ volatile("wfi");
}

/* ---- exceptions ---- */
static exc_fn handler;

void set_exception_handler(exc_fn fn)
{
    handler = fn;
}

static const char *const vector_names[16] = {
    "sync/EL1t", "irq/EL1t", "fiq/EL1t", "serror/EL1t", "sync/EL1h",   "irq/EL1h",   "fiq/EL1h",   "serror/EL1h",
    "sync/EL0",  "irq/EL0",  "fiq/EL0",  "serror/EL0",  "sync/EL0-32", "irq/EL0-32", "fiq/EL0-32", "serror/EL0-32",
};

void rt_exception(uint64_t index, struct frame *f)
{
    uint64_t esr = read_sysreg(esr_el1), far = read_sysreg(far_el1);
    if (handler && handler(f, esr, far))
        return;
    printf_("UNEXPECTED EXCEPTION %s esr=0x%lx far=0x%lx elr=0x%lx\n", vector_names[index & 15], esr, far, f->elr);
    guest_exit(3);
}

/* ---- MMU: 4 KiB granule, 39-bit VA, level-1 table + one level-2 table for 1-2 GiB ---- */
__attribute__((section(".pagetables"), aligned(4096))) static uint64_t l1[512];
__attribute__((section(".pagetables"), aligned(4096))) static uint64_t l2[512];

#define PTE_VALID 1ull
#define PTE_TABLE 2ull
#define PTE_BLOCK 0ull
#define PTE_ATTR(i) ((uint64_t)(i) << 2)
#define PTE_AP_EL0 (1ull << 6)
#define PTE_SH_INNER (3ull << 8)
#define PTE_AF (1ull << 10)
#define PTE_PXN (1ull << 53)
#define PTE_UXN (1ull << 54)

void mmu_enable(void)
{
    for (int i = 0; i < 512; i++)
        l1[i] = l2[i] = 0;
    /* 0-1 GiB: device nGnRnE, never executable */
    l1[0] = 0x00000000ull | PTE_VALID | PTE_BLOCK | PTE_ATTR(0) | PTE_AF | PTE_PXN | PTE_UXN;
    l1[1] = (uint64_t)l2 | PTE_VALID | PTE_TABLE;
    for (uint64_t i = 0; i < 512; i++) {
        uint64_t pa = 0x40000000ull + (i << 21);
        uint64_t d = pa | PTE_VALID | PTE_BLOCK | PTE_ATTR(1) | PTE_AF | PTE_SH_INNER;
        if (pa == 0x40400000ull)
            d |= PTE_AP_EL0; /* EL0 code and stack (implicitly PXN for EL1) */
        else
            d |= PTE_UXN;
        l2[i] = d;
    }
    __asm__ volatile("dsb ish" ::: "memory");
    write_sysreg(mair_el1, 0xff00ull); /* attr0 device nGnRnE, attr1 normal WB */
    /* T0SZ=25, IRGN0/ORGN0 WB, SH0 inner, TG0 4K, EPD1, IPS 40 bits */
    write_sysreg(tcr_el1, 25ull | (1ull << 8) | (1ull << 10) | (3ull << 12) | (1ull << 23) | (2ull << 32));
    write_sysreg(ttbr0_el1, (uint64_t)l1);
    isb();
    __asm__ volatile("tlbi vmalle1\n dsb ish" ::: "memory");
    isb();
    uint64_t sctlr = read_sysreg(sctlr_el1);
    sctlr |= 1ull | (1ull << 2) | (1ull << 12); /* M, C, I */
    write_sysreg(sctlr_el1, sctlr);
    isb();
}
