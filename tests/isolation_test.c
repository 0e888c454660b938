// SPDX-License-Identifier: MIT
/*
 * The `user` backend under attack (built with -DCTXVM_TESTING): with the
 * interpreter's own limits switched off the OS still stops a context; a
 * context that makes a forbidden syscall, crashes, lies to the broker or
 * hangs fails alone; and no run leaves a process or an fd behind.
 *
 * Every case runs twice on the user backend: with every context process
 * forked when it is called (`fresh`) and with a pool of pre-forked ones
 * (`pooled`, --pool 4), whose per-call CPU budget the broker enforces from
 * outside.  The pool needs a second CPU; on one, `pooled` runs fresh too.
 *
 * CTXVM_ISOLATION_BACKEND=kmod runs the same attacks on the `kmod` backend
 * (in the test VM, where ctxvm.ko is loaded); it has no pool, so there the
 * `pooled` cases run fresh a second time (the VM counts a skip as a failure).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "asm.h"
#include "broker_kmod.h"
#include "broker_user.h"
#include "interp.h"
#include "kselftest_harness.h"

static const char CALL_P[] =
	"proc.p\n  push.1 drop\nend\n"
	"begin\n  call.p\nend\n";

/* delegatecall with 100000 gas: leaves [flag, 7] */
static const char DELEGATE_P[] =
	"proc.p\n  push.1 drop\nend\n"
	"begin\n  push.7 push.100000 delegatecall.p\n  movup.2 drop movup.2 drop\nend\n";

static const char SPIN_IN_CALL[] =
	"proc.spin\n  push.1\n  while.true\n    push.1\n  end\nend\n"
	"begin\n  call.spin\nend\n";

static const char HOG_IN_CALL[] =
	"proc.hog\n  push.0\n  push.1\n  while.true\n"
	"    push.1 dup.1 mem_store\n"          /* touch one cell per page */
	"    add.1024 dup push.4294967000 lt\n  end\n  drop\nend\n"
	"begin\n  call.hog\nend\n";

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1;   /* the DIR's own fd */
}

static bool has_children(void)
{
	return !(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
}

static bool on_kmod(void)
{
	const char *want = getenv("CTXVM_ISOLATION_BACKEND");

	return want && !strcmp(want, "kmod");
}

/* The variant's --pool, for every run of the current case. */
static unsigned test_pool;

/* The backend under attack: user, or kmod when CTXVM_ISOLATION_BACKEND says so. */
static enum ctx_error_kind run_backend(const struct ctx_program *prog,
				       const struct run_options *opts, struct run_result *res)
{
	struct ctx_user_options uopts = { .pool = test_pool };
	enum ctx_error_kind err;
	int dev;

	if (!on_kmod())
		return ctx_run_user_with(prog, opts, &uopts, res);
	dev = ctx_kmod_open();
	if (dev < 0) {
		fprintf(stderr, "# /dev/ctxvm: %s\n", strerror(errno));
		res->error = CTX_E_SystemError;
		return CTX_E_SystemError;
	}
	err = ctx_run_kmod(dev, prog, opts, res);
	close(dev);
	return err;
}

static enum ctx_error_kind run_src(const char *src, uint64_t gas, uint64_t mem,
				   struct run_result *res)
{
	struct asm_options aopts = { 0 };
	struct asm_diags diags = { 0 };
	struct ctx_program *prog = NULL;
	struct run_options opts = { .gas = gas, .mem_limit = mem, .timeout_ms = 20000 };
	enum ctx_error_kind err;

	if (ctx_assemble_source("test.masm", src, strlen(src), &aopts, &prog, &diags) != 0) {
		fprintf(stderr, "%s", diags.text ? diags.text : "assembly failed\n");
		asm_diags_free(&diags);
		memset(res, 0, sizeof(*res));
		res->error = CTX_E_SystemError;
		return CTX_E_SystemError;
	}
	asm_diags_free(&diags);
	err = run_backend(prog, &opts, res);
	ctx_program_free(prog);
	return err;
}

FIXTURE(iso) {
	struct run_result res;
	int fds_before;
};

FIXTURE_VARIANT(iso) {
	unsigned pool;
};

FIXTURE_VARIANT_ADD(iso, fresh) {
	.pool = 0,
};

FIXTURE_VARIANT_ADD(iso, pooled) {
	.pool = 4,
};

FIXTURE_SETUP(iso)
{
	ctx_test = (struct ctx_test_switches){ .attack_syscall = -1 };
	test_pool = variant->pool;
	self->fds_before = count_fds();
	memset(&self->res, 0, sizeof(self->res));
}

FIXTURE_TEARDOWN(iso)
{
	/* Nothing left behind by any case: no process, no fd. */
	EXPECT_FALSE(has_children());
	EXPECT_EQ(self->fds_before, count_fds());
	run_result_free(&self->res);
}

TEST_F(iso, honest_call_runs_in_its_own_process)
{
	EXPECT_EQ((int)CTX_OK, (int)run_src(CALL_P, 1 << 20, 1 << 24, &self->res));
	EXPECT_EQ(2u, self->res.contexts);
}

TEST_F(iso, os_cpu_budget_stops_a_loop_the_interpreter_does_not_count)
{
	ctx_test.no_gas_count = true;
	EXPECT_EQ((int)CTX_E_OutOfGas, (int)run_src(SPIN_IN_CALL, 2000000, 1 << 24, &self->res));
	EXPECT_NE(NULL, strstr(self->res.message, "CPU"));
}

TEST_F(iso, interpreter_counts_gas_when_on)
{
	EXPECT_EQ((int)CTX_E_OutOfGas, (int)run_src(SPIN_IN_CALL, 2000000, 1 << 24, &self->res));
	EXPECT_EQ(NULL, strstr(self->res.message, "CPU"));
}

TEST_F(iso, os_memory_limit_stops_what_the_interpreter_does_not_count)
{
	ctx_test.no_mem_count = true;
	EXPECT_EQ((int)CTX_E_MemoryLimitExceeded, (int)run_src(HOG_IN_CALL, 1ull << 30, 16 << 20, &self->res));
}

TEST_F(iso, interpreter_counts_memory_when_on)
{
	EXPECT_EQ((int)CTX_E_MemoryLimitExceeded, (int)run_src(HOG_IN_CALL, 1ull << 30, 16 << 20, &self->res));
}

#define ATTACK(name_, nr_)                                                          \
	TEST_F(iso, attack_##name_##_is_a_sandbox_violation)                        \
	{                                                                           \
		ctx_test.attack_syscall = (nr_);                                    \
		EXPECT_EQ((int)CTX_E_SandboxViolation, (int)                                   \
			  run_src(CALL_P, 1 << 20, 1 << 24, &self->res));           \
		EXPECT_NE(NULL, strstr(self->res.message, #name_));                 \
	}
ATTACK(openat, SYS_openat)
ATTACK(socket, SYS_socket)
ATTACK(fork, SYS_fork)
ATTACK(ptrace, SYS_ptrace)
ATTACK(kill, SYS_kill)
ATTACK(execve, SYS_execve)

TEST_F(iso, a_violation_inside_a_delegatecall_fails_alone)
{
	ctx_test.attack_syscall = SYS_openat;
	ASSERT_EQ((int)CTX_OK, (int)run_src(DELEGATE_P, 1 << 20, 1 << 24, &self->res));
	EXPECT_EQ(0u, self->res.stack[0]);      /* guarded failure flag */
	EXPECT_EQ(7u, self->res.stack[1]);      /* the delegator's input is back */
}

TEST_F(iso, a_crash_is_named)
{
	ctx_test.crash_signal = SIGSEGV;
	EXPECT_EQ((int)CTX_E_ContextCrashed, (int)run_src(CALL_P, 1 << 20, 1 << 24, &self->res));
	EXPECT_NE(NULL, strstr(self->res.message, "SIGSEGV"));
}

TEST_F(iso, a_crash_inside_a_delegatecall_fails_alone)
{
	ctx_test.crash_signal = SIGILL;
	ASSERT_EQ((int)CTX_OK, (int)run_src(DELEGATE_P, 1 << 20, 1 << 24, &self->res));
	EXPECT_EQ(0u, self->res.stack[0]);
}

#define LIAR(name_, how_)                                                           \
	TEST_F(iso, endpoint_##name_##_fails_the_call)                              \
	{                                                                           \
		ctx_test.endpoint = (how_);                                         \
		EXPECT_EQ((int)CTX_E_ContextCrashed, (int)                                     \
			  run_src(CALL_P, 1 << 20, 1 << 24, &self->res));           \
	}                                                                           \
	TEST_F(iso, endpoint_##name_##_inside_a_delegatecall_fails_alone)           \
	{                                                                           \
		ctx_test.endpoint = (how_);                                         \
		ASSERT_EQ((int)CTX_OK, (int)run_src(DELEGATE_P, 1 << 20, 1 << 24, &self->res)); \
		EXPECT_EQ(0u, self->res.stack[0]);                                  \
		EXPECT_EQ(7u, self->res.stack[1]);                                  \
	}
LIAR(garbage, TEST_ENDPOINT_GARBAGE)
LIAR(close, TEST_ENDPOINT_CLOSE)
LIAR(lie_gas, TEST_ENDPOINT_LIE_GAS)

TEST_F(iso, endpoint_return_twice_is_refused)
{
	/* The first return is honest; the second comes from a process that owns no frame. */
	ctx_test.endpoint = TEST_ENDPOINT_RETURN_TWICE;
	EXPECT_EQ((int)CTX_OK, (int)run_src(CALL_P, 1 << 20, 1 << 24, &self->res));
}

/* Twelve calls and a delegatecall: thirteen callees, each its own process. */
static const char MANY_CALLS[] =
	"proc.p\n  push.1 drop\nend\n"
	"begin\n  repeat.12\n    call.p\n  end\n"
	"  push.7 push.100000 delegatecall.p drop drop\nend\n";

static bool has_two_cpus(void)
{
	cpu_set_t set;

	return sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) >= 2;
}

TEST_F(iso, every_context_has_a_process_of_its_own)
{
	unsigned pooled = 0;

	ASSERT_EQ((int)CTX_OK, (int)run_src(MANY_CALLS, 1 << 24, 1 << 24, &self->res));
	EXPECT_EQ(14u, self->res.contexts);
	if (on_kmod())
		return;         /* the record below is the embedded broker's */
	/* One process per context, the root's included; none served two. */
	ASSERT_EQ(self->res.contexts, (uint64_t)ctx_user_test_nserved);
	for (unsigned i = 0; i < ctx_user_test_nserved; i++) {
		EXPECT_GT(ctx_user_test_served[i].pid, 0);
		pooled += ctx_user_test_served[i].pooled;
		for (unsigned j = 0; j < i; j++)
			EXPECT_NE(ctx_user_test_served[i].pid, ctx_user_test_served[j].pid);
	}
	if (!variant->pool || !has_two_cpus()) {
		EXPECT_EQ(0u, pooled);
	} else {
		EXPECT_LT(0u, pooled);  /* the pool was used: this case tested it */
	}
	EXPECT_GE(self->res.contexts - 1, (uint64_t)pooled);    /* never the root */
}

/*
 * A delegatecall gets far less gas than the run: its process must be
 * stopped at its own CPU budget (120 ms here), not the run's (21 s).  A
 * pooled process was locked down with the run's; the broker holds it to
 * the call's from outside.
 */
TEST_F(iso, a_delegatecall_is_held_to_its_own_cpu_budget)
{
	static const char src[] =
		"proc.spin\n  push.1\n  while.true\n    push.1\n  end\nend\n"
		"begin\n  push.7 push.1000000 delegatecall.spin\n  movup.2 drop movup.2 drop\nend\n";
	struct timespec t0, t1;

	ctx_test.no_gas_count = true;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ASSERT_EQ((int)CTX_OK, (int)run_src(src, 1ull << 30, 1 << 24, &self->res));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	EXPECT_EQ(0u, self->res.stack[0]);      /* the guarded failure */
	EXPECT_EQ(7u, self->res.stack[1]);
	EXPECT_LT((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, 10.0);
}

/* A context process that cannot be started says why, not just that. */
TEST_F(iso, a_failed_start_names_its_cause)
{
	struct rlimit old, low;
	int fd, free_fds = 0;

	if (on_kmod())
		return;         /* the message checked is the embedded broker's */
	ASSERT_EQ(0, getrlimit(RLIMIT_NOFILE, &old));
	/*
	 * Four free fd numbers: the fork server's two socket pairs, then its
	 * two ends and the root's endpoint stay, and one more.  A fresh call's
	 * pair does not fit.  A pooled call's endpoint is made by the server
	 * and takes the runner only that one: the nested call finds none free.
	 */
	for (fd = 0; free_fds < 4; fd++)
		free_fds += fcntl(fd, F_GETFD) < 0 && errno == EBADF;
	low = (struct rlimit){ (rlim_t)fd, old.rlim_max };
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &low));
	run_src("proc.q\n  push.1 drop\nend\n"
		"proc.p\n  call.q\nend\n"
		"begin\n  call.p\nend\n", 1 << 20, 1 << 24, &self->res);
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &old));
	EXPECT_EQ((int)CTX_E_SystemError, (int)self->res.error);
	EXPECT_NE(NULL, strstr(self->res.message, "could not start a context process: "));
	EXPECT_NE(NULL, strstr(self->res.message, strerror(EMFILE)));
}

/*
 * The root's secret input, stored in the root's memory, must not be
 * anywhere a called context can read: every readable byte of the callee is
 * searched.  The searcher itself only holds the secret masked.
 */
TEST_F(iso, a_callee_cannot_find_the_roots_secret_anywhere)
{
	static const char src[] =
		"proc.p\n  push.1 drop\nend\n"
		/* kept in the root's memory only, not passed to p */
		"begin\n  mem_store.100\n  call.p\n  mem_load.100 swap drop\nend\n";
	struct asm_options aopts = { 0 };
	struct asm_diags diags = { 0 };
	struct ctx_program *prog = NULL;
	struct run_options opts = { .gas = 1 << 26, .mem_limit = 1 << 24, .ninputs = 1 };

	/* Drawn at run time and kept only in the input, so no binary holds it. */
	ASSERT_EQ(8, getrandom(&opts.inputs[0], 8, 0));
	opts.inputs[0] = (opts.inputs[0] % (FE_P - 1000)) + 1000;
	ctx_test.scan_secret_masked = opts.inputs[0] ^ CTX_TEST_SECRET_MASK;
	ASSERT_EQ(0, ctx_assemble_source("t.masm", src, strlen(src), &aopts, &prog, &diags));
	EXPECT_EQ((int)CTX_OK, (int)run_backend(prog, &opts, &self->res));
	EXPECT_STREQ("", self->res.message);
	/* The root still has it. */
	EXPECT_EQ(ctx_test.scan_secret_masked, self->res.stack[0] ^ CTX_TEST_SECRET_MASK);
	ctx_program_free(prog);
	asm_diags_free(&diags);
}

TEST_F(iso, the_secret_scan_finds_what_is_there)
{
	/* The same search, for a value planted in every process: it must see it. */
	static const char src[] = "proc.p\n  push.1 drop\nend\nbegin\n  call.p\nend\n";
	const uint64_t visible = 0x0BADC0FFEE0DDF00ull;
	struct asm_options aopts = { 0 };
	struct asm_diags diags = { 0 };
	struct ctx_program *prog = NULL;
	struct run_options opts = { .gas = 1 << 20, .mem_limit = 1 << 24 };

	ctx_test.scan_secret_masked = visible ^ CTX_TEST_SECRET_MASK;
	ctx_test.plant = visible;
	ASSERT_EQ(0, ctx_assemble_source("t.masm", src, strlen(src), &aopts, &prog, &diags));
	EXPECT_EQ((int)CTX_E_ContextCrashed, (int)run_backend(prog, &opts, &self->res));
	ctx_program_free(prog);
	asm_diags_free(&diags);
}

/* The newest grandchild (a context forked by our fork server); *count of them. */
static pid_t newest_context(int *count)
{
	pid_t me = getpid(), server = 0, best = 0;

	*count = 0;
	unsigned long long best_start = 0;

	for (int pass = 0; pass < 2; pass++) {
		DIR *d = opendir("/proc");
		struct dirent *e;

		if (!d)
			return 0;
		while ((e = readdir(d))) {
			char path[64], buf[512], *rp;
			int pid = atoi(e->d_name), ppid;
			unsigned long long start;
			FILE *f;

			if (pid <= 0)
				continue;
			snprintf(path, sizeof(path), "/proc/%d/stat", pid);
			f = fopen(path, "r");
			if (!f)
				continue;
			rp = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
			fclose(f);
			/* after "comm)": state ppid ... field 22 is starttime */
			if (!rp || sscanf(rp + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u "
					  "%*d %*d %*d %*d %*d %*d %llu", &ppid, &start) != 2)
				continue;
			if (pass == 0 && ppid == me)
				server = pid;
			if (pass == 1 && server && ppid == server) {
				++*count;
				if (start >= best_start) {
					best = pid;
					best_start = start;
				}
			}
		}
		closedir(d);
	}
	return best;
}

struct killer {
	pid_t victim;
};

/*
 * Waits until a second context (the callee) exists, then SIGKILLs it.  The
 * user backend names it (a pool holds other processes that are no
 * context yet); on kmod it is the newest process of the fork server.
 */
static void *kill_callee(void *arg)
{
	struct killer *k = arg;

	for (int i = 0; i < 400 && !k->victim; i++) {
		int n = 0;
		pid_t p;

		usleep(10000);
		if (!on_kmod()) {
			k->victim = ctx_user_test_callee;
			continue;
		}
		p = newest_context(&n);
		/* context 0 comes first; the callee is the second */
		if (n >= 2)
			k->victim = p;
	}
	if (k->victim) {
		usleep(50000);          /* let it settle into its blocked read */
		kill(k->victim, SIGKILL);
	}
	return NULL;
}

static enum ctx_error_kind run_and_kill(const char *src, struct run_result *res, pid_t *victim)
{
	struct killer k = { 0 };
	pthread_t th;
	enum ctx_error_kind err;

	ctx_test.endpoint = TEST_ENDPOINT_HANG;         /* the callee waits to be killed */
	pthread_create(&th, NULL, kill_callee, &k);
	err = run_src(src, 1 << 20, 1 << 24, res);
	pthread_join(th, NULL);
	*victim = k.victim;
	return err;
}

TEST_F(iso, sigkill_from_outside_fails_a_call_with_a_backtrace)
{
	pid_t victim;

	EXPECT_EQ((int)CTX_E_ContextCrashed, (int)run_and_kill(CALL_P, &self->res, &victim));
	EXPECT_NE(0, victim);
	EXPECT_NE(NULL, strstr(self->res.message, "SIGKILL"));
	EXPECT_EQ(2u, self->res.nbacktrace);    /* the callee, then the root */
}

TEST_F(iso, sigkill_from_outside_inside_a_delegatecall_fails_alone)
{
	pid_t victim;

	ASSERT_EQ((int)CTX_OK, (int)run_and_kill(DELEGATE_P, &self->res, &victim));
	EXPECT_NE(0, victim);
	EXPECT_EQ(0u, self->res.stack[0]);
	EXPECT_EQ(7u, self->res.stack[1]);
}

TEST_F(iso, a_context_that_never_answers_ends_with_the_timeout)
{
	struct asm_options aopts = { 0 };
	struct asm_diags diags = { 0 };
	struct ctx_program *prog = NULL;
	struct run_options opts = { .gas = 1 << 20, .mem_limit = 1 << 24, .timeout_ms = 1000 };

	ctx_test.endpoint = TEST_ENDPOINT_HANG;
	ASSERT_EQ(0, ctx_assemble_source("t.masm", CALL_P, strlen(CALL_P), &aopts, &prog, &diags));
	EXPECT_EQ((int)CTX_E_SystemError, (int)run_backend(prog, &opts, &self->res));
	EXPECT_NE(NULL, strstr(self->res.message, "timeout"));
	ctx_program_free(prog);
	asm_diags_free(&diags);
}

TEST_HARNESS_MAIN
