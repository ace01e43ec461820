/*
 * signature.c: Standard Webhooks signatures (signature.h) on OpenSSL's
 * libcrypto: HMAC-SHA256 through EVP_MAC, fed the id, the timestamp and
 * the body in turn so that the body is never copied; base64 through
 * EVP_EncodeBlock and EVP_DecodeBlock.  EVP_DecodeBlock is lenient (it
 * skips surrounding whitespace, reads '=' anywhere as zero bits and counts
 * padding as output), so every base64 string is checked here first, by
 * the strict rules, and the padding is taken off the length it returns.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "claimer/claimer.h"
#include "signature.h"

enum {
  MAC_LEN = 32,     /* an HMAC-SHA256 */
  MAC_B64_LEN = 44, /* its base64, one '=' of padding */
  /* The longest base64 of a secret, and the bytes EVP_DecodeBlock writes
   * for it (padding included). */
  KEY_B64_MAX = (CL_SIG_KEY_MAX + 2) / 3 * 4,
  KEY_DECODE_MAX = KEY_B64_MAX / 4 * 3,
  /* A webhook-timestamp has at most this many digits: below 10^18 s, so
   * that any value read fits an int64_t with room to spare. */
  TS_DIGITS_MAX = 18
};

#define TS_LIMIT INT64_C(1000000000000000000) /* 10^18 */
#define SECRET_PREFIX "whsec_"
#define SECRET_PREFIX_LEN (sizeof SECRET_PREFIX - 1)

struct cl_sig_keys {
  EVP_MAC *mac; /* HMAC, fetched once per ring */
  size_t n;
  size_t len[CL_SIG_KEYS_MAX];
  unsigned char key[CL_SIG_KEYS_MAX][CL_SIG_KEY_MAX];
};

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

const char *cl_sig_strerror(int err) {
  switch (err) {
#define CL_SIG__ERR_STR(name, value, msg)                                      \
  case CL_SIG_E##name:                                                         \
    return msg;
    CL_SIG_ERRNO_MAP(CL_SIG__ERR_STR)
#undef CL_SIG__ERR_STR
  default:
    return cl_strerror(err);
  }
}

const char *cl_sig_err_name(int err) {
  switch (err) {
#define CL_SIG__ERR_NAME(name, value, msg)                                     \
  case CL_SIG_E##name:                                                         \
    return "CL_SIG_E" #name;
    CL_SIG_ERRNO_MAP(CL_SIG__ERR_NAME)
#undef CL_SIG__ERR_NAME
  default:
    return cl_err_name(err);
  }
}

__attribute__((format(printf, 3, 4))) static void say(char *err, size_t errlen,
                                                      const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Base64, strictly                                                          */

typedef enum {
  B64_OK = 0,
  B64_CHAR,   /* a byte outside the alphabet, at *at */
  B64_PAD,    /* '=' before the end, or more than two */
  B64_LENGTH, /* not a multiple of 4 characters */
} b64_status_t;

static bool b64_alpha(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Checks that s[0..n) is standard base64 with its padding: the alphabet,
 * then zero to two '=', n a multiple of 4.  On B64_OK *bytes is the length
 * it decodes to; on B64_CHAR and B64_PAD *at is the offset of the fault. */
static b64_status_t b64_check(const char *s, size_t n, size_t *bytes,
                              size_t *at) {
  size_t pad = 0;
  while (pad < n && s[n - 1 - pad] == '=')
    pad++;
  for (size_t i = 0; i < n - pad; i++) {
    if (s[i] == '=') {
      *at = i;
      return B64_PAD;
    }
    if (!b64_alpha((unsigned char)s[i])) {
      *at = i;
      return B64_CHAR;
    }
  }
  if (pad > 2) {
    *at = n - pad;
    return B64_PAD;
  }
  if (n % 4 != 0)
    return B64_LENGTH;
  *bytes = n / 4 * 3 - pad;
  return B64_OK;
}

/* Decodes s[0..n), which b64_check passed, into out (room for n / 4 * 3
 * bytes, padding included; the caller takes the length b64_check gave).
 * Returns 0, or -1 if OpenSSL disagrees. */
static int b64_decode(const char *s, size_t n, unsigned char *out) {
  int got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
  /* The count includes a zero byte per '=': n / 4 * 3 for any padding. */
  return got >= 0 && (size_t)got == n / 4 * 3 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Key ring                                                                  */

int cl_sig_keys_new(cl_sig_keys_t **out) {
  *out = NULL;
  cl_sig_keys_t *k = calloc(1, sizeof *k);
  if (k == NULL)
    return CL_ENOMEM;
  k->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  if (k->mac == NULL) {
    free(k);
    return CL_ENOMEM;
  }
  *out = k;
  return 0;
}

void cl_sig_keys_free(cl_sig_keys_t **keys) {
  if (keys == NULL || *keys == NULL)
    return;
  cl_sig_keys_t *k = *keys;
  OPENSSL_cleanse(k->key, sizeof k->key);
  OPENSSL_cleanse(k->len, sizeof k->len);
  EVP_MAC_free(k->mac);
  free(k);
  *keys = NULL;
}

size_t cl_sig_keys_count(const cl_sig_keys_t *keys) {
  return keys == NULL ? 0 : keys->n;
}

/* The checks both forms share: room in the ring, and the length bounds. */
static int key_fits(const cl_sig_keys_t *keys, size_t len, char *err,
                    size_t errlen) {
  if (keys->n == CL_SIG_KEYS_MAX) {
    say(err, errlen, "too many signing secrets: at most %d at once",
        CL_SIG_KEYS_MAX);
    return CL_EINVAL;
  }
  if (len < CL_SIG_KEY_MIN) {
    say(err, errlen,
        "signing secret is %zu bytes; Standard Webhooks asks for at least %d",
        len, CL_SIG_KEY_MIN);
    return CL_EINVAL;
  }
  if (len > CL_SIG_KEY_MAX) {
    say(err, errlen,
        "signing secret is %zu bytes; Standard Webhooks allows at most %d", len,
        CL_SIG_KEY_MAX);
    return CL_EINVAL;
  }
  return 0;
}

int cl_sig_keys_add_raw(cl_sig_keys_t *keys, const void *bytes, size_t len,
                        char *err, size_t errlen) {
  if (keys == NULL || (bytes == NULL && len > 0)) {
    say(err, errlen, "signing secret is missing");
    return CL_EINVAL;
  }
  int rc = key_fits(keys, len, err, errlen);
  if (rc != 0)
    return rc;
  memcpy(keys->key[keys->n], bytes, len);
  keys->len[keys->n] = len;
  keys->n++;
  return 0;
}

static bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int cl_sig_keys_add(cl_sig_keys_t *keys, const char *text, size_t len,
                    char *err, size_t errlen) {
  if (keys == NULL || (text == NULL && len > 0)) {
    say(err, errlen, "signing secret is missing");
    return CL_EINVAL;
  }
  while (len > 0 && is_space(text[0])) {
    text++;
    len--;
  }
  while (len > 0 && is_space(text[len - 1]))
    len--;
  if (len == 0) {
    say(err, errlen, "signing secret is empty");
    return CL_EINVAL;
  }
  if ((len >= 5 && memcmp(text, "whsk_", 5) == 0) ||
      (len >= 5 && memcmp(text, "whpk_", 5) == 0)) {
    say(err, errlen,
        "signing secret is an asymmetric (ed25519, v1a) key; only whsec_ "
        "secrets (HMAC-SHA256, v1) are supported");
    return CL_EINVAL;
  }
  if (len < SECRET_PREFIX_LEN ||
      memcmp(text, SECRET_PREFIX, SECRET_PREFIX_LEN) != 0) {
    say(err, errlen,
        "signing secret does not start with whsec_ (the Standard Webhooks "
        "form is whsec_ followed by base64)");
    return CL_EINVAL;
  }
  const char *b = text + SECRET_PREFIX_LEN;
  size_t n = len - SECRET_PREFIX_LEN;
  if (n == 0) {
    say(err, errlen, "signing secret has nothing after whsec_");
    return CL_EINVAL;
  }
  size_t bytes = 0, at = 0;
  switch (b64_check(b, n, &bytes, &at)) {
  case B64_OK:
    break;
  case B64_CHAR:
    say(err, errlen,
        "signing secret: character %zu after whsec_ is not base64 (A-Z a-z "
        "0-9 + /, '=' padding at the end)",
        at + 1);
    return CL_EINVAL;
  case B64_PAD:
    say(err, errlen,
        "signing secret: misplaced '=' at character %zu after whsec_ (base64 "
        "padding is one or two '=' at the end)",
        at + 1);
    return CL_EINVAL;
  case B64_LENGTH:
    say(err, errlen,
        "signing secret: the base64 after whsec_ is %zu characters, not a "
        "multiple of 4 (missing or extra '=' padding?)",
        n);
    return CL_EINVAL;
  }
  int rc = key_fits(keys, bytes, err, errlen);
  if (rc != 0)
    return rc;
  /* key_fits bounds bytes by CL_SIG_KEY_MAX, so n <= KEY_B64_MAX. */
  unsigned char buf[KEY_DECODE_MAX];
  if (b64_decode(b, n, buf) != 0) {
    OPENSSL_cleanse(buf, sizeof buf);
    say(err, errlen, "signing secret: the base64 after whsec_ did not decode");
    return CL_EINVAL;
  }
  memcpy(keys->key[keys->n], buf, bytes);
  keys->len[keys->n] = bytes;
  keys->n++;
  OPENSSL_cleanse(buf, sizeof buf);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The MAC                                                                   */

/* An id the sender may sign: printable ASCII, no space, no '.'. */
static bool id_ok(const char *id) {
  if (id == NULL || id[0] == '\0')
    return false;
  for (const unsigned char *p = (const unsigned char *)id; *p; p++)
    if (*p < 0x21 || *p > 0x7e || *p == '.')
      return false;
  return true;
}

/* One MAC of "{id}.{ts}.{body}" under key k of the ring, into out, on a
 * context made for the ring's MAC (re-keyed on each call).  Returns 0 or
 * -1. */
static int mac_one(EVP_MAC_CTX *ctx, const cl_sig_keys_t *keys, size_t k,
                   const char *id, const char *ts, const void *body,
                   size_t body_len, unsigned char out[MAC_LEN]) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  size_t got = 0;
  if (EVP_MAC_init(ctx, keys->key[k], keys->len[k], params) != 1 ||
      EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) != 1 ||
      EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
      EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) != 1 ||
      EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
      (body_len > 0 && EVP_MAC_update(ctx, body, body_len) != 1) ||
      EVP_MAC_final(ctx, out, &got, MAC_LEN) != 1 || got != MAC_LEN)
    return -1;
  return 0;
}

/* The MACs of one message under every secret of the ring, into macs.
 * Returns 0 or CL_ENOMEM. */
static int mac_all(const cl_sig_keys_t *keys, const char *id, const char *ts,
                   const void *body, size_t body_len,
                   unsigned char macs[CL_SIG_KEYS_MAX][MAC_LEN]) {
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(keys->mac);
  if (ctx == NULL)
    return CL_ENOMEM;
  int rc = 0;
  for (size_t k = 0; k < keys->n && rc == 0; k++)
    if (mac_one(ctx, keys, k, id, ts, body, body_len, macs[k]) != 0)
      rc = CL_ENOMEM;
  EVP_MAC_CTX_free(ctx);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Sign                                                                      */

int cl_sig_sign(const cl_sig_keys_t *keys, const char *msg_id,
                int64_t timestamp, const void *body, size_t body_len, char *out,
                size_t outlen) {
  if (out != NULL && outlen > 0)
    out[0] = '\0';
  if (out == NULL || keys == NULL || keys->n == 0 || !id_ok(msg_id) ||
      timestamp < 0 || timestamp >= TS_LIMIT || (body == NULL && body_len > 0))
    return CL_EINVAL;
  /* "v1," + 44 characters per signature, a space or the NUL after each. */
  if (outlen < keys->n * (3 + MAC_B64_LEN + 1))
    return CL_EINVAL;
  char ts[TS_DIGITS_MAX + 1];
  snprintf(ts, sizeof ts, "%" PRId64, timestamp);
  unsigned char macs[CL_SIG_KEYS_MAX][MAC_LEN];
  int rc = mac_all(keys, msg_id, ts, body, body_len, macs);
  if (rc == 0) {
    char *p = out;
    for (size_t k = 0; k < keys->n; k++) {
      if (k > 0)
        *p++ = ' ';
      memcpy(p, "v1,", 3);
      p += 3;
      /* EVP_EncodeBlock writes the 44 characters and a NUL. */
      p += EVP_EncodeBlock((unsigned char *)p, macs[k], MAC_LEN);
    }
    *p = '\0';
  }
  OPENSSL_cleanse(macs, sizeof macs);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Verify                                                                    */

/* Reads a webhook-timestamp: decimal digits only, no sign, no leading zero
 * (so the text is the one the sender signed), fewer than 19 of them.
 * Returns 0 with *ts set, or -1. */
static int parse_ts(const char *s, int64_t *ts) {
  size_t n = strlen(s);
  if (n == 0 || n > TS_DIGITS_MAX || (n > 1 && s[0] == '0'))
    return -1;
  int64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *ts = v;
  return 0;
}

int cl_sig_verify(const cl_sig_keys_t *keys, const char *msg_id,
                  const char *timestamp, const char *signature,
                  const void *body, size_t body_len, int64_t now,
                  int64_t tolerance_s) {
  if (keys == NULL || keys->n == 0 || now < 0 || tolerance_s < 0 ||
      (body == NULL && body_len > 0))
    return CL_EINVAL;
  if (msg_id == NULL || timestamp == NULL || signature == NULL ||
      !id_ok(msg_id))
    return CL_SIG_EMALFORMED;
  int64_t ts;
  if (parse_ts(timestamp, &ts) != 0)
    return CL_SIG_EMALFORMED;
  /* Both are 0 or more, so the difference cannot overflow. */
  int64_t skew = ts > now ? ts - now : now - ts;
  if (skew > tolerance_s)
    return CL_SIG_ETIMESTAMP;

  unsigned char macs[CL_SIG_KEYS_MAX][MAC_LEN];
  int rc = mac_all(keys, msg_id, timestamp, body, body_len, macs);
  if (rc != 0) {
    OPENSSL_cleanse(macs, sizeof macs);
    return rc;
  }
  bool matched = false, malformed = false, any = false;
  const char *p = signature;
  while (!matched) {
    while (*p == ' ')
      p++;
    if (*p == '\0')
      break;
    const char *tok = p;
    while (*p != ' ' && *p != '\0')
      p++;
    size_t len = (size_t)(p - tok);
    any = true;
    const char *comma = memchr(tok, ',', len);
    if (comma == NULL) {
      malformed = true;
      continue;
    }
    /* Other versions (v1a, and any to come) are not ours to judge. */
    if (comma - tok != 2 || memcmp(tok, "v1", 2) != 0)
      continue;
    const char *val = comma + 1;
    size_t n = len - 3, bytes = 0, at = 0;
    if (n != MAC_B64_LEN || b64_check(val, n, &bytes, &at) != B64_OK ||
        bytes != MAC_LEN) {
      malformed = true;
      continue;
    }
    unsigned char got[MAC_B64_LEN / 4 * 3];
    if (b64_decode(val, n, got) != 0) {
      malformed = true;
      continue;
    }
    for (size_t k = 0; k < keys->n; k++)
      if (CRYPTO_memcmp(got, macs[k], MAC_LEN) == 0)
        matched = true;
  }
  OPENSSL_cleanse(macs, sizeof macs);
  if (matched)
    return 0;
  return !any || malformed ? CL_SIG_EMALFORMED : CL_SIG_EBADSIG;
}
