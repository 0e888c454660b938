// SPDX-License-Identifier: MIT
/*
 * The context-process runtime (see ctxproc.h).  It talks to its broker
 * through the client API (ctxclient.h), which hides the transport: the
 * embedded broker's socket or a /dev/ctxvm context fd.  Anything it does
 * not expect from the broker ends the process.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../shared/broker.h"
#include "../shared/ctxvm_uapi.h"
#include "ctxclient.h"
#include "ctxproc.h"
#include "interp_core.h"

#define MAX_GUARDS CTX_CALL_DEPTH_LIMIT

struct ctxproc {
	struct ctxvm_client client;
	bool have_reply;        /* a CALL already brought the next message */
	struct ctxvm_msg reply;
	struct vm_ctx ctx;
	bool have_ctx;
	/* Context 0 only: journal marks of the delegatecalls now running. */
	struct vm_journal_mark guards[MAX_GUARDS];
	unsigned nguards;
	/* Activations the broker unwound that this process must still leave. */
	uint64_t abandon;
};

/* The run is over (leave quietly), or the broker refused us or made no sense. */
static void __attribute__((noreturn)) leave(int r)
{
	_exit(r == -ESHUTDOWN ? 0 : 3);
}

/*
 * 0, or for a CALL the broker refused, the CTXVM_B_* reason; any other
 * refusal means this process broke the protocol, and it leaves.
 */
static int send_msg(struct ctxproc *cp, struct ctxvm_msg *m)
{
	int r;

	switch (m->type) {
	case CTXVM_MSG_CALL:
		r = ctxvm_client_call(&cp->client, m);
		if (!r) {
			/* It comes back holding the first message for us. */
			cp->reply = *m;
			cp->have_reply = true;
		}
		switch (r) {
		case 0:
		case -EINTR:            /* the call was made; the answer comes by wait */
			return 0;
		case -EDEADLK:
			return CTXVM_B_SYSCALL_IN_KERNEL;
		case -ENOENT:
			return CTXVM_B_NOT_KERNEL_TARGET;
		case -ELOOP:
			return CTXVM_B_DEPTH;
		}
		break;
	case CTXVM_MSG_RETURN:
		r = ctxvm_client_return(&cp->client, m);
		break;
	case CTXVM_MSG_FAIL:
		r = ctxvm_client_fail(&cp->client, m);
		break;
	default:
		r = ctxvm_client_finish(&cp->client, m);
	}
	if (r)
		leave(r);
	return 0;
}

static void recv_msg(struct ctxproc *cp, struct ctxvm_msg *m)
{
	int r;

	if (cp->have_reply) {
		*m = cp->reply;
		cp->have_reply = false;
		return;
	}
	while ((r = ctxvm_client_wait(&cp->client, m)) == -EINTR)
		;
	if (r)
		leave(r);
}

static void run_activation(struct vm *vm, struct ctxproc *cp, const struct ctxvm_msg *run);

/* Journal and fmp orders for context 0; they may arrive whenever it waits. */
static bool handle_guard(struct ctxproc *cp, const struct ctxvm_msg *m)
{
	if (m->type == CTXVM_MSG_GUARD_BEGIN) {
		if (cp->nguards == MAX_GUARDS)
			_exit(5);
		cp->guards[cp->nguards++] = vm_journal_begin(cp->ctx.mem);
		return true;
	}
	if (m->type == CTXVM_MSG_GUARD_END) {
		if (!cp->nguards)
			_exit(5);
		cp->nguards--;
		if (m->status)
			vm_journal_rollback(cp->ctx.mem, cp->guards[cp->nguards]);
		else
			vm_journal_commit(cp->ctx.mem, cp->guards[cp->nguards]);
		cp->ctx.fmp = m->fmp;
		return true;
	}
	return false;
}

static enum ctx_error_kind remote_invoke(struct vm *vm, struct vm_ctx *caller_ctx,
					 enum ctx_frame_kind kind, uint32_t proc, fe_t *window,
					 uint64_t *gas, uint64_t gas_arg, uint32_t budget,
					 uint32_t pc, bool *guard_failed)
{
	struct ctxproc *cp = vm->backend;
	bool guarded = kind == FRAME_DELEGATECALL || kind == FRAME_DYNDELEGATECALL;
	enum ctx_error_kind err;
	int refused;
	struct ctxvm_msg m = {
		.type = CTXVM_MSG_CALL,
		.kind = (uint64_t)kind,
		.proc = proc,
		.pc = pc,
		.gas = *gas,
		.gas_arg = gas_arg,
		.fmp = caller_ctx->fmp,
		.budget = budget,
	};

	memcpy(m.digest, vm->prog->procs[proc].digest, sizeof(m.digest));
	memcpy(m.window, window, sizeof(m.window));
	refused = send_msg(cp, &m);
	if (refused) {
		err = vm_broker_refusal(vm, refused, proc, pc);
		if (!guarded || err == CTX_E_SystemError)
			return err;
		/* A delegatecall that could not start failed like any other. */
		vm->res->error = CTX_OK;
		vm->res->message[0] = '\0';
		*guard_failed = true;
		return CTX_OK;
	}
	for (;;) {
		recv_msg(cp, &m);
		if (handle_guard(cp, &m))
			continue;
		if (m.type == CTXVM_MSG_RUN) {
			/* A syscall into context 0 while this context waits. */
			run_activation(vm, cp, &m);
			if (cp->abandon) {
				cp->abandon--;
				if (cp->abandon)
					return CTX_E_SystemError;
			}
			continue;
		}
		if (m.type != CTXVM_MSG_RESULT)
			_exit(4);
		if (m.status == CTXVM_RESULT_ABORT) {
			/* The broker unwound past this frame: leave quietly. */
			cp->abandon = m.gas_arg;
			vm->res->error = CTX_E_SystemError;
			return CTX_E_SystemError;
		}
		*gas -= m.gas < *gas ? m.gas : *gas;
		if (m.status == CTXVM_RESULT_GUARD_FAILED) {
			*guard_failed = true;
			return CTX_OK;
		}
		memcpy(window, m.window, sizeof(m.window));
		*guard_failed = false;
		return CTX_OK;
	}
}

static enum ctx_error_kind remote_caller(struct vm *vm, struct vm_ctx *ctx, fe_t *out)
{
	struct ctxproc *cp = vm->backend;
	__u64 digest[4];
	int r;

	(void)ctx;
	r = ctxvm_client_caller(&cp->client, digest);
	if (r)
		leave(r);
	memcpy(out, digest, sizeof(digest));
	return CTX_OK;
}

static const struct vm_hooks remote_hooks = {
	.invoke = remote_invoke,
	.caller = remote_caller,
};

static void run_activation(struct vm *vm, struct ctxproc *cp, const struct ctxvm_msg *run)
{
	struct ctxvm_msg out = { 0 };
	fe_t window[CTX_STACK_MIN];
	uint64_t used = 0;
	enum ctx_error_kind err;

	if (run->proc >= vm->prog->nprocs || run->budget < CTX_STACK_MIN ||
	    run->budget > CTX_STACK_DEPTH_LIMIT || run->kind > FRAME_DYNDELEGATECALL)
		_exit(4);
	if (!cp->have_ctx) {
		if (!cp->ctx.mem)
			cp->ctx.mem = vm_mem_new(vm->opts->mem_limit);
		if (!cp->ctx.mem)
			_exit(6);
		cp->ctx.id = run->ctx_id;
		cp->have_ctx = true;
	}
	cp->ctx.fmp = run->fmp;
	memcpy(window, run->window, sizeof(window));
	vm->res->error = CTX_OK;
	vm->res->message[0] = '\0';
	vm->res->nbacktrace = 0;

	err = vm_activate(vm, &cp->ctx, (uint32_t)run->proc, window, run->gas, &used,
			  (uint32_t)run->budget, (enum ctx_frame_kind)run->kind);
	if (cp->abandon)
		return;         /* the broker already knows; it sent the abort */
	if (err == CTX_OK) {
		out.type = run->kind == FRAME_ROOT ? CTXVM_MSG_FINISH : CTXVM_MSG_RETURN;
		memcpy(out.window, window, sizeof(out.window));
	} else {
		out.type = CTXVM_MSG_FAIL;
		out.kind = (uint64_t)err;
		out.pc = vm->res->nbacktrace ? vm->res->backtrace[0].pc : 0;
		size_t len = strnlen(vm->res->message, sizeof(out.text) - 1);

		memcpy(out.text, vm->res->message, len);       /* out is zeroed: NUL-ended */
	}
	out.gas = used;
	send_msg(cp, &out);
	/* An outer activation of context 0 may go on: its error state is its own. */
	vm->res->error = CTX_OK;
	vm->res->message[0] = '\0';
	vm->res->nbacktrace = 0;
}

#ifdef CTXVM_TESTING
struct scan_range {
	uintptr_t lo, hi;
};
static struct scan_range scan_ranges[1024];
static unsigned nscan_ranges;

void ctxproc_scan_prepare(void)
{
	static char buf[1 << 16];
	ssize_t n, len = 0;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	while ((n = read(fd, buf + len, sizeof(buf) - 1 - (size_t)len)) > 0)
		len += n;
	close(fd);
	buf[len] = '\0';
	for (char *line = strtok(buf, "\n"); line && nscan_ranges < 1024; line = strtok(NULL, "\n")) {
		unsigned long lo, hi;
		char perms[8];

		/* A value made at run time can only be in writable memory. */
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r' ||
		    perms[1] != 'w' ||
		    strstr(line, "[vvar") || strstr(line, "[vsyscall]"))
			continue;
		scan_ranges[nscan_ranges++] = (struct scan_range){ lo, hi };
	}
}

/* Every readable word of this process, compared without unmasking the secret. */
static bool secret_visible(void)
{
	for (unsigned r = 0; r < nscan_ranges; r++)
		for (uintptr_t a = scan_ranges[r].lo; a + 8 <= scan_ranges[r].hi; a += 8)
			if ((*(const volatile uint64_t *)a ^ CTX_TEST_SECRET_MASK) ==
			    ctx_test.scan_secret_masked)
				return true;
	return false;
}

/* Test build: the hostile context of the switches in interp.h. */
static void misbehave(struct ctxproc *cp, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m = { .type = CTXVM_MSG_RETURN };
	char b;

	/* raise() needs getpid and tgkill, which the sandbox forbids: fault instead. */
	if (ctx_test.scan_secret_masked && secret_visible()) {
		if (cp->client.kmod) {
			memset(&m, 0, sizeof(m));
			m.type = CTXVM_MSG_FAIL;
			strcpy((char *)m.text, "found the secret");
			(void)ioctl(cp->client.fd, CTXVM_CTX_ABORT, &m);
		}
		(void)write(cp->client.fd, "found the secret", 16);
		_exit(0);
	}
	if (ctx_test.crash_signal == SIGSEGV) {
		int *volatile nowhere = NULL;   /* volatile: a real store, not a trap */

		*nowhere = 0;
	}
	if (ctx_test.crash_signal == SIGILL)
		__builtin_trap();
	if (ctx_test.attack_syscall >= 0)
		syscall(ctx_test.attack_syscall, 0, 0, 0, 0, 0, 0);
	switch (ctx_test.endpoint) {
	case TEST_ENDPOINT_GARBAGE:
		if (cp->client.kmod) {
			/* a message of no type: the module refuses it, and a refused context leaves */
			memset(&m, 0xa5, sizeof(m));
			if (ioctl(cp->client.fd, CTXVM_CTX_RETURN, &m) < 0)
				_exit(3);
		}
		(void)write(cp->client.fd, "garbage", 7);
		break;
	case TEST_ENDPOINT_CLOSE:
		close(cp->client.fd);
		for (;;)
			;
	case TEST_ENDPOINT_LIE_GAS:
		memcpy(m.window, run->window, sizeof(m.window));
		m.gas = run->gas + 1000;
		send_msg(cp, &m);
		break;
	case TEST_ENDPOINT_RETURN_TWICE:
		memcpy(m.window, run->window, sizeof(m.window));
		send_msg(cp, &m);
		send_msg(cp, &m);
		break;
	case TEST_ENDPOINT_HANG:
		for (;;)
			if (cp->client.kmod)
				(void)ioctl(cp->client.fd, CTXVM_CTX_WAIT, &m);  /* nothing will come */
			else
				(void)read(cp->client.fd, &b, 1);
	case TEST_ENDPOINT_NONE:
		return;
	}
	/* Wait to be killed, as a liar would. */
	while (read(cp->client.fd, &b, 1) > 0)
		;
	_exit(0);
}
#endif

/*
 * A pooled process may wait long before its one RUN: it takes now the page
 * faults the RUN would otherwise take on the path of the call (its memory
 * map, the interpreter's stack buffer; ~50 us of a ready call here).  None
 * of it depends on what the RUN will say.  (Populating the code's page
 * tables as well measured no faster.)
 */
static void warm_up(struct ctxproc *cp, struct run_result *res, const struct run_options *opts)
{
	/* vm_activate's stack buffer at its largest: the budget plus its drift margin. */
	size_t stack_bytes = (CTX_STACK_DEPTH_LIMIT + 1024) * sizeof(fe_t);
	char *p;

	cp->ctx.mem = vm_mem_new(opts->mem_limit);
	res->error = CTX_OK;    /* its page, written by every RUN */
	/* Touched and freed to the heap's top, where vm_activate's calloc will find it. */
	p = malloc(stack_bytes);
	if (p) {
		/* Not 0: gcc would make malloc+memset(0) a calloc, which touches nothing. */
		memset(p, 1, stack_bytes);
		__asm__ volatile("" : : "r"(p) : "memory");     /* the stores must happen */
		free(p);
	}
}

void ctxproc_main(const struct ctx_program *prog, const struct run_options *opts, int endpoint,
		  unsigned flags)
{
	static struct run_result res;
	/* Static, not a 16 KiB zeroed local: that was 4 stack pages to copy in every process. */
	static struct ctxproc cp;
	struct vm vm = {
		.prog = prog, .opts = opts, .res = &res, .hooks = &remote_hooks, .backend = &cp,
	};
	struct ctxvm_msg m;

	cp.client.fd = endpoint;
	cp.client.kmod = opts->kmod_endpoint;

	/* A context fd answers only the process that bound it. */
	if (ctxvm_client_bind(&cp.client) < 0)
		_exit(4);
	if (flags & CTXPROC_WARM_UP)
		warm_up(&cp, &res, opts);
	/*
	 * One RUN: a context's single activation, or context 0's root, during
	 * which the syscalls into context 0 arrive as nested RUNs.
	 */
	recv_msg(&cp, &m);
	if (m.type != CTXVM_MSG_RUN)
		_exit(4);
	/*
	 * The fork server grows the heap by exactly what is asked (so a call's
	 * first callocs touch no page they do not use); context 0 lives for the
	 * whole run and may allocate much: glibc's default padding again.
	 */
	if (m.ctx_id == 0)
		mallopt(M_TOP_PAD, 128 << 10);
#ifdef CTXVM_TESTING
	if (m.ctx_id != 0)
		misbehave(&cp, &m);
#endif
	run_activation(&vm, &cp, &m);
	/*
	 * Wait to be released rather than exit now, if asked: the broker then
	 * moves the exit's work (unmapping, freeing the filter) off the
	 * session's CPU.  On one CPU exiting at once is cheaper: no wake-up.
	 */
	if ((flags & CTXPROC_LINGER) && !cp.client.kmod) {
		char b;

		while (read(cp.client.fd, &b, 1) > 0)
			;
	}
	_exit(0);
}
