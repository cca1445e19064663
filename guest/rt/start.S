// start.S - guest entry: stack, FP/SIMD access, .bss, vector table, main(dtb), then guest_exit().
// Entered at EL1h with DAIF masked, the MMU off and x0 = the DTB address. PC-relative addressing
// only, so a flat image also runs when loaded at another 4 KiB-aligned address.
    .section .text.boot, "ax"
    .globl  _start
_start:
    msr     daifset, #0xf
    mov     x19, x0                     // keep the DTB address for main

    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1

    mov     x1, #(3 << 20)              // CPACR_EL1.FPEN: no FP/SIMD traps (the C code
    msr     cpacr_el1, x1               // uses none, but a guest's asm may)

    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16         // both ends are 16-byte aligned (link.ld)
    b       1b

2:  adrp    x1, vectors
    add     x1, x1, :lo12:vectors
    msr     vbar_el1, x1
    isb

    mov     x0, x19
    bl      main
    bl      guest_exit                  // main's return value is the exit status
3:  wfi
    b       3b
