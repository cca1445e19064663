// vectors.S - exception vectors saving a full struct exc_frame for rt_exception(), and EL0 entry/return.
#define FRAME_SIZE  304                 // sizeof(struct exc_frame), checked in exc.c
#define F_SP_EL0    248
#define F_ELR       256
#define F_SPSR      264
#define F_ESR       272
#define F_FAR       280
#define F_VECTOR    288

    .text
// 16 entries of 0x80 bytes: {EL1t, EL1h, EL0 AArch64, EL0 AArch32} x {sync, IRQ, FIQ, SError}
.macro ventry idx
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\idx
    b       exc_entry
.endm

    .balign 0x800
    .globl  vectors
vectors:
    .irp    idx, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    ventry  \idx
    .endr

exc_entry:                              // x0 = vector index, x0/x1 already saved
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
    mrs     x1, sp_el0
    stp     x30, x1, [sp, #240]
    mrs     x1, elr_el1
    mrs     x2, spsr_el1
    stp     x1, x2, [sp, #F_ELR]
    mrs     x1, esr_el1
    mrs     x2, far_el1
    stp     x1, x2, [sp, #F_ESR]
    str     x0, [sp, #F_VECTOR]

    mov     x0, sp
    bl      rt_exception                // (struct exc_frame *)

    ldp     x1, x2, [sp, #F_ELR]
    msr     elr_el1, x1
    msr     spsr_el1, x2
    ldp     x30, x1, [sp, #240]
    msr     sp_el0, x1
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
    add     sp, sp, #FRAME_SIZE
    eret

// uint64_t el0_call(entry, user_sp, arg): the callee-saved registers stay on the EL1 stack, and
// SP_EL1 is back at exactly this point when an exception from EL0 returns through el0_resume.
    .globl  el0_call
el0_call:
    stp     x29, x30, [sp, #-96]!
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    msr     sp_el0, x1
    msr     elr_el1, x0
    msr     spsr_el1, xzr               // EL0t, DAIF clear
    mov     x0, x2
    eret

    .globl  el0_resume                  // el0_return() points ELR here (EL1h, DAIF masked)
el0_resume:
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     x29, x30, [sp], #96
    ret
