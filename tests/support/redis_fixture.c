#include "tests/support/redis_fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FIXTURE_MAX_ARGS 16

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static redisContext *fixture_connect(struct redis_fixture *f)
{
    struct timeval tv = {1, 0};
    redisContext *c = f->port ? redisConnectWithTimeout("127.0.0.1", f->port, tv)
                              : redisConnectUnixWithTimeout(f->sock, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c)
        redisSetTimeout(c, (struct timeval){5, 0});
    return c;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int spawn(struct redis_fixture *f)
{
    const char *bin = getenv("ENS_REDIS_SERVER");
    char port[16], log[128];
    if (bin == NULL || bin[0] == '\0')
        bin = "/usr/bin/redis-server";
    snprintf(port, sizeof(port), "%d", f->port);
    snprintf(log, sizeof(log), "%s/redis.log", f->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* the server must not outlive a test that crashed */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, bin, "--port", port, "--bind", "127.0.0.1", "--unixsocket", f->sock,
              "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", f->dir,
              "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    f->pid = pid;
    for (int waited = 0; waited < REDIS_FIXTURE_START_MS; waited += 20) {
        redisContext *c = fixture_connect(f);
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            f->pid = 0;
            fprintf(stderr, "redis_fixture: %s exited, see %s\n", bin, log);
            return -1;
        }
        sleep_ms(20);
    }
    redis_fixture_kill(f);
    return -1;
}

int redis_fixture_start(struct redis_fixture *f, int tcp)
{
    memset(f, 0, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(f->dir, sizeof(f->dir), "%s/ens-redis-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (n < 0 || (size_t)n >= sizeof(f->dir) - 16)
        snprintf(f->dir, sizeof(f->dir), "/tmp/ens-redis-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->sock, sizeof(f->sock), "%s/redis.sock", f->dir);
    if (tcp) {
        f->port = free_port();
        if (f->port <= 0)
            return -1;
        snprintf(f->url, sizeof(f->url), "redis://127.0.0.1:%d/0", f->port);
    } else {
        snprintf(f->url, sizeof(f->url), "unix://%s", f->sock);
    }
    return spawn(f);
}

int redis_fixture_kill(struct redis_fixture *f)
{
    if (f->pid <= 0)
        return 0;
    kill(f->pid, SIGTERM);
    int st;
    for (int waited = 0; waited < REDIS_FIXTURE_START_MS; waited += 10) {
        if (waitpid(f->pid, &st, WNOHANG) == f->pid) {
            f->pid = 0;
            return 0;
        }
        sleep_ms(10);
    }
    kill(f->pid, SIGKILL);
    waitpid(f->pid, &st, 0);
    f->pid = 0;
    return -1;
}

int redis_fixture_restart(struct redis_fixture *f)
{
    redis_fixture_kill(f);
    return spawn(f);
}

void redis_fixture_stop(struct redis_fixture *f)
{
    redis_fixture_kill(f);
    if (f->dir[0] == '\0')
        return;
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[384];
            snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(f->dir);
    f->dir[0] = '\0';
}

static redisReply *run(struct redis_fixture *f, int argc, const char **argv)
{
    redisContext *c = fixture_connect(f);
    if (c == NULL)
        return NULL;
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    redisFree(c);
    return r;
}

int redis_fixture_cmd(struct redis_fixture *f, const char *cmd)
{
    char copy[1024];
    const char *argv[FIXTURE_MAX_ARGS];
    int argc = 0;
    snprintf(copy, sizeof(copy), "%s", cmd);
    for (char *save = NULL, *t = strtok_r(copy, " ", &save); t && argc < FIXTURE_MAX_ARGS;
         t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    if (argc == 0)
        return -1;
    redisReply *r = run(f, argc, argv);
    int rc = (r == NULL || r->type == REDIS_REPLY_ERROR) ? -1 : 0;
    freeReplyObject(r);
    return rc;
}

long redis_fixture_get(struct redis_fixture *f, const char *key, char *out, size_t cap)
{
    const char *argv[2] = {"GET", key};
    redisReply *r = run(f, 2, argv);
    long rc = -1;
    if (r && r->type == REDIS_REPLY_NIL)
        rc = -2;
    else if (r && r->type == REDIS_REPLY_STRING && r->len < cap) {
        memcpy(out, r->str, r->len);
        out[r->len] = '\0';
        rc = (long)r->len;
    }
    freeReplyObject(r);
    return rc;
}

int redis_fixture_exists(struct redis_fixture *f, const char *key)
{
    const char *argv[2] = {"EXISTS", key};
    redisReply *r = run(f, 2, argv);
    int rc = (r && r->type == REDIS_REPLY_INTEGER) ? (r->integer > 0) : -1;
    freeReplyObject(r);
    return rc;
}
