/*
 * Independent check of Roster's protobuf encoding, built on protobuf-c.
 *
 * The Swift test `InteropTests` compiles this file together with the code
 * protoc-c generates from Tests/Fixtures/everything.rdl (emitted as .proto by
 * roster-idl --legacy-optional), then runs it:
 *
 *   interop_check decode FILE   unpack FILE (written by the Swift encoder) as a
 *                               fixture.v1.Document and check every field
 *                               against the canonical value; exit 0 if all agree
 *   interop_check encode FILE   pack the canonical value with protobuf-c into FILE
 *                               for the Swift decoder to read back
 *
 * The canonical value is the one `InteropFixture.document` builds in Swift.
 */
/* protobuf-c omits a singular float of -0.0 (it tests the value, not its bits),
 * so -0.0 is checked in the repeated field, which is always sent. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "everything.pb-c.h"

static int failures = 0;

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "mismatch: %s (line %d)\n", #cond, __LINE__); failures++; } } while (0)

static int bytes_eq(ProtobufCBinaryData b, const uint8_t *expected, size_t n) {
  return b.len == n && (n == 0 || memcmp(b.data, expected, n) == 0);
}

static uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static uint64_t double_bits(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
static double double_from_bits(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }

static const char *DOC_ID = "doc-42 \xe2\x9c\x93 \xc3\xbc";
static const uint64_t NAN_BITS = 0x7FF8000000000001ULL;

static void check_document(const Fixture__V1__Document *d) {
  CHECK(strcmp(d->document_id, DOC_ID) == 0);

  const Fixture__V1__Scalars *s = d->scalars;
  CHECK(s != NULL);
  if (s) {
    static const uint8_t blob[] = {0x00, 0xFF, 0x10};
    CHECK(s->flag == 1);
    CHECK(s->i32 == -1);
    CHECK(s->i64 == INT64_MIN);
    CHECK(s->u32 == UINT32_MAX);
    CHECK(s->u64 == UINT64_MAX);
    CHECK(s->s32 == INT32_MIN);
    CHECK(s->s64 == -2);
    CHECK(s->f32 == 0xDEADBEEFu);
    CHECK(s->f64 == 0x0123456789ABCDEFULL);
    CHECK(s->sf32 == -123456);
    CHECK(s->sf64 == INT64_MIN + 1);
    CHECK(float_bits(s->real32) == 0x80000001u); /* the smallest negative subnormal */
    CHECK(s->real64 == 3.141592653589793);
    CHECK(strcmp(s->text, "hello") == 0);
    CHECK(bytes_eq(s->blob, blob, 3));
    CHECK(s->color == FIXTURE__V1__COLOR__COLOR_BLUE);
  }

  CHECK(d->n_sections == 2);
  if (d->n_sections == 2) {
    const Fixture__V1__Document__Section *a = d->sections[0];
    CHECK(strcmp(a->title, "A") == 0);
    CHECK(a->n_paragraphs == 2);
    if (a->n_paragraphs == 2) {
      CHECK(strcmp(a->paragraphs[0]->body, "p1") == 0);
      CHECK(a->paragraphs[0]->kind == FIXTURE__V1__DOCUMENT__KIND__KIND_QUOTE);
      CHECK(strcmp(a->paragraphs[1]->body, "") == 0);
      CHECK(a->paragraphs[1]->kind == FIXTURE__V1__DOCUMENT__KIND__KIND_PLAIN);
    }
    CHECK(strcmp(d->sections[1]->title, "") == 0);
    CHECK(d->sections[1]->n_paragraphs == 0);
  }

  CHECK(d->n_counters == 2);
  for (size_t i = 0; i < d->n_counters; i++) {
    const char *k = d->counters[i]->key;
    int64_t v = d->counters[i]->value;
    CHECK((strcmp(k, "a") == 0 && v == 1) || (strcmp(k, "b") == 0 && v == -1));
  }

  CHECK(d->n_sections_by_number == 2);
  for (size_t i = 0; i < d->n_sections_by_number; i++) {
    int32_t k = d->sections_by_number[i]->key;
    const Fixture__V1__Document__Section *v = d->sections_by_number[i]->value;
    CHECK(k == 1 || k == -5);
    if (k == 1) CHECK(v != NULL && strcmp(v->title, "S1") == 0 && v->n_paragraphs == 0);
    if (k == -5) CHECK(v == NULL || (strcmp(v->title, "") == 0 && v->n_paragraphs == 0));
  }

  CHECK(d->n_flags == 2);
  for (size_t i = 0; i < d->n_flags; i++) {
    const char *v = d->flags[i]->value;
    CHECK(d->flags[i]->key ? strcmp(v, "yes") == 0 : strcmp(v, "no") == 0);
  }

  CHECK(d->n_colors == 2);
  for (size_t i = 0; i < d->n_colors; i++) {
    uint64_t k = d->colors[i]->key;
    Fixture__V1__Color v = d->colors[i]->value;
    CHECK((k == 0 && v == FIXTURE__V1__COLOR__COLOR_GREEN) || (k == 7 && v == FIXTURE__V1__COLOR__COLOR_RED));
  }

  CHECK(d->n_blobs == 2);
  for (size_t i = 0; i < d->n_blobs; i++) {
    static const uint8_t one[] = {0x01};
    int32_t k = d->blobs[i]->key;
    CHECK((k == -1 && bytes_eq(d->blobs[i]->value, one, 1)) || (k == 2 && d->blobs[i]->value.len == 0));
  }

  CHECK(d->kind == FIXTURE__V1__DOCUMENT__KIND__KIND_QUOTE);
  CHECK(d->lead != NULL && strcmp(d->lead->body, "lead") == 0 && d->lead->kind == FIXTURE__V1__DOCUMENT__KIND__KIND_PLAIN);

  const Fixture__V1__Repeats *r = d->repeats;
  CHECK(r != NULL);
  if (r) {
    static const uint8_t two[] = {1, 2};
    CHECK(r->n_flags == 3 && r->flags[0] == 1 && r->flags[1] == 0 && r->flags[2] == 1);
    CHECK(r->n_i32s == 3 && r->i32s[0] == 0 && r->i32s[1] == -1 && r->i32s[2] == INT32_MAX);
    CHECK(r->n_i64s == 2 && r->i64s[0] == INT64_MIN && r->i64s[1] == 5);
    CHECK(r->n_u32s == 2 && r->u32s[0] == 0 && r->u32s[1] == UINT32_MAX);
    CHECK(r->n_u64s == 1 && r->u64s[0] == UINT64_MAX);
    CHECK(r->n_s32s == 3 && r->s32s[0] == -1 && r->s32s[1] == 1 && r->s32s[2] == INT32_MIN);
    CHECK(r->n_s64s == 2 && r->s64s[0] == INT64_MIN && r->s64s[1] == INT64_MAX);
    CHECK(r->n_f32s == 2 && r->f32s[0] == 1 && r->f32s[1] == 2);
    CHECK(r->n_f64s == 1 && r->f64s[0] == UINT64_MAX);
    CHECK(r->n_sf32s == 1 && r->sf32s[0] == -7);
    CHECK(r->n_sf64s == 1 && r->sf64s[0] == -8);
    CHECK(r->n_real32s == 2 && r->real32s[0] == 1.5f && float_bits(r->real32s[1]) == 0x80000000u);
    CHECK(r->n_real64s == 2 && double_bits(r->real64s[0]) == NAN_BITS && isinf(r->real64s[1]) && r->real64s[1] < 0);
    CHECK(r->n_texts == 3 && strcmp(r->texts[0], "x") == 0 && strcmp(r->texts[1], "") == 0 &&
          strcmp(r->texts[2], "\xc3\xbf") == 0);
    CHECK(r->n_blobs == 2 && r->blobs[0].len == 0 && bytes_eq(r->blobs[1], two, 2));
    CHECK(r->n_colors == 3 && r->colors[0] == FIXTURE__V1__COLOR__COLOR_RED &&
          r->colors[1] == FIXTURE__V1__COLOR__COLOR_BLUE && (int)r->colors[2] == 99);
  }

  const Fixture__V1__Optionals *o = d->optionals;
  CHECK(o != NULL);
  if (o) {
    CHECK(o->_maybe_int_case == FIXTURE__V1__OPTIONALS___MAYBE_INT_MAYBE_INT && o->maybe_int == 0);
    CHECK(o->_maybe_text_case == FIXTURE__V1__OPTIONALS___MAYBE_TEXT_MAYBE_TEXT && strcmp(o->maybe_text, "") == 0);
    CHECK(o->_maybe_color_case == FIXTURE__V1__OPTIONALS___MAYBE_COLOR_MAYBE_COLOR &&
          o->maybe_color == FIXTURE__V1__COLOR__COLOR_UNSPECIFIED);
    CHECK(o->_maybe_real_case == FIXTURE__V1__OPTIONALS___MAYBE_REAL__NOT_SET);
    CHECK(o->_maybe_flag_case == FIXTURE__V1__OPTIONALS___MAYBE_FLAG_MAYBE_FLAG && o->maybe_flag == 0);
    CHECK(o->_maybe_blob_case == FIXTURE__V1__OPTIONALS___MAYBE_BLOB__NOT_SET);
  }
  CHECK(d->max_numbered == 7);
}

static int encode(const char *path) {
  static uint8_t blob[] = {0x00, 0xFF, 0x10};
  Fixture__V1__Scalars s = FIXTURE__V1__SCALARS__INIT;
  s.flag = 1; s.i32 = -1; s.i64 = INT64_MIN; s.u32 = UINT32_MAX; s.u64 = UINT64_MAX;
  s.s32 = INT32_MIN; s.s64 = -2; s.f32 = 0xDEADBEEFu; s.f64 = 0x0123456789ABCDEFULL;
  s.sf32 = -123456; s.sf64 = INT64_MIN + 1; s.real32 = -1.4e-45f; s.real64 = 3.141592653589793;
  s.text = "hello"; s.blob.data = blob; s.blob.len = 3; s.color = FIXTURE__V1__COLOR__COLOR_BLUE;

  Fixture__V1__Document__Section__Paragraph p1 = FIXTURE__V1__DOCUMENT__SECTION__PARAGRAPH__INIT;
  p1.body = "p1"; p1.kind = FIXTURE__V1__DOCUMENT__KIND__KIND_QUOTE;
  Fixture__V1__Document__Section__Paragraph p2 = FIXTURE__V1__DOCUMENT__SECTION__PARAGRAPH__INIT;
  Fixture__V1__Document__Section__Paragraph *paragraphs[] = {&p1, &p2};
  Fixture__V1__Document__Section a = FIXTURE__V1__DOCUMENT__SECTION__INIT;
  a.title = "A"; a.n_paragraphs = 2; a.paragraphs = paragraphs;
  Fixture__V1__Document__Section b = FIXTURE__V1__DOCUMENT__SECTION__INIT;
  Fixture__V1__Document__Section *sections[] = {&a, &b};

  Fixture__V1__Document__CountersEntry c1 = FIXTURE__V1__DOCUMENT__COUNTERS_ENTRY__INIT, c2 = FIXTURE__V1__DOCUMENT__COUNTERS_ENTRY__INIT;
  c1.key = "a"; c1.value = 1; c2.key = "b"; c2.value = -1;
  Fixture__V1__Document__CountersEntry *counters[] = {&c1, &c2};

  Fixture__V1__Document__Section s1 = FIXTURE__V1__DOCUMENT__SECTION__INIT, s5 = FIXTURE__V1__DOCUMENT__SECTION__INIT;
  s1.title = "S1";
  Fixture__V1__Document__SectionsByNumberEntry e1 = FIXTURE__V1__DOCUMENT__SECTIONS_BY_NUMBER_ENTRY__INIT;
  Fixture__V1__Document__SectionsByNumberEntry e5 = FIXTURE__V1__DOCUMENT__SECTIONS_BY_NUMBER_ENTRY__INIT;
  e5.key = -5; e5.value = &s5; e1.key = 1; e1.value = &s1;
  Fixture__V1__Document__SectionsByNumberEntry *by_number[] = {&e5, &e1};

  Fixture__V1__Document__FlagsEntry f0 = FIXTURE__V1__DOCUMENT__FLAGS_ENTRY__INIT, f1 = FIXTURE__V1__DOCUMENT__FLAGS_ENTRY__INIT;
  f0.key = 0; f0.value = "no"; f1.key = 1; f1.value = "yes";
  Fixture__V1__Document__FlagsEntry *flags[] = {&f0, &f1};

  Fixture__V1__Document__ColorsEntry k0 = FIXTURE__V1__DOCUMENT__COLORS_ENTRY__INIT, k7 = FIXTURE__V1__DOCUMENT__COLORS_ENTRY__INIT;
  k0.key = 0; k0.value = FIXTURE__V1__COLOR__COLOR_GREEN; k7.key = 7; k7.value = FIXTURE__V1__COLOR__COLOR_RED;
  Fixture__V1__Document__ColorsEntry *colors[] = {&k0, &k7};

  static uint8_t one[] = {0x01};
  Fixture__V1__Document__BlobsEntry bm = FIXTURE__V1__DOCUMENT__BLOBS_ENTRY__INIT, b2 = FIXTURE__V1__DOCUMENT__BLOBS_ENTRY__INIT;
  bm.key = -1; bm.value.data = one; bm.value.len = 1; b2.key = 2;
  Fixture__V1__Document__BlobsEntry *blobs[] = {&bm, &b2};

  Fixture__V1__Document__Section__Paragraph lead = FIXTURE__V1__DOCUMENT__SECTION__PARAGRAPH__INIT;
  lead.body = "lead";

  static protobuf_c_boolean r_flags[] = {1, 0, 1};
  static int32_t r_i32s[] = {0, -1, INT32_MAX};
  static int64_t r_i64s[] = {INT64_MIN, 5};
  static uint32_t r_u32s[] = {0, UINT32_MAX};
  static uint64_t r_u64s[] = {UINT64_MAX};
  static int32_t r_s32s[] = {-1, 1, INT32_MIN};
  static int64_t r_s64s[] = {INT64_MIN, INT64_MAX};
  static uint32_t r_f32s[] = {1, 2};
  static uint64_t r_f64s[] = {UINT64_MAX};
  static int32_t r_sf32s[] = {-7};
  static int64_t r_sf64s[] = {-8};
  static float r_real32s[] = {1.5f, -0.0f};
  double r_real64s[] = {double_from_bits(NAN_BITS), -INFINITY};
  static char *r_texts[] = {"x", "", "\xc3\xbf"};
  static uint8_t twob[] = {1, 2};
  ProtobufCBinaryData r_blobs[] = {{0, NULL}, {2, twob}};
  Fixture__V1__Color r_colors[] = {FIXTURE__V1__COLOR__COLOR_RED, FIXTURE__V1__COLOR__COLOR_BLUE, (Fixture__V1__Color)99};
  Fixture__V1__Repeats r = FIXTURE__V1__REPEATS__INIT;
  r.n_flags = 3; r.flags = r_flags; r.n_i32s = 3; r.i32s = r_i32s; r.n_i64s = 2; r.i64s = r_i64s;
  r.n_u32s = 2; r.u32s = r_u32s; r.n_u64s = 1; r.u64s = r_u64s; r.n_s32s = 3; r.s32s = r_s32s;
  r.n_s64s = 2; r.s64s = r_s64s; r.n_f32s = 2; r.f32s = r_f32s; r.n_f64s = 1; r.f64s = r_f64s;
  r.n_sf32s = 1; r.sf32s = r_sf32s; r.n_sf64s = 1; r.sf64s = r_sf64s; r.n_real32s = 2; r.real32s = r_real32s;
  r.n_real64s = 2; r.real64s = r_real64s; r.n_texts = 3; r.texts = r_texts; r.n_blobs = 2; r.blobs = r_blobs;
  r.n_colors = 3; r.colors = r_colors;

  Fixture__V1__Optionals o = FIXTURE__V1__OPTIONALS__INIT;
  o._maybe_int_case = FIXTURE__V1__OPTIONALS___MAYBE_INT_MAYBE_INT; o.maybe_int = 0;
  o._maybe_text_case = FIXTURE__V1__OPTIONALS___MAYBE_TEXT_MAYBE_TEXT; o.maybe_text = "";
  o._maybe_color_case = FIXTURE__V1__OPTIONALS___MAYBE_COLOR_MAYBE_COLOR; o.maybe_color = FIXTURE__V1__COLOR__COLOR_UNSPECIFIED;
  o._maybe_flag_case = FIXTURE__V1__OPTIONALS___MAYBE_FLAG_MAYBE_FLAG; o.maybe_flag = 0;

  Fixture__V1__Document d = FIXTURE__V1__DOCUMENT__INIT;
  d.document_id = (char *)DOC_ID;
  d.scalars = &s;
  d.n_sections = 2; d.sections = sections;
  d.n_counters = 2; d.counters = counters;
  d.n_sections_by_number = 2; d.sections_by_number = by_number;
  d.n_flags = 2; d.flags = flags;
  d.n_colors = 2; d.colors = colors;
  d.n_blobs = 2; d.blobs = blobs;
  d.kind = FIXTURE__V1__DOCUMENT__KIND__KIND_QUOTE;
  d.lead = &lead;
  d.repeats = &r;
  d.optionals = &o;
  d.max_numbered = 7;

  /* Check our own value first, so a mistake here is not blamed on Swift. */
  check_document(&d);
  if (failures) return 1;

  size_t n = fixture__v1__document__get_packed_size(&d);
  uint8_t *buf = malloc(n);
  fixture__v1__document__pack(&d, buf);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(buf, 1, n, f) != n) { perror(path); return 2; }
  fclose(f);
  free(buf);
  return 0;
}

static int decode(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); return 2; }
  static uint8_t buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  Fixture__V1__Document *d = fixture__v1__document__unpack(NULL, n, buf);
  if (!d) { fprintf(stderr, "protobuf-c could not unpack %zu bytes\n", n); return 1; }
  check_document(d);
  fixture__v1__document__free_unpacked(d, NULL);
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: %s encode|decode FILE\n", argv[0]); return 2; }
  if (strcmp(argv[1], "encode") == 0) return encode(argv[2]);
  if (strcmp(argv[1], "decode") == 0) return decode(argv[2]);
  fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 2;
}
