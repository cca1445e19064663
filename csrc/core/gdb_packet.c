/*
 * gdb_packet.c - GDB remote serial protocol framing: "$payload#cs" with '}' escapes, acks, ^C
 * (GDB manual, appendix E.1 "Overview"). No VM here: the fuzzer links it alone.
 */
#include <string.h>

#include "gdb_packet.h"

enum { RX_IDLE = 0, RX_DATA, RX_ESC, RX_CS1, RX_CS2 };

void vmm__gdb_rx_init(struct gdb_rx *rx)
{
    rx->state = RX_IDLE;
    rx->len = 0;
    rx->overflow = false;
    rx->sum = rx->cs = 0;
    rx->buf[0] = 0;
}

int vmm__gdb_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void rx_put(struct gdb_rx *rx, uint8_t c)
{
    if (rx->len < GDB_PKT_MAX)
        rx->buf[rx->len++] = (char)c;
    else
        rx->overflow = true;
}

/*
 * One byte from the debugger. Outside a packet only '$', '+', '-' and ^C mean something (anything
 * else is line noise, dropped). Inside, '}' escapes the next byte (XOR 0x20); the checksum is the
 * sum of the bytes as sent, escapes included. A packet too long is read to its end, then refused.
 */
enum gdb_rx_event vmm__gdb_rx_byte(struct gdb_rx *rx, uint8_t c)
{
    int v;

    switch (rx->state) {
    case RX_IDLE:
        if (c == '$') {
            vmm__gdb_rx_init(rx);
            rx->state = RX_DATA;
        }
        return c == 0x03 ? GDB_RX_INTR : c == '+' ? GDB_RX_ACK : c == '-' ? GDB_RX_NACK : GDB_RX_NONE;
    case RX_DATA:
        if (c == '#') {
            rx->state = RX_CS1;
            return GDB_RX_NONE;
        }
        if (c == '$') { /* a new packet start: the previous one was cut short */
            vmm__gdb_rx_init(rx);
            rx->state = RX_DATA;
            return GDB_RX_NONE;
        }
        rx->sum += c;
        if (c == '}')
            rx->state = RX_ESC;
        else
            rx_put(rx, c);
        return GDB_RX_NONE;
    case RX_ESC:
        rx->sum += c;
        rx_put(rx, c ^ 0x20);
        rx->state = RX_DATA;
        return GDB_RX_NONE;
    case RX_CS1:
        v = vmm__gdb_hexval((char)c);
        rx->cs = (uint8_t)((v < 0 ? 0x100 : v) << 4); /* a bad digit makes the sum fail */
        rx->state = v < 0 ? RX_IDLE : RX_CS2;
        return v < 0 ? GDB_RX_BADSUM : GDB_RX_NONE;
    default: /* RX_CS2 */
        v = vmm__gdb_hexval((char)c);
        rx->state = RX_IDLE;
        rx->buf[rx->len] = 0;
        if (v < 0 || (uint8_t)(rx->cs | v) != rx->sum)
            return GDB_RX_BADSUM;
        return rx->overflow ? GDB_RX_TOOBIG : GDB_RX_PACKET;
    }
}

size_t vmm__gdb_frame(char *out, size_t cap, const char *payload, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    uint8_t sum = 0;

    if (cap < 4)
        return 0;
    out[o++] = '$';
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)payload[i];
        bool esc = c == '$' || c == '#' || c == '}' || c == '*';
        if (o + 1 + esc + 3 > cap)
            return 0;
        if (esc) {
            out[o++] = '}';
            sum += '}';
            c ^= 0x20;
        }
        out[o++] = (char)c;
        sum += c;
    }
    out[o++] = '#';
    out[o++] = hex[sum >> 4];
    out[o++] = hex[sum & 15];
    return o;
}

size_t vmm__gdb_parse_hex(const char *s, size_t n, uint64_t *v)
{
    size_t i = 0;
    uint64_t x = 0;
    int d;

    while (i < n && (d = vmm__gdb_hexval(s[i])) >= 0) {
        if (i == 16)
            return 0;
        x = x << 4 | (uint64_t)d;
        i++;
    }
    *v = x;
    return i;
}

bool vmm__gdb_hex_to_bin(const char *hex, size_t nbytes, uint8_t *out)
{
    for (size_t i = 0; i < nbytes; i++) {
        int hi = vmm__gdb_hexval(hex[2 * i]), lo = hi < 0 ? -1 : vmm__gdb_hexval(hex[2 * i + 1]);
        if (lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

void vmm__gdb_bin_to_hex(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = 0;
}
