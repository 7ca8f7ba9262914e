/*
 * inject.h - run system calls inside another, ptrace-stopped process (x86-64 only).
 *
 * Used by ptreloc.kernel_move to move a live process's own page tables: every thread of the
 * process is seized and interrupted, one thread executes system calls on ptreloc's behalf
 * from a small trampoline mapped into the process, and every thread is resumed exactly where
 * it was.  See inject.c for the design, and docs/PROTOCOL.md ("The kernel's own tables").
 *
 * The cffi declarations are csrc/inject.cdef, as for every other subsystem: a change here
 * is made there too (ptreloc/_native.py relies on those names and signatures).
 *
 * Every function returns 0 or -errno and never prints; on failure @err->step names the
 * system call that failed (ptr_inject_step_name()) and @err->tid the thread it concerned.
 */
#ifndef PTRELOC_INJECT_H
#define PTRELOC_INJECT_H

#include <stdint.h>

/* steps: which system call (or check) failed */
enum ptr_inj_step {
	PTR_INJ_STEP_NONE = 0,
	PTR_INJ_STEP_ARGS,          /* bad arguments (EINVAL) */
	PTR_INJ_STEP_ARCH,          /* not x86-64, or a thread in 32-bit mode */
	PTR_INJ_STEP_LIST_TASKS,    /* opendir/readdir /proc/PID/task */
	PTR_INJ_STEP_SEIZE,         /* ptrace(PTRACE_SEIZE) */
	PTR_INJ_STEP_INTERRUPT,     /* ptrace(PTRACE_INTERRUPT) */
	PTR_INJ_STEP_WAIT,          /* waitpid(__WALL), or a stop that did not come in time */
	PTR_INJ_STEP_GETREGS,       /* ptrace(PTRACE_GETREGS) */
	PTR_INJ_STEP_SETREGS,       /* ptrace(PTRACE_SETREGS) */
	PTR_INJ_STEP_RESUME,        /* ptrace(PTRACE_SYSCALL / PTRACE_CONT) */
	PTR_INJ_STEP_RSEQ_CONFIG,   /* ptrace(PTRACE_GET_RSEQ_CONFIGURATION) */
	PTR_INJ_STEP_RSEQ_CS,       /* the thread is inside an rseq critical section (EAGAIN) */
	PTR_INJ_STEP_MEM,           /* open/pread/pwrite of /proc/PID/mem */
	PTR_INJ_STEP_FIND_SYSCALL,  /* no `syscall` instruction found in an executable mapping */
	PTR_INJ_STEP_REMOTE,        /* the injected system call itself returned an error */
	PTR_INJ_STEP_PROTOCOL,      /* a stop we did not expect (EPROTO) */
	PTR_INJ_STEP_DETACH,        /* ptrace(PTRACE_DETACH) */
	PTR_INJ_STEP_KILL,          /* kill(SIGSTOP) / tgkill (re-queueing a held signal) */
	PTR_INJ_STEP_KCMP,          /* kcmp(KCMP_VM) */
	PTR_INJ_STEP_NOMEM,         /* malloc */
	PTR_INJ_NSTEPS
};

struct ptr_inj_err {
	int step;     /* enum ptr_inj_step */
	int tid;      /* the thread concerned (0: none) */
	int64_t remote; /* PTR_INJ_STEP_REMOTE: the remote call's return value (-errno) */
	long nr;        /* PTR_INJ_STEP_REMOTE: the system call number */
};

struct ptr_inj_info {
	int pid;
	int tid;                /* the injected thread */
	int nthreads;           /* threads stopped (exited ones not counted) */
	int in_syscall;         /* the injected thread was stopped inside a system call */
	int64_t orig_rax;       /* its orig_rax when stopped (-1: not in a system call) */
	int64_t rax;            /* its rax when stopped (-ERESTART* when in a syscall) */
	uint64_t rip;           /* its rip when stopped */
	uint64_t site;          /* the process's own `syscall` instruction used to bootstrap */
	uint64_t scratch;       /* the trampoline mapping: code page, data page, batch pages */
	uint64_t scratch_len;
	uint64_t user_area;     /* free bytes in the data page for the caller's arguments */
	uint64_t user_area_len;
	uint64_t batch_max;     /* entries ptr_inject_move_batch() takes at most */
	int rseq_registered;    /* rseq was registered (and is unregistered while stopped) */
	int held_signals;       /* signals dequeued in our windows, re-queued at detach */
	int dropped_signals;    /* synchronous signals our own code raised, dropped */
	int parked;             /* other threads parked in the trampoline now */
};

/* one VMA's round trip: out and back; results are the mremap(2) return values */
struct ptr_inj_move {
	uint64_t old;           /* the VMA's start (and where it must end up) */
	uint64_t len;
	uint64_t dest;          /* the free address it visits */
	int64_t away;           /* mremap(old -> dest): dest, or -errno; 1 = not attempted */
	int64_t back;           /* mremap(dest -> old): old, or -errno; 1 = not attempted */
	int64_t back_retry;     /* the retry after restoring the saved policy; 1 = none */
};

struct ptr_inject;

int ptr_inject_attach(int pid, int tid, struct ptr_inject **out, struct ptr_inj_err *err);
int ptr_inject_info(const struct ptr_inject *inj, struct ptr_inj_info *out);
int ptr_inject_syscall(struct ptr_inject *inj, long nr, const int64_t *args, int64_t *ret,
		       struct ptr_inj_err *err);
int ptr_inject_read(struct ptr_inject *inj, uint64_t addr, void *buf, uint64_t len,
		    struct ptr_inj_err *err);
int ptr_inject_write(struct ptr_inject *inj, uint64_t addr, const void *buf, uint64_t len,
		     struct ptr_inj_err *err);
int ptr_inject_bind_policy(struct ptr_inject *inj, int mode, const uint64_t *mask,
			   struct ptr_inj_err *err);
int ptr_inject_saved_policy(const struct ptr_inject *inj, int *mode, uint64_t *mask);
int ptr_inject_restore_policy(struct ptr_inject *inj, struct ptr_inj_err *err);
int ptr_inject_move_batch(struct ptr_inject *inj, struct ptr_inj_move *moves, uint64_t n,
			  struct ptr_inj_err *err);
int ptr_inject_detach(struct ptr_inject *inj, int leave_stopped, struct ptr_inj_err *err);
int ptr_inject_park(struct ptr_inject *inj, struct ptr_inj_err *err);
int ptr_inject_unpark(struct ptr_inject *inj, struct ptr_inj_err *err);
const char *ptr_inject_step_name(int step);
int ptr_kcmp_same_vm(int pid1, int pid2, struct ptr_inj_err *err);
int ptr_inject_supported(void);

/* tests only: where ptr_inject_test_kill_tracer_at() makes the tracer SIGKILL itself */
enum ptr_inj_test_kill {
	PTR_INJ_KILL_NONE = 0,
	PTR_INJ_KILL_ALL_AWAY,      /* in a batch: every VMA is away (the first move back) */
	PTR_INJ_KILL_PARKING,       /* the first other thread is parked, the rest are not */
	PTR_INJ_KILL_UNPARKING      /* the first parked thread was sent to unpark */
};
int ptr_inject_test_kill_tracer_at(int where);

#define PTR_INJ_MASK_WORDS 16   /* nodemask words the policy calls use (1024 nodes) */

#endif /* PTRELOC_INJECT_H */
