/* uart.c - polled PL011 console at UART_BASE: putc/puts, getc, flush. */
#include "rt.h"

#define UART_DR (UART_BASE + 0x00)
#define UART_FR (UART_BASE + 0x18)
#define FR_BUSY (1u << 3)
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)

void uart_putc(char c)
{
    if (c == '\n')
        uart_putc('\r');
    while (mmio_read32(UART_FR) & FR_TXFF)
        ;
    mmio_write32(UART_DR, (uint8_t)c);
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

int uart_trygetc(void)
{
    if (mmio_read32(UART_FR) & FR_RXFE)
        return -1;
    return (int)(mmio_read32(UART_DR) & 0xff);
}

int uart_getc(void)
{
    int c;

    while ((c = uart_trygetc()) < 0)
        ;
    return c;
}

void uart_flush(void)
{
    for (int i = 0; i < 1000000 && (mmio_read32(UART_FR) & FR_BUSY); i++)
        ;
}
