/*
 * test_check.c: unit tests of the input checks in check.c (UTF-8, item ids,
 * queue and worker names, JSON payloads, connection strings), of the
 * password redaction of connection strings, and of cl_uuid4().  No database
 * is involved.  Byte offsets in the expected messages are 0-based, as the
 * library documents.  Where a message must not leak something (a password,
 * a raw control character) the test looks for its absence explicitly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "claimer/claimer.h"
#include "internal.h"

#define ERRLEN 512

/* Fails unless hay contains needle, and shows both when it does not. */
#define assert_contains(hay, needle)                                           \
  do {                                                                         \
    const char *hay_ = (hay), *needle_ = (needle);                             \
    if (strstr(hay_, needle_) == NULL)                                         \
      fail_msg("\"%s\" does not contain \"%s\"", hay_, needle_);               \
  } while (0)

#define assert_not_contains(hay, needle)                                       \
  do {                                                                         \
    const char *hay_ = (hay), *needle_ = (needle);                             \
    if (strstr(hay_, needle_) != NULL)                                         \
      fail_msg("\"%s\" contains \"%s\"", hay_, needle_);                       \
  } while (0)

/* A message must be printable as it is: valid UTF-8, no control bytes. */
static void assert_printable(const char *msg) {
  assert_int_equal(cl_utf8_invalid_at(msg, strlen(msg)), -1);
  for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
    if (*p < 0x20 || *p == 0x7F)
      fail_msg("message has control byte 0x%02x: %s", *p, msg);
}

/* Returns a malloc'd string of n copies of c. */
static char *repeat(char c, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */

static long utf8_at(const char *s) { return cl_utf8_invalid_at(s, strlen(s)); }

static void utf8_valid(void **state) {
  (void)state;
  assert_int_equal(cl_utf8_invalid_at("", 0), -1);
  assert_int_equal(cl_utf8_invalid_at(NULL, 0), -1);
  assert_int_equal(utf8_at("plain ascii ~"), -1);
  assert_int_equal(utf8_at("\x7f"), -1);              /* U+007F */
  assert_int_equal(utf8_at("\xc2\x80"), -1);          /* U+0080 */
  assert_int_equal(utf8_at("\xc3\xa9t\xc3\xa9"), -1); /* été */
  assert_int_equal(utf8_at("\xdf\xbf"), -1);          /* U+07FF */
  assert_int_equal(utf8_at("\xe0\xa0\x80"), -1);      /* U+0800 */
  assert_int_equal(utf8_at("\xe2\x82\xac"), -1);      /* € */
  assert_int_equal(utf8_at("\xed\x9f\xbf"), -1);      /* U+D7FF */
  assert_int_equal(utf8_at("\xee\x80\x80"), -1);      /* U+E000 */
  assert_int_equal(utf8_at("\xef\xbf\xbf"), -1);      /* U+FFFF */
  assert_int_equal(utf8_at("\xf0\x90\x80\x80"), -1);  /* U+10000 */
  assert_int_equal(utf8_at("\xf0\x9f\x98\x80"), -1);  /* 😀 */
  assert_int_equal(utf8_at("\xf4\x8f\xbf\xbf"), -1);  /* U+10FFFF */
  /* A NUL byte is valid UTF-8; the length, not a terminator, bounds s. */
  assert_int_equal(cl_utf8_invalid_at("a\0b", 3), -1);
}

static void utf8_overlong(void **state) {
  (void)state;
  assert_int_equal(utf8_at("\xc0\xaf"), 0); /* '/' in 2 bytes */
  assert_int_equal(utf8_at("ab\xc0\xaf"), 2);
  assert_int_equal(utf8_at("\xc1\xbf"), 0);
  assert_int_equal(utf8_at("x\xe0\x80\xaf"), 1);    /* '/' in 3 bytes */
  assert_int_equal(utf8_at("\xe0\x9f\xbf"), 0);     /* U+07FF in 3 */
  assert_int_equal(utf8_at("\xf0\x80\x80\xaf"), 0); /* '/' in 4 bytes */
  assert_int_equal(utf8_at("\xf0\x8f\xbf\xbf"), 0); /* U+FFFF in 4 */
}

static void utf8_surrogates(void **state) {
  (void)state;
  assert_int_equal(utf8_at("\xed\xa0\x80"), 0);             /* U+D800 */
  assert_int_equal(utf8_at("ok\xed\xbf\xbf"), 2);           /* U+DFFF */
  assert_int_equal(utf8_at("\xed\xa0\xbd\xed\xb8\x80"), 0); /* CESU pair */
}

static void utf8_above_max(void **state) {
  (void)state;
  assert_int_equal(utf8_at("\xf4\x90\x80\x80"), 0); /* U+110000 */
  assert_int_equal(utf8_at("abc\xf5\x80\x80\x80"), 3);
  assert_int_equal(utf8_at("\xf8\x88\x80\x80\x80"), 0); /* old 5-byte form */
  assert_int_equal(utf8_at("\xfe"), 0);
  assert_int_equal(utf8_at("\xff"), 0);
}

static void utf8_truncated(void **state) {
  (void)state;
  assert_int_equal(utf8_at("\xc3"), 0);
  assert_int_equal(utf8_at("a\xe2\x82"), 1);
  assert_int_equal(utf8_at("\xf0\x9f\x98"), 0);
  assert_int_equal(utf8_at("\xe2\x82x"), 0);    /* cut by ASCII */
  assert_int_equal(utf8_at("\xc3\xc3\xa9"), 0); /* cut by a lead */
  /* The length cuts a valid sequence short. */
  assert_int_equal(cl_utf8_invalid_at("\xc3\xa9", 1), 0);
  assert_int_equal(cl_utf8_invalid_at("ab\xf0\x9f\x98\x80", 5), 2);
  /* ...and stops the scan before a bad byte. */
  assert_int_equal(cl_utf8_invalid_at("a\xff", 1), -1);
}

static void utf8_stray_continuation(void **state) {
  (void)state;
  assert_int_equal(utf8_at("\x80"), 0);
  assert_int_equal(utf8_at("ab\xbf"), 2);
  assert_int_equal(utf8_at("\xc3\xa9\xa9"), 2);
  assert_int_equal(utf8_at("\xe2\x82\xac\x80x"), 3);
}

/* ------------------------------------------------------------------------ */
/* Item ids and worker names                                                 */

static void item_id_valid(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_item_id("a", err, sizeof err), 0);
  assert_int_equal(cl_check_item_id("order-2024/17#line 3", err, sizeof err),
                   0);
  assert_int_equal(cl_check_item_id("\xc3\xbc"
                                    "ber-\xe2\x82\xac-\xf0\x9f\x98\x80",
                                    err, sizeof err),
                   0);
  char *id = repeat('x', CL_ITEM_ID_MAX);
  assert_int_equal(cl_check_item_id(id, err, sizeof err), 0);
  free(id);
  /* A verdict without a message. */
  assert_int_equal(cl_check_item_id("a", NULL, 0), 0);
}

static void item_id_empty_or_missing(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_item_id("", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id is empty");
  assert_int_equal(cl_check_item_id(NULL, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id is missing");
}

static void item_id_length(void **state) {
  (void)state;
  char err[ERRLEN];
  char *id = repeat('x', CL_ITEM_ID_MAX + 1);
  assert_int_equal(cl_check_item_id(id, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id is 256 bytes; the limit is 255");
  free(id);
  id = repeat('x', 300);
  assert_int_equal(cl_check_item_id(id, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id is 300 bytes; the limit is 255");
  free(id);
  /* The limit is in bytes, not characters: 85 euro signs are 255 bytes,
   * 86 are 258. */
  char buf[3 * 86 + 1] = "";
  for (int i = 0; i < 85; i++)
    strcat(buf, "\xe2\x82\xac");
  assert_int_equal(cl_check_item_id(buf, err, sizeof err), 0);
  strcat(buf, "\xe2\x82\xac");
  assert_int_equal(cl_check_item_id(buf, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id is 258 bytes; the limit is 255");
}

static void item_id_control(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_item_id("abc\x01", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id contains a control character at byte 3");
  assert_int_equal(cl_check_item_id("\n", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id contains a control character at byte 0");
  assert_int_equal(cl_check_item_id("a\tb", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id contains a control character at byte 1");
  assert_int_equal(cl_check_item_id("ab\x7f", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id contains a control character at byte 2");
  assert_int_equal(cl_check_item_id("\x1b[31m", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id contains a control character at byte 0");
  /* C1 controls (here U+009B, CSI) count too. */
  assert_int_equal(cl_check_item_id("a\xc2\x9b", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id contains a control character at byte 1");
  /* U+00A0 is the first character past C1 and is fine. */
  assert_int_equal(cl_check_item_id("a\xc2\xa0", err, sizeof err), 0);
}

static void item_id_utf8(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_item_id("abcd\xff", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id is not valid UTF-8 (byte 4)");
  assert_int_equal(cl_check_item_id("\xc0\xaf", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id is not valid UTF-8 (byte 0)");
  assert_int_equal(cl_check_item_id("id\xed\xa0\x80", err, sizeof err),
                   CL_EINVAL);
  assert_string_equal(err, "item id is not valid UTF-8 (byte 2)");
  /* Whichever fault comes first is the one reported. */
  assert_int_equal(cl_check_item_id("a\xff\x01", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id is not valid UTF-8 (byte 1)");
  assert_int_equal(cl_check_item_id("a\x01\xff", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "item id contains a control character at byte 1");
}

static void worker_names(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_worker("host-1:4242", err, sizeof err), 0);
  assert_int_equal(
      cl_check_worker("worker \xc3\xa9t\xc3\xa9 #2", err, sizeof err), 0);
  char *w = repeat('w', CL_WORKER_MAX);
  assert_int_equal(cl_check_worker(w, err, sizeof err), 0);
  free(w);
  w = repeat('w', CL_WORKER_MAX + 1);
  assert_int_equal(cl_check_worker(w, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "worker name is 201 bytes; the limit is 200");
  free(w);
  assert_int_equal(cl_check_worker("", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "worker name is empty");
  assert_int_equal(cl_check_worker(NULL, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "worker name is missing");
  assert_int_equal(cl_check_worker("w\r\n", err, sizeof err), CL_EINVAL);
  assert_string_equal(err,
                      "worker name contains a control character at byte 1");
  assert_int_equal(cl_check_worker("w\xe2\x82", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "worker name is not valid UTF-8 (byte 1)");
}

/* ------------------------------------------------------------------------ */
/* Queue names                                                               */

static void queue_valid(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_queue("default", err, sizeof err), 0);
  assert_int_equal(cl_check_queue("q", err, sizeof err), 0);
  assert_int_equal(cl_check_queue("emails.high-v2_EU.west", err, sizeof err),
                   0);
  assert_int_equal(cl_check_queue("0123456789", err, sizeof err), 0);
  char *q = repeat('q', CL_QUEUE_MAX);
  assert_int_equal(cl_check_queue(q, err, sizeof err), 0);
  free(q);
}

static void queue_empty_long_missing(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_queue("", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "queue name is empty");
  assert_int_equal(cl_check_queue(NULL, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "queue name is missing");
  char *q = repeat('q', CL_QUEUE_MAX + 1);
  assert_int_equal(cl_check_queue(q, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "queue name is 64 bytes; the limit is 63");
  free(q);
}

static void queue_injection(void **state) {
  (void)state;
  char err[ERRLEN];
  const char *q = "x'; drop table claimer.items; --";
  assert_int_equal(cl_check_queue(q, err, sizeof err), CL_EINVAL);
  assert_string_equal(err,
                      "queue name \"x'; drop table claimer.items; --\" has a "
                      "character not allowed at byte 1 (allowed: letters, "
                      "digits, _ . -)");
}

static void queue_bad_characters(void **state) {
  (void)state;
  static const struct {
    const char *q;
    const char *at;
  } cases[] = {
      {"two words", "at byte 3 "},   {"a/b", "at byte 1 "},
      {"caf\xc3\xa9", "at byte 3 "}, {"q\"", "at byte 1 "},
      {"*", "at byte 0 "},           {"a\\b", "at byte 1 "},
      {"tab\there", "at byte 3 "},   {"ok,no", "at byte 2 "},
  };
  char err[ERRLEN];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(cl_check_queue(cases[i].q, err, sizeof err), CL_EINVAL);
    assert_contains(err, cases[i].at);
    assert_contains(err, "(allowed: letters, digits, _ . -)");
    assert_printable(err);
  }
  /* Quotes and backslashes in the echoed value are escaped. */
  assert_int_equal(cl_check_queue("q\"", err, sizeof err), CL_EINVAL);
  assert_contains(err, "\"q\\\"\"");
  assert_int_equal(cl_check_queue("a\\b", err, sizeof err), CL_EINVAL);
  assert_contains(err, "\"a\\\\b\"");
}

/* ':' is the weight separator of `work -q NAME:WEIGHT`, so no name holds
 * one: `enqueue -q jobs:2` and `work -q jobs:2` cannot mean two things. */
static void queue_colon(void **state) {
  (void)state;
  char err[ERRLEN];
  static const struct {
    const char *q;
    const char *at;
  } cases[] = {{"jobs:2", "at byte 4"},
               {":", "at byte 0"},
               {"a:", "at byte 1"},
               {":3", "at byte 0"},
               {"a:b:c", "at byte 1"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(cl_check_queue(cases[i].q, err, sizeof err), CL_EINVAL);
    assert_contains(err, cases[i].at);
    assert_contains(err, "':' separates a weight");
    assert_contains(err, "not part of a name");
  }
  assert_int_equal(cl_check_queue("jobs:2", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "queue name \"jobs:2\" has ':' at byte 4: ':' "
                           "separates a weight (NAME:WEIGHT, as in claimer "
                           "work -q jobs:2) and is not part of a name");
}

/* The echoed value never carries raw control characters or invalid UTF-8,
 * and a long one is cut. */
static void queue_echo_is_safe(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_queue("a\x1b[2Jb\xff\xc2\x9b", err, sizeof err),
                   CL_EINVAL);
  assert_printable(err);
  assert_contains(err, "\"a\\x1b[2Jb\\xff\\xc2\\x9b\"");
  assert_contains(err, "at byte 1 ");

  /* 60 bytes, the bad one last: the echo stops after 40 with "...". */
  char q[61];
  memset(q, 'a', 59);
  q[59] = '!';
  q[60] = '\0';
  assert_int_equal(cl_check_queue(q, err, sizeof err), CL_EINVAL);
  assert_contains(err, "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\"");
  assert_not_contains(err, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  assert_contains(err, "at byte 59 ");

  /* A cut never splits a multibyte character. */
  char u[64] = "";
  strcat(u, "a");
  for (int i = 0; i < 15; i++)
    strcat(u, "\xe2\x82\xac"); /* bytes 1..45 */
  assert_int_equal(cl_check_queue(u, err, sizeof err), CL_EINVAL);
  assert_printable(err);
  assert_contains(err, "\xe2\x82\xac...\"");
  assert_contains(err, "at byte 1 ");
}

/* Messages are bounded by errlen and always terminated; err may be NULL. */
static void message_bounds(void **state) {
  (void)state;
  char small[12];
  memset(small, 'Z', sizeof small);
  assert_int_equal(cl_check_queue("bad queue", small, sizeof small), CL_EINVAL);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, "queue name ", sizeof small - 1);

  char one[1] = {'Z'};
  assert_int_equal(cl_check_item_id("", one, sizeof one), CL_EINVAL);
  assert_int_equal(one[0], '\0');

  char untouched[4] = {'Z', 'Z', 'Z', 'Z'};
  assert_int_equal(cl_check_item_id("", untouched, 0), CL_EINVAL);
  assert_memory_equal(untouched, "ZZZZ", 4);

  assert_int_equal(cl_check_queue("bad queue", NULL, 0), CL_EINVAL);
  assert_int_equal(cl_check_json("{", 1, NULL, 0), CL_EJSON);
  assert_int_equal(cl_check_dsn("postgresql://u:s3cretpw@[::1/db", NULL, 0),
                   CL_EDSN);
  assert_int_equal(
      cl_check_dsn("postgresql://u:s3cretpw@[::1/db", small, sizeof small),
      CL_EDSN);
  assert_int_equal(strlen(small), sizeof small - 1);
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */

static void json_ok(const char *s) {
  char err[ERRLEN] = "";
  int rc = cl_check_json(s, strlen(s), err, sizeof err);
  if (rc != 0)
    fail_msg("JSON %s rejected (%d): %s", s, rc, err);
}

/* Expects CL_EJSON with "at byte <at>:" (for a parse fault) and needle in
 * the message. */
static void json_bad_len(const char *s, size_t len, long at,
                         const char *needle) {
  char err[ERRLEN] = "", want[64];
  int rc = cl_check_json(s, len, err, sizeof err);
  if (rc != CL_EJSON)
    fail_msg("JSON %.*s: rc %d, expected CL_EJSON", (int)len, s, rc);
  if (at >= 0) {
    snprintf(want, sizeof want, "not valid JSON at byte %ld: ", at);
    if (strstr(err, want) == NULL)
      fail_msg("JSON %.*s: \"%s\" lacks \"%s\"", (int)len, s, err, want);
  }
  if (needle != NULL && strstr(err, needle) == NULL)
    fail_msg("JSON %.*s: \"%s\" lacks \"%s\"", (int)len, s, err, needle);
  assert_printable(err);
}

static void json_bad(const char *s, long at, const char *needle) {
  json_bad_len(s, strlen(s), at, needle);
}

static void json_valid_containers(void **state) {
  (void)state;
  json_ok("{}");
  json_ok("[]");
  json_ok("{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}");
  json_ok("[1,\"two\",3.5,{\"four\":[]},[[]]]");
  json_ok(" \t\r\n{ \"a\" : [ 1 , 2 ] }\n");
  json_ok("{\"a\":1,\"a\":2}"); /* duplicate keys: jsonb keeps the last */
  json_ok("{\"\xc3\xa9t\xc3\xa9\":\"\xf0\x9f\x98\x80\"}");
}

/* Any JSON value is a payload, scalars and null included. */
static void json_valid_scalars(void **state) {
  (void)state;
  json_ok("42");
  json_ok("-0");
  json_ok("0");
  json_ok("1.5e-3");
  json_ok("1E+2");
  json_ok("-12.0e10");
  json_ok("123456789012345678901234567890"); /* jsonb is numeric */
  json_ok("1e400");
  json_ok("\"x\"");
  json_ok("\"\"");
  json_ok("true");
  json_ok("false");
  json_ok("null");
  json_ok(" 42 ");
  json_ok("7\n");
}

static void json_valid_escapes(void **state) {
  (void)state;
  json_ok("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"");
  json_ok("\"\\u00e9\\u20AC\"");
  json_ok("\"\\u0001\\u001f\""); /* escaped controls are fine */
  json_ok("\"\\ud83d\\ude00\""); /* a surrogate pair */
  json_ok("{\"k\\u0041\":\"v\"}");
}

static void json_empty(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_json("", 0, err, sizeof err), CL_EJSON);
  assert_string_equal(err, "JSON text is empty");
  assert_int_equal(cl_check_json(NULL, 0, err, sizeof err), CL_EJSON);
  assert_string_equal(err, "JSON text is empty");
  json_bad("   \n", 4, "no value");
  assert_int_equal(cl_check_json(NULL, 3, err, sizeof err), CL_EINVAL);
}

static void json_truncated(void **state) {
  (void)state;
  json_bad("{\"a\":1", 6, "unexpected end of data");
  json_bad("[1,2", 4, NULL);
  json_bad("{", 1, NULL);
  json_bad("{\"a\":", 5, NULL);
  json_bad("\"abc", 4, "not closed");
  json_bad("tru", 0, "\"tru\"");
  json_bad("\"\\u12", 1, "four hex digits");
}

static void json_trailing(void **state) {
  (void)state;
  json_bad("{} x", 3, NULL);
  json_bad("{}{}", 2, NULL);
  json_bad("1 2", 2, NULL);
  json_bad("[1]]", 3, NULL);
  json_bad("{\"a\":1}}", 7, NULL);
  json_bad("null,", 4, NULL);
  json_bad("true false", 5, NULL);
}

/* jsonb cannot hold U+0000, so the check refuses what the database would. */
static void json_nul_escape(void **state) {
  (void)state;
  json_bad("\"\\u0000\"", 1, "\\u0000");
  json_bad("[\"ab\\u0000\"]", 4, "\\u0000 is not allowed");
  json_bad("{\"\\u0000\":1}", 2, "\\u0000");
}

static void json_nan_infinity(void **state) {
  (void)state;
  json_bad("NaN", 0, "\"NaN\"");
  json_bad("[NaN]", 1, "NaN");
  json_bad("{\"a\":Infinity}", 5, "\"Infinity\"");
  json_bad("-Infinity", 1, "minus sign");
  json_bad("nan", 0, NULL);
  json_bad("[1,-NaN]", 4, NULL);
}

static void json_numbers(void **state) {
  (void)state;
  json_bad("01", 1, "leading zeros");
  json_bad("[-01]", 3, "leading zeros");
  json_bad("1.", 2, "decimal point");
  json_bad("[1.]", 3, "decimal point");
  json_bad("1.e5", 2, "decimal point");
  json_bad(".5", 0, "unexpected character");
  json_bad("+1", 0, "unexpected character");
  json_bad("1e", 2, "exponent");
  json_bad("1e+", 3, "exponent");
  json_bad("-", 1, "minus sign");
  json_bad("0x10", 1, NULL);
  json_bad("1.5.3", 3, NULL);
}

/* Expects CL_EJSON with "number out of range at byte <at>:" and needle. */
static void json_range(const char *s, long at, const char *needle) {
  char err[ERRLEN] = "", want[64];
  int rc = cl_check_json(s, strlen(s), err, sizeof err);
  if (rc != CL_EJSON)
    fail_msg("JSON %.60s: rc %d, expected CL_EJSON", s, rc);
  snprintf(want, sizeof want, "number out of range at byte %ld: ", at);
  if (strstr(err, want) == NULL)
    fail_msg("JSON %.60s: \"%s\" lacks \"%s\"", s, err, want);
  if (needle != NULL && strstr(err, needle) == NULL)
    fail_msg("JSON %.60s: \"%s\" lacks \"%s\"", s, err, needle);
}

/* Returns a malloc'd head + n copies of c + tail. */
static char *framed(const char *head, char c, size_t n, const char *tail) {
  size_t h = strlen(head), t = strlen(tail);
  char *s = malloc(h + n + t + 1);
  assert_non_null(s);
  memcpy(s, head, h);
  memset(s + h, c, n);
  memcpy(s + h + n, tail, t + 1);
  return s;
}

/* jsonb stores numbers as numeric: each bound here was checked on both
 * sides against PostgreSQL 15 (select 'X'::jsonb). */
static void json_numeric_range(void **state) {
  (void)state;
  /* At most 131072 digits before the decimal point. */
  json_range("1e999999", 0, "below 1e131072");
  json_range("[1e131072]", 1, "too large");
  json_range("{\"a\":[-1e131072]}", 6, "too large");
  json_range("10e131071", 0, "too large");
  json_ok("1e131071");
  json_ok("-1e131071");
  json_ok("9.999e131071");
  json_ok("0.1e131072");
  json_ok("0.01e131073");
  json_ok("1e+0131071");
  json_range("1e0000000000000000000000131072", 0, NULL);
  char *s = framed("1", '0', 131071, "");
  json_ok(s);
  free(s);
  s = framed("[1", '0', 131072, "]");
  json_range(s, 1, "too large");
  free(s);
  /* At most 16383 digits after it, trailing zeros and exponent counted. */
  json_ok("1e-16383");
  json_range("1e-16384", 0, "after the decimal point");
  json_ok("0.5e-16382");
  json_range("0.5e-16383", 0, "this number has 16384");
  json_ok("123e-16382");
  json_ok("0e-16383");
  json_range("0e-16384", 0, "after the decimal point");
  json_range("0.0e-16383", 0, "after the decimal point");
  s = framed("0.", '0', 16382, "1");
  json_ok(s);
  free(s);
  s = framed("0.", '0', 16383, "1");
  json_range(s, 0, "after the decimal point");
  free(s);
  s = framed("1.", '0', 16383, "");
  json_ok(s);
  free(s);
  s = framed("[1,1.", '0', 16384, "]");
  json_range(s, 3, "after the decimal point");
  free(s);
  s = framed("1.", '1', 16384, "e1");
  json_ok(s);
  free(s);
  /* numeric_in refuses an exponent of INT_MAX / 2 or more even on 0. */
  json_ok("0e1073741822");
  json_range("0e1073741823", 0, "exponent");
  json_range("0e99999999999999999999", 0, "exponent");
  json_range("0e-99999999999999999999", 0, NULL);
  json_ok("-0");
  json_ok("-0.0");
}

/* What JSON_TOKENER_STRICT is relied on to refuse, plus what it lets
 * through and the lexer catches (raw control characters in strings). */
static void json_strict(void **state) {
  (void)state;
  json_bad("'x'", 0, "unexpected character \"'\"");
  json_bad("{'a':1}", 1, NULL);
  json_bad("[1,2,]", 5, NULL);
  json_bad("{\"a\":1,}", 7, NULL);
  json_bad("[,1]", 1, NULL);
  json_bad("/*c*/1", 0, NULL);
  json_bad("[1]//c", 3, NULL);
  json_bad("{a:1}", 1, NULL);
  json_bad("{\"a\" 1}", 5, "':' expected");
  json_bad("[1 2]", 3, "',' expected");
  json_bad("TRUE", 0, "\"TRUE\"");
  json_bad("nulll", 0, "\"nulll\"");
  json_bad("\"a\tb\"", 2, "control character 0x09");
  json_bad("\"a\nb\"", 2, "control character 0x0a");
  json_bad("\"\x01\"", 1, "control character 0x01");
  json_bad("\"\\x\"", 1, "\"\\x\" is not a JSON escape");
  json_bad("\"\\'\"", 1, "not a JSON escape");
  json_bad("\f1", 0, "\\x0c"); /* JSON whitespace is only space, tab, CR, LF */
  json_bad("1\v", 1, "\\x0b");
  json_bad("\xc3\xa9", 0, "unexpected character \"\xc3\xa9\"");
}

static void json_surrogates(void **state) {
  (void)state;
  json_bad("\"\\ud800\"", 1, "unpaired surrogate \\ud800");
  json_bad("\"x\\ud800\\u0041\"", 2, "unpaired surrogate");
  json_bad("\"\\ud800\\ud800\"", 1, "unpaired surrogate");
  json_bad("\"\\udc00\"", 1, "unpaired surrogate \\udc00");
  json_bad("\"\\ude00\\ud83d\"", 1, "unpaired surrogate"); /* reversed */
  json_bad("\"\\ud83d\"", 1, NULL); /* high at the very end */
}

static void json_oversized(void **state) {
  (void)state;
  char err[ERRLEN];
  size_t n = CL_PAYLOAD_MAX + 1;
  char *s = malloc(n);
  assert_non_null(s);
  memset(s, ' ', n);
  s[0] = '1';
  assert_int_equal(cl_check_json(s, n, err, sizeof err), CL_EJSON);
  assert_string_equal(err, "JSON text is 1048577 bytes; the limit is 1048576");
  /* Exactly the limit is fine: one long string. */
  n = CL_PAYLOAD_MAX;
  memset(s, 'x', n);
  s[0] = '"';
  s[n - 1] = '"';
  assert_int_equal(cl_check_json(s, n, err, sizeof err), 0);
  free(s);
}

/* Builds depth nested arrays around a 1. */
static char *nested(size_t depth, char open, char close) {
  char *s = malloc(2 * depth + 2);
  assert_non_null(s);
  memset(s, open, depth);
  s[depth] = '1';
  memset(s + depth + 1, close, depth);
  s[2 * depth + 1] = '\0';
  return s;
}

static void json_deep(void **state) {
  (void)state;
  char *s = nested(64, '[', ']');
  json_ok(s);
  free(s);
  s = nested(65, '[', ']');
  json_bad(s, 64, "nested too deeply");
  free(s);
  s = nested(100000, '[', ']');
  json_bad(s, 64, "nested too deeply");
  free(s);
  /* Objects count the same way, and so do arrays and objects mixed. */
  char obj[65 * 5 + 65 + 2] = "";
  for (int i = 0; i < 64; i++)
    strcat(obj, "{\"a\":");
  strcat(obj, "1");
  for (int i = 0; i < 64; i++)
    strcat(obj, "}");
  json_ok(obj);
  obj[0] = '\0';
  for (int i = 0; i < 65; i++)
    strcat(obj, "{\"a\":");
  strcat(obj, "1");
  for (int i = 0; i < 65; i++)
    strcat(obj, "}");
  json_bad(obj, 64 * 5, "nested too deeply");
  char mixed[64 * 6 + 8] = "";
  for (int i = 0; i < 32; i++)
    strcat(mixed, "[{\"a\":");
  strcat(mixed, "[1]");
  for (int i = 0; i < 32; i++)
    strcat(mixed, "}]");
  json_bad(mixed, 32 * 6, "nested too deeply");
}

static void json_invalid_utf8(void **state) {
  (void)state;
  char err[ERRLEN];
  const char *s = "[\"a\xff\"]";
  assert_int_equal(cl_check_json(s, strlen(s), err, sizeof err), CL_EJSON);
  assert_string_equal(err, "not valid UTF-8 at byte 3");
  s = "{\"k\":\"\xc0\xaf\"}";
  assert_int_equal(cl_check_json(s, strlen(s), err, sizeof err), CL_EJSON);
  assert_string_equal(err, "not valid UTF-8 at byte 6");
  s = "\"\xed\xa0\x80\"";
  assert_int_equal(cl_check_json(s, strlen(s), err, sizeof err), CL_EJSON);
  assert_string_equal(err, "not valid UTF-8 at byte 1");
  s = "\"\xf4\x90\x80\x80\"";
  assert_int_equal(cl_check_json(s, strlen(s), err, sizeof err), CL_EJSON);
  assert_string_equal(err, "not valid UTF-8 at byte 1");
}

static void json_nul_byte(void **state) {
  (void)state;
  char err[ERRLEN];
  static const char s[] = "{\"a\":\0}";
  assert_int_equal(cl_check_json(s, sizeof s - 1, err, sizeof err), CL_EJSON);
  assert_string_equal(err, "JSON text contains a NUL byte at byte 5");
  static const char t[] = "\"a\0b\"";
  assert_int_equal(cl_check_json(t, sizeof t - 1, err, sizeof err), CL_EJSON);
  assert_string_equal(err, "JSON text contains a NUL byte at byte 2");
}

/* Only s[0..len) is read; what follows does not matter. */
static void json_length_bounds_input(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_json("42xyz", 2, err, sizeof err), 0);
  assert_int_equal(cl_check_json("[1] trailing", 3, err, sizeof err), 0);
  assert_int_equal(cl_check_json("{\"a\":1}", 6, err, sizeof err), CL_EJSON);
  assert_string_equal(err, "not valid JSON at byte 6: unexpected end of data");
  /* A number ending exactly at len, in a buffer with no NUL after it. */
  char buf[3] = {'1', '2', '3'};
  assert_int_equal(cl_check_json(buf, sizeof buf, err, sizeof err), 0);
}

/* ------------------------------------------------------------------------ */
/* Connection strings                                                        */

static void dsn_valid(void **state) {
  (void)state;
  static const char *const ok[] = {
      "postgresql://bob:pw@localhost:5432/claimer",
      "postgres://db.example.com/claimer",
      "postgresql:///claimer?host=/var/run/postgresql",
      "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
      "host=localhost dbname=claimer user=bob",
      "host=/tmp port=5432",
      "host=a,b,c port=5432,,5433 password='with space'",
      "dbname = claimer  connect_timeout=5",
  };
  char err[ERRLEN];
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    int rc = cl_check_dsn(ok[i], err, sizeof err);
    if (rc != 0)
      fail_msg("%s rejected: %s", ok[i], err);
  }
}

static void dsn_empty_or_missing(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_dsn("", err, sizeof err), CL_EDSN);
  assert_string_equal(err, "empty connection string");
  assert_int_equal(cl_check_dsn(" \t\n", err, sizeof err), CL_EDSN);
  assert_string_equal(err, "empty connection string");
  assert_int_equal(cl_check_dsn(NULL, err, sizeof err), CL_EINVAL);
}

/* Checks that dsn is refused, with a message that names the problem
 * (needle) and holds none of the secrets. */
static void dsn_refused(const char *dsn, const char *needle,
                        const char *const *secrets) {
  char err[ERRLEN];
  int rc = cl_check_dsn(dsn, err, sizeof err);
  if (rc != CL_EDSN)
    fail_msg("%s: rc %d, expected CL_EDSN", dsn, rc);
  assert_contains(err, "malformed connection string");
  if (needle != NULL)
    assert_contains(err, needle);
  for (; secrets != NULL && *secrets != NULL; secrets++)
    assert_not_contains(err, *secrets);
  assert_printable(err);
}

static void dsn_malformed_uri_hides_password(void **state) {
  (void)state;
  static const char *const pw[] = {"s3cretpw", NULL};
  /* libpq itself only notices a bad port when connecting; we check early. */
  dsn_refused("postgresql://u:s3cretpw@host:notaport/db", "\"notaport\"", pw);
  /* libpq echoes the whole URI in these messages. */
  dsn_refused("postgresql://u:s3cretpw@[::1/db", "postgresql://u:***@[::1/db",
              pw);
  dsn_refused("postgresql://u:s3cretpw@[::1]x/db", "unexpected character", pw);
  dsn_refused("PostgreSQL://u:s3cretpw@h/db", "missing \"=\"", pw);
  /* ...and this one echoes the password itself. */
  dsn_refused("postgresql://u:s3cret%zz@host/db", "percent-encoded",
              (const char *const[]){"s3cret", NULL});
  /* A percent-encoded password is hidden in both spellings: as written
   * (which libpq echoes) and decoded (here echoed by the port check). */
  dsn_refused("postgresql://u:s3cret%41pw@[::1/db", "***",
              (const char *const[]){"s3cret", "%41pw", "s3cretApw", NULL});
  dsn_refused("postgresql://u:s3cret%41pw@h:s3cretApw/db", "port \"***\"",
              (const char *const[]){"s3cret", "%41pw", "s3cretApw", NULL});
}

static void dsn_malformed_kv_hides_password(void **state) {
  (void)state;
  static const char *const pw[] = {"s3cretpw", NULL};
  dsn_refused("host=x password=s3cretpw foo", "missing \"=\" after \"foo\"",
              pw);
  dsn_refused("host=x password='s3cret pw' bogus=1",
              "invalid connection option \"bogus\"",
              (const char *const[]){"s3cret", NULL});
  dsn_refused("password=s3cretpw port=99999", "\"99999\"", pw);
  dsn_refused("sslpassword=s3cretpw host=x bogus", NULL, pw);
  dsn_refused("postgresql://h/db?password=s3cretpw&bogus=1", "\"bogus\"", pw);
  /* A password in a value libpq echoes back is cut out of it. */
  dsn_refused("port=s3cretpw password=s3cretpw", "port \"***\"", pw);
}

/* A password too short to cut out cleanly: the detail is withheld rather
 * than risked. */
static void dsn_short_password_withheld(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(cl_check_dsn("postgresql://u:pw@[::1/db", err, sizeof err),
                   CL_EDSN);
  assert_contains(err, "withheld");
  assert_not_contains(err, ":pw@");
  assert_not_contains(err, "[::1/db");
}

static void dsn_ports(void **state) {
  (void)state;
  dsn_refused("host=x port=0", "port \"0\"", NULL);
  dsn_refused("host=x port=65536", "port \"65536\"", NULL);
  dsn_refused("host=x port=5432,abc", "port \"abc\"", NULL);
  dsn_refused("host=x port=-1", "port \"-1\"", NULL);
  char err[ERRLEN];
  assert_int_equal(cl_check_dsn("host=x port=65535", err, sizeof err), 0);
  assert_int_equal(cl_check_dsn("host=x port=1", err, sizeof err), 0);
}

static void redact_uri(void **state) {
  (void)state;
  char *r = cl_dsn_redact(
      "postgresql://bob:s3cretpw@db.example.com:5433/claimer?sslmode=require");
  assert_non_null(r);
  assert_not_contains(r, "s3cretpw");
  assert_contains(r, "password=***");
  assert_contains(r, "user=bob");
  assert_contains(r, "host=db.example.com");
  assert_contains(r, "port=5433");
  assert_contains(r, "dbname=claimer");
  assert_contains(r, "sslmode=require");
  free(r);
  r = cl_dsn_redact("postgresql://u:p%40ssw0rd@h/db");
  assert_non_null(r);
  assert_not_contains(r, "p%40ssw0rd");
  assert_not_contains(r, "p@ssw0rd");
  assert_contains(r, "password=***");
  free(r);
}

static void redact_kv(void **state) {
  (void)state;
  char *r = cl_dsn_redact("host=db1 dbname=claimer user=alice "
                          "password='se cr\\'et' sslpassword=keypass");
  assert_non_null(r);
  assert_not_contains(r, "se cr");
  assert_not_contains(r, "keypass");
  assert_contains(r, "password=***");
  assert_contains(r, "sslpassword=***");
  assert_contains(r, "host=db1");
  assert_contains(r, "dbname=claimer");
  assert_contains(r, "user=alice");
  free(r);
}

static void redact_without_password(void **state) {
  (void)state;
  char *r = cl_dsn_redact("host=x dbname=d");
  assert_non_null(r);
  assert_contains(r, "host=x");
  assert_contains(r, "dbname=d");
  assert_not_contains(r, "password");
  free(r);
  r = cl_dsn_redact("");
  assert_non_null(r);
  assert_string_equal(r, "");
  free(r);
  /* An empty password is no secret and is left out. */
  r = cl_dsn_redact("host=x password=''");
  assert_non_null(r);
  assert_string_equal(r, "host=x");
  free(r);
}

/* The redacted form is itself a valid connection string that means the
 * same thing, quoting included (only the password differs). */
static void redact_round_trip(void **state) {
  (void)state;
  char *r = cl_dsn_redact("host='/tmp/my dir' application_name='it\\'s a\\\\b' "
                          "password=pw options='-c x=y' "
                          "fallback_application_name='c:\\\\dir\\'s'");
  assert_non_null(r);
  char *msg = NULL;
  PQconninfoOption *opts = PQconninfoParse(r, &msg);
  if (opts == NULL)
    fail_msg("redacted \"%s\" does not parse: %s", r, msg ? msg : "?");
  int seen = 0;
  for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
    if (o->val == NULL)
      continue;
    if (strcmp(o->keyword, "host") == 0) {
      assert_string_equal(o->val, "/tmp/my dir");
      seen++;
    } else if (strcmp(o->keyword, "application_name") == 0) {
      assert_string_equal(o->val, "it's a\\b");
      seen++;
    } else if (strcmp(o->keyword, "fallback_application_name") == 0) {
      assert_string_equal(o->val, "c:\\dir's"); /* quoted without a space */
      seen++;
    } else if (strcmp(o->keyword, "options") == 0) {
      assert_string_equal(o->val, "-c x=y");
      seen++;
    } else if (strcmp(o->keyword, "password") == 0) {
      assert_string_equal(o->val, "***");
      seen++;
    }
  }
  assert_int_equal(seen, 5);
  PQconninfoFree(opts);
  free(r);
}

static void redact_malformed(void **state) {
  (void)state;
  char *r = cl_dsn_redact("host=x password=s3cretpw foo");
  assert_non_null(r);
  assert_string_equal(r, "(malformed connection string)");
  free(r);
  r = cl_dsn_redact("postgresql://u:s3cretpw@[::1/db");
  assert_non_null(r);
  assert_string_equal(r, "(malformed connection string)");
  free(r);
  r = cl_dsn_redact(NULL);
  assert_non_null(r);
  assert_string_equal(r, "(malformed connection string)");
  free(r);
}

/* A connection string hidden inside a value (libpq can expand a dbname
 * that is itself a URI) loses its password too. */
static void redact_nested(void **state) {
  (void)state;
  char *r = cl_dsn_redact("dbname=postgresql://u:s3cretpw@h/db host=x");
  assert_non_null(r);
  assert_not_contains(r, "s3cretpw");
  assert_contains(r, "host=x");
  free(r);
  r = cl_dsn_redact("dbname='host=h password=s3cretpw' host=x");
  assert_non_null(r);
  assert_not_contains(r, "s3cretpw");
  free(r);
}

/* ------------------------------------------------------------------------ */
/* UUIDs                                                                     */

static void uuid_format(void **state) {
  (void)state;
  for (int n = 0; n < 100; n++) {
    char u[37];
    memset(u, 'Z', sizeof u);
    assert_int_equal(cl_uuid4(u), 0);
    assert_int_equal(strlen(u), 36);
    for (int i = 0; i < 36; i++) {
      if (i == 8 || i == 13 || i == 18 || i == 23)
        assert_int_equal(u[i], '-');
      else if (strchr("0123456789abcdef", u[i]) == NULL || u[i] == '\0')
        fail_msg("%s: not lowercase hex at %d", u, i);
    }
    assert_int_equal(u[14], '4'); /* version 4 */
    if (strchr("89ab", u[19]) == NULL)
      fail_msg("%s: variant nibble %c is not 8, 9, a or b", u, u[19]);
  }
}

static int cmp_uuid(const void *a, const void *b) {
  return strcmp((const char *)a, (const char *)b);
}

static void uuid_unique(void **state) {
  (void)state;
  enum { N = 1000 };
  char(*u)[37] = calloc(N, sizeof *u);
  assert_non_null(u);
  for (int i = 0; i < N; i++)
    assert_int_equal(cl_uuid4(u[i]), 0);
  /* Every random digit varies across the set (the chance that one does not
   * is 16^-999); the version digit never does. */
  for (int pos = 0; pos < 36; pos++) {
    int varies = 0;
    for (int i = 1; i < N && !varies; i++)
      varies = u[i][pos] != u[0][pos];
    if (pos == 8 || pos == 13 || pos == 14 || pos == 18 || pos == 23)
      assert_false(varies);
    else if (!varies)
      fail_msg("digit %d is %c in all %d UUIDs", pos, u[0][pos], N);
  }
  qsort(u, N, sizeof *u, cmp_uuid);
  for (int i = 1; i < N; i++)
    assert_string_not_equal(u[i - 1], u[i]);
  free(u);
}

/* Jitter comes from the library's own source: in [0, 1), spread, and the
 * host program's rand() sequence is left as it was. */
static void random_unit(void **state) {
  (void)state;
  srand(42);
  int expect = rand();
  srand(42);
  double sum = 0, lo = 1, hi = 0;
  for (int i = 0; i < 10000; i++) {
    double r = cl__random_unit();
    assert_true(r >= 0 && r < 1);
    sum += r;
    lo = r < lo ? r : lo;
    hi = r > hi ? r : hi;
  }
  assert_int_equal(rand(), expect);
  assert_true(sum / 10000 > 0.45 && sum / 10000 < 0.55);
  assert_true(lo < 0.01 && hi > 0.99);
}

static void time_valid(void **state) {
  (void)state;
  const char *ok[] = {
      "2026-12-02T09:30:00Z",      "2026-12-02t09:30:00z",
      "2026-12-02 10:30:00+01:00", "2026-12-02T09:30:00.123456Z",
      "2024-02-29T00:00:00-05:30", "1999-12-31T23:59:60Z"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
    assert_int_equal(cl_check_time(ok[i], NULL, 0), 0);
}

static void time_invalid(void **state) {
  (void)state;
  char err[256];
  assert_int_equal(cl_check_time("yesterday", err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "time \"yesterday\" is not RFC 3339 (such as "
                           "2026-12-02T09:30:00Z or 2026-12-02 "
                           "10:30:00+01:00)");
  const char *bad[] = {"2026-12-02",
                       "2026-12-02T09:30:00",
                       "2026-12-02T09:30Z",
                       "2026-12-02T09:30:00.Z",
                       "2026-12-02T09:30:00+0100",
                       "2026-12-02T09:30:00Z x",
                       "2026-12-02T09:30:00Z'; DROP TABLE x; --"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_int_equal(cl_check_time(bad[i], NULL, 0), CL_EINVAL);
  const char *range[] = {"2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
                         "2026-04-31T00:00:00Z", "2026-12-02T24:00:00Z",
                         "2026-12-02T09:60:00Z", "2026-12-02T09:30:00+24:00"};
  for (size_t i = 0; i < sizeof range / sizeof *range; i++) {
    assert_int_equal(cl_check_time(range[i], err, sizeof err), CL_EINVAL);
    assert_non_null(strstr(err, "has a field out of range"));
  }
  assert_int_equal(cl_check_time(NULL, err, sizeof err), CL_EINVAL);
  assert_int_equal(cl_check_time("", err, sizeof err), CL_EINVAL);
  /* Control characters are not echoed raw. */
  assert_int_equal(cl_check_time("\x1b[2J", err, sizeof err), CL_EINVAL);
  assert_null(strchr(err, '\x1b'));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(utf8_valid),
      cmocka_unit_test(utf8_overlong),
      cmocka_unit_test(utf8_surrogates),
      cmocka_unit_test(utf8_above_max),
      cmocka_unit_test(utf8_truncated),
      cmocka_unit_test(utf8_stray_continuation),
      cmocka_unit_test(item_id_valid),
      cmocka_unit_test(item_id_empty_or_missing),
      cmocka_unit_test(item_id_length),
      cmocka_unit_test(item_id_control),
      cmocka_unit_test(item_id_utf8),
      cmocka_unit_test(worker_names),
      cmocka_unit_test(queue_valid),
      cmocka_unit_test(queue_empty_long_missing),
      cmocka_unit_test(queue_injection),
      cmocka_unit_test(queue_bad_characters),
      cmocka_unit_test(queue_colon),
      cmocka_unit_test(queue_echo_is_safe),
      cmocka_unit_test(message_bounds),
      cmocka_unit_test(json_valid_containers),
      cmocka_unit_test(json_valid_scalars),
      cmocka_unit_test(json_valid_escapes),
      cmocka_unit_test(json_empty),
      cmocka_unit_test(json_truncated),
      cmocka_unit_test(json_trailing),
      cmocka_unit_test(json_nul_escape),
      cmocka_unit_test(json_nan_infinity),
      cmocka_unit_test(json_numbers),
      cmocka_unit_test(json_numeric_range),
      cmocka_unit_test(json_strict),
      cmocka_unit_test(json_surrogates),
      cmocka_unit_test(json_oversized),
      cmocka_unit_test(json_deep),
      cmocka_unit_test(json_invalid_utf8),
      cmocka_unit_test(json_nul_byte),
      cmocka_unit_test(json_length_bounds_input),
      cmocka_unit_test(time_valid),
      cmocka_unit_test(time_invalid),
      cmocka_unit_test(dsn_valid),
      cmocka_unit_test(dsn_empty_or_missing),
      cmocka_unit_test(dsn_malformed_uri_hides_password),
      cmocka_unit_test(dsn_malformed_kv_hides_password),
      cmocka_unit_test(dsn_short_password_withheld),
      cmocka_unit_test(dsn_ports),
      cmocka_unit_test(redact_uri),
      cmocka_unit_test(redact_kv),
      cmocka_unit_test(redact_without_password),
      cmocka_unit_test(redact_round_trip),
      cmocka_unit_test(redact_malformed),
      cmocka_unit_test(redact_nested),
      cmocka_unit_test(uuid_format),
      cmocka_unit_test(uuid_unique),
      cmocka_unit_test(random_unit),
  };
  return cmocka_run_group_tests_name("check", tests, NULL, NULL);
}
