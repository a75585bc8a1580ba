/* The directory of resident user actors: mailbox id (userId) → actor id.
 *
 * A mailbox has at most one resident actor. get-or-spawn happens under one
 * lock, so two requests for a mailbox that is not resident cannot create two
 * actors. A hibernating actor removes itself; a message that races with that
 * gets ENS_ENOACTOR from rt_send and act_directory_send retries once with a
 * fresh actor, which reloads the state from Redis. Thread-safe. */
#ifndef ENS_ACTORS_DIRECTORY_H
#define ENS_ACTORS_DIRECTORY_H

#include <stddef.h>

#include "runtime/rt.h"

struct act_directory;

/* The spawn function makes the actor for |uid| (copy it) on the scheduler
 * chosen by act_directory_place; 0 and *out set, or a negative code. */
typedef int (*act_spawn_fn)(struct rt *rt, int sched, const char *uid, void *ud, rt_actor_id *out);

struct act_directory *act_directory_new(struct rt *rt, act_spawn_fn spawn, void *ud);
void act_directory_free(struct act_directory *d);

/* act_directory_send delivers |m| to the actor of |uid|, spawning it when not
 * resident. Takes ownership of |m| on success only. */
int act_directory_send(struct act_directory *d, const char *uid, struct rt_msg *m);

/* act_directory_remove forgets |uid| if it still maps to |id| (hibernation or
 * stop). Call before rt_actor_stop so no new message is routed to it. */
void act_directory_remove(struct act_directory *d, const char *uid, rt_actor_id id);

/* act_directory_count returns the number of resident mailbox actors. */
size_t act_directory_count(struct act_directory *d);

/* act_directory_place returns the scheduler index for |uid|: a stable hash, so
 * a mailbox always lives on the same thread while the thread count is fixed. */
int act_directory_place(const struct act_directory *d, const char *uid);

#endif
