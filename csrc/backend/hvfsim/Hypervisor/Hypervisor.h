/*
 * Hypervisor.h - the subset of Apple's Hypervisor.framework C API (Apple Silicon) that vmmpy's hvf
 * backend uses, declared as Apple's header declares it (names, types, constants; written from
 * Apple's reference documentation), for the simulator in this directory (hvfsim.c, over Unicorn).
 * On macOS the compiler finds the framework's own header instead: nothing here is vmmpy's.
 */
#ifndef HVFSIM_HYPERVISOR_H
#define HVFSIM_HYPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* hv_return_t: a mach error; the framework's codes are in the 0xfae94000 range */
typedef int32_t hv_return_t;
enum {
    HV_SUCCESS = 0,
    HV_ERROR = (int32_t)0xfae94001,
    HV_BUSY = (int32_t)0xfae94002,
    HV_BAD_ARGUMENT = (int32_t)0xfae94003,
    HV_ILLEGAL_GUEST_STATE = (int32_t)0xfae94004,
    HV_NO_RESOURCES = (int32_t)0xfae94005,
    HV_NO_DEVICE = (int32_t)0xfae94006,
    HV_DENIED = (int32_t)0xfae94007,
    HV_UNSUPPORTED = (int32_t)0xfae9400f,
};

typedef uint64_t hv_ipa_t;
typedef uint64_t hv_memory_flags_t;
enum {
    HV_MEMORY_READ = 1ull << 0,
    HV_MEMORY_WRITE = 1ull << 1,
    HV_MEMORY_EXEC = 1ull << 2,
};

/* Configuration objects (os_object types in Apple's header: opaque pointers released with os_release). */
typedef struct hv_vm_config_s *hv_vm_config_t;
typedef struct hv_vcpu_config_s *hv_vcpu_config_t;
hv_vm_config_t hv_vm_config_create(void);
hv_return_t hv_vm_config_get_max_ipa_size(uint32_t *ipa_bit_length);
hv_return_t hv_vm_config_get_default_ipa_size(uint32_t *ipa_bit_length);
hv_return_t hv_vm_config_set_ipa_size(hv_vm_config_t config, uint32_t ipa_bit_length);
hv_return_t hv_vm_config_get_ipa_size(hv_vm_config_t config, uint32_t *ipa_bit_length);
/* os_release() for the configuration objects above */
void os_release(void *object);

hv_return_t hv_vm_create(hv_vm_config_t config);
hv_return_t hv_vm_destroy(void);
hv_return_t hv_vm_map(void *addr, hv_ipa_t ipa, size_t size, hv_memory_flags_t flags);
hv_return_t hv_vm_unmap(hv_ipa_t ipa, size_t size);
hv_return_t hv_vm_protect(hv_ipa_t ipa, size_t size, hv_memory_flags_t flags);

typedef uint64_t hv_vcpu_t;

/* The enumerated types are integers of a fixed width (OS_ENUM in Apple's header), their values constants. */
typedef uint64_t hv_exception_syndrome_t;
typedef uint64_t hv_exception_address_t;

typedef uint32_t hv_exit_reason_t;
enum {
    HV_EXIT_REASON_CANCELED = 0,
    HV_EXIT_REASON_EXCEPTION = 1,
    HV_EXIT_REASON_VTIMER_ACTIVATED = 2,
    HV_EXIT_REASON_UNKNOWN = 3,
};

typedef struct {
    hv_exception_syndrome_t syndrome;       /* ESR_EL2 */
    hv_exception_address_t virtual_address; /* FAR_EL2 */
    hv_ipa_t physical_address;              /* from HPFAR_EL2 */
} hv_vcpu_exit_exception_t;

typedef struct {
    hv_exit_reason_t reason;
    hv_vcpu_exit_exception_t exception;
} hv_vcpu_exit_t;

typedef uint32_t hv_interrupt_type_t;
enum {
    HV_INTERRUPT_TYPE_IRQ = 0,
    HV_INTERRUPT_TYPE_FIQ = 1,
};

typedef uint32_t hv_reg_t;
enum {
    HV_REG_X0 = 0,
    HV_REG_X1,
    HV_REG_X2,
    HV_REG_X3,
    HV_REG_X4,
    HV_REG_X5,
    HV_REG_X6,
    HV_REG_X7,
    HV_REG_X8,
    HV_REG_X9,
    HV_REG_X10,
    HV_REG_X11,
    HV_REG_X12,
    HV_REG_X13,
    HV_REG_X14,
    HV_REG_X15,
    HV_REG_X16,
    HV_REG_X17,
    HV_REG_X18,
    HV_REG_X19,
    HV_REG_X20,
    HV_REG_X21,
    HV_REG_X22,
    HV_REG_X23,
    HV_REG_X24,
    HV_REG_X25,
    HV_REG_X26,
    HV_REG_X27,
    HV_REG_X28,
    HV_REG_X29,
    HV_REG_FP = HV_REG_X29,
    HV_REG_X30,
    HV_REG_LR = HV_REG_X30,
    HV_REG_PC,
    HV_REG_FPCR,
    HV_REG_FPSR,
    HV_REG_CPSR,
};

typedef uint32_t hv_simd_fp_reg_t;
enum {
    HV_SIMD_FP_REG_Q0 = 0,
    /* ... through Q31 = 31 */
    HV_SIMD_FP_REG_Q31 = 31,
};
typedef unsigned char hv_simd_fp_uchar16_t __attribute__((vector_size(16)));

/* System registers: the value is the MRS/MSR encoding op0:op1:CRn:CRm:op2 (16 bits). */
typedef uint16_t hv_sys_reg_t;
enum {
    HV_SYS_REG_DBGBVR0_EL1 = 0x8004,
    HV_SYS_REG_MDSCR_EL1 = 0x8012,
    HV_SYS_REG_MIDR_EL1 = 0xc000,
    HV_SYS_REG_MPIDR_EL1 = 0xc005,
    HV_SYS_REG_ID_AA64PFR0_EL1 = 0xc020,
    HV_SYS_REG_ID_AA64PFR1_EL1 = 0xc021,
    HV_SYS_REG_ID_AA64DFR0_EL1 = 0xc028,
    HV_SYS_REG_ID_AA64MMFR0_EL1 = 0xc038,
    HV_SYS_REG_ID_AA64MMFR1_EL1 = 0xc039,
    HV_SYS_REG_SCTLR_EL1 = 0xc080,
    HV_SYS_REG_CPACR_EL1 = 0xc082,
    HV_SYS_REG_TTBR0_EL1 = 0xc100,
    HV_SYS_REG_TTBR1_EL1 = 0xc101,
    HV_SYS_REG_TCR_EL1 = 0xc102,
    HV_SYS_REG_SPSR_EL1 = 0xc200,
    HV_SYS_REG_ELR_EL1 = 0xc201,
    HV_SYS_REG_SP_EL0 = 0xc208,
    HV_SYS_REG_AFSR0_EL1 = 0xc288,
    HV_SYS_REG_AFSR1_EL1 = 0xc289,
    HV_SYS_REG_ESR_EL1 = 0xc290,
    HV_SYS_REG_FAR_EL1 = 0xc300,
    HV_SYS_REG_PAR_EL1 = 0xc3a0,
    HV_SYS_REG_MAIR_EL1 = 0xc510,
    HV_SYS_REG_AMAIR_EL1 = 0xc518,
    HV_SYS_REG_VBAR_EL1 = 0xc600,
    HV_SYS_REG_CONTEXTIDR_EL1 = 0xc681,
    HV_SYS_REG_TPIDR_EL1 = 0xc684,
    HV_SYS_REG_CNTKCTL_EL1 = 0xc708,
    HV_SYS_REG_CSSELR_EL1 = 0xd000,
    HV_SYS_REG_TPIDR_EL0 = 0xde82,
    HV_SYS_REG_TPIDRRO_EL0 = 0xde83,
    HV_SYS_REG_CNTV_CTL_EL0 = 0xdf19,
    HV_SYS_REG_CNTV_CVAL_EL0 = 0xdf1a,
    HV_SYS_REG_SP_EL1 = 0xe208,
};

hv_return_t hv_vcpu_create(hv_vcpu_t *vcpu, hv_vcpu_exit_t **exit, hv_vcpu_config_t config);
hv_return_t hv_vcpu_destroy(hv_vcpu_t vcpu);
hv_return_t hv_vcpu_run(hv_vcpu_t vcpu);
hv_return_t hv_vcpus_exit(hv_vcpu_t *vcpus, uint32_t vcpu_count);
hv_return_t hv_vcpu_get_reg(hv_vcpu_t vcpu, hv_reg_t reg, uint64_t *value);
hv_return_t hv_vcpu_set_reg(hv_vcpu_t vcpu, hv_reg_t reg, uint64_t value);
hv_return_t hv_vcpu_get_simd_fp_reg(hv_vcpu_t vcpu, hv_simd_fp_reg_t reg, hv_simd_fp_uchar16_t *value);
hv_return_t hv_vcpu_set_simd_fp_reg(hv_vcpu_t vcpu, hv_simd_fp_reg_t reg, hv_simd_fp_uchar16_t value);
hv_return_t hv_vcpu_get_sys_reg(hv_vcpu_t vcpu, hv_sys_reg_t reg, uint64_t *value);
hv_return_t hv_vcpu_set_sys_reg(hv_vcpu_t vcpu, hv_sys_reg_t reg, uint64_t value);
hv_return_t hv_vcpu_get_pending_interrupt(hv_vcpu_t vcpu, hv_interrupt_type_t type, bool *pending);
hv_return_t hv_vcpu_set_pending_interrupt(hv_vcpu_t vcpu, hv_interrupt_type_t type, bool pending);
hv_return_t hv_vcpu_get_vtimer_mask(hv_vcpu_t vcpu, bool *vtimer_is_masked);
hv_return_t hv_vcpu_set_vtimer_mask(hv_vcpu_t vcpu, bool vtimer_is_masked);
hv_return_t hv_vcpu_get_vtimer_offset(hv_vcpu_t vcpu, uint64_t *vtimer_offset);
hv_return_t hv_vcpu_set_vtimer_offset(hv_vcpu_t vcpu, uint64_t vtimer_offset);

#ifdef __cplusplus
}
#endif

#endif
