// start.S - guest entry, exception vectors with a full register frame, EL0 entry/return.
.section .text.boot, "ax"
.globl _start
_start:
    msr     daifset, #0xf
    mov     x19, x0                 // DTB address from the VMM
    ldr     x1, =__stack_top
    mov     sp, x1
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  ldr     x1, =vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      main
    bl      guest_exit              // main's return value is the exit status
3:  wfi
    b       3b

// ---- vectors: 16 entries of 128 bytes; each saves a frame and calls rt_exception ----
.macro VENTRY idx
    .balign 128
    sub     sp, sp, #(34 * 8)
    stp     x0, x1, [sp, #0]
    mov     x0, #\idx
    b       vector_common
.endm
.balign 2048
.globl vectors
vectors:
    VENTRY 0
    VENTRY 1
    VENTRY 2
    VENTRY 3
    VENTRY 4
    VENTRY 5
    VENTRY 6
    VENTRY 7
    VENTRY 8
    VENTRY 9
    VENTRY 10
    VENTRY 11
    VENTRY 12
    VENTRY 13
    VENTRY 14
    VENTRY 15

// frame: x0..x30 at [sp + 8n], elr at 31, spsr at 32, vector index at 33
vector_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el1
    stp     x30, x2, [sp, #240]
    mrs     x3, spsr_el1
    stp     x3, x0, [sp, #256]
    mov     x1, sp
    bl      rt_exception           // (index, frame)
    ldp     x30, x2, [sp, #240]
    ldr     x3, [sp, #256]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #(34 * 8)
    eret

// run_user(entry, user_sp): run EL0 code until the handler calls rt_user_return; returns its x0
.globl run_user
run_user:
    ldr     x9, =kernel_ctx
    stp     x19, x20, [x9, #0]
    stp     x21, x22, [x9, #16]
    stp     x23, x24, [x9, #32]
    stp     x25, x26, [x9, #48]
    stp     x27, x28, [x9, #64]
    stp     x29, x30, [x9, #80]
    mov     x10, sp
    str     x10, [x9, #96]
    msr     sp_el0, x1
    msr     elr_el1, x0
    msr     spsr_el1, xzr          // EL0t, interrupts unmasked
    isb
    eret
.globl user_return                 // the handler points ELR here with SPSR = EL1h
user_return:
    ldr     x9, =kernel_ctx
    ldp     x19, x20, [x9, #0]
    ldp     x21, x22, [x9, #16]
    ldp     x23, x24, [x9, #32]
    ldp     x25, x26, [x9, #48]
    ldp     x27, x28, [x9, #64]
    ldp     x29, x30, [x9, #80]
    ldr     x10, [x9, #96]
    mov     sp, x10
    ret

.section .bss
.balign 16
kernel_ctx: .skip 112
