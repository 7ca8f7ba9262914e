/*
 * inject.c - execute system calls inside a ptrace-stopped process (x86-64).
 *
 * Design (the what and why; docs/PROTOCOL.md has the kernel-side argument):
 *
 * Stopping.  Every thread listed in /proc/PID/task is PTRACE_SEIZEd and PTRACE_INTERRUPTed,
 * then waited for (waitpid __WALL, polled with a deadline so a thread stuck in D state gives
 * ETIMEDOUT instead of a hang).  The list is read again until it is stable: a thread cloned by
 * a thread we had not stopped yet is caught by the next pass; once all are stopped none can be
 * created.  A thread that exits meanwhile (ESRCH, or an exit status from waitpid) is dropped.
 * SEIZE rather than ATTACH: no SIGSTOP is sent, so job control and the process's own signal
 * state are untouched, and PTRACE_INTERRUPT gives a clean event stop (PTRACE_EVENT_STOP).
 * No PTRACE_O_EXITKILL: if ptreloc dies the kernel detaches (exit_ptrace) and the process runs on.
 *
 * Executing a system call.  Like CRIU's compel (compel/src/lib/infect.c, parasite_setup_regs():
 * "orig_ax = -1: avoid end of syscall processing") we set rip to a `syscall` instruction, rax and
 * the argument registers, and orig_rax = -1 so the kernel's restart logic
 * (arch_do_signal_or_restart() in arch/x86/kernel/signal.c) does not rewrite our registers when
 * the stopped thread resumes from its get_signal() stop.  We resume with PTRACE_SYSCALL and take
 * the syscall-enter and syscall-exit stops (PTRACE_O_TRACESYSGOOD marks them), reading the
 * result from rax at the exit stop.  Neither single-stepping nor int3 is used: both leave a trap
 * that would kill the process with SIGTRAP if ptreloc died at the wrong moment, while a
 * PTRACE_SYSCALL stop simply does not happen once the tracer is gone.
 *
 * The trampoline.  Only the first two calls (mmap of a scratch mapping, mprotect of its code
 * page) run at a `syscall` instruction the process already has (the one the thread was stopped
 * in, rip - 2, else the first 0f 05 found in an executable mapping), plus the final munmap.
 * Everything else runs in the scratch mapping's code page, whose code is written so that the
 * thread puts itself back together if ptreloc is killed (SIGKILL) at any point:
 *   - tramp_syscall: `syscall; jmp restore` (one call; the tracer redirects at its exit stop);
 *   - tramp_batch: every VMA of a table mremap'd away, then every one back (a failed move back
 *     is retried after restoring the saved memory policy), then a getpid marker the tracer stops
 *     at; a tracer that dies mid-batch leaves the thread to finish the batch by itself;
 *   - restore: open the gate the parked threads wait on (see Parking), re-register rseq,
 *     restore the memory policy and the signal mask from the data page, load every register
 *     from the saved image and jump to the saved rip.  The image is
 *     the thread's registers *with the kernel's no-handler restart already applied* (rip - 2,
 *     rax = orig_rax or __NR_restart_syscall), which is what resuming the interrupted syscall
 *     means when there is no kernel stop left to do it for us.
 * On the normal path the thread never reaches `restore`: the tracer makes the thread pass
 * through get_signal() once more (PTRACE_INTERRUPT + PTRACE_CONT from the last syscall-exit stop,
 * with the restart-applied registers set, which gives an event stop inside get_signal()), sets
 * the saved registers back there exactly as they were (rax = -ERESTART*, orig_rax = nr), and
 * PTRACE_DETACH lets arch_do_signal_or_restart() restart the interrupted system call as if
 * nothing had happened.  (At a syscall-exit stop the exact registers would be wrong: the restart
 * code only runs when a signal or a trap is pending.)  At every moment the registers set are
 * right for the stop the thread is in, so a tracer that dies anywhere leaves it correct.
 *
 * Signals.  The injected thread blocks every signal (rt_sigprocmask) right after the trampoline
 * is in place, so signals arriving while it works stay pending and are delivered by the kernel,
 * with their siginfo, after the mask is restored.  A signal dequeued in the short window before
 * that (a signal-delivery stop we did not expect) is suppressed and re-sent with tgkill() after
 * detaching (its siginfo is lost).  Synchronous faults raised by our own code are dropped.
 *
 * Parking (the other threads).  While VMAs are away a thread must not run the process's own code:
 * its text, stack and data may be among them.  The ptrace stop keeps them still only while
 * ptreloc lives - if it is SIGKILLed, exit_ptrace() releases every thread at once.  So before
 * the first batch every other thread is sent, from its stop, into its own copy of the park code
 * (PARK_CODE, one PARK_STRIDE slot each, its data PARK_D further on) and stepped to a futex wait
 * on a gate word in the data page: on the way it blocks every signal (saving its own mask - the
 * one a ppoll()/sigsuspend() had replaced is back by then) and unregisters its rseq (the kernel
 * writes that area on every return to user mode).  A parked thread touches only the scratch
 * mapping.  The tracer brings each back (ptr_inject_unpark(), or the detach) by interrupting
 * the wait, running its unpark code (rseq again) to a getpid marker, and setting its registers
 * and mask back at one more get_signal() stop, as for the injected thread.  If the tracer dies,
 * the injected thread, which always ends in `restore`, opens the gate first: each parked thread
 * then re-registers rseq, restores its mask and its registers (restart applied) by itself.  At
 * every step a parked thread's registers lead there too, so a kill anywhere in parking,
 * moving or unparking leaves every thread whole (tests: ptr_inject_test_kill_tracer_at()).
 * A signal dequeued at a thread's first stop is re-sent with tgkill() once it blocks it.
 *
 * rseq.  After every context switch the kernel writes the thread's rseq area on its way back to
 * user mode (rseq_handle_notify_resume); if that area's VMA were away the write would fail and the
 * kernel would kill the process with SIGSEGV.  So the injected thread's rseq registration is
 * undone for the duration (PTRACE_GET_RSEQ_CONFIGURATION gives its address, length and
 * signature) and made again before resuming.  A thread whose rip is inside an active rseq
 * critical section is not used (EAGAIN): our own returns to user mode would clear its rseq_cs.
 * The same holds for a thread to be parked: a thread inside one fails the attach with EAGAIN.
 *
 * Known residual risk: if ptreloc is SIGKILLed during one of the three bootstrap calls that run
 * at the process's own `syscall` instruction (mmap, mprotect at attach; munmap at detach, each a
 * few microseconds) the thread resumes after that instruction with our registers.
 */
#include "ptreloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <sys/user.h>
#define PTR_INJ_SUPPORTED 1
#else
#define PTR_INJ_SUPPORTED 0
#endif

/**
 * ptr_inject_supported() - is the injector built for this machine (x86-64 only)?
 *
 * Return: 1 when it is, 0 when every other ptr_inject_*() returns -ENOSYS.
 * Locking: none; a constant.
 */
int ptr_inject_supported(void)
{
	return PTR_INJ_SUPPORTED;
}

static const char *const step_names[PTR_INJ_NSTEPS] = {
	[PTR_INJ_STEP_NONE] = "none",
	[PTR_INJ_STEP_ARGS] = "arguments",
	[PTR_INJ_STEP_ARCH] = "architecture",
	[PTR_INJ_STEP_LIST_TASKS] = "readdir(/proc/PID/task)",
	[PTR_INJ_STEP_SEIZE] = "ptrace(PTRACE_SEIZE)",
	[PTR_INJ_STEP_INTERRUPT] = "ptrace(PTRACE_INTERRUPT)",
	[PTR_INJ_STEP_WAIT] = "waitpid",
	[PTR_INJ_STEP_GETREGS] = "ptrace(PTRACE_GETREGS)",
	[PTR_INJ_STEP_SETREGS] = "ptrace(PTRACE_SETREGS)",
	[PTR_INJ_STEP_RESUME] = "ptrace(PTRACE_SYSCALL)",
	[PTR_INJ_STEP_RSEQ_CONFIG] = "ptrace(PTRACE_GET_RSEQ_CONFIGURATION)",
	[PTR_INJ_STEP_RSEQ_CS] = "rseq critical section",
	[PTR_INJ_STEP_MEM] = "/proc/PID/mem",
	[PTR_INJ_STEP_FIND_SYSCALL] = "find syscall instruction",
	[PTR_INJ_STEP_REMOTE] = "injected system call",
	[PTR_INJ_STEP_PROTOCOL] = "unexpected ptrace stop",
	[PTR_INJ_STEP_DETACH] = "ptrace(PTRACE_DETACH)",
	[PTR_INJ_STEP_KILL] = "kill",
	[PTR_INJ_STEP_KCMP] = "kcmp(KCMP_VM)",
	[PTR_INJ_STEP_NOMEM] = "malloc",
};

/**
 * ptr_inject_step_name() - the name of a failed step (the system call it stands for).
 * @step: an enum ptr_inj_step value.
 *
 * Return: a static string; "unknown" for a value out of range.
 * Locking: none.
 */
const char *ptr_inject_step_name(int step)
{
	if (step < 0 || step >= PTR_INJ_NSTEPS || !step_names[step])
		return "unknown";
	return step_names[step];
}

/*
 * Test hook (not a fake: a real SIGKILL of the tracer, at a chosen point instead of a timed
 * one).  tests/test_inject.py uses it to kill ptreloc exactly where a kill is most dangerous.
 */
static int test_kill_at; /* enum ptr_inj_test_kill */

/**
 * ptr_inject_test_kill_tracer_at() - SIGKILL the calling process at a chosen point (tests only).
 * @where: PTR_INJ_KILL_NONE, or where to die: PTR_INJ_KILL_ALL_AWAY (in a batch, once every VMA
 *   is away: at the first move back), PTR_INJ_KILL_PARKING (after the first other thread is
 *   parked), PTR_INJ_KILL_UNPARKING (after the first parked thread was sent to unpark).
 *
 * Return: 0, or -EINVAL for an unknown @where.
 * Locking: none; process-global, set before the session that should die.
 */
int ptr_inject_test_kill_tracer_at(int where)
{
	if (where < PTR_INJ_KILL_NONE || where > PTR_INJ_KILL_UNPARKING)
		return -EINVAL;
	test_kill_at = where;
	return 0;
}

static void test_kill_point(int where)
{
	if (test_kill_at == where)
		kill(getpid(), SIGKILL);
}

static int fail(struct ptr_inj_err *err, int step, int tid, int rc)
{
	if (err && err->step == PTR_INJ_STEP_NONE) {
		err->step = step;
		err->tid = tid;
	}
	return rc;
}

#define KCMP_VM 1

/**
 * ptr_kcmp_same_vm() - whether two processes share one address space (kcmp(2) KCMP_VM).
 * @pid1: a process.
 * @pid2: another process.
 * @err: filled on failure.
 *
 * Return: 1 if they share their mm, 0 if not, -errno (ESRCH, EPERM) on failure.
 * Locking: none.
 */
int ptr_kcmp_same_vm(int pid1, int pid2, struct ptr_inj_err *err)
{
	long rc = syscall(SYS_kcmp, pid1, pid2, KCMP_VM, 0, 0);

	if (rc < 0)
		return fail(err, PTR_INJ_STEP_KCMP, pid2, -errno);
	return rc == 0;
}

#if PTR_INJ_SUPPORTED

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif
struct rseq_config {
	uint64_t rseq_abi_pointer;
	uint32_t rseq_abi_size;
	uint32_t signature;
	uint32_t flags;
	uint32_t pad;
};

#define PAGE 4096UL
#define NR_MMAP 9
#define NR_MPROTECT 10
#define NR_MUNMAP 11
#define NR_RT_SIGPROCMASK 14
#define NR_MREMAP 25
#define NR_GETPID 39
#define NR_RESTART_SYSCALL 219
#define NR_SET_MEMPOLICY 238
#define NR_GET_MEMPOLICY 239
#define NR_RSEQ 334
#define NR_FUTEX 202
#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129
#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ERESTART_RESTARTBLOCK 516
#define USER_CS_64 0x33
#define MAXNODE (PTR_INJ_MASK_WORDS * 64 + 1)

/*
 * scratch mapping: [code page][data page][batch pages][park code][park data].  Thread slot k
 * (its index in struct ptr_inject's threads) has a copy of the park code at PARK_CODE + k *
 * PARK_STRIDE and its data PARK_D bytes further on, which the copy reaches rip-relative.
 * The park regions are MAP_NORESERVE address space: only the slots written are ever backed.
 */
#define SCRATCH_BATCH_PAGES 64
#define PARK_STRIDE 512
#define PARK_MAX 1024
#define PARK_D (PARK_MAX * PARK_STRIDE)          /* 0x80000 */
#define PARK_CODE ((2 + SCRATCH_BATCH_PAGES) * PAGE)
#define SCRATCH_LEN (PARK_CODE + 2 * PARK_D)
#define SCRATCH_HINT 0x200000000000UL /* 32 TiB: below the 47-bit mmap area, above brk */
/* data page layout (offsets from its start) */
#define D_IMAGE 0x000      /* r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi fl sp ip */
#define D_RIP 0x088
#define D_RSEQ_PTR 0x100
#define D_RSEQ_LEN 0x108
#define D_RSEQ_SIG 0x10c
#define D_POL_VALID 0x110
#define D_POL_MODE 0x118
#define D_POL_MAXNODE 0x120
#define D_MASK_VALID 0x128
#define D_SIGMASK 0x130
#define D_ALLMASK 0x138
#define D_POL_MASK 0x140   /* 128 bytes */
#define D_GATE 0x1c0       /* u32: 0 while threads are to stay parked; the restore opens it */
#define D_USER 0x400       /* free for the caller */
#define D_USER_LEN 0xc00
#define ENTRY_BYTES 48     /* struct ptr_inj_move */
/* park data slot layout (offsets from the slot's start) */
#define P_IMAGE 0x00       /* as D_IMAGE: 17 registers, then rip */
#define P_RIP 0x88
#define P_RSEQ_PTR 0x90
#define P_RSEQ_LEN 0x98    /* u32 length, then u32 signature */
#define P_RSEQ_SIG 0x9c
#define P_SIGMASK 0xa0     /* the thread's own mask, saved by the park code */
#define P_ALLMASK 0xa8
#define P_GATE 0xb0        /* the gate's address */
#define P_SLOT_BYTES 0xb8

#define S_(x) #x
#define S(x) S_(x)
#define DREF(off) "ptr_tramp_start+4096+" S(off) "(%rip)"
#define PREF(off) "ptr_park_start+" S(PARK_D) "+" S(off) "(%rip)"

/*
 * The trampoline, assembled into our own read-only data and copied into the process's code
 * page.  All data references are rip-relative to the page after the code page.
 */
__asm__(
	".pushsection .rodata.ptr_tramp,\"a\"\n"
	".balign 16\n"
	".globl ptr_tramp_start\n.hidden ptr_tramp_start\n"
	"ptr_tramp_start:\n"
	/* tramp_syscall (offset 0): one call set up by the tracer */
	"	syscall\n"
	"	jmp ptr_tramp_restore\n"
	".globl ptr_tramp_batch\n.hidden ptr_tramp_batch\n"
	"ptr_tramp_batch:\n" /* r12 = table, r13 = entries */
	"	xor %r14d, %r14d\n"
	"	mov %r12, %r15\n"
	"1:	cmp %r13, %r14\n"
	"	jae 2f\n"
	"	mov $" S(NR_MREMAP) ", %eax\n"
	"	mov 0(%r15), %rdi\n"
	"	mov 8(%r15), %rsi\n"
	"	mov %rsi, %rdx\n"
	"	mov $3, %r10d\n" /* MREMAP_MAYMOVE | MREMAP_FIXED */
	"	mov 16(%r15), %r8\n"
	"	syscall\n"
	"	mov %rax, 24(%r15)\n"
	"	add $" S(ENTRY_BYTES) ", %r15\n"
	"	inc %r14\n"
	"	jmp 1b\n"
	"2:	xor %r14d, %r14d\n"
	"	mov %r12, %r15\n"
	"3:	cmp %r13, %r14\n"
	"	jae 6f\n"
	"	mov 24(%r15), %rax\n"
	"	cmp $-4095, %rax\n"
	"	jae 5f\n" /* never went away */
	"	mov $" S(NR_MREMAP) ", %eax\n"
	"	mov 16(%r15), %rdi\n"
	"	mov 8(%r15), %rsi\n"
	"	mov %rsi, %rdx\n"
	"	mov $3, %r10d\n"
	"	mov 0(%r15), %r8\n"
	"	syscall\n"
	"	mov %rax, 32(%r15)\n"
	"	cmp $-4095, %rax\n"
	"	jb 5f\n"
	/* the move back failed: restore the saved policy (any node may then give the tables) */
	"	cmpq $0, " DREF(D_POL_VALID) "\n"
	"	je 4f\n"
	"	mov $" S(NR_SET_MEMPOLICY) ", %eax\n"
	"	mov " DREF(D_POL_MODE) ", %rdi\n"
	"	lea " DREF(D_POL_MASK) ", %rsi\n"
	"	mov " DREF(D_POL_MAXNODE) ", %rdx\n"
	"	syscall\n"
	"4:	mov $" S(NR_MREMAP) ", %eax\n"
	"	mov 16(%r15), %rdi\n"
	"	mov 8(%r15), %rsi\n"
	"	mov %rsi, %rdx\n"
	"	mov $3, %r10d\n"
	"	mov 0(%r15), %r8\n"
	"	syscall\n"
	"	mov %rax, 40(%r15)\n"
	"5:	add $" S(ENTRY_BYTES) ", %r15\n"
	"	inc %r14\n"
	"	jmp 3b\n"
	"6:	mov $" S(NR_GETPID) ", %eax\n" /* the end marker */
	"	syscall\n"
	".globl ptr_tramp_batch_end\n.hidden ptr_tramp_batch_end\n"
	"ptr_tramp_batch_end:\n"
	"	jmp ptr_tramp_restore\n"
	"ptr_tramp_restore:\n"
	/* release the parked threads first: every VMA is back when the thread gets here */
	"	movl $1, " DREF(D_GATE) "\n"
	"	mov $" S(NR_FUTEX) ", %eax\n"
	"	lea " DREF(D_GATE) ", %rdi\n"
	"	mov $" S(FUTEX_WAKE_PRIVATE) ", %esi\n"
	"	mov $0x7fffffff, %edx\n"
	"	syscall\n"
	"	mov " DREF(D_RSEQ_PTR) ", %rdi\n"
	"	test %rdi, %rdi\n"
	"	jz 7f\n"
	"	mov " DREF(D_RSEQ_LEN) ", %esi\n"
	"	xor %edx, %edx\n"
	"	mov " DREF(D_RSEQ_SIG) ", %r10d\n"
	"	mov $" S(NR_RSEQ) ", %eax\n"
	"	syscall\n"
	"7:	cmpq $0, " DREF(D_POL_VALID) "\n"
	"	je 8f\n"
	"	mov $" S(NR_SET_MEMPOLICY) ", %eax\n"
	"	mov " DREF(D_POL_MODE) ", %rdi\n"
	"	lea " DREF(D_POL_MASK) ", %rsi\n"
	"	mov " DREF(D_POL_MAXNODE) ", %rdx\n"
	"	syscall\n"
	"8:	cmpq $0, " DREF(D_MASK_VALID) "\n"
	"	je 9f\n"
	"	mov $" S(NR_RT_SIGPROCMASK) ", %eax\n"
	"	mov $2, %edi\n" /* SIG_SETMASK */
	"	lea " DREF(D_SIGMASK) ", %rsi\n"
	"	xor %edx, %edx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	"9:	lea " DREF(D_IMAGE) ", %rsp\n"
	"	pop %r15\n	pop %r14\n	pop %r13\n	pop %r12\n	pop %rbp\n	pop %rbx\n"
	"	pop %r11\n	pop %r10\n	pop %r9\n	pop %r8\n	pop %rax\n	pop %rcx\n"
	"	pop %rdx\n	pop %rsi\n	pop %rdi\n"
	"	popfq\n"
	"	mov (%rsp), %rsp\n"
	"	jmp *" DREF(D_RIP) "\n"
	".globl ptr_tramp_end\n.hidden ptr_tramp_end\n"
	"ptr_tramp_end:\n"
	/*
	 * The park code: one copy per other thread, its data PARK_D bytes on (see SCRATCH_LEN).
	 * park: block every signal (saving the thread's own mask: restore_saved_sigmask() has
	 * run by then), take rseq away, and wait on the gate.  unpark: rseq back, a getpid the
	 * tracer stops at, then the mask and every register from the slot, and the jump back.
	 */
	".balign 16\n"
	".globl ptr_park_start\n.hidden ptr_park_start\n"
	"ptr_park_start:\n"
	"	mov $" S(NR_RT_SIGPROCMASK) ", %eax\n"
	"	mov $2, %edi\n" /* SIG_SETMASK */
	"	lea " PREF(P_ALLMASK) ", %rsi\n"
	"	lea " PREF(P_SIGMASK) ", %rdx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	"	mov " PREF(P_RSEQ_PTR) ", %rdi\n"
	"	test %rdi, %rdi\n"
	"	jz 1f\n"
	"	mov " PREF(P_RSEQ_LEN) ", %esi\n"
	"	mov $1, %edx\n" /* RSEQ_FLAG_UNREGISTER */
	"	mov " PREF(P_RSEQ_SIG) ", %r10d\n"
	"	mov $" S(NR_RSEQ) ", %eax\n"
	"	syscall\n"
	"1:	mov " PREF(P_GATE) ", %rdi\n"
	"	cmpl $0, (%rdi)\n"
	"	jne 2f\n"
	"	mov $" S(NR_FUTEX) ", %eax\n"
	"	mov $" S(FUTEX_WAIT_PRIVATE) ", %esi\n"
	"	xor %edx, %edx\n"
	"	xor %r10d, %r10d\n"
	"	syscall\n"
	".globl ptr_park_waited\n.hidden ptr_park_waited\n"
	"ptr_park_waited:\n"
	"	jmp 1b\n"
	".globl ptr_park_unpark\n.hidden ptr_park_unpark\n"
	"ptr_park_unpark:\n"
	"2:	mov " PREF(P_RSEQ_PTR) ", %rdi\n"
	"	test %rdi, %rdi\n"
	"	jz 3f\n"
	"	mov " PREF(P_RSEQ_LEN) ", %esi\n"
	"	xor %edx, %edx\n"
	"	mov " PREF(P_RSEQ_SIG) ", %r10d\n"
	"	mov $" S(NR_RSEQ) ", %eax\n"
	"	syscall\n"
	"3:	mov $" S(NR_GETPID) ", %eax\n"
	"	syscall\n"
	".globl ptr_park_marker\n.hidden ptr_park_marker\n"
	"ptr_park_marker:\n"
	"	mov $" S(NR_RT_SIGPROCMASK) ", %eax\n"
	"	mov $2, %edi\n"
	"	lea " PREF(P_SIGMASK) ", %rsi\n"
	"	xor %edx, %edx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	"	lea " PREF(P_IMAGE) ", %rsp\n"
	"	pop %r15\n	pop %r14\n	pop %r13\n	pop %r12\n	pop %rbp\n	pop %rbx\n"
	"	pop %r11\n	pop %r10\n	pop %r9\n	pop %r8\n	pop %rax\n	pop %rcx\n"
	"	pop %rdx\n	pop %rsi\n	pop %rdi\n"
	"	popfq\n"
	"	mov (%rsp), %rsp\n"
	"	jmp *" PREF(P_RIP) "\n"
	".globl ptr_park_end\n.hidden ptr_park_end\n"
	"ptr_park_end:\n"
	".popsection\n");

extern const unsigned char ptr_tramp_start[], ptr_tramp_batch[], ptr_tramp_batch_end[],
	ptr_tramp_end[];
extern const unsigned char ptr_park_start[], ptr_park_waited[], ptr_park_unpark[],
	ptr_park_marker[], ptr_park_end[];

struct thread {
	int tid;
	int gone;
	int event_stop;  /* first stop was PTRACE_EVENT_STOP (else a signal-delivery stop) */
	int pending_sig; /* signal-delivery stop: the signal, handed back at detach */
	int still_traced; /* PTRACE_DETACH found it running (exiting): reap_dead() waits for it */
	int parked;       /* running in its park code (futex wait on the gate) */
	int has_regs;     /* saved/norm below are set (every live thread but the injected one) */
	struct user_regs_struct saved; /* exactly as stopped */
	struct user_regs_struct norm;  /* with the no-handler restart applied */
	struct rseq_config rseq;       /* rseq_abi_pointer 0: none registered */
};

struct ptr_inject {
	int pid;
	int memfd;
	struct thread *threads;
	int nthreads, cap;
	struct thread *inj;          /* the injected thread */
	struct user_regs_struct saved; /* exactly as stopped */
	struct user_regs_struct norm;  /* with the no-handler restart applied */
	uint64_t site;               /* the process's own syscall instruction */
	uint64_t scratch;            /* 0 until mapped */
	int trampoline;              /* code page in place: calls go through it */
	int rseq_registered;
	struct rseq_config rseq;
	int pol_saved, pol_mode;
	uint64_t pol_mask[PTR_INJ_MASK_WORDS];
	int mask_blocked;
	int held[64];     /* signals we suppressed, re-sent with tgkill() to held_tid[] */
	int held_tid[64];
	int nheld;
	int parked;       /* threads parked now */
	int keep_scratch; /* released parked threads may still run in it: never unmapped */
	int dropped;
	int gone;                    /* the process exited */
};

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int waitpid_eintr(int tid, int *status, int flags)
{
	int rc;

	do
		rc = waitpid(tid, status, flags | __WALL);
	while (rc < 0 && errno == EINTR);
	return rc;
}

/*
 * Has this tracee exited?  Reaps an exit only: a stop it reports stays queued for whoever
 * waits for that thread next (a parked thread runs, and its stop belongs to the unpark).
 */
static int reap_exit(int tid)
{
	siginfo_t si;
	int rc;

	memset(&si, 0, sizeof(si));
	do
		rc = waitid(P_PID, tid, &si, WEXITED | WNOHANG | __WALL);
	while (rc < 0 && errno == EINTR);
	return rc < 0 || si.si_pid == tid;
}

/*
 * Wait for a tracee's next event.  Not a blocking waitpid(tid): when the process is
 * killed, the leader's exit is reported only after every other thread is reaped - by us, their
 * tracer - so a blocking wait for the leader would never return.  Spin briefly (stops normally
 * come within microseconds), then poll, reaping the other threads' exits meanwhile.
 */
static int wait_tracee(struct ptr_inject *inj, int tid, int *st)
{
	int64_t last = monotonic_ms();

	for (int spins = 0;; spins++) {
		int rc = waitpid_eintr(tid, st, WNOHANG);

		if (rc != 0)
			return rc;
		if (spins < 2000) {
			sched_yield();
			continue;
		}
		struct timespec ts = { 0, 50000 };

		nanosleep(&ts, NULL);
		if (monotonic_ms() - last >= 5) {
			last = monotonic_ms();
			for (int i = 0; i < inj->nthreads; i++) {
				struct thread *t = &inj->threads[i];

				if (t->gone || t->tid == tid)
					continue;
				if (reap_exit(t->tid))
					t->gone = 1;
			}
		}
	}
}

static struct thread *find_thread(struct ptr_inject *inj, int tid)
{
	for (int i = 0; i < inj->nthreads; i++)
		if (inj->threads[i].tid == tid)
			return &inj->threads[i];
	return NULL;
}

/* /proc/PID/task/TID/stat into @buf; Return: its text after the comm's ")", or NULL (gone) */
static const char *task_stat(int pid, int tid, char *buf, size_t len)
{
	char path[64];
	int fd, n;
	const char *p;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p : NULL;
}

static int thread_is_zombie(int pid, int tid)
{
	char buf[1024];
	const char *p = task_stat(pid, tid, buf, sizeof(buf));

	return !p || p[2] == 'Z' || p[2] == 'X';
}

/* seize and interrupt every thread not seen yet; returns how many were new */
static int seize_new(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	char path[64];
	DIR *dir;
	struct dirent *de;
	int added = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", inj->pid);
	dir = opendir(path);
	if (!dir)
		return fail(err, PTR_INJ_STEP_LIST_TASKS, inj->pid, errno == ENOENT ? -ESRCH : -errno);
	while ((de = readdir(dir))) {
		int tid = atoi(de->d_name);

		if (tid <= 0 || find_thread(inj, tid))
			continue;
		if (inj->nthreads == inj->cap) {
			int cap = inj->cap ? inj->cap * 2 : 16;
			struct thread *t = realloc(inj->threads, cap * sizeof(*t));

			if (!t) {
				closedir(dir);
				return fail(err, PTR_INJ_STEP_NOMEM, 0, -ENOMEM);
			}
			inj->threads = t;
			inj->cap = cap;
		}
		struct thread *t = &inj->threads[inj->nthreads++];

		memset(t, 0, sizeof(*t));
		t->tid = tid;
		added++;
		if (thread_is_zombie(inj->pid, tid)) { /* an exited leader: cannot stop */
			t->gone = 1;
			continue;
		}
		if (ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)PTRACE_O_TRACESYSGOOD) < 0) {
			if (errno == ESRCH) {
				t->gone = 1;
				continue;
			}
			int rc = -errno;

			inj->nthreads--; /* not ours: nothing to detach */
			closedir(dir);
			return fail(err, PTR_INJ_STEP_SEIZE, tid, rc);
		}
		if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0 && errno != ESRCH) {
			int rc = -errno;

			closedir(dir);
			return fail(err, PTR_INJ_STEP_INTERRUPT, tid, rc);
		}
	}
	closedir(dir);
	return added;
}

/* wait for the first stop of every thread seized but not yet stopped */
static int wait_new(struct ptr_inject *inj, int from, struct ptr_inj_err *err)
{
	int64_t deadline = monotonic_ms() + 10000;

	for (int i = from; i < inj->nthreads; i++) {
		struct thread *t = &inj->threads[i];

		while (!t->gone) {
			int st, rc = waitpid_eintr(t->tid, &st, WNOHANG);

			if (rc < 0) {
				if (errno == ECHILD) { /* gone before we could see it stop */
					t->gone = 1;
					break;
				}
				return fail(err, PTR_INJ_STEP_WAIT, t->tid, -errno);
			}
			if (rc == 0) {
				if (monotonic_ms() > deadline)
					return fail(err, PTR_INJ_STEP_WAIT, t->tid, -ETIMEDOUT);
				struct timespec ts = { 0, 200000 };

				nanosleep(&ts, NULL);
				continue;
			}
			if (WIFEXITED(st) || WIFSIGNALED(st)) {
				t->gone = 1;
				break;
			}
			if (!WIFSTOPPED(st))
				continue;
			if (st >> 16 == PTRACE_EVENT_STOP) {
				t->event_stop = 1;
			} else {
				/* a signal was dequeued first: hold the thread in this stop and hand
				 * the signal back at detach (the interrupt is dropped by detach) */
				t->pending_sig = WSTOPSIG(st);
			}
			break;
		}
	}
	return 0;
}

static int regs_get(int tid, struct user_regs_struct *r, struct ptr_inj_err *err)
{
	if (ptrace(PTRACE_GETREGS, tid, 0, r) < 0)
		return fail(err, PTR_INJ_STEP_GETREGS, tid, -errno);
	return 0;
}

static int regs_set(int tid, const struct user_regs_struct *r, struct ptr_inj_err *err)
{
	if (ptrace(PTRACE_SETREGS, tid, 0, (void *)r) < 0)
		return fail(err, PTR_INJ_STEP_SETREGS, tid, -errno);
	return 0;
}

/* a signal we suppressed, re-sent with tgkill() to @tid later (resend_held(), the detach) */
static void add_held(struct ptr_inject *inj, int tid, int sig)
{
	if (inj->nheld < (int)(sizeof(inj->held) / sizeof(inj->held[0]))) {
		inj->held_tid[inj->nheld] = tid;
		inj->held[inj->nheld++] = sig;
	}
}

static void hold_signal(struct ptr_inject *inj, int tid, int sig)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (ptrace(PTRACE_GETSIGINFO, tid, 0, &si) == 0 && si.si_code > 0 &&
	    (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGTRAP || sig == SIGFPE ||
	     sig == SIGSYS)) {
		inj->dropped++; /* raised by our own code (a seccomp SIGSYS, a fault) */
		return;
	}
	add_held(inj, tid, sig);
}

/*
 * Resume the injected thread with PTRACE_SYSCALL until its next syscall stop.  Event stops
 * (group stop, a late interrupt) are resumed through; signal-delivery stops are held.
 */
/*
 * The next stop of tracee @t into *@st.  Return: 0; -ESRCH when it exited instead - the process
 * is going (our tracees exit only with it: every signal we leave them is blocked or a kill).
 */
static int wait_stop(struct ptr_inject *inj, struct thread *t, int *st, struct ptr_inj_err *err)
{
	for (;;) {
		if (wait_tracee(inj, t->tid, st) < 0)
			return fail(err, PTR_INJ_STEP_WAIT, t->tid,
				    errno == ECHILD ? -ESRCH : -errno);
		if (WIFEXITED(*st) || WIFSIGNALED(*st)) {
			inj->gone = 1;
			t->gone = 1;
			return fail(err, PTR_INJ_STEP_WAIT, t->tid, -ESRCH);
		}
		if (WIFSTOPPED(*st))
			return 0;
	}
}

static int next_stop_of(struct ptr_inject *inj, struct thread *t, struct ptr_inj_err *err)
{
	int tid = t->tid;

	for (int guard = 0; guard < 1000; guard++) {
		int st, rc;

		if (ptrace(PTRACE_SYSCALL, tid, 0, 0) < 0)
			return fail(err, PTR_INJ_STEP_RESUME, tid, -errno);
		if ((rc = wait_stop(inj, t, &st, err)))
			return rc;
		if (WSTOPSIG(st) == (SIGTRAP | 0x80))
			return 0;
		if (st >> 16)
			continue; /* PTRACE_EVENT_STOP */
		hold_signal(inj, tid, WSTOPSIG(st));
	}
	return fail(err, PTR_INJ_STEP_PROTOCOL, tid, -EPROTO);
}

static int next_syscall_stop(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	return next_stop_of(inj, inj->inj, err);
}

/* one system call at @ip; the thread is left at the call's syscall-exit stop */
static int call_at(struct ptr_inject *inj, uint64_t ip, long nr, const int64_t *a, int64_t *ret,
		   struct ptr_inj_err *err)
{
	int tid = inj->inj->tid;
	struct user_regs_struct r = inj->norm;
	int rc;

	r.rax = nr;
	r.rdi = a[0];
	r.rsi = a[1];
	r.rdx = a[2];
	r.r10 = a[3];
	r.r8 = a[4];
	r.r9 = a[5];
	r.rip = ip;
	r.orig_rax = -1;
	if ((rc = regs_set(tid, &r, err)))
		return rc;
	if ((rc = next_syscall_stop(inj, err))) /* enter */
		return rc;
	if ((rc = regs_get(tid, &r, err)))
		return rc;
	if ((long)r.orig_rax != nr)
		return fail(err, PTR_INJ_STEP_PROTOCOL, tid, -EPROTO);
	if ((rc = next_syscall_stop(inj, err))) /* exit */
		return rc;
	if ((rc = regs_get(tid, &r, err)))
		return rc;
	*ret = (int64_t)r.rax;
	return 0;
}

static int call(struct ptr_inject *inj, long nr, const int64_t *a, int64_t *ret,
		struct ptr_inj_err *err)
{
	return call_at(inj, inj->trampoline ? inj->scratch : inj->site, nr, a, ret, err);
}

/* a call that must succeed: a remote -errno becomes our -errno */
static int call_ok(struct ptr_inject *inj, long nr, const int64_t *a, int64_t *ret,
		   struct ptr_inj_err *err)
{
	int64_t r;
	int rc = call(inj, nr, a, &r, err);

	if (rc)
		return rc;
	if (r < 0 && r > -4096) {
		if (err && err->step == PTR_INJ_STEP_NONE) {
			err->step = PTR_INJ_STEP_REMOTE;
			err->tid = inj->inj->tid;
			err->remote = r;
			err->nr = nr;
		}
		return (int)r;
	}
	if (ret)
		*ret = r;
	return 0;
}

/*
 * /proc/PID/mem gives EIO, not ESRCH, once a killed process's mm is gone (exit_mm()) - for our
 * own mapped scratch that is the only cause.  Is it gone?  A task without an mm shows vsize 0
 * (field 23 of /proc/PID/task/TID/stat), and a zombie is past that.
 */
static int process_dying(struct ptr_inject *inj)
{
	char buf[1024];
	int tid = inj->inj ? inj->inj->tid : inj->pid;
	unsigned long long vsize = 1;
	const char *p = task_stat(inj->pid, tid, buf, sizeof(buf));

	if (!p || p[2] == 'Z' || p[2] == 'X')
		return 1;
	/* p is the ")" before " state": field 3 (state) ... field 23 (vsize) */
	for (int field = 3; p && field <= 23; field++)
		p = strchr(p + 1, ' ');
	if (p && sscanf(p + 1, "%llu", &vsize) != 1)
		vsize = 1;
	return vsize == 0;
}

static int mem_rw(struct ptr_inject *inj, int write, uint64_t addr, void *buf, uint64_t len,
		  struct ptr_inj_err *err)
{
	uint64_t done = 0;

	while (done < len) {
		ssize_t n = write ? pwrite(inj->memfd, (char *)buf + done, len - done, addr + done)
				  : pread(inj->memfd, (char *)buf + done, len - done, addr + done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int rc = n < 0 ? -errno : -EIO;

			if (rc == -EIO && process_dying(inj)) {
				inj->gone = 1;
				rc = -ESRCH;
			}
			return fail(err, PTR_INJ_STEP_MEM, inj->pid, rc);
		}
		done += n;
	}
	return 0;
}

static int put_u64(struct ptr_inject *inj, uint64_t off, uint64_t v, struct ptr_inj_err *err)
{
	return mem_rw(inj, 1, inj->scratch + PAGE + off, &v, sizeof(v), err);
}

/* a `syscall` (0f 05) the process already has: where the thread stopped, else in its text */
static int find_site(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	unsigned char two[2];
	char path[64], line[512];
	FILE *maps;

	if ((long)inj->saved.orig_rax >= 0 &&
	    mem_rw(inj, 0, inj->saved.rip - 2, two, 2, NULL) == 0 && two[0] == 0x0f &&
	    two[1] == 0x05) {
		inj->site = inj->saved.rip - 2;
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/%d/maps", inj->pid);
	maps = fopen(path, "re");
	if (!maps)
		return fail(err, PTR_INJ_STEP_FIND_SYSCALL, inj->pid, -errno);
	unsigned char *buf = malloc(65536);

	if (!buf) {
		fclose(maps);
		return fail(err, PTR_INJ_STEP_NOMEM, 0, -ENOMEM);
	}
	while (fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi;
		char perms[8];

		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[2] != 'x' ||
		    strstr(line, "[vsyscall]") || strstr(line, "[vdso]"))
			continue;
		for (unsigned long at = lo; at < hi; at += 65536) {
			unsigned long n = hi - at < 65536 ? hi - at : 65536;

			if (mem_rw(inj, 0, at, buf, n, NULL))
				break;
			for (unsigned long i = 0; i + 1 < n; i++) {
				if (buf[i] == 0x0f && buf[i + 1] == 0x05) {
					inj->site = at + i;
					fclose(maps);
					free(buf);
					return 0;
				}
			}
		}
	}
	fclose(maps);
	free(buf);
	return fail(err, PTR_INJ_STEP_FIND_SYSCALL, inj->pid, -ENOEXEC);
}

static void normalize_regs(const struct user_regs_struct *saved, struct user_regs_struct *norm)
{
	*norm = *saved;
	if ((long)saved->orig_rax < 0)
		return;
	switch (-(long)saved->rax) {
	case ERESTARTSYS:
	case ERESTARTNOINTR:
	case ERESTARTNOHAND:
		norm->rax = saved->orig_rax;
		norm->rip -= 2;
		break;
	case ERESTART_RESTARTBLOCK:
		norm->rax = NR_RESTART_SYSCALL;
		norm->rip -= 2;
		break;
	}
}

static void normalize(struct ptr_inject *inj)
{
	normalize_regs(&inj->saved, &inj->norm);
}

/* is the thread's rip inside its active rseq critical section?  @cfg: its rseq registration */
static int rseq_of(struct ptr_inject *inj, int tid, uint64_t rip, struct rseq_config *out,
		   struct ptr_inj_err *err)
{
	struct rseq_config cfg;
	uint64_t cs_ptr, cs[4];

	memset(&cfg, 0, sizeof(cfg));
	if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, sizeof(cfg), &cfg) < 0) {
		if (errno == EIO || errno == EINVAL)
			return 0; /* a kernel before 5.13: it cannot tell us; then it has no rseq
				   * either unless the C library registered it - see the doc */
		return fail(err, PTR_INJ_STEP_RSEQ_CONFIG, tid, -errno);
	}
	if (!cfg.rseq_abi_pointer)
		return 0;
	*out = cfg;
	/* struct rseq: u32 cpu_id_start, u32 cpu_id, u64 rseq_cs */
	if (mem_rw(inj, 0, cfg.rseq_abi_pointer + 8, &cs_ptr, 8, err))
		return -EFAULT;
	if (!cs_ptr)
		return 0;
	/* struct rseq_cs: u32 version, u32 flags, u64 start_ip, u64 post_commit_offset, ... */
	if (mem_rw(inj, 0, cs_ptr, cs, sizeof(cs), NULL))
		return 0; /* a stale pointer the kernel will clear */
	if (rip >= cs[1] && rip < cs[1] + cs[2])
		return fail(err, PTR_INJ_STEP_RSEQ_CS, tid, -EAGAIN);
	return 0;
}

static int check_rseq(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	int rc = rseq_of(inj, inj->inj->tid, inj->saved.rip, &inj->rseq, err);

	inj->rseq_registered = !rc && inj->rseq.rseq_abi_pointer;
	return rc;
}

/*
 * Every other thread's registers and rseq registration, for parking it: refused like the
 * injected thread's (a 32-bit thread, a thread inside an rseq critical section) before
 * anything in the process has changed.
 */
static int other_threads(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	int rc;

	for (int i = 0; i < inj->nthreads; i++) {
		struct thread *t = &inj->threads[i];

		if (t->gone || t == inj->inj)
			continue;
		if ((rc = regs_get(t->tid, &t->saved, err)))
			return rc;
		if (t->saved.cs != USER_CS_64)
			return fail(err, PTR_INJ_STEP_ARCH, t->tid, -ENOEXEC);
		normalize_regs(&t->saved, &t->norm);
		memset(&t->rseq, 0, sizeof(t->rseq));
		if ((rc = rseq_of(inj, t->tid, t->saved.rip, &t->rseq, err)))
			return rc;
		t->has_regs = 1;
	}
	return 0;
}

static int read_sigblk(int pid, int tid, uint64_t *mask)
{
	char path[64], line[256];
	FILE *f;
	int found = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", pid, tid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "SigBlk: %lx", (unsigned long *)mask) == 1) {
			found = 1;
			break;
		}
	fclose(f);
	return found ? 0 : -ENOENT;
}

/* the image `restore` and the park code pop (D_IMAGE, P_IMAGE): 17 registers, then rip */
static void regs_image(const struct user_regs_struct *n, uint64_t img[18])
{
	const uint64_t v[18] = { n->r15, n->r14, n->r13, n->r12, n->rbp, n->rbx, n->r11, n->r10,
				 n->r9, n->r8, n->rax, n->rcx, n->rdx, n->rsi, n->rdi, n->eflags,
				 n->rsp, n->rip };
	memcpy(img, v, sizeof(v));
}

/* a copy of the park code for every thread slot that may be parked, made executable */
static int install_park_code(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	size_t len = ptr_park_end - ptr_park_start;
	int slots = inj->nthreads < PARK_MAX ? inj->nthreads : PARK_MAX;
	uint64_t bytes = ((uint64_t)slots * PARK_STRIDE + PAGE - 1) & ~(PAGE - 1);
	int64_t a[6] = { 0 }, r;
	unsigned char *code;
	int rc;

	if (len > PARK_STRIDE)
		return fail(err, PTR_INJ_STEP_ARGS, 0, -E2BIG);
	if (inj->nthreads < 2)
		return 0;
	code = malloc(bytes);
	if (!code)
		return fail(err, PTR_INJ_STEP_NOMEM, 0, -ENOMEM);
	memset(code, 0xcc, bytes);
	for (int k = 0; k < slots; k++)
		memcpy(code + (size_t)k * PARK_STRIDE, ptr_park_start, len);
	rc = mem_rw(inj, 1, inj->scratch + PARK_CODE, code, bytes, err);
	free(code);
	if (rc)
		return rc;
	a[0] = inj->scratch + PARK_CODE;
	a[1] = bytes;
	a[2] = PROT_READ | PROT_EXEC;
	return call_ok(inj, NR_MPROTECT, a, &r, err);
}

/* put the code page and the data page in place (the thread is at a syscall-exit stop) */
static int install_trampoline(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	unsigned char code[PAGE];
	uint64_t img[18];
	const struct user_regs_struct *n = &inj->norm;
	int64_t a[6] = { 0 }, r;
	int rc;
	size_t len = ptr_tramp_end - ptr_tramp_start;

	if (len > PAGE)
		return fail(err, PTR_INJ_STEP_ARGS, 0, -E2BIG);
	memset(code, 0xcc, sizeof(code));
	memcpy(code, ptr_tramp_start, len);
	if ((rc = mem_rw(inj, 1, inj->scratch, code, PAGE, err)))
		return rc;
	regs_image(n, img);
	if ((rc = mem_rw(inj, 1, inj->scratch + PAGE + D_IMAGE, img, sizeof(img), err)))
		return rc;
	if ((rc = put_u64(inj, D_ALLMASK, ~0ULL, err)))
		return rc;
	a[0] = inj->scratch;
	a[1] = PAGE;
	a[2] = PROT_READ | PROT_EXEC;
	if ((rc = call_ok(inj, NR_MPROTECT, a, &r, err)))
		return rc;
	inj->trampoline = 1;
	return install_park_code(inj, err);
}

static int block_signals(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	uint64_t blk = 0;
	int64_t a[6] = { 0 };
	int rc;

	if ((rc = read_sigblk(inj->pid, inj->inj->tid, &blk)))
		return fail(err, PTR_INJ_STEP_MEM, inj->inj->tid, rc);
	if ((rc = put_u64(inj, D_SIGMASK, blk, err)) || (rc = put_u64(inj, D_MASK_VALID, 1, err)))
		return rc;
	a[0] = SIG_BLOCK;
	a[1] = inj->scratch + PAGE + D_ALLMASK;
	a[2] = inj->scratch + PAGE + D_SIGMASK;
	a[3] = 8;
	if ((rc = call_ok(inj, NR_RT_SIGPROCMASK, a, NULL, err))) {
		put_u64(inj, D_MASK_VALID, 0, NULL);
		return rc;
	}
	inj->mask_blocked = 1;
	return 0;
}

static int unregister_rseq(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	int64_t a[6] = { 0 };
	int rc;

	if (!inj->rseq_registered)
		return 0;
	/* the restore path re-registers from these; written first, so a tracer that dies right
	 * after the call still leaves them to the thread (a second register is a harmless EBUSY) */
	if ((rc = put_u64(inj, D_RSEQ_LEN, (uint64_t)inj->rseq.signature << 32 |
				    inj->rseq.rseq_abi_size, err)) ||
	    (rc = put_u64(inj, D_RSEQ_PTR, inj->rseq.rseq_abi_pointer, err)))
		return rc;
	a[0] = inj->rseq.rseq_abi_pointer;
	a[1] = inj->rseq.rseq_abi_size;
	a[2] = 1; /* RSEQ_FLAG_UNREGISTER */
	a[3] = inj->rseq.signature;
	if ((rc = call_ok(inj, NR_RSEQ, a, NULL, err))) {
		put_u64(inj, D_RSEQ_PTR, 0, NULL);
		inj->rseq_registered = 0;
		return rc;
	}
	return 0;
}

static int detach_all(struct ptr_inject *inj, int leave_stopped, struct ptr_inj_err *err);

/**
 * ptr_inject_attach() - stop every thread of a process and prepare one to run system calls.
 * @pid: the process (thread-group id).
 * @tid: the thread to inject into; 0 picks one (the leader when it stopped cleanly).
 * @out: the session, on success.
 * @err: the failed step on failure.
 *
 * Seizes and interrupts every thread (see the file comment), saves the chosen thread's
 * registers, maps the trampoline into the process, blocks the thread's signals and takes its
 * rseq registration away.  On failure every thread is detached again and nothing is left
 * behind (the scratch mapping is unmapped if it was made).
 *
 * Return: 0; -ESRCH (the process exited), -EPERM (ptrace refused: another tracer, Yama, no
 * privilege), -EAGAIN (the thread is inside an rseq critical section: try again), -ETIMEDOUT
 * (a thread did not stop within 10 s), -ENOEXEC (not x86-64 code), other -errno.
 * Locking: none; the caller's thread becomes the tracer, so every later call on @out must come
 * from the same thread (ptrace is per thread).
 */
int ptr_inject_attach(int pid, int tid, struct ptr_inject **out, struct ptr_inj_err *err)
{
	struct ptr_inject *inj;
	char path[64];
	int rc, from = 0;
	int64_t a[6] = { 0 }, r;

	if (err)
		memset(err, 0, sizeof(*err));
	if (pid <= 0 || tid < 0 || !out)
		return fail(err, PTR_INJ_STEP_ARGS, 0, -EINVAL);
	inj = calloc(1, sizeof(*inj));
	if (!inj)
		return fail(err, PTR_INJ_STEP_NOMEM, 0, -ENOMEM);
	inj->pid = pid;
	inj->memfd = -1;
	for (int round = 0;; round++) {
		rc = seize_new(inj, err);
		if (rc < 0)
			goto undo;
		if (rc == 0)
			break;
		if ((rc = wait_new(inj, from, err)))
			goto undo;
		from = inj->nthreads;
		if (round > 1000) {
			rc = fail(err, PTR_INJ_STEP_LIST_TASKS, pid, -EAGAIN);
			goto undo;
		}
	}
	for (int i = 0; i < inj->nthreads; i++) {
		struct thread *t = &inj->threads[i];

		if (t->gone)
			continue;
		if (tid ? t->tid == tid : (t->event_stop && (!inj->inj || t->tid == pid)))
			inj->inj = t;
	}
	if (!inj->inj) {
		rc = fail(err, PTR_INJ_STEP_WAIT, tid ? tid : pid, -ESRCH);
		goto undo;
	}
	if (!inj->inj->event_stop) {
		rc = fail(err, PTR_INJ_STEP_PROTOCOL, inj->inj->tid, -EBUSY);
		goto undo;
	}
	snprintf(path, sizeof(path), "/proc/%d/mem", inj->inj->tid);
	inj->memfd = open(path, O_RDWR | O_CLOEXEC);
	if (inj->memfd < 0) {
		rc = fail(err, PTR_INJ_STEP_MEM, inj->inj->tid, errno == ENOENT ? -ESRCH : -errno);
		goto undo;
	}
	if ((rc = regs_get(inj->inj->tid, &inj->saved, err)))
		goto undo;
	if (inj->saved.cs != USER_CS_64) {
		rc = fail(err, PTR_INJ_STEP_ARCH, inj->inj->tid, -ENOEXEC);
		goto undo;
	}
	normalize(inj);
	if ((rc = check_rseq(inj, err)) || (rc = other_threads(inj, err)) ||
	    (rc = find_site(inj, err)))
		goto undo;
	/* a hint (not MAP_FIXED) far from the usual layout: the trampoline's own tables then
	 * share no upper-level table with the VMAs that are moved, and are freed with it */
	a[0] = SCRATCH_HINT;
	a[1] = SCRATCH_LEN;
	a[2] = PROT_READ | PROT_WRITE;
	a[3] = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	a[4] = -1;
	if ((rc = call_ok(inj, NR_MMAP, a, &r, err)))
		goto undo;
	inj->scratch = (uint64_t)r;
	if ((rc = install_trampoline(inj, err)) || (rc = block_signals(inj, err)) ||
	    (rc = unregister_rseq(inj, err)))
		goto undo;
	*out = inj;
	return 0;
undo:
	detach_all(inj, 0, NULL);
	return rc;
}

/**
 * ptr_inject_info() - what the session looks like.
 * @inj: the session.
 * @out: filled.
 *
 * Return: 0.
 * Locking: none.
 */
int ptr_inject_info(const struct ptr_inject *inj, struct ptr_inj_info *out)
{
	memset(out, 0, sizeof(*out));
	out->pid = inj->pid;
	out->tid = inj->inj ? inj->inj->tid : 0;
	for (int i = 0; i < inj->nthreads; i++)
		out->nthreads += !inj->threads[i].gone;
	out->in_syscall = (long)inj->saved.orig_rax >= 0;
	out->orig_rax = (int64_t)inj->saved.orig_rax;
	out->rax = (int64_t)inj->saved.rax;
	out->rip = inj->saved.rip;
	out->site = inj->site;
	out->scratch = inj->scratch;
	out->scratch_len = SCRATCH_LEN;
	out->user_area = inj->scratch ? inj->scratch + PAGE + D_USER : 0;
	out->user_area_len = D_USER_LEN;
	out->batch_max = SCRATCH_BATCH_PAGES * PAGE / ENTRY_BYTES;
	out->rseq_registered = inj->rseq_registered;
	out->held_signals = inj->nheld;
	out->parked = inj->parked;
	out->dropped_signals = inj->dropped;
	return 0;
}

/**
 * ptr_inject_syscall() - execute one system call in the injected thread.
 * @inj: the session.
 * @nr: the system call number (x86-64).
 * @args: six arguments.
 * @ret: the call's return value (a remote -errno is a successful injection).
 * @err: the failed step on failure.
 *
 * Return: 0 when the call was executed; -ESRCH when the process exited; other -errno when the
 * injection itself failed.
 * Locking: the tracer thread only.
 */
int ptr_inject_syscall(struct ptr_inject *inj, long nr, const int64_t *args, int64_t *ret,
		       struct ptr_inj_err *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
	if (!inj || !args || !ret || nr < 0)
		return fail(err, PTR_INJ_STEP_ARGS, 0, -EINVAL);
	if (inj->gone)
		return fail(err, PTR_INJ_STEP_WAIT, inj->pid, -ESRCH);
	return call(inj, nr, args, ret, err);
}

/**
 * ptr_inject_read() - read the stopped process's memory (/proc/PID/mem).
 * @inj: the session.
 * @addr: where.
 * @buf: into.
 * @len: bytes.
 * @err: the failed step on failure.
 *
 * Return: 0 or -errno (-EIO for an unmapped address).
 * Locking: none.
 */
int ptr_inject_read(struct ptr_inject *inj, uint64_t addr, void *buf, uint64_t len,
		    struct ptr_inj_err *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
	return mem_rw(inj, 0, addr, buf, len, err);
}

/**
 * ptr_inject_write() - write the stopped process's memory (/proc/PID/mem, FOLL_FORCE).
 * @inj: the session.
 * @addr: where.
 * @buf: from.
 * @len: bytes.
 * @err: the failed step on failure.
 *
 * Return: 0 or -errno.
 * Locking: none.
 */
int ptr_inject_write(struct ptr_inject *inj, uint64_t addr, const void *buf, uint64_t len,
		     struct ptr_inj_err *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
	return mem_rw(inj, 1, addr, (void *)buf, len, err);
}

/**
 * ptr_inject_bind_policy() - save the injected thread's memory policy, then set another.
 * @inj: the session.
 * @mode: the new mode (MPOL_BIND, ...), with mode flags.
 * @mask: PTR_INJ_MASK_WORDS words of nodemask.
 * @err: the failed step on failure.
 *
 * The first call saves the policy (get_mempolicy into the data page) where both
 * ptr_inject_restore_policy() and the trampoline's restore path find it.
 *
 * Return: 0 or -errno (the remote call's error with step PTR_INJ_STEP_REMOTE).
 * Locking: the tracer thread only.
 */
int ptr_inject_bind_policy(struct ptr_inject *inj, int mode, const uint64_t *mask,
			   struct ptr_inj_err *err)
{
	uint64_t user = inj->scratch + PAGE + D_USER;
	int64_t a[6] = { 0 };
	int rc;

	if (err)
		memset(err, 0, sizeof(*err));
	if (!inj->trampoline)
		return fail(err, PTR_INJ_STEP_ARGS, 0, -EINVAL);
	if (!inj->pol_saved) {
		uint64_t zero[PTR_INJ_MASK_WORDS + 1] = { 0 };

		if ((rc = mem_rw(inj, 1, user, zero, sizeof(zero), err)))
			return rc;
		a[0] = user;                 /* int *mode */
		a[1] = user + 8;             /* unsigned long *nodemask */
		a[2] = MAXNODE;
		if ((rc = call_ok(inj, NR_GET_MEMPOLICY, a, NULL, err)))
			return rc;
		uint64_t got[PTR_INJ_MASK_WORDS + 1];

		if ((rc = mem_rw(inj, 0, user, got, sizeof(got), err)))
			return rc;
		inj->pol_mode = (int)(uint32_t)got[0];
		memcpy(inj->pol_mask, got + 1, sizeof(inj->pol_mask));
		if ((rc = mem_rw(inj, 1, inj->scratch + PAGE + D_POL_MASK, inj->pol_mask,
				 sizeof(inj->pol_mask), err)) ||
		    (rc = put_u64(inj, D_POL_MODE, (uint64_t)inj->pol_mode, err)) ||
		    (rc = put_u64(inj, D_POL_MAXNODE, MAXNODE, err)) ||
		    (rc = put_u64(inj, D_POL_VALID, 1, err)))
			return rc;
		inj->pol_saved = 1;
	}
	if ((rc = mem_rw(inj, 1, user, (void *)mask, PTR_INJ_MASK_WORDS * 8, err)))
		return rc;
	a[0] = mode;
	a[1] = user;
	a[2] = MAXNODE;
	return call_ok(inj, NR_SET_MEMPOLICY, a, NULL, err);
}

/**
 * ptr_inject_saved_policy() - the policy ptr_inject_bind_policy() saved.
 * @inj: the session.
 * @mode: the saved mode (with flags).
 * @mask: PTR_INJ_MASK_WORDS words.
 *
 * Return: 0, or -ENOENT when nothing was saved yet.
 * Locking: none.
 */
int ptr_inject_saved_policy(const struct ptr_inject *inj, int *mode, uint64_t *mask)
{
	if (!inj->pol_saved)
		return -ENOENT;
	*mode = inj->pol_mode;
	memcpy(mask, inj->pol_mask, sizeof(inj->pol_mask));
	return 0;
}

/**
 * ptr_inject_restore_policy() - set the saved memory policy again (no-op if none was saved).
 * @inj: the session.
 * @err: the failed step on failure.
 *
 * Return: 0 or -errno.
 * Locking: the tracer thread only.
 */
int ptr_inject_restore_policy(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	int64_t a[6] = { 0 };

	if (err)
		memset(err, 0, sizeof(*err));
	if (!inj->pol_saved)
		return 0;
	a[0] = inj->pol_mode;
	a[1] = inj->scratch + PAGE + D_POL_MASK;
	a[2] = MAXNODE;
	return call_ok(inj, NR_SET_MEMPOLICY, a, NULL, err);
}

/*
 * From a syscall-exit stop, take @t through one more get_signal() stop (PTRACE_INTERRUPT, then
 * PTRACE_CONT: the interrupt traps before the thread returns to user mode) and set @exact
 * there, so a detach - ours, or the kernel's if ptreloc dies - restarts its interrupted call
 * through arch_do_signal_or_restart().  *@deliver: a signal get_signal() dequeued instead (one
 * that became pending while the thread blocked it), for the detach to deliver with its siginfo.
 */
static int through_get_signal(struct ptr_inject *inj, struct thread *t,
			      const struct user_regs_struct *exact, int *deliver,
			      struct ptr_inj_err *err)
{
	int tid = t->tid, st, rc;

	*deliver = 0;
	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0)
		return fail(err, PTR_INJ_STEP_INTERRUPT, tid, -errno);
	if (ptrace(PTRACE_CONT, tid, 0, 0) < 0)
		return fail(err, PTR_INJ_STEP_RESUME, tid, -errno);
	for (int guard = 0; guard < 100; guard++) {
		if ((rc = wait_stop(inj, t, &st, err)))
			return rc;
		if (st >> 16 == PTRACE_EVENT_STOP)
			return regs_set(tid, exact, err);
		if (!(st >> 16) && WSTOPSIG(st) != (SIGTRAP | 0x80)) {
			*deliver = WSTOPSIG(st);
			return regs_set(tid, exact, err);
		}
		if (ptrace(PTRACE_CONT, tid, 0, 0) < 0)
			return fail(err, PTR_INJ_STEP_RESUME, tid, -errno);
	}
	return fail(err, PTR_INJ_STEP_PROTOCOL, tid, -EPROTO);
}

/* ---- parking the other threads (see "Parking" in the file comment) ---- */

/* re-send now the signals held for @tid (it blocks every signal: they stay pending) */
static void resend_held(struct ptr_inject *inj, int tid)
{
	int kept = 0;

	for (int i = 0; i < inj->nheld; i++) {
		if (inj->held_tid[i] == tid &&
		    (syscall(SYS_tgkill, inj->pid, tid, inj->held[i]) == 0 || errno == ESRCH))
			continue;
		inj->held_tid[kept] = inj->held_tid[i];
		inj->held[kept++] = inj->held[i];
	}
	inj->nheld = kept;
}

/* step @t with PTRACE_SYSCALL to the entry stop of system call @nr whose `syscall` ends at @rip */
static int step_to_call(struct ptr_inject *inj, struct thread *t, long nr, uint64_t rip,
			struct ptr_inj_err *err)
{
	struct user_regs_struct r;
	int rc, entering = 1;

	for (int guard = 0; guard < 64; guard++) {
		if ((rc = next_stop_of(inj, t, err)))
			return rc;
		if (entering) {
			if ((rc = regs_get(t->tid, &r, err)))
				return rc;
			if ((long)r.orig_rax == nr && r.rip == rip)
				return 0;
		}
		entering = !entering;
	}
	return fail(err, PTR_INJ_STEP_PROTOCOL, t->tid, -EPROTO);
}

static uint64_t park_code(const struct ptr_inject *inj, const struct thread *t)
{
	return inj->scratch + PARK_CODE + (uint64_t)(t - inj->threads) * PARK_STRIDE;
}

/*
 * Send one stopped thread into its park code and let it run to its futex wait.  From the
 * moment its registers point there, a tracer that dies leaves it to park and, once the
 * injected thread opens the gate, to put itself back (tests: PTR_INJ_KILL_PARKING).
 */
static int park_one(struct ptr_inject *inj, struct thread *t, struct ptr_inj_err *err)
{
	uint64_t code = park_code(inj, t), waited = code + (ptr_park_waited - ptr_park_start);
	uint64_t slot[P_SLOT_BYTES / 8] = { 0 };
	struct user_regs_struct r;
	int rc;

	regs_image(&t->norm, slot + P_IMAGE / 8);
	slot[P_RSEQ_PTR / 8] = t->rseq.rseq_abi_pointer;
	slot[P_RSEQ_LEN / 8] = (uint64_t)t->rseq.signature << 32 | t->rseq.rseq_abi_size;
	slot[P_ALLMASK / 8] = ~0ULL;
	slot[P_GATE / 8] = inj->scratch + PAGE + D_GATE;
	if ((rc = mem_rw(inj, 1, code + PARK_D, slot, sizeof(slot), err)))
		return rc;
	r = t->norm;
	r.rip = code;
	r.orig_rax = -1;
	if ((rc = regs_set(t->tid, &r, err)))
		return rc;
	if (t->pending_sig) { /* resuming suppresses it: re-sent once the thread blocks it */
		add_held(inj, t->tid, t->pending_sig);
		t->pending_sig = 0;
	}
	if ((rc = step_to_call(inj, t, NR_FUTEX, waited, err)))
		return rc;
	resend_held(inj, t->tid);
	if (ptrace(PTRACE_CONT, t->tid, 0, 0) < 0)
		return fail(err, PTR_INJ_STEP_RESUME, t->tid, -errno);
	t->parked = 1;
	inj->parked++;
	return 0;
}

/* the next stop of a thread we resumed or interrupted: an event or syscall stop */
static int stop_of(struct ptr_inject *inj, struct thread *t, int *st, struct ptr_inj_err *err)
{
	for (int guard = 0; guard < 100; guard++) {
		int rc = wait_stop(inj, t, st, err);

		if (rc)
			return rc;
		if (*st >> 16 == PTRACE_EVENT_STOP || WSTOPSIG(*st) == (SIGTRAP | 0x80))
			return 0;
		add_held(inj, t->tid, WSTOPSIG(*st)); /* a SIGSTOP: suppressed, re-sent at detach */
		if (ptrace(PTRACE_CONT, t->tid, 0, 0) < 0)
			return fail(err, PTR_INJ_STEP_RESUME, t->tid, -errno);
	}
	return fail(err, PTR_INJ_STEP_PROTOCOL, t->tid, -EPROTO);
}

/*
 * Bring a parked thread back to its ptrace stop, exactly as it was: interrupt its wait, run
 * its unpark code to the getpid marker (rseq registered again), then through one more
 * get_signal() stop where its registers and signal mask are set back (as restore_thread()
 * does for the injected thread).  A tracer that dies at any step leaves it to finish by
 * itself (tests: PTR_INJ_KILL_UNPARKING).
 */
static int unpark_one(struct ptr_inject *inj, struct thread *t, struct ptr_inj_err *err)
{
	uint64_t code = park_code(inj, t), marker = code + (ptr_park_marker - ptr_park_start);
	uint64_t mask;
	struct user_regs_struct r;
	int rc, st;

	if (ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) < 0)
		return fail(err, PTR_INJ_STEP_INTERRUPT, t->tid, -errno);
	if ((rc = stop_of(inj, t, &st, err)))
		return rc;
	r = t->norm;
	r.rip = code + (ptr_park_unpark - ptr_park_start);
	r.orig_rax = -1;
	if ((rc = regs_set(t->tid, &r, err)))
		return rc;
	test_kill_point(PTR_INJ_KILL_UNPARKING);
	if ((rc = step_to_call(inj, t, NR_GETPID, marker, err)) ||
	    (rc = next_stop_of(inj, t, err))) /* the marker's exit */
		return rc;
	if ((rc = mem_rw(inj, 0, code + PARK_D + P_SIGMASK, &mask, sizeof(mask), err)))
		return rc;
	if ((rc = through_get_signal(inj, t, &t->saved, &t->pending_sig, err)))
		return rc;
	if (ptrace(PTRACE_SETSIGMASK, t->tid, sizeof(mask), &mask) < 0)
		return fail(err, PTR_INJ_STEP_SETREGS, t->tid, -errno);
	t->parked = 0;
	inj->parked--;
	return 0;
}

/**
 * ptr_inject_park() - park every thread but the injected one in the trampoline.
 * @inj: the session.
 * @err: the failed step on failure.
 *
 * Each other thread blocks its signals, gives up its rseq registration and waits on a futex in
 * the scratch mapping, touching nothing else, until ptr_inject_unpark() (or the detach) brings
 * it back - or, should ptreloc die, until the injected thread, having finished its batch, opens
 * the gate.  ptr_inject_move_batch() parks by itself; parking twice is a no-op.
 *
 * Return: 0; -E2BIG (more than PARK_MAX threads), -ESRCH (the process exited), other -errno.
 * Locking: the tracer thread only.
 */
int ptr_inject_park(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	int rc;

	if (err)
		memset(err, 0, sizeof(*err));
	if (!inj || !inj->trampoline)
		return fail(err, PTR_INJ_STEP_ARGS, 0, -EINVAL);
	if (inj->gone)
		return fail(err, PTR_INJ_STEP_WAIT, inj->pid, -ESRCH);
	for (int i = PARK_MAX; i < inj->nthreads; i++)
		if (!inj->threads[i].gone && &inj->threads[i] != inj->inj)
			return fail(err, PTR_INJ_STEP_ARGS, inj->threads[i].tid, -E2BIG);
	for (int i = 0; i < inj->nthreads; i++) {
		struct thread *t = &inj->threads[i];

		if (t->gone || t == inj->inj || t->parked || !t->has_regs)
			continue;
		if ((rc = park_one(inj, t, err)))
			return rc;
		test_kill_point(PTR_INJ_KILL_PARKING);
	}
	return 0;
}

/**
 * ptr_inject_unpark() - bring every parked thread back to its ptrace stop, exactly as it was.
 * @inj: the session.
 * @err: the first failed step.
 *
 * Best effort: goes on after a failure and reports the first; a thread it could not bring back
 * stays parked, and the detach releases it through the gate.
 *
 * Return: 0, -ESRCH (the process exited), or the first other -errno.
 * Locking: the tracer thread only.
 */
int ptr_inject_unpark(struct ptr_inject *inj, struct ptr_inj_err *err)
{
	int first = 0;

	if (err)
		memset(err, 0, sizeof(*err));
	if (!inj)
		return fail(err, PTR_INJ_STEP_ARGS, 0, -EINVAL);
	for (int i = 0; i < inj->nthreads && !inj->gone; i++) {
		struct thread *t = &inj->threads[i];
		int rc;

		if (!t->parked || t->gone)
			continue;
		rc = unpark_one(inj, t, first ? NULL : err);
		if (rc && !first)
			first = rc;
	}
	if (inj->gone && !first)
		first = fail(err, PTR_INJ_STEP_WAIT, inj->pid, -ESRCH);
	return first;
}

/*
 * A parked thread the unpark could not bring back: open the gate and wake it, so it puts
 * itself back (its PTRACE_DETACH then finds it running, and reap_dead() detaches it).
 */
static void release_parked(struct ptr_inject *inj)
{
	uint32_t one = 1;
	int64_t a[6] = { 0 }, r;

	if (!inj->parked || inj->gone)
		return;
	if (mem_rw(inj, 1, inj->scratch + PAGE + D_GATE, &one, sizeof(one), NULL))
		return;
	a[0] = inj->scratch + PAGE + D_GATE;
	a[1] = FUTEX_WAKE_PRIVATE;
	a[2] = 0x7fffffff;
	(void)call_ok(inj, NR_FUTEX, a, &r, NULL);
	for (int i = 0; i < inj->nthreads; i++)
		if (inj->threads[i].parked) {
			inj->threads[i].parked = 0;
			inj->threads[i].still_traced = 1;
		}
	inj->parked = 0;
	inj->keep_scratch = 1;
}

/**
 * ptr_inject_move_batch() - mremap every VMA of @moves away and back, in the process.
 * @inj: the session.
 * @moves: the round trips; results are written back into them.
 * @n: entries (at most batch_max of ptr_inject_info()).
 * @err: the failed step on failure.
 *
 * All VMAs go away first and then all come back, so an upper-level table whose whole range
 * was vacated is freed and allocated afresh.  Every other thread is parked first (and stays
 * parked until ptr_inject_unpark() or the detach).  The batch runs in the trampoline: a tracer
 * that dies mid-batch leaves the thread to finish it, open the gate and restore itself, and the
 * parked threads to restore themselves after it.  A move back that fails is
 * retried once after restoring the saved policy; the entries say what happened.
 *
 * Return: 0 when the batch ran (each entry's results still need checking); -ESRCH when the
 * process exited; other -errno when the injection failed.
 * Locking: the tracer thread only.
 */
int ptr_inject_move_batch(struct ptr_inject *inj, struct ptr_inj_move *moves, uint64_t n,
			  struct ptr_inj_err *err)
{
	uint64_t table = inj->scratch + 2 * PAGE;
	uint64_t marker = inj->scratch + (ptr_tramp_batch_end - ptr_tramp_start);
	struct user_regs_struct r;
	int tid, rc, entering = 1;
	uint64_t mremaps = 0;

	if (err)
		memset(err, 0, sizeof(*err));
	if (!inj->trampoline || n > SCRATCH_BATCH_PAGES * PAGE / ENTRY_BYTES)
		return fail(err, PTR_INJ_STEP_ARGS, 0, -EINVAL);
	if (inj->gone)
		return fail(err, PTR_INJ_STEP_WAIT, inj->pid, -ESRCH);
	tid = inj->inj->tid;
	for (uint64_t i = 0; i < n; i++)
		moves[i].away = moves[i].back = moves[i].back_retry = 1;
	if (n == 0)
		return 0;
	if ((rc = ptr_inject_park(inj, err)))
		return rc;
	if ((rc = mem_rw(inj, 1, table, moves, n * sizeof(*moves), err)))
		return rc;
	r = inj->norm;
	r.rip = inj->scratch + (ptr_tramp_batch - ptr_tramp_start);
	r.orig_rax = -1;
	r.r12 = table;
	r.r13 = n;
	if ((rc = regs_set(tid, &r, err)))
		return rc;
	for (uint64_t guard = 0; guard < 8 * n + 64; guard++) {
		if ((rc = next_syscall_stop(inj, err)))
			return rc;
		if (entering) {
			if ((rc = regs_get(tid, &r, err)))
				return rc;
			if ((long)r.orig_rax == NR_MREMAP && ++mremaps == n + 1)
				test_kill_point(PTR_INJ_KILL_ALL_AWAY);
			if ((long)r.orig_rax == NR_GETPID && r.rip == marker) {
				if ((rc = next_syscall_stop(inj, err)))
					return rc;
				return mem_rw(inj, 0, table, moves, n * sizeof(*moves), err);
			}
		}
		entering = !entering;
	}
	return fail(err, PTR_INJ_STEP_PROTOCOL, tid, -EPROTO);
}

/* take the injected thread back to exactly where it was, through a get_signal() stop */
static int restore_thread(struct ptr_inject *inj, int *deliver, struct ptr_inj_err *err)
{
	int tid = inj->inj->tid, rc;

	/*
	 * First the registers with the restart already applied: should ptreloc die from here to
	 * the next stop, the thread resumes from this syscall-exit stop (where the kernel applies
	 * no restart) straight into its interrupted call again.  The exact registers are set only
	 * at the get_signal() stop below, from which a detach - ours or the kernel's when ptreloc
	 * dies - goes through arch_do_signal_or_restart().
	 */
	if ((rc = regs_set(tid, &inj->norm, err)))
		return rc;
	return through_get_signal(inj, inj->inj, &inj->saved, deliver, err);
}

/*
 * A traced thread that exits stays a zombie until its tracer waits for it (and a traced leader's
 * exit reaches its real parent only after that), so when the process died under us every thread
 * we still trace is reaped here, with a deadline.
 */
/*
 * Leave no traced zombie behind.  A thread PTRACE_DETACH refused with ESRCH is not in a
 * ptrace-stop - a SIGKILL woke it and is taking it down - but it is still our tracee: its exit
 * completes only when we, the tracer, wait for it, and until then the process's parent blocks
 * in waitpid() forever.  So every such thread is interrupted (a live seized tracee stops; an
 * exiting one is unaffected) and waited for until it reports its exit (reaped) or a stop (it
 * is alive after all: detach it again).  No fixed deadline decides this - under load an exit
 * with a large mm takes seconds - only a generous cap against a thread that neither stops nor
 * dies.  One case cannot be settled here: a zombie leader whose other threads live on (it
 * called pthread_exit()) is reapable only once they exit; it stays our tracee until then.
 */
static void reap_dead(struct ptr_inject *inj, int alive)
{
	int64_t deadline = monotonic_ms() + 60000;
	int left = 0;

	for (int i = 0; i < inj->nthreads; i++) {
		if (inj->threads[i].still_traced) {
			(void)ptrace(PTRACE_INTERRUPT, inj->threads[i].tid, 0, 0);
			left++;
		}
	}
	while (left > 0 && monotonic_ms() < deadline) {
		int leader_left = 0;

		for (int i = 0; i < inj->nthreads; i++) {
			struct thread *t = &inj->threads[i];
			int st, rc;

			if (!t->still_traced)
				continue;
			rc = waitpid_eintr(t->tid, &st, WNOHANG);
			if (rc == 0) {
				leader_left |= t->tid == inj->pid;
				continue;
			}
			if (rc < 0 || WIFEXITED(st) || WIFSIGNALED(st) ||
			    ptrace(PTRACE_DETACH, t->tid, 0, 0) == 0 || errno != ESRCH) {
				t->still_traced = 0;
				t->gone = rc < 0 || !WIFSTOPPED(st);
				left--;
			}
		}
		if (left == 1 && leader_left && alive)
			break; /* the pthread_exit() case above */
		struct timespec ts = { 0, 1000000 };

		nanosleep(&ts, NULL);
	}
}

static int detach_all(struct ptr_inject *inj, int leave_stopped, struct ptr_inj_err *err)
{
	int first = 0, deliver = 0, alive = 0, rc;
	int64_t a[6] = { 0 }, r;

#define KEEP(x) do { rc = (x); if (rc && !first) first = rc; } while (0)
	if (inj->inj && !inj->gone && inj->memfd >= 0) {
		if (inj->trampoline) {
			if (inj->parked) {
				KEEP(ptr_inject_unpark(inj, first ? NULL : err));
				release_parked(inj);
			}
			if (inj->rseq_registered && !leave_stopped) {
				a[0] = inj->rseq.rseq_abi_pointer;
				a[1] = inj->rseq.rseq_abi_size;
				a[2] = 0;
				a[3] = inj->rseq.signature;
				KEEP(call_ok(inj, NR_RSEQ, a, NULL, err));
			}
			KEEP(ptr_inject_restore_policy(inj, first ? NULL : err));
			if (inj->mask_blocked) {
				memset(a, 0, sizeof(a));
				a[0] = SIG_SETMASK;
				a[1] = inj->scratch + PAGE + D_SIGMASK;
				a[3] = 8;
				KEEP(call_ok(inj, NR_RT_SIGPROCMASK, a, NULL, first ? NULL : err));
			}
			inj->trampoline = 0; /* the munmap runs at the process's own instruction */
		}
		if (inj->scratch && !inj->gone && !inj->keep_scratch) {
			memset(a, 0, sizeof(a));
			a[0] = inj->scratch;
			a[1] = SCRATCH_LEN;
			KEEP(call_ok(inj, NR_MUNMAP, a, &r, first ? NULL : err));
			if (!rc)
				inj->scratch = 0;
		}
		if (!inj->gone)
			KEEP(restore_thread(inj, &deliver, first ? NULL : err));
	}
	if (leave_stopped && !inj->gone && kill(inj->pid, SIGSTOP) < 0)
		KEEP(fail(first ? NULL : err, PTR_INJ_STEP_KILL, inj->pid, -errno));
	for (int i = 0; i < inj->nthreads; i++) {
		struct thread *t = &inj->threads[i];
		int sig = t == inj->inj ? deliver : t->pending_sig;

		if (t->gone)
			continue;
		if (ptrace(PTRACE_DETACH, t->tid, 0, (void *)(long)sig) == 0)
			alive++;
		else if (errno == ESRCH)
			t->still_traced = 1;
		else
			KEEP(fail(first ? NULL : err, PTR_INJ_STEP_DETACH, t->tid, -errno));
	}
	reap_dead(inj, alive);
	if (inj->inj && !inj->gone)
		for (int i = 0; i < inj->nheld; i++)
			if (syscall(SYS_tgkill, inj->pid, inj->held_tid[i], inj->held[i]) < 0 &&
			    errno != ESRCH)
				KEEP(fail(first ? NULL : err, PTR_INJ_STEP_KILL, inj->held_tid[i], -errno));
#undef KEEP
	if (inj->memfd >= 0)
		close(inj->memfd);
	free(inj->threads);
	free(inj);
	return first;
}

/**
 * ptr_inject_detach() - put the injected thread back exactly as it was and let every thread go.
 * @inj: the session; freed, whatever the result.
 * @leave_stopped: non-zero: SIGSTOP the process before detaching (it stays stopped for a human
 *   to look at; rseq is then left unregistered, which glibc tolerates).
 * @err: the first failed step, if any.
 *
 * Re-registers rseq, restores the memory policy and the signal mask, unmaps the trampoline,
 * sets the saved registers and detaches every thread (a signal held in a signal-delivery stop
 * is handed back by the detach; one we suppressed is re-sent with tgkill()).  Best effort: it
 * goes on after a failure and reports the first.
 *
 * Return: 0, -ESRCH when the process exited meanwhile, or the first other -errno.
 * Locking: the tracer thread only.
 */
int ptr_inject_detach(struct ptr_inject *inj, int leave_stopped, struct ptr_inj_err *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
	if (!inj)
		return 0;
	return detach_all(inj, leave_stopped, err);
}

#else /* !PTR_INJ_SUPPORTED */

/**
 * ptr_inject_attach() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS, with @err->step PTR_INJ_STEP_ARCH.
 * Locking: none.
 */
int ptr_inject_attach(int pid, int tid, struct ptr_inject **out, struct ptr_inj_err *err)
{
	return fail(err, PTR_INJ_STEP_ARCH, 0, -ENOSYS);
}
/**
 * ptr_inject_info() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_info(const struct ptr_inject *inj, struct ptr_inj_info *out) { return -ENOSYS; }
/**
 * ptr_inject_syscall() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_syscall(struct ptr_inject *inj, long nr, const int64_t *args, int64_t *ret,
		       struct ptr_inj_err *err) { return -ENOSYS; }
/**
 * ptr_inject_read() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_read(struct ptr_inject *inj, uint64_t addr, void *buf, uint64_t len,
		    struct ptr_inj_err *err) { return -ENOSYS; }
/**
 * ptr_inject_write() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_write(struct ptr_inject *inj, uint64_t addr, const void *buf, uint64_t len,
		     struct ptr_inj_err *err) { return -ENOSYS; }
/**
 * ptr_inject_bind_policy() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_bind_policy(struct ptr_inject *inj, int mode, const uint64_t *mask,
			   struct ptr_inj_err *err) { return -ENOSYS; }
/**
 * ptr_inject_saved_policy() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_saved_policy(const struct ptr_inject *inj, int *mode, uint64_t *mask)
{ return -ENOSYS; }
/**
 * ptr_inject_restore_policy() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_restore_policy(struct ptr_inject *inj, struct ptr_inj_err *err) { return -ENOSYS; }
/**
 * ptr_inject_move_batch() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_move_batch(struct ptr_inject *inj, struct ptr_inj_move *moves, uint64_t n,
			  struct ptr_inj_err *err) { return -ENOSYS; }
/**
 * ptr_inject_detach() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_detach(struct ptr_inject *inj, int leave_stopped, struct ptr_inj_err *err)
{ return -ENOSYS; }
/**
 * ptr_inject_park() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_park(struct ptr_inject *inj, struct ptr_inj_err *err) { return -ENOSYS; }
/**
 * ptr_inject_unpark() - not x86-64: there is no injector (ptr_inject_supported() is 0).
 *
 * Return: -ENOSYS.
 * Locking: none.
 */
int ptr_inject_unpark(struct ptr_inject *inj, struct ptr_inj_err *err) { return -ENOSYS; }

#endif
