"""The guest's fixed part: boot, long mode, the AP that runs the events, fault recovery, output.

Written for this project (GNU as, AT&T syntax).  The BSP enters from a multiboot loader in 32-bit
protected mode, builds the guest's own paging structures, copies a real-mode trampoline to
0x8000 and starts the AP with INIT+SIPI.  The AP runs every event (so an ``init`` event is a real
INIT+SIPI that the BSP sends to it) and prints one line per event on the debugcon port 0xE9:

    @<event> <vector> <error code> <cr2> <value>      vector ff = no fault
    P<phase>                                          the AP (re)started at this phase
    X <vector> <error code> <rip> <cr2>               a fault nobody armed: the guest stops

The BSP stays in protected mode without paging; it only sends INIT+SIPI when the AP asks and
exits through isa-debug-exit when the AP says it is done.  State that must survive a RESET
(port 0xCF9) lives in a control block in RAM, which QEMU does not clear on reset.
"""

from __future__ import annotations

from difftest.capture.qemu.layout import (
    CONTROL_BLOCK,
    INFRA_TABLES,
    KERNEL_CS,
    KERNEL_DS,
    TABLE_POOL,
    USER_CS,
    USER_DS,
    WINDOW,
    WINDOW_PML4_INDEX,
)

LINKER_SCRIPT = """\
ENTRY(_start)
SECTIONS
{
  . = 0x100000;
  .multiboot : { *(.multiboot) }
  . = ALIGN(4096);
  user_start = .;
  .user : { *(.user) }
  . = ALIGN(4096);
  user_end = .;
  .text : { *(.text) }
  .rodata : { *(.rodata) }
  .data : { *(.data) }
  .bss : { *(.bss) }
  ASSERT(. <= 0x200000, "guest image larger than its 2 MiB identity map")
}
"""

CB_MAGIC = 0x5044544B  # "KTDP"
# control block offsets
CB_PHASE, CB_FRESH, CB_EXPECT_RESET, CB_AP_CMD = 8, 12, 16, 20
AP_CMD_INIT, AP_CMD_DONE = 1, 2

_RUNTIME = r"""
.set CB, {cb}
.set POOL, {pool}
.set CB_MAGIC, {cb_magic}
.set WCB, ({window} + CB)
.set KCS, {kcs}
.set KDS, {kds}
.set UCS, {ucs}
.set UDS, {uds}

.section .multiboot, "a"
.align 4
.long 0x1BADB002, 0, -(0x1BADB002)

.section .user, "ax"
.align 16
user_stack_bottom:
.fill 64, 1, 0
user_stack_top:

.section .text
.code32
.globl _start
_start:
    cli
    mov $bsp_stack_top, %esp
    lgdt gdt_ptr32
    ljmp $0x18, $1f
1:  mov $KDS, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    cmpl $CB_MAGIC, CB
    jne 2f
    cmpl $1, CB+{expect_reset}
    jne unexpected_reboot
    movl $0, CB+{expect_reset}
    jmp 3f
2:  movl $CB_MAGIC, CB
    movl $0, CB+{phase}
    movl $1, CB+{fresh}
    movl $0, CB+{expect_reset}
3:  movl $0, CB+{ap_cmd}
    cmpl $0, CB+{fresh}
    je 4f
    mov $POOL, %edi
    mov $({n_tables} * 1024), %ecx
    xor %eax, %eax
    rep stosl
    movl $0, CB+{fresh}
4:  mov CB+{phase}, %eax
    mov phase_key(,%eax,4), %ebx
    call build_infra
    call build_tss_descriptor
    mov $tramp_start, %esi
    mov $0x8000, %edi
    mov $(tramp_end - tramp_start), %ecx
    rep movsb
    call start_ap
bsp_loop:
    mov CB+{ap_cmd}, %eax
    cmp ${ap_init}, %eax
    je 5f
    cmp ${ap_done}, %eax
    je bsp_exit
    pause
    jmp bsp_loop
5:  movl $0, CB+{ap_cmd}
    call start_ap
    jmp bsp_loop
bsp_exit:
    mov $'D', %al
    out %al, $0xe9
    mov $'\n', %al
    out %al, $0xe9
    movl $0, CB
    mov $0, %al
    out %al, $0xf4
    hlt
    jmp bsp_exit
unexpected_reboot:
    mov $'T', %al
    out %al, $0xe9
    mov $'\n', %al
    out %al, $0xe9
    movl $0, CB
    mov $0, %al
    out %al, $0xf4
    hlt
    jmp unexpected_reboot

/* INIT then SIPI (vector 8 -> 0x8000) to APIC ID 1 through the xAPIC ICR */
start_ap:
    movl $0x01000000, 0xFEE00310
    movl $0x00004500, 0xFEE00300
1:  testl $0x1000, 0xFEE00300
    jnz 1b
    movl $0x01000000, 0xFEE00310
    movl $0x00004608, 0xFEE00300
2:  testl $0x1000, 0xFEE00300
    jnz 2b
    ret

/* the guest's own entries (key in %ebx, as bits 59..62 of the high dword): identity map of
   [0, 2 MiB) with user pages for the CPL3 snippets, and the window onto physical [0, 2 GiB) */
build_infra:
    movl $(POOL + 0x1000 + 7), POOL
    movl $0, POOL + 4
    movl $(POOL + 0x2000 + 7), POOL + 0x1000
    movl $0, POOL + 0x1004
    movl $(POOL + 0x3000 + 7), POOL + 0x2000
    movl $0, POOL + 0x2004
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    or $3, %eax
    cmp $user_start, %eax
    jb 2f
    cmp $user_end, %eax
    jae 2f
    or $4, %eax
2:  mov %eax, POOL + 0x3000(,%ecx,8)
    mov %ebx, POOL + 0x3004(,%ecx,8)
    inc %ecx
    cmp $512, %ecx
    jb 1b
    movl $(POOL + 0x4000 + 3), POOL + {window_index} * 8
    movl $0, POOL + {window_index} * 8 + 4
    movl $0x83, POOL + 0x4000
    mov %ebx, POOL + 0x4004
    movl $0x40000083, POOL + 0x4008
    mov %ebx, POOL + 0x400c
    ret

build_tss_descriptor:
    mov $tss, %eax
    movw $103, gdt + 0x30
    mov %ax, gdt + 0x32
    shr $16, %eax
    mov %al, gdt + 0x34
    movb $0x89, gdt + 0x35
    movb $0, gdt + 0x36
    mov %ah, gdt + 0x37
    movl $0, gdt + 0x38
    movl $0, gdt + 0x3c
    ret

/* AP: real mode at 0x8000 -> protected mode -> long mode */
.code16
tramp_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    lgdtl (tramp_gdtp - tramp_start + 0x8000)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, $ap32
tramp_gdtp:
    .word gdt_end - gdt - 1
    .long gdt
tramp_end:

.code32
ap32:
    mov $KDS, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $ap_stack_top, %esp
    mov $0x20, %eax
    mov %eax, %cr4
    mov $POOL, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov $0x80000011, %eax
    mov %eax, %cr0
    ljmp $KCS, $ap64

.code64
ap64:
    mov $KDS, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    lgdt gdt_ptr64(%rip)
    movabs $ap_stack_top, %rsp
    call build_idt
    lidt idt_ptr64(%rip)
    movb $0x89, gdt + 0x35(%rip)
    mov $0x30, %ax
    ltr %ax
    movabs $WCB, %rax
    movl {phase}(%rax), %eax
    push %rax
    mov $'P', %al
    call putc
    mov (%rsp), %rax
    call puthex
    mov $'\n', %al
    call putc
    pop %rax
    lea phase_table(%rip), %rdx
    jmp *(%rdx,%rax,8)

build_idt:
    lea idt(%rip), %rdi
    lea isr_table(%rip), %rsi
    xor %ecx, %ecx
1:  mov (%rsi,%rcx,8), %rax
    mov %ax, (%rdi)
    movw $KCS, 2(%rdi)
    movw $0x8E00, 4(%rdi)
    shr $16, %rax
    mov %ax, 6(%rdi)
    shr $16, %rax
    mov %eax, 8(%rdi)
    movl $0, 12(%rdi)
    add $16, %rdi
    inc %ecx
    cmp $32, %ecx
    jb 1b
    ret

putc:
    out %al, $0xe9
    ret

/* rax as hex without leading zeros */
puthex:
    push %rcx
    push %rdx
    mov %rax, %rdx
    mov $60, %ecx
1:  mov %rdx, %rax
    shr %cl, %rax
    test %rax, %rax
    jnz 2f
    test %ecx, %ecx
    jz 2f
    sub $4, %ecx
    jmp 1b
2:  mov %rdx, %rax
    shr %cl, %rax
    and $15, %eax
    cmp $10, %eax
    jb 3f
    add $('a' - 10 - '0'), %eax
3:  add $'0', %eax
    out %al, $0xe9
    sub $4, %ecx
    jns 2b
    pop %rdx
    pop %rcx
    ret

/* one result line: @event vector error cr2 value */
report:
    mov $'@', %al
    call putc
    mov cur_event(%rip), %rax
    call puthex
    mov $' ', %al
    call putc
    mov ex_vec(%rip), %rax
    call puthex
    mov $' ', %al
    call putc
    mov ex_err(%rip), %rax
    call puthex
    mov $' ', %al
    call putc
    mov ex_cr2(%rip), %rax
    call puthex
    mov $' ', %al
    call putc
    mov ex_val(%rip), %rax
    call puthex
    mov $'\n', %al
    call putc
    ret

/* prepare a probe: no fault yet, recovery at %rax */
arm:
    movq $0xff, ex_vec(%rip)
    movq $0, ex_err(%rip)
    movq $0, ex_cr2(%rip)
    movq $0, ex_val(%rip)
    movq $0, ex_rip(%rip)
    mov %rax, recover_rip(%rip)
    ret

isr_common:
    push %rax
    push %rdx
    mov %rax, ex_rax(%rip)
    mov %rdx, ex_rdx(%rip)
    mov 16(%rsp), %rax
    mov %rax, ex_vec(%rip)
    mov 24(%rsp), %rax
    mov %rax, ex_err(%rip)
    mov 32(%rsp), %rax
    mov %rax, ex_rip(%rip)
    mov %cr2, %rax
    mov %rax, ex_cr2(%rip)
    mov recover_rip(%rip), %rax
    test %rax, %rax
    jz unexpected_fault
    movq $0, recover_rip(%rip)
    mov %rax, 32(%rsp)
    movq $KCS, 40(%rsp)
    movq $2, 48(%rsp)
    mov saved_krsp(%rip), %rax
    mov %rax, 56(%rsp)
    movq $KDS, 64(%rsp)
    pop %rdx
    pop %rax
    add $16, %rsp
    iretq
unexpected_fault:
    mov $'X', %al
    call putc
    mov $' ', %al
    call putc
    mov ex_vec(%rip), %rax
    call puthex
    mov $' ', %al
    call putc
    mov ex_err(%rip), %rax
    call puthex
    mov $' ', %al
    call putc
    mov ex_rip(%rip), %rax
    call puthex
    mov $' ', %al
    call putc
    mov ex_cr2(%rip), %rax
    call puthex
    mov $'\n', %al
    call putc
ap_finish:
    movabs $WCB, %rax
    movl ${ap_done}, {ap_cmd}(%rax)
ap_park:
    cli
    pause
    jmp ap_park

{isr_stubs}

/* ---------------- the compiled events ---------------- */
{events}
    jmp ap_finish

.section .rodata
.align 8
isr_table:
{isr_table}
phase_table:
{phase_table}
phase_key:
{phase_key}

.section .data
.align 16
gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00CF9A000000FFFF
    .quad 0x00CFF2000000FFFF
    .quad 0x00AFFA000000FFFF
    .quad 0, 0
    .quad 0, 0
gdt_end:
gdt_ptr32:
    .word gdt_end - gdt - 1
    .long gdt
.align 8
gdt_ptr64:
    .word gdt_end - gdt - 1
    .quad gdt
.align 8
idt_ptr64:
    .word 32 * 16 - 1
    .quad idt
.align 16
tss:
    .long 0
    .quad exc_stack_top
    .fill 92, 1, 0

.section .bss
.align 4096
idt: .fill 32 * 16, 1, 0
cur_event: .quad 0
ex_vec: .quad 0
ex_err: .quad 0
ex_cr2: .quad 0
ex_val: .quad 0
ex_rip: .quad 0
ex_rax: .quad 0
ex_rdx: .quad 0
recover_rip: .quad 0
saved_krsp: .quad 0
.align 16
bsp_stack: .fill 4096, 1, 0
bsp_stack_top:
ap_stack: .fill 8192, 1, 0
ap_stack_top:
exc_stack: .fill 8192, 1, 0
exc_stack_top:
"""

_ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})


def _isr_stubs() -> tuple[str, str]:
    stubs, table = [], []
    for v in range(32):
        lines = [f"isr_{v}:"]
        if v not in _ERROR_CODE_VECTORS:
            lines.append("    pushq $0")
        lines += [f"    pushq ${v}", "    jmp isr_common"]
        stubs.append("\n".join(lines))
        table.append(f"    .quad isr_{v}")
    return "\n".join(stubs), "\n".join(table)


def program_source(events: str, user: str, phases: list[str], keys: list[int], *, n_tables: int) -> str:
    """The whole guest: the runtime around the compiled ``events`` (64-bit code run by the AP),
    the CPL3 snippets ``user``, the labels where each boot/INIT phase starts and, per phase, the
    protection key of the guest's own pages."""
    stubs, table = _isr_stubs()
    src = _RUNTIME.format(
        cb=hex(CONTROL_BLOCK), pool=hex(TABLE_POOL), cb_magic=hex(CB_MAGIC), window=hex(WINDOW),
        kcs=KERNEL_CS, kds=KERNEL_DS, ucs=USER_CS, uds=USER_DS, phase=CB_PHASE, fresh=CB_FRESH,
        expect_reset=CB_EXPECT_RESET, ap_cmd=CB_AP_CMD, ap_init=AP_CMD_INIT, ap_done=AP_CMD_DONE,
        n_tables=max(n_tables, INFRA_TABLES), window_index=WINDOW_PML4_INDEX, isr_stubs=stubs, isr_table=table, events=events,
        phase_table="\n".join(f"    .quad {p}" for p in phases),
        phase_key="\n".join(f"    .long {k << 27:#x}" for k in keys),
    )
    return src + "\n.section .user, \"ax\"\n" + user + "\n"
