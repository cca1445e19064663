// start.S - guest entry: stack, FP/SIMD access, .bss, vector table, main(dtb), then guest_exit();
// and the secondary CPUs' entry (PSCI CPU_ON), which picks a stack by MPIDR_EL1.Aff0.
// Entered at EL1h with DAIF masked, the MMU off and x0 = the DTB address (the context id for a
// secondary). PC-relative addressing only, so a flat image also runs when loaded at another 4 KiB-
// aligned address.
#define RT_MAX_CPUS         8           // rt.h
#define SECONDARY_STACK_SHIFT 14        // 16 KiB each (rt/link.ld)
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

// PSCI CPU_ON entry (smp_start_cpu): x0 = the context id. The stack for Aff0 n is slot n of
// __secondary_stacks (slot 0 only serves CPU 0 if it is itself started this way; the boot CPU has
// __stack_top); Aff0 >= RT_MAX_CPUS or a nonzero Aff1-3 has no stack and parks in WFI, DAIF masked.
    .globl  _start_secondary
_start_secondary:
    msr     daifset, #0xf
    mov     x19, x0                     // context id
    mrs     x1, mpidr_el1
    ubfx    x2, x1, #8, #16             // Aff1, Aff2
    lsr     x3, x1, #32                 // Aff3
    orr     x2, x2, x3
    and     x1, x1, #0xff               // Aff0
    cmp     x1, #RT_MAX_CPUS
    ccmp    x2, #0, #0, lo              // Aff0 in range: check Aff1-3 == 0; otherwise force "ne"
    b.ne    4f

    add     x1, x1, #1
    adrp    x2, __secondary_stacks
    add     x2, x2, :lo12:__secondary_stacks
    add     x2, x2, x1, lsl #SECONDARY_STACK_SHIFT
    mov     sp, x2

    mov     x1, #(3 << 20)              // CPACR_EL1.FPEN, as on the boot CPU
    msr     cpacr_el1, x1
    adrp    x1, vectors
    add     x1, x1, :lo12:vectors
    msr     vbar_el1, x1
    isb

    mov     x0, x19
    bl      rt_secondary_main           // (context); does not return
4:  wfi
    b       4b
