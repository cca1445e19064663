/* wxn.c - SCTLR_EL1.WXN: with it set, EL1 may not execute from a page it can write (Arm ARM D8.4,
   "Preventing execution from writable locations"); an instruction fetch there is an instruction abort,
   permission fault. The guest's image is one writable 2 MiB block, so everything that runs while WXN is
   set (the probe and its own exception vectors) lives in the block at __user_start, mapped EL1 read-only
   and executable (mmu_config.el0_rx_el1). */
#include "rt.h"

#define SCTLR_WXN (1UL << 19)
#define IFSC_PERM_L2 0x0e /* permission fault, level 2 (a 2 MiB block) */

/* wxn_probe(target, out): sets VBAR_EL1 to wxn_vectors and WXN, calls target (x0 = 0 before), clears WXN,
   restores VBAR. Returns x0 as target left it (1 if it ran) or 0 after an abort; out[0..2] = ESR, FAR and
   ELR the vectors saw (0 if none). The vectors clear WXN and return to the probe (ELR = x30). */
__asm__(".pushsection .user.text, \"ax\"\n"
        ".balign 2048\n"
        "wxn_vectors:\n"
        ".rept 16\n"
        "    b wxn_vector\n"
        "    .balign 128\n"
        ".endr\n"
        "wxn_vector:\n"
        "    mrs x2, esr_el1\n"
        "    mrs x3, far_el1\n"
        "    mrs x4, elr_el1\n"
        "    mrs x5, sctlr_el1\n"
        "    bic x5, x5, #(1 << 19)\n"
        "    msr sctlr_el1, x5\n"
        "    isb\n"
        "    msr elr_el1, x30\n"
        "    eret\n"
        ".globl wxn_probe\n"
        "wxn_probe:\n"
        "    mov x9, x30\n"
        "    mov x13, x1\n"
        "    mrs x10, vbar_el1\n"
        "    adr x11, wxn_vectors\n"
        "    msr vbar_el1, x11\n"
        "    mov x2, #0\n"
        "    mov x3, #0\n"
        "    mov x4, #0\n"
        "    mrs x12, sctlr_el1\n"
        "    orr x12, x12, #(1 << 19)\n"
        "    msr sctlr_el1, x12\n"
        "    isb\n"
        "    mov x5, x0\n"
        "    mov x0, #0\n"
        "    blr x5\n"
        "    mrs x12, sctlr_el1\n"
        "    bic x12, x12, #(1 << 19)\n"
        "    msr sctlr_el1, x12\n"
        "    msr vbar_el1, x10\n"
        "    isb\n"
        "    stp x2, x3, [x13]\n"
        "    str x4, [x13, #16]\n"
        "    ret x9\n"
        ".globl wxn_ro_target\n"
        "wxn_ro_target:\n" /* read-only: runs with WXN set */
        "    mov x0, #1\n"
        "    ret\n"
        ".popsection\n"
        ".pushsection .text.wxn_rw_target, \"ax\"\n"
        ".globl wxn_rw_target\n"
        "wxn_rw_target:\n" /* in the writable image: must not run with WXN set */
        "    mov x0, #1\n"
        "    ret\n"
        ".popsection\n");
extern uint64_t wxn_probe(uintptr_t target, uint64_t out[3]);
extern char wxn_ro_target[], wxn_rw_target[];

static int failures;

static void check(int ok, const char *name, uint64_t ran, const uint64_t out[3])
{
    if (ok) {
        printf("PASS %s\n", name);
        return;
    }
    printf("FAIL %s: ran=%lu esr=0x%lx far=0x%lx elr=0x%lx\n", name, ran, out[0], out[1], out[2]);
    failures++;
}

int main(uint64_t dtb)
{
    struct mmu_config cfg = MMU_CONFIG_DEFAULT;
    uint64_t out[3], ran, want_esr = ESR_MAKE(EC_IABT_CUR, IFSC_PERM_L2);

    (void)dtb;
    cfg.el0_base = (uintptr_t)__user_start;
    cfg.el0_size = 2UL << 20;
    cfg.el0_rx_el1 = 1;
    if (mmu_enable(&cfg) != 0) {
        printf("FAIL mmu_enable\nSOME FAILED\n");
        return 1;
    }

    ran = wxn_probe((uintptr_t)wxn_ro_target, out);
    check(ran == 1 && !out[0] && !(read_sysreg(sctlr_el1) & SCTLR_WXN), "WXN: a read-only page runs", ran, out);

    ran = wxn_probe((uintptr_t)wxn_rw_target, out);
    check(!ran && out[0] == want_esr && out[1] == (uintptr_t)wxn_rw_target && out[2] == (uintptr_t)wxn_rw_target,
          "WXN: a writable page is an instruction abort", ran, out);

    /* the same after a store to the target itself (its own bytes again), which fills its TLB entry for
       writing; then the cache maintenance that makes a code change visible (Arm ARM B2.4.4) */
    volatile uint32_t *insn = (volatile uint32_t *)wxn_rw_target;
    *insn = *insn;
    __asm__ volatile("dc cvau, %0\n dsb ish\n ic ivau, %0\n dsb ish\n isb" ::"r"(insn) : "memory");
    ran = wxn_probe((uintptr_t)wxn_rw_target, out);
    check(!ran && out[0] == want_esr && out[1] == (uintptr_t)wxn_rw_target && out[2] == (uintptr_t)wxn_rw_target,
          "WXN: a page just written is an instruction abort", ran, out);

    printf(failures ? "SOME FAILED\n" : "ALL PASS\n");
    return failures ? 1 : 0;
}
