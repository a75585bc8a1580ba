/* A private redis-server for tests: its own temporary directory, its own unix
 * socket (or a free loopback port), no persistence. Test thread only; the
 * calls block for at most a few seconds while the server starts or stops. */
#ifndef ENS_TESTS_SUPPORT_REDIS_FIXTURE_H
#define ENS_TESTS_SUPPORT_REDIS_FIXTURE_H

#include <limits.h>
#include <sys/types.h>

#define REDIS_FIXTURE_START_MS 5000 /* longest wait for the server to answer */

struct redis_fixture {
    char dir[80]; /* a unix socket path must fit in 108 bytes */
    char sock[96];
    char url[128];
    int port; /* 0 when listening on the unix socket only */
    pid_t pid;
};

/* redis_fixture_start starts redis-server ($ENS_REDIS_SERVER or
 * /usr/bin/redis-server) in a fresh mkdtemp directory, on DIR/redis.sock, or on
 * a free 127.0.0.1 port when |tcp| is set, and waits until it answers PING.
 * f->url is then unix://DIR/redis.sock or redis://127.0.0.1:PORT/0. The child
 * dies with the test process. 0 or -1. */
int redis_fixture_start(struct redis_fixture *f, int tcp);

/* redis_fixture_kill stops the server (SIGTERM, then waits) and keeps the
 * directory so that redis_fixture_restart can bring it back. 0 or -1. */
int redis_fixture_kill(struct redis_fixture *f);

/* redis_fixture_restart starts the server again on the same socket or port. */
int redis_fixture_restart(struct redis_fixture *f);

/* redis_fixture_stop kills the server if it runs and removes the directory. */
void redis_fixture_stop(struct redis_fixture *f);

/* redis_fixture_cmd runs one command on a fresh blocking connection and waits
 * for its answer ("FLUSHALL", "CLIENT PAUSE 500"): 0, or -1 on any failure or
 * error reply. Arguments are split on spaces. */
int redis_fixture_cmd(struct redis_fixture *f, const char *cmd);

/* redis_fixture_get reads the string value of |key| into |out| (|cap| bytes,
 * NUL-terminated); returns its length, -2 when absent, -1 on failure. */
long redis_fixture_get(struct redis_fixture *f, const char *key, char *out, size_t cap);

/* redis_fixture_exists returns 1 if |key| exists, 0 if not, -1 on failure. */
int redis_fixture_exists(struct redis_fixture *f, const char *key);

#endif
