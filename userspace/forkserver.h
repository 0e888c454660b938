/* SPDX-License-Identifier: MIT */
/*
 * The fork server: a small process, started before any context runs, that
 * forks every context process, locks it down (sandbox.c) and reaps it when
 * the broker says so.  Contexts are never forked from the runner, so fork
 * cost does not grow with what the runner holds; each child is a fresh fork
 * that has never run other code (no reuse).
 *
 * Requests go one way on `ctrl`.  forkserver_spawn and forkserver_reap wait
 * for their answer there; forkserver_spawn_async and forkserver_spawn_pooled
 * do not (the pid, and a pooled process's endpoint, come later on `note`).
 * forkserver_release kills the process itself and leaves the reaping to the
 * server with the next request; forkserver_end leaves all of it (and a
 * replacement) to the server.  So the broker never waits for a fork or an
 * exit on the path of a call, and the server is not woken once more per
 * call just to reap.
 */
#ifndef CTXVM_FORKSERVER_H
#define CTXVM_FORKSERVER_H

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "interp.h"
#include "program.h"

#define FS_DEAD_BATCH 8         /* released, not yet reaped: sent along with the next request */

struct forkserver {
	pid_t pid;
	int ctrl;
	int note;               /* where forkserver_spawn_async's pids arrive */
	bool kmod_endpoint;     /* set before start: endpoints are /dev/ctxvm context fds */
	/*
	 * Set before start: keep the calling thread and every context on the
	 * CPU the caller is on (the session's) until stop.  Only one context of
	 * a run runs at a time, and a wake-up across CPUs costs ~40 us here.
	 * The server runs there too, unless `spare` is also set and the
	 * caller's mask has another CPU: then the server, and every process it
	 * forks until forkserver_place() brings it over, run on that one, so
	 * pre-forking and exits never take the session's CPU.
	 */
	bool pin;
	bool spare;
	int cpu;                /* after start: the session's CPU, or -1 */
	int server_cpu;         /* after start: the server's CPU, or -1 */
	bool pinned;
	cpu_set_t saved_affinity;
	pid_t dead[FS_DEAD_BATCH];
	unsigned ndead;
};

struct reaped {
	int status;             /* wait status */
	uint64_t cpu_ns;        /* user + system time the process used */
};

struct fs_spawned {
	uint64_t tag;           /* as given to forkserver_spawn_async */
	int64_t pid;            /* or -errno if fork failed */
};

int forkserver_start(struct forkserver *fs, const struct ctx_program *prog,
		     const struct run_options *opts, char *err, size_t errlen);
/* A locked-down context process on `endpoint` (which stays ours to close). */
pid_t forkserver_spawn(struct forkserver *fs, int endpoint, uint64_t gas_limit);
/*
 * The same without waiting: 0 once the request is sent; the pid arrives on
 * fs->note as a struct fs_spawned carrying `tag` (forkserver_next_spawned).
 * The process is moved to the session's CPU at once.
 */
int forkserver_spawn_async(struct forkserver *fs, int endpoint, uint64_t gas_limit, uint64_t tag);
/* Move a process to the session's CPU, or to the server's (a no-op if they are one). */
void forkserver_place(struct forkserver *fs, pid_t pid, bool session);
/*
 * 1 and *out, 0 if none is there and !wait, -1 if the server is gone.  *fd
 * is the runner's end of the endpoint of a forkserver_spawn_pooled process,
 * else -1.
 */
int forkserver_next_spawned(struct forkserver *fs, struct fs_spawned *out, int *fd, bool wait);
/*
 * A pre-forked process, on an endpoint the server makes (so its cost is
 * not the caller's): pid and the caller's end arrive on fs->note.  It stays
 * on the server's CPU until placed.
 */
int forkserver_spawn_pooled(struct forkserver *fs, uint64_t gas_limit, uint64_t tag);
/*
 * End a process on the server's CPU: the server moves it there, kills and
 * reaps it, and closes `endpoint` (always closed here) once its peer is
 * gone, all off the caller's CPU.  A nonzero respawn_tag asks for a pooled
 * replacement in the same request.
 */
int forkserver_end(struct forkserver *fs, pid_t pid, int endpoint, uint64_t respawn_tag,
		   uint64_t gas_limit);
/* SIGKILL (harmless if already dead) and wait; no zombie is left. */
int forkserver_reap(struct forkserver *fs, pid_t pid, struct reaped *out);
/*
 * SIGKILL now, without waiting; the server reaps it along with the next
 * request (or when FS_DEAD_BATCH are pending, or at stop).
 */
int forkserver_release(struct forkserver *fs, pid_t pid);
/* The server kills and reaps every process it still has, then exits. */
void forkserver_stop(struct forkserver *fs);

#endif /* CTXVM_FORKSERVER_H */
