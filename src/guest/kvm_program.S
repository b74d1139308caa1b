/*
 * The KVM guest's program: 64-bit code that runs at CPL3 inside a vCPU
 * (docs/KVM-GUEST.md). It is data for the VMM: kvm_vm.c copies the bytes
 * between lm_kvm_prog_start and lm_kvm_prog_end into guest RAM at
 * LM_KVM_PROG_GPA, where they migrate with the rest of RAM. Only relative
 * jumps, so it runs wherever it is copied.
 *
 * Registers at entry (set by the VMM, saved and restored as device state):
 *   rsi  guest address of this vCPU's parameter page (struct in kvm_vm.h):
 *          0 kind (0 idle, 1 stress, 2 random/hot), 8 region base,
 *          16 region pages, 24 pages per batch (random/hot),
 *          32 pass counter (written here after each pass, for the VMM),
 *          40 tag (vCPU index << 48, random/hot)
 *   r8   pass counter: passes completed; the only progress state
 *   r9   xorshift state (random/hot)
 * Each pass ends with OUT to port 0x10, a KVM_EXIT_IO the VMM counts,
 * paces and stops at. Port 0x11 says the continuity self-check failed.
 *
 * stress: every pass reads the first byte of each page of the region,
 * checks that it is (pass & 0xff), and stores (pass + 1) & 0xff with
 * stosb, which writes the byte and moves rdi past it in one instruction:
 * at every instruction, the pages below ceil((rdi - base) / 4096) are one
 * pass ahead of the rest. The VMM's check relies on that.
 */
    .section .rodata
    .balign 16
    .globl lm_kvm_prog_start, lm_kvm_prog_end, lm_kvm_prog_offsets
    .code64
lm_kvm_prog_start:
entry:
    mov (%rsi), %rax
    cmp $1, %rax
    je stress_pass
    cmp $2, %rax
    je rand_batch

idle:
    inc %r8
idle_after_inc:
    mov %r8, 32(%rsi)
    out %al, $0x10
    jmp idle

stress_pass:
    mov 8(%rsi), %rdi
    mov 16(%rsi), %rcx
    mov %r8d, %edx
    lea 1(%r8), %eax
stress_page:
    cmpb %dl, (%rdi)
    jne broken
    stosb
    add $4095, %rdi
    dec %rcx
    jnz stress_page
stress_pass_done:
    inc %r8
stress_after_inc:
    mov %r8, 32(%rsi)
    out %al, $0x10
    jmp stress_pass

rand_batch:
    mov 24(%rsi), %rcx
rand_page:
    mov %r9, %rax            /* xorshift64: 13, 7, 17 */
    shl $13, %rax
    xor %rax, %r9
    mov %r9, %rax
    shr $7, %rax
    xor %rax, %r9
    mov %r9, %rax
    shl $17, %rax
    xor %rax, %r9
    mov %r9, %rax
    xor %edx, %edx
    divq 16(%rsi)            /* rdx = page index in the region */
    shl $12, %rdx
    add 8(%rsi), %rdx
    mov 40(%rsi), %rax       /* tag | pass: who wrote it, in which pass */
    or %r8, %rax
    mov %rax, (%rdx)
    dec %rcx
    jnz rand_page
    inc %r8
rand_after_inc:
    mov %r8, 32(%rsi)
    out %al, $0x10
    jmp rand_batch

broken:
    out %al, $0x11
    jmp broken
lm_kvm_prog_end:

    /* Offsets the VMM's continuity check needs (kvm_vm.h, LM_KVM_OFF_*). */
    .balign 8
lm_kvm_prog_offsets:
    .quad stress_page - lm_kvm_prog_start
    .quad stress_pass_done - lm_kvm_prog_start
    .quad stress_after_inc - lm_kvm_prog_start
    .quad idle_after_inc - lm_kvm_prog_start
    .quad rand_after_inc - lm_kvm_prog_start
    .quad broken - lm_kvm_prog_start

    .section .note.GNU-stack,"",@progbits
