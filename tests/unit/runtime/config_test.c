/* Tests for runtime/config.c: what an operator relies on when starting ensd.
 * Includes the source to reach the key table for the documentation check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "runtime/config.c"

static char g_dir[256];

static int make_dir(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/ens-config-test-XXXXXX");
    return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* write_file puts |text| in g_dir/|name| and returns the full path (static). */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
    return path;
}

static void expect_error(const char *path, char *const *envp, const char *want)
{
    struct ens_config cfg;
    char err[512];
    assert_int_equal(ens_config_load(path, envp, &cfg, err, sizeof(err)), ENS_ECONFIG);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    ens_config_cleanup(&cfg);
}

static void test_defaults(void **state)
{
    struct ens_config cfg;
    char err[256], cwd[4096], want[4200];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(ens_config_load(NULL, NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.listen.public_addr, "0.0.0.0:8443");
    assert_string_equal(cfg.listen.admin, "127.0.0.1:9090");
    assert_null(cfg.tls.cert);
    assert_null(cfg.tls.key);
    assert_string_equal(cfg.http.base_path, "/api/ens");
    assert_null(cfg.http.public_url);
    assert_int_equal(cfg.http.max_body_bytes, 1048576);
    assert_string_equal(cfg.redis.url, "redis://127.0.0.1:6379/0");
    assert_int_equal(cfg.ews.timeout_ms, 15000);
    assert_int_equal(cfg.ews.status_frequency_min, 5);
    assert_false(cfg.ews.allow_private_networks);
    assert_string_equal(cfg.apns.url, "https://api.push.apple.com");
    assert_int_equal(cfg.apns.connections, 2);
    assert_string_equal(cfg.fcm.url, "https://fcm.googleapis.com");
    assert_string_equal(cfg.fcm.token_url, "https://oauth2.googleapis.com/token");
    assert_null(cfg.secrets.master_key);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg.runtime.threads, ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
    assert_int_equal(cfg.log.level, RT_LOG_INFO);
    assert_int_equal(cfg.log.format, RT_LOG_JSON);
    /* without a file, relative paths are taken from the working directory */
    snprintf(want, sizeof(want), "%s/ens-master.key", cwd);
    assert_string_equal(cfg.secrets.master_key_file, want);
    snprintf(want, sizeof(want), "%s/ens-admin.token", cwd);
    assert_string_equal(cfg.admin.token_file, want);
    ens_config_cleanup(&cfg);
    ens_config_cleanup(&cfg); /* harmless twice */
}

static void test_file_values(void **state)
{
    const char *path = write_file(
        "ens.json", "{\"listen\":{\"public\":\"[::]:443\",\"admin\":\"127.0.0.1:9999\"},\n"
                    " \"tls\":{\"cert\":\"/etc/ens/cert.pem\",\"key\":\"key.pem\"},\n"
                    " \"http\":{\"base_path\":\"/MailNotificationService/api/ens\",\n"
                    "          \"public_url\":\"https://ens.example.com/api/ens\"},\n"
                    " \"ews\":{\"timeout_ms\":30000,\"allow_private_networks\":true},\n"
                    " \"apns\":{\"team_id\":\"ABCDE12345\",\"connections\":4,\"url\":null},\n"
                    " \"fcm\":{\"service_account_file\":\"sa.json\"},\n"
                    " \"runtime\":{\"threads\":3},\n"
                    " \"log\":{\"level\":\"debug\",\"format\":\"text\"}}\n");
    struct ens_config cfg;
    char err[256], want[512];
    assert_int_equal(ens_config_load(path, NULL, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.listen.public_addr, "[::]:443");
    assert_string_equal(cfg.listen.admin, "127.0.0.1:9999");
    assert_string_equal(cfg.tls.cert, "/etc/ens/cert.pem");
    snprintf(want, sizeof(want), "%s/key.pem", g_dir);
    assert_string_equal(cfg.tls.key, want);
    assert_string_equal(cfg.http.base_path, "/MailNotificationService/api/ens");
    assert_string_equal(cfg.http.public_url, "https://ens.example.com/api/ens");
    assert_int_equal(cfg.ews.timeout_ms, 30000);
    assert_true(cfg.ews.allow_private_networks);
    assert_string_equal(cfg.apns.team_id, "ABCDE12345");
    assert_int_equal(cfg.apns.connections, 4);
    /* null keeps the default */
    assert_string_equal(cfg.apns.url, "https://api.push.apple.com");
    assert_int_equal(cfg.runtime.threads, 3);
    assert_int_equal(cfg.log.level, RT_LOG_DEBUG);
    assert_int_equal(cfg.log.format, RT_LOG_TEXT);
    /* untouched keys keep their defaults */
    assert_int_equal(cfg.ews.status_frequency_min, 5);
    snprintf(want, sizeof(want), "%s/ens-master.key", g_dir);
    assert_string_equal(cfg.secrets.master_key_file, want);
    snprintf(want, sizeof(want), "%s/ens-admin.token", g_dir);
    assert_string_equal(cfg.admin.token_file, want);
    assert_string_equal(cfg.file, path);
    ens_config_cleanup(&cfg);
}

static void test_env_overrides_file(void **state)
{
    const char *path = write_file("ens.json", "{\"apns\":{\"url\":\"https://file.example\"},"
                                              "\"tls\":{\"cert\":\"/x/cert.pem\"},"
                                              "\"ews\":{\"status_frequency_min\":10}}");
    char *envp[] = {"PATH=/usr/bin",
                    "ENS_APNS_URL=http://127.0.0.1:8000",
                    "ENS_HTTP_BASE_PATH=/prefix/api/ens",
                    "ENS_EWS_STATUS_FREQUENCY_MIN=1",
                    "ENS_LISTEN_PUBLIC=127.0.0.1:0",
                    "ENS_EWS_ALLOW_PRIVATE_NETWORKS=yes",
                    "ENS_TLS_CERT=",
                    "ENS_LOG_LEVEL=warn",
                    "ENS_ADMIN_URL=http://ignored:1", /* ensctl's, not a key */
                    "ENS_SECRETS_MASTER_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                    NULL};
    struct ens_config cfg;
    char err[256];
    assert_int_equal(ens_config_load(path, envp, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.apns.url, "http://127.0.0.1:8000");
    assert_string_equal(cfg.http.base_path, "/prefix/api/ens");
    assert_int_equal(cfg.ews.status_frequency_min, 1);
    assert_string_equal(cfg.listen.public_addr, "127.0.0.1:0");
    assert_true(cfg.ews.allow_private_networks);
    assert_null(cfg.tls.cert); /* an empty value unsets the file's */
    assert_int_equal(cfg.log.level, RT_LOG_WARN);
    assert_string_equal(cfg.secrets.master_key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    ens_config_cleanup(&cfg);
}

static void test_unknown_key_is_named(void **state)
{
    const char *path = write_file("ens.json", "{\"ews\":{\"timout_ms\":5}}");
    expect_error(path, NULL, "unknown key \"ews.timout_ms\" in ");
    expect_error(path, NULL, "ens.json");
    path = write_file("ens.json", "{\"mail\":{}}");
    expect_error(path, NULL, "unknown section \"mail\"");
    /* the master key never comes from the file */
    path = write_file("ens.json", "{\"secrets\":{\"master_key\":\"AAAA\"}}");
    expect_error(path, NULL, "unknown key \"secrets.master_key\"");
    path = write_file("ens.json", "{\"ews\":{\"timeout_ms\":5,\"timeout_ms\":6}}");
    expect_error(path, NULL, "ews.timeout_ms appears twice");
}

static void test_bad_values_name_key_and_source(void **state)
{
    char *env_int[] = {"ENS_EWS_TIMEOUT_MS=abc", NULL};
    expect_error(NULL, env_int,
                 "config: ews.timeout_ms (from ENS_EWS_TIMEOUT_MS): expected an integer in "
                 "1..600000, got \"abc\"");
    char *env_range[] = {"ENS_RUNTIME_THREADS=0", NULL};
    expect_error(NULL, env_range,
                 "runtime.threads (from ENS_RUNTIME_THREADS): expected an "
                 "integer in 1..256, got \"0\"");
    char *env_enum[] = {"ENS_LOG_LEVEL=verbose", NULL};
    expect_error(NULL, env_enum,
                 "log.level (from ENS_LOG_LEVEL): expected one of "
                 "debug|info|warn|error, got \"verbose\"");
    char *env_hp[] = {"ENS_LISTEN_ADMIN=localhost", NULL};
    expect_error(NULL, env_hp, "listen.admin (from ENS_LISTEN_ADMIN): expected host:port");
    char *env_port[] = {"ENS_LISTEN_ADMIN=127.0.0.1:70000", NULL};
    expect_error(NULL, env_port, "listen.admin (from ENS_LISTEN_ADMIN)");
    char *env_url[] = {"ENS_APNS_URL=ftp://apple.com", NULL};
    expect_error(NULL, env_url,
                 "apns.url (from ENS_APNS_URL): expected an absolute URL "
                 "(http|https), got \"ftp://apple.com\"");
    char *env_bool[] = {"ENS_EWS_ALLOW_PRIVATE_NETWORKS=maybe", NULL};
    expect_error(NULL, env_bool,
                 "ews.allow_private_networks (from "
                 "ENS_EWS_ALLOW_PRIVATE_NETWORKS): expected true or false");
    char *env_base[] = {"ENS_HTTP_BASE_PATH=api/ens/", NULL};
    expect_error(NULL, env_base, "http.base_path (from ENS_HTTP_BASE_PATH)");

    const char *path = write_file("ens.json", "{\"ews\":{\"timeout_ms\":\"15000\"}}");
    char from[600];
    snprintf(from, sizeof(from), "ews.timeout_ms (from %s): expected an integer", path);
    expect_error(path, NULL, from);
    path = write_file("ens.json", "{\"ews\":{\"timeout_ms\":1.5}}");
    expect_error(path, NULL, "got 1.5");
    path = write_file("ens.json", "{\"log\":{\"format\":\"xml\"}}");
    expect_error(path, NULL, "log.format (from");
    path = write_file("ens.json", "{\"redis\":{\"url\":\"http://x\"}}");
    expect_error(path, NULL, "expected an absolute URL (redis|rediss|unix)");
    path = write_file("ens.json", "{\"listen\":{\"public\":8443}}");
    expect_error(path, NULL, "listen.public (from");
    expect_error(path, NULL, "expected a string, got 8443");
}

static void test_secrets_never_echoed(void **state)
{
    char *env_key[] = {"ENS_SECRETS_MASTER_KEY=not*base64!", NULL};
    struct ens_config cfg;
    char err[512];
    assert_int_equal(ens_config_load(NULL, env_key, &cfg, err, sizeof(err)), ENS_ECONFIG);
    assert_non_null(strstr(err, "ENS_SECRETS_MASTER_KEY"));
    assert_null(strstr(err, "not*base64!"));

    char *env_redis[] = {"ENS_REDIS_URL=redis://:hunter2@db:99999/0", NULL};
    assert_int_equal(ens_config_load(NULL, env_redis, &cfg, err, sizeof(err)), ENS_ECONFIG);
    assert_non_null(strstr(err, "redis.url"));
    assert_null(strstr(err, "hunter2"));
}

static void test_section_not_object(void **state)
{
    const char *path = write_file("ens.json", "{\"ews\":\"fast\"}");
    expect_error(path, NULL, "ews (from ");
    expect_error(path, NULL, "expected an object of keys, got \"fast\"");
    path = write_file("ens.json", "[1,2]");
    expect_error(path, NULL, "expected a JSON object of sections");
}

static void test_relative_paths(void **state)
{
    char sub[300], cwd[4096], want[600];
    snprintf(sub, sizeof(sub), "%s/etc", g_dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_file("etc/ens.json", "{\"apns\":{\"key_file\":\"keys/apns.p8\"},"
                               "\"admin\":{\"token_file\":\"/abs/admin.token\"}}");
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(g_dir), 0);
    struct ens_config cfg;
    char err[256];
    /* a relative config path still resolves against the file's own directory */
    int rc = ens_config_load("etc/ens.json", NULL, &cfg, err, sizeof(err));
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, 0);
    snprintf(want, sizeof(want), "%s/etc/keys/apns.p8", g_dir);
    assert_string_equal(cfg.apns.key_file, want);
    snprintf(want, sizeof(want), "%s/etc/ens-master.key", g_dir);
    assert_string_equal(cfg.secrets.master_key_file, want);
    assert_string_equal(cfg.admin.token_file, "/abs/admin.token");
    assert_string_equal(cfg.dir + strlen(cfg.dir) - 4, "/etc");
    ens_config_cleanup(&cfg);
}

static void test_not_json(void **state)
{
    const char *path = write_file("bad.json", "{\"listen\":{\n  \"public\": 0.0.0.0:8443}}\n");
    expect_error(path, NULL, "bad.json: not valid JSON (line 2");
    path = write_file("bad.json", "{} trailing");
    expect_error(path, NULL, "bad.json: not valid JSON");
    path = write_file("empty.json", "");
    expect_error(path, NULL, "empty.json: not valid JSON");
    expect_error("/nonexistent/ens.json", NULL, "/nonexistent/ens.json: cannot open");
}

static void test_oversize_file(void **state)
{
    size_t n = CONFIG_MAX_FILE_BYTES + 10;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    big[n] = '\0';
    const char *path = write_file("big.json", big);
    free(big);
    expect_error(path, NULL, "big.json: larger than the limit of 262144 bytes");
}

static void test_dump_hides_secrets(void **state)
{
    char *envp[] = {"ENS_SECRETS_MASTER_KEY=c2VjcmV0LW1hc3Rlci1rZXk=",
                    "ENS_REDIS_URL=redis://:hunter2@db.internal:6380/1", "ENS_EWS_TIMEOUT_MS=20000",
                    NULL};
    struct ens_config cfg;
    char err[256];
    assert_int_equal(ens_config_load(NULL, envp, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.redis.url, "redis://:hunter2@db.internal:6380/1");
    struct rt_buf out;
    rt_buf_init(&out, 64 * 1024);
    assert_int_equal(ens_config_dump(&cfg, &out), 0);
    const char *text = rt_buf_cstr(&out);
    assert_null(strstr(text, "c2VjcmV0LW1hc3Rlci1rZXk="));
    assert_null(strstr(text, "hunter2"));
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    cJSON *ews = cJSON_GetObjectItemCaseSensitive(root, "ews");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(ews, "timeout_ms")->valueint, 20000);
    cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, "secrets");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(sec, "master_key")->valuestring,
                        "<redacted>");
    cJSON *redis = cJSON_GetObjectItemCaseSensitive(root, "redis");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(redis, "url")->valuestring,
                        "redis://<redacted>@db.internal:6380/1");
    cJSON *log = cJSON_GetObjectItemCaseSensitive(root, "log");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(log, "level")->valuestring, "info");
    assert_true(cJSON_IsNull(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "tls"), "cert")));
    cJSON_Delete(root);

    /* a dump that does not fit leaves the buffer as it was */
    struct rt_buf small;
    rt_buf_init(&small, 32);
    assert_int_equal(ens_config_dump(&cfg, &small), ENS_ETOOBIG);
    assert_int_equal(small.len, 0);
    rt_buf_cleanup(&small);
    rt_buf_cleanup(&out);
    ens_config_cleanup(&cfg);
}

static void test_hostport_split(void **state)
{
    char host[64];
    uint16_t port;
    assert_int_equal(ens_config_hostport_split("127.0.0.1:9090", host, sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9090);
    assert_int_equal(ens_config_hostport_split("[::1]:443", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 443);
    assert_int_equal(ens_config_hostport_split("ens.example.com:8443", host, sizeof(host), &port),
                     0);
    assert_int_equal(ens_config_hostport_split("::1:443", host, sizeof(host), &port), ENS_EINVAL);
    assert_int_equal(ens_config_hostport_split(":443", host, sizeof(host), &port), ENS_EINVAL);
    assert_int_equal(ens_config_hostport_split("h:", host, sizeof(host), &port), ENS_EINVAL);
    assert_int_equal(ens_config_hostport_split("h:12a", host, sizeof(host), &port), ENS_EINVAL);
    assert_int_equal(ens_config_hostport_split("[::1]443", host, sizeof(host), &port), ENS_EINVAL);
}

/* The documented example sets every key (except the env-only secret) and loads. */
static void test_example_file_loads(void **state)
{
    const char *data = getenv("ENS_TEST_DATA");
    if (data == NULL)
        skip();
    char path[1024];
    snprintf(path, sizeof(path), "%s/config/example.json", data);
    struct ens_config cfg;
    char err[512];
    if (ens_config_load(path, NULL, &cfg, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg.apns.team_id, "ABCDE12345");
    assert_non_null(strstr(cfg.tls.cert, "/config/../pki/server.pem"));
    assert_null(cfg.apns.cert_file);
    assert_int_equal(cfg.runtime.threads, 2);
    ens_config_cleanup(&cfg);

    /* and names every key of the table */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char text[16 * 1024];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        char key[128];
        snprintf(key, sizeof(key), "\"%s\"", kKeys[i].key);
        if (!(kKeys[i].flags & CFG_ENV_ONLY) && strstr(text, key) == NULL)
            fail_msg("%s.%s is not in example.json", kKeys[i].section, kKeys[i].key);
    }
}

/* Every key and its environment variable is documented, so the docs cannot
 * silently fall behind the table. */
static void test_every_key_documented(void **state)
{
    const char *data = getenv("ENS_TEST_DATA");
    if (data == NULL)
        skip();
    char path[1024];
    snprintf(path, sizeof(path), "%s/../../docs/configuration.md", data);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char doc[128 * 1024];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = '\0';
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        char key[128], env[CFG_MAX_ENV_NAME];
        snprintf(key, sizeof(key), "`%s.%s`", kKeys[i].section, kKeys[i].key);
        env_name(&kKeys[i], env, sizeof(env));
        if (strstr(doc, key) == NULL)
            fail_msg("%s is not in docs/configuration.md", key);
        if (strstr(doc, env) == NULL)
            fail_msg("%s is not in docs/configuration.md", env);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_setup_teardown(test_file_values, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_env_overrides_file, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_unknown_key_is_named, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_bad_values_name_key_and_source, make_dir, remove_dir),
        cmocka_unit_test(test_secrets_never_echoed),
        cmocka_unit_test_setup_teardown(test_section_not_object, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_relative_paths, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_not_json, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_oversize_file, make_dir, remove_dir),
        cmocka_unit_test(test_dump_hides_secrets),
        cmocka_unit_test(test_hostport_split),
        cmocka_unit_test(test_example_file_loads),
        cmocka_unit_test(test_every_key_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
