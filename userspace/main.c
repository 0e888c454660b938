// SPDX-License-Identifier: MIT
/*
 * The `ctxvm` command line (SPEC §9): argument parsing, backend choice and
 * the three output forms (plain, --json, --trace).  Exit status: 0 ok, 1 the
 * program failed at run time, 2 usage or assembly error, 3 the system failed.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "asm.h"
#include "broker_kmod.h"
#include "broker_user.h"
#include "interp.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_SYSTEM 3
#define MAX_LIBS 64

static const char usage_main[] =
	"usage: ctxvm run PROGRAM.masm [options]   run a program\n"
	"       ctxvm asm PROGRAM.masm [options]   assemble, check and print procedure digests\n"
	"       ctxvm --help | --version\n"
	"\n"
	"ctxvm runs Miden-assembly programs with every execution context (the root with\n"
	"its kernel, each call, dyncall and delegatecall) in its own context.\n"
	"`ctxvm run --help` and `ctxvm asm --help` list the options.\n";

static const char usage_run[] =
	"usage: ctxvm run PROGRAM.masm [--kernel FILE] [--lib DIR]... [--input a,b,...]\n"
	"                 [--gas N] [--mem-limit BYTES] [--backend auto|kmod|user|inproc]\n"
	"                 [--timeout SECONDS] [--pool N] [--json] [--trace]\n"
	"\n"
	"  --kernel FILE      kernel module; its exported procedures are the syscall targets\n"
	"  --lib DIR          directory searched for `use a::b` modules (a/b.masm); repeatable\n"
	"  --input a,b,...    up to 16 initial stack values, the first on top (decimal or 0x hex)\n"
	"  --gas N            gas budget of the root context (default 2^29)\n"
	"  --mem-limit BYTES  memory limit of every context (default 256M; K, M, G suffixes)\n"
	"  --timeout SECONDS  wall-clock limit of an isolated run (default 600)\n"
	"  --backend B        auto (default): kmod when /dev/ctxvm can be opened, else user;\n"
	"                     user: a sandboxed process per context, embedded broker;\n"
	"                     kmod: a sandboxed process per context, the frames kept by\n"
	"                     the ctxvm.ko kernel module (/dev/ctxvm);\n"
	"                     inproc: every context in this one process, UNISOLATED: the\n"
	"                     reference oracle, never chosen by auto\n"
	"  --pool N           user backend: keep N context processes forked and locked down\n"
	"                     ahead of calls by a second CPU, each used for one context\n"
	"                     only (default 4, at most 64; with 0, or one CPU, each is\n"
	"                     forked when it is called)\n"
	"  --json             print one JSON object instead of plain text\n"
	"  --trace            print the tree of contexts (kind, procedure, gas, time, outcome)\n"
	"                     to stderr\n"
	"\n"
	"Output: the 16 top stack elements on one line (top first), then the gas used.\n"
	"Exit status: 0 ok, 1 run-time failure, 2 usage or assembly error, 3 system failure.\n";

static const char usage_asm[] =
	"usage: ctxvm asm PROGRAM.masm [--kernel FILE] [--lib DIR]... [--dis]\n"
	"\n"
	"Assembles the program (and kernel, and used modules), reports every error with\n"
	"file:line:col, and prints each procedure's digest (4 field elements, the word\n"
	"`procref` pushes, first element on top).\n"
	"  --dis   also print the disassembled code\n"
	"Exit status: 0 ok, 2 usage or assembly error.\n";

struct cli {
	const char *program;
	struct asm_options asm_opts;
	const char *libs[MAX_LIBS];
	struct run_options run;
	const char *backend;
	struct ctx_user_options user;
	bool json;
	bool dis;
};

static int usage_error(const char *usage, const char *fmt, const char *arg)
{
	fprintf(stderr, "ctxvm: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s", usage);
	return EXIT_USAGE;
}

/* A u64 in decimal or 0x hex, the whole string, no sign. */
static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 0);
	if (errno || *end)
		return false;
	/* strtoull's base 0 reads a leading 0 as octal; MASM has no octal. */
	if (s[0] == '0' && s[1] && s[1] != 'x' && s[1] != 'X') {
		*out = strtoull(s, &end, 10);
		return !errno && !*end;
	}
	return true;
}

static bool parse_size(const char *s, uint64_t *out)
{
	char buf[64];
	size_t n = strlen(s);
	uint64_t mult = 1;

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n + 1);
	switch (buf[n - 1]) {
	case 'K': case 'k': mult = 1ull << 10; break;
	case 'M': case 'm': mult = 1ull << 20; break;
	case 'G': case 'g': mult = 1ull << 30; break;
	default: break;
	}
	if (mult != 1)
		buf[n - 1] = '\0';
	if (!parse_u64(buf, out) || *out > UINT64_MAX / mult)
		return false;
	*out *= mult;
	return true;
}

static int parse_inputs(const char *list, struct run_options *run)
{
	char *copy = strdup(list);
	char *save = NULL;
	int rc = 0;

	if (!copy)
		return -1;
	run->ninputs = 0;
	if (*list) {
		for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			uint64_t v;

			if (run->ninputs == 16) {
				fprintf(stderr, "ctxvm: --input takes at most 16 values\n");
				rc = -1;
				break;
			}
			if (!parse_u64(tok, &v) || v >= FE_P) {
				fprintf(stderr, "ctxvm: --input: '%s' is not a field element (0 <= v < 2^64-2^32+1)\n",
					tok);
				rc = -1;
				break;
			}
			run->inputs[run->ninputs++] = v;
		}
	}
	/* The inputs are the root's alone: no copy may reach the fork server. */
	explicit_bzero(copy, strlen(list));
	free(copy);
	return rc;
}

#ifdef CTXVM_TESTING
/* Test build only: see struct ctx_test_switches. */
static int test_switch(const char *arg, const char *val)
{
	static const struct { const char *name; long nr; } syscalls[] = {
		{ "openat", SYS_openat }, { "socket", SYS_socket }, { "fork", SYS_fork },
		{ "clone", SYS_clone }, { "ptrace", SYS_ptrace }, { "kill", SYS_kill },
		{ "execve", SYS_execve },
	};
	static const char *const endpoints[] = {
		[TEST_ENDPOINT_GARBAGE] = "garbage", [TEST_ENDPOINT_CLOSE] = "close",
		[TEST_ENDPOINT_LIE_GAS] = "lie-gas", [TEST_ENDPOINT_RETURN_TWICE] = "return-twice",
		[TEST_ENDPOINT_HANG] = "hang",
	};

	if (!strcmp(arg, "--test-attack")) {
		for (size_t i = 0; i < sizeof(syscalls) / sizeof(syscalls[0]); i++)
			if (!strcmp(val, syscalls[i].name)) {
				ctx_test.attack_syscall = syscalls[i].nr;
				return 0;
			}
		return -1;
	}
	if (!strcmp(arg, "--test-endpoint")) {
		for (size_t i = 1; i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
			if (!strcmp(val, endpoints[i])) {
				ctx_test.endpoint = (enum ctx_test_endpoint)i;
				return 0;
			}
		return -1;
	}
	ctx_test.crash_signal = atoi(val);
	return ctx_test.crash_signal == SIGSEGV || ctx_test.crash_signal == SIGILL ? 0 : -1;
}
#endif

static int parse_args(int argc, char **argv, bool is_run, struct cli *cli)
{
	const char *usage = is_run ? usage_run : usage_asm;
	size_t nlibs = 0;

	cli->run.gas = CTX_GAS_DEFAULT;
	cli->run.mem_limit = CTX_MEM_LIMIT_DEFAULT;
	cli->backend = "auto";
	cli->user.pool = CTX_USER_POOL_DEFAULT;
	for (int i = 2; i < argc; i++) {
		const char *arg = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes_value = true;

		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			fputs(usage, stdout);
			exit(0);
		} else if (arg[0] != '-' || !strcmp(arg, "-")) {
			if (cli->program)
				return usage_error(usage, "more than one program: '%s'", arg);
			cli->program = arg;
			takes_value = false;
		} else if (!strcmp(arg, "--json") && is_run) {
			cli->json = true;
			takes_value = false;
		} else if (!strcmp(arg, "--trace") && is_run) {
			cli->run.trace = true;
			takes_value = false;
#ifdef CTXVM_TESTING
		} else if (!strcmp(arg, "--test-no-gas-count") && is_run) {
			ctx_test.no_gas_count = true;
			takes_value = false;
		} else if (!strcmp(arg, "--test-no-mem-count") && is_run) {
			ctx_test.no_mem_count = true;
			takes_value = false;
		} else if (is_run && (!strcmp(arg, "--test-attack") || !strcmp(arg, "--test-endpoint") ||
				      !strcmp(arg, "--test-crash"))) {
			if (!val || test_switch(arg, val))
				return usage_error(usage, "bad test switch %s", arg);
			i++;
			continue;
#endif
		} else if (!strcmp(arg, "--dis") && !is_run) {
			cli->dis = true;
			takes_value = false;
		} else if (!strcmp(arg, "--kernel") || !strcmp(arg, "--lib") ||
			   (is_run && (!strcmp(arg, "--input") || !strcmp(arg, "--gas") ||
				       !strcmp(arg, "--mem-limit") || !strcmp(arg, "--backend") ||
				       !strcmp(arg, "--timeout") || !strcmp(arg, "--pool")))) {
			if (!val)
				return usage_error(usage, "%s needs a value", arg);
		} else {
			return usage_error(usage, "unknown option '%s'", arg);
		}
		if (!takes_value)
			continue;
		i++;
		if (!strcmp(arg, "--kernel")) {
			cli->asm_opts.kernel_path = val;
		} else if (!strcmp(arg, "--lib")) {
			if (nlibs == MAX_LIBS)
				return usage_error(usage, "too many --lib directories (at most 64)%s", "");
			cli->libs[nlibs++] = val;
		} else if (!strcmp(arg, "--input")) {
			if (parse_inputs(val, &cli->run))
				return EXIT_USAGE;
			explicit_bzero(argv[i], strlen(argv[i]));
		} else if (!strcmp(arg, "--gas")) {
			if (!parse_u64(val, &cli->run.gas) || cli->run.gas > (1ull << 62))
				return usage_error(usage, "--gas: '%s' is not a number up to 2^62", val);
		} else if (!strcmp(arg, "--timeout")) {
			uint64_t s;

			if (!parse_u64(val, &s) || s == 0 || s > 86400)
				return usage_error(usage, "--timeout: '%s' is not 1..86400 seconds", val);
			cli->run.timeout_ms = s * 1000;
		} else if (!strcmp(arg, "--pool")) {
			uint64_t n;

			if (!parse_u64(val, &n) || n > CTX_USER_POOL_MAX)
				return usage_error(usage, "--pool: '%s' is not 0..64", val);
			cli->user.pool = (unsigned)n;
		} else if (!strcmp(arg, "--mem-limit")) {
			if (!parse_size(val, &cli->run.mem_limit))
				return usage_error(usage, "--mem-limit: '%s' is not a size", val);
		} else if (!strcmp(arg, "--backend")) {
			if (strcmp(val, "auto") && strcmp(val, "kmod") && strcmp(val, "user") &&
			    strcmp(val, "inproc"))
				return usage_error(usage, "--backend: '%s' is not auto, kmod, user or inproc", val);
			cli->backend = val;
		}
	}
	if (!cli->program)
		return usage_error(usage, "no program given%s", "");
	cli->asm_opts.lib_dirs = cli->libs;
	cli->asm_opts.nlib_dirs = nlibs;
	return 0;
}

static struct ctx_program *assemble(const struct cli *cli)
{
	struct ctx_program *prog = NULL;
	struct asm_diags diags = { 0 };

	if (ctx_assemble_file(cli->program, &cli->asm_opts, &prog, &diags) != 0 || !prog) {
		if (diags.text)
			fputs(diags.text, stderr);
		fprintf(stderr, "ctxvm: %u error%s; nothing was run\n", diags.nerrors,
			diags.nerrors == 1 ? "" : "s");
		if (cli->json)
			printf("{\"ok\":false,\"error\":{\"kind\":\"AssemblyError\",\"message\":\"%u assembly error%s\",\"backtrace\":[]}}\n",
			       diags.nerrors, diags.nerrors == 1 ? "" : "s");
		asm_diags_free(&diags);
		return NULL;
	}
	asm_diags_free(&diags);
	return prog;
}

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", out);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static void print_backtrace_entry(const struct ctx_program *prog, const struct backtrace_entry *e,
				  char *buf, size_t len)
{
	char where[256];

	ctx_format_location(prog, e->pc, where, sizeof(where));
	snprintf(buf, len, "context %" PRIu64 " %s %s at %s", e->ctx_id, ctx_frame_kind_name(e->kind),
		 e->proc < prog->nprocs ? prog->procs[e->proc].name : "?", where);
}

static void print_trace(const struct ctx_program *prog, const struct run_result *res)
{
	fprintf(stderr, "context tree (kind procedure [context] gas used/limit, wall time, outcome):\n");
	for (unsigned i = 0; i < res->ntrace; i++) {
		const struct trace_node *n = &res->trace[i];

		fprintf(stderr, "%*s%s %s [%" PRIu64 "] gas %" PRIu64 "/%" PRIu64 ", %.3f ms, %s\n",
			2 * n->depth, "", ctx_frame_kind_name(n->kind), prog->procs[n->proc].name,
			n->ctx_id, n->gas_used, n->gas_limit, (double)n->wall_ns / 1e6,
			n->outcome == CTX_OK ? "ok" : ctx_error_name(n->outcome));
	}
	if (res->trace_dropped)
		fprintf(stderr, "... %" PRIu64 " more contexts not traced\n", res->trace_dropped);
}

static int report(const struct cli *cli, const struct ctx_program *prog,
		  const struct run_result *res, const char *backend)
{
	char line[512];

	if (cli->run.trace)
		print_trace(prog, res);
	if (cli->json) {
		if (res->error == CTX_OK) {
			printf("{\"ok\":true,\"stack\":[");
			for (unsigned i = 0; i < 16; i++)
				printf("%s%" PRIu64, i ? "," : "", res->stack[i]);
			printf("],\"gas_used\":%" PRIu64 ",\"backend\":\"%s\",\"contexts\":%" PRIu64
			       ",\"max_depth\":%u}\n", res->gas_used, backend, res->contexts, res->max_depth);
		} else {
			printf("{\"ok\":false,\"error\":{\"kind\":\"%s\",\"message\":",
			       ctx_error_name(res->error));
			json_string(stdout, res->message);
			printf(",\"backtrace\":[");
			for (unsigned i = 0; i < res->nbacktrace; i++) {
				print_backtrace_entry(prog, &res->backtrace[i], line, sizeof(line));
				if (i)
					putchar(',');
				json_string(stdout, line);
			}
			printf("]},\"gas_used\":%" PRIu64 ",\"backend\":\"%s\"}\n", res->gas_used, backend);
		}
	} else if (res->error == CTX_OK) {
		for (unsigned i = 0; i < 16; i++)
			printf("%s%" PRIu64, i ? " " : "", res->stack[i]);
		printf("\ngas used: %" PRIu64 "\n", res->gas_used);
	} else {
		fprintf(stderr, "ctxvm: %s: %s\n", ctx_error_name(res->error), res->message);
		for (unsigned i = 0; i < res->nbacktrace; i++) {
			print_backtrace_entry(prog, &res->backtrace[i], line, sizeof(line));
			fprintf(stderr, "  #%u %s\n", i, line);
		}
	}
	if (res->error == CTX_OK)
		return 0;
	return res->error == CTX_E_SystemError ? EXIT_SYSTEM : EXIT_RUNTIME;
}

/*
 * The embedded broker holds an endpoint per live context, up to 1025 with
 * the depth limit: more than the usual soft limit of 1024 fds.
 */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int cmd_run(int argc, char **argv)
{
	struct cli cli = { 0 };
	struct ctx_program *prog;
	struct run_result res;
	int dev = -1;
	int rc = parse_args(argc, argv, true, &cli);

	if (rc)
		return rc;
	raise_fd_limit();
	if (!strcmp(cli.backend, "kmod") || !strcmp(cli.backend, "auto")) {
		dev = ctx_kmod_open();
		if (dev < 0 && !strcmp(cli.backend, "kmod")) {
			fprintf(stderr, "ctxvm: backend kmod: cannot use /dev/ctxvm: %s%s\n",
				strerror(errno), errno == ENOENT ?
				" (is ctxvm.ko loaded? `--backend user` needs no module)" : "");
			return EXIT_SYSTEM;
		}
		cli.backend = dev >= 0 ? "kmod" : "user";
	}
	prog = assemble(&cli);
	if (!prog) {
		if (dev >= 0)
			close(dev);
		return EXIT_USAGE;
	}
	if (!strcmp(cli.backend, "inproc")) {
		fprintf(stderr, "ctxvm: backend inproc: all contexts in one process, UNISOLATED "
			"(reference oracle)\n");
		ctx_run_inproc(prog, &cli.run, &res);
	} else if (dev >= 0) {
		fprintf(stderr, "ctxvm: backend kmod: a sandboxed process per context, "
			"frames kept by ctxvm.ko\n");
		ctx_run_kmod(dev, prog, &cli.run, &res);
		close(dev);
	} else {
		fprintf(stderr, "ctxvm: backend user: a sandboxed process per context, "
			"embedded broker\n");
		ctx_run_user_with(prog, &cli.run, &cli.user, &res);
	}
	rc = report(&cli, prog, &res, cli.backend);
	run_result_free(&res);
	ctx_program_free(prog);
	return rc;
}

static int cmd_asm(int argc, char **argv)
{
	struct cli cli = { 0 };
	struct ctx_program *prog;
	int rc = parse_args(argc, argv, false, &cli);

	if (rc)
		return rc;
	prog = assemble(&cli);
	if (!prog)
		return EXIT_USAGE;
	for (uint32_t i = 0; i < prog->nprocs; i++) {
		const struct ctx_proc *p = &prog->procs[i];

		printf("%s [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 "]%s%s\n", p->name,
		       p->digest[0], p->digest[1], p->digest[2], p->digest[3],
		       (p->flags & PROC_ENTRY) ? " entry" : "",
		       (p->flags & PROC_KERNEL_EXPORT) ? " kernel-export" :
		       (p->flags & PROC_KERNEL) ? " kernel" : "");
	}
	if (cli.dis)
		ctx_program_disassemble(prog, stdout);
	ctx_program_free(prog);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage_main, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage_main, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		puts("ctxvm 0.1.0");
		return 0;
	}
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc, argv);
	if (!strcmp(argv[1], "asm"))
		return cmd_asm(argc, argv);
	fprintf(stderr, "ctxvm: unknown command '%s'\n%s", argv[1], usage_main);
	return EXIT_USAGE;
}
