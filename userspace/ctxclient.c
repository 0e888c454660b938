// SPDX-License-Identifier: MIT
/*
 * ctxclient.h's two transports.  The socket side keeps no state between
 * requests: the broker answers each request before it sends anything the
 * request caused, so the first message after a request is its answer.  It
 * uses read and write only: the sandbox's filter allows no other I/O (a
 * context process must not die of SIGPIPE either: the sandbox ignores it).
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "ctxclient.h"

static int kmod_request(struct ctxvm_client *c, unsigned long cmd, struct ctxvm_msg *io)
{
	return ioctl(c->fd, cmd, io) < 0 ? -errno : 0;
}

/* One message from the broker; EOF is the end of this endpoint. */
static int sock_recv(struct ctxvm_client *c, struct ctxvm_msg *out)
{
	ssize_t n;

	do
		n = read(c->fd, out, sizeof(*out));
	while (n < 0 && errno == EINTR);
	if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)))
		return -ESHUTDOWN;
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(*out) ? 0 : -EPROTO;
}

/*
 * Send `m`, take its answer into `out`.  A STATUS answer is the request's
 * return value; any other is what only CALL and CALLER are answered with.
 */
static int sock_request(struct ctxvm_client *c, const struct ctxvm_msg *m, struct ctxvm_msg *out)
{
	struct ctxvm_msg answer;
	ssize_t n;
	int r;

	do
		n = write(c->fd, m, sizeof(*m));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN ? -ESHUTDOWN
										   : -errno;
	r = sock_recv(c, &answer);
	if (r)
		return r;
	if (answer.type == CTXVM_MSG_STATUS) {
		if (answer.status > 4095 || (!answer.status && out))
			return -EPROTO;
		return -(int)answer.status;
	}
	if (!out)
		return -EPROTO;
	*out = answer;
	return 0;
}

static int request(struct ctxvm_client *c, unsigned long cmd, __u64 type,
		   const struct ctxvm_msg *m)
{
	struct ctxvm_msg io = *m;

	io.type = type;
	return c->kmod ? kmod_request(c, cmd, &io) : sock_request(c, &io, NULL);
}

int ctxvm_client_bind(struct ctxvm_client *c)
{
	return c->kmod && ioctl(c->fd, CTXVM_CTX_BIND, 0) < 0 ? -errno : 0;
}

int ctxvm_client_wait(struct ctxvm_client *c, struct ctxvm_msg *out)
{
	int r;

	if (c->kmod)
		return kmod_request(c, CTXVM_CTX_WAIT, out);
	r = sock_recv(c, out);
	if (!r && (out->type < CTXVM_MSG_RUN || out->type > CTXVM_MSG_GUARD_END))
		return -EPROTO;
	return r;
}

int ctxvm_client_call(struct ctxvm_client *c, struct ctxvm_msg *io)
{
	io->type = CTXVM_MSG_CALL;
	return c->kmod ? kmod_request(c, CTXVM_CTX_CALL, io) : sock_request(c, io, io);
}

int ctxvm_client_return(struct ctxvm_client *c, const struct ctxvm_msg *m)
{
	return request(c, CTXVM_CTX_RETURN, CTXVM_MSG_RETURN, m);
}

int ctxvm_client_fail(struct ctxvm_client *c, const struct ctxvm_msg *m)
{
	return request(c, CTXVM_CTX_FAIL, CTXVM_MSG_FAIL, m);
}

int ctxvm_client_finish(struct ctxvm_client *c, const struct ctxvm_msg *m)
{
	return request(c, CTXVM_CTX_FINISH, CTXVM_MSG_FINISH, m);
}

int ctxvm_client_caller(struct ctxvm_client *c, __u64 digest[4])
{
	struct ctxvm_msg m = { .type = CTXVM_MSG_CALLER };
	int r = c->kmod ? kmod_request(c, CTXVM_CTX_CALLER, &m) : sock_request(c, &m, &m);

	if (r)
		return r;
	if (m.type != CTXVM_MSG_CALLER_REPLY)
		return -EPROTO;
	memcpy(digest, m.digest, sizeof(m.digest));
	return 0;
}
