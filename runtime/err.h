/* ENS error codes: one list, one convention.
 *
 * Every function that can fail returns int: 0 for success or a negative ENS_E*
 * code. Byte feeders return ssize_t consumed or a negative code, and say so.
 * Codes from -900 down are fatal for the object that returned them (nghttp2's
 * tiering): the caller must tear that object down rather than retry. */
#ifndef ENS_RUNTIME_ERR_H
#define ENS_RUNTIME_ERR_H

#define ENS_ERRNO_MAP(XX)                                                                          \
    XX(EINVAL, -1, "invalid argument")                                                             \
    XX(ENOMEM, -2, "out of memory")                                                                \
    XX(ETOOBIG, -3, "size limit exceeded")                                                         \
    XX(EPARSE, -4, "malformed input")                                                              \
    XX(EIO, -5, "input/output error")                                                              \
    XX(ETIMEDOUT, -6, "deadline passed")                                                           \
    XX(ECLOSED, -7, "connection closed")                                                           \
    XX(ECANCELED, -8, "operation canceled")                                                        \
    XX(ETLS, -9, "TLS failure")                                                                    \
    XX(ECRYPTO, -10, "cryptographic failure")                                                      \
    XX(ENOTFOUND, -11, "not found")                                                                \
    XX(EAGAIN, -12, "try again")                                                                   \
    XX(ENOACTOR, -13, "no such actor")                                                             \
    XX(EAUTH, -14, "authentication failed")                                                        \
    XX(EPROTO, -15, "protocol violation")                                                          \
    XX(ESTORE, -16, "storage unavailable")                                                         \
    XX(EFULL, -17, "queue full")                                                                   \
    XX(EDNS, -18, "name resolution failed")                                                        \
    XX(ECONNECT, -19, "connection failed")                                                         \
    XX(EUNKNOWNKID, -20, "unknown key id")                                                         \
    XX(EJWE, -21, "undecryptable JWE")                                                             \
    XX(ECONFIG, -22, "bad configuration")                                                          \
    XX(EEXIST, -23, "already exists")                                                              \
    XX(EREMOTE, -24, "remote service error")                                                       \
    XX(EFATAL, -900, "fatal internal error")

enum ens_err {
    ENS_OK = 0,
#define ENS__ERR_ENUM(name, value, msg) ENS_##name = (value),
    ENS_ERRNO_MAP(ENS__ERR_ENUM)
#undef ENS__ERR_ENUM
};

/* ens_strerror returns a static, human-readable message for |err|. */
const char *ens_strerror(int err);

/* ens_err_name returns the static symbolic name of |err| ("EINVAL"). */
const char *ens_err_name(int err);

#endif
