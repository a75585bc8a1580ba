#include "protocols/enroll.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <string.h>

#include "runtime/alloc.h"
#include "runtime/err.h"

#define ENROLL_MAX_CREDS (ENROLL_MAX_OAUTH + 1024)

/* Character rules for the string fields, one bit each. */
enum {
    CH_PRINTABLE = 1, /* no control characters (any UTF-8 allowed) */
    CH_NO_SPACE = 2,
    CH_HEX = 4,
    CH_EMAIL = 8, /* exactly one '@', something either side */
};

/* One row per string field of the payload. */
struct field_row {
    const char *name;    /* for the error message */
    const char *path[2]; /* object member, then member (path[1] NULL: top level) */
    size_t min, max;
    int rules;
    int optional;
    size_t offset; /* into struct enroll_payload */
};

#define AT(f) offsetof(struct enroll_payload, f)

static const struct field_row kFields[] = {
    {"email",
     {"email", NULL},
     3,
     ENROLL_MAX_EMAIL,
     CH_PRINTABLE | CH_NO_SPACE | CH_EMAIL,
     0,
     AT(email)},
    {"ewsUrl", {"ewsUrl", NULL}, 9, ENROLL_MAX_URL, CH_PRINTABLE | CH_NO_SPACE, 1, AT(ews_url)},
    {"device.id", {"device", "id"}, 1, ENROLL_MAX_DEVICE_ID, CH_PRINTABLE, 0, AT(device_id)},
    {"device.appId",
     {"device", "appId"},
     1,
     ENROLL_MAX_APP_ID,
     CH_PRINTABLE | CH_NO_SPACE,
     0,
     AT(app_id)},
    {"device.pushToken",
     {"device", "pushToken"},
     1,
     ENROLL_MAX_PUSH_TOKEN,
     CH_PRINTABLE | CH_NO_SPACE,
     0,
     AT(push_token)},
};

/* Fields whose value is one of a few words; the first word is the default
 * when the field is optional and absent. */
struct enum_row {
    const char *name;
    const char *path[2];
    const char *const *values;
    int optional;
    size_t offset, size;
};

static const char *const kPlatforms[] = {"ios", "android", NULL};
static const char *const kEnvironments[] = {"production", "sandbox", NULL};
static const char *const kPreviews[] = {"full", "sender", "none", NULL};

static const struct enum_row kEnums[] = {
    {"device.platform",
     {"device", "platform"},
     kPlatforms,
     0,
     AT(platform),
     sizeof(((struct enroll_payload *)0)->platform)},
    {"device.environment",
     {"device", "environment"},
     kEnvironments,
     1,
     AT(environment),
     sizeof(((struct enroll_payload *)0)->environment)},
    {"preferences.preview",
     {"preferences", "preview"},
     kPreviews,
     1,
     AT(preview),
     sizeof(((struct enroll_payload *)0)->preview)},
};

int enroll_preview_rank(const char *preview)
{
    static const char *const kOrder[] = {"none", "sender", "full"};
    for (int i = 0; i < 3; i++) {
        if (strcmp(preview, kOrder[i]) == 0)
            return i;
    }
    return -1;
}

/* lookup follows a one- or two-step path. A present but non-object parent is
 * reported through *bad_parent. */
static cJSON *lookup(cJSON *root, const char *const path[2], int *bad_parent)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(root, path[0]);
    if (path[1] == NULL)
        return it;
    if (it == NULL || cJSON_IsNull(it))
        return NULL;
    if (!cJSON_IsObject(it)) {
        *bad_parent = 1;
        return NULL;
    }
    return cJSON_GetObjectItemCaseSensitive(it, path[1]);
}

static int chars_ok(const char *s, size_t n, int rules)
{
    size_t ats = 0, at_pos = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((rules & CH_PRINTABLE) && (c < 0x20 || c == 0x7f))
            return 0;
        if ((rules & CH_NO_SPACE) && c == ' ')
            return 0;
        if ((rules & CH_HEX) &&
            !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return 0;
        if (c == '@')
            ats++, at_pos = i;
    }
    if ((rules & CH_EMAIL) && (ats != 1 || at_pos == 0 || at_pos == n - 1))
        return 0;
    return 1;
}

/* string_value returns the string at |path|, or NULL when absent (*present 0)
 * or not a string of min..max acceptable characters (*present 1). cJSON stops
 * a string at an escaped NUL, so the length check also refuses those. */
static const char *string_value(cJSON *root, const char *const path[2], size_t min, size_t max,
                                int rules, int *present)
{
    int bad_parent = 0;
    cJSON *it = lookup(root, path, &bad_parent);
    *present = bad_parent || (it != NULL && !cJSON_IsNull(it));
    if (!cJSON_IsString(it) || it->valuestring == NULL)
        return NULL;
    size_t n = strlen(it->valuestring);
    if (n < min || n > max || !chars_ok(it->valuestring, n, rules))
        return NULL;
    return it->valuestring;
}

static void wipe_strings(cJSON *j)
{
    for (cJSON *it = j; it; it = it->next) {
        if (cJSON_IsString(it) && it->valuestring)
            ens_wipe(it->valuestring, strlen(it->valuestring));
        if (it->child)
            wipe_strings(it->child);
    }
}

/* parse_auth checks the credentials and keeps them as compact JSON. */
static enum enroll_result parse_auth(cJSON *root, struct enroll_payload *out, const char **field)
{
    static const char *const kBasic[] = {"username", "password"};
    static const size_t kBasicMax[] = {ENROLL_MAX_USERNAME, ENROLL_MAX_PASSWORD};
    cJSON *auth = cJSON_GetObjectItemCaseSensitive(root, "auth");
    int present;
    const char *type =
        string_value(root, (const char *const[2]){"auth", "type"}, 1, 16, CH_PRINTABLE, &present);
    *field = "auth.type";
    if (!cJSON_IsObject(auth) || type == NULL)
        return ENROLL_INVALID;
    if (strcmp(type, "basic") == 0) {
        for (int i = 0; i < 2; i++) {
            const char *path[2] = {"auth", kBasic[i]};
            if (string_value(root, path, 1, kBasicMax[i], CH_PRINTABLE, &present) == NULL) {
                *field = i == 0 ? "auth.username" : "auth.password";
                return ENROLL_INVALID;
            }
        }
    } else if (strcmp(type, "oauth") == 0) {
        if (string_value(root, (const char *const[2]){"auth", "accessToken"}, 1, ENROLL_MAX_OAUTH,
                         CH_PRINTABLE | CH_NO_SPACE, &present) == NULL) {
            *field = "auth.accessToken";
            return ENROLL_INVALID;
        }
    } else if (strcmp(type, "certificate") == 0) {
        return ENROLL_UNSUPPORTED;
    } else {
        return ENROLL_INVALID;
    }
    memcpy(out->auth_type, type, strlen(type) + 1);
    char *text = cJSON_PrintUnformatted(auth);
    int rc = text ? rt_buf_append_str(&out->creds, text) : ENS_ENOMEM;
    if (text) {
        ens_wipe(text, strlen(text));
        cJSON_free(text);
    }
    *field = "auth";
    return rc ? ENROLL_INVALID : ENROLL_OK;
}

static enum enroll_result parse_fields(cJSON *root, int64_t now, struct enroll_payload *out,
                                       const char **field)
{
    if (!cJSON_IsObject(root))
        return ENROLL_NOT_JSON;
    cJSON *iat = cJSON_GetObjectItemCaseSensitive(root, "iat");
    *field = "iat";
    if (!cJSON_IsNumber(iat))
        return ENROLL_INVALID;
    if (iat->valuedouble < (double)(now - ENROLL_IAT_WINDOW_S) ||
        iat->valuedouble > (double)(now + ENROLL_IAT_WINDOW_S))
        return ENROLL_STALE;
    out->iat = (int64_t)iat->valuedouble;

    for (size_t i = 0; i < sizeof(kFields) / sizeof(kFields[0]); i++) {
        const struct field_row *f = &kFields[i];
        int present;
        const char *v = string_value(root, f->path, f->min, f->max, f->rules, &present);
        *field = f->name;
        if (v == NULL && (present || !f->optional))
            return ENROLL_INVALID;
        if (v)
            memcpy((char *)out + f->offset, v, strlen(v) + 1);
    }
    for (size_t i = 0; i < sizeof(kEnums) / sizeof(kEnums[0]); i++) {
        const struct enum_row *e = &kEnums[i];
        int present;
        const char *v = string_value(root, e->path, 1, e->size - 1, CH_PRINTABLE, &present);
        *field = e->name;
        if (v == NULL && (present || !e->optional))
            return ENROLL_INVALID;
        const char *chosen = NULL;
        for (const char *const *w = e->values; *w; w++) {
            if (v == NULL || strcmp(v, *w) == 0) {
                chosen = *w;
                break;
            }
        }
        if (chosen == NULL)
            return ENROLL_INVALID;
        memcpy((char *)out + e->offset, chosen, strlen(chosen) + 1);
    }
    /* APNs tokens are hex bytes; FCM registration tokens are not */
    *field = "device.pushToken";
    if (strcmp(out->platform, "ios") == 0) {
        size_t n = strlen(out->push_token);
        if (n < 16 || n > ENROLL_MAX_APNS_TOKEN || n % 2 || !chars_ok(out->push_token, n, CH_HEX))
            return ENROLL_INVALID;
    }
    *field = "preferences";
    cJSON *prefs = cJSON_GetObjectItemCaseSensitive(root, "preferences");
    if (prefs && !cJSON_IsNull(prefs) && !cJSON_IsObject(prefs))
        return ENROLL_INVALID;
    cJSON *badge = prefs ? cJSON_GetObjectItemCaseSensitive(prefs, "badge") : NULL;
    *field = "preferences.badge";
    if (badge && !cJSON_IsNull(badge) && !cJSON_IsBool(badge))
        return ENROLL_INVALID;
    out->badge = badge && cJSON_IsBool(badge) ? cJSON_IsTrue(badge) : 1;
    *field = "device";
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "device")))
        return ENROLL_INVALID;
    return parse_auth(root, out, field);
}

enum enroll_result enroll_parse(struct span json, int64_t now, struct enroll_payload *out,
                                const char **field)
{
    memset(out, 0, sizeof(*out));
    rt_buf_init_secret(&out->creds, ENROLL_MAX_CREDS);
    *field = "body";
    cJSON *root = cJSON_ParseWithLength((const char *)json.p, json.len);
    if (root == NULL)
        return ENROLL_NOT_JSON;
    enum enroll_result r = parse_fields(root, now, out, field);
    /* cJSON kept its own copies of the password or token */
    wipe_strings(root);
    cJSON_Delete(root);
    return r;
}

void enroll_payload_cleanup(struct enroll_payload *p)
{
    rt_buf_cleanup_secret(&p->creds);
}
