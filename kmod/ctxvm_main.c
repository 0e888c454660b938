// SPDX-License-Identifier: GPL-2.0
/*
 * ctxvm.ko: the kernel broker of ctxvm (SPEC §7, §8).
 *
 * Three kinds of file, as in KVM: /dev/ctxvm (the system fd), a session fd
 * per run (the runner holds it) and a context fd per context process.  The
 * frame stack itself lives in the shared core (shared/broker.c); this file
 * is only its transport: it turns ioctls into core calls and the core's
 * decisions into messages queued for the context fds and events queued for
 * the session fd.  The ioctl API is documented in shared/ctxvm_uapi.h.
 *
 * Locking: one mutex per session covers the core, the endpoint list, every
 * mailbox and the event queue.  Waiters sleep on the endpoint's (or the
 * session's) wait queue and re-check under the mutex.
 *
 * Lifetimes: a session is refcounted by its session file and by every
 * context file.  Closing the session file shuts the session down and frees
 * everything not pinned by a context file; the rest goes with those files.
 */
#include <linux/anon_inodes.h>
#include <linux/atomic.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "../shared/broker.h"
#include "../shared/ctxvm_uapi.h"

#define CTXVM_HARD_MAX 65536U

static unsigned int max_sessions = 64;
module_param(max_sessions, uint, 0644);
MODULE_PARM_DESC(max_sessions, "Sessions open at once (module-wide)");

static unsigned int max_contexts = 1100;
module_param(max_contexts, uint, 0644);
MODULE_PARM_DESC(max_contexts, "Live context endpoints per session");

static unsigned int max_depth = 1024;
module_param(max_depth, uint, 0644);
MODULE_PARM_DESC(max_depth, "Frame stack depth per session");

static atomic_long_t ctxvm_allocs = ATOMIC_LONG_INIT(0);
static atomic_t ctxvm_nsessions = ATOMIC_INIT(0);

struct ctxvm_mail {
	struct list_head node;
	struct ctxvm_msg msg;
};

struct ctxvm_ev {
	struct list_head node;
	struct ctxvm_event ev;
};

struct ctxvm_session;

struct ctxvm_endpoint {
	struct list_head node;          /* in ctxvm_session.endpoints */
	struct ctxvm_session *sess;
	u64 id;                         /* the core's owner id; never 0 */
	struct pid *pid;                /* bound thread group, NULL until BIND */
	struct list_head mail;
	unsigned int nmail;
	bool has_file;
	bool gone;                      /* no message can come any more */
	wait_queue_head_t wq;
};

struct ctxvm_session {
	struct kref ref;
	struct mutex lock;              /* everything below */
	struct ctxvm_session_core core;
	struct ctxvm_frame *frames;
	struct list_head endpoints;
	unsigned int nendpoints;
	unsigned int max_contexts;
	unsigned int nevents;
	unsigned int max_events;        /* a caller sleeps while this many wait */
	unsigned int hard_max_events;   /* past this the session breaks */
	u64 next_id;
	u64 root_id;
	struct list_head events;
	wait_queue_head_t event_wq;
	wait_queue_head_t space_wq;     /* room in the event queue */
	bool shutdown;                  /* session fd closed, or broken */
};

static void *ctxvm_zalloc(size_t size)
{
	void *p = kzalloc(size, GFP_KERNEL_ACCOUNT);

	if (p)
		atomic_long_inc(&ctxvm_allocs);
	return p;
}

static void ctxvm_free(const void *p)
{
	if (!p)
		return;
	kfree(p);
	atomic_long_dec(&ctxvm_allocs);
}

/* ---- endpoints and their mailboxes (session lock held) ---- */

static struct ctxvm_endpoint *ctxvm_find(struct ctxvm_session *sess, u64 id)
{
	struct ctxvm_endpoint *ep;

	list_for_each_entry(ep, &sess->endpoints, node)
		if (ep->id == id)
			return ep;
	return NULL;
}

static bool ctxvm_ep_done(struct ctxvm_endpoint *ep)
{
	struct ctxvm_session *sess = ep->sess;

	return READ_ONCE(ep->gone) || READ_ONCE(sess->shutdown) ||
	       READ_ONCE(sess->core.state) > CTXVM_S_RUNNING;
}

static bool ctxvm_ep_ready(struct ctxvm_endpoint *ep)
{
	return READ_ONCE(ep->nmail) || ctxvm_ep_done(ep);
}

static void ctxvm_drop_mail(struct ctxvm_endpoint *ep)
{
	struct ctxvm_mail *m, *tmp;

	list_for_each_entry_safe(m, tmp, &ep->mail, node) {
		list_del(&m->node);
		ctxvm_free(m);
	}
	WRITE_ONCE(ep->nmail, 0);
}

static void ctxvm_unlink(struct ctxvm_endpoint *ep)
{
	list_del(&ep->node);
	ep->sess->nendpoints--;
	ctxvm_drop_mail(ep);
	put_pid(ep->pid);
	ctxvm_free(ep);
}

/* Its activation is over; an endpoint no file ever took is freed at once. */
static void ctxvm_retire(struct ctxvm_endpoint *ep)
{
	WRITE_ONCE(ep->gone, true);
	ctxvm_drop_mail(ep);            /* nobody may read it now (ctxvm_recv) */
	wake_up_interruptible(&ep->wq);
	if (!ep->has_file)
		ctxvm_unlink(ep);
}

static void ctxvm_wake_all(struct ctxvm_session *sess)
{
	struct ctxvm_endpoint *ep;

	list_for_each_entry(ep, &sess->endpoints, node)
		wake_up_interruptible(&ep->wq);
	wake_up_interruptible(&sess->event_wq);
	wake_up(&sess->space_wq);
}

/* A message or an event could not be queued: the run cannot go on. */
static void ctxvm_break(struct ctxvm_session *sess)
{
	WRITE_ONCE(sess->shutdown, true);
	ctxvm_wake_all(sess);
}

static void ctxvm_deliver(struct ctxvm_endpoint *ep, struct ctxvm_mail *m)
{
	if (WARN_ON_ONCE(!ep)) {
		ctxvm_free(m);
		return;
	}
	list_add_tail(&m->node, &ep->mail);
	WRITE_ONCE(ep->nmail, ep->nmail + 1);
	wake_up_interruptible(&ep->wq);
}

/* Allocates under the lock: used on unwinds, whose size is not known before. */
static void ctxvm_post(struct ctxvm_session *sess, u64 id, u64 type, u64 status, u64 gas,
		       u64 gas_arg, u64 fmp)
{
	struct ctxvm_endpoint *ep = ctxvm_find(sess, id);
	struct ctxvm_mail *m;

	if (!ep)
		return;
	m = ctxvm_zalloc(sizeof(*m));
	if (!m) {
		ctxvm_break(sess);
		return;
	}
	m->msg.type = type;
	m->msg.status = status;
	m->msg.gas = gas;
	m->msg.gas_arg = gas_arg;
	m->msg.fmp = fmp;
	ctxvm_deliver(ep, m);
}

/*
 * Calls and returns wait for room first (ctxvm_wait_event_space), so only
 * deaths, one per endpoint, can pass max_events; the hard limit is a guard.
 */
static void ctxvm_queue_event(struct ctxvm_session *sess, struct ctxvm_ev *e)
{
	if (sess->nevents >= sess->hard_max_events) {
		ctxvm_free(e);
		ctxvm_break(sess);
		return;
	}
	e->ev.depth = sess->core.depth;
	list_add_tail(&e->node, &sess->events);
	WRITE_ONCE(sess->nevents, sess->nevents + 1);
	wake_up_interruptible(&sess->event_wq);
}

/*
 * After a fail or an abort: retire the contexts whose frames were popped,
 * and tell context 0 and the resumed frame what happened, in the order the
 * embedded broker uses.  `reporter_left`: the top frame's activation already
 * ended in its process (it sent FAIL).
 */
static void ctxvm_unwound(struct ctxvm_session *sess, u32 old_depth,
			  const struct ctxvm_unwind *u, bool reporter_left)
{
	struct ctxvm_session_core *core = &sess->core;
	u64 abandon = 0;
	u32 i;

	for (i = old_depth; i-- > core->depth;) {
		const struct ctxvm_frame *f = &sess->frames[i];

		if (f->owner != sess->root_id) {
			struct ctxvm_endpoint *ep = ctxvm_find(sess, f->owner);

			if (ep)
				ctxvm_retire(ep);
		} else if (!(reporter_left && i == old_depth - 1)) {
			abandon++;
		}
	}
	if (u->session_failed) {
		ctxvm_wake_all(sess);
		return;
	}
	if (abandon)
		ctxvm_post(sess, sess->root_id, CTXVM_MSG_RESULT, CTXVM_RESULT_ABORT, 0,
			   abandon, 0);
	for (i = old_depth; i-- > core->depth;)
		if (sess->frames[i].guarded)
			ctxvm_post(sess, sess->root_id, CTXVM_MSG_GUARD_END, 1, 0, 0,
				   sess->frames[i].fmp0_saved);
	ctxvm_post(sess, u->resume_owner, CTXVM_MSG_RESULT, CTXVM_RESULT_GUARD_FAILED,
		   u->gas_used, 0, 0);
}

/* A context must not run ahead of a runner that has not read its events. */
static int ctxvm_wait_event_space(struct ctxvm_session *sess)
{
	return wait_event_killable(sess->space_wq,
				   READ_ONCE(sess->nevents) < sess->max_events ||
				   READ_ONCE(sess->shutdown));
}

/*
 * The endpoint's process died, closed its fd or announced its death
 * (`why`, from CTXVM_CTX_ABORT): release its frames.
 */
static void ctxvm_ep_died(struct ctxvm_endpoint *ep, const struct ctxvm_msg *why)
{
	struct ctxvm_session *sess = ep->sess;
	struct ctxvm_ev *e = ctxvm_zalloc(sizeof(*e));
	struct ctxvm_unwind u;
	u32 old_depth;

	mutex_lock(&sess->lock);
	if (!ep->gone && !sess->shutdown && sess->core.state == CTXVM_S_RUNNING) {
		old_depth = sess->core.depth;
		if (ctxvm_core_abort(&sess->core, ep->id, &u) == CTXVM_B_OK) {
			ctxvm_unwound(sess, old_depth, &u, false);
			if (e) {
				e->ev.type = CTXVM_EVENT_DIED;
				e->ev.flags = u.session_failed ? CTXVM_EVENT_F_SESSION_FAILED
							       : CTXVM_EVENT_F_CAUGHT;
				e->ev.endpoint = ep->id;
				e->ev.gas_used = u.gas_used;
				if (why)
					e->ev.msg = *why;
				ctxvm_queue_event(sess, e);
				e = NULL;
			}
		}
	}
	WRITE_ONCE(ep->gone, true);
	wake_up_interruptible(&ep->wq);
	mutex_unlock(&sess->lock);
	ctxvm_free(e);
}

static struct ctxvm_endpoint *ctxvm_ep_new(void)
{
	struct ctxvm_endpoint *ep = ctxvm_zalloc(sizeof(*ep));

	if (ep) {
		INIT_LIST_HEAD(&ep->mail);
		init_waitqueue_head(&ep->wq);
	}
	return ep;
}

static void ctxvm_ep_link(struct ctxvm_session *sess, struct ctxvm_endpoint *ep)
{
	ep->sess = sess;
	ep->id = sess->next_id++;
	list_add_tail(&ep->node, &sess->endpoints);
	sess->nendpoints++;
}

/* ---- sessions ---- */

static void ctxvm_session_free(struct kref *ref)
{
	struct ctxvm_session *sess = container_of(ref, struct ctxvm_session, ref);

	mutex_destroy(&sess->lock);
	kvfree(sess->frames);
	atomic_long_dec(&ctxvm_allocs);
	ctxvm_free(sess);
	atomic_dec(&ctxvm_nsessions);
}

static void ctxvm_session_put(struct ctxvm_session *sess)
{
	kref_put(&sess->ref, ctxvm_session_free);
}

/* ---- context fd ---- */

static int ctxvm_ctx_release(struct inode *inode, struct file *file)
{
	struct ctxvm_endpoint *ep = file->private_data;
	struct ctxvm_session *sess = ep->sess;

	ctxvm_ep_died(ep, NULL);
	mutex_lock(&sess->lock);
	ctxvm_unlink(ep);
	mutex_unlock(&sess->lock);
	ctxvm_session_put(sess);
	return 0;
}

/* Every close by the bound process, and its exit, count as its death. */
static int ctxvm_ctx_flush(struct file *file, fl_owner_t id)
{
	struct ctxvm_endpoint *ep = file->private_data;
	struct pid *pid = READ_ONCE(ep->pid);

	if (pid && pid == task_tgid(current))
		ctxvm_ep_died(ep, NULL);
	return 0;
}

/*
 * The next message for this context, written to `argp`.  Once the endpoint
 * is done nothing is delivered: what is still queued then (say a RUN whose
 * caller died before a process took it) is stale and dropped.  A message
 * that cannot be written out goes back to the head of the mailbox.
 */
static int ctxvm_recv(struct ctxvm_endpoint *ep, void __user *argp)
{
	struct ctxvm_session *sess = ep->sess;
	struct ctxvm_mail *m;
	int ret;

	for (;;) {
		ret = wait_event_interruptible(ep->wq, ctxvm_ep_ready(ep));
		if (ret)
			return ret;
		mutex_lock(&sess->lock);
		if (ctxvm_ep_done(ep)) {
			ctxvm_drop_mail(ep);
			mutex_unlock(&sess->lock);
			return -ESHUTDOWN;
		}
		m = list_first_entry_or_null(&ep->mail, struct ctxvm_mail, node);
		if (m) {
			list_del(&m->node);
			WRITE_ONCE(ep->nmail, ep->nmail - 1);
		}
		mutex_unlock(&sess->lock);
		if (m)
			break;
	}
	/* m->msg was zeroed whole before it was filled. */
	if (!copy_to_user(argp, &m->msg, sizeof(m->msg))) {
		ctxvm_free(m);
		return 0;
	}
	mutex_lock(&sess->lock);
	if (ctxvm_ep_done(ep)) {
		ctxvm_free(m);
	} else {
		list_add(&m->node, &ep->mail);
		WRITE_ONCE(ep->nmail, ep->nmail + 1);
		wake_up_interruptible(&ep->wq);
	}
	mutex_unlock(&sess->lock);
	return -EFAULT;
}

static bool ctxvm_is_delegate(u64 kind)
{
	return kind == CTXVM_FRAME_DELEGATECALL || kind == CTXVM_FRAME_DYNDELEGATECALL;
}

static int ctxvm_ctx_call(struct ctxvm_endpoint *ep, const struct ctxvm_msg *msg,
			  void __user *argp)
{
	struct ctxvm_session *sess = ep->sess;
	bool syscall = msg->kind == CTXVM_FRAME_SYSCALL;
	struct ctxvm_endpoint *child = NULL;
	struct ctxvm_mail *run, *guard = NULL;
	struct ctxvm_call_request req = {};
	struct ctxvm_call_grant grant;
	struct ctxvm_ev *e = NULL;
	int ret;

	if (msg->kind < CTXVM_FRAME_CALL || msg->kind > CTXVM_FRAME_KIND_MAX)
		return -EINVAL;
	ret = ctxvm_wait_event_space(sess);
	if (ret)
		return ret;
	run = ctxvm_zalloc(sizeof(*run));
	e = ctxvm_zalloc(sizeof(*e));
	if (!syscall)
		child = ctxvm_ep_new();
	if (ctxvm_is_delegate(msg->kind))
		guard = ctxvm_zalloc(sizeof(*guard));
	if (!run || !e || (!syscall && !child) || (ctxvm_is_delegate(msg->kind) && !guard)) {
		ret = -ENOMEM;
		goto out_free;
	}

	req.kind = (u32)msg->kind;
	memcpy(req.target, msg->digest, sizeof(req.target));
	req.gas_remaining = msg->gas;
	req.gas_arg = msg->gas_arg;
	req.requester_fmp = msg->fmp;

	mutex_lock(&sess->lock);
	if (sess->shutdown) {
		ret = -ESHUTDOWN;
	} else if (child && sess->nendpoints >= sess->max_contexts) {
		ret = -EMFILE;
	} else {
		req.new_owner = child ? sess->next_id : 0;
		ret = ctxvm_status_errno(ctxvm_core_call(&sess->core, ep->id, &req, &grant));
	}
	if (ret) {
		mutex_unlock(&sess->lock);
		goto out_free;
	}
	run->msg.type = CTXVM_MSG_RUN;
	run->msg.kind = msg->kind;
	run->msg.proc = msg->proc;
	run->msg.pc = msg->pc;
	run->msg.gas = grant.gas_limit;
	run->msg.fmp = grant.fmp;
	run->msg.ctx_id = grant.ctx_id;
	run->msg.budget = msg->budget;
	memcpy(run->msg.digest, msg->digest, sizeof(run->msg.digest));
	memcpy(run->msg.window, msg->window, sizeof(run->msg.window));
	if (guard) {
		guard->msg.type = CTXVM_MSG_GUARD_BEGIN;
		ctxvm_deliver(ctxvm_find(sess, sess->root_id), guard);
		guard = NULL;
	}
	e->ev.from = ep->id;
	e->ev.msg = run->msg;
	if (child) {
		ctxvm_ep_link(sess, child);
		e->ev.type = CTXVM_EVENT_SPAWN;
		e->ev.endpoint = child->id;
		ctxvm_deliver(child, run);
		child = NULL;
	} else {
		e->ev.type = CTXVM_EVENT_ENTER;
		e->ev.endpoint = grant.owner;
		ctxvm_deliver(ctxvm_find(sess, grant.owner), run);
	}
	ctxvm_queue_event(sess, e);
	e = NULL;
	run = NULL;
	mutex_unlock(&sess->lock);

	/* The call is made: a signal now must not restart it. */
	ret = ctxvm_recv(ep, argp);
	if (ret == -ERESTARTSYS)
		ret = -EINTR;
out_free:
	ctxvm_free(run);
	ctxvm_free(guard);
	ctxvm_free(child);
	ctxvm_free(e);
	return ret;
}

static int ctxvm_ctx_return(struct ctxvm_endpoint *ep, const struct ctxvm_msg *msg)
{
	struct ctxvm_session *sess = ep->sess;
	struct ctxvm_mail *res = NULL, *guard = NULL;
	struct ctxvm_ev *e = NULL;
	struct ctxvm_unwind u;
	int ret;

	ret = ctxvm_wait_event_space(sess);
	if (ret)
		return ret;
	res = ctxvm_zalloc(sizeof(*res));
	guard = ctxvm_zalloc(sizeof(*guard));
	e = ctxvm_zalloc(sizeof(*e));
	if (!res || !guard || !e) {
		ret = -ENOMEM;
		goto out_free;
	}
	mutex_lock(&sess->lock);
	ret = sess->shutdown ? -ESHUTDOWN :
	      ctxvm_status_errno(ctxvm_core_return(&sess->core, ep->id, msg->gas, &u));
	if (!ret) {
		if (u.popped_guarded) {
			guard->msg.type = CTXVM_MSG_GUARD_END;
			guard->msg.fmp = u.fmp0_restore;
			ctxvm_deliver(ctxvm_find(sess, sess->root_id), guard);
			guard = NULL;
		}
		res->msg.type = CTXVM_MSG_RESULT;
		res->msg.status = CTXVM_RESULT_OK;
		res->msg.gas = msg->gas;
		memcpy(res->msg.window, msg->window, sizeof(res->msg.window));
		ctxvm_deliver(ctxvm_find(sess, u.resume_owner), res);
		res = NULL;
		e->ev.type = CTXVM_EVENT_RETURN;
		e->ev.endpoint = ep->id;
		e->ev.msg = *msg;
		ctxvm_queue_event(sess, e);
		e = NULL;
		if (ep->id != sess->root_id)
			ctxvm_retire(ep);
	}
	mutex_unlock(&sess->lock);
out_free:
	ctxvm_free(res);
	ctxvm_free(guard);
	ctxvm_free(e);
	return ret;
}

static int ctxvm_ctx_fail(struct ctxvm_endpoint *ep, const struct ctxvm_msg *msg)
{
	struct ctxvm_session *sess = ep->sess;
	struct ctxvm_unwind u;
	struct ctxvm_ev *e;
	u32 old_depth;
	int ret;

	ret = ctxvm_wait_event_space(sess);
	if (ret)
		return ret;
	e = ctxvm_zalloc(sizeof(*e));
	if (!e)
		return -ENOMEM;
	mutex_lock(&sess->lock);
	old_depth = sess->core.depth;
	ret = sess->shutdown ? -ESHUTDOWN :
	      ctxvm_status_errno(ctxvm_core_fail(&sess->core, ep->id, msg->gas, &u));
	if (!ret) {
		e->ev.type = CTXVM_EVENT_FAIL;
		e->ev.flags = u.session_failed ? CTXVM_EVENT_F_SESSION_FAILED
					       : CTXVM_EVENT_F_CAUGHT;
		e->ev.endpoint = ep->id;
		e->ev.gas_used = u.gas_used;
		e->ev.msg = *msg;
		ctxvm_unwound(sess, old_depth, &u, true);
		ctxvm_queue_event(sess, e);
		e = NULL;
	}
	mutex_unlock(&sess->lock);
	ctxvm_free(e);
	return ret;
}

static int ctxvm_ctx_finish(struct ctxvm_endpoint *ep, const struct ctxvm_msg *msg)
{
	struct ctxvm_session *sess = ep->sess;
	struct ctxvm_ev *e = ctxvm_zalloc(sizeof(*e));
	int ret;

	if (!e)
		return -ENOMEM;
	mutex_lock(&sess->lock);
	ret = sess->shutdown ? -ESHUTDOWN :
	      ctxvm_status_errno(ctxvm_core_finish(&sess->core, ep->id));
	if (!ret) {
		e->ev.type = CTXVM_EVENT_FINISH;
		e->ev.endpoint = ep->id;
		e->ev.msg = *msg;
		ctxvm_queue_event(sess, e);
		e = NULL;
		ctxvm_wake_all(sess);
	}
	mutex_unlock(&sess->lock);
	ctxvm_free(e);
	return ret;
}

static int ctxvm_ctx_caller(struct ctxvm_endpoint *ep, struct ctxvm_msg *msg)
{
	struct ctxvm_session *sess = ep->sess;
	u64 digest[4];
	int ret;

	mutex_lock(&sess->lock);
	ret = sess->shutdown ? -ESHUTDOWN :
	      ctxvm_status_errno(ctxvm_core_caller(&sess->core, ep->id, digest));
	mutex_unlock(&sess->lock);
	if (ret)
		return ret;
	memset(msg, 0, sizeof(*msg));
	msg->type = CTXVM_MSG_CALLER_REPLY;
	memcpy(msg->digest, digest, sizeof(msg->digest));
	return 0;
}

static int ctxvm_ctx_bind(struct ctxvm_endpoint *ep, unsigned long arg)
{
	struct ctxvm_session *sess = ep->sess;
	int ret = 0;

	if (arg)
		return -EINVAL;
	mutex_lock(&sess->lock);
	if (ep->pid)
		ret = -EBUSY;
	else
		WRITE_ONCE(ep->pid, get_pid(task_tgid(current)));
	mutex_unlock(&sess->lock);
	return ret;
}

static u64 ctxvm_msg_type(unsigned int cmd)
{
	switch (cmd) {
	case CTXVM_CTX_CALL:
		return CTXVM_MSG_CALL;
	case CTXVM_CTX_RETURN:
		return CTXVM_MSG_RETURN;
	case CTXVM_CTX_FAIL:
		return CTXVM_MSG_FAIL;
	case CTXVM_CTX_CALLER:
		return CTXVM_MSG_CALLER;
	case CTXVM_CTX_FINISH:
		return CTXVM_MSG_FINISH;
	case CTXVM_CTX_ABORT:
		return CTXVM_MSG_FAIL;
	default:
		return 0;
	}
}

static long ctxvm_ctx_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct ctxvm_endpoint *ep = file->private_data;
	void __user *argp = (void __user *)arg;
	struct ctxvm_msg msg;
	unsigned int i;
	u64 type;
	int ret;

	if (cmd == CTXVM_CTX_BIND)
		return ctxvm_ctx_bind(ep, arg);
	type = ctxvm_msg_type(cmd);
	if (!type && cmd != CTXVM_CTX_WAIT)
		return -ENOTTY;
	if (READ_ONCE(ep->pid) != task_tgid(current))
		return -EPERM;
	if (type) {
		if (copy_from_user(&msg, argp, sizeof(msg)))
			return -EFAULT;
		if (msg.type != type)
			return -EINVAL;
		for (i = 0; i < ARRAY_SIZE(msg.reserved); i++)
			if (msg.reserved[i])
				return -EINVAL;
	}
	switch (cmd) {
	case CTXVM_CTX_WAIT:
		return ctxvm_recv(ep, argp);
	case CTXVM_CTX_CALL:
		return ctxvm_ctx_call(ep, &msg, argp);
	case CTXVM_CTX_RETURN:
		return ctxvm_ctx_return(ep, &msg);
	case CTXVM_CTX_FAIL:
		return ctxvm_ctx_fail(ep, &msg);
	case CTXVM_CTX_FINISH:
		return ctxvm_ctx_finish(ep, &msg);
	case CTXVM_CTX_ABORT:
		ctxvm_ep_died(ep, &msg);
		return 0;
	default: /* CTXVM_CTX_CALLER */
		ret = ctxvm_ctx_caller(ep, &msg);
		break;
	}
	if (ret)
		return ret;
	/* msg was filled whole by memset. */
	if (copy_to_user(argp, &msg, sizeof(msg)))
		return -EFAULT;
	return 0;
}

static __poll_t ctxvm_ctx_poll(struct file *file, poll_table *wait)
{
	struct ctxvm_endpoint *ep = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &ep->wq, wait);
	if (ctxvm_ep_done(ep))
		mask |= EPOLLHUP;               /* what is queued is never delivered */
	else if (READ_ONCE(ep->nmail))
		mask |= EPOLLIN | EPOLLRDNORM;
	return mask;
}

static const struct file_operations ctxvm_ctx_fops = {
	.owner = THIS_MODULE,
	.release = ctxvm_ctx_release,
	.flush = ctxvm_ctx_flush,
	.poll = ctxvm_ctx_poll,
	.unlocked_ioctl = ctxvm_ctx_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* ---- session fd ---- */

static int ctxvm_session_release(struct inode *inode, struct file *file)
{
	struct ctxvm_session *sess = file->private_data;
	struct ctxvm_endpoint *ep, *tmp_ep;
	struct ctxvm_ev *e, *tmp_e;

	mutex_lock(&sess->lock);
	WRITE_ONCE(sess->shutdown, true);
	list_for_each_entry_safe(ep, tmp_ep, &sess->endpoints, node) {
		WRITE_ONCE(ep->gone, true);
		ctxvm_drop_mail(ep);
		wake_up_interruptible(&ep->wq);
		if (!ep->has_file)
			ctxvm_unlink(ep);
	}
	list_for_each_entry_safe(e, tmp_e, &sess->events, node) {
		list_del(&e->node);
		ctxvm_free(e);
	}
	sess->nevents = 0;
	wake_up(&sess->space_wq);
	mutex_unlock(&sess->lock);
	ctxvm_session_put(sess);
	return 0;
}

static bool ctxvm_events_ready(struct ctxvm_session *sess)
{
	return READ_ONCE(sess->nevents) || READ_ONCE(sess->shutdown) ||
	       READ_ONCE(sess->core.state) > CTXVM_S_RUNNING;
}

static int ctxvm_session_event(struct ctxvm_session *sess, bool nonblock,
			       void __user *argp)
{
	struct ctxvm_ev *e;
	int ret;

	for (;;) {
		if (nonblock && !ctxvm_events_ready(sess))
			return -EAGAIN;
		ret = wait_event_interruptible(sess->event_wq, ctxvm_events_ready(sess));
		if (ret)
			return ret;
		mutex_lock(&sess->lock);
		e = list_first_entry_or_null(&sess->events, struct ctxvm_ev, node);
		if (e) {
			list_del(&e->node);
			WRITE_ONCE(sess->nevents, sess->nevents - 1);
		}
		mutex_unlock(&sess->lock);
		if (e)
			wake_up(&sess->space_wq);
		if (e)
			break;
		if (ctxvm_events_ready(sess))
			return -ESHUTDOWN;
	}
	ret = copy_to_user(argp, &e->ev, sizeof(e->ev)) ? -EFAULT : 0;
	ctxvm_free(e);
	return ret;
}

static int ctxvm_session_add_kernel_proc(struct ctxvm_session *sess, void __user *argp)
{
	struct ctxvm_kernel_proc kp;
	int ret;

	if (copy_from_user(&kp, argp, sizeof(kp)))
		return -EFAULT;
	if (kp.flags || kp.pad || kp.reserved[0] || kp.reserved[1])
		return -EINVAL;
	mutex_lock(&sess->lock);
	if (sess->core.state != CTXVM_S_IDLE)
		ret = -EBUSY;
	else
		ret = ctxvm_status_errno(ctxvm_core_add_kernel_proc(&sess->core, kp.digest));
	mutex_unlock(&sess->lock);
	return ret;
}

static int ctxvm_session_start(struct ctxvm_session *sess, void __user *argp)
{
	struct ctxvm_endpoint *ep = NULL;
	struct ctxvm_mail *run = NULL;
	struct ctxvm_start st;
	unsigned int i;
	int ret;

	if (copy_from_user(&st, argp, sizeof(st)))
		return -EFAULT;
	if (st.flags || st.pad || st.endpoint)
		return -EINVAL;
	if (st.depth_limit > sess->core.capacity)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(st.reserved); i++)
		if (st.reserved[i])
			return -EINVAL;
	ep = ctxvm_ep_new();
	run = ctxvm_zalloc(sizeof(*run));
	if (!ep || !run) {
		ret = -ENOMEM;
		goto out_free;
	}
	mutex_lock(&sess->lock);
	if (sess->core.state != CTXVM_S_IDLE) {
		ret = -EBUSY;
	} else {
		if (st.depth_limit)
			sess->core.capacity = (u32)st.depth_limit;
		ret = ctxvm_status_errno(ctxvm_core_start(&sess->core, sess->next_id,
							  st.digest, st.gas));
	}
	if (ret) {
		mutex_unlock(&sess->lock);
		goto out_free;
	}
	ctxvm_ep_link(sess, ep);
	sess->root_id = ep->id;
	st.endpoint = ep->id;
	run->msg.type = CTXVM_MSG_RUN;
	run->msg.kind = CTXVM_FRAME_ROOT;
	run->msg.proc = st.proc;
	run->msg.gas = st.gas;
	run->msg.fmp = CTXVM_FMP_INIT;
	run->msg.budget = st.budget;
	memcpy(run->msg.digest, st.digest, sizeof(run->msg.digest));
	memcpy(run->msg.window, st.window, sizeof(run->msg.window));
	ctxvm_deliver(ep, run);
	mutex_unlock(&sess->lock);
	/* Every byte of st came from the caller or was set above. */
	return copy_to_user(argp, &st, sizeof(st)) ? -EFAULT : 0;

out_free:
	ctxvm_free(ep);
	ctxvm_free(run);
	return ret;
}

static int ctxvm_session_context_fd(struct ctxvm_session *sess, void __user *argp)
{
	struct ctxvm_context_fd cf;
	struct ctxvm_endpoint *ep;
	int fd;

	if (copy_from_user(&cf, argp, sizeof(cf)))
		return -EFAULT;
	if (cf.flags || cf.pad || cf.reserved[0] || cf.reserved[1])
		return -EINVAL;
	mutex_lock(&sess->lock);
	ep = sess->shutdown ? NULL : ctxvm_find(sess, cf.endpoint);
	if (!ep) {
		fd = sess->shutdown ? -ESHUTDOWN : -ENOENT;
	} else if (ep->has_file) {
		fd = -EBUSY;
	} else if (ep->gone) {
		fd = -ESHUTDOWN;
	} else {
		ep->has_file = true;
		kref_get(&sess->ref);
		fd = 0;
	}
	mutex_unlock(&sess->lock);
	if (fd)
		return fd;
	fd = anon_inode_getfd("ctxvm-context", &ctxvm_ctx_fops, ep, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		mutex_lock(&sess->lock);
		ep->has_file = false;
		if (ep->gone)
			ctxvm_unlink(ep);
		mutex_unlock(&sess->lock);
		ctxvm_session_put(sess);
	}
	return fd;
}

static int ctxvm_session_info(struct ctxvm_session *sess, void __user *argp)
{
	struct ctxvm_session_info info;

	memset(&info, 0, sizeof(info));
	mutex_lock(&sess->lock);
	info.state = sess->core.state;
	info.depth = sess->core.depth;
	info.max_depth_seen = sess->core.max_depth_seen;
	info.contexts = sess->core.contexts;
	info.endpoints = sess->nendpoints;
	mutex_unlock(&sess->lock);
	return copy_to_user(argp, &info, sizeof(info)) ? -EFAULT : 0;
}

static long ctxvm_session_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct ctxvm_session *sess = file->private_data;
	void __user *argp = (void __user *)arg;

	switch (cmd) {
	case CTXVM_ADD_KERNEL_PROC:
		return ctxvm_session_add_kernel_proc(sess, argp);
	case CTXVM_START:
		return ctxvm_session_start(sess, argp);
	case CTXVM_CONTEXT_FD:
		return ctxvm_session_context_fd(sess, argp);
	case CTXVM_EVENT:
		return ctxvm_session_event(sess, file->f_flags & O_NONBLOCK, argp);
	case CTXVM_SESSION_INFO:
		return ctxvm_session_info(sess, argp);
	default:
		return -ENOTTY;
	}
}

static __poll_t ctxvm_session_poll(struct file *file, poll_table *wait)
{
	struct ctxvm_session *sess = file->private_data;

	poll_wait(file, &sess->event_wq, wait);
	if (READ_ONCE(sess->nevents))
		return EPOLLIN | EPOLLRDNORM;
	return ctxvm_events_ready(sess) ? EPOLLHUP : 0;
}

static const struct file_operations ctxvm_session_fops = {
	.owner = THIS_MODULE,
	.release = ctxvm_session_release,
	.poll = ctxvm_session_poll,
	.unlocked_ioctl = ctxvm_session_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* ---- /dev/ctxvm ---- */

static int ctxvm_create_session(unsigned long arg)
{
	unsigned int depth = clamp(READ_ONCE(max_depth), 1U, CTXVM_HARD_MAX);
	struct ctxvm_session *sess;
	int fd;

	if (arg)
		return -EINVAL;
	if (atomic_inc_return(&ctxvm_nsessions) > READ_ONCE(max_sessions)) {
		atomic_dec(&ctxvm_nsessions);
		return -EMFILE;
	}
	sess = ctxvm_zalloc(sizeof(*sess));
	if (!sess)
		goto out_dec;
	sess->frames = kvcalloc(depth, sizeof(*sess->frames), GFP_KERNEL_ACCOUNT);
	if (!sess->frames) {
		ctxvm_free(sess);
		goto out_dec;
	}
	atomic_long_inc(&ctxvm_allocs);
	kref_init(&sess->ref);
	mutex_init(&sess->lock);
	ctxvm_core_init(&sess->core, sess->frames, depth);
	INIT_LIST_HEAD(&sess->endpoints);
	INIT_LIST_HEAD(&sess->events);
	init_waitqueue_head(&sess->event_wq);
	init_waitqueue_head(&sess->space_wq);
	sess->max_contexts = clamp(READ_ONCE(max_contexts), 1U, CTXVM_HARD_MAX);
	sess->max_events = 2 * sess->max_contexts + 16;
	sess->hard_max_events = sess->max_events + sess->max_contexts + 16;
	sess->next_id = 1;

	fd = anon_inode_getfd("ctxvm-session", &ctxvm_session_fops, sess, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		ctxvm_session_put(sess);
	return fd;

out_dec:
	atomic_dec(&ctxvm_nsessions);
	return -ENOMEM;
}

static long ctxvm_check_extension(unsigned long arg)
{
	switch (arg) {
	case CTXVM_CAP_MAX_SESSIONS:
		return READ_ONCE(max_sessions);
	case CTXVM_CAP_MAX_CONTEXTS:
		return clamp(READ_ONCE(max_contexts), 1U, CTXVM_HARD_MAX);
	case CTXVM_CAP_MAX_DEPTH:
		return clamp(READ_ONCE(max_depth), 1U, CTXVM_HARD_MAX);
	case CTXVM_CAP_LIVE_SESSIONS:
		return atomic_read(&ctxvm_nsessions);
	case CTXVM_CAP_LIVE_ALLOCS:
		return atomic_long_read(&ctxvm_allocs);
	case CTXVM_CAP_MSG_SIZE:
		return sizeof(struct ctxvm_msg);
	default:
		return 0;
	}
}

static long ctxvm_dev_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case CTXVM_GET_API_VERSION:
		return arg ? -EINVAL : CTXVM_API_VERSION;
	case CTXVM_CHECK_EXTENSION:
		return ctxvm_check_extension(arg);
	case CTXVM_CREATE_SESSION:
		return ctxvm_create_session(arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations ctxvm_dev_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = ctxvm_dev_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice ctxvm_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ctxvm",
	.fops = &ctxvm_dev_fops,
	.mode = 0600,
};

module_misc_device(ctxvm_dev);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ctxvm: the broker of MASM execution contexts");
