/* SPDX-License-Identifier: MIT */
/*
 * The MASM assembler: both syntaxes -> struct ctx_program.
 *
 * Phases: parse every module (root, kernel, then each `use`d library in
 * order), lowering straight into per-procedure code with relative jump
 * targets and unresolved procedure references; resolve references; reject
 * recursion (iterative DFS, giving a topological order); reject statically
 * visible syscalls in the kernel; compute digests callees-first; lay out the
 * flat program.  Errors never stop a phase early (until 100 of them).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "asm.h"
#include "digest.h"

#define MAX_ERRORS 100
#define MAX_DEPTH 256
#define MAX_LOCALS 65532u
#define MAX_FILE (256u << 20)
#define MAX_CODE (1u << 30)

/* ---------------------------------------------------------------- utils */

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		fprintf(stderr, "ctxvm asm: out of memory\n");
		abort();
	}
	return q;
}

static char *xstrndup(const char *s, size_t n)
{
	char *d = xrealloc(NULL, n + 1);
	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

#define GROW(arr, n, cap)                                                     \
	do {                                                                  \
		if ((n) >= (cap)) {                                           \
			(cap) = (cap) ? (cap) * 2 : 16;                       \
			(arr) = xrealloc((arr), (size_t)(cap) * sizeof(*(arr))); \
		}                                                             \
	} while (0)

struct hmap {
	char **keys;
	uint32_t *vals;
	size_t cap, n;
};

static uint64_t hstr(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static int hmap_get(const struct hmap *m, const char *k, uint32_t *v)
{
	if (!m->cap)
		return 0;
	for (size_t i = hstr(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (!m->keys[i])
			return 0;
		if (!strcmp(m->keys[i], k)) {
			*v = m->vals[i];
			return 1;
		}
	}
}

static void hmap_put(struct hmap *m, const char *k, uint32_t v)
{
	if ((m->n + 1) * 2 > m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 64;
		char **nk = calloc(ncap, sizeof(*nk));
		uint32_t *nv = calloc(ncap, sizeof(*nv));
		if (!nk || !nv) {
			fprintf(stderr, "ctxvm asm: out of memory\n");
			abort();
		}
		for (size_t i = 0; i < m->cap; i++) {
			if (!m->keys[i])
				continue;
			size_t j = hstr(m->keys[i]) & (ncap - 1);
			while (nk[j])
				j = (j + 1) & (ncap - 1);
			nk[j] = m->keys[i];
			nv[j] = m->vals[i];
		}
		free(m->keys);
		free(m->vals);
		m->keys = nk;
		m->vals = nv;
		m->cap = ncap;
	}
	size_t i = hstr(k) & (m->cap - 1);
	while (m->keys[i]) {
		if (!strcmp(m->keys[i], k)) {
			m->vals[i] = v;
			return;
		}
		i = (i + 1) & (m->cap - 1);
	}
	m->keys[i] = xstrndup(k, strlen(k));
	m->vals[i] = v;
	m->n++;
}

static void hmap_free(struct hmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->keys[i]);
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}

/* ---------------------------------------------------------------- state */

struct file {
	char *name;
	char *text;
	size_t len;
	uint32_t *lines; /* offsets of line starts, built lazily */
	uint32_t nlines;
};

struct use_ent {
	char *alias;
	int32_t mod; /* -1: failed to load (already reported) */
};

enum mod_kind { MOD_ROOT, MOD_KERNEL, MOD_LIB };

struct module {
	char *path; /* a::b::c */
	uint32_t file;
	enum mod_kind kind;
	struct use_ent *uses;
	uint32_t nuses, capuses;
	int has_main;
};

struct ref {
	char *name;
	uint32_t mod;
	uint32_t op;
	struct ctx_srcloc loc;
	int32_t target;
};

struct pproc {
	char *name;
	uint32_t mod;
	uint32_t nlocals;
	uint32_t flags;
	struct ctx_srcloc loc;
	struct ctx_insn *code;
	struct ctx_srcloc *locs;
	uint32_t n, cap;
};

struct asmctx {
	const struct asm_options *opts;
	struct asm_diags *diags;
	int stop;

	struct file *files;
	uint32_t nfiles, capfiles;
	struct module *mods;
	uint32_t nmods, capmods;
	struct pproc *procs;
	uint32_t nprocs, capprocs;
	struct ref *refs;
	uint32_t nrefs, caprefs;
	char **strings;
	uint32_t nstrings, capstrings;
	uint64_t *consts;
	uint32_t nconsts, capconsts;
	uint64_t totalcode;

	struct hmap procmap;  /* "mod:name" -> proc */
	struct hmap constmap; /* "mod:name" -> const */
	struct hmap modmap;   /* path -> module */
	struct hmap insnmap;  /* instruction name -> table index */
	int32_t kernel_mod;
	int32_t main_proc;
};

/* ---------------------------------------------------------- diagnostics */

static void diag_append(struct asm_diags *d, const char *s, size_t n)
{
	if (d->len + n + 1 > d->cap) {
		size_t nc = d->cap ? d->cap : 256;
		while (d->len + n + 1 > nc)
			nc *= 2;
		d->text = xrealloc(d->text, nc);
		d->cap = nc;
	}
	memcpy(d->text + d->len, s, n);
	d->len += n;
	d->text[d->len] = 0;
}

static void diag_printf(struct asm_diags *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void diag_printf(struct asm_diags *d, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	diag_append(d, buf, (size_t)n);
}

static void file_lines(struct file *f)
{
	if (f->lines)
		return;
	uint32_t cap = 64, n = 0;
	f->lines = xrealloc(NULL, cap * sizeof(uint32_t));
	f->lines[n++] = 0;
	for (size_t i = 0; i < f->len; i++) {
		if (f->text[i] == '\n') {
			GROW(f->lines, n, cap);
			f->lines[n++] = (uint32_t)(i + 1);
		}
	}
	f->nlines = n;
}

static void verror(struct asmctx *c, uint32_t file, uint32_t line, uint32_t col,
		   const char *fmt, va_list ap)
{
	struct asm_diags *d = c->diags;
	char msg[600];

	if (c->stop)
		return;
	if (d->nerrors >= MAX_ERRORS) {
		diag_printf(d, "error: too many errors (%u), stopping\n", MAX_ERRORS);
		c->stop = 1;
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	d->nerrors++;
	struct file *f = file < c->nfiles ? &c->files[file] : NULL;
	if (!f || line == 0) {
		diag_printf(d, "%s: error: %s\n", f ? f->name : "?", msg);
		return;
	}
	diag_printf(d, "%s:%u:%u: error: %s\n", f->name, line, col, msg);
	file_lines(f);
	if (line > f->nlines)
		return;
	size_t s = f->lines[line - 1], e = s;
	while (e < f->len && f->text[e] != '\n' && e - s < 200)
		e++;
	char lb[220], cb[220];
	size_t n = 0, k = 0;
	for (size_t i = s; i < e; i++) {
		unsigned char ch = (unsigned char)f->text[i];
		lb[n++] = (ch == '\t' || (ch >= 0x20 && ch < 0x7f)) ? (char)ch : '?';
	}
	lb[n] = 0;
	for (size_t i = 0; i + 1 < col && i < n; i++)
		cb[k++] = lb[i] == '\t' ? '\t' : ' ';
	cb[k] = 0;
	diag_printf(d, "  %s\n", lb);
	if (col - 1 <= n)
		diag_printf(d, "  %s^\n", cb);
}

static void error_at(struct asmctx *c, uint32_t file, uint32_t line, uint32_t col,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void error_at(struct asmctx *c, uint32_t file, uint32_t line, uint32_t col,
		     const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verror(c, file, line, col, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- lexer */

struct tok {
	const char *p;
	size_t n;
	uint32_t line, col;
	size_t pos;
	int bad; /* unterminated string/bracket (already reported) */
};

struct lexer {
	const char *s;
	size_t len, pos, ls;
	uint32_t line;
	uint32_t file;
	struct tok back;
	int has_back;
};

static int next_tok(struct asmctx *c, struct lexer *lx, struct tok *t)
{
	if (lx->has_back) {
		*t = lx->back;
		lx->has_back = 0;
		return 1;
	}
	for (;;) {
		while (lx->pos < lx->len && (unsigned char)lx->s[lx->pos] <= ' ') {
			if (lx->s[lx->pos] == '\n') {
				lx->line++;
				lx->ls = lx->pos + 1;
			}
			lx->pos++;
		}
		if (lx->pos >= lx->len)
			return 0;
		if (lx->s[lx->pos] == '#') {
			while (lx->pos < lx->len && lx->s[lx->pos] != '\n')
				lx->pos++;
			continue;
		}
		break;
	}
	size_t st = lx->pos;
	t->p = lx->s + st;
	t->pos = st;
	t->line = lx->line;
	t->col = (uint32_t)(st - lx->ls + 1);
	t->bad = 0;
	while (lx->pos < lx->len && (unsigned char)lx->s[lx->pos] > ' ') {
		char ch = lx->s[lx->pos];
		if (ch == '"' || ch == '[') {
			char close = ch == '"' ? '"' : ']';
			size_t open = lx->pos;
			lx->pos++;
			while (lx->pos < lx->len && lx->s[lx->pos] != close && lx->s[lx->pos] != '\n')
				lx->pos++;
			if (lx->pos >= lx->len || lx->s[lx->pos] != close) {
				error_at(c, lx->file, lx->line, (uint32_t)(open - lx->ls + 1),
					 close == '"' ? "unterminated string (missing closing '\"')"
						      : "unterminated '[' (missing ']')");
				t->bad = 1;
				break;
			}
			lx->pos++;
			continue;
		}
		if (ch == '#')
			break;
		lx->pos++;
	}
	t->n = lx->pos - st;
	return 1;
}

static void unread_tok(struct lexer *lx, const struct tok *t)
{
	lx->back = *t;
	lx->has_back = 1;
}

/* The raw rest of the token's line (after `off` bytes of the token), up to a
 * comment; the lexer skips past it. */
static void rest_of_line(struct lexer *lx, const struct tok *t, size_t off,
			 const char **p, size_t *n)
{
	size_t s = t->pos + off, e = s;
	while (e < lx->len && lx->s[e] != '\n' && lx->s[e] != '#')
		e++;
	*p = lx->s + s;
	*n = e - s;
	lx->pos = e;
	lx->has_back = 0;
}

static int tok_is(const struct tok *t, const char *w)
{
	size_t n = strlen(w);
	return t->n == n && !memcmp(t->p, w, n);
}

static int tok_starts(const struct tok *t, const char *w)
{
	size_t n = strlen(w);
	return t->n >= n && !memcmp(t->p, w, n);
}

static void tok_str(const struct tok *t, char *buf, size_t sz)
{
	size_t n = t->n < sz - 4 ? t->n : sz - 4;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)t->p[i];
		buf[k++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	if (n < t->n) {
		buf[k++] = '.';
		buf[k++] = '.';
		buf[k++] = '.';
	}
	buf[k] = 0;
}

#define TERR(c, lx, t, off, ...) \
	error_at((c), (lx)->file, (t)->line, (t)->col + (uint32_t)(off), __VA_ARGS__)

/* -------------------------------------------------------------- numbers */

static int is_ident_start(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static int is_ident(char ch)
{
	return is_ident_start(ch) || (ch >= '0' && ch <= '9');
}

/* 0 ok, -1 not a number, -2 overflows u64 */
static int parse_u64(const char *s, size_t n, uint64_t *v)
{
	uint64_t x = 0;
	if (n == 0)
		return -1;
	if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		for (size_t i = 2; i < n; i++) {
			int d;
			char ch = s[i];
			if (ch >= '0' && ch <= '9')
				d = ch - '0';
			else if (ch >= 'a' && ch <= 'f')
				d = ch - 'a' + 10;
			else if (ch >= 'A' && ch <= 'F')
				d = ch - 'A' + 10;
			else
				return -1;
			if (x >> 60)
				return -2;
			x = x * 16 + (uint64_t)d;
		}
		*v = x;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return -2;
		x = x * 10 + d;
	}
	*v = x;
	return 0;
}

/*
 * An immediate: a number or a constant of module `mod`.  Reports errors at
 * token t, column offset off.  Returns 0 and *v, or -1 (reported).
 */
static int parse_imm(struct asmctx *c, struct lexer *lx, uint32_t mod, const struct tok *t,
		     size_t off, const char *s, size_t n, uint64_t *v, const char *what)
{
	char buf[80];
	if (n == 0) {
		TERR(c, lx, t, off, "missing %s", what);
		return -1;
	}
	if (is_ident_start(s[0])) {
		for (size_t i = 0; i < n; i++)
			if (!is_ident(s[i]) ) {
				tok_str(&(struct tok){ .p = s, .n = n }, buf, 60);
				TERR(c, lx, t, off, "invalid %s '%s'", what, buf);
				return -1;
			}
		char key[300];
		if (n > 200) {
			TERR(c, lx, t, off, "undefined constant (name too long)");
			return -1;
		}
		snprintf(key, sizeof(key), "%u:%.*s", mod, (int)n, s);
		uint32_t ci;
		if (!hmap_get(&c->constmap, key, &ci)) {
			TERR(c, lx, t, off, "undefined constant '%.*s'", (int)n, s);
			return -1;
		}
		*v = c->consts[ci];
		return 0;
	}
	int r = parse_u64(s, n, v);
	if (r == 0)
		return 0;
	tok_str(&(struct tok){ .p = s, .n = n }, buf, 60);
	if (r == -2)
		TERR(c, lx, t, off, "%s '%s' is out of range (does not fit in 64 bits)", what, buf);
	else
		TERR(c, lx, t, off, "invalid %s '%s' (expected a number or a constant)", what, buf);
	return -1;
}

static int parse_field(struct asmctx *c, struct lexer *lx, uint32_t mod, const struct tok *t,
		       size_t off, const char *s, size_t n, uint64_t *v)
{
	if (parse_imm(c, lx, mod, t, off, s, n, v, "value") < 0)
		return -1;
	if (*v >= FE_P) {
		TERR(c, lx, t, off, "value %llu is out of range: field elements must be < p = 2^64 - 2^32 + 1",
		     (unsigned long long)*v);
		return -1;
	}
	return 0;
}

static int parse_range(struct asmctx *c, struct lexer *lx, uint32_t mod, const struct tok *t,
		       size_t off, const char *s, size_t n, uint64_t lo, uint64_t hi,
		       uint64_t *v, const char *what)
{
	if (parse_imm(c, lx, mod, t, off, s, n, v, what) < 0)
		return -1;
	if (*v < lo || *v > hi) {
		TERR(c, lx, t, off, "%s %llu is out of range (%llu..%llu)", what,
		     (unsigned long long)*v, (unsigned long long)lo, (unsigned long long)hi);
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------- const expressions */

struct cexpr {
	struct asmctx *c;
	struct lexer *lx;
	const struct tok *t;
	uint32_t mod;
	const char *s;
	size_t n, i, base;
	int err;
	int depth;
};

static void ce_ws(struct cexpr *e)
{
	while (e->i < e->n && (unsigned char)e->s[e->i] <= ' ')
		e->i++;
}

static uint64_t ce_expr(struct cexpr *e);

static uint64_t ce_atom(struct cexpr *e)
{
	ce_ws(e);
	if (e->err)
		return 0;
	if (e->i < e->n && e->s[e->i] == '(') {
		if (++e->depth > 32) {
			TERR(e->c, e->lx, e->t, e->base + e->i, "constant expression nested too deeply");
			e->err = 1;
			return 0;
		}
		e->i++;
		uint64_t v = ce_expr(e);
		ce_ws(e);
		if (!e->err && (e->i >= e->n || e->s[e->i] != ')')) {
			TERR(e->c, e->lx, e->t, e->base + e->i, "expected ')' in constant expression");
			e->err = 1;
		}
		e->i++;
		e->depth--;
		return v;
	}
	size_t st = e->i;
	while (e->i < e->n && (is_ident(e->s[e->i])))
		e->i++;
	if (st == e->i) {
		TERR(e->c, e->lx, e->t, e->base + st, "expected a number or constant in constant expression");
		e->err = 1;
		return 0;
	}
	uint64_t v;
	if (parse_field(e->c, e->lx, e->mod, e->t, e->base + st, e->s + st, e->i - st, &v) < 0) {
		e->err = 1;
		return 0;
	}
	return v;
}

static uint64_t ce_term(struct cexpr *e)
{
	uint64_t v = ce_atom(e);
	for (;;) {
		ce_ws(e);
		if (e->err || e->i >= e->n || (e->s[e->i] != '*' && e->s[e->i] != '/'))
			return v;
		char op = e->s[e->i++];
		size_t at = e->i;
		uint64_t r = ce_atom(e);
		if (e->err)
			return 0;
		if (op == '*') {
			v = fe_mul(v, r);
		} else {
			if (r == 0) {
				TERR(e->c, e->lx, e->t, e->base + at, "division by zero in constant expression");
				e->err = 1;
				return 0;
			}
			v = fe_mul(v, fe_inv(r));
		}
	}
}

static uint64_t ce_expr(struct cexpr *e)
{
	uint64_t v = ce_term(e);
	for (;;) {
		ce_ws(e);
		if (e->err || e->i >= e->n || (e->s[e->i] != '+' && e->s[e->i] != '-'))
			return v;
		char op = e->s[e->i++];
		uint64_t r = ce_term(e);
		if (e->err)
			return 0;
		v = op == '+' ? fe_add(v, r) : fe_sub(v, r);
	}
}

/* ---------------------------------------------------------- instructions */

enum ikind {
	K_NONE,    /* no operand */
	K_STK,     /* optional/required index lo..hi */
	K_FLD,     /* op / op2 imm (field) */
	K_SUB,     /* sub / add_imm(-b) */
	K_DIV,     /* div / mul_imm(1/b) */
	K_U32,     /* op / push_free b; op (u32) */
	K_U32NZ,   /* same, b != 0 */
	K_U32SH,   /* same, b < 32 */
	K_MEM,     /* op / push_free addr; op */
	K_LOC,     /* a = i, imm = N4 */
	K_LOCW,    /* word local: i aligned */
	K_ASSERT,  /* optional .err="msg" */
	K_PROC,    /* procedure reference */
	K_PUSH, K_EXP, K_DEBUG, K_NOP,
};

struct idef {
	const char *name;
	enum ikind kind;
	uint32_t op, op2;
	int lo, hi, def; /* K_STK: def < 0 means required */
};

static const struct idef itab[] = {
	{ "nop", K_NOP, 0, 0, 0, 0, 0 },
	{ "drop", K_NONE, OP_DROP, 0, 0, 0, 0 },
	{ "dropw", K_NONE, OP_DROPW, 0, 0, 0, 0 },
	{ "padw", K_NONE, OP_PADW, 0, 0, 0, 0 },
	{ "dup", K_STK, OP_DUP, 0, 0, 15, 0 },
	{ "dupw", K_STK, OP_DUPW, 0, 0, 3, 0 },
	{ "swap", K_STK, OP_SWAP, 0, 1, 15, 1 },
	{ "swapw", K_STK, OP_SWAPW, 0, 1, 3, 1 },
	{ "swapdw", K_NONE, OP_SWAPDW, 0, 0, 0, 0 },
	{ "movup", K_STK, OP_MOVUP, 0, 2, 15, -1 },
	{ "movdn", K_STK, OP_MOVDN, 0, 2, 15, -1 },
	{ "movupw", K_STK, OP_MOVUPW, 0, 2, 3, -1 },
	{ "movdnw", K_STK, OP_MOVDNW, 0, 2, 3, -1 },
	{ "cswap", K_NONE, OP_CSWAP, 0, 0, 0, 0 },
	{ "cswapw", K_NONE, OP_CSWAPW, 0, 0, 0, 0 },
	{ "cdrop", K_NONE, OP_CDROP, 0, 0, 0, 0 },
	{ "cdropw", K_NONE, OP_CDROPW, 0, 0, 0, 0 },
	{ "push", K_PUSH, OP_PUSH, 0, 0, 0, 0 },
	{ "sdepth", K_NONE, OP_SDEPTH, 0, 0, 0, 0 },
	{ "add", K_FLD, OP_ADD, OP_ADD_IMM, 0, 0, 0 },
	{ "sub", K_SUB, OP_SUB, OP_ADD_IMM, 0, 0, 0 },
	{ "mul", K_FLD, OP_MUL, OP_MUL_IMM, 0, 0, 0 },
	{ "div", K_DIV, OP_DIV, OP_MUL_IMM, 0, 0, 0 },
	{ "neg", K_NONE, OP_NEG, 0, 0, 0, 0 },
	{ "inv", K_NONE, OP_INV, 0, 0, 0, 0 },
	{ "pow2", K_NONE, OP_POW2, 0, 0, 0, 0 },
	{ "exp", K_EXP, OP_EXP, 0, 0, 0, 0 },
	{ "incr", K_NONE, OP_INCR, 0, 0, 0, 0 },
	{ "eq", K_FLD, OP_EQ, OP_EQ_IMM, 0, 0, 0 },
	{ "neq", K_FLD, OP_NEQ, OP_NEQ_IMM, 0, 0, 0 },
	{ "lt", K_FLD, OP_LT, OP_PUSH_FREE, 0, 0, 0 },
	{ "lte", K_FLD, OP_LTE, OP_PUSH_FREE, 0, 0, 0 },
	{ "gt", K_FLD, OP_GT, OP_PUSH_FREE, 0, 0, 0 },
	{ "gte", K_FLD, OP_GTE, OP_PUSH_FREE, 0, 0, 0 },
	{ "eqw", K_NONE, OP_EQW, 0, 0, 0, 0 },
	{ "is_odd", K_NONE, OP_IS_ODD, 0, 0, 0, 0 },
	{ "not", K_NONE, OP_NOT, 0, 0, 0, 0 },
	{ "and", K_NONE, OP_AND, 0, 0, 0, 0 },
	{ "or", K_NONE, OP_OR, 0, 0, 0, 0 },
	{ "xor", K_NONE, OP_XOR, 0, 0, 0, 0 },
	{ "u32assert", K_ASSERT, OP_U32ASSERT, 0, 0, 0, 0 },
	{ "u32assert2", K_ASSERT, OP_U32ASSERT2, 0, 0, 0, 0 },
	{ "u32assertw", K_ASSERT, OP_U32ASSERTW, 0, 0, 0, 0 },
	{ "u32test", K_NONE, OP_U32TEST, 0, 0, 0, 0 },
	{ "u32testw", K_NONE, OP_U32TESTW, 0, 0, 0, 0 },
	{ "u32cast", K_NONE, OP_U32CAST, 0, 0, 0, 0 },
	{ "u32split", K_NONE, OP_U32SPLIT, 0, 0, 0, 0 },
	{ "u32wrapping_add", K_U32, OP_U32WRAPPING_ADD, 0, 0, 0, 0 },
	{ "u32wrapping_sub", K_U32, OP_U32WRAPPING_SUB, 0, 0, 0, 0 },
	{ "u32wrapping_mul", K_U32, OP_U32WRAPPING_MUL, 0, 0, 0, 0 },
	{ "u32overflowing_add", K_U32, OP_U32OVERFLOWING_ADD, 0, 0, 0, 0 },
	{ "u32overflowing_sub", K_U32, OP_U32OVERFLOWING_SUB, 0, 0, 0, 0 },
	{ "u32widening_add", K_U32, OP_U32WIDENING_ADD, 0, 0, 0, 0 },
	{ "u32widening_mul", K_U32, OP_U32WIDENING_MUL, 0, 0, 0, 0 },
	{ "u32div", K_U32NZ, OP_U32DIV, 0, 0, 0, 0 },
	{ "u32mod", K_U32NZ, OP_U32MOD, 0, 0, 0, 0 },
	{ "u32divmod", K_U32NZ, OP_U32DIVMOD, 0, 0, 0, 0 },
	{ "u32and", K_U32, OP_U32AND, 0, 0, 0, 0 },
	{ "u32or", K_U32, OP_U32OR, 0, 0, 0, 0 },
	{ "u32xor", K_U32, OP_U32XOR, 0, 0, 0, 0 },
	{ "u32not", K_NONE, OP_U32NOT, 0, 0, 0, 0 },
	{ "u32shl", K_U32SH, OP_U32SHL, 0, 0, 0, 0 },
	{ "u32shr", K_U32SH, OP_U32SHR, 0, 0, 0, 0 },
	{ "u32rotl", K_U32SH, OP_U32ROTL, 0, 0, 0, 0 },
	{ "u32rotr", K_U32SH, OP_U32ROTR, 0, 0, 0, 0 },
	{ "u32popcnt", K_NONE, OP_U32POPCNT, 0, 0, 0, 0 },
	{ "u32clz", K_NONE, OP_U32CLZ, 0, 0, 0, 0 },
	{ "u32ctz", K_NONE, OP_U32CTZ, 0, 0, 0, 0 },
	{ "u32clo", K_NONE, OP_U32CLO, 0, 0, 0, 0 },
	{ "u32cto", K_NONE, OP_U32CTO, 0, 0, 0, 0 },
	{ "u32lt", K_U32, OP_U32LT, 0, 0, 0, 0 },
	{ "u32lte", K_U32, OP_U32LTE, 0, 0, 0, 0 },
	{ "u32gt", K_U32, OP_U32GT, 0, 0, 0, 0 },
	{ "u32gte", K_U32, OP_U32GTE, 0, 0, 0, 0 },
	{ "u32min", K_U32, OP_U32MIN, 0, 0, 0, 0 },
	{ "u32max", K_U32, OP_U32MAX, 0, 0, 0, 0 },
	{ "assert", K_ASSERT, OP_ASSERT, 0, 0, 0, 0 },
	{ "assertz", K_ASSERT, OP_ASSERTZ, 0, 0, 0, 0 },
	{ "assert_eq", K_ASSERT, OP_ASSERT_EQ, 0, 0, 0, 0 },
	{ "assert_eqw", K_ASSERT, OP_ASSERT_EQW, 0, 0, 0, 0 },
	{ "mem_load", K_MEM, OP_MEM_LOAD, 0, 0, 0, 0 },
	{ "mem_store", K_MEM, OP_MEM_STORE, 0, 0, 0, 0 },
	{ "mem_loadw", K_MEM, OP_MEM_LOADW_BE, 0, 0, 0, 0 },
	{ "mem_storew", K_MEM, OP_MEM_STOREW_BE, 0, 0, 0, 0 },
	{ "mem_loadw_be", K_MEM, OP_MEM_LOADW_BE, 0, 0, 0, 0 },
	{ "mem_loadw_le", K_MEM, OP_MEM_LOADW_LE, 0, 0, 0, 0 },
	{ "mem_storew_be", K_MEM, OP_MEM_STOREW_BE, 0, 0, 0, 0 },
	{ "mem_storew_le", K_MEM, OP_MEM_STOREW_LE, 0, 0, 0, 0 },
	{ "loc_load", K_LOC, OP_LOC_LOAD, 0, 0, 0, 0 },
	{ "loc_store", K_LOC, OP_LOC_STORE, 0, 0, 0, 0 },
	{ "loc_loadw", K_LOCW, OP_LOC_LOADW_BE, 0, 0, 0, 0 },
	{ "loc_storew", K_LOCW, OP_LOC_STOREW_BE, 0, 0, 0, 0 },
	{ "loc_loadw_be", K_LOCW, OP_LOC_LOADW_BE, 0, 0, 0, 0 },
	{ "loc_loadw_le", K_LOCW, OP_LOC_LOADW_LE, 0, 0, 0, 0 },
	{ "loc_storew_be", K_LOCW, OP_LOC_STOREW_BE, 0, 0, 0, 0 },
	{ "loc_storew_le", K_LOCW, OP_LOC_STOREW_LE, 0, 0, 0, 0 },
	{ "locaddr", K_LOC, OP_LOCADDR, 0, 0, 0, 0 },
	{ "exec", K_PROC, OP_EXEC, 0, 0, 0, 0 },
	{ "call", K_PROC, OP_CALL, 0, 0, 0, 0 },
	{ "syscall", K_PROC, OP_SYSCALL, 0, 0, 0, 0 },
	{ "delegatecall", K_PROC, OP_DELEGATECALL, 0, 0, 0, 0 },
	{ "procref", K_PROC, OP_PROCREF, 0, 0, 0, 0 },
	{ "dynexec", K_NONE, OP_DYNEXEC, 0, 0, 0, 0 },
	{ "dyncall", K_NONE, OP_DYNCALL, 0, 0, 0, 0 },
	{ "dyndelegatecall", K_NONE, OP_DYNDELEGATECALL, 0, 0, 0, 0 },
	{ "caller", K_NONE, OP_CALLER, 0, 0, 0, 0 },
	{ "debug", K_DEBUG, OP_DEBUG_STACK, 0, 0, 0, 0 },
};

static void emit(struct asmctx *c, struct pproc *p, uint32_t op, uint32_t a, uint64_t imm,
		 uint32_t file, const struct tok *t)
{
	if (c->totalcode >= MAX_CODE) {
		if (c->totalcode == MAX_CODE)
			error_at(c, file, t->line, t->col, "program too large (more than %u instructions)",
				 MAX_CODE);
		c->totalcode = MAX_CODE + 1;
		return;
	}
	if (p->n >= p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->code = xrealloc(p->code, (size_t)p->cap * sizeof(*p->code));
		p->locs = xrealloc(p->locs, (size_t)p->cap * sizeof(*p->locs));
	}
	p->code[p->n] = (struct ctx_insn){ .op = op, .a = a, .imm = imm };
	p->locs[p->n] = (struct ctx_srcloc){ .file = file, .line = t->line, .col = t->col };
	p->n++;
	c->totalcode++;
}

static uint32_t add_string(struct asmctx *c, const char *s, size_t n)
{
	GROW(c->strings, c->nstrings, c->capstrings);
	c->strings[c->nstrings++] = xstrndup(s, n);
	return c->nstrings; /* 1-based id */
}

static void parse_insn(struct asmctx *c, struct lexer *lx, uint32_t mod, uint32_t pi,
		       const struct tok *t)
{
	struct pproc *p = &c->procs[pi];
	uint32_t f = lx->file;
	char name[40], buf[80];
	size_t nl = 0;
	while (nl < t->n && t->p[nl] != '.')
		nl++;
	const char *arg = nl < t->n ? t->p + nl + 1 : NULL;
	size_t an = arg ? t->n - nl - 1 : 0;
	size_t aoff = nl + 1;
	uint32_t ii;
	uint64_t v;

	if (t->bad)
		return;
	if (nl < sizeof(name)) {
		memcpy(name, t->p, nl);
		name[nl] = 0;
	} else {
		name[0] = 0;
	}
	if (nl >= sizeof(name) || !hmap_get(&c->insnmap, name, &ii)) {
		tok_str(t, buf, 60);
		TERR(c, lx, t, 0, "unknown instruction '%s'", buf);
		return;
	}
	const struct idef *d = &itab[ii];

	if (d->kind != K_PROC && d->kind != K_ASSERT && d->kind != K_PUSH && arg &&
	    memchr(arg, '.', an) && d->kind != K_DEBUG) {
		tok_str(t, buf, 60);
		TERR(c, lx, t, 0, "invalid operand in '%s'", buf);
		return;
	}
	switch (d->kind) {
	case K_NOP:
		if (arg)
			TERR(c, lx, t, aoff, "'nop' takes no operand");
		return;
	case K_NONE:
		if (arg) {
			TERR(c, lx, t, aoff, "'%s' takes no operand", name);
			return;
		}
		emit(c, p, d->op, 0, 0, f, t);
		return;
	case K_STK:
		if (!arg) {
			if (d->def < 0) {
				TERR(c, lx, t, 0, "'%s' needs an operand (%s.n, n in %d..%d)", name, name,
				     d->lo, d->hi);
				return;
			}
			emit(c, p, d->op, (uint32_t)d->def, 0, f, t);
			return;
		}
		if (parse_range(c, lx, mod, t, aoff, arg, an, (uint64_t)d->lo, (uint64_t)d->hi, &v,
				"stack index") < 0)
			return;
		emit(c, p, d->op, (uint32_t)v, 0, f, t);
		return;
	case K_FLD:
	case K_SUB:
	case K_DIV:
		if (!arg) {
			emit(c, p, d->op, 0, 0, f, t);
			return;
		}
		if (parse_field(c, lx, mod, t, aoff, arg, an, &v) < 0)
			return;
		if (d->kind == K_SUB)
			v = fe_neg(v);
		if (d->kind == K_DIV) {
			if (v == 0) {
				TERR(c, lx, t, aoff, "division by zero: 'div.0'");
				return;
			}
			v = fe_inv(v);
		}
		emit(c, p, d->op2, 0, v, f, t);
		if (d->op2 == OP_PUSH_FREE) /* lt.b etc: PUSH_FREE b; op */
			emit(c, p, d->op, 0, 0, f, t);
		return;
	case K_U32:
	case K_U32NZ:
	case K_U32SH:
		if (!arg) {
			emit(c, p, d->op, 0, 0, f, t);
			return;
		}
		if (parse_range(c, lx, mod, t, aoff, arg, an, 0,
				d->kind == K_U32SH ? 31 : 0xFFFFFFFFull, &v,
				d->kind == K_U32SH ? "shift amount" : "u32 immediate") < 0)
			return;
		if (d->kind == K_U32NZ && v == 0) {
			TERR(c, lx, t, aoff, "division by zero: '%s.0'", name);
			return;
		}
		emit(c, p, OP_PUSH_FREE, 0, v, f, t);
		emit(c, p, d->op, 0, 0, f, t);
		return;
	case K_MEM:
		if (!arg) {
			emit(c, p, d->op, 0, 0, f, t);
			return;
		}
		if (parse_range(c, lx, mod, t, aoff, arg, an, 0, 0xFFFFFFFFull, &v, "memory address") < 0)
			return;
		emit(c, p, OP_PUSH_FREE, 0, v, f, t);
		emit(c, p, d->op, 0, 0, f, t);
		return;
	case K_LOC:
	case K_LOCW:
		if (!arg) {
			TERR(c, lx, t, 0, "'%s' needs a local index (%s.i)", name, name);
			return;
		}
		if (parse_imm(c, lx, mod, t, aoff, arg, an, &v, "local index") < 0)
			return;
		if (v >= p->nlocals) {
			if (p->nlocals == 0)
				TERR(c, lx, t, aoff, "local index %llu out of range: %s has no locals",
				     (unsigned long long)v, pi == (uint32_t)c->main_proc ? "begin..end" : "this procedure");
			else
				TERR(c, lx, t, aoff, "local index %llu out of range: the procedure has %u locals (0..%u)",
				     (unsigned long long)v, p->nlocals, p->nlocals - 1);
			return;
		}
		if (d->kind == K_LOCW && v % 4) {
			TERR(c, lx, t, aoff, "local index %llu of a word access must be a multiple of 4",
			     (unsigned long long)v);
			return;
		}
		emit(c, p, d->op, (uint32_t)v, (p->nlocals + 3u) & ~3u, f, t);
		return;
	case K_ASSERT: {
		uint32_t id = 0;
		if (arg) {
			if (an >= 6 && !memcmp(arg, "err=\"", 5) && arg[an - 1] == '"') {
				const char *ms = arg + 5;
				size_t mn = an - 6;
				if (memchr(ms, 0, mn) || memchr(ms, '"', mn)) {
					TERR(c, lx, t, aoff, "invalid error message string");
					return;
				}
				id = add_string(c, ms, mn);
			} else {
				TERR(c, lx, t, aoff, "expected .err=\"message\" after '%s'", name);
				return;
			}
		}
		emit(c, p, d->op, id, 0, f, t);
		return;
	}
	case K_PROC: {
		if (!arg || an == 0) {
			TERR(c, lx, t, 0, "'%s' needs a procedure name (%s.name)", name, name);
			return;
		}
		for (size_t i = 0; i < an; i++) {
			if (!is_ident(arg[i]) && arg[i] != ':' && arg[i] != '$') {
				tok_str(t, buf, 60);
				TERR(c, lx, t, aoff + i, "invalid procedure name in '%s'", buf);
				return;
			}
		}
		GROW(c->refs, c->nrefs, c->caprefs);
		c->refs[c->nrefs] = (struct ref){ .name = xstrndup(arg, an), .mod = mod, .op = d->op,
			.loc = { f, t->line, t->col + (uint32_t)aoff }, .target = -1 };
		emit(c, p, d->op, c->nrefs, 0, f, t);
		c->nrefs++;
		return;
	}
	case K_EXP:
		if (!arg) {
			emit(c, p, OP_EXP, 0, 0, f, t);
			return;
		}
		if (arg[0] == 'u' && an > 1 && arg[1] >= '0' && arg[1] <= '9') {
			if (parse_range(c, lx, mod, t, aoff + 1, arg + 1, an - 1, 1, 64, &v, "exponent bit length") < 0)
				return;
			emit(c, p, OP_EXP_BITS, (uint32_t)v, 0, f, t);
			return;
		}
		if (parse_field(c, lx, mod, t, aoff, arg, an, &v) < 0)
			return;
		emit(c, p, OP_EXP_IMM, 0, v, f, t);
		return;
	case K_DEBUG:
		if (!arg || !(an == 5 ? !memcmp(arg, "stack", 5) : (an > 6 && !memcmp(arg, "stack.", 6)))) {
			TERR(c, lx, t, 0, "unknown debug instruction (expected 'debug.stack')");
			return;
		}
		emit(c, p, OP_DEBUG_STACK, 0, 0, f, t);
		return;
	case K_PUSH: {
		if (!arg || an == 0) {
			TERR(c, lx, t, 0, "'push' needs a value (push.a[.b...])");
			return;
		}
		uint64_t vals[17];
		int nv = 0, ok = 1;
		if (arg[0] == '[') {
			if (arg[an - 1] != ']') {
				TERR(c, lx, t, aoff, "expected ']' at the end of push.[...]");
				return;
			}
			size_t i = 1;
			while (i < an - 1 && nv <= 4) {
				while (i < an - 1 && (unsigned char)arg[i] <= ' ')
					i++;
				size_t s = i;
				while (i < an - 1 && arg[i] != ',' && (unsigned char)arg[i] > ' ')
					i++;
				size_t e = i;
				while (i < an - 1 && (unsigned char)arg[i] <= ' ')
					i++;
				if (nv < 4 && parse_field(c, lx, mod, t, aoff + s, arg + s, e - s, &vals[nv]) < 0)
					ok = 0;
				nv++;
				if (i < an - 1 && arg[i] == ',')
					i++;
				else if (i < an - 1) {
					TERR(c, lx, t, aoff + i, "expected ',' in push.[...]");
					return;
				}
			}
			if (nv != 4) {
				TERR(c, lx, t, aoff, "push.[...] takes exactly 4 values (a word)");
				return;
			}
			if (!ok)
				return;
			emit(c, p, OP_PUSH, 0, vals[3], f, t);
			for (int k = 2; k >= 0; k--)
				emit(c, p, OP_PUSH_FREE, 0, vals[k], f, t);
			return;
		}
		size_t i = 0;
		for (;;) {
			size_t s = i;
			while (i < an && arg[i] != '.')
				i++;
			if (nv >= 16) {
				TERR(c, lx, t, aoff + s, "too many values for 'push' (at most 16)");
				return;
			}
			if (parse_field(c, lx, mod, t, aoff + s, arg + s, i - s, &vals[nv]) < 0)
				ok = 0;
			nv++;
			if (i >= an)
				break;
			i++;
		}
		if (!ok)
			return;
		emit(c, p, OP_PUSH, 0, vals[0], f, t);
		for (int k = 1; k < nv; k++)
			emit(c, p, OP_PUSH_FREE, 0, vals[k], f, t);
		return;
	}
	}
}

/* --------------------------------------------------------------- bodies */

/*
 * A repeat body in which nothing costs gas (empty, nop, debug.stack, or only
 * such repeats) would loop up to 2^32 times per level for free: it runs once.
 */
static void free_repeat_runs_once(struct pproc *p, uint32_t start)
{
	for (uint32_t i = start + 1; i + 1 < p->n; i++)
		if (ctx_op_gas[p->code[i].op] > 0)
			return;
	p->code[start].imm = 1;
}

enum bkind { B_IF, B_WHILE, B_REPEAT };

struct blk {
	enum bkind kind;
	uint32_t start;
	uint32_t jmp;
	int has_else;
	struct tok t;
};

static int is_toplevel_kw(const struct tok *t)
{
	return tok_is(t, "begin") || tok_starts(t, "proc.") || tok_is(t, "proc") ||
	       tok_starts(t, "export.") || tok_is(t, "export") || tok_is(t, "pub") ||
	       tok_starts(t, "use.") || tok_is(t, "use") || tok_starts(t, "const.") ||
	       tok_is(t, "const") || tok_starts(t, "@locals");
}

static int is_block_open(const struct tok *t)
{
	return tok_starts(t, "if.") || tok_starts(t, "while.") || tok_starts(t, "repeat.");
}

static void parse_body(struct asmctx *c, struct lexer *lx, uint32_t mod, uint32_t pi,
		       const struct tok *opener, const char *what)
{
	struct blk stack[MAX_DEPTH];
	int depth = 0;
	uint64_t skip = 0;
	struct tok t;
	uint32_t f = lx->file;

	while (!c->stop) {
		struct pproc *p = &c->procs[pi];
		if (!next_tok(c, lx, &t)) {
			if (depth > 0) {
				struct tok *o = &stack[depth - 1].t;
				char b[60];
				tok_str(o, b, 40);
				TERR(c, lx, o, 0, "unterminated block: '%s' has no matching 'end'", b);
			} else {
				TERR(c, lx, opener, 0, "unterminated %s: missing 'end'", what);
			}
			break;
		}
		if (skip) {
			if (is_block_open(&t))
				skip++;
			else if (tok_is(&t, "end"))
				skip--;
			continue;
		}
		if (is_toplevel_kw(&t)) {
			if (depth > 0) {
				struct tok *o = &stack[depth - 1].t;
				char b[60];
				tok_str(o, b, 40);
				TERR(c, lx, o, 0, "unterminated block: '%s' has no matching 'end'", b);
			} else {
				TERR(c, lx, opener, 0, "unterminated %s: missing 'end' before '%.*s' at line %u",
				     what, (int)(t.n > 20 ? 20 : t.n), t.p, t.line);
			}
			unread_tok(lx, &t);
			break;
		}
		if (tok_is(&t, "end")) {
			if (depth == 0) {
				emit(c, p, OP_RET, 0, 0, f, &t);
				return;
			}
			struct blk *b = &stack[--depth];
			uint32_t here = p->n;
			switch (b->kind) {
			case B_IF:
				if (b->has_else)
					p->code[b->jmp].a = here;
				else
					p->code[b->start].a = here;
				break;
			case B_WHILE:
				emit(c, p, OP_JMP, b->start, 0, f, &t);
				p->code[b->start].a = p->n;
				break;
			case B_REPEAT:
				emit(c, p, OP_REPEAT_END, b->start + 1, 0, f, &t);
				p->code[b->start].a = p->n - 1;
				free_repeat_runs_once(p, b->start);
				break;
			}
			continue;
		}
		if (tok_is(&t, "else")) {
			if (depth == 0 || stack[depth - 1].kind != B_IF || stack[depth - 1].has_else) {
				TERR(c, lx, &t, 0, "'else' without a matching 'if.true'/'if.false'");
				continue;
			}
			struct blk *b = &stack[depth - 1];
			b->has_else = 1;
			b->jmp = p->n;
			emit(c, p, OP_JMP, 0, 0, f, &t);
			p->code[b->start].a = p->n;
			continue;
		}
		if (is_block_open(&t)) {
			struct blk b = { .start = p->n, .t = t };
			uint32_t op = 0;
			uint64_t imm = 0;
			if (tok_is(&t, "if.true")) {
				b.kind = B_IF;
				op = OP_IF_TRUE;
			} else if (tok_is(&t, "if.false")) {
				b.kind = B_IF;
				op = OP_IF_FALSE;
			} else if (tok_is(&t, "while.true")) {
				b.kind = B_WHILE;
				op = OP_WHILE;
			} else if (tok_starts(&t, "repeat.")) {
				b.kind = B_REPEAT;
				op = OP_REPEAT;
				if (parse_range(c, lx, mod, &t, 7, t.p + 7, t.n - 7, 1, 0xFFFFFFFFull, &imm,
						"repeat count") < 0)
					imm = 1;
			} else {
				char bb[60];
				tok_str(&t, bb, 40);
				TERR(c, lx, &t, 0, "unknown block '%s' (expected if.true, if.false, while.true or repeat.N)", bb);
				b.kind = B_IF;
				op = OP_IF_TRUE;
			}
			if (depth >= MAX_DEPTH) {
				TERR(c, lx, &t, 0, "blocks nested too deeply (at most %d)", MAX_DEPTH);
				skip = 1;
				continue;
			}
			stack[depth++] = b;
			emit(c, p, op, 0, imm, f, &t);
			continue;
		}
		parse_insn(c, lx, mod, pi, &t);
	}
	/* unterminated: close everything so the code stays well formed */
	struct pproc *p = &c->procs[pi];
	while (depth > 0) {
		struct blk *b = &stack[--depth];
		if (b->kind == B_IF) {
			if (b->has_else)
				p->code[b->jmp].a = p->n;
			else
				p->code[b->start].a = p->n;
		} else if (b->kind == B_WHILE) {
			emit(c, p, OP_JMP, b->start, 0, f, opener);
			p->code[b->start].a = p->n;
		} else {
			emit(c, p, OP_REPEAT_END, b->start + 1, 0, f, opener);
			p->code[b->start].a = p->n - 1;
		}
	}
	emit(c, p, OP_RET, 0, 0, f, opener);
}

/* -------------------------------------------------------------- modules */

static int32_t add_file(struct asmctx *c, const char *name, char *text, size_t len)
{
	GROW(c->files, c->nfiles, c->capfiles);
	c->files[c->nfiles] = (struct file){ .name = xstrndup(name, strlen(name)), .text = text, .len = len };
	return (int32_t)c->nfiles++;
}

/* Reads a whole file; on failure returns NULL and sets *err. */
static char *read_file(const char *path, size_t *len, int *err)
{
	FILE *fp = fopen(path, "rb");
	struct stat st;
	if (!fp) {
		*err = errno;
		return NULL;
	}
	if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(fp);
		*err = EISDIR;
		return NULL;
	}
	size_t cap = 4096, n = 0;
	char *buf = xrealloc(NULL, cap);
	for (;;) {
		if (n == cap) {
			if (cap >= MAX_FILE) {
				free(buf);
				fclose(fp);
				*err = EFBIG;
				return NULL;
			}
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		size_t r = fread(buf + n, 1, cap - n, fp);
		if (r == 0) {
			if (ferror(fp)) {
				*err = errno ? errno : EIO;
				free(buf);
				fclose(fp);
				return NULL;
			}
			break;
		}
		n += r;
	}
	fclose(fp);
	*len = n;
	return buf;
}

static uint32_t add_module(struct asmctx *c, const char *path, uint32_t file, enum mod_kind kind)
{
	GROW(c->mods, c->nmods, c->capmods);
	c->mods[c->nmods] = (struct module){ .path = xstrndup(path, strlen(path)), .file = file, .kind = kind };
	hmap_put(&c->modmap, path, c->nmods);
	return c->nmods++;
}

static void parse_use(struct asmctx *c, struct lexer *lx, uint32_t mod, const struct tok *t)
{
	const char *s;
	size_t n;
	rest_of_line(lx, t, 3, &s, &n);
	size_t off = 3;
	/* skip '.' or spaces */
	size_t i = 0;
	if (n && s[0] == '.')
		i++;
	while (i < n && (unsigned char)s[i] <= ' ')
		i++;
	size_t ps = i;
	while (i < n && (is_ident(s[i]) || s[i] == ':'))
		i++;
	size_t pe = i;
	while (i < n && (unsigned char)s[i] <= ' ')
		i++;
	size_t as = 0, ae = 0;
	if (i + 1 < n && s[i] == '-' && s[i + 1] == '>') {
		i += 2;
		while (i < n && (unsigned char)s[i] <= ' ')
			i++;
		as = i;
		while (i < n && is_ident(s[i]))
			i++;
		ae = i;
		while (i < n && (unsigned char)s[i] <= ' ')
			i++;
		if (as == ae) {
			TERR(c, lx, t, off + as, "expected an alias after '->'");
			return;
		}
	}
	if (pe == ps || i < n || pe - ps > 200) {
		TERR(c, lx, t, off + (pe == ps ? ps : i), "malformed 'use' (expected use.a::b or use a::b[->alias])");
		return;
	}
	/* validate path components */
	char path[256], rel[300];
	memcpy(path, s + ps, pe - ps);
	path[pe - ps] = 0;
	size_t rl = 0;
	const char *last = path;
	for (char *q = path; *q;) {
		char *sep = strstr(q, "::");
		size_t cl = sep ? (size_t)(sep - q) : strlen(q);
		if (cl == 0 || memchr(q, ':', cl)) {
			TERR(c, lx, t, off + ps, "malformed module path '%s'", path);
			return;
		}
		last = q;
		rl += (size_t)snprintf(rel + rl, sizeof(rel) - rl, "%s%.*s", rl ? "/" : "", (int)cl, q);
		q = sep ? sep + 2 : q + cl;
	}
	char alias[256];
	if (ae > as)
		snprintf(alias, sizeof(alias), "%.*s", (int)(ae - as), s + as);
	else
		snprintf(alias, sizeof(alias), "%s", last);
	struct module *m = &c->mods[mod];
	for (uint32_t k = 0; k < m->nuses; k++) {
		if (!strcmp(m->uses[k].alias, alias)) {
			TERR(c, lx, t, off + ps, "module alias '%s' is already used", alias);
			return;
		}
	}
	int32_t target = -1;
	uint32_t mi;
	if (hmap_get(&c->modmap, path, &mi)) {
		target = (int32_t)mi;
	} else {
		for (size_t d = 0; d < c->opts->nlib_dirs && target < 0; d++) {
			char fp[4096];
			snprintf(fp, sizeof(fp), "%s/%s.masm", c->opts->lib_dirs[d], rel);
			struct stat st;
			if (stat(fp, &st) != 0 || !S_ISREG(st.st_mode))
				continue;
			size_t len = 0;
			int err = 0;
			char *text = read_file(fp, &len, &err);
			if (!text) {
				TERR(c, lx, t, off + ps, "cannot read module '%s' (%s): %s", path, fp, strerror(err));
				target = -2;
				break;
			}
			int32_t fi = add_file(c, fp, text, len);
			target = (int32_t)add_module(c, path, (uint32_t)fi, MOD_LIB);
		}
		if (target == -1)
			TERR(c, lx, t, off + ps, "undefined module '%s': no %s.masm in any --lib directory", path, rel);
		if (target < 0)
			target = -1;
	}
	m = &c->mods[mod];
	GROW(m->uses, m->nuses, m->capuses);
	m->uses[m->nuses++] = (struct use_ent){ .alias = xstrndup(alias, strlen(alias)), .mod = target };
}

static void parse_const(struct asmctx *c, struct lexer *lx, uint32_t mod, const struct tok *t)
{
	const char *s;
	size_t n;
	rest_of_line(lx, t, 5, &s, &n);
	size_t off = 5, i = 0;
	if (n && s[0] == '.')
		i++;
	while (i < n && (unsigned char)s[i] <= ' ')
		i++;
	size_t ns = i;
	while (i < n && is_ident(s[i]))
		i++;
	size_t ne = i;
	while (i < n && (unsigned char)s[i] <= ' ')
		i++;
	if (ne == ns || !is_ident_start(s[ns]) || i >= n || s[i] != '=' || ne - ns > 200) {
		TERR(c, lx, t, off + i, "malformed constant (expected const.NAME=value or const NAME = value)");
		return;
	}
	i++;
	struct cexpr e = { .c = c, .lx = lx, .t = t, .mod = mod, .s = s + i, .n = n - i, .base = off + i };
	uint64_t v = ce_expr(&e);
	ce_ws(&e);
	if (!e.err && e.i < e.n)
		TERR(c, lx, t, e.base + e.i, "unexpected text in constant expression");
	/* a bad value is still defined (as 0), so its uses do not cascade */
	char key[300];
	snprintf(key, sizeof(key), "%u:%.*s", mod, (int)(ne - ns), s + ns);
	uint32_t dummy;
	if (hmap_get(&c->constmap, key, &dummy)) {
		TERR(c, lx, t, off + ns, "constant '%.*s' is already defined", (int)(ne - ns), s + ns);
		return;
	}
	if (e.err || e.i < e.n)
		v = 0;
	GROW(c->consts, c->nconsts, c->capconsts);
	c->consts[c->nconsts] = v;
	hmap_put(&c->constmap, key, c->nconsts++);
}

static uint32_t new_proc(struct asmctx *c, uint32_t mod, const char *name, uint32_t nlocals,
			 uint32_t flags, uint32_t file, const struct tok *t)
{
	GROW(c->procs, c->nprocs, c->capprocs);
	struct pproc *p = &c->procs[c->nprocs];
	memset(p, 0, sizeof(*p));
	const struct module *m = &c->mods[mod];
	char qn[600];
	if (flags & PROC_ENTRY)
		snprintf(qn, sizeof(qn), "#main");
	else if (m->kind == MOD_ROOT)
		snprintf(qn, sizeof(qn), "%s", name);
	else if (m->kind == MOD_KERNEL)
		snprintf(qn, sizeof(qn), "#kernel::%s", name);
	else
		snprintf(qn, sizeof(qn), "%s::%s", m->path, name);
	p->name = xstrndup(qn, strlen(qn));
	p->mod = mod;
	p->nlocals = nlocals;
	p->flags = flags;
	p->loc = (struct ctx_srcloc){ file, t->line, t->col };
	return c->nprocs++;
}

static void parse_proc(struct asmctx *c, struct lexer *lx, uint32_t mod, const struct tok *t,
		       int has_pending, uint32_t pending_locals)
{
	struct module *m = &c->mods[mod];
	struct tok nt = { 0 };
	const struct tok *nametok = t;
	const char *name;
	size_t nn;
	int exported = 0;
	uint32_t nlocals = has_pending ? pending_locals : 0;
	size_t noff = 0;

	if (tok_starts(t, "proc.") || tok_starts(t, "export.")) {
		exported = t->p[0] == 'e';
		noff = exported ? 7 : 5;
		name = t->p + noff;
		size_t i = 0;
		while (noff + i < t->n && t->p[noff + i] != '.')
			i++;
		nn = i;
		if (noff + i < t->n) {
			uint64_t v;
			size_t lo = noff + i + 1;
			if (has_pending)
				TERR(c, lx, t, lo, "locals given twice (@locals and .N)");
			if (parse_imm(c, lx, mod, t, lo, t->p + lo, t->n - lo, &v, "local count") == 0) {
				if (v > MAX_LOCALS)
					TERR(c, lx, t, lo, "too many locals: %llu (at most %u)",
					     (unsigned long long)v, MAX_LOCALS);
				else
					nlocals = (uint32_t)v;
			}
		}
	} else {
		if (tok_is(t, "pub")) {
			exported = 1;
			if (!next_tok(c, lx, &nt) || !tok_is(&nt, "proc")) {
				TERR(c, lx, t, 0, "expected 'proc' after 'pub'");
				if (nt.p && nt.line)
					unread_tok(lx, &nt);
				return;
			}
		} else if (tok_is(t, "export")) {
			exported = 1;
		}
		if (!next_tok(c, lx, &nt) || nt.line != t->line) {
			TERR(c, lx, t, 0, "expected a procedure name");
			return;
		}
		nametok = &nt;
		name = nt.p;
		nn = nt.n;
		/* tolerate a trailing signature-less '()' */
		if (nn > 2 && name[nn - 2] == '(' && name[nn - 1] == ')')
			nn -= 2;
	}
	int bad = nn == 0 || nn > 200 || !is_ident_start(name[0]);
	for (size_t i = 0; i < nn && !bad; i++)
		bad = !is_ident(name[i]);
	char pname[256];
	snprintf(pname, sizeof(pname), "%.*s", bad ? 0 : (int)nn, name);
	if (bad) {
		TERR(c, lx, nametok, noff, "invalid procedure name");
		snprintf(pname, sizeof(pname), "#bad%u", c->nprocs);
	}
	uint32_t flags = exported ? PROC_EXPORTED : 0;
	if (m->kind == MOD_KERNEL)
		flags |= PROC_KERNEL | (exported ? PROC_KERNEL_EXPORT : 0);
	uint32_t pi = new_proc(c, mod, pname, nlocals, flags, lx->file, t);
	char key[300];
	snprintf(key, sizeof(key), "%u:%s", mod, pname);
	uint32_t prev;
	if (!bad && hmap_get(&c->procmap, key, &prev)) {
		TERR(c, lx, nametok, noff, "duplicate procedure '%s' (first defined at line %u)", pname,
		     c->procs[prev].loc.line);
	} else if (!bad) {
		hmap_put(&c->procmap, key, pi);
	}
	char what[300];
	snprintf(what, sizeof(what), "procedure '%s'", pname);
	parse_body(c, lx, mod, pi, t, what);
}

static void parse_module(struct asmctx *c, uint32_t mod)
{
	struct file *fl = &c->files[c->mods[mod].file];
	struct lexer lx = { .s = fl->text, .len = fl->len, .line = 1, .file = c->mods[mod].file };
	struct tok t;
	int has_pending = 0;
	uint32_t pending = 0;
	struct tok ptok = { 0 };

	while (!c->stop && next_tok(c, &lx, &t)) {
		if (t.bad)
			continue;
		int is_proc = tok_starts(&t, "proc.") || tok_is(&t, "proc") || tok_starts(&t, "export.") ||
			      tok_is(&t, "export") || tok_is(&t, "pub");
		if (has_pending && !is_proc) {
			TERR(c, &lx, &ptok, 0, "@locals must be followed by a procedure");
			has_pending = 0;
		}
		if (is_proc) {
			parse_proc(c, &lx, mod, &t, has_pending, pending);
			has_pending = 0;
		} else if (tok_starts(&t, "@locals")) {
			uint64_t v;
			ptok = t;
			if (t.n < 10 || t.p[7] != '(' || t.p[t.n - 1] != ')') {
				TERR(c, &lx, &t, 0, "malformed @locals (expected @locals(N))");
				continue;
			}
			if (parse_imm(c, &lx, mod, &t, 8, t.p + 8, t.n - 9, &v, "local count") < 0)
				continue;
			if (v > MAX_LOCALS) {
				TERR(c, &lx, &t, 8, "too many locals: %llu (at most %u)", (unsigned long long)v,
				     MAX_LOCALS);
				continue;
			}
			has_pending = 1;
			pending = (uint32_t)v;
		} else if (tok_is(&t, "begin")) {
			struct module *m = &c->mods[mod];
			if (m->kind != MOD_ROOT) {
				TERR(c, &lx, &t, 0, "%s must not contain 'begin ... end'",
				     m->kind == MOD_KERNEL ? "a kernel" : "a library module");
			} else if (m->has_main) {
				TERR(c, &lx, &t, 0, "more than one 'begin ... end' block");
			}
			uint32_t pi = new_proc(c, mod, "#main", 0, PROC_ENTRY, lx.file, &t);
			if (m->kind == MOD_ROOT && !m->has_main) {
				c->main_proc = (int32_t)pi;
				m->has_main = 1;
			}
			parse_body(c, &lx, mod, pi, &t, "'begin' block");
		} else if (tok_starts(&t, "use.") || tok_is(&t, "use")) {
			parse_use(c, &lx, mod, &t);
		} else if (tok_starts(&t, "const.") || tok_is(&t, "const")) {
			parse_const(c, &lx, mod, &t);
		} else {
			char b[60];
			tok_str(&t, b, 40);
			if (tok_is(&t, "end") || tok_is(&t, "else"))
				TERR(c, &lx, &t, 0, "'%s' without a matching block", b);
			else
				TERR(c, &lx, &t, 0, "unexpected '%s' outside a procedure (expected proc, export, use, const or begin)", b);
		}
	}
	if (has_pending && !c->stop)
		TERR(c, &lx, &ptok, 0, "@locals must be followed by a procedure");
	if (c->mods[mod].kind == MOD_ROOT && !c->mods[mod].has_main && !c->stop)
		error_at(c, lx.file, 0, 0, "program has no 'begin ... end' block");
}

/* ---------------------------------------------------------- resolution */

static int32_t lookup_proc(struct asmctx *c, uint32_t mod, const char *name)
{
	char key[300];
	uint32_t v;
	if (strlen(name) > 200)
		return -1;
	snprintf(key, sizeof(key), "%u:%s", mod, name);
	return hmap_get(&c->procmap, key, &v) ? (int32_t)v : -1;
}

static void resolve_refs(struct asmctx *c)
{
	for (uint32_t r = 0; r < c->nrefs && !c->stop; r++) {
		struct ref *rf = &c->refs[r];
		const struct ctx_srcloc *l = &rf->loc;
		const char *sep = strstr(rf->name, "::");
		const char *last = rf->name;
		for (const char *q = rf->name; (q = strstr(q, "::")); q += 2)
			last = q + 2;

		if (rf->op == OP_SYSCALL) {
			if (c->kernel_mod < 0) {
				error_at(c, l->file, l->line, l->col,
					 "SyscallTargetNotInKernel: 'syscall.%s' but no kernel was given (--kernel)", rf->name);
				continue;
			}
			int32_t pi = lookup_proc(c, (uint32_t)c->kernel_mod, last);
			if (pi < 0 || !(c->procs[pi].flags & PROC_KERNEL_EXPORT)) {
				error_at(c, l->file, l->line, l->col,
					 "SyscallTargetNotInKernel: '%s' is not %s procedure of the kernel", rf->name,
					 pi < 0 ? "a" : "an exported");
				continue;
			}
			rf->target = pi;
			continue;
		}
		if (!sep) {
			int32_t pi = lookup_proc(c, rf->mod, rf->name);
			if (pi < 0) {
				error_at(c, l->file, l->line, l->col, "undefined procedure '%s'", rf->name);
				continue;
			}
			rf->target = pi;
			continue;
		}
		/* alias::proc (or full::path::proc) */
		size_t ml = (size_t)(last - 2 - rf->name);
		const struct module *m = &c->mods[rf->mod];
		int32_t tm = -2;
		for (uint32_t k = 0; k < m->nuses; k++) {
			const char *a = m->uses[k].alias;
			if (strlen(a) == ml && !memcmp(a, rf->name, ml)) {
				tm = m->uses[k].mod;
				break;
			}
		}
		if (tm == -2) {
			uint32_t mi;
			char path[300];
			snprintf(path, sizeof(path), "%.*s", (int)(ml > 250 ? 250 : ml), rf->name);
			for (uint32_t k = 0; k < m->nuses; k++)
				if (m->uses[k].mod >= 0 && hmap_get(&c->modmap, path, &mi) &&
				    (uint32_t)m->uses[k].mod == mi)
					tm = (int32_t)mi;
		}
		if (tm == -1)
			continue; /* the `use` already failed */
		if (tm < 0) {
			error_at(c, l->file, l->line, l->col,
				 "undefined module '%.*s' (missing 'use' for it?)", (int)(ml > 200 ? 200 : ml), rf->name);
			continue;
		}
		int32_t pi = lookup_proc(c, (uint32_t)tm, last);
		if (pi < 0) {
			error_at(c, l->file, l->line, l->col, "undefined procedure '%s' in module '%s'", last,
				 c->mods[tm].path);
			continue;
		}
		if (!(c->procs[pi].flags & PROC_EXPORTED)) {
			error_at(c, l->file, l->line, l->col,
				 "procedure '%s' is not exported by module '%s' (undefined procedure)", last,
				 c->mods[tm].path);
			continue;
		}
		rf->target = pi;
	}
}

static int is_procop(uint32_t op)
{
	return op == OP_EXEC || op == OP_CALL || op == OP_SYSCALL || op == OP_DELEGATECALL ||
	       op == OP_PROCREF;
}

/* Iterative DFS; fills order[] callees-first.  Reports cycles. */
static uint32_t check_recursion(struct asmctx *c, uint32_t *order)
{
	uint8_t *color = calloc(c->nprocs ? c->nprocs : 1, 1);
	struct frame { uint32_t p, i; } *st = xrealloc(NULL, (c->nprocs + 1) * sizeof(*st));
	uint32_t norder = 0;
	if (!color)
		abort();
	for (uint32_t root = 0; root < c->nprocs; root++) {
		if (color[root])
			continue;
		uint32_t sp = 0;
		st[sp++] = (struct frame){ root, 0 };
		color[root] = 1;
		while (sp) {
			struct frame *fr = &st[sp - 1];
			struct pproc *p = &c->procs[fr->p];
			if (fr->i >= p->n) {
				color[fr->p] = 2;
				order[norder++] = fr->p;
				sp--;
				continue;
			}
			struct ctx_insn *in = &p->code[fr->i++];
			if (!is_procop(in->op))
				continue;
			int32_t tg = c->refs[in->a].target;
			if (tg < 0)
				continue;
			if (color[tg] == 1) {
				const struct ctx_srcloc *l = &c->refs[in->a].loc;
				error_at(c, l->file, l->line, l->col,
					 "recursion: '%s' is reached again from '%s' (procedures cannot be recursive)",
					 c->procs[tg].name, p->name);
				continue;
			}
			if (color[tg] == 0) {
				color[tg] = 1;
				st[sp++] = (struct frame){ (uint32_t)tg, 0 };
			}
		}
	}
	free(color);
	free(st);
	return norder;
}

static void check_kernel_syscalls(struct asmctx *c)
{
	if (c->kernel_mod < 0)
		return;
	uint8_t *seen = calloc(c->nprocs ? c->nprocs : 1, 1);
	uint32_t *q = xrealloc(NULL, (c->nprocs + 1) * sizeof(*q));
	int32_t *from = xrealloc(NULL, (c->nprocs + 1) * sizeof(*from));
	uint32_t qh = 0, qt = 0;
	if (!seen)
		abort();
	for (uint32_t i = 0; i < c->nprocs; i++) {
		if (c->procs[i].flags & PROC_KERNEL_EXPORT) {
			seen[i] = 1;
			from[i] = (int32_t)i;
			q[qt++] = i;
		}
	}
	while (qh < qt && !c->stop) {
		uint32_t pi = q[qh++];
		struct pproc *p = &c->procs[pi];
		for (uint32_t k = 0; k < p->n; k++) {
			struct ctx_insn *in = &p->code[k];
			if (in->op == OP_SYSCALL) {
				const struct ctx_srcloc *l = &p->locs[k];
				if ((int32_t)pi == from[pi])
					error_at(c, l->file, l->line, l->col,
						 "SyscallInKernel: syscall inside exported kernel procedure '%s'", p->name);
				else
					error_at(c, l->file, l->line, l->col,
						 "SyscallInKernel: syscall in '%s', which kernel procedure '%s' reaches through exec",
						 p->name, c->procs[from[pi]].name);
			} else if (in->op == OP_EXEC) {
				int32_t tg = c->refs[in->a].target;
				if (tg >= 0 && !seen[tg]) {
					seen[tg] = 1;
					from[tg] = from[pi];
					q[qt++] = (uint32_t)tg;
				}
			}
		}
	}
	free(seen);
	free(q);
	free(from);
}

/* ------------------------------------------------------------- driver */

static void ctx_free(struct asmctx *c)
{
	for (uint32_t i = 0; i < c->nfiles; i++) {
		free(c->files[i].name);
		free(c->files[i].text);
		free(c->files[i].lines);
	}
	free(c->files);
	for (uint32_t i = 0; i < c->nmods; i++) {
		free(c->mods[i].path);
		for (uint32_t k = 0; k < c->mods[i].nuses; k++)
			free(c->mods[i].uses[k].alias);
		free(c->mods[i].uses);
	}
	free(c->mods);
	for (uint32_t i = 0; i < c->nprocs; i++) {
		free(c->procs[i].name);
		free(c->procs[i].code);
		free(c->procs[i].locs);
	}
	free(c->procs);
	for (uint32_t i = 0; i < c->nrefs; i++)
		free(c->refs[i].name);
	free(c->refs);
	for (uint32_t i = 0; i < c->nstrings; i++)
		free(c->strings[i]);
	free(c->strings);
	free(c->consts);
	hmap_free(&c->procmap);
	hmap_free(&c->constmap);
	hmap_free(&c->modmap);
	hmap_free(&c->insnmap);
}

static int is_jump(uint32_t op)
{
	return op == OP_IF_TRUE || op == OP_IF_FALSE || op == OP_JMP || op == OP_WHILE ||
	       op == OP_REPEAT || op == OP_REPEAT_END;
}

static struct ctx_program *build(struct asmctx *c, const uint32_t *order, uint32_t norder)
{
	uint8_t (*raw)[32] = xrealloc(NULL, (size_t)(c->nprocs + 1) * 32);
	struct ctx_insn *tmp = NULL;
	uint32_t tmpcap = 0;

	/* digests, callees first; operands mapped ref -> callee proc index */
	for (uint32_t k = 0; k < norder; k++) {
		struct pproc *p = &c->procs[order[k]];
		for (uint32_t i = 0; i < p->n; i++)
			if (is_procop(p->code[i].op))
				p->code[i].a = (uint32_t)c->refs[p->code[i].a].target;
	}
	for (uint32_t k = 0; k < norder; k++) {
		uint32_t pi = order[k];
		struct pproc *p = &c->procs[pi];
		(void)tmp;
		(void)tmpcap;
		if (ctx_digest_proc(p->code, p->n, p->nlocals, c->strings, c->nstrings,
				    (const uint8_t(*)[32])raw, raw[pi]) < 0) {
			error_at(c, 0, 0, 0, "libsodium failed to compute a digest");
			free(raw);
			return NULL;
		}
	}

	struct ctx_program *prog = calloc(1, sizeof(*prog));
	if (!prog)
		abort();
	prog->ncode = (uint32_t)c->totalcode;
	prog->code = xrealloc(NULL, (size_t)prog->ncode * sizeof(*prog->code));
	prog->locs = xrealloc(NULL, (size_t)prog->ncode * sizeof(*prog->locs));
	prog->nprocs = c->nprocs;
	prog->procs = calloc(c->nprocs ? c->nprocs : 1, sizeof(*prog->procs));
	if (!prog->procs)
		abort();
	uint32_t pc = 0;
	for (uint32_t pi = 0; pi < c->nprocs; pi++) {
		struct pproc *p = &c->procs[pi];
		struct ctx_proc *o = &prog->procs[pi];
		o->name = p->name;
		p->name = NULL;
		o->entry = pc;
		o->nlocals = p->nlocals;
		o->nlocals4 = (p->nlocals + 3u) & ~3u;
		o->flags = p->flags;
		o->loc = p->loc;
		ctx_digest_to_fe(raw[pi], o->digest);
		for (uint32_t i = 0; i < p->n; i++) {
			struct ctx_insn in = p->code[i];
			if (is_jump(in.op))
				in.a += pc;
			prog->code[pc + i] = in;
			prog->locs[pc + i] = p->locs[i];
		}
		pc += p->n;
		o->end = pc;
	}
	prog->entry_proc = (uint32_t)c->main_proc;
	prog->strings = c->strings;
	prog->nstrings = c->nstrings;
	c->strings = NULL;
	c->nstrings = 0;
	prog->nfiles = c->nfiles;
	prog->files = xrealloc(NULL, (size_t)(c->nfiles ? c->nfiles : 1) * sizeof(char *));
	for (uint32_t i = 0; i < c->nfiles; i++) {
		prog->files[i] = c->files[i].name;
		c->files[i].name = NULL;
	}
	free(raw);
	return prog;
}

static int assemble(struct asmctx *c, struct ctx_program **out)
{
	/* kernel first so its module index is known; root is module 0 */
	if (c->opts && c->opts->kernel_path) {
		size_t len = 0;
		int err = 0;
		char *text = read_file(c->opts->kernel_path, &len, &err);
		if (!text) {
			diag_printf(c->diags, "%s: error: cannot read kernel file: %s\n",
				    c->opts->kernel_path, strerror(err));
			c->diags->nerrors++;
		} else {
			int32_t fi = add_file(c, c->opts->kernel_path, text, len);
			c->kernel_mod = (int32_t)add_module(c, "#kernel", (uint32_t)fi, MOD_KERNEL);
		}
	}
	for (uint32_t m = 0; m < c->nmods && !c->stop; m++)
		parse_module(c, m);
	if (!c->stop)
		resolve_refs(c);
	uint32_t *order = xrealloc(NULL, (size_t)(c->nprocs + 1) * sizeof(uint32_t));
	uint32_t norder = 0;
	if (!c->stop)
		norder = check_recursion(c, order);
	if (!c->stop)
		check_kernel_syscalls(c);
	if (c->diags->nerrors == 0 && c->main_proc >= 0 && norder == c->nprocs)
		*out = build(c, order, norder);
	free(order);
	if (c->diags->nerrors || !*out) {
		if (*out) {
			ctx_program_free(*out);
			*out = NULL;
		}
		if (!c->diags->nerrors)
			c->diags->nerrors = 1;
		return -1;
	}
	return 0;
}

static void ctx_init(struct asmctx *c, const struct asm_options *opts, struct asm_diags *diags)
{
	static const struct asm_options noopts = { 0 };
	memset(c, 0, sizeof(*c));
	c->opts = opts ? opts : &noopts;
	c->diags = diags;
	c->kernel_mod = -1;
	c->main_proc = -1;
	for (uint32_t i = 0; i < sizeof(itab) / sizeof(itab[0]); i++)
		hmap_put(&c->insnmap, itab[i].name, i);
}

static int assemble_root(const char *name, char *text, size_t len, const struct asm_options *opts,
			 struct ctx_program **out, struct asm_diags *diags)
{
	struct asmctx c;
	ctx_init(&c, opts, diags);
	int32_t fi = add_file(&c, name, text, len);
	add_module(&c, "#root", (uint32_t)fi, MOD_ROOT);
	/* the kernel is module 1: make the root parse first but keep index 0 */
	int r = assemble(&c, out);
	ctx_free(&c);
	return r;
}

int ctx_assemble_source(const char *name, const char *src, size_t len,
			const struct asm_options *opts, struct ctx_program **out,
			struct asm_diags *diags)
{
	*out = NULL;
	char *text = xrealloc(NULL, len + 1);
	if (len)
		memcpy(text, src, len);
	text[len] = 0;
	return assemble_root(name ? name : "<input>", text, len, opts, out, diags);
}

int ctx_assemble_file(const char *path, const struct asm_options *opts,
		      struct ctx_program **out, struct asm_diags *diags)
{
	size_t len = 0;
	int err = 0;
	*out = NULL;
	char *text = read_file(path, &len, &err);
	if (!text) {
		diag_printf(diags, "%s: error: cannot read program file: %s\n", path, strerror(err));
		diags->nerrors++;
		return -1;
	}
	return assemble_root(path, text, len, opts, out, diags);
}

void asm_diags_free(struct asm_diags *diags)
{
	if (!diags)
		return;
	free(diags->text);
	diags->text = NULL;
	diags->len = diags->cap = 0;
	diags->nerrors = 0;
}
