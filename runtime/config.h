/* The server's configuration: one JSON file of nested sections, every key
 * overridable by an environment variable ENS_<SECTION>_<KEY>, the environment
 * winning over the file (API.md section 5; docs/configuration.md lists every key).
 *
 * Loading is all-or-nothing: an unknown key in the file or a bad value from
 * either source fails the load with a message naming the key and where the value
 * came from, and |out| is left empty. Strings are owned by the struct and freed
 * by ens_config_cleanup; callers borrow them. A loaded config is read-only, so
 * any thread may read it once loading returned. */
#ifndef ENS_RUNTIME_CONFIG_H
#define ENS_RUNTIME_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/buf.h"
#include "runtime/log.h"

/* Caps on what a single value may be; the file itself is capped by
 * CONFIG_MAX_FILE_BYTES in runtime/limits.h. */
#define ENS_CONFIG_MAX_VALUE_BYTES 4096
#define ENS_CONFIG_MAX_HOST_BYTES  256
#define ENS_CONFIG_MAX_THREADS     256

/* The typed configuration. Optional keys without a default are NULL when unset.
 * Every path member is absolute or resolved against |dir|. */
struct ens_config {
    struct {
        char *public_addr; /* listen.public, "host:port" or "[v6]:port" */
        char *admin;       /* listen.admin */
    } listen;
    struct {
        char *cert; /* PEM chain; TLS on listen.public when set */
        char *key;
    } tls;
    struct {
        char *base_path;  /* "/api/ens"; "" mounts at the root */
        char *public_url; /* external base URL Exchange calls back */
        int max_body_bytes;
    } http;
    struct {
        char *master_key_file;
        char *master_key; /* ENS_SECRETS_MASTER_KEY, base64; secret: never logged or dumped */
    } secrets;
    struct {
        char *url; /* redis://, rediss:// or unix:// */
    } redis;
    struct {
        char *ca_file;
        int timeout_ms;
        int status_frequency_min;
        bool allow_private_networks;
    } ews;
    struct {
        char *url;
        char *sandbox_url;
        char *team_id;
        char *key_id;
        char *key_file;
        char *cert_file;
        char *ca_file;
        int connections;
    } apns;
    struct {
        char *url;
        char *token_url;
        char *service_account_file;
        char *ca_file;
    } fcm;
    struct {
        int passivate_after_ms; /* a mailbox actor leaves memory this long after its work */
        int max_resident;       /* past this many, it leaves at once */
        int cache_entries;      /* memos of passivated mailboxes, all schedulers together */
    } mailbox;
    struct {
        int expiry_s;          /* a push not accepted by then is dropped and counted */
        int retry_max_ms;      /* back-off cap between tries */
        int stream_timeout_ms; /* a first try's stream deadline; doubles per timeout, 4x cap */
    } push;
    struct {
        char *token_file;
    } admin;
    struct {
        int address_per_minute, address_burst; /* per source address (IPv6: per /64) */
        int token_per_minute, token_burst;     /* per API token */
        int mailbox_per_minute, mailbox_burst; /* per mailbox (tenant, email) */
        int entries;                           /* buckets in each table */
    } ratelimit;
    struct {
        int threads;
    } runtime;
    struct {
        enum rt_log_level level;
        enum rt_log_format format;
    } log;

    char *file; /* the config file as given to ens_config_load, or NULL */
    char *dir;  /* absolute directory relative paths were resolved against */
};

/* ens_config_load fills |out| from the defaults, then the JSON file at |path|
 * (NULL: no file), then the ENS_* variables of |envp| (a NULL-terminated
 * "NAME=value" array such as environ; NULL: none). Environment variables that
 * name no key are ignored, since ENS_ADMIN_URL and friends belong to ensctl.
 *
 * Returns 0, ENS_ECONFIG with a one-line message in |err| (at most |errlen|
 * bytes, NUL-terminated; the message never contains a secret) or ENS_EINVAL for
 * NULL arguments. On error |out| holds nothing to clean up, though calling
 * ens_config_cleanup on it is harmless. Blocking (reads the file); call it at
 * start-up, before any loop runs. */
int ens_config_load(const char *path, char *const *envp, struct ens_config *out, char *err,
                    size_t errlen);

/* ens_config_cleanup frees every member, wiping the secrets first, and zeroes
 * |cfg|. Accepts a zeroed or already cleaned struct. */
void ens_config_cleanup(struct ens_config *cfg);

/* ens_config_dump appends the effective configuration to |out| as one JSON
 * object of sections (what `ensd --check-config` prints). Secrets are shown as
 * "<redacted>" and the userinfo of URLs is elided. Returns 0 or ENS_ETOOBIG
 * when |out|'s cap is too small (|out| is then unchanged). */
int ens_config_dump(const struct ens_config *cfg, struct rt_buf *out);

/* ens_config_hostport_split splits a listen address as validated by the loader
 * ("host:port", "[v6]:port") into |host| (brackets removed, capacity |hostcap|)
 * and |port|. Returns 0 or ENS_EINVAL. Pure; any thread. */
int ens_config_hostport_split(const char *hostport, char *host, size_t hostcap, uint16_t *port);

#endif
