/* The mailbox in Redis: its state, its devices, its device index entries and
 * its sealed credential blobs. docs/redis.md has the layout and the figures.
 *
 * Layout (one hash tag per mailbox, so a Redis Cluster could shard by it):
 *   ens:u:{<uid>}   HASH  "m"          the mailbox record: every scalar of
 *                                      struct store_user and every device, in
 *                                      the compact binary encoding below
 *                         "c:<credId>" a sealed credential blob (binary)
 *   ens:seen:{<uid>}:<digest>  STRING "1", expiring: a request already received
 *   ens:idx:dev:<deviceId>  STRING uid (its own slot; written in the same
 *                           MULTI as the mailbox, so a single-node Redis)
 * One record instead of one field per value keeps the hash to a few fields:
 * the blob and the record are longer than hash-max-listpack-value, so the
 * hash is a real hashtable, whose cost is per field.
 * Nothing secret is stored in clear: devices keep only a SHA-256 of their key,
 * credentials only as blobs the caller sealed.
 *
 * All functions run on the store's loop thread. Async calls follow
 * store_redis.h: an error return means the callback never runs; 0 means it runs
 * exactly once, later (ENS_ECANCELED when the store is freed first). */
#ifndef ENS_PERSISTENCE_STORE_USER_H
#define ENS_PERSISTENCE_STORE_USER_H

#include <stddef.h>
#include <stdint.h>

#include "persistence/store_redis.h"
#include "runtime/buf.h"
#include "runtime/span.h"

#define STORE_ID_CHARS             22 /* base64url of 16 random bytes */
#define STORE_MAX_DEVICES          32
#define STORE_MAX_CLIENT_ID        128
#define STORE_MAX_PUSH_TOKEN       512
#define STORE_MAX_APP_ID           256
#define STORE_MAX_EMAIL            320
#define STORE_MAX_EWS_URL          2048
#define STORE_MAX_SUB_ID           1024 /* SOAP_MAX_ID_BYTES */
#define STORE_MAX_WATERMARK        1024
#define STORE_CRED_ID_CHARS        16 /* hex */
#define STORE_MAX_PUSH_RESULT      32
#define STORE_MAX_CRED_BLOB        (64 * 1024)
#define STORE_KEY_HASH_CHARS       64   /* hex SHA-256 */
#define STORE_REQUEST_DIGEST_CHARS 32   /* hex of a 128-bit request digest */
#define STORE_MAX_DEVICE_RECORD    2048 /* one encoded device (fields at most ~1 KiB) */
/* An encoded mailbox: the scalars (at most ~4.5 KiB) and every device framed. */
#define STORE_MAX_MAILBOX_RECORD (8 * 1024 + STORE_MAX_DEVICES * (STORE_MAX_DEVICE_RECORD + 32))

enum store_sub_state {
    STORE_SUB_NONE = 0,
    STORE_SUB_SUBSCRIBING,
    STORE_SUB_ACTIVE,
    STORE_SUB_PENDING,
    STORE_SUB_STALE,
    STORE_SUB_LOST,
    STORE_SUB_BLOCKED,
};
#define STORE_SUB_STATE_COUNT 7

/* store_sub_state_name returns the static lower-case name ("active"), or
 * "none" for an out-of-range value. */
const char *store_sub_state_name(enum store_sub_state st);

/* store_sub_state_parse maps a name to its state: 1 on success, 0 if unknown. */
int store_sub_state_parse(struct span name, enum store_sub_state *out);

/* store_id_new writes a fresh random id (22 base64url chars and a NUL). */
void store_id_new(char out[STORE_ID_CHARS + 1]);

/* store_id_valid returns 1 if |id| is exactly STORE_ID_CHARS base64url chars. */
int store_id_valid(const char *id);

struct store_device {
    char device_id[STORE_ID_CHARS + 1];      /* ours, stable for (tenant, client id) */
    char client_id[STORE_MAX_CLIENT_ID + 1]; /* the app's device.id */
    char platform[8];                        /* "ios" | "android" */
    char push_token[STORE_MAX_PUSH_TOKEN + 1];
    char app_id[STORE_MAX_APP_ID + 1];
    char environment[12];                    /* "production" | "sandbox" */
    char key_hash[STORE_KEY_HASH_CHARS + 1]; /* hex SHA-256 of the deviceKey */
    char preview[8];                         /* "full" | "sender" | "none" */
    int badge;                               /* 0 or 1 */
    int blocked;                             /* 0 or 1 */
    int64_t created_at;
    int64_t last_push_at;
    char last_push_result[STORE_MAX_PUSH_RESULT + 1];
    uint16_t cred_fp; /* fingerprint of the credentials that last proved this
                         device's right to the mailbox; 0: never proved */
};

struct store_sub {
    char id[STORE_MAX_SUB_ID + 1]; /* "" when there is none */
    enum store_sub_state state;
    char watermark[STORE_MAX_WATERMARK + 1];
    char cred_id[STORE_CRED_ID_CHARS + 1]; /* lower-case hex, "" for none */
    uint32_t sealing_kid;
    uint32_t status_frequency_min;
    int64_t last_status_at;
    int64_t created_at;
};

struct store_counters {
    uint64_t callbacks;
    uint64_t notifications;
    uint64_t pushes_ok;
    uint64_t pushes_failed;
};

struct store_user {
    char user_id[STORE_ID_CHARS + 1];
    char tenant_id[STORE_ID_CHARS + 1];
    char email[STORE_MAX_EMAIL + 1];
    char ews_url[STORE_MAX_EWS_URL + 1];
    char auth_type[12]; /* "basic" | "oauth" | "certificate" */
    uint16_t cred_fp;   /* keyed fingerprint of the credentials, 16 bits at most */
    int badge;
    int64_t created_at;
    int64_t updated_at;
    struct store_sub sub;
    struct store_counters counters;
    struct store_device *devices; /* n_devices entries, owned */
    size_t n_devices;
};

/* store_user_new returns a zeroed user with no devices; free with store_user_free. */
struct store_user *store_user_new(void);

/* store_user_free releases |u| and its devices; NULL is fine. */
void store_user_free(struct store_user *u);

/* store_user_add_device appends a zeroed device and returns it (borrowed, valid
 * until the next add/remove), or NULL at STORE_MAX_DEVICES. */
struct store_device *store_user_add_device(struct store_user *u);

/* store_user_find_device returns the device with |device_id| (borrowed) or NULL. */
struct store_device *store_user_find_device(struct store_user *u, const char *device_id);

/* store_user_remove_device drops the device; 0 or ENS_ENOTFOUND. Pointers to
 * devices are invalidated. The caller passes the id to store_user_save so the
 * index entry goes too. */
int store_user_remove_device(struct store_user *u, const char *device_id);

/* Records. A record is a run of items, each a tag byte then a value; tags rise
 * strictly, and a field at its default ("", 0, the first name of its set) is
 * left out and refused when present. Numbers are minimal LEB128 varints
 * (signed ones zigzagged); a string is a varint (stored length << 2 | kind)
 * and the stored bytes: the text itself (kind 0), or the bytes its canonical
 * lower-case hex (1), padded base64 (2) or unpadded base64url (3) spelling
 * encodes. Every valid record therefore has exactly one encoding.
 * Tags are the 1-based rows of the field tables in store_user.c (docs/redis.md
 * lists them). */

/* store_device_encode appends the device's record (without device_id, which
 * frames it) to |out|: 0, ENS_EINVAL (the device does not validate) or
 * ENS_ETOOBIG (past STORE_MAX_DEVICE_RECORD or |out|'s cap; |out| unchanged). */
int store_device_encode(const struct store_device *d, struct rt_buf *out);

/* store_device_decode parses an untrusted stored device record into |out|
 * (device_id is left alone). Strict: unknown or repeated tags, non-minimal
 * numbers, explicit defaults, trailing bytes and devices that do not validate
 * are refused. 0, ENS_EPARSE or ENS_ETOOBIG; |out| is unspecified on error. */
int store_device_decode(struct span rec, struct store_device *out);

/* store_user_encode appends the mailbox record of |u| (a version byte, the
 * scalar fields, then each device as tag 0x80, a varint length, its 22-char
 * id as a string and its device record): 0, ENS_EINVAL (|u| does not validate) or
 * ENS_ETOOBIG (|out| unchanged). */
int store_user_encode(const struct store_user *u, struct rt_buf *out);

/* store_user_decode parses an untrusted mailbox record for mailbox |uid| into
 * a new user that the caller owns (store_user_free). The framing and the
 * scalars are strict; a device whose record does not decode is skipped with a
 * warning, so one bad device cannot lock a mailbox (the next save drops it).
 * 0, ENS_EPARSE, ENS_ETOOBIG or ENS_EINVAL (bad uid); *out is NULL on error. */
int store_user_decode(struct span rec, const char *uid, struct store_user **out);

typedef void (*store_user_cb)(int err, struct store_user *u, void *ud);
typedef void (*store_done_cb)(int err, void *ud);
typedef void (*store_uid_cb)(int err, const char *uid, void *ud);
typedef void (*store_blob_cb)(int err, struct span blob, void *ud);

/* store_user_load reads a mailbox in one round trip (HGET of its record;
 * credential blobs are not read). The callback gets 0 and a user it then owns
 * (store_user_free), or ENS_ENOTFOUND / ENS_ESTORE / ENS_ETIMEDOUT /
 * ENS_ECANCELED / ENS_EPARSE / ENS_ETOOBIG with u NULL. Synchronous errors:
 * ENS_EINVAL (bad uid) and those of store_cmdargv. */
int store_user_load(struct store *s, const char *uid, uint64_t deadline_ms, store_user_cb cb,
                    void *ud);

/* store_user_save writes the mailbox record (one HSET on the mailbox's own
 * key, so the credential blobs beside it are kept; its result is the
 * callback's) and, with STORE_SAVE_INDEX in |flags|, pipelined beside it,
 * every device's index entry (one SET each, in their own hash slots:
 * Cluster-safe, idempotent; a failed one is written again by the next save
 * that asks for the index). Saves that change no device (a callback's) leave
 * the index alone: one write. |removed_ids| (|n_removed| device ids, may be
 * NULL) lose their index entries unless they are back in |u| or now name
 * another mailbox. |u| is borrowed and only read during the call. ENS_EINVAL
 * for a user that does not validate (ids, sizes, names, duplicate devices),
 * ENS_ETOOBIG past STORE_MAX_MAILBOX_RECORD. */
#define STORE_SAVE_INDEX 1u /* also (re)write every device's index entry */

int store_user_save(struct store *s, const struct store_user *u, const char *const *removed_ids,
                    size_t n_removed, unsigned flags, uint64_t deadline_ms, store_done_cb cb,
                    void *ud);

/* store_user_delete removes the mailbox hash (record and every credential
 * blob) and its devices' index entries that still name it: two round trips, a
 * read of the record for the device ids, then the DEL of the mailbox key with
 * the index removals pipelined beside it. ENS_ENOTFOUND to the callback when
 * there was no mailbox record (blobs without one are removed all the same). */
int store_user_delete(struct store *s, const char *uid, uint64_t deadline_ms, store_done_cb cb,
                      void *ud);

/* store_user_find_by_device looks up the mailbox of a device id. The
 * callback's |uid| is borrowed for the call; ENS_ENOTFOUND when absent. The
 * index is written beside the mailbox, not with it: the caller checks that the
 * mailbox does hold the device and, when it does not, drops the entry with
 * store_user_index_repair. */
int store_user_find_by_device(struct store *s, const char *device_id, uint64_t deadline_ms,
                              store_uid_cb cb, void *ud);

/* store_user_index_repair deletes device |device_id|'s index entry if it
 * still names mailbox |uid| (which does not hold the device): an entry left
 * by a save or delete whose index write failed. Idempotent. */
int store_user_index_repair(struct store *s, const char *device_id, const char *uid,
                            uint64_t deadline_ms, store_done_cb cb, void *ud);

/* store_cred_put stores a sealed blob (binary-safe, at most STORE_MAX_CRED_BLOB
 * bytes, copied during the call) as field "c:<credId>" of the mailbox hash,
 * replacing one of the same id. One command, so atomic. */
int store_cred_put(struct store *s, const char *uid, const char *cred_id, const void *blob,
                   size_t len, uint64_t deadline_ms, store_done_cb cb, void *ud);

/* store_cred_get reads a blob; the span is borrowed for the callback only (the
 * caller copies what it keeps and wipes it after use). ENS_ENOTFOUND when absent. */
int store_cred_get(struct store *s, const char *uid, const char *cred_id, uint64_t deadline_ms,
                   store_blob_cb cb, void *ud);

/* store_request_claim records that a request with |digest| (lower-case hex,
 * at most STORE_REQUEST_DIGEST_CHARS) reached mailbox |uid|, for |ttl_s|
 * seconds: ens:seen:{uid}:<digest>, in the mailbox's slot, SET NX EX. The
 * callback gets 0 for the first claim, ENS_EEXIST when it was claimed before
 * within the ttl (a replay), or a store error. */
int store_request_claim(struct store *s, const char *uid, const char *digest, uint32_t ttl_s,
                        uint64_t deadline_ms, store_done_cb cb, void *ud);

/* store_cred_del removes a blob; not an error when it was absent. */
int store_cred_del(struct store *s, const char *uid, const char *cred_id, uint64_t deadline_ms,
                   store_done_cb cb, void *ud);

#endif
