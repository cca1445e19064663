/* uart_irq.c - PL011 receive interrupts (INTID 33, level): UARTIMSC RXIM|RTIM, WFI until input; the handler
   reads UARTDR until UARTFR.RXFE into a ring, the main loop echoes each byte as "echo: <c>"; 'q' ends it. */
#include "rt.h"

#define UART_DR (UART_BASE + 0x00)
#define UART_FR (UART_BASE + 0x18)
#define UART_IMSC (UART_BASE + 0x38)
#define UART_RIS (UART_BASE + 0x3c)
#define UART_MIS (UART_BASE + 0x40)
#define FR_RXFE (1u << 4)
#define UART_RXI (1u << 4) /* receive: FIFO at its trigger level (or any byte without a FIFO) */
#define UART_RTI (1u << 6) /* receive timeout: bytes below the trigger level for a while */
#define INPUT_TIMEOUT_MS 60000
#define RING 256

static volatile uint8_t ring[RING];
static volatile uint32_t head, irqs, no_rx_cause, rx_stuck; /* written by the handler */

static void on_uart(unsigned intid, void *arg)
{
    (void)intid;
    (void)arg;
    irqs++;
    if (!(mmio_read32(UART_MIS) & (UART_RXI | UART_RTI)))
        no_rx_cause++;
    while (!(mmio_read32(UART_FR) & FR_RXFE))
        ring[head++ % RING] = (uint8_t)mmio_read32(UART_DR);
    /* drained: the receive interrupt must have dropped (level), unless a byte came in meanwhile */
    if ((mmio_read32(UART_RIS) & (UART_RXI | UART_RTI)) && (mmio_read32(UART_FR) & FR_RXFE))
        rx_stuck++;
}

static void echo(uint8_t c)
{
    if (c >= 0x20 && c < 0x7f)
        printf("echo: %c\n", c);
    else
        printf("echo: 0x%02x\n", c);
}

int main(uint64_t dtb)
{
    uint32_t tail = 0;
    int done = 0;

    (void)dtb;
    if (test_begin_gic("uart_irq"))
        return test_end();
    gic_set_edge(INTID_UART, 0);
    gic_set_handler(INTID_UART, on_uart, 0);
    gic_enable(INTID_UART);
    mmio_write32(UART_IMSC, UART_RXI | UART_RTI);

    printf("uart_irq: ready, echoing input until 'q'\n");
    while (!done) {
        if (!WFI_UNTIL(head != tail, INPUT_TIMEOUT_MS)) {
            test_fail("no input within %u s (%u bytes so far)", INPUT_TIMEOUT_MS / 1000, tail);
            break;
        }
        if (head - tail > RING) {
            test_fail("ring overflow: %u bytes behind", head - tail);
            break;
        }
        while (tail != head && !done) {
            uint8_t c = ring[tail++ % RING];
            echo(c);
            done = c == 'q';
        }
    }
    mmio_write32(UART_IMSC, 0);

    printf("uart_irq: %u bytes in %u interrupts\n", tail, irqs);
    test_check(irqs >= 1 && irqs <= head, "%u interrupts for %u bytes", irqs, head);
    test_check(no_rx_cause == 0, "%u interrupts without RXMIS/RTMIS in UARTMIS", no_rx_cause);
    test_check(rx_stuck == 0, "receive interrupt still raised with the FIFO empty (%u times)", rx_stuck);
    return test_end();
}
