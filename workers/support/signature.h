/*
 * signature.h: Standard Webhooks 1.0 signatures, the symmetric scheme
 * ("v1", HMAC-SHA256), for the webhook sink of `claimer send` and for the
 * receiver that checks it.  The signed content is "{id}.{timestamp}.{body}"
 * (the webhook-id header, the webhook-timestamp header in decimal seconds,
 * the raw body); the webhook-signature header is one "v1,<base64 of the
 * MAC>" per secret, separated by spaces, so that a secret can be rotated
 * without a gap: the sender signs with the new and the old secret at once,
 * and a receiver holding either accepts.  Pure: no I/O, no clock (the
 * caller passes "now"), no global state.  Secrets live only in a key ring,
 * are wiped when it is freed, and never appear in a message.
 */
#ifndef CLAIMER_SIGNATURE_H
#define CLAIMER_SIGNATURE_H

#include <stddef.h>
#include <stdint.h>

enum {
  /* The specification's bounds on a symmetric secret: at least 24 bytes
   * (192 bits), at most 64 (512 bits). */
  CL_SIG_KEY_MIN = 24,
  CL_SIG_KEY_MAX = 64,
  /* Secrets one ring holds (and signatures one header carries). */
  CL_SIG_KEYS_MAX = 8,
  /* The longest webhook-signature value cl_sig_sign writes, with its NUL:
   * "v1," and 44 base64 characters per secret, a space between. */
  CL_SIG_HEADER_MAX = CL_SIG_KEYS_MAX * 48
};

/* The outcomes of a check that are not success, in their own range below
 * the core's codes (claimer.h), away from its list.  XX(NAME, value,
 * message). */
#define CL_SIG_ERRNO_MAP(XX)                                                   \
  XX(BADSIG, -1101, "no signature in webhook-signature matches")               \
  XX(TIMESTAMP, -1102, "webhook-timestamp is outside the tolerance")           \
  XX(MALFORMED, -1103, "malformed webhook headers")

typedef enum {
#define CL_SIG__ERR_ENUM(name, value, msg) CL_SIG_E##name = value,
  CL_SIG_ERRNO_MAP(CL_SIG__ERR_ENUM)
#undef CL_SIG__ERR_ENUM
} cl_sig_err_t;

/* Returns the static message of err: one of the list above, else
 * cl_strerror(err) (so CL_EINVAL and CL_ENOMEM read as they do anywhere). */
const char *cl_sig_strerror(int err);
/* Returns the static name of err, such as "CL_SIG_EBADSIG", else
 * cl_err_name(err). */
const char *cl_sig_err_name(int err);

/* A key ring: the secrets one subscriber signs with, or one receiver
 * accepts.  The first added is the current one; the order is the order of
 * the signatures in the header. */
typedef struct cl_sig_keys cl_sig_keys_t;

/* Makes an empty ring in *out (the caller frees it with cl_sig_keys_free).
 * Returns 0, or CL_ENOMEM (out of memory, or OpenSSL offers no HMAC) with
 * *out set to NULL. */
int cl_sig_keys_new(cl_sig_keys_t **out);

/* Wipes the secrets and frees the ring; accepts NULL and *keys == NULL;
 * sets *keys to NULL. */
void cl_sig_keys_free(cl_sig_keys_t **keys);

/* Adds a secret in the specification's text form: "whsec_" and the
 * standard base64 (A-Z a-z 0-9 + /, '=' padding to a multiple of 4) of 24
 * to 64 bytes.  text[0..len) need not end in NUL; spaces, tabs and line
 * ends around it are ignored (a secret file written by echo has one).
 * Asymmetric secrets (whsk_, whpk_) are refused by name.  Returns 0, or
 * CL_EINVAL with a sentence in err (which names the fault and never
 * repeats any of the secret), the ring unchanged.  The caller's copy of
 * the text is the caller's to wipe. */
int cl_sig_keys_add(cl_sig_keys_t *keys, const char *text, size_t len,
                    char *err, size_t errlen);

/* Adds a secret given as its raw bytes (from a key file, or a test), with
 * the same 24 to 64 byte bounds.  Returns 0 or CL_EINVAL (err as above). */
int cl_sig_keys_add_raw(cl_sig_keys_t *keys, const void *bytes, size_t len,
                        char *err, size_t errlen);

/* Returns the number of secrets in the ring (0 for NULL). */
size_t cl_sig_keys_count(const cl_sig_keys_t *keys);

/* Writes the webhook-signature value for one message into out (outlen
 * bytes; CL_SIG_HEADER_MAX is always enough): "v1,<base64>" per secret in
 * the ring's order, separated by one space, NUL-terminated.  msg_id is the
 * webhook-id: 1 or more printable ASCII characters other than '.' (the
 * specification keeps '.' out so that the id cannot shift the split of
 * the signed content); timestamp is the webhook-timestamp, seconds since
 * the epoch, 0 or more.  body may be NULL when body_len is 0.  Returns 0;
 * CL_EINVAL for an empty ring, a bad id or timestamp, or out too small
 * (out is then ""); CL_ENOMEM when OpenSSL fails. */
int cl_sig_sign(const cl_sig_keys_t *keys, const char *msg_id,
                int64_t timestamp, const void *body, size_t body_len, char *out,
                size_t outlen);

/* Checks a received message against the ring: msg_id, timestamp and
 * signature are the webhook-id, webhook-timestamp and webhook-signature
 * values as received (NULL for a missing header), body the raw body, now
 * the receiver's clock in seconds since the epoch and tolerance_s the
 * largest difference accepted, either way (the timestamp guards against
 * replay; the libraries' default is 300).  The message is accepted when
 * any "v1," signature in the header equals the MAC under any secret of the
 * ring (compared in constant time); signatures of other versions ("v1a,",
 * "v2,") are skipped, as the specification asks, so a header with only
 * those matches nothing.  Returns:
 *   0                   accepted;
 *   CL_SIG_EMALFORMED   a header missing, an id the sender could not have
 *                       signed (see cl_sig_sign), a timestamp that is not
 *                       plain decimal digits (no sign, no leading zero),
 *                       or, when nothing matched, a token in the signature
 *                       header without a ',' or a "v1," token that is not
 *                       the base64 of 32 bytes;
 *   CL_SIG_ETIMESTAMP   the timestamp is more than tolerance_s from now
 *                       (checked before the signatures);
 *   CL_SIG_EBADSIG      well-formed, and no signature matches;
 *   CL_EINVAL           an empty ring, now or tolerance_s negative, or a
 *                       NULL body with body_len > 0;
 *   CL_ENOMEM           OpenSSL failed. */
int cl_sig_verify(const cl_sig_keys_t *keys, const char *msg_id,
                  const char *timestamp, const char *signature,
                  const void *body, size_t body_len, int64_t now,
                  int64_t tolerance_s);

#endif
