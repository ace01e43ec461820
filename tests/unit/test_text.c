/*
 * test_text.c: unit tests of text.c, the one UTF-8 decoder, control rule,
 * free-text check and escaper that the input checks and the programs'
 * configuration share.  Every class of byte sequence is pinned (ASCII,
 * valid 2-, 3- and 4-byte forms, overlong forms, surrogates, code points
 * above U+10FFFF, sequences cut short, stray continuation bytes, the lead
 * bytes UTF-8 never uses), and then the decoder is checked against a
 * reference encoder over every code point and every 1- to 3-byte string,
 * so that exactly the canonical encodings are accepted.  The escaper is
 * pinned in both of its modes: bytes for messages, code points for YAML.
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
#include "text.h"

#define ERRLEN 256

/* Returns the length of the decode of s[0..n) and its code point in *cp
 * (left at 0xFFFFFFFF when the decode fails, to show it was not set). */
static size_t decode(const char *s, size_t n, uint32_t *cp) {
  *cp = 0xFFFFFFFF;
  return cl__utf8_decode(s, n, cp);
}

/* Fails unless the whole of s (a literal) decodes as one character cp. */
#define assert_char(s, cp_)                                                    \
  do {                                                                         \
    uint32_t cp__;                                                             \
    assert_int_equal(decode((s), sizeof(s) - 1, &cp__), sizeof(s) - 1);        \
    assert_int_equal(cp__, (cp_));                                             \
    assert_int_equal(cl_utf8_invalid_at((s), sizeof(s) - 1), -1);              \
  } while (0)

/* Fails unless s (a literal) starts no valid sequence, and the decode
 * leaves the code point alone. */
#define assert_bad(s)                                                          \
  do {                                                                         \
    uint32_t cp__;                                                             \
    assert_int_equal(decode((s), sizeof(s) - 1, &cp__), 0);                    \
    assert_int_equal(cp__, 0xFFFFFFFF);                                        \
    assert_int_equal(cl_utf8_invalid_at((s), sizeof(s) - 1), 0);               \
  } while (0)

/* The reference: the shortest encoding of cp (which must be a scalar
 * value) in out, and its length. */
static size_t encode(uint32_t cp, unsigned char out[4]) {
  if (cp < 0x80) {
    out[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (unsigned char)(0xC0 | (cp >> 6));
    out[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (unsigned char)(0xE0 | (cp >> 12));
    out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (unsigned char)(0xF0 | (cp >> 18));
  out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

static bool is_scalar(uint32_t cp) {
  return cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

/* ------------------------------------------------------------------------ */
/* Decoding, class by class                                                  */

static void decode_ascii(void **state) {
  (void)state;
  uint32_t cp;
  assert_int_equal(decode("\0", 1, &cp), 1); /* NUL is a character here */
  assert_int_equal(cp, 0);
  assert_char("A", 'A');
  assert_char("\x7f", 0x7F);
  /* Only the first character is decoded. */
  assert_int_equal(decode("ab", 2, &cp), 1);
  assert_int_equal(cp, 'a');
  /* Nothing to decode. */
  assert_int_equal(decode("", 0, &cp), 0);
  assert_int_equal(cl__utf8_decode("x", 0, NULL), 0);
  assert_int_equal(cl_utf8_invalid_at(NULL, 0), -1);
}

static void decode_two_bytes(void **state) {
  (void)state;
  assert_char("\xc2\x80", 0x80); /* the first: a C1 control */
  assert_char("\xc3\xa9", 0xE9); /* é */
  assert_char("\xdf\xbf", 0x7FF);
  /* cp may be NULL. */
  assert_int_equal(cl__utf8_decode("\xc3\xa9", 2, NULL), 2);
}

static void decode_three_bytes(void **state) {
  (void)state;
  assert_char("\xe0\xa0\x80", 0x800);
  assert_char("\xe1\x80\x80", 0x1000);
  assert_char("\xe2\x82\xac", 0x20AC); /* € */
  assert_char("\xec\xbf\xbf", 0xCFFF);
  assert_char("\xed\x80\x80", 0xD000);
  assert_char("\xed\x9f\xbf", 0xD7FF); /* the last before the surrogates */
  assert_char("\xee\x80\x80", 0xE000); /* the first after them */
  assert_char("\xef\xbf\xbd", 0xFFFD);
  assert_char("\xef\xbf\xbf", 0xFFFF); /* a non-character, but well-formed */
}

static void decode_four_bytes(void **state) {
  (void)state;
  assert_char("\xf0\x90\x80\x80", 0x10000);
  assert_char("\xf0\x9f\x98\x80", 0x1F600); /* 😀 */
  assert_char("\xf1\x80\x80\x80", 0x40000);
  assert_char("\xf3\xbf\xbf\xbf", 0xFFFFF);
  assert_char("\xf4\x80\x80\x80", 0x100000);
  assert_char("\xf4\x8f\xbf\xbf", 0x10FFFF); /* the last code point */
}

static void decode_overlong(void **state) {
  (void)state;
  /* Two bytes for what fits in one: C0 and C1 can only lead those. */
  assert_bad("\xc0\x80"); /* NUL, as "modified UTF-8" writes it */
  assert_bad("\xc0\xaf"); /* '/', the classic path-traversal form */
  assert_bad("\xc1\xbf"); /* U+007F */
  /* Three bytes for what fits in two or one. */
  assert_bad("\xe0\x80\x80");
  assert_bad("\xe0\x80\xaf");
  assert_bad("\xe0\x9f\xbf"); /* U+07FF */
  /* Four bytes for what fits in three. */
  assert_bad("\xf0\x80\x80\x80");
  assert_bad("\xf0\x80\x80\xaf");
  assert_bad("\xf0\x8f\xbf\xbf"); /* U+FFFF */
}

static void decode_surrogates(void **state) {
  (void)state;
  assert_bad("\xed\xa0\x80"); /* U+D800, the first high surrogate */
  assert_bad("\xed\xaf\xbf"); /* U+DBFF */
  assert_bad("\xed\xb0\x80"); /* U+DC00, the first low surrogate */
  assert_bad("\xed\xbf\xbf"); /* U+DFFF */
  /* CESU-8: a pair written as two 3-byte sequences. */
  assert_bad("\xed\xa0\xbd\xed\xb8\x80");
  /* And every one of them, spelt as the 3-byte form would. */
  for (uint32_t cp = 0xD800; cp <= 0xDFFF; cp++) {
    char s[3] = {(char)(0xE0 | (cp >> 12)), (char)(0x80 | ((cp >> 6) & 0x3F)),
                 (char)(0x80 | (cp & 0x3F))};
    assert_int_equal(cl__utf8_decode(s, 3, NULL), 0);
  }
}

static void decode_above_max(void **state) {
  (void)state;
  assert_bad("\xf4\x90\x80\x80");     /* U+110000 */
  assert_bad("\xf4\xbf\xbf\xbf");     /* U+13FFFF */
  assert_bad("\xf5\x80\x80\x80");     /* U+140000 */
  assert_bad("\xf7\xbf\xbf\xbf");     /* U+1FFFFF, the most 4 bytes can hold */
  assert_bad("\xf8\x88\x80\x80\x80"); /* the old 5-byte form */
  assert_bad("\xfc\x84\x80\x80\x80\x80"); /* and the 6-byte one */
}

static void decode_truncated(void **state) {
  (void)state;
  /* Cut by the end of the input, at every length short of the whole. */
  static const char *const whole[] = {"\xc3\xa9", "\xe2\x82\xac",
                                      "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
  for (size_t w = 0; w < sizeof whole / sizeof whole[0]; w++) {
    size_t n = strlen(whole[w]);
    for (size_t cut = 1; cut < n; cut++) {
      assert_int_equal(cl__utf8_decode(whole[w], cut, NULL), 0);
      assert_int_equal(cl_utf8_invalid_at(whole[w], cut), 0);
    }
    assert_int_equal(cl__utf8_decode(whole[w], n, NULL), n);
  }
  /* Cut by a byte that is not a continuation: reported at the lead. */
  assert_bad("\xe2\x82x");
  assert_bad("\xc3\xc3\xa9");
  assert_bad("\xf0\x9f\x98 ");
  assert_bad("\xc3");
  assert_int_equal(cl_utf8_invalid_at("ab\xe2\x82", 4), 2);
}

static void decode_stray_continuation(void **state) {
  (void)state;
  for (unsigned c = 0x80; c <= 0xBF; c++) {
    char s[2] = {(char)c, 'a'};
    assert_int_equal(cl__utf8_decode(s, 2, NULL), 0);
  }
  /* One continuation too many after a whole character. */
  assert_int_equal(cl_utf8_invalid_at("\xc3\xa9\xa9", 3), 2);
  assert_int_equal(cl_utf8_invalid_at("\xe2\x82\xac\x80x", 5), 3);
}

static void decode_unused_leads(void **state) {
  (void)state;
  /* C0, C1 and F5..FF lead nothing, whatever follows. */
  static const unsigned char leads[] = {0xC0, 0xC1, 0xF5, 0xF6, 0xF7,
                                        0xF8, 0xF9, 0xFA, 0xFB, 0xFC,
                                        0xFD, 0xFE, 0xFF};
  for (size_t i = 0; i < sizeof leads; i++) {
    for (unsigned c = 0x80; c <= 0xBF; c++) {
      char s[4] = {(char)leads[i], (char)c, (char)0x80, (char)0x80};
      assert_int_equal(cl__utf8_decode(s, 4, NULL), 0);
      assert_int_equal(cl__utf8_decode(s, 1, NULL), 0);
    }
  }
  assert_bad("\xfe");
  assert_bad("\xff");
}

/* ------------------------------------------------------------------------ */
/* Decoding, exhaustively                                                    */

/* Every scalar value decodes from its encoding to itself. */
static void decode_every_code_point(void **state) {
  (void)state;
  for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
    if (!is_scalar(cp))
      continue;
    unsigned char b[4];
    size_t n = encode(cp, b);
    uint32_t got = 0;
    if (cl__utf8_decode((const char *)b, n, &got) != n || got != cp)
      fail_msg("U+%04X does not decode from its encoding", (unsigned)cp);
  }
}

/* Whatever decodes is the shortest encoding of a scalar value: every
 * string of 1 to 3 bytes, and every 4-byte one with a 4-byte lead and
 * continuation bytes (the only ones that can be whole 4-byte forms).  The
 * counts are those of the code points of each length. */
static void decode_only_canonical(void **state) {
  (void)state;
  size_t whole[5] = {0};
  for (uint32_t v = 0; v < (1u << 24); v++) {
    unsigned char s[3] = {(unsigned char)(v >> 16), (unsigned char)(v >> 8),
                          (unsigned char)v};
    for (size_t len = 1; len <= 3; len++) {
      /* Each shorter string is seen once, as the top bytes of v. */
      if (len < 3 && (v & ((1u << (8 * (3 - len))) - 1)) != 0)
        continue;
      uint32_t cp = 0;
      size_t n = cl__utf8_decode((const char *)s, len, &cp);
      if (n == 0)
        continue;
      unsigned char ref[4];
      if (!is_scalar(cp) || encode(cp, ref) != n || memcmp(ref, s, n) != 0)
        fail_msg("%02x %02x %02x decodes to U+%04X, not its encoding", s[0],
                 s[1], s[2], (unsigned)cp);
      if (n == len)
        whole[n]++;
    }
  }
  for (unsigned lead = 0xF0; lead <= 0xFF; lead++) {
    for (uint32_t v = 0; v < (1u << 18); v++) {
      unsigned char s[4] = {(unsigned char)lead,
                            (unsigned char)(0x80 | ((v >> 12) & 0x3F)),
                            (unsigned char)(0x80 | ((v >> 6) & 0x3F)),
                            (unsigned char)(0x80 | (v & 0x3F))};
      uint32_t cp = 0;
      size_t n = cl__utf8_decode((const char *)s, 4, &cp);
      if (n == 0)
        continue;
      unsigned char ref[4];
      if (n != 4 || !is_scalar(cp) || encode(cp, ref) != 4 ||
          memcmp(ref, s, 4) != 0)
        fail_msg("%02x %02x %02x %02x decodes to U+%04X", s[0], s[1], s[2],
                 s[3], (unsigned)cp);
      whole[4]++;
    }
  }
  assert_int_equal(whole[1], 0x80);
  assert_int_equal(whole[2], 0x800 - 0x80);
  assert_int_equal(whole[3], 0x10000 - 0x800 - 0x800); /* less surrogates */
  assert_int_equal(whole[4], 0x110000 - 0x10000);
}

/* cl_utf8_invalid_at() walks from character to character. */
static void invalid_at_offsets(void **state) {
  (void)state;
  const char s[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
  assert_int_equal(cl_utf8_invalid_at(s, sizeof s - 1), -1);
  assert_int_equal(cl_utf8_invalid_at("a\xc3\xa9\xc0\xaf", 5), 3);
  assert_int_equal(cl_utf8_invalid_at("ok\xed\xa0\x80", 5), 2);
  assert_int_equal(cl_utf8_invalid_at("abc\xf5\x80\x80\x80", 7), 3);
  /* A NUL byte is a character; the length is the caller's. */
  assert_int_equal(cl_utf8_invalid_at("a\0b", 3), -1);
  assert_int_equal(cl_utf8_invalid_at("a\xff", 1), -1);
}

/* ------------------------------------------------------------------------ */
/* Control characters and free text                                          */

static void control_characters(void **state) {
  (void)state;
  for (uint32_t cp = 0; cp <= 0x1F; cp++)
    assert_true(cl__is_control(cp));
  for (uint32_t cp = 0x7F; cp <= 0x9F; cp++)
    assert_true(cl__is_control(cp));
  assert_false(cl__is_control(' '));
  assert_false(cl__is_control('~'));
  assert_false(cl__is_control(0xA0)); /* no-break space: printable */
  assert_false(cl__is_control(0x2028));
  assert_false(cl__is_control(0xFEFF));
  assert_false(cl__is_control(0x10FFFF));
}

static void check_text_bounds(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(
      cl__check_text("name", "ok \xc3\xa9", 10, 0, err, sizeof err), 0);
  assert_int_equal(cl__check_text("name", NULL, 10, 0, err, sizeof err),
                   CL_EINVAL);
  assert_string_equal(err, "name is missing");
  assert_int_equal(cl__check_text("name", "", 10, 0, err, sizeof err),
                   CL_EINVAL);
  assert_string_equal(err, "name is empty");
  assert_int_equal(cl__check_text("name", "abcd", 3, 0, err, sizeof err),
                   CL_EINVAL);
  assert_string_equal(err, "name is 4 bytes; the limit is 3");
  assert_int_equal(cl__check_text("name", "abc", 3, 0, err, sizeof err), 0);
  /* Without a name the message starts with the verb, for a caller that
   * puts its own prefix in front. */
  assert_int_equal(cl__check_text(NULL, "", 3, 0, err, sizeof err), CL_EINVAL);
  assert_string_equal(err, "is empty");
  /* Just the verdict. */
  assert_int_equal(cl__check_text("name", "", 3, 0, NULL, 0), CL_EINVAL);
  /* A short buffer cuts the message, never overflows. */
  char tiny[4];
  assert_int_equal(cl__check_text("name", "", 3, 0, tiny, sizeof tiny),
                   CL_EINVAL);
  assert_string_equal(tiny, "nam");
}

static void check_text_faults(void **state) {
  (void)state;
  char err[ERRLEN];
  static const struct {
    const char *s;
    const char *why;
  } bad[] = {
      {"ab\x01", "contains a control character at byte 2"},
      {"\x1b[2J", "contains a control character at byte 0"},
      {"a\x7f", "contains a control character at byte 1"},
      {"ab\xc2\x9b", "contains a control character at byte 2"}, /* CSI */
      {"\xc2\x85", "contains a control character at byte 0"},   /* NEL */
      {"a\nb", "contains a control character at byte 1"},
      {"a\xff", "is not valid UTF-8 (byte 1)"},
      {"a\xc0\xaf", "is not valid UTF-8 (byte 1)"},
      {"\xed\xa0\x80", "is not valid UTF-8 (byte 0)"},
      {"ab\xe2\x82", "is not valid UTF-8 (byte 2)"},
      /* The first fault is the one reported, whichever kind it is. */
      {"a\x01\xff", "contains a control character at byte 1"},
      {"a\xff\x01", "is not valid UTF-8 (byte 1)"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(cl__check_text(NULL, bad[i].s, 64, 0, err, sizeof err),
                     CL_EINVAL);
    assert_string_equal(err, bad[i].why);
  }
  assert_int_equal(cl__check_text("id", "\xc2\x9b", 64, 0, err, sizeof err),
                   CL_EINVAL);
  assert_string_equal(err, "id contains a control character at byte 0");
  /* What is not a control character passes: no-break space, U+2028,
   * a non-character, the last code point. */
  assert_int_equal(cl__check_text(NULL,
                                  "\xc2\xa0\xe2\x80\xa8\xef\xbf\xbf"
                                  "\xf4\x8f\xbf\xbf",
                                  64, 0, err, sizeof err),
                   0);
}

static void check_text_lines(void **state) {
  (void)state;
  char err[ERRLEN];
  assert_int_equal(
      cl__check_text(NULL, "a\nb\n", 64, CL__TEXT_LINES, err, sizeof err), 0);
  assert_int_equal(
      cl__check_text(NULL, "a\r\nb", 64, CL__TEXT_LINES, err, sizeof err),
      CL_EINVAL);
  assert_string_equal(err, "contains a control character at byte 1");
  assert_int_equal(
      cl__check_text(NULL, "a\n\tb", 64, CL__TEXT_LINES, err, sizeof err),
      CL_EINVAL);
  assert_string_equal(err, "contains a control character at byte 2");
  /* NEL is a line break to some, but not a newline here. */
  assert_int_equal(
      cl__check_text(NULL, "a\xc2\x85", 64, CL__TEXT_LINES, err, sizeof err),
      CL_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Escaping                                                                  */

/* The escape of s[0..len) uncut under flags, in a static buffer. */
static const char *esc(const char *s, size_t len, unsigned flags) {
  static char out[CL__ESC_SIZE(64)];
  assert_true(len <= 64);
  size_t n = cl__escape(out, sizeof out, s, len, len, flags);
  assert_int_equal(n, strlen(out));
  return out;
}

#define ESC(lit, flags) esc((lit), sizeof(lit) - 1, (flags))

static void escape_messages(void **state) {
  (void)state;
  assert_string_equal(ESC("plain text ~", 0), "plain text ~");
  /* Valid characters stay as they are, whatever their length. */
  assert_string_equal(ESC("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0),
                      "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  /* Controls: C0, DEL, and C1 byte by byte (as the bytes that were given). */
  assert_string_equal(ESC("a\x1b[2Jb", 0), "a\\x1b[2Jb");
  assert_string_equal(ESC("\t\n\r\x7f", 0), "\\x09\\x0a\\x0d\\x7f");
  assert_string_equal(ESC("\0", 0), "\\x00");
  assert_string_equal(ESC("a\xc2\x9bz\xc2\x80\xc2\x9f", 0),
                      "a\\xc2\\x9bz\\xc2\\x80\\xc2\\x9f");
  assert_string_equal(ESC("\xc2\xa0", 0), "\xc2\xa0"); /* not C1 */
  /* Line separators are no danger to a terminal. */
  assert_string_equal(ESC("\xe2\x80\xa8", 0), "\xe2\x80\xa8");
  /* Every byte that starts no valid sequence, alone. */
  assert_string_equal(ESC("\xff\xfe\xf5", 0), "\\xff\\xfe\\xf5");
  assert_string_equal(ESC("\xc0\xaf", 0), "\\xc0\\xaf");
  assert_string_equal(ESC("\xe0\x80\xaf", 0), "\\xe0\\x80\\xaf");
  assert_string_equal(ESC("\xf0\x80\x80\xaf", 0), "\\xf0\\x80\\x80\\xaf");
  assert_string_equal(ESC("\xed\xa0\x80", 0), "\\xed\\xa0\\x80");
  assert_string_equal(ESC("\xf4\x90\x80\x80", 0), "\\xf4\\x90\\x80\\x80");
  assert_string_equal(ESC("\x80z", 0), "\\x80z");
  /* A cut sequence shows its bytes, and what follows resumes decoding. */
  assert_string_equal(ESC("\xe2\x82\xc3\xa9", 0), "\\xe2\\x82\xc3\xa9");
  assert_string_equal(ESC("ab\xf0\x9f\x98", 0), "ab\\xf0\\x9f\\x98");
}

static void escape_quotes(void **state) {
  (void)state;
  assert_string_equal(ESC("say \"hi\" \\o/", 0), "say \"hi\" \\o/");
  assert_string_equal(ESC("say \"hi\" \\o/", CL__ESC_QUOTES),
                      "say \\\"hi\\\" \\\\o/");
  assert_string_equal(ESC("'", CL__ESC_QUOTES), "'");
}

static void escape_code_points(void **state) {
  (void)state;
  const unsigned yaml = CL__ESC_QUOTES | CL__ESC_CODE_POINTS;
  /* C0 and DEL read the same either way. */
  assert_string_equal(ESC("a\tb\n\x1b\x7f", yaml), "a\\x09b\\x0a\\x1b\\x7f");
  /* A C1 control is one code point, not two bytes. */
  assert_string_equal(ESC("a\xc2\x9bz", yaml), "a\\x9bz");
  assert_string_equal(ESC("\xc2\x80\xc2\x85\xc2\x9f", yaml), "\\x80\\x85\\x9f");
  /* The non-characters YAML refuses raw. */
  assert_string_equal(ESC("\xef\xbf\xbe\xef\xbf\xbf", yaml), "\\ufffe\\uffff");
  /* The rest stays: no-break space, the line and paragraph separators
   * (YAML keeps them in a double-quoted scalar), U+FFFD, BOM, astral
   * characters. */
  assert_string_equal(
      ESC("\xc2\xa0\xe2\x80\xa8\xe2\x80\xa9\xef\xbf\xbd\xef\xbb\xbf"
          "\xf0\x9f\x98\x80",
          yaml),
      "\xc2\xa0\xe2\x80\xa8\xe2\x80\xa9\xef\xbf\xbd\xef\xbb\xbf"
      "\xf0\x9f\x98\x80");
  assert_string_equal(ESC("\"\\", yaml), "\\\"\\\\");
  /* A byte that is not UTF-8 has no code point: shown as the byte. */
  assert_string_equal(ESC("a\xff\xc0\xaf", yaml), "a\\xff\\xc0\\xaf");
}

static void escape_cuts(void **state) {
  (void)state;
  char out[64];
  /* max counts bytes of the input, and the cut falls between characters:
   * the euro sign (3 bytes) does not fit in 3 after "ab". */
  static const char euro[] = "ab\xe2\x82\xacxy";
  assert_int_equal(cl__escape(out, sizeof out, euro, 7, 3, 0), 5);
  assert_string_equal(out, "ab...");
  assert_int_equal(cl__escape(out, sizeof out, euro, 7, 5, 0), 8);
  assert_string_equal(out, "ab\xe2\x82\xac...");
  /* Nor is an escape split. */
  cl__escape(out, sizeof out, "a\xc2\x9b", 3, 2, 0);
  assert_string_equal(out, "a...");
  /* All of it, exactly max: no mark. */
  cl__escape(out, sizeof out, "abc", 3, 3, 0);
  assert_string_equal(out, "abc");
  /* A small out cuts too, and still leaves room for the mark. */
  cl__escape(out, 8, "abcdefgh", 8, 8, 0);
  assert_string_equal(out, "abcd...");
  cl__escape(out, 8, "\x01\x02", 2, 2, 0);
  assert_string_equal(out, "\\x01...");
  /* Too small even for the mark: empty, still terminated. */
  memset(out, 'x', sizeof out);
  assert_int_equal(cl__escape(out, 3, "abc", 3, 3, 0), 0);
  assert_string_equal(out, "");
  /* outlen 0 writes nothing at all. */
  out[0] = 'x';
  assert_int_equal(cl__escape(out, 0, "abc", 3, 3, 0), 0);
  assert_int_equal(out[0], 'x');
  /* Nothing to show. */
  assert_int_equal(cl__escape(out, sizeof out, "", 0, 40, 0), 0);
  assert_string_equal(out, "");
}

/* CL__ESC_SIZE(n) holds the worst n bytes uncut, in either mode: every
 * byte invalid, every character a C1 control, every one a non-character
 * (code point mode), every one a quote. */
static void escape_size(void **state) {
  (void)state;
  enum { N = 24 };
  static const char *const unit[] = {"\xff", "\xc2\x9b", "\xef\xbf\xbf", "\""};
  const unsigned modes[] = {CL__ESC_QUOTES,
                            CL__ESC_QUOTES | CL__ESC_CODE_POINTS};
  for (size_t u = 0; u < sizeof unit / sizeof unit[0]; u++) {
    char in[N + 1] = "";
    size_t ul = strlen(unit[u]), len = 0;
    while (len + ul <= N) {
      memcpy(in + len, unit[u], ul);
      len += ul;
    }
    for (size_t m = 0; m < 2; m++) {
      char out[CL__ESC_SIZE(N)];
      size_t n = cl__escape(out, sizeof out, in, len, len, modes[m]);
      assert_true(n < sizeof out);
      assert_null(strstr(out, "..."));
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(decode_ascii),
      cmocka_unit_test(decode_two_bytes),
      cmocka_unit_test(decode_three_bytes),
      cmocka_unit_test(decode_four_bytes),
      cmocka_unit_test(decode_overlong),
      cmocka_unit_test(decode_surrogates),
      cmocka_unit_test(decode_above_max),
      cmocka_unit_test(decode_truncated),
      cmocka_unit_test(decode_stray_continuation),
      cmocka_unit_test(decode_unused_leads),
      cmocka_unit_test(decode_every_code_point),
      cmocka_unit_test(decode_only_canonical),
      cmocka_unit_test(invalid_at_offsets),
      cmocka_unit_test(control_characters),
      cmocka_unit_test(check_text_bounds),
      cmocka_unit_test(check_text_faults),
      cmocka_unit_test(check_text_lines),
      cmocka_unit_test(escape_messages),
      cmocka_unit_test(escape_quotes),
      cmocka_unit_test(escape_code_points),
      cmocka_unit_test(escape_cuts),
      cmocka_unit_test(escape_size),
  };
  return cmocka_run_group_tests_name("text", tests, NULL, NULL);
}
