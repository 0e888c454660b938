/* SPDX-License-Identifier: MIT */
/*
 * The context side of the wire protocol (shared/ctxvm_uapi.h): one API over
 * both transports.  On a /dev/ctxvm context fd every request is an ioctl; on
 * the embedded broker's SOCK_SEQPACKET endpoint it is a message, answered by
 * exactly one message: what the ioctl would have copied out, or a
 * CTXVM_MSG_STATUS carrying its return value.  Either way a request returns
 * 0 or the same negative errno: a broker refusal (ctxvm_status_errno() in
 * shared/broker.c), -ESHUTDOWN once nothing can come any more (the
 * activation is over, the run ended, the broker is gone), -EPROTO for an
 * answer that makes no sense.  Only the kernel transport can be interrupted
 * (-EINTR from a CALL that was made: fetch its answer with wait).
 */
#ifndef CTXVM_CTXCLIENT_H
#define CTXVM_CTXCLIENT_H

#include <stdbool.h>

#include "../shared/ctxvm_uapi.h"

struct ctxvm_client {
	int fd;
	bool kmod;              /* fd is a /dev/ctxvm context fd */
};

/* The kernel transport answers only the process that bound the fd: bind first. */
int ctxvm_client_bind(struct ctxvm_client *c);
/* The next message for this context: RUN, RESULT, GUARD_BEGIN or GUARD_END. */
int ctxvm_client_wait(struct ctxvm_client *c, struct ctxvm_msg *out);
/* A CALL (type set here) in; the first message that follows it out. */
int ctxvm_client_call(struct ctxvm_client *c, struct ctxvm_msg *io);
int ctxvm_client_return(struct ctxvm_client *c, const struct ctxvm_msg *m);
int ctxvm_client_fail(struct ctxvm_client *c, const struct ctxvm_msg *m);
int ctxvm_client_finish(struct ctxvm_client *c, const struct ctxvm_msg *m);
/* The running frame's caller digest. */
int ctxvm_client_caller(struct ctxvm_client *c, __u64 digest[4]);

#endif /* CTXVM_CTXCLIENT_H */
