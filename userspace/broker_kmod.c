// SPDX-License-Identifier: MIT
/*
 * The `kmod` backend: the frames live in ctxvm.ko (/dev/ctxvm) and the
 * context processes talk to it through their context fds; the runner only
 * serves the session's events.  A SPAWN event asks for a process, which the
 * fork server makes exactly as for the embedded broker, on a context fd
 * instead of a socket.  Every push and pop is an event, so the runner keeps
 * a mirror of the stack for --trace and for backtraces, and reaps each
 * context process when its frame is gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../shared/broker.h"
#include "../shared/ctxvm_uapi.h"
#include "broker_kmod.h"
#include "forkserver.h"
#include "interp_core.h"
#include "runlog.h"

#define DEVICE "/dev/ctxvm"
#define MAX_PROCS (CTX_CALL_DEPTH_LIMIT + 1)

struct mirror_frame {
	uint64_t endpoint;
	uint64_t ctx_id;
	uint64_t gas_limit;
	uint32_t kind;
	uint32_t call_pc;       /* the instruction that pushed it */
	long trace_node;
};

struct context_proc {
	uint64_t endpoint;      /* 0: free */
	pid_t pid;
	const char *why;        /* what the runner saw it do wrong, if anything */
};

struct kbroker {
	const struct ctx_program *prog;
	const struct run_options *opts;
	struct run_result *res;
	struct forkserver fs;
	int session;
	uint64_t root_endpoint;
	struct mirror_frame frames[CTX_CALL_DEPTH_LIMIT];
	uint32_t depth;
	struct context_proc procs[MAX_PROCS];
	bool done;
	enum ctx_error_kind result;
	uint64_t deadline_ns;
};

int ctx_kmod_open(void)
{
	int dev = open(DEVICE, O_RDWR | O_CLOEXEC);

	if (dev < 0)
		return -1;
	if (ioctl(dev, CTXVM_GET_API_VERSION, 0) != CTXVM_API_VERSION ||
	    ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MSG_SIZE) != (int)sizeof(struct ctxvm_msg) ||
	    ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MAX_DEPTH) < CTX_CALL_DEPTH_LIMIT ||
	    ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MAX_CONTEXTS) < MAX_PROCS) {
		close(dev);
		errno = EPROTO;
		return -1;
	}
	return dev;
}

static struct context_proc *proc_of(struct kbroker *kb, uint64_t endpoint)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (kb->procs[i].endpoint == endpoint)
			return &kb->procs[i];
	return NULL;
}

static void fail_run(struct kbroker *kb, const char *msg)
{
	runlog_error(kb->res, CTX_E_SystemError, msg);
	kb->done = true;
}

/* The same, with why the last system call failed. */
static void fail_run_errno(struct kbroker *kb, const char *what)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
	fail_run(kb, msg);
}

/* A process for `endpoint` on its context fd, with the frame's CPU budget. */
static void spawn(struct kbroker *kb, uint64_t endpoint, uint64_t gas_limit)
{
	struct ctxvm_context_fd req = { .endpoint = endpoint };
	struct context_proc *p = proc_of(kb, 0);
	int fd;

	if (!p) {
		fail_run(kb, "broker: too many context processes");
		return;
	}
	fd = ioctl(kb->session, CTXVM_CONTEXT_FD, &req);
	if (fd < 0) {
		fail_run_errno(kb, "broker: /dev/ctxvm refused a context fd");
		return;
	}
	p->pid = forkserver_spawn(&kb->fs, fd, gas_limit);
	if (p->pid <= 0) {
		fail_run_errno(kb, "broker: could not start a context process");
		close(fd);
		return;
	}
	close(fd);
	p->endpoint = endpoint;
	p->why = NULL;
}

static void reap(struct kbroker *kb, uint64_t endpoint, struct reaped *how)
{
	struct context_proc *p = proc_of(kb, endpoint);
	struct reaped ignored = { 0 };

	how = how ? how : &ignored;
	how->status = -1;
	how->cpu_ns = 0;
	if (!p || !endpoint)
		return;
	forkserver_reap(&kb->fs, p->pid, how);
	p->endpoint = 0;
}

/* Frames [0, top] as a backtrace, innermost first, starting at pc in the top one. */
static void record_backtrace(struct kbroker *kb, uint32_t top, uint32_t pc)
{
	kb->res->nbacktrace = 0;
	for (uint32_t i = top + 1; i-- > 0;) {
		runlog_backtrace_push(kb->res, kb->prog, kb->frames[i].ctx_id, kb->frames[i].kind, pc);
		pc = kb->frames[i].call_pc;
	}
}

/* The stack as the kernel left it after an unwind: close and reap what went. */
static void pop_to(struct kbroker *kb, uint32_t depth, enum ctx_error_kind outcome)
{
	while (kb->depth > depth) {
		struct mirror_frame *f = &kb->frames[--kb->depth];

		/* An unwound frame is charged its whole limit (shared/broker.c). */
		runlog_trace_close(kb->res, f->trace_node, f->gas_limit, outcome);
		if (f->endpoint != kb->root_endpoint)
			reap(kb, f->endpoint, NULL);
	}
}

static bool valid_run(const struct kbroker *kb, const struct ctxvm_msg *run)
{
	return run->proc < kb->prog->nprocs && run->budget >= CTX_STACK_MIN &&
	       run->budget <= CTX_STACK_DEPTH_LIMIT &&
	       memcmp(run->digest, kb->prog->procs[run->proc].digest, sizeof(run->digest)) == 0;
}

static void on_push(struct kbroker *kb, const struct ctxvm_event *ev)
{
	const struct ctxvm_msg *run = &ev->msg;
	struct mirror_frame *f;

	if (kb->depth >= CTX_CALL_DEPTH_LIMIT || ev->depth != kb->depth + 1u) {
		fail_run(kb, "broker: /dev/ctxvm reported a frame out of order");
		return;
	}
	f = &kb->frames[kb->depth++];
	*f = (struct mirror_frame){
		.endpoint = ev->endpoint, .ctx_id = run->ctx_id, .gas_limit = run->gas,
		.kind = (uint32_t)run->kind, .call_pc = (uint32_t)run->pc,
		.trace_node = runlog_trace_open(kb->res, kb->opts, kb->depth - 1, (uint32_t)run->kind,
						(uint32_t)run->proc, run->ctx_id, run->gas),
	};
	if (!valid_run(kb, run)) {
		/* The caller lied about what it calls: it dies, and the kernel unwinds it. */
		struct context_proc *caller = proc_of(kb, ev->from);

		if (caller) {
			caller->why = "sent a malformed call";
			kill(caller->pid, SIGKILL);
		}
		return;
	}
	if (ev->type == CTXVM_EVENT_SPAWN)
		spawn(kb, ev->endpoint, run->gas);
}

static void on_return(struct kbroker *kb, const struct ctxvm_event *ev)
{
	struct mirror_frame *f;

	if (!kb->depth || ev->depth != kb->depth - 1u) {
		fail_run(kb, "broker: /dev/ctxvm reported a return out of order");
		return;
	}
	f = &kb->frames[--kb->depth];
	runlog_trace_close(kb->res, f->trace_node, ev->msg.gas, CTX_OK);
	if (f->endpoint != kb->root_endpoint)
		reap(kb, f->endpoint, NULL);
}

/* A FAIL or a death the kernel has already unwound to ev->depth. */
static void on_unwind(struct kbroker *kb, const struct ctxvm_event *ev, enum ctx_error_kind kind,
		      const char *msg, uint32_t pc)
{
	uint32_t top = kb->depth - 1;

	if (!kb->depth || ev->depth >= kb->depth) {
		fail_run(kb, "broker: /dev/ctxvm reported an unwind out of order");
		return;
	}
	runlog_error(kb->res, kind, msg);
	record_backtrace(kb, top, pc);
	if (ev->type == CTXVM_EVENT_FAIL) {
		runlog_trace_close(kb->res, kb->frames[top].trace_node, ev->msg.gas, kind);
		kb->frames[top].trace_node = -1;
	}
	pop_to(kb, (uint32_t)ev->depth, kind);
	if (ev->flags & CTXVM_EVENT_F_SESSION_FAILED) {
		kb->res->gas_used = ev->gas_used;
		kb->result = kb->res->error;
		kb->done = true;
		return;
	}
	runlog_clear_error(kb->res);
}

static void on_fail(struct kbroker *kb, const struct ctxvm_event *ev)
{
	char text[sizeof(ev->msg.text) + 1];

	if (ev->msg.kind == CTX_OK || ev->msg.kind >= CTX_E__COUNT) {
		fail_run(kb, "broker: a context reported a failure of no known kind");
		return;
	}
	memcpy(text, ev->msg.text, sizeof(ev->msg.text));
	text[sizeof(ev->msg.text)] = '\0';
	on_unwind(kb, ev, (enum ctx_error_kind)ev->msg.kind, text, (uint32_t)ev->msg.pc);
}

static void on_died(struct kbroker *kb, const struct ctxvm_event *ev)
{
	bool violation = ev->msg.type == CTXVM_MSG_FAIL && ev->msg.kind == CTX_E_SandboxViolation;
	struct context_proc *p = proc_of(kb, ev->endpoint);
	const char *why = p && p->why ? p->why : "closed its endpoint";
	uint64_t gas_limit = UINT64_MAX;
	struct reaped how;
	char msg[512];
	enum ctx_error_kind kind;

	for (uint32_t i = 0; i < kb->depth; i++)
		if (kb->frames[i].endpoint == ev->endpoint) {
			gas_limit = kb->frames[i].gas_limit;
			break;
		}
	reap(kb, ev->endpoint, &how);
	kind = runlog_death(&how, violation, ev->msg.gas_arg, gas_limit, why, msg, sizeof(msg));
	on_unwind(kb, ev, kind, msg, kb->depth ? kb->frames[kb->depth - 1].call_pc : 0);
}

static void on_finish(struct kbroker *kb, const struct ctxvm_event *ev)
{
	if (kb->depth != 1 || ev->msg.gas > kb->opts->gas) {
		fail_run(kb, "broker: the root finished out of turn");
		return;
	}
	runlog_trace_close(kb->res, kb->frames[0].trace_node, ev->msg.gas, CTX_OK);
	kb->depth = 0;
	memcpy(kb->res->stack, ev->msg.window, sizeof(kb->res->stack));
	kb->res->gas_used = ev->msg.gas;
	kb->result = CTX_OK;
	kb->done = true;
}

static void on_event(struct kbroker *kb, const struct ctxvm_event *ev)
{
	switch (ev->type) {
	case CTXVM_EVENT_SPAWN:
	case CTXVM_EVENT_ENTER:
		on_push(kb, ev);
		break;
	case CTXVM_EVENT_RETURN:
		on_return(kb, ev);
		break;
	case CTXVM_EVENT_FAIL:
		on_fail(kb, ev);
		break;
	case CTXVM_EVENT_DIED:
		on_died(kb, ev);
		break;
	case CTXVM_EVENT_FINISH:
		on_finish(kb, ev);
		break;
	default:
		fail_run(kb, "broker: /dev/ctxvm sent an unknown event");
	}
}

static void loop(struct kbroker *kb)
{
	while (!kb->done) {
		int64_t left_ms = (int64_t)(kb->deadline_ns - now_ns()) / 1000000;
		struct pollfd pfd = { .fd = kb->session, .events = POLLIN };
		struct ctxvm_event ev;

		if (left_ms <= 0) {
			fail_run(kb, "the run passed its wall-clock limit (--timeout)");
			return;
		}
		if (poll(&pfd, 1, left_ms > 1000 ? 1000 : (int)left_ms) < 0 && errno != EINTR) {
			fail_run(kb, "broker: poll failed");
			return;
		}
		while (!kb->done && ioctl(kb->session, CTXVM_EVENT, &ev) == 0)
			on_event(kb, &ev);
		if (!kb->done && errno != EAGAIN && errno != EINTR) {
			fail_run(kb, errno == ESHUTDOWN ? "broker: /dev/ctxvm ended the session"
							: "broker: reading /dev/ctxvm events failed");
			return;
		}
	}
}

static int start_session(struct kbroker *kb, int dev)
{
	const struct ctx_program *prog = kb->prog;
	struct ctxvm_start st = {
		.gas = kb->opts->gas, .proc = prog->entry_proc, .budget = CTX_STACK_DEPTH_LIMIT,
		.depth_limit = CTX_CALL_DEPTH_LIMIT,
	};
	kb->session = ioctl(dev, CTXVM_CREATE_SESSION, 0);
	if (kb->session < 0 || fcntl(kb->session, F_SETFL, O_NONBLOCK) < 0)
		return -1;
	for (uint32_t i = 0; i < prog->nprocs; i++) {
		struct ctxvm_kernel_proc kp = { 0 };

		if (!(prog->procs[i].flags & PROC_KERNEL_EXPORT))
			continue;
		memcpy(kp.digest, prog->procs[i].digest, sizeof(kp.digest));
		if (ioctl(kb->session, CTXVM_ADD_KERNEL_PROC, &kp) < 0)
			return -1;
	}
	memcpy(st.digest, prog->procs[prog->entry_proc].digest, sizeof(st.digest));
	for (unsigned i = 0; i < kb->opts->ninputs && i < CTX_STACK_MIN; i++)
		st.window[i] = kb->opts->inputs[i];
	if (ioctl(kb->session, CTXVM_START, &st) < 0)
		return -1;
	kb->root_endpoint = st.endpoint;
	kb->depth = 1;
	kb->frames[0] = (struct mirror_frame){
		.endpoint = st.endpoint, .gas_limit = kb->opts->gas, .kind = CTXVM_FRAME_ROOT,
		.trace_node = runlog_trace_open(kb->res, kb->opts, 0, CTXVM_FRAME_ROOT,
						prog->entry_proc, 0, kb->opts->gas),
	};
	return 0;
}

enum ctx_error_kind ctx_run_kmod(int dev, const struct ctx_program *prog,
				 const struct run_options *opts, struct run_result *res)
{
	struct kbroker *kb = calloc(1, sizeof(*kb));
	struct ctxvm_session_info info;
	char err[256];
	enum ctx_error_kind result;

	memset(res, 0, sizeof(*res));
	if (!kb) {
		runlog_error(res, CTX_E_SystemError, "out of memory");
		return res->error;
	}
	kb->prog = prog;
	kb->opts = opts;
	kb->res = res;
	kb->session = -1;
	kb->result = CTX_E_SystemError;
	kb->deadline_ns = now_ns() + (opts->timeout_ms ? opts->timeout_ms : 600000ull) * 1000000ull;
	/*
	 * The caller's own opts, so that the fork server scrubs the root's
	 * inputs from the very copy it inherited.
	 */
	kb->fs.kmod_endpoint = true;
	if (forkserver_start(&kb->fs, prog, opts, err, sizeof(err)) < 0) {
		runlog_error(res, CTX_E_SystemError, err);
		goto out_free;
	}
	if (start_session(kb, dev) < 0) {
		snprintf(err, sizeof(err), "/dev/ctxvm: could not start the session: %s",
			 strerror(errno));
		runlog_error(res, CTX_E_SystemError, err);
		goto out_close;
	}
	spawn(kb, kb->root_endpoint, opts->gas);
	loop(kb);
	if (ioctl(kb->session, CTXVM_SESSION_INFO, &info) == 0) {
		res->contexts = info.contexts;
		res->max_depth = info.max_depth_seen;
	}
out_close:
	/* Closing the session ends every context's wait; then none is left behind. */
	if (kb->session >= 0)
		close(kb->session);
	for (int i = 0; i < MAX_PROCS; i++)
		if (kb->procs[i].endpoint)
			reap(kb, kb->procs[i].endpoint, NULL);
	forkserver_stop(&kb->fs);
out_free:
	result = res->error;
	if (result == CTX_OK && kb->result != CTX_OK) {
		runlog_error(res, CTX_E_SystemError, "the run ended without a result");
		result = res->error;
	}
	free(kb);
	return result;
}
