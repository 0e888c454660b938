// SPDX-License-Identifier: MIT
/*
 * MASM conformance runner.
 *
 * Every *.masm file directly in the program folder is one conformance
 * program; its expectations are `#!` directive lines (see
 * tests/conformance/README.md).  For each (program, backend) pair the
 * runner executes
 *
 *   $CTXVM run FILE --json --backend B [--kernel F] [--lib D]... [--input ..]
 *         [--gas N] [--mem-limit N]
 *
 * with fork/execvp (no shell), captures stdout and stderr, enforces a
 * wall-clock timeout, parses the JSON object the CLI prints and reports one
 * TAP result through the kselftest API.
 *
 * Environment:
 *   CTXVM                  the binary (default build/ctxvm)
 *   CTXVM_CONFORMANCE_DIR  the program folder (default tests/conformance)
 *   CTXVM_BACKENDS         space-separated backends (default "inproc")
 *   CTXVM_TEST_TIMEOUT     seconds per program (default 30)
 * Arguments: optional substrings; only programs whose name contains one of
 * them are run.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest.h"

#define MAX_LIBS 8
#define MAX_ASM_EXPECT 16
#define MAX_BACKENDS 8
#define STACK_OUT 16
#define OUTPUT_CAP (4u << 20)

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
/* ------------------------------------------------------------------ */

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		ksft_exit_fail_msg("out of memory\n");
	return p;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = xmalloc(n);

	memcpy(p, s, n);
	return p;
}

static char *xasprintf(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		ksft_exit_fail_msg("out of memory\n");
	return s;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Decimal or 0x hex, the whole string, no sign; 64 bits. */
static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	int base = 10;

	while (isspace((unsigned char)*s))
		s++;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!isxdigit((unsigned char)*s))
		return false;
	errno = 0;
	*out = strtoull(s, &end, base);
	if (errno)
		return false;
	while (isspace((unsigned char)*end))
		end++;
	return *end == '\0';
}

/* A growable byte buffer. */
struct buf {
	char *data;
	size_t len;
	size_t cap;
	bool truncated;
};

static void buf_append(struct buf *b, const char *p, size_t n)
{
	if (b->len + n > OUTPUT_CAP) {
		b->truncated = true;
		n = OUTPUT_CAP - b->len;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *d;

		while (cap < b->len + n + 1)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			ksft_exit_fail_msg("out of memory\n");
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static const char *buf_str(const struct buf *b)
{
	return b->data ? b->data : "";
}

/* ------------------------------------------------------------------ */
/* a minimal JSON reader                                               */
/* ------------------------------------------------------------------ */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
	enum jtype type;
	bool b;
	char *str;              /* J_STR: decoded text; J_NUM: the literal */
	size_t n;               /* J_ARR / J_OBJ: count */
	char **keys;            /* J_OBJ */
	struct jval **items;    /* J_ARR / J_OBJ */
};

struct jparser {
	const char *p;
	const char *end;
	int depth;
	bool err;
};

static void jfree(struct jval *v)
{
	size_t i;

	if (!v)
		return;
	for (i = 0; i < v->n; i++) {
		if (v->keys)
			free(v->keys[i]);
		jfree(v->items[i]);
	}
	free(v->keys);
	free(v->items);
	free(v->str);
	free(v);
}

static void jws(struct jparser *jp)
{
	while (jp->p < jp->end && isspace((unsigned char)*jp->p))
		jp->p++;
}

static struct jval *jnew(enum jtype t)
{
	struct jval *v = xmalloc(sizeof(*v));

	memset(v, 0, sizeof(*v));
	v->type = t;
	return v;
}

static void utf8_put(struct buf *b, unsigned int cp)
{
	char o[4];
	size_t n;

	if (cp < 0x80) {
		o[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	}
	buf_append(b, o, n);
}

static char *jstring(struct jparser *jp)
{
	struct buf b = { 0 };

	if (jp->p >= jp->end || *jp->p != '"') {
		jp->err = true;
		return NULL;
	}
	jp->p++;
	while (jp->p < jp->end && *jp->p != '"') {
		char c = *jp->p++;

		if (c != '\\') {
			buf_append(&b, &c, 1);
			continue;
		}
		if (jp->p >= jp->end)
			break;
		c = *jp->p++;
		switch (c) {
		case 'n': buf_append(&b, "\n", 1); break;
		case 't': buf_append(&b, "\t", 1); break;
		case 'r': buf_append(&b, "\r", 1); break;
		case 'b': buf_append(&b, "\b", 1); break;
		case 'f': buf_append(&b, "\f", 1); break;
		case 'u': {
			unsigned int cp = 0;
			int i;

			for (i = 0; i < 4; i++) {
				int d;

				if (jp->p >= jp->end || !isxdigit((unsigned char)*jp->p)) {
					jp->err = true;
					free(b.data);
					return NULL;
				}
				d = isdigit((unsigned char)*jp->p) ? *jp->p - '0' :
					(tolower((unsigned char)*jp->p) - 'a' + 10);
				cp = cp * 16 + (unsigned int)d;
				jp->p++;
			}
			utf8_put(&b, cp);
			break;
		}
		default:
			buf_append(&b, &c, 1);
			break;
		}
	}
	if (jp->p >= jp->end) {
		jp->err = true;
		free(b.data);
		return NULL;
	}
	jp->p++;
	if (!b.data)
		return xstrdup("");
	return b.data;
}

static struct jval *jparse(struct jparser *jp);

static void jpush(struct jval *v, char *key, struct jval *item)
{
	v->items = realloc(v->items, (v->n + 1) * sizeof(*v->items));
	if (!v->items)
		ksft_exit_fail_msg("out of memory\n");
	if (v->type == J_OBJ) {
		v->keys = realloc(v->keys, (v->n + 1) * sizeof(*v->keys));
		if (!v->keys)
			ksft_exit_fail_msg("out of memory\n");
		v->keys[v->n] = key;
	}
	v->items[v->n++] = item;
}

static struct jval *jparse(struct jparser *jp)
{
	struct jval *v;

	jws(jp);
	if (jp->p >= jp->end || ++jp->depth > 64) {
		jp->err = true;
		return NULL;
	}
	switch (*jp->p) {
	case '{':
		v = jnew(J_OBJ);
		jp->p++;
		jws(jp);
		if (jp->p < jp->end && *jp->p == '}') {
			jp->p++;
			break;
		}
		for (;;) {
			char *key;
			struct jval *item;

			jws(jp);
			key = jstring(jp);
			if (!key)
				goto fail;
			jws(jp);
			if (jp->p >= jp->end || *jp->p != ':') {
				free(key);
				goto fail;
			}
			jp->p++;
			item = jparse(jp);
			if (!item) {
				free(key);
				goto fail;
			}
			jpush(v, key, item);
			jws(jp);
			if (jp->p < jp->end && *jp->p == ',') {
				jp->p++;
				continue;
			}
			if (jp->p < jp->end && *jp->p == '}') {
				jp->p++;
				break;
			}
			goto fail;
		}
		break;
	case '[':
		v = jnew(J_ARR);
		jp->p++;
		jws(jp);
		if (jp->p < jp->end && *jp->p == ']') {
			jp->p++;
			break;
		}
		for (;;) {
			struct jval *item = jparse(jp);

			if (!item)
				goto fail;
			jpush(v, NULL, item);
			jws(jp);
			if (jp->p < jp->end && *jp->p == ',') {
				jp->p++;
				continue;
			}
			if (jp->p < jp->end && *jp->p == ']') {
				jp->p++;
				break;
			}
			goto fail;
		}
		break;
	case '"':
		v = jnew(J_STR);
		v->str = jstring(jp);
		if (!v->str)
			goto fail;
		break;
	case 't':
	case 'f':
	case 'n': {
		static const char *const lit[] = { "true", "false", "null" };
		int i;

		for (i = 0; i < 3; i++) {
			size_t l = strlen(lit[i]);

			if ((size_t)(jp->end - jp->p) >= l && !memcmp(jp->p, lit[i], l)) {
				jp->p += l;
				v = jnew(i == 2 ? J_NULL : J_BOOL);
				v->b = (i == 0);
				goto done;
			}
		}
		jp->err = true;
		jp->depth--;
		return NULL;
	}
	default: {
		const char *s = jp->p;

		while (jp->p < jp->end && (isdigit((unsigned char)*jp->p) || *jp->p == '-' ||
					   *jp->p == '+' || *jp->p == '.' || *jp->p == 'e' ||
					   *jp->p == 'E'))
			jp->p++;
		if (jp->p == s) {
			jp->err = true;
			jp->depth--;
			return NULL;
		}
		v = jnew(J_NUM);
		v->str = xmalloc((size_t)(jp->p - s) + 1);
		memcpy(v->str, s, (size_t)(jp->p - s));
		v->str[jp->p - s] = '\0';
		break;
	}
	}
done:
	jp->depth--;
	return v;
fail:
	jp->err = true;
	jp->depth--;
	jfree(v);
	return NULL;
}

static const struct jval *jget(const struct jval *obj, const char *key)
{
	size_t i;

	if (!obj || obj->type != J_OBJ)
		return NULL;
	for (i = 0; i < obj->n; i++)
		if (!strcmp(obj->keys[i], key))
			return obj->items[i];
	return NULL;
}

/*
 * Parse the first complete JSON object in text (the CLI prints exactly one;
 * anything around it is ignored).
 */
static struct jval *parse_output_json(const char *text)
{
	const char *start = strchr(text, '{');

	while (start) {
		struct jparser jp = { start, text + strlen(text), 0, false };
		struct jval *v = jparse(&jp);

		if (v && !jp.err && v->type == J_OBJ)
			return v;
		jfree(v);
		start = strchr(start + 1, '{');
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* test files                                                          */
/* ------------------------------------------------------------------ */

enum expect_kind { EXPECT_NONE, EXPECT_STACK, EXPECT_ERROR, EXPECT_ASM };

struct test {
	char *name;             /* file name, e.g. stack_dup.masm */
	char *path;
	char *bad;              /* malformed: why (the test fails) */

	char *input;
	char *kernel;
	char *libs[MAX_LIBS];
	int nlibs;
	char *gas;
	char *mem_limit;
	char *backends;         /* NULL: every backend under test */

	enum expect_kind kind;
	uint64_t stack[STACK_OUT];
	int nstack;
	bool has_gas;
	uint64_t expect_gas;
	char *error_kind;
	char *message;
	char *asm_text[MAX_ASM_EXPECT];
	int nasm;
};

static void set_bad(struct test *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_bad(struct test *t, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	if (t->bad)
		return;         /* keep the first reason */
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	t->bad = s ? s : xstrdup("malformed");
}

static void set_expect(struct test *t, enum expect_kind k, const char *what)
{
	if (t->kind != EXPECT_NONE && t->kind != k)
		set_bad(t, "more than one kind of expectation (%s)", what);
	t->kind = k;
}

static void set_once(struct test *t, char **slot, const char *key, const char *val)
{
	if (*slot) {
		set_bad(t, "directive '%s' given twice", key);
		return;
	}
	*slot = xstrdup(val);
}

static void parse_directive(struct test *t, const char *dir, int lineno,
			    const char *folder)
{
	char *copy = xstrdup(dir);
	char *colon = strchr(copy, ':');
	char *key, *val;

	if (!colon) {
		set_bad(t, "line %d: directive without ':'", lineno);
		free(copy);
		return;
	}
	*colon = '\0';
	key = trim(copy);
	val = trim(colon + 1);

	if (!strcmp(key, "input")) {
		set_once(t, &t->input, key, val);
	} else if (!strcmp(key, "kernel")) {
		char *p = xasprintf("%s/%s", folder, val);

		if (t->kernel)
			set_bad(t, "directive 'kernel' given twice");
		else
			t->kernel = p;
		if (t->kernel != p)
			free(p);
	} else if (!strcmp(key, "lib")) {
		if (t->nlibs == MAX_LIBS)
			set_bad(t, "too many 'lib' directives");
		else
			t->libs[t->nlibs++] = xasprintf("%s/%s", folder, val);
	} else if (!strcmp(key, "gas")) {
		uint64_t g;

		if (!parse_u64(val, &g))
			set_bad(t, "line %d: bad gas '%s'", lineno, val);
		set_once(t, &t->gas, key, val);
	} else if (!strcmp(key, "mem-limit")) {
		uint64_t m;

		if (!parse_u64(val, &m))
			set_bad(t, "line %d: bad mem-limit '%s'", lineno, val);
		set_once(t, &t->mem_limit, key, val);
	} else if (!strcmp(key, "backends")) {
		set_once(t, &t->backends, key, val);
	} else if (!strcmp(key, "expect-stack")) {
		char *list = xstrdup(val), *save = NULL, *tok;

		if (t->kind == EXPECT_STACK)
			set_bad(t, "expect-stack given twice");
		set_expect(t, EXPECT_STACK, key);
		t->nstack = 0;
		for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			if (t->nstack == STACK_OUT) {
				set_bad(t, "line %d: more than 16 expected elements", lineno);
				break;
			}
			if (!parse_u64(tok, &t->stack[t->nstack])) {
				set_bad(t, "line %d: bad stack value '%s'", lineno, trim(tok));
				break;
			}
			t->nstack++;
		}
		if (t->nstack == 0 && !t->bad)
			set_bad(t, "line %d: empty expect-stack", lineno);
		free(list);
	} else if (!strcmp(key, "expect-gas")) {
		if (t->has_gas)
			set_bad(t, "expect-gas given twice");
		if (!parse_u64(val, &t->expect_gas))
			set_bad(t, "line %d: bad expect-gas '%s'", lineno, val);
		t->has_gas = true;
	} else if (!strcmp(key, "expect-error")) {
		set_expect(t, EXPECT_ERROR, key);
		if (!*val)
			set_bad(t, "line %d: empty expect-error", lineno);
		set_once(t, &t->error_kind, key, val);
	} else if (!strcmp(key, "expect-message")) {
		set_once(t, &t->message, key, val);
	} else if (!strcmp(key, "expect-asm-error")) {
		set_expect(t, EXPECT_ASM, key);
		if (!*val)
			set_bad(t, "line %d: empty expect-asm-error", lineno);
		else if (t->nasm == MAX_ASM_EXPECT)
			set_bad(t, "too many expect-asm-error directives");
		else
			t->asm_text[t->nasm++] = xstrdup(val);
	} else {
		set_bad(t, "line %d: unknown directive '%s'", lineno, key);
	}
	free(copy);
}

static void load_test(struct test *t, const char *folder)
{
	FILE *f = fopen(t->path, "r");
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0;

	if (!f) {
		set_bad(t, "cannot open: %s", strerror(errno));
		return;
	}
	while (getline(&line, &cap, f) >= 0) {
		char *s = line;

		lineno++;
		while (*s == ' ' || *s == '\t')
			s++;
		if (s[0] == '#' && s[1] == '!')
			parse_directive(t, s + 2, lineno, folder);
	}
	free(line);
	fclose(f);

	if (t->kind == EXPECT_NONE)
		set_bad(t, "no expectation (expect-stack, expect-error or expect-asm-error)");
	if (t->has_gas && t->kind != EXPECT_STACK)
		set_bad(t, "expect-gas only goes with expect-stack");
	if (t->message && t->kind != EXPECT_ERROR)
		set_bad(t, "expect-message only goes with expect-error");
}

static void free_test(struct test *t)
{
	int i;

	free(t->name);
	free(t->path);
	free(t->bad);
	free(t->input);
	free(t->kernel);
	for (i = 0; i < t->nlibs; i++)
		free(t->libs[i]);
	free(t->gas);
	free(t->mem_limit);
	free(t->backends);
	free(t->error_kind);
	free(t->message);
	for (i = 0; i < t->nasm; i++)
		free(t->asm_text[i]);
}

static bool test_wants_backend(const struct test *t, const char *backend)
{
	char *list, *save = NULL, *tok;
	bool found = false;

	if (!t->backends)
		return true;
	list = xstrdup(t->backends);
	for (tok = strtok_r(list, " ,\t", &save); tok; tok = strtok_r(NULL, " ,\t", &save))
		if (!strcmp(tok, backend))
			found = true;
	free(list);
	return found;
}

/* ------------------------------------------------------------------ */
/* running the binary                                                  */
/* ------------------------------------------------------------------ */

struct run_result {
	struct buf out;
	struct buf err;
	int status;             /* waitpid status */
	bool timed_out;
	bool spawn_failed;
	char spawn_error[128];
};

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run_child(char *const argv[], double timeout, struct run_result *r)
{
	int opipe[2], epipe[2], xpipe[2];
	struct pollfd pfd[2];
	double deadline;
	pid_t pid;
	int open_fds = 2;
	int child_errno = 0;
	ssize_t n;

	memset(r, 0, sizeof(*r));
	if (pipe2(opipe, O_CLOEXEC) || pipe2(epipe, O_CLOEXEC) || pipe2(xpipe, O_CLOEXEC)) {
		r->spawn_failed = true;
		snprintf(r->spawn_error, sizeof(r->spawn_error), "pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		r->spawn_failed = true;
		snprintf(r->spawn_error, sizeof(r->spawn_error), "fork: %s", strerror(errno));
		close(opipe[0]); close(opipe[1]);
		close(epipe[0]); close(epipe[1]);
		close(xpipe[0]); close(xpipe[1]);
		return;
	}
	if (pid == 0) {
		int e;

		setpgid(0, 0);  /* its own group: a timeout kills every context */
		if (dup2(opipe[1], STDOUT_FILENO) < 0 || dup2(epipe[1], STDERR_FILENO) < 0)
			_exit(127);
		e = open("/dev/null", O_RDONLY);
		if (e >= 0 && e != STDIN_FILENO) {
			dup2(e, STDIN_FILENO);
			close(e);
		}
		execvp(argv[0], argv);
		e = errno;
		if (write(xpipe[1], &e, sizeof(e)) < 0)
			_exit(127);
		_exit(127);
	}
	setpgid(pid, pid);
	close(opipe[1]);
	close(epipe[1]);
	close(xpipe[1]);

	deadline = now_sec() + timeout;
	pfd[0].fd = opipe[0];
	pfd[0].events = POLLIN;
	pfd[1].fd = epipe[0];
	pfd[1].events = POLLIN;
	while (open_fds > 0) {
		double left = deadline - now_sec();
		int i, rc;

		if (left <= 0) {
			r->timed_out = true;
			break;
		}
		rc = poll(pfd, 2, (int)(left * 1000) + 1);
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (i = 0; i < 2; i++) {
			char chunk[8192];

			if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(pfd[i].fd, chunk, sizeof(chunk));
			if (n > 0) {
				buf_append(i == 0 ? &r->out : &r->err, chunk, (size_t)n);
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				open_fds--;
			}
		}
	}
	if (r->timed_out) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
	}
	for (n = 0; n < 2; n++)
		if (pfd[n].fd >= 0)
			close(pfd[n].fd);

	/* Wait for the child, still bounded by the deadline. */
	for (;;) {
		pid_t w = waitpid(pid, &r->status, WNOHANG);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			break;
		if (now_sec() > deadline && !r->timed_out) {
			r->timed_out = true;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
		}
		usleep(1000);
	}
	/* Children the CLI left behind in its group are not our business
	 * on success, but a killed run must not leave them running. */
	if (r->timed_out)
		kill(-pid, SIGKILL);

	n = read(xpipe[0], &child_errno, sizeof(child_errno));
	close(xpipe[0]);
	if (n == (ssize_t)sizeof(child_errno)) {
		r->spawn_failed = true;
		snprintf(r->spawn_error, sizeof(r->spawn_error), "exec %s: %s", argv[0],
			 strerror(child_errno));
	}
}

/* ------------------------------------------------------------------ */
/* checking                                                            */
/* ------------------------------------------------------------------ */

/* Print text as `# ` diagnostic lines, at most max_lines of them. */
static void diag_block(const char *label, const char *text, int max_lines)
{
	const char *p = text;
	int lines = 0;

	if (!*p)
		return;
	ksft_print_msg("%s:\n", label);
	while (*p && lines < max_lines) {
		const char *nl = strchr(p, '\n');
		int len = nl ? (int)(nl - p) : (int)strlen(p);

		if (len > 300)
			len = 300;
		ksft_print_msg("  %.*s\n", len, p);
		lines++;
		if (!nl)
			break;
		p = nl + 1;
	}
	if (*p && lines == max_lines)
		ksft_print_msg("  ...\n");
}

static void fmt_stack(const uint64_t *v, int n, char *out, size_t cap)
{
	size_t len = 0;
	int i;

	out[0] = '\0';
	len += (size_t)snprintf(out + len, cap - len, "[");
	for (i = 0; i < n && len < cap; i++)
		len += (size_t)snprintf(out + len, cap - len, "%s%" PRIu64, i ? "," : "", v[i]);
	if (len < cap)
		snprintf(out + len, cap - len, "]");
}

static int exit_code(const struct run_result *r)
{
	if (WIFEXITED(r->status))
		return WEXITSTATUS(r->status);
	return -1;
}

static void describe_exit(const struct run_result *r, char *out, size_t cap)
{
	if (WIFEXITED(r->status))
		snprintf(out, cap, "exit %d", WEXITSTATUS(r->status));
	else if (WIFSIGNALED(r->status))
		snprintf(out, cap, "killed by signal %d (%s)", WTERMSIG(r->status),
			 strsignal(WTERMSIG(r->status)));
	else
		snprintf(out, cap, "status 0x%x", r->status);
}

/* Returns true when the run matches the test's expectations. */
static bool check(const struct test *t, const struct run_result *r)
{
	struct jval *json = NULL;
	char how[128];
	bool ok = false;
	int code = exit_code(r);
	int i;

	describe_exit(r, how, sizeof(how));

	if (t->kind == EXPECT_ASM) {
		if (code != 2) {
			ksft_print_msg("expected an assembly error (exit 2), got %s\n", how);
			goto dump;
		}
		for (i = 0; i < t->nasm; i++) {
			if (!strstr(buf_str(&r->err), t->asm_text[i])) {
				ksft_print_msg("expected stderr to contain '%s'\n", t->asm_text[i]);
				goto dump;
			}
		}
		return true;
	}

	json = parse_output_json(buf_str(&r->out));

	if (t->kind == EXPECT_STACK) {
		const struct jval *jok = jget(json, "ok");
		const struct jval *st = jget(json, "stack");
		const struct jval *gas = jget(json, "gas_used");
		uint64_t got[STACK_OUT];
		char exp_s[512], got_s[512];
		uint64_t want[STACK_OUT] = { 0 };
		bool match = true;

		if (code != 0 || !jok || jok->type != J_BOOL || !jok->b) {
			const struct jval *e = jget(json, "error");
			const struct jval *k = jget(e, "kind");
			const struct jval *m = jget(e, "message");

			ksft_print_msg("expected success, got %s%s%s%s%s\n", how,
				       k && k->type == J_STR ? " error " : "",
				       k && k->type == J_STR ? k->str : "",
				       m && m->type == J_STR ? ": " : "",
				       m && m->type == J_STR ? m->str : "");
			goto dump;
		}
		if (!st || st->type != J_ARR || st->n != STACK_OUT) {
			ksft_print_msg("expected a 16-element \"stack\" array in the JSON\n");
			goto dump;
		}
		for (i = 0; i < STACK_OUT; i++) {
			if (st->items[i]->type != J_NUM || !parse_u64(st->items[i]->str, &got[i])) {
				ksft_print_msg("stack element %d is not an integer\n", i);
				goto dump;
			}
		}
		memcpy(want, t->stack, sizeof(uint64_t) * (size_t)t->nstack);
		for (i = 0; i < STACK_OUT; i++)
			if (got[i] != want[i])
				match = false;
		if (!match) {
			fmt_stack(want, STACK_OUT, exp_s, sizeof(exp_s));
			fmt_stack(got, STACK_OUT, got_s, sizeof(got_s));
			ksft_print_msg("expected stack %s\n", exp_s);
			ksft_print_msg("     got stack %s\n", got_s);
			goto dump;
		}
		if (t->has_gas) {
			uint64_t g;

			if (!gas || gas->type != J_NUM || !parse_u64(gas->str, &g)) {
				ksft_print_msg("expected gas_used %" PRIu64 ", got none\n",
					       t->expect_gas);
				goto dump;
			}
			if (g != t->expect_gas) {
				ksft_print_msg("expected gas_used %" PRIu64 ", got %" PRIu64 "\n",
					       t->expect_gas, g);
				goto out;
			}
		}
		ok = true;
		goto out;
	}

	/* EXPECT_ERROR */
	{
		const struct jval *jok = jget(json, "ok");
		const struct jval *e = jget(json, "error");
		const struct jval *k = jget(e, "kind");
		const struct jval *m = jget(e, "message");

		if (code != 1 || !jok || jok->type != J_BOOL || jok->b) {
			ksft_print_msg("expected run-time error %s (exit 1), got %s%s%s\n",
				       t->error_kind, how,
				       k && k->type == J_STR ? " error " : "",
				       k && k->type == J_STR ? k->str : "");
			goto dump;
		}
		if (!k || k->type != J_STR) {
			ksft_print_msg("expected error.kind %s, got no kind in the JSON\n",
				       t->error_kind);
			goto dump;
		}
		if (strcmp(k->str, t->error_kind)) {
			ksft_print_msg("expected error %s, got %s%s%s\n", t->error_kind, k->str,
				       m && m->type == J_STR ? ": " : "",
				       m && m->type == J_STR ? m->str : "");
			goto out;
		}
		if (t->message && (!m || m->type != J_STR || !strstr(m->str, t->message))) {
			ksft_print_msg("expected message containing '%s', got '%s'\n", t->message,
				       m && m->type == J_STR ? m->str : "(none)");
			goto out;
		}
		ok = true;
		goto out;
	}

dump:
	diag_block("stdout", buf_str(&r->out), 6);
	diag_block("stderr", buf_str(&r->err), 12);
out:
	jfree(json);
	return ok;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool selected(const char *name, int argc, char **argv)
{
	int i;

	if (argc <= 1)
		return true;
	for (i = 1; i < argc; i++)
		if (strstr(name, argv[i]))
			return true;
	return false;
}

/*
 * What a run produced, backend aside: stack and gas on success, error kind
 * and gas on failure, or the exit status.  The differential check compares
 * these across backends.
 */
static char *fingerprint(const struct run_result *r)
{
	struct jval *json;
	const struct jval *ok, *st, *gas, *err, *kind;
	struct buf b = { 0 };
	char how[128];
	size_t i;

	if (r->spawn_failed || r->timed_out)
		return xstrdup(r->timed_out ? "timed out" : "not started");
	json = parse_output_json(buf_str(&r->out));
	ok = jget(json, "ok");
	gas = jget(json, "gas_used");
	if (!json || !ok || ok->type != J_BOOL) {
		describe_exit(r, how, sizeof(how));
		jfree(json);
		return xstrdup(how);
	}
	buf_append(&b, ok->b ? "ok" : "failed", ok->b ? 2 : 6);
	st = jget(json, "stack");
	if (ok->b && st && st->type == J_ARR) {
		buf_append(&b, " stack", 6);
		for (i = 0; i < st->n; i++) {
			buf_append(&b, " ", 1);
			if (st->items[i]->type == J_NUM)
				buf_append(&b, st->items[i]->str, strlen(st->items[i]->str));
		}
	}
	err = jget(json, "error");
	kind = err ? jget(err, "kind") : NULL;
	if (kind && kind->type == J_STR) {
		buf_append(&b, " ", 1);
		buf_append(&b, kind->str, strlen(kind->str));
	}
	if (gas && gas->type == J_NUM) {
		buf_append(&b, " gas ", 5);
		buf_append(&b, gas->str, strlen(gas->str));
	}
	jfree(json);
	{
		char *print = xstrdup(buf_str(&b));

		free(b.data);
		return print;
	}
}

static char *run_one(const struct test *t, const char *ctxvm, const char *backend,
		     double timeout)
{
	char *print;
	char *argv[32];
	int argc = 0, i;
	struct run_result r;
	bool ok;

	argv[argc++] = (char *)ctxvm;
	argv[argc++] = "run";
	argv[argc++] = t->path;
	argv[argc++] = "--json";
	argv[argc++] = "--backend";
	argv[argc++] = (char *)backend;
	if (t->kernel) {
		argv[argc++] = "--kernel";
		argv[argc++] = t->kernel;
	}
	for (i = 0; i < t->nlibs; i++) {
		argv[argc++] = "--lib";
		argv[argc++] = t->libs[i];
	}
	if (t->input) {
		argv[argc++] = "--input";
		argv[argc++] = t->input;
	}
	if (t->gas) {
		argv[argc++] = "--gas";
		argv[argc++] = t->gas;
	}
	if (t->mem_limit) {
		argv[argc++] = "--mem-limit";
		argv[argc++] = t->mem_limit;
	}
	argv[argc] = NULL;

	run_child(argv, timeout, &r);
	if (r.spawn_failed) {
		ksft_print_msg("%s\n", r.spawn_error);
		ok = false;
	} else if (r.timed_out) {
		ksft_print_msg("timed out after %.0f s (killed)\n", timeout);
		diag_block("stderr", buf_str(&r.err), 6);
		ok = false;
	} else {
		ok = check(t, &r);
	}
	if (ok)
		ksft_test_result_pass("%s [%s]\n", t->name, backend);
	else
		ksft_test_result_fail("%s [%s]\n", t->name, backend);
	print = fingerprint(&r);
	free(r.out.data);
	free(r.err.data);
	return print;
}

int main(int argc, char **argv)
{
	const char *ctxvm = getenv("CTXVM");
	const char *folder = getenv("CTXVM_CONFORMANCE_DIR");
	const char *backends_env = getenv("CTXVM_BACKENDS");
	const char *timeout_env = getenv("CTXVM_TEST_TIMEOUT");
	char *backend_list, *save = NULL, *tok;
	char *backends[MAX_BACKENDS];
	int nbackends = 0;
	double timeout = 30;
	char **names = NULL;
	size_t nnames = 0, i;
	struct test *tests;
	struct dirent *de;
	unsigned int plan = 0;
	DIR *d;
	int b;

	if (!ctxvm || !*ctxvm)
		ctxvm = "build/ctxvm";
	if (!folder || !*folder)
		folder = "tests/conformance";
	if (!backends_env || !*backends_env)
		backends_env = "inproc";
	if (timeout_env && *timeout_env) {
		uint64_t t;

		if (parse_u64(timeout_env, &t) && t > 0)
			timeout = (double)t;
	}

	backend_list = xstrdup(backends_env);
	for (tok = strtok_r(backend_list, " \t,", &save); tok;
	     tok = strtok_r(NULL, " \t,", &save)) {
		if (nbackends == MAX_BACKENDS)
			break;
		backends[nbackends++] = tok;
	}

	ksft_print_header();

	d = opendir(folder);
	if (!d)
		ksft_exit_fail_msg("cannot open %s: %s\n", folder, strerror(errno));
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		char *p;
		struct stat st;

		if (l < 6 || strcmp(de->d_name + l - 5, ".masm"))
			continue;
		if (!selected(de->d_name, argc, argv))
			continue;
		p = xasprintf("%s/%s", folder, de->d_name);
		if (stat(p, &st) || !S_ISREG(st.st_mode)) {
			free(p);
			continue;
		}
		free(p);
		names = realloc(names, (nnames + 1) * sizeof(*names));
		if (!names)
			ksft_exit_fail_msg("out of memory\n");
		names[nnames++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (nnames)
		qsort(names, nnames, sizeof(*names), cmp_str);

	tests = xmalloc(sizeof(*tests) * (nnames ? nnames : 1));
	memset(tests, 0, sizeof(*tests) * (nnames ? nnames : 1));
	for (i = 0; i < nnames; i++) {
		tests[i].name = names[i];
		tests[i].path = xasprintf("%s/%s", folder, names[i]);
		load_test(&tests[i], folder);
	}
	free(names);

	/* One result per program and backend, plus one differential per program. */
	plan = (unsigned int)(nnames * (size_t)(nbackends + (nbackends > 1)));
	ksft_print_msg("ctxvm: %s; programs: %s (%zu); backends: %s\n", ctxvm, folder,
		       nnames, backends_env);
	ksft_set_plan(plan);

	for (i = 0; i < nnames; i++) {
		struct test *t = &tests[i];
		char *prints[MAX_BACKENDS] = { 0 };
		int ran = 0, first = -1;
		bool same = true;

		for (b = 0; b < nbackends; b++) {
			if (t->bad) {
				ksft_print_msg("malformed test file %s: %s\n", t->path, t->bad);
				ksft_test_result_fail("%s [%s]\n", t->name, backends[b]);
				continue;
			}
			if (!test_wants_backend(t, backends[b])) {
				ksft_test_result_skip("%s [%s] not for this backend\n", t->name,
						      backends[b]);
				continue;
			}
			prints[b] = run_one(t, ctxvm, backends[b], timeout);
			ran++;
			if (first < 0)
				first = b;
			else if (strcmp(prints[first], prints[b]) != 0)
				same = false;
		}
		if (nbackends > 1) {
			/* Stack, gas and error kind must not depend on the backend. */
			if (ran < 2) {
				ksft_test_result_skip("%s [differential] fewer than two backends ran\n",
						      t->name);
			} else if (same) {
				ksft_test_result_pass("%s [differential]\n", t->name);
			} else {
				for (b = 0; b < nbackends; b++)
					if (prints[b])
						ksft_print_msg("%s: %s\n", backends[b], prints[b]);
				ksft_test_result_fail("%s [differential]\n", t->name);
			}
		}
		for (b = 0; b < nbackends; b++)
			free(prints[b]);
		free_test(t);
	}
	free(tests);
	free(backend_list);

	ksft_print_msg("%u passed, %u failed\n", ksft_get_pass_cnt(), ksft_get_fail_cnt());
	ksft_exit(ksft_get_fail_cnt() == 0 && ksft_get_error_cnt() == 0);
	return 0;
}
