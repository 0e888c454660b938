// SPDX-License-Identifier: MIT
/*
 * The embedded broker (`--backend user`): the runner's poll loop.  It owns
 * the session (shared/broker.c keeps the frames), talks to every context
 * process over its own SOCK_SEQPACKET endpoint, and asks the fork server for
 * a fresh locked-down process for every call, dyncall and delegatecall.
 *
 * Only one context runs at a time; the others wait in their own CALL.  The
 * loop still polls every endpoint, so a waiting process that dies (killed
 * from outside) is noticed at once.
 *
 * With a pool (--pool N), the fork server keeps N processes forked and
 * locked down ahead of time on a CPU beside the session's, each waiting on
 * its own endpoint; a call takes the oldest, and a replacement is asked for
 * once the call's RUN is out.  Each serves one context and dies like any
 * other (its exit, too, off the session's CPU).  A pooled process was
 * locked down before its gas was known, so it carries the run's ceiling
 * (the root's CPU budget, as its own timer and RLIMIT_CPU) and the broker
 * holds it to its call's budget from outside: it reads the process's CPU
 * clock when that budget can first have run out, and SIGKILLs it past it.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../shared/broker.h"
#include "../shared/ctxvm_uapi.h"
#include "broker_user.h"
#include "forkserver.h"
#include "interp_core.h"
#include "runlog.h"
#include "sandbox.h"

#define NSLOTS (CTX_CALL_DEPTH_LIMIT + 1)

struct slot {
	int fd;                 /* -1: free */
	pid_t pid;              /* 0: the fork server has not said yet (tag) */
	uint64_t tag;
	bool violation;         /* it reported a blocked syscall */
	uint64_t violation_nr;
	int spawn_errno;        /* its fork failed, for this reason */
	bool pooled;
	bool watched;           /* pooled and alive: the broker enforces its budget */
	uint64_t budget_ns;
	uint64_t check_ns;      /* wall time at which the budget can first be spent */
};

/* A pre-forked process waiting for its first (and only) RUN. */
struct pooled {
	int fd;
	pid_t pid;
};

/* A CPU clock check this early costs nothing but an extra look. */
#define WATCH_MARGIN_NS 1000000ull
/* Past the budget by more than rusage's rounding, so the death reads as OutOfGas. */
#define WATCH_SLACK_NS 100000ull

struct ubroker {
	const struct ctx_program *prog;
	const struct run_options *opts;
	struct run_result *res;
	struct forkserver fs;
	struct ctxvm_session_core core;
	struct ctxvm_frame frames[CTX_CALL_DEPTH_LIMIT];
	uint32_t call_pc[CTX_CALL_DEPTH_LIMIT];    /* the CALL that pushed frame i */
	uint32_t proc[CTX_CALL_DEPTH_LIMIT];
	long trace_node[CTX_CALL_DEPTH_LIMIT];
	struct slot slots[NSLOTS];
	unsigned hi;            /* slots [hi, NSLOTS) are free */
	unsigned pool_size;
	struct pooled pool[CTX_USER_POOL_MAX];  /* a ring, oldest at pool_head */
	unsigned pool_head, pool_count;
	unsigned pool_pending;  /* asked for, not yet arrived on the note */
	uint64_t next_tag;
	bool done;
	enum ctx_error_kind result;
	uint64_t deadline_ns;
};

/* Frames [0, top] as a backtrace, innermost first, starting at pc in the top one. */
static void record_backtrace(struct ubroker *ub, uint32_t top, uint32_t pc)
{
	ub->res->nbacktrace = 0;
	for (uint32_t i = top + 1; i-- > 0;) {
		runlog_backtrace_push(ub->res, ub->prog, ub->frames[i].ctx_id, ub->frames[i].kind, pc);
		pc = ub->call_pc[i];
	}
}

static void trace_close(struct ubroker *ub, uint32_t frame, uint64_t used, enum ctx_error_kind outcome)
{
	runlog_trace_close(ub->res, ub->trace_node[frame], used, outcome);
}

static void send_msg(struct ubroker *ub, uint64_t owner, const struct ctxvm_msg *m)
{
	struct slot *s = &ub->slots[owner];

	/* A dead peer shows up as EOF in the poll loop; nothing to do here. */
	if (s->fd >= 0)
		(void)send(s->fd, m, sizeof(*m), MSG_NOSIGNAL);
}

/*
 * A request's return value (ctxclient.h), sent before anything the request
 * causes, so the requester reads it first.  `err` is 0 or a negative errno.
 */
static void answer(struct ubroker *ub, uint64_t owner, int err)
{
	send_msg(ub, owner, &(struct ctxvm_msg){ .type = CTXVM_MSG_STATUS, .status = (uint64_t)-err });
}

#ifdef CTXVM_TESTING
struct ctx_user_served ctx_user_test_served[CTX_USER_TEST_SERVED_MAX];
unsigned ctx_user_test_nserved;
volatile pid_t ctx_user_test_callee;
#endif

/*
 * What the fork server reported: the pid of a fresh process goes to the
 * slot that waits for it; a pooled process (with our end of its endpoint)
 * joins the pool.
 */
static void take_spawned(struct ubroker *ub, const struct fs_spawned *sp, int fd)
{
	pid_t pid = sp->pid > 0 ? (pid_t)sp->pid : -1;

	for (unsigned i = 0; fd < 0 && i < ub->hi; i++)
		if (ub->slots[i].fd >= 0 && ub->slots[i].pid == 0 && ub->slots[i].tag == sp->tag) {
			ub->slots[i].pid = pid;
			if (pid < 0)
				ub->slots[i].spawn_errno = (int)-sp->pid;
			return;
		}
	/* A pooled one, or its failure (then calls fork fresh processes until a refill works). */
	if (ub->pool_pending)
		ub->pool_pending--;
	if (fd < 0)
		return;
	if (pid < 0 || ub->pool_count == CTX_USER_POOL_MAX) {
		close(fd);
		return;
	}
	ub->pool[(ub->pool_head + ub->pool_count++) % CTX_USER_POOL_MAX] =
		(struct pooled){ .fd = fd, .pid = pid };
}

static void drain_spawned(struct ubroker *ub)
{
	struct fs_spawned sp = { 0 };
	int fd;

	while (forkserver_next_spawned(&ub->fs, &sp, &fd, false) == 1)
		take_spawned(ub, &sp, fd);
}

/* Wait for the fork server's next report and take it; false if it is gone. */
static bool wait_spawned(struct ubroker *ub)
{
	struct fs_spawned sp = { 0 };
	int fd;

	if (forkserver_next_spawned(&ub->fs, &sp, &fd, true) != 1)
		return false;
	take_spawned(ub, &sp, fd);
	return true;
}

/* The pid of a slot's process; a fresh one's may still be on its way. -1: none. */
static pid_t slot_pid(struct ubroker *ub, struct slot *s)
{
	while (s->pid == 0)
		if (!wait_spawned(ub))
			s->pid = -1;
	return s->pid;
}

/* With a CPU for the fork server beside the session's (and so a pool). */
static bool two_cpus(const struct ubroker *ub)
{
	return ub->fs.server_cpu != ub->fs.cpu;
}

/* Keep `hi` just past the last slot in use, so the poll loop scans no more. */
static void trim_hi(struct ubroker *ub)
{
	while (ub->hi > 0 && ub->slots[ub->hi - 1].fd < 0)
		ub->hi--;
}

/*
 * End the process and its endpoint.  With `how`, wait for it and say how it
 * ended.  Without, nothing waits for an exit on the path of a call: with a
 * CPU of its own, the fork server does all of it there (and brings a pooled
 * process's replacement in the same request); on one CPU, the process is
 * SIGKILLed and reaped with the server's next request.
 */
static void release_slot(struct ubroker *ub, uint64_t owner, struct reaped *how)
{
	struct slot *s = &ub->slots[owner];
	pid_t pid;
	int fd = s->fd;

	if (fd < 0)
		return;
	pid = slot_pid(ub, s);  /* while the slot is live, so a late pid still finds it */
	s->fd = -1;
	s->watched = false;
#ifdef CTXVM_TESTING
	if (ctx_user_test_nserved < CTX_USER_TEST_SERVED_MAX)
		ctx_user_test_served[ctx_user_test_nserved++] =
			(struct ctx_user_served){ .pid = pid, .pooled = s->pooled };
#endif
	if (!how && pid > 0 && two_cpus(ub)) {
		uint64_t respawn = 0;

		if (s->pooled && ub->pool_count + ub->pool_pending < ub->pool_size) {
			respawn = ++ub->next_tag;
			ub->pool_pending++;
		}
		if (forkserver_end(&ub->fs, pid, fd, respawn, ub->opts->gas) < 0 && respawn)
			ub->pool_pending--;
	} else {
		close(fd);
		if (how && (pid <= 0 || forkserver_reap(&ub->fs, pid, how) < 0))
			how->status = -1;
		else if (!how && pid > 0)
			forkserver_release(&ub->fs, pid);
	}
	trim_hi(ub);
}

/*
 * A pooled process's call budget, read from its CPU clock.  It has one
 * thread (the filter forbids clone), so its CPU time cannot grow faster than
 * wall time: until check_ns it cannot have spent the budget.
 */
static void watch(struct ubroker *ub, struct slot *s)
{
	struct timespec ts;
	clockid_t clk;
	pid_t pid = slot_pid(ub, s);
	uint64_t used;

	if (pid <= 0 || clock_getcpuclockid(pid, &clk) != 0 || clock_gettime(clk, &ts) != 0) {
		s->watched = false;     /* gone: its EOF is on the way */
		return;
	}
	used = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	if (used >= s->budget_ns + WATCH_SLACK_NS) {
		kill(pid, SIGKILL);     /* unreaped until released: the pid is still this process */
		s->watched = false;
		return;
	}
	s->check_ns = now_ns() + (s->budget_ns - used) + WATCH_SLACK_NS;
}

/*
 * The oldest pooled process, or false if the pool is empty and none is on
 * its way.  One on its way is waited for: a fresh process instead would be
 * locked down on the session's CPU.
 */
static bool take_pooled(struct ubroker *ub, struct slot *s, uint64_t gas_limit)
{
	drain_spawned(ub);
	while (!ub->pool_count && ub->pool_pending)
		if (!wait_spawned(ub))
			break;
	if (ub->pool_count) {
		struct pooled p = ub->pool[ub->pool_head];

		ub->pool_head = (ub->pool_head + 1) % CTX_USER_POOL_MAX;
		ub->pool_count--;
		s->fd = p.fd;
		s->pid = p.pid;
		s->pooled = true;
		/* Where it is woken: the RUN must not cross CPUs. */
		forkserver_place(&ub->fs, s->pid, true);
		s->watched = true;
		s->budget_ns = sandbox_cpu_budget_ns(gas_limit);
		s->check_ns = s->budget_ns > UINT64_MAX / 2 ? UINT64_MAX
			      : now_ns() + s->budget_ns - WATCH_MARGIN_NS;
		return true;
	}
	return false;
}

/*
 * Top the pool up; called once a reply is sent, off the path of the call.
 * Pooled processes carry the run's ceiling: no call of this run gets more
 * gas than the root.
 */
static void pool_refill(struct ubroker *ub)
{
	if (!ub->pool_size)
		return;
	drain_spawned(ub);      /* so the fork server never waits on a full socket */
	while (ub->pool_count + ub->pool_pending < ub->pool_size) {
		if (forkserver_spawn_pooled(&ub->fs, ub->opts->gas, ++ub->next_tag) < 0)
			return;         /* calls fork fresh processes meanwhile */
		ub->pool_pending++;
	}
}

static int64_t new_slot(struct ubroker *ub, uint64_t gas_limit)
{
	int sv[2];

	for (uint64_t i = 1; i < NSLOTS; i++) {
		struct slot *s = &ub->slots[i];

		if (s->fd >= 0)
			continue;
		*s = (struct slot){ .fd = -1 };
		if (i >= ub->hi)
			ub->hi = (unsigned)i + 1;       /* first: a pid that comes in must find it */
		if (!take_pooled(ub, s, gas_limit)) {
			/*
			 * A fresh process, without waiting for the fork: the RUN
			 * waits in the socket until it is locked down, and its pid
			 * comes on the fork server's note when it is needed.
			 */
			if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
				goto fail;
			drain_spawned(ub);
			s->tag = ++ub->next_tag;
			if (forkserver_spawn_async(&ub->fs, sv[1], gas_limit, s->tag) < 0) {
				int e = errno;

				close(sv[0]);
				close(sv[1]);
				errno = e;
				goto fail;
			}
			close(sv[1]);
			s->fd = sv[0];
		}
#ifdef CTXVM_TESTING
		ctx_user_test_callee = slot_pid(ub, s);        /* test build: waits for the pid */
#endif
		return (int64_t)i;
fail:
		trim_hi(ub);
		return -1;
	}
	errno = EMFILE;
	return -1;
}

/*
 * A frame failed: record the error, let the core unwind, clean up what was
 * popped, and tell the survivors.  Unless `owner` died, it reported the
 * failure (a FAIL message), so its top activation has already ended in its
 * process and is not abandoned.
 */
static void unwind_failure(struct ubroker *ub, uint64_t owner, bool died, uint64_t used)
{
	struct ctxvm_unwind u;
	uint32_t old_depth = ub->core.depth;
	uint64_t abandon = 0;
	enum ctx_error_kind kind = ub->res->error;
	int st = died ? ctxvm_core_abort(&ub->core, owner, &u)
		      : ctxvm_core_fail(&ub->core, owner, used, &u);

	if (st != CTXVM_B_OK) {
		runlog_error(ub->res, CTX_E_SystemError, "broker: unwinding was refused");
		ub->done = true;
		return;
	}
	for (uint32_t i = old_depth; i-- > ub->core.depth;) {
		struct ctxvm_frame *f = &ub->frames[i];

		trace_close(ub, i, i == old_depth - 1 ? used : f->gas_limit, kind);
		if (f->owner != 0)
			release_slot(ub, f->owner, NULL);
		else if (died || i != old_depth - 1)
			abandon++;
	}
	if (u.session_failed) {
		ub->res->gas_used = u.gas_used;
		ub->done = true;
		ub->result = kind;
		return;
	}
	if (abandon)
		send_msg(ub, 0, &(struct ctxvm_msg){
			.type = CTXVM_MSG_RESULT, .status = CTXVM_RESULT_ABORT, .gas_arg = abandon });
	/* Every delegatecall popped rolls back its journal, innermost first. */
	for (uint32_t i = old_depth; i-- > ub->core.depth;)
		if (ub->frames[i].guarded)
			send_msg(ub, 0, &(struct ctxvm_msg){
				.type = CTXVM_MSG_GUARD_END, .status = 1,
				.fmp = ub->frames[i].fmp0_saved });
	send_msg(ub, u.resume_owner, &(struct ctxvm_msg){
		.type = CTXVM_MSG_RESULT, .status = CTXVM_RESULT_GUARD_FAILED, .gas = u.gas_used });
	runlog_clear_error(ub->res);    /* caught: the run goes on */
	pool_refill(ub);
}

/* `owner` reported its top frame's failure. */
static void fail_frame(struct ubroker *ub, uint64_t owner, enum ctx_error_kind kind,
		       const char *msg, uint32_t pc, uint64_t used)
{
	runlog_error(ub->res, kind, msg);
	record_backtrace(ub, ub->core.depth - 1, pc);
	unwind_failure(ub, owner, false, used);
}

/* The process behind `owner` is gone or broke the protocol: find out why, then unwind. */
static void context_died(struct ubroker *ub, uint64_t owner, const char *why)
{
	struct slot *s = &ub->slots[owner];
	struct reaped how = { .status = -1 };
	bool violation = s->violation;
	uint64_t nr = s->violation_nr;
	char msg[512];
	enum ctx_error_kind kind;
	uint32_t i;

	for (i = 0; i < ub->core.depth; i++)
		if (ub->frames[i].owner == owner)
			break;
	release_slot(ub, owner, &how);
	if (s->spawn_errno) {
		snprintf(msg, sizeof(msg), "broker: could not start a context process: %s",
			 strerror(s->spawn_errno));
		runlog_error(ub->res, CTX_E_SystemError, msg);
		ub->done = true;
		return;
	}
	kind = runlog_death(&how, violation, nr, i < ub->core.depth ? ub->frames[i].gas_limit : 0,
			    why, msg, sizeof(msg));
	if (i == ub->core.depth) {
		/* It held no frame (already popped): nothing to unwind. */
		return;
	}
	runlog_error(ub->res, kind, msg);
	record_backtrace(ub, ub->core.depth - 1, ub->call_pc[ub->core.depth - 1]);
	unwind_failure(ub, owner, true, 0);
}

static void start_frame(struct ubroker *ub, const struct ctxvm_call_grant *g, uint32_t kind,
			uint32_t proc, uint32_t pc, uint32_t budget, const void *window)
{
	uint32_t idx = ub->core.depth - 1;
	struct ctxvm_msg run = {
		.type = CTXVM_MSG_RUN, .kind = kind, .proc = proc, .gas = g->gas_limit,
		.fmp = g->fmp, .ctx_id = g->ctx_id, .budget = budget,
	};

	memcpy(run.digest, ub->prog->procs[proc].digest, sizeof(run.digest));
	ub->call_pc[idx] = pc;
	ub->proc[idx] = proc;
	ub->trace_node[idx] = runlog_trace_open(ub->res, ub->opts, idx, kind, proc, g->ctx_id,
						g->gas_limit);
	memcpy(run.window, window, sizeof(run.window));
	if (kind == CTXVM_FRAME_DELEGATECALL || kind == CTXVM_FRAME_DYNDELEGATECALL)
		send_msg(ub, 0, &(struct ctxvm_msg){ .type = CTXVM_MSG_GUARD_BEGIN });
	send_msg(ub, g->owner, &run);
}

static void on_call(struct ubroker *ub, uint64_t owner, const struct ctxvm_msg *m)
{
	struct ctxvm_call_request req = {
		.kind = (ctx_u32)m->kind, .gas_remaining = m->gas, .gas_arg = m->gas_arg,
		.requester_fmp = m->fmp,
	};
	struct ctxvm_call_grant g;
	const struct ctxvm_frame *top = ctxvm_core_top(&ub->core);
	bool guarded = m->kind == CTXVM_FRAME_DELEGATECALL || m->kind == CTXVM_FRAME_DYNDELEGATECALL;
	int64_t slot = 0;
	char msg[512];
	int st;

	if (m->proc >= ub->prog->nprocs || m->budget < CTX_STACK_MIN || m->budget > CTX_STACK_DEPTH_LIMIT ||
	    memcmp(m->digest, ub->prog->procs[m->proc].digest, sizeof(m->digest)) != 0) {
		answer(ub, owner, -EINVAL);
		return;
	}
	memcpy(req.target, m->digest, sizeof(req.target));
	if (m->kind != CTXVM_FRAME_SYSCALL && m->kind <= CTXVM_FRAME_KIND_MAX &&
	    m->kind >= CTXVM_FRAME_CALL && ub->core.depth < ub->core.capacity &&
	    top && top->owner == owner) {
		uint64_t limit = m->gas;

		if (guarded) {
			limit -= limit / 64;
			if (m->gas_arg < limit)
				limit = m->gas_arg;
		}
		slot = new_slot(ub, limit);
		if (slot < 0) {
			snprintf(msg, sizeof(msg), "broker: could not start a context process: %s",
				 strerror(errno));
			runlog_error(ub->res, CTX_E_SystemError, msg);
			ub->done = true;
			return;
		}
	}
	req.new_owner = (uint64_t)slot;
	st = ctxvm_core_call(&ub->core, owner, &req, &g);
	if (st == CTXVM_B_OK) {
		start_frame(ub, &g, (uint32_t)m->kind, (uint32_t)m->proc, (uint32_t)m->pc,
			    (uint32_t)m->budget, m->window);
		/* The RUN is out; a server with a CPU of its own refills while it runs. */
		if (two_cpus(ub))
			pool_refill(ub);
		return;
	}
	if (slot > 0)
		release_slot(ub, (uint64_t)slot, NULL);
	/*
	 * Refused, as the kernel broker refuses: the requester turns a refusal
	 * the program caused (a syscall in a syscall, too deep...) into its
	 * frame's failure, and leaves on any other.
	 */
	answer(ub, owner, ctxvm_status_errno(st));
}

static void on_return(struct ubroker *ub, uint64_t owner, const struct ctxvm_msg *m)
{
	struct ctxvm_unwind u;
	uint32_t idx = ub->core.depth - 1;
	int st = ctxvm_core_return(&ub->core, owner, m->gas, &u);

	if (st != CTXVM_B_OK) {
		answer(ub, owner, ctxvm_status_errno(st));
		return;
	}
	/*
	 * A callee is done once answered: moved first, it wakes on the
	 * server's CPU for its answer, and the session's goes on.
	 */
	if (owner != 0 && two_cpus(ub) && slot_pid(ub, &ub->slots[owner]) > 0)
		forkserver_place(&ub->fs, ub->slots[owner].pid, false);
	answer(ub, owner, 0);
	trace_close(ub, idx, m->gas, CTX_OK);
	if (u.popped_guarded)
		send_msg(ub, 0, &(struct ctxvm_msg){
			.type = CTXVM_MSG_GUARD_END, .status = 0, .fmp = u.fmp0_restore });
	{
		struct ctxvm_msg r = { .type = CTXVM_MSG_RESULT, .status = CTXVM_RESULT_OK, .gas = m->gas };

		memcpy(r.window, m->window, sizeof(r.window));
		send_msg(ub, u.resume_owner, &r);
	}
	/*
	 * The reply is out: the caller is not kept waiting for what follows.
	 * The callee waits in its endpoint for this (ctxproc.c), so its exit
	 * happens where release_slot has it happen.
	 */
	if (owner != 0)
		release_slot(ub, owner, NULL);
	pool_refill(ub);
}

static void on_message(struct ubroker *ub, uint64_t owner, const struct ctxvm_msg *m)
{
	const struct ctxvm_frame *top = ctxvm_core_top(&ub->core);
	char text[sizeof(m->text) + 1];

	switch (m->type) {
	case CTXVM_MSG_CALL:
		on_call(ub, owner, m);
		return;
	case CTXVM_MSG_RETURN:
		on_return(ub, owner, m);
		return;
	case CTXVM_MSG_FAIL:
		if (m->kind == CTX_OK || m->kind >= CTX_E__COUNT) {
			answer(ub, owner, -EINVAL);
			return;
		}
		if (!top || top->owner != owner) {
			answer(ub, owner, ctxvm_status_errno(CTXVM_B_NOT_OWNER));
			return;
		}
		answer(ub, owner, 0);
		memcpy(text, m->text, sizeof(m->text));
		text[sizeof(m->text)] = '\0';
		/* As the core charges it: never more than the frame had. */
		fail_frame(ub, owner, (enum ctx_error_kind)m->kind, text, (uint32_t)m->pc,
			   m->gas < top->gas_limit ? m->gas : top->gas_limit);
		return;
	case CTXVM_MSG_CALLER: {
		struct ctxvm_msg r = { .type = CTXVM_MSG_CALLER_REPLY };
		ctx_u64 digest[4];
		int st = ctxvm_core_caller(&ub->core, owner, digest);

		if (st != CTXVM_B_OK) {
			answer(ub, owner, ctxvm_status_errno(st));
			return;
		}
		memcpy(r.digest, digest, sizeof(r.digest));
		send_msg(ub, owner, &r);
		return;
	}
	case CTXVM_MSG_FINISH: {
		int st = m->gas > ub->opts->gas ? CTXVM_B_GAS : ctxvm_core_finish(&ub->core, owner);

		if (st != CTXVM_B_OK) {
			answer(ub, owner, ctxvm_status_errno(st));
			return;
		}
		answer(ub, owner, 0);
		trace_close(ub, 0, m->gas, CTX_OK);
		memcpy(ub->res->stack, m->window, sizeof(ub->res->stack));
		ub->res->gas_used = m->gas;
		ub->result = CTX_OK;
		ub->done = true;
		return;
	}
	default:
		answer(ub, owner, -EINVAL);
	}
}

static void read_endpoint(struct ubroker *ub, uint64_t owner)
{
	struct slot *s = &ub->slots[owner];
	struct ctxvm_msg m;
	ssize_t n = recv(s->fd, &m, sizeof(m), MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n == (ssize_t)sizeof(struct sandbox_violation)) {
		struct sandbox_violation v;

		memcpy(&v, &m, sizeof(v));
		if (v.magic == SANDBOX_VIOLATION_MAGIC) {
			s->violation = true;
			s->violation_nr = v.syscall_nr;
			context_died(ub, owner, "was blocked by the sandbox");
			return;
		}
	}
	if (n != (ssize_t)sizeof(m)) {
		context_died(ub, owner, n == 0 ? "closed its endpoint" : "sent a message of the wrong size");
		return;
	}
	on_message(ub, owner, &m);
}

static void loop(struct ubroker *ub)
{
	struct pollfd pfd[NSLOTS];
	uint64_t owners[NSLOTS];

	while (!ub->done) {
		uint64_t now = now_ns(), wake = ub->deadline_ns;
		nfds_t n = 0;
		int r;

		if (now >= ub->deadline_ns) {
			runlog_error(ub->res, CTX_E_SystemError,
				     "the run passed its wall-clock limit (--timeout)");
			ub->done = true;
			break;
		}
		for (uint64_t i = 0; i < ub->hi; i++) {
			struct slot *s = &ub->slots[i];

			if (s->fd < 0)
				continue;
			if (s->watched && s->check_ns <= now)
				watch(ub, s);
			if (s->watched && s->check_ns < wake)
				wake = s->check_ns;
			pfd[n] = (struct pollfd){ .fd = s->fd, .events = POLLIN };
			owners[n++] = i;
		}
		/* Rounded up: a watched budget is checked once it can be spent, not before. */
		wake = wake <= now ? 0 : (wake - now + 999999) / 1000000;
		r = poll(pfd, n, wake > 1000 ? 1000 : (int)wake);
		if (r < 0 && errno != EINTR) {
			runlog_error(ub->res, CTX_E_SystemError, "broker: poll failed");
			break;
		}
		for (nfds_t i = 0; i < n && !ub->done; i++) {
			if (pfd[i].revents && ub->slots[owners[i]].fd == pfd[i].fd)
				read_endpoint(ub, owners[i]);
		}
	}
}

enum ctx_error_kind ctx_run_user(const struct ctx_program *prog, const struct run_options *opts,
				 struct run_result *res)
{
	const struct ctx_user_options dflt = { .pool = CTX_USER_POOL_DEFAULT };

	return ctx_run_user_with(prog, opts, &dflt, res);
}

enum ctx_error_kind ctx_run_user_with(const struct ctx_program *prog, const struct run_options *opts,
				      const struct ctx_user_options *uopts, struct run_result *res)
{
	struct ubroker *ub = calloc(1, sizeof(*ub));
	char err[256], msg[512];
	int sv[2];
	enum ctx_error_kind result;

	memset(res, 0, sizeof(*res));
	if (!ub) {
		res->error = CTX_E_SystemError;
		snprintf(res->message, sizeof(res->message), "out of memory");
		return res->error;
	}
#ifdef CTXVM_TESTING
	ctx_user_test_nserved = 0;
	ctx_user_test_callee = 0;
#endif
	ub->prog = prog;
	ub->opts = opts;
	ub->res = res;
	ub->result = CTX_E_SystemError;
	ub->deadline_ns = now_ns() + (opts->timeout_ms ? opts->timeout_ms : 600000ull) * 1000000ull;
	ub->pool_size = uopts->pool < CTX_USER_POOL_MAX ? uopts->pool : CTX_USER_POOL_MAX;
	for (int i = 0; i < NSLOTS; i++)
		ub->slots[i].fd = -1;
	ctxvm_core_init(&ub->core, ub->frames, CTX_CALL_DEPTH_LIMIT);
	for (uint32_t i = 0; i < prog->nprocs; i++)
		if ((prog->procs[i].flags & PROC_KERNEL_EXPORT) &&
		    ctxvm_core_add_kernel_proc(&ub->core, prog->procs[i].digest) != CTXVM_B_OK) {
			runlog_error(ub->res, CTX_E_SystemError, "the kernel exports too many procedures");
			goto out_free;
		}
	ub->fs.pin = true;
	ub->fs.spare = ub->pool_size > 0;
	if (forkserver_start(&ub->fs, prog, opts, err, sizeof(err)) < 0) {
		runlog_error(ub->res, CTX_E_SystemError, err);
		goto out_free;
	}
	/*
	 * Without a CPU for the server beside the session's, pre-forking would
	 * only move the same forks, lock-downs and exits around on one CPU,
	 * adding the warm-up: measured slower than forking each when called.
	 */
	if (ub->fs.server_cpu == ub->fs.cpu)
		ub->pool_size = 0;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(msg, sizeof(msg), "socketpair: %s", strerror(errno));
		runlog_error(ub->res, CTX_E_SystemError, msg);
		goto out_stop;
	}
	ub->slots[0].pid = forkserver_spawn(&ub->fs, sv[1], opts->gas);
	if (ub->slots[0].pid <= 0) {
		snprintf(msg, sizeof(msg), "could not start context 0: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		runlog_error(ub->res, CTX_E_SystemError, msg);
		goto out_stop;
	}
	close(sv[1]);
	ub->slots[0].fd = sv[0];
	ub->hi = 1;
	ctxvm_core_start(&ub->core, 0, prog->procs[prog->entry_proc].digest, opts->gas);
	{
		struct ctxvm_call_grant root = {
			.ctx_id = 0, .owner = 0, .gas_limit = opts->gas, .fmp = CTXVM_FMP_INIT,
		};
		uint64_t window[CTX_STACK_MIN] = { 0 };

		for (unsigned i = 0; i < opts->ninputs && i < CTX_STACK_MIN; i++)
			window[i] = opts->inputs[i];
		start_frame(ub, &root, CTXVM_FRAME_ROOT, prog->entry_proc, 0, CTX_STACK_DEPTH_LIMIT,
			    window);
		explicit_bzero(window, sizeof(window));
	}
	/* Forked while the root starts up; the first call finds them ready. */
	pool_refill(ub);
	loop(ub);
	res->contexts = ub->core.contexts;
	res->max_depth = ub->core.max_depth_seen;
	ub->pool_size = 0;      /* the run is over: no replacements for what is released now */
	for (uint64_t i = 0; i < NSLOTS; i++)
		if (ub->slots[i].fd >= 0)
			release_slot(ub, i, NULL);
	/* Never handed out: the fork server kills them when it stops. */
	for (; ub->pool_count; ub->pool_count--, ub->pool_head = (ub->pool_head + 1) % CTX_USER_POOL_MAX)
		close(ub->pool[ub->pool_head].fd);
out_stop:
	forkserver_stop(&ub->fs);
out_free:
	result = res->error;
	if (result == CTX_OK && ub->result != CTX_OK) {
		res->error = CTX_E_SystemError;
		snprintf(res->message, sizeof(res->message), "the run ended without a result");
		result = res->error;
	}
	free(ub);
	return result;
}
