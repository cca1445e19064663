/* idregs.c - every feature the ID registers advertise works: each is exercised by an instruction that needs it. */
#include "rt.h"

/*
 * The ID registers (Arm ARM D17.2) by encoding, so that any assembler takes them. A feature field
 * with a value >= min advertises the feature; the guest then runs one instruction that is
 * UNDEFINED without it (given as its encoding, the mnemonic beside it). An instruction that traps
 * where its feature is advertised is a FAIL. Fields with other meanings (FP and AdvSIMD: 0xf is "none")
 * are spelled out.
 */
#define ID_AA64PFR0 S3_0_C0_C4_0
#define ID_AA64PFR1 S3_0_C0_C4_1
#define ID_AA64ZFR0 S3_0_C0_C4_4
#define ID_AA64DFR0 S3_0_C0_C5_0
#define ID_AA64ISAR0 S3_0_C0_C6_0
#define ID_AA64ISAR1 S3_0_C0_C6_1
#define ID_AA64MMFR0 S3_0_C0_C7_0
#define ID_AA64MMFR1 S3_0_C0_C7_1
#define ID_AA64MMFR2 S3_0_C0_C7_2
enum { PFR0, PFR1, ZFR0, DFR0, ISAR0, ISAR1, MMFR0, MMFR1, MMFR2, NREGS };
static const char *const reg_names[NREGS] = { "ID_AA64PFR0_EL1",  "ID_AA64PFR1_EL1",  "ID_AA64ZFR0_EL1",
                                              "ID_AA64DFR0_EL1",  "ID_AA64ISAR0_EL1", "ID_AA64ISAR1_EL1",
                                              "ID_AA64MMFR0_EL1", "ID_AA64MMFR1_EL1", "ID_AA64MMFR2_EL1" };

/* stub_<name>: x0 = x1 = x2 = a scratch doubleword (for the memory forms), the instruction, ret */
#define STUB(name, word)                                                                                            \
    __asm__(".pushsection .text.idstubs, \"ax\"\n.balign 4\n.globl stub_" #name "\nstub_" #name ":\n"               \
            "    adrp x1, scratch\n    add x1, x1, :lo12:scratch\n    mov x2, x1\n    mov x0, x1\n    .inst " #word \
            "\n    ret\n.popsection\n");                                                                            \
    extern char stub_##name[]

uint64_t scratch[4] __attribute__((aligned(64)));

STUB(aes, 0x4e284820);      /* aese v0.16b, v1.16b */
STUB(pmull, 0x0ee2e020);    /* pmull v0.1q, v1.1d, v2.1d */
STUB(sha1, 0x5e280820);     /* sha1h s0, s1 */
STUB(sha256, 0x5e024020);   /* sha256h q0, q1, v2.4s */
STUB(sha512, 0xce628020);   /* sha512h q0, q1, v2.2d */
STUB(crc32, 0x1ac24020);    /* crc32b w0, w1, w2 */
STUB(lse, 0xf8200041);      /* ldadd x0, x1, [x2] */
STUB(rdm, 0x6e828420);      /* sqrdmlah v0.4s, v1.4s, v2.4s */
STUB(sha3, 0xce020c20);     /* eor3 v0.16b, v1.16b, v2.16b, v3.16b */
STUB(sm3, 0xce420c20);      /* sm3ss1 v0.4s, v1.4s, v2.4s, v3.4s */
STUB(sm4, 0xcec08420);      /* sm4e v0.4s, v1.4s */
STUB(dotprod, 0x4e829420);  /* sdot v0.4s, v1.16b, v2.16b */
STUB(fhm, 0x0e22ec20);      /* fmlal v0.2s, v1.2h, v2.2h */
STUB(flagm, 0xd500401f);    /* cfinv */
STUB(flagm2, 0xd500405f);   /* axflag */
STUB(tlbios, 0xd508811f);   /* tlbi vmalle1os */
STUB(rndr, 0xd53b2400);     /* mrs x0, rndr */
STUB(dpb, 0xd50b7c20);      /* dc cvap, x0 */
STUB(dpb2, 0xd50b7d20);     /* dc cvadp, x0 */
STUB(pauth, 0xdac10020);    /* pacia x0, x1 */
STUB(pacga, 0x9ac23020);    /* pacga x0, x1, x2 */
STUB(jscvt, 0x1e7e0020);    /* fjcvtzs w0, d1 */
STUB(fcma, 0x6e82c420);     /* fcmla v0.4s, v1.4s, v2.4s, #0 */
STUB(lrcpc, 0xf8bfc020);    /* ldapr x0, [x1] */
STUB(lrcpc2, 0xd9400020);   /* ldapur x0, [x1] */
STUB(frintts, 0x1e284020);  /* frint32z s0, s1 */
STUB(sb, 0xd50330ff);       /* sb */
STUB(specres, 0xd50b7380);  /* cfp rctx, x0 */
STUB(bf16, 0x6e42fc20);     /* bfdot v0.4s, v1.8h, v2.8h */
STUB(i8mm, 0x4e82a420);     /* smmla v0.4s, v1.16b, v2.16b */
STUB(fp16, 0x1ee22820);     /* fadd h0, h1, h2 */
STUB(simdfp16, 0x4e421420); /* fadd v0.8h, v1.8h, v2.8h */
STUB(sve, 0x04bf5020);      /* rdvl x0, #1 */
STUB(zcr, 0xd5381200);      /* mrs x0, zcr_el1 */
STUB(sve_add, 0x04a20020);  /* add z0.s, z1.s, z2.s */
STUB(sve_pred, 0x2598e3e0); /* ptrue p0.s */
STUB(ras, 0xd5385300);      /* mrs x0, erridr_el1 */
STUB(dit, 0xd53b42a0);      /* mrs x0, dit */
STUB(ssbs, 0xd53b42c0);     /* mrs x0, ssbs */
STUB(mte, 0x9adf1020);      /* irg x0, x1 */
STUB(pan, 0xd5384260);      /* mrs x0, pan */
STUB(lor, 0xd538a4e0);      /* mrs x0, lorid_el1 */
STUB(uao, 0xd5384280);      /* mrs x0, uao */
STUB(pmu, 0xd53b9d00);      /* mrs x0, pmccntr_el0 */
STUB(spe, 0xd53899e0);      /* mrs x0, pmsidr_el1 */

struct feature {
    const char *name;
    unsigned reg, shift, min; /* advertised when field >= min (and not 0xf, a signed "none") */
    const char *stub;
};

static const struct feature features[] = {
    { "AES", ISAR0, 4, 1, stub_aes },
    { "PMULL", ISAR0, 4, 2, stub_pmull },
    { "SHA1", ISAR0, 8, 1, stub_sha1 },
    { "SHA256", ISAR0, 12, 1, stub_sha256 },
    { "SHA512", ISAR0, 12, 2, stub_sha512 },
    { "CRC32", ISAR0, 16, 1, stub_crc32 },
    { "LSE atomics", ISAR0, 20, 2, stub_lse },
    { "RDM", ISAR0, 28, 1, stub_rdm },
    { "SHA3", ISAR0, 32, 1, stub_sha3 },
    { "SM3", ISAR0, 36, 1, stub_sm3 },
    { "SM4", ISAR0, 40, 1, stub_sm4 },
    { "DotProd", ISAR0, 44, 1, stub_dotprod },
    { "FHM", ISAR0, 48, 1, stub_fhm },
    { "FlagM", ISAR0, 52, 1, stub_flagm },
    { "FlagM2", ISAR0, 52, 2, stub_flagm2 },
    { "TLBIOS", ISAR0, 56, 1, stub_tlbios },
    { "RNDR", ISAR0, 60, 1, stub_rndr },
    { "DPB", ISAR1, 0, 1, stub_dpb },
    { "DPB2", ISAR1, 0, 2, stub_dpb2 },
    { "PAuth (APA)", ISAR1, 4, 1, stub_pauth },
    { "PAuth (API)", ISAR1, 8, 1, stub_pauth },
    { "JSCVT", ISAR1, 12, 1, stub_jscvt },
    { "FCMA", ISAR1, 16, 1, stub_fcma },
    { "LRCPC", ISAR1, 20, 1, stub_lrcpc },
    { "LRCPC2", ISAR1, 20, 2, stub_lrcpc2 },
    { "PACGA (GPA)", ISAR1, 24, 1, stub_pacga },
    { "PACGA (GPI)", ISAR1, 28, 1, stub_pacga },
    { "FRINTTS", ISAR1, 32, 1, stub_frintts },
    { "SB", ISAR1, 36, 1, stub_sb },
    { "SPECRES", ISAR1, 40, 1, stub_specres },
    { "BF16", ISAR1, 44, 1, stub_bf16 },
    { "I8MM", ISAR1, 52, 1, stub_i8mm },
    { "FP16", PFR0, 16, 1, stub_fp16 },
    { "AdvSIMD FP16", PFR0, 20, 1, stub_simdfp16 },
    { "RAS", PFR0, 28, 1, stub_ras },
    { "SVE", PFR0, 32, 1, stub_sve },
    { "SVE (ZCR_EL1)", PFR0, 32, 1, stub_zcr },
    { "SVE (ADD)", PFR0, 32, 1, stub_sve_add },
    { "SVE (PTRUE)", PFR0, 32, 1, stub_sve_pred },
    { "DIT", PFR0, 48, 1, stub_dit },
    { "SSBS2", PFR1, 4, 2, stub_ssbs },
    { "MTE", PFR1, 8, 1, stub_mte },
    { "PMUv3", DFR0, 8, 1, stub_pmu },
    { "SPE", DFR0, 32, 1, stub_spe },
    { "PAN", MMFR1, 20, 1, stub_pan },
    { "LOR", MMFR1, 16, 1, stub_lor },
    { "UAO", MMFR2, 4, 1, stub_uao },
};

static volatile uint64_t trapped_esr;
static volatile int trapped;

static int on_exception(struct exc_frame *f)
{
    if (f->vector != VEC_EL1_SYNC)
        return 0;
    trapped++;
    trapped_esr = f->esr;
    f->elr += 4; /* skip it: the stub returns */
    return 1;
}

int main(uint64_t dtb)
{
    uint64_t id[NREGS];
    unsigned used = 0;
    (void)dtb;

    test_begin("idregs");
    mmu_enable(NULL);
    exc_set_handler(on_exception);
    id[PFR0] = read_sysreg_s(ID_AA64PFR0);
    id[PFR1] = read_sysreg_s(ID_AA64PFR1);
    id[ZFR0] = read_sysreg_s(ID_AA64ZFR0);
    id[DFR0] = read_sysreg_s(ID_AA64DFR0);
    id[ISAR0] = read_sysreg_s(ID_AA64ISAR0);
    id[ISAR1] = read_sysreg_s(ID_AA64ISAR1);
    id[MMFR0] = read_sysreg_s(ID_AA64MMFR0);
    id[MMFR1] = read_sysreg_s(ID_AA64MMFR1);
    id[MMFR2] = read_sysreg_s(ID_AA64MMFR2);
    if ((id[PFR0] >> 32) & 0xf) /* SVE instructions trap (EC 0x19) until CPACR_EL1.ZEN allows EL1 and EL0 */
        write_sysreg(cpacr_el1, read_sysreg(cpacr_el1) | 3UL << 16);
    isb();
    for (unsigned r = 0; r < NREGS; r++)
        printf("idregs: %s 0x%016lx\n", reg_names[r], id[r]);
    test_check(((id[PFR0] >> 32) & 0xf) || !id[ZFR0], "ID_AA64ZFR0_EL1 0x%lx without SVE in ID_AA64PFR0_EL1", id[ZFR0]);

    for (unsigned i = 0; i < sizeof features / sizeof features[0]; i++) {
        const struct feature *f = &features[i];
        unsigned field = (id[f->reg] >> f->shift) & 0xf;
        if (field < f->min || field == 0xf)
            continue;
        trapped = 0;
        ((void (*)(void))(uintptr_t)f->stub)();
        used++;
        if (test_check(!trapped, "%s advertised (%s[%u:%u] = %u) but its instruction traps: esr 0x%lx", f->name,
                       reg_names[f->reg], f->shift + 3, f->shift, field, trapped_esr))
            printf("idregs: %s works\n", f->name);
    }
    printf("idregs: %u advertised features exercised\n", used);
    if ((id[PFR0] >> 32) & 0xf) {
        /* ZCR_EL1.LEN picks the vector length (Arm ARM D17.2.174): 0 is 128 bits on every implementation */
        uint64_t (*rdvl)(void) = (uint64_t(*)(void))(uintptr_t)stub_sve;
        write_sysreg(S3_0_C1_C2_0, 0);
        isb();
        uint64_t vl0 = rdvl();
        write_sysreg(S3_0_C1_C2_0, 0xf);
        isb();
        uint64_t vlmax = rdvl();
        test_check(vl0 == 16 && vlmax >= 16 && vlmax % 16 == 0 && vlmax <= 256,
                   "SVE vector length: %lu bytes with ZCR_EL1.LEN 0 (want 16), %lu with LEN 15", vl0, vlmax);
        printf("idregs: SVE vector length 16 to %lu bytes\n", vlmax);
    }
    return test_end();
}
