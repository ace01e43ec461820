/*
 * test_signature.c: unit tests of signature.c, the Standard Webhooks
 * signer and verifier.  The published vectors come first: the one the
 * Standard Webhooks libraries' own tests and Svix's "verifying manually"
 * page share, and one from Debezium Server's tests (made with the
 * standardwebhooks.com verifier); then vectors computed for these tests
 * with Python's hmac and base64 modules, an implementation apart from
 * this one, for what the published ones leave out (a 64-byte secret, raw
 * bytes, an empty body, a binary body, two secrets).  Then the behaviour:
 * round trips over many body lengths with every byte tampered, rotation,
 * the tolerance on both sides, malformed headers, versions skipped, and
 * every refusal of a secret, none of whose messages may repeat the secret.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "claimer/claimer.h"
#include "signature.h"

#define ERRLEN 256

/* The vector of the Standard Webhooks libraries' tests (python
 * tests/test_webhooks.py test_sign_function, go webhook_test.go
 * TestWebhookSign, and the C#, PHP and JavaScript ones) and of Svix's
 * docs (docs.svix.com, receiving/verifying-payloads/how-manual). */
#define SW_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SW_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SW_TS 1614265330
#define SW_BODY "{\"test\": 2432232314}"
#define SW_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* Debezium Server, debezium-server-http/src/test/java/io/debezium/server/
 * http/standard_webhooks/StandardWebhooksAuthenticatorTest.java: the same
 * secret, another id, timestamp and body; the expected value is marked
 * there as computed at https://www.standardwebhooks.com/verify. */
#define DBZ_ID "msg_22bd292a-71ab-46fe-a460-8632d6754ac6"
#define DBZ_TS 1234
#define DBZ_BODY "{\"hello\":\"world\"}"
#define DBZ_SIG "v1,qCVBRIv6rKQVhSJBAmUSE9GkdCdPe2j6xzzkm89UcoA="

/* Computed for these tests with Python 3 (hmac.new(key, f"{id}.{ts}."
 * .encode() + body, hashlib.sha256), base64.b64encode).  The 64-byte
 * secret is the bytes 0x00..0x3f; the id, timestamp and body are the
 * specification's own example. */
#define K64_SECRET                                                             \
  "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEy" \
  "MzQ1Njc4OTo7PD0+Pw=="
#define SPEC_ID "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
#define SPEC_TS 1674087231
#define SPEC_BODY                                                                \
  "{\"type\":\"contact.created\",\"timestamp\":\"2022-11-03T20:26:10.344522Z\"," \
  "\"data\":{\"id\":\"1f81eb52-5198-4599-803e-771906343485\"}}"
#define K64_SPEC_SIG "v1,9LtGxwbZoGrF8oS2FH4IGhfQpdLVQZEa0OR1k5rX7yE="
/* SW_ID, SW_TS, SW_BODY under SW_SECRET then K64_SECRET. */
#define ROTATED_SIG SW_SIG " v1,LZ5zuwHTqQH3VM8ERUusjzVQq1FXzemvpR8Mk7Ivp5c="
/* The raw 24 bytes "claimer-test-key-24bytes", id "cl_1", timestamp 0,
 * empty body. */
#define RAW24 "claimer-test-key-24bytes"
#define RAW24_SIG "v1,9AJbD1ytJ6yZIhEeWXIqNDWUH4zB6WHekC2xa9jIBHo="
/* SW_SECRET, id "a", timestamp 1, the 5 bytes 00 ff 00 2e 0a. */
#define BIN_BODY "\x00\xff\x00.\n"
#define BIN_SIG "v1,5mEoJuOLBLH+AKbAYRXlxnwwCJCnEbNz4Ii1bpYNKz0="

/* Two more secrets (32 and 29 bytes), for rotation. */
#define K32_SECRET "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define OTHER_SECRET "whsec_c2VjcmV0LW51bWJlci10aHJlZS1mb3ItdGVzdHM="

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* Returns a new ring holding the given whsec_ secrets (NULL-terminated),
 * failing the test if any is refused. */
static cl_sig_keys_t *ring(const char *first, ...) {
  cl_sig_keys_t *k = NULL;
  assert_int_equal(cl_sig_keys_new(&k), 0);
  assert_non_null(k);
  va_list ap;
  va_start(ap, first);
  for (const char *s = first; s != NULL; s = va_arg(ap, const char *)) {
    char err[ERRLEN] = "";
    int rc = cl_sig_keys_add(k, s, strlen(s), err, sizeof err);
    if (rc != 0)
      fail_msg("secret refused: %s", err);
  }
  va_end(ap);
  return k;
}

static int sign_str(const cl_sig_keys_t *k, const char *id, int64_t ts,
                    const char *body, char out[CL_SIG_HEADER_MAX]) {
  return cl_sig_sign(k, id, ts, body, strlen(body), out, CL_SIG_HEADER_MAX);
}

static int verify_str(const cl_sig_keys_t *k, const char *id, const char *ts,
                      const char *sig, const char *body, int64_t now) {
  return cl_sig_verify(k, id, ts, sig, body, strlen(body), now, 300);
}

/* Fails unless adding text to a fresh ring is refused with CL_EINVAL, the
 * ring stays empty, the message holds want and no 6-character run of the
 * text after its prefix. */
static void assert_refused(const char *text, size_t len, const char *want) {
  cl_sig_keys_t *k = NULL;
  assert_int_equal(cl_sig_keys_new(&k), 0);
  char err[ERRLEN] = "";
  int rc = cl_sig_keys_add(k, text, len, err, sizeof err);
  if (rc != CL_EINVAL)
    fail_msg("secret %d bytes long (for \"%s\") gave %s", (int)len, want,
             cl_err_name(rc));
  assert_int_equal(cl_sig_keys_count(k), 0);
  if (strstr(err, want) == NULL)
    fail_msg("message \"%s\" lacks \"%s\"", err, want);
  const char *b = strncmp(text, "whsec_", 6) == 0 ? text + 6 : text;
  size_t n = strnlen(b, len);
  for (size_t i = 0; i + 6 <= n; i++)
    if (memmem(err, strlen(err), b + i, 6) != NULL)
      fail_msg("message \"%s\" repeats the secret", err);
  cl_sig_keys_free(&k);
  assert_null(k);
}

#define REFUSED(lit, want) assert_refused((lit), sizeof(lit) - 1, (want))

/* ------------------------------------------------------------------------ */
/* Vectors                                                                   */

static void vector_standard_webhooks(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(sign_str(k, SW_ID, SW_TS, SW_BODY, out), 0);
  assert_string_equal(out, SW_SIG);
  assert_int_equal(verify_str(k, SW_ID, "1614265330", SW_SIG, SW_BODY, SW_TS),
                   0);
  cl_sig_keys_free(&k);
}

static void vector_debezium(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(sign_str(k, DBZ_ID, DBZ_TS, DBZ_BODY, out), 0);
  assert_string_equal(out, DBZ_SIG);
  assert_int_equal(verify_str(k, DBZ_ID, "1234", DBZ_SIG, DBZ_BODY, 1234), 0);
  cl_sig_keys_free(&k);
}

static void vector_64_byte_secret(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(K64_SECRET, NULL);
  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(sign_str(k, SPEC_ID, SPEC_TS, SPEC_BODY, out), 0);
  assert_string_equal(out, K64_SPEC_SIG);
  assert_int_equal(
      verify_str(k, SPEC_ID, "1674087231", K64_SPEC_SIG, SPEC_BODY, SPEC_TS),
      0);
  cl_sig_keys_free(&k);
}

static void vector_raw_secret_empty_body(void **state) {
  (void)state;
  cl_sig_keys_t *k = NULL;
  assert_int_equal(cl_sig_keys_new(&k), 0);
  char err[ERRLEN] = "";
  assert_int_equal(cl_sig_keys_add_raw(k, RAW24, 24, err, sizeof err), 0);
  char out[CL_SIG_HEADER_MAX];
  /* An empty body may be NULL. */
  assert_int_equal(cl_sig_sign(k, "cl_1", 0, NULL, 0, out, sizeof out), 0);
  assert_string_equal(out, RAW24_SIG);
  assert_int_equal(cl_sig_verify(k, "cl_1", "0", RAW24_SIG, NULL, 0, 0, 0), 0);
  assert_int_equal(cl_sig_verify(k, "cl_1", "0", RAW24_SIG, "", 0, 0, 0), 0);
  cl_sig_keys_free(&k);
}

/* The body is bytes, NULs included: its length is what counts. */
static void vector_binary_body(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(cl_sig_sign(k, "a", 1, BIN_BODY, 5, out, sizeof out), 0);
  assert_string_equal(out, BIN_SIG);
  assert_int_equal(cl_sig_verify(k, "a", "1", BIN_SIG, BIN_BODY, 5, 1, 0), 0);
  assert_int_equal(cl_sig_verify(k, "a", "1", BIN_SIG, BIN_BODY, 4, 1, 0),
                   CL_SIG_EBADSIG);
  cl_sig_keys_free(&k);
}

/* ------------------------------------------------------------------------ */
/* Round trip and tampering                                                  */

/* Every body length from 0 to 100: the signature verifies, and flipping
 * any one bit of any byte, cutting the last byte or adding one breaks it. */
static void round_trip_and_tampered_body(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(K32_SECRET, NULL);
  unsigned char body[101];
  for (size_t i = 0; i < sizeof body; i++)
    body[i] = (unsigned char)(i * 37 + 11);
  char out[CL_SIG_HEADER_MAX];
  for (size_t len = 0; len < sizeof body; len++) {
    assert_int_equal(
        cl_sig_sign(k, "msg_rt", 1700000000, body, len, out, sizeof out), 0);
    assert_int_equal(strlen(out), 47);
    assert_int_equal(cl_sig_verify(k, "msg_rt", "1700000000", out, body, len,
                                   1700000000, 300),
                     0);
    for (size_t i = 0; i < len; i++) {
      unsigned char saved = body[i];
      body[i] ^= (unsigned char)(1u << (i % 8));
      assert_int_equal(cl_sig_verify(k, "msg_rt", "1700000000", out, body, len,
                                     1700000000, 300),
                       CL_SIG_EBADSIG);
      body[i] = saved;
    }
    if (len > 0)
      assert_int_equal(cl_sig_verify(k, "msg_rt", "1700000000", out, body,
                                     len - 1, 1700000000, 300),
                       CL_SIG_EBADSIG);
    if (len + 1 < sizeof body)
      assert_int_equal(cl_sig_verify(k, "msg_rt", "1700000000", out, body,
                                     len + 1, 1700000000, 300),
                       CL_SIG_EBADSIG);
  }
  cl_sig_keys_free(&k);
}

/* The id and the timestamp are signed too, and so is where the body
 * starts: "{id}.{ts}." cannot be moved into the body. */
static void tampered_id_and_timestamp(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  assert_int_equal(verify_str(k, "msg_p5jXN8AQM9LWM0D4loKWxJeK", "1614265330",
                              SW_SIG, SW_BODY, SW_TS),
                   CL_SIG_EBADSIG);
  assert_int_equal(
      verify_str(k, SW_ID "x", "1614265330", SW_SIG, SW_BODY, SW_TS),
      CL_SIG_EBADSIG);
  assert_int_equal(verify_str(k, SW_ID, "1614265331", SW_SIG, SW_BODY, SW_TS),
                   CL_SIG_EBADSIG);
  assert_int_equal(verify_str(k, SW_ID, "1614265329", SW_SIG, SW_BODY, SW_TS),
                   CL_SIG_EBADSIG);
  /* The same bytes split differently: id "a", ts "1", body "2.x" against
   * the signature of ts "12", body "x". */
  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(sign_str(k, "a", 12, "x", out), 0);
  assert_int_equal(verify_str(k, "a", "1", out, "2.x", 1), CL_SIG_EBADSIG);
  assert_int_equal(verify_str(k, "a", "12", out, "x", 12), 0);
  /* A signature one character off. */
  assert_int_equal(verify_str(k, SW_ID, "1614265330",
                              "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
                              SW_BODY, SW_TS),
                   CL_SIG_EBADSIG);
  cl_sig_keys_free(&k);
}

/* ------------------------------------------------------------------------ */
/* Rotation                                                                  */

static void rotation_two_secrets(void **state) {
  (void)state;
  cl_sig_keys_t *both = ring(SW_SECRET, K64_SECRET, NULL);
  assert_int_equal(cl_sig_keys_count(both), 2);
  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(sign_str(both, SW_ID, SW_TS, SW_BODY, out), 0);
  /* One "v1," per secret, in the ring's order, one space between. */
  assert_string_equal(out, ROTATED_SIG);

  cl_sig_keys_t *old_only = ring(SW_SECRET, NULL);
  cl_sig_keys_t *new_only = ring(K64_SECRET, NULL);
  cl_sig_keys_t *other = ring(OTHER_SECRET, NULL);
  cl_sig_keys_t *other_and_new = ring(OTHER_SECRET, K64_SECRET, NULL);
  const char *ts = "1614265330";
  assert_int_equal(verify_str(old_only, SW_ID, ts, out, SW_BODY, SW_TS), 0);
  assert_int_equal(verify_str(new_only, SW_ID, ts, out, SW_BODY, SW_TS), 0);
  assert_int_equal(verify_str(both, SW_ID, ts, out, SW_BODY, SW_TS), 0);
  assert_int_equal(verify_str(other_and_new, SW_ID, ts, out, SW_BODY, SW_TS),
                   0);
  assert_int_equal(verify_str(other, SW_ID, ts, out, SW_BODY, SW_TS),
                   CL_SIG_EBADSIG);
  /* A receiver holding both accepts a header signed by either alone. */
  assert_int_equal(verify_str(both, SW_ID, ts, SW_SIG, SW_BODY, SW_TS), 0);
  char single[CL_SIG_HEADER_MAX];
  assert_int_equal(sign_str(new_only, SW_ID, SW_TS, SW_BODY, single), 0);
  assert_int_equal(verify_str(both, SW_ID, ts, single, SW_BODY, SW_TS), 0);
  /* Tampering defeats every signature at once. */
  assert_int_equal(verify_str(both, SW_ID, ts, out, SW_BODY " ", SW_TS),
                   CL_SIG_EBADSIG);

  cl_sig_keys_free(&both);
  cl_sig_keys_free(&old_only);
  cl_sig_keys_free(&new_only);
  cl_sig_keys_free(&other);
  cl_sig_keys_free(&other_and_new);
}

/* A full ring signs into CL_SIG_HEADER_MAX, and no more fit. */
static void full_ring(void **state) {
  (void)state;
  cl_sig_keys_t *k = NULL;
  assert_int_equal(cl_sig_keys_new(&k), 0);
  unsigned char key[32];
  char err[ERRLEN];
  for (int i = 0; i < CL_SIG_KEYS_MAX; i++) {
    memset(key, 'a' + i, sizeof key);
    assert_int_equal(cl_sig_keys_add_raw(k, key, sizeof key, err, sizeof err),
                     0);
  }
  memset(key, 'z', sizeof key);
  assert_int_equal(cl_sig_keys_add_raw(k, key, sizeof key, err, sizeof err),
                   CL_EINVAL);
  assert_non_null(strstr(err, "too many signing secrets"));
  assert_int_equal(
      cl_sig_keys_add(k, SW_SECRET, strlen(SW_SECRET), err, sizeof err),
      CL_EINVAL);
  assert_int_equal(cl_sig_keys_count(k), CL_SIG_KEYS_MAX);

  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(sign_str(k, "m", 5, "b", out), 0);
  assert_int_equal(strlen(out), CL_SIG_HEADER_MAX - 1);
  assert_int_equal(verify_str(k, "m", "5", out, "b", 5), 0);
  /* One byte short: refused, and out left empty. */
  char small[CL_SIG_HEADER_MAX - 1];
  assert_int_equal(cl_sig_sign(k, "m", 5, "b", 1, small, sizeof small),
                   CL_EINVAL);
  assert_string_equal(small, "");
  cl_sig_keys_free(&k);
}

/* ------------------------------------------------------------------------ */
/* Tolerance                                                                 */

static void tolerance_both_sides(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  const char *ts = "1614265330";
  /* The edge is inside, one second past it is out, early or late. */
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, strlen(SW_BODY),
                                 SW_TS + 300, 300),
                   0);
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, strlen(SW_BODY),
                                 SW_TS - 300, 300),
                   0);
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, strlen(SW_BODY),
                                 SW_TS + 301, 300),
                   CL_SIG_ETIMESTAMP);
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, strlen(SW_BODY),
                                 SW_TS - 301, 300),
                   CL_SIG_ETIMESTAMP);
  /* Tolerance 0: only the same second. */
  assert_int_equal(
      cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, strlen(SW_BODY), SW_TS, 0),
      0);
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, strlen(SW_BODY),
                                 SW_TS + 1, 0),
                   CL_SIG_ETIMESTAMP);
  /* Far off either way, no overflow. */
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, strlen(SW_BODY),
                                 INT64_MAX, 300),
                   CL_SIG_ETIMESTAMP);
  assert_int_equal(cl_sig_verify(k, SW_ID, "999999999999999999", SW_SIG,
                                 SW_BODY, strlen(SW_BODY), 0, 300),
                   CL_SIG_ETIMESTAMP);
  /* The timestamp is judged before the signature: a replay and a forgery
   * outside the window read the same. */
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, DBZ_SIG, SW_BODY,
                                 strlen(SW_BODY), SW_TS + 301, 300),
                   CL_SIG_ETIMESTAMP);
  cl_sig_keys_free(&k);
}

/* ------------------------------------------------------------------------ */
/* Malformed headers and other versions                                      */

static void malformed_headers(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  const char *ts = "1614265330";
  size_t blen = strlen(SW_BODY);
#define V(id, t, sig)                                                          \
  cl_sig_verify(k, (id), (t), (sig), SW_BODY, blen, SW_TS, 300)
  /* Missing headers. */
  assert_int_equal(V(NULL, ts, SW_SIG), CL_SIG_EMALFORMED);
  assert_int_equal(V(SW_ID, NULL, SW_SIG), CL_SIG_EMALFORMED);
  assert_int_equal(V(SW_ID, ts, NULL), CL_SIG_EMALFORMED);
  /* Ids no sender could sign. */
  assert_int_equal(V("", ts, SW_SIG), CL_SIG_EMALFORMED);
  assert_int_equal(V("msg.1", ts, SW_SIG), CL_SIG_EMALFORMED);
  assert_int_equal(V("msg 1", ts, SW_SIG), CL_SIG_EMALFORMED);
  assert_int_equal(V("msg\t1", ts, SW_SIG), CL_SIG_EMALFORMED);
  assert_int_equal(V("msg\xc3\xa9", ts, SW_SIG), CL_SIG_EMALFORMED);
  /* Timestamps that are not plain decimal seconds. */
  const char *bad_ts[] = {"",
                          "abc",
                          "-1614265330",
                          "+1614265330",
                          "0x1",
                          "1614265330.5",
                          " 1614265330",
                          "1614265330 ",
                          "01614265330",
                          "1e9",
                          "1000000000000000000"};
  for (size_t i = 0; i < sizeof bad_ts / sizeof bad_ts[0]; i++)
    if (V(SW_ID, bad_ts[i], SW_SIG) != CL_SIG_EMALFORMED)
      fail_msg("timestamp \"%s\" was not malformed", bad_ts[i]);
  /* Signature headers with nothing usable that is well formed. */
  const char *bad_sig[] = {
      "",
      "   ",
      "v1",
      "v1,",
      "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
      "v1,!!!!",
      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",   /* no padding */
      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE==", /* 45 chars */
      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O==",  /* 31 bytes */
      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOL=1OE=",  /* '=' inside */
      "v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=",  /* URL-safe */
      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\t",
      "v1;g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
      /* A v2 token does not excuse a broken v1 one. */
      "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,",
  };
  for (size_t i = 0; i < sizeof bad_sig / sizeof bad_sig[0]; i++)
    if (V(SW_ID, ts, bad_sig[i]) != CL_SIG_EMALFORMED)
      fail_msg("signature \"%s\" was not malformed", bad_sig[i]);
  /* But a broken token beside a good one does not spoil the match. */
  assert_int_equal(V(SW_ID, ts, "v1, " SW_SIG), 0);
  assert_int_equal(V(SW_ID, ts, "junk " SW_SIG " v1,!!"), 0);
#undef V
  cl_sig_keys_free(&k);
}

/* Versions other than v1 are skipped, whatever they carry: even the right
 * MAC labelled v2 is not accepted. */
static void other_versions_skipped(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  const char *ts = "1614265330";
  /* The libraries' multi-signature case: wrong v1, a v2, the right v1, a
   * wrong v1 again. */
  assert_int_equal(
      verify_str(k, SW_ID, ts,
                 "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "
                 "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " SW_SIG
                 " v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
                 SW_BODY, SW_TS),
      0);
  assert_int_equal(
      verify_str(k, SW_ID, ts,
                 "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFym"
                 "VJaA7AZdpXwVLPo3mNl8EM+m7TBAg== " SW_SIG,
                 SW_BODY, SW_TS),
      0);
  assert_int_equal(verify_str(k, SW_ID, ts,
                              "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                              SW_BODY, SW_TS),
                   CL_SIG_EBADSIG);
  assert_int_equal(verify_str(k, SW_ID, ts,
                              "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                              SW_BODY, SW_TS),
                   CL_SIG_EBADSIG);
  assert_int_equal(verify_str(k, SW_ID, ts, "v1a,anything v2,", SW_BODY, SW_TS),
                   CL_SIG_EBADSIG);
  /* Extra spaces around and between tokens are harmless. */
  assert_int_equal(
      verify_str(k, SW_ID, ts, "  v2,x   " SW_SIG "  ", SW_BODY, SW_TS), 0);
  cl_sig_keys_free(&k);
}

/* ------------------------------------------------------------------------ */
/* Secrets                                                                   */

static void secret_forms_accepted(void **state) {
  (void)state;
  cl_sig_keys_t *k = NULL;
  assert_int_equal(cl_sig_keys_new(&k), 0);
  char err[ERRLEN];
  /* Surrounding blanks and line ends (a file written by echo). */
  const char *padded = " \t" SW_SECRET "\r\n";
  assert_int_equal(cl_sig_keys_add(k, padded, strlen(padded), err, sizeof err),
                   0);
  /* Not NUL-terminated: only len counts. */
  char buf[64];
  memcpy(buf, SW_SECRET "XYZ", sizeof SW_SECRET + 2);
  assert_int_equal(cl_sig_keys_add(k, buf, strlen(SW_SECRET), err, sizeof err),
                   0);
  /* The bounds themselves: 24 and 64 bytes. */
  assert_int_equal(cl_sig_keys_add(k, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                   38, err, sizeof err),
                   0);
  assert_int_equal(
      cl_sig_keys_add(k, K64_SECRET, strlen(K64_SECRET), err, sizeof err), 0);
  assert_int_equal(cl_sig_keys_count(k), 4);
  /* The two forms of the same secret sign alike. */
  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(
      cl_sig_sign(k, SW_ID, SW_TS, SW_BODY, strlen(SW_BODY), out, sizeof out),
      0);
  assert_int_equal(strncmp(out, SW_SIG " " SW_SIG " ", 2 * 48), 0);
  cl_sig_keys_free(&k);
  assert_null(k);
  cl_sig_keys_free(&k);
  cl_sig_keys_free(NULL);
  assert_int_equal(cl_sig_keys_count(NULL), 0);
}

static void secret_errors(void **state) {
  (void)state;
  REFUSED("", "empty");
  REFUSED(" \r\n", "empty");
  /* The bare base64 (which the reference libraries also take) is refused:
   * the prefix says which scheme the secret is for. */
  REFUSED("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "does not start with whsec_");
  REFUSED("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "does not start with");
  REFUSED("whsec", "does not start with whsec_");
  REFUSED("whsec_", "nothing after whsec_");
  REFUSED("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "asymmetric");
  REFUSED("whpk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "asymmetric");
  REFUSED("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La!aSw", "character 29 after");
  REFUSED("whsec_MfKQ9r8GKYqr TwjUPD8ILPZIo2LaLaSw", "character 13 after");
  REFUSED("whsec_MfKQ9r8GKYqrTwjUPD8I-PZIo2LaLa_w", "not base64");
  REFUSED("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "not a multiple of 4");
  REFUSED("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=", "not a multiple of 4");
  REFUSED("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaL===", "misplaced '='");
  REFUSED("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa==", "at least 24");
  REFUSED("whsec_MfKQ9r8GKYqrTwjU=D8ILPZIo2LaLaSw", "misplaced '=' at "
                                                    "character 17");
  /* 23 and 65 bytes. */
  REFUSED("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "is 23 bytes");
  REFUSED("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
          "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
          "is 65 bytes");
  /* A NUL inside the given length is not base64 either. */
  assert_refused("whsec_MfKQ9r8GKYqrTwjU\0PD8ILPZIo2LaLaSw", 39, "character");

  /* Raw bytes: the same bounds. */
  cl_sig_keys_t *k = NULL;
  assert_int_equal(cl_sig_keys_new(&k), 0);
  char err[ERRLEN];
  unsigned char raw[65] = {0};
  assert_int_equal(cl_sig_keys_add_raw(k, raw, 23, err, sizeof err), CL_EINVAL);
  assert_non_null(strstr(err, "at least 24"));
  assert_int_equal(cl_sig_keys_add_raw(k, raw, 65, err, sizeof err), CL_EINVAL);
  assert_non_null(strstr(err, "at most 64"));
  assert_int_equal(cl_sig_keys_add_raw(k, NULL, 32, err, sizeof err),
                   CL_EINVAL);
  assert_int_equal(cl_sig_keys_add(k, NULL, 5, err, sizeof err), CL_EINVAL);
  assert_int_equal(cl_sig_keys_add_raw(NULL, raw, 32, err, sizeof err),
                   CL_EINVAL);
  /* No room for a message is no crash. */
  assert_int_equal(cl_sig_keys_add_raw(k, raw, 1, NULL, 0), CL_EINVAL);
  assert_int_equal(cl_sig_keys_count(k), 0);
  assert_int_equal(cl_sig_keys_add_raw(k, raw, 24, err, sizeof err), 0);
  assert_int_equal(cl_sig_keys_add_raw(k, raw, 64, err, sizeof err), 0);
  assert_int_equal(cl_sig_keys_count(k), 2);
  cl_sig_keys_free(&k);
}

/* ------------------------------------------------------------------------ */
/* Arguments and error names                                                 */

static void sign_arguments(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  cl_sig_keys_t *empty = NULL;
  assert_int_equal(cl_sig_keys_new(&empty), 0);
  char out[CL_SIG_HEADER_MAX];
  assert_int_equal(sign_str(empty, "m", 1, "b", out), CL_EINVAL);
  assert_int_equal(sign_str(NULL, "m", 1, "b", out), CL_EINVAL);
  assert_int_equal(sign_str(k, NULL, 1, "b", out), CL_EINVAL);
  assert_int_equal(sign_str(k, "", 1, "b", out), CL_EINVAL);
  assert_int_equal(sign_str(k, "msg.1", 1, "b", out), CL_EINVAL);
  assert_int_equal(sign_str(k, "msg 1", 1, "b", out), CL_EINVAL);
  assert_int_equal(sign_str(k, "msg\n", 1, "b", out), CL_EINVAL);
  assert_string_equal(out, "");
  assert_int_equal(sign_str(k, "m", -1, "b", out), CL_EINVAL);
  assert_int_equal(sign_str(k, "m", INT64_C(1000000000000000000), "b", out),
                   CL_EINVAL);
  assert_int_equal(sign_str(k, "m", INT64_C(999999999999999999), "b", out), 0);
  assert_int_equal(cl_sig_sign(k, "m", 1, NULL, 1, out, sizeof out), CL_EINVAL);
  assert_int_equal(cl_sig_sign(k, "m", 1, "b", 1, NULL, 0), CL_EINVAL);
  assert_int_equal(cl_sig_sign(k, "m", 1, "b", 1, out, 47), CL_EINVAL);
  assert_int_equal(cl_sig_sign(k, "m", 1, "b", 1, out, 48), 0);
  assert_int_equal(strlen(out), 47);
  cl_sig_keys_free(&k);
  cl_sig_keys_free(&empty);
}

static void verify_arguments(void **state) {
  (void)state;
  cl_sig_keys_t *k = ring(SW_SECRET, NULL);
  cl_sig_keys_t *empty = NULL;
  assert_int_equal(cl_sig_keys_new(&empty), 0);
  const char *ts = "1614265330";
  size_t blen = strlen(SW_BODY);
  assert_int_equal(
      cl_sig_verify(empty, SW_ID, ts, SW_SIG, SW_BODY, blen, SW_TS, 300),
      CL_EINVAL);
  assert_int_equal(
      cl_sig_verify(NULL, SW_ID, ts, SW_SIG, SW_BODY, blen, SW_TS, 300),
      CL_EINVAL);
  assert_int_equal(
      cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, blen, SW_TS, -1), CL_EINVAL);
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, SW_SIG, SW_BODY, blen, -1, 300),
                   CL_EINVAL);
  assert_int_equal(cl_sig_verify(k, SW_ID, ts, SW_SIG, NULL, 1, SW_TS, 300),
                   CL_EINVAL);
  cl_sig_keys_free(&k);
  cl_sig_keys_free(&empty);
}

static void error_names(void **state) {
  (void)state;
#define CHECK(name, value, msg)                                                \
  assert_int_equal(CL_SIG_E##name, value);                                     \
  assert_string_equal(cl_sig_strerror(value), msg);                            \
  assert_string_equal(cl_sig_err_name(value), "CL_SIG_E" #name);               \
  assert_true(value<-1100 && value> - 1200);
  CL_SIG_ERRNO_MAP(CHECK)
#undef CHECK
  /* Below the core's own range, so never one of its codes. */
  assert_string_equal(cl_err_name(CL_SIG_EBADSIG), cl_err_name(-1100));
  /* Anything else reads as the core reads it. */
  assert_string_equal(cl_sig_strerror(CL_EINVAL), cl_strerror(CL_EINVAL));
  assert_string_equal(cl_sig_err_name(CL_ENOMEM), "CL_ENOMEM");
  assert_string_equal(cl_sig_err_name(0), cl_err_name(0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(vector_standard_webhooks),
      cmocka_unit_test(vector_debezium),
      cmocka_unit_test(vector_64_byte_secret),
      cmocka_unit_test(vector_raw_secret_empty_body),
      cmocka_unit_test(vector_binary_body),
      cmocka_unit_test(round_trip_and_tampered_body),
      cmocka_unit_test(tampered_id_and_timestamp),
      cmocka_unit_test(rotation_two_secrets),
      cmocka_unit_test(full_ring),
      cmocka_unit_test(tolerance_both_sides),
      cmocka_unit_test(malformed_headers),
      cmocka_unit_test(other_versions_skipped),
      cmocka_unit_test(secret_forms_accepted),
      cmocka_unit_test(secret_errors),
      cmocka_unit_test(sign_arguments),
      cmocka_unit_test(verify_arguments),
      cmocka_unit_test(error_names),
  };
  return cmocka_run_group_tests_name("signature", tests, NULL, NULL);
}
