// SPDX-License-Identifier: MIT
/*
 * The `ctxvm` command line as a user meets it: exit codes, --help, the
 * backend notice, --json and plain output, bad arguments and hostile files.
 * Runs the binary named by $CTXVM (default build/ctxvm).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"

struct outcome {
	int status;             /* exit code, or 128 + signal */
	char out[65536];
	char err[65536];
};

static void slurp(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	ssize_t r;

	while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
		n += (size_t)r;
	/* Drain the rest so the child never blocks on a full pipe. */
	while (n + 1 >= cap && read(fd, (char[4096]){ 0 }, 4096) > 0)
		;
	buf[n] = '\0';
}

/* Runs ctxvm with argv (NULL-terminated, without argv[0]). */
static void run_ctxvm(struct outcome *o, const char *const *args)
{
	const char *bin = getenv("CTXVM") ? getenv("CTXVM") : "build/ctxvm";
	const char *argv[32] = { bin };
	int out[2], err[2], ws;
	pid_t pid;
	size_t n = 1;

	for (; args[n - 1] && n < 31; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	if (pipe(out) || pipe(err))
		abort();
	pid = fork();
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		close(out[0]);
		close(err[0]);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	/* stderr is small here; read stdout first, then stderr. */
	slurp(out[0], o->out, sizeof(o->out));
	slurp(err[0], o->err, sizeof(o->err));
	close(out[0]);
	close(err[0]);
	waitpid(pid, &ws, 0);
	o->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

static char *write_temp(const char *body, size_t len)
{
	char *path = strdup("/tmp/ctxvm-cli-XXXXXX.masm");
	int fd = mkstemps(path, 5);

	if (fd < 0 || write(fd, body, len) != (ssize_t)len)
		abort();
	close(fd);
	return path;
}

#define RUN(o, ...) run_ctxvm(o, (const char *const[]){ __VA_ARGS__, NULL })

FIXTURE(cli) {
	struct outcome o;
	char *prog;
};

FIXTURE_SETUP(cli)
{
	static const char src[] = "begin\n  add.3\nend\n";

	self->prog = write_temp(src, strlen(src));
}

FIXTURE_TEARDOWN(cli)
{
	unlink(self->prog);
	free(self->prog);
}

TEST_F(cli, help_exits_zero_and_tells_the_truth)
{
	RUN(&self->o, "--help");
	EXPECT_EQ(0, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.out, "ctxvm run"));
	RUN(&self->o, "run", "--help");
	EXPECT_EQ(0, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.out, "UNISOLATED"));
	EXPECT_NE(NULL, strstr(self->o.out, "--mem-limit"));
	RUN(&self->o, "asm", "--help");
	EXPECT_EQ(0, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.out, "digest"));
}

TEST_F(cli, no_arguments_is_a_usage_error)
{
	RUN(&self->o, "nonsense");
	EXPECT_EQ(2, self->o.status);
	run_ctxvm(&self->o, (const char *const[]){ NULL });
	EXPECT_EQ(2, self->o.status);
}

TEST_F(cli, plain_output_is_16_elements_then_gas)
{
	RUN(&self->o, "run", self->prog, "--backend", "inproc");
	ASSERT_EQ(0, self->o.status);
	EXPECT_EQ(0, strcmp(self->o.out, "3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\ngas used: 1\n"));
	EXPECT_NE(NULL, strstr(self->o.err, "UNISOLATED"));
}

TEST_F(cli, json_success_has_every_field)
{
	RUN(&self->o, "run", self->prog, "--backend", "inproc", "--json");
	ASSERT_EQ(0, self->o.status);
	EXPECT_EQ(0, strcmp(self->o.out,
			    "{\"ok\":true,\"stack\":[3,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"
			    "\"gas_used\":1,\"backend\":\"inproc\",\"contexts\":1,\"max_depth\":1}\n"));
}

TEST_F(cli, inputs_go_top_first)
{
	RUN(&self->o, "run", self->prog, "--backend", "inproc", "--input", "7,0x10");
	ASSERT_EQ(0, self->o.status);
	EXPECT_EQ(0, strncmp(self->o.out, "10 16 0 ", 8));
}

TEST_F(cli, bad_arguments_exit_2_with_a_reason)
{
	RUN(&self->o, "run", self->prog, "--backend", "inproc", "--input", "1,x");
	EXPECT_EQ(2, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "'x'"));
	RUN(&self->o, "run", self->prog, "--backend", "inproc", "--input",
	    "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run", self->prog, "--backend", "inproc", "--input", "18446744069414584321");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run", self->prog, "--gas", "-5", "--backend", "inproc");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run", self->prog, "--mem-limit", "lots", "--backend", "inproc");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run", self->prog, "--backend", "vmware");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run", self->prog, "--frobnicate");
	EXPECT_EQ(2, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "--frobnicate"));
	RUN(&self->o, "run", self->prog, "--gas");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run");
	EXPECT_EQ(2, self->o.status);
}

TEST_F(cli, auto_runs_isolated_and_says_which)
{
	RUN(&self->o, "run", self->prog, "--json");
	EXPECT_EQ(0, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "backend user"));
	EXPECT_NE(NULL, strstr(self->o.out, "\"backend\":\"user\""));
	EXPECT_EQ(NULL, strstr(self->o.err, "UNISOLATED"));
}

TEST_F(cli, missing_kmod_backend_refuses_rather_than_falls_back)
{
	RUN(&self->o, "run", self->prog, "--backend", "kmod");
	EXPECT_EQ(3, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "/dev/ctxvm"));
	EXPECT_EQ(0, self->o.out[0]);
}

TEST_F(cli, timeout_is_validated)
{
	RUN(&self->o, "run", self->prog, "--timeout", "0");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run", self->prog, "--timeout", "5");
	EXPECT_EQ(0, self->o.status);
}

TEST_F(cli, missing_file_is_an_assembly_error)
{
	RUN(&self->o, "run", "/nonexistent/x.masm", "--backend", "inproc", "--json");
	EXPECT_EQ(2, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "/nonexistent/x.masm"));
	EXPECT_NE(NULL, strstr(self->o.out, "\"kind\":\"AssemblyError\""));
}

TEST_F(cli, runtime_failure_exits_1_with_kind_and_location)
{
	static const char src[] = "begin\n  push.0\n  assert.err=\"boom\"\nend\n";
	char *path = write_temp(src, strlen(src));

	RUN(&self->o, "run", path, "--backend", "inproc", "--json");
	EXPECT_EQ(1, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.out, "\"kind\":\"FailedAssertion\""));
	EXPECT_NE(NULL, strstr(self->o.out, "boom"));
	EXPECT_NE(NULL, strstr(self->o.out, ":3:"));
	RUN(&self->o, "run", path, "--backend", "inproc");
	EXPECT_EQ(1, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "FailedAssertion"));
	unlink(path);
	free(path);
}

TEST_F(cli, out_of_gas_is_reported)
{
	static const char src[] = "begin\n  push.1\n  while.true\n    push.1\n  end\nend\n";
	char *path = write_temp(src, strlen(src));

	RUN(&self->o, "run", path, "--backend", "inproc", "--gas", "1000", "--json");
	EXPECT_EQ(1, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.out, "\"kind\":\"OutOfGas\""));
	unlink(path);
	free(path);
}

TEST_F(cli, trace_prints_the_context_tree)
{
	static const char src[] = "proc.f\n  push.1 drop\nend\nbegin\n  call.f\nend\n";
	char *path = write_temp(src, strlen(src));

	RUN(&self->o, "run", path, "--backend", "inproc", "--trace");
	EXPECT_EQ(0, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "root"));
	EXPECT_NE(NULL, strstr(self->o.err, "  call"));
	EXPECT_NE(NULL, strstr(self->o.err, "ok"));
	unlink(path);
	free(path);
}

TEST_F(cli, binary_garbage_is_an_error_not_a_crash)
{
	char garbage[4096];
	char *path;

	srand(1);
	for (size_t i = 0; i < sizeof(garbage); i++)
		garbage[i] = (char)(rand() & 0xff);
	path = write_temp(garbage, sizeof(garbage));
	RUN(&self->o, "run", path, "--backend", "inproc");
	EXPECT_EQ(2, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "error"));
	unlink(path);
	free(path);
}

TEST_F(cli, ten_megabyte_file_is_handled)
{
	size_t len = 10u << 20;
	char *big = malloc(len);
	char *path;
	size_t n = 0;

	ASSERT_NE(NULL, big);
	n += (size_t)sprintf(big, "begin\n");
	while (n + 32 < len)
		n += (size_t)sprintf(big + n, "  push.1 drop\n");
	n += (size_t)sprintf(big + n, "end\n");
	path = write_temp(big, n);
	RUN(&self->o, "run", path, "--backend", "inproc", "--json");
	EXPECT_EQ(0, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.out, "\"ok\":true"));
	unlink(path);
	free(path);
	free(big);
}

TEST_F(cli, loops_that_cost_nothing_do_not_spin)
{
	static const char src[] =
		"begin\n  repeat.4294967295\n    repeat.4294967295\n      debug.stack\n    end\n  end\nend\n";
	char *path = write_temp(src, strlen(src));

	/* Would be 2^64 free iterations; a free body runs once instead. */
	RUN(&self->o, "run", path, "--backend", "inproc", "--json");
	EXPECT_EQ(0, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.out, "\"gas_used\":0"));
	unlink(path);
	free(path);
}

TEST_F(cli, pool_is_validated_and_documented)
{
	RUN(&self->o, "run", "--help");
	EXPECT_NE(NULL, strstr(self->o.out, "--pool N"));
	RUN(&self->o, "run", self->prog, "--backend", "user", "--pool", "65");
	EXPECT_EQ(2, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.err, "--pool"));
	RUN(&self->o, "run", self->prog, "--backend", "user", "--pool", "-1");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run", self->prog, "--backend", "user", "--pool", "two");
	EXPECT_EQ(2, self->o.status);
	RUN(&self->o, "run", self->prog, "--backend", "user", "--pool");
	EXPECT_EQ(2, self->o.status);
}

/* Pre-forked or not, a run's result is the same, failures included. */
TEST_F(cli, pool_does_not_change_results)
{
	static const char src[] =
		"proc.f\n  push.1 add\nend\n"
		"proc.boom\n  push.0 assert\nend\n"
		"begin\n  repeat.10\n    call.f\n  end\n"
		"  push.100000 delegatecall.boom drop\n"     /* a guarded failure */
		"  repeat.3\n    call.f\n  end\nend\n";
	static const char *const pools[] = { "0", "1", "4", "64" };
	char *path = write_temp(src, strlen(src));
	char first[512] = "";

	for (size_t i = 0; i < sizeof(pools) / sizeof(pools[0]); i++) {
		RUN(&self->o, "run", path, "--backend", "user", "--pool", pools[i], "--json");
		EXPECT_EQ(0, self->o.status);
		EXPECT_NE(NULL, strstr(self->o.out, "\"contexts\":15"));
		if (!i)
			snprintf(first, sizeof(first), "%.500s", self->o.out);
		EXPECT_STREQ(first, self->o.out);
	}
	RUN(&self->o, "run", path, "--backend", "inproc", "--json");
	/* The same up to "backend". */
	EXPECT_EQ(0, strncmp(first, self->o.out, (size_t)(strstr(first, "backend") - first)));
	unlink(path);
	free(path);
}

TEST_F(cli, asm_prints_digests)
{
	RUN(&self->o, "asm", self->prog);
	EXPECT_EQ(0, self->o.status);
	EXPECT_NE(NULL, strstr(self->o.out, "#main ["));
}

TEST_HARNESS_MAIN
