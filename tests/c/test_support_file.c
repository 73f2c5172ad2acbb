/* Support sets that persist and grow (issue 18; docs/support-format.md).
 *
 * For every model given (one per method): a set saved and loaded (file and
 * memory) scores bit-identically to the set saved, from images and from
 * features; a set grown with lwfm_support_add / _add_features (new images
 * of existing and of new classes, unequal shots) scores bit-identically to
 * one prepared from all the images at once, and its base is unchanged.
 * Then, on the first (small) model: every truncation of a saved file and a
 * flipped bit at every byte are refused; hostile files with a valid CRC
 * (bad labels, counts, names, NaN, another version) are refused with their
 * status; a set is refused by another model (other weights; other method)
 * with both fingerprints named; writes are atomic. The SHA-256 behind the
 * fingerprint is checked against FIPS 180-4's vectors (white-box).
 *
 * usage: test_support_file SMALL_MODEL.npz MODEL.npz... (first: small) */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/sha256.h"
#include "lwfm/lwfm.h"

#include "expect.h"

#define HEADER 152

/* FIPS 180-2 vectors, through the CPU's SHA instructions where it has them
 * and through the portable rounds (`portable`). */
static void sha_vectors(int portable) {
    static const struct {
        const char *in, *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        lwfm__sha256 s;
        uint8_t d[32];
        char hex[65];
        lwfm__sha256_init(&s);
        s.portable = portable;
        for (const char *p = v[k].in; *p; p++) lwfm__sha256_update(&s, p, 1); /* byte by byte */
        lwfm__sha256_final(&s, d);
        for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", d[i]);
        EXPECT(!strcmp(hex, v[k].hex));
    }
    /* a million 'a' in one update: the many-block path */
    char *a = test_alloc(1000000);
    memset(a, 'a', 1000000);
    lwfm__sha256 s;
    uint8_t d[32];
    char hex[65];
    lwfm__sha256_init(&s);
    s.portable = portable;
    lwfm__sha256_update(&s, a, 1000000);
    lwfm__sha256_final(&s, d);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", d[i]);
    EXPECT(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
    free(a);
}

typedef struct episode {
    int64_t ch, h, w, C, fh, fw, n, nq;
    float *s, *q, *sf, *qf;
} episode;

static void make_episode(lwfm_model *m, int64_t n, episode *e) {
    EXPECT(lwfm_model_input_shape(m, &e->ch, &e->h, &e->w) == LWFM_OK);
    EXPECT(lwfm_model_feature_shape(m, e->h, e->w, &e->C, &e->fh, &e->fw) == LWFM_OK);
    e->n = n, e->nq = 3;
    const size_t img = (size_t)(e->ch * e->h * e->w), feat = (size_t)(e->C * e->fh * e->fw);
    e->s = test_alloc(n * img * sizeof(float)), e->q = test_alloc(e->nq * img * sizeof(float));
    e->sf = test_alloc(n * feat * sizeof(float)), e->qf = test_alloc(e->nq * feat * sizeof(float));
    for (size_t i = 0; i < n * img; i++) e->s[i] = test_uniform();
    for (size_t i = 0; i < e->nq * img; i++) e->q[i] = test_uniform();
    EXPECT(lwfm_model_features(m, e->s, n, e->ch, e->h, e->w, e->sf, n * feat) == LWFM_OK);
    EXPECT(lwfm_model_features(m, e->q, e->nq, e->ch, e->h, e->w, e->qf, e->nq * feat) == LWFM_OK);
}

static void free_episode(episode *e) {
    free(e->s), free(e->q), free(e->sf), free(e->qf);
}

/* logits of the episode's queries (images, or features) against s */
static int score(const lwfm_support *s, const episode *e, int features, float *out) {
    size_t cap = (size_t)(e->nq * lwfm_support_way(s));
    return features ? lwfm_support_score_features(s, e->qf, e->nq, e->C, e->fh, e->fw, out, cap)
                    : lwfm_support_score(s, e->q, e->nq, e->ch, e->h, e->w, out, cap);
}

static int same_scores(const lwfm_support *a, const lwfm_support *b, const episode *e,
                       int features) {
    float la[64], lb[64];
    if (!a || !b || lwfm_support_way(a) != lwfm_support_way(b) || e->nq * lwfm_support_way(a) > 64)
        return 0;
    if (score(a, e, features, la) || score(b, e, features, lb)) return 0;
    return !memcmp(la, lb, sizeof(float) * (size_t)(e->nq * lwfm_support_way(a)));
}

/* Unequal shots, classes 0..3; the first 3 images hold classes 0..2. */
static const int32_t kLabels[8] = {0, 1, 2, 0, 3, 3, 1, 0};

static void round_trip(lwfm_model *m, const episode *e, int features, const char *dir) {
    lwfm_support *s = NULL, *back = NULL, *file = NULL;
    EXPECT((features ? lwfm_support_prepare_features(&s, m, e->sf, 8, kLabels, e->C, e->fh,
                                                     e->fw, 4)
                     : lwfm_support_prepare(&s, m, e->s, 8, kLabels, e->ch, e->h, e->w, 4)) ==
           LWFM_OK);
    if (!s) return;
    const char *names[4] = {"cat", "dog", "\xc3\xa9mu", "yak"};
    EXPECT(lwfm_support_set_class_names(s, names, 4) == LWFM_OK);
    size_t size = 0, size2 = 0;
    EXPECT(lwfm_support_save_to_memory(s, NULL, 0, &size) == LWFM_OK && size > HEADER);
    unsigned char *buf = test_alloc(size);
    EXPECT(lwfm_support_save_to_memory(s, buf, size - 1, &size2) == LWFM_ERR_BUFFER_TOO_SMALL);
    EXPECT(lwfm_support_save_to_memory(s, buf, size, &size2) == LWFM_OK && size2 == size);
    EXPECT(lwfm_support_load_from_memory(&back, m, buf, size) == LWFM_OK);
    EXPECT(same_scores(s, back, e, features) && same_scores(s, back, e, !features));
    EXPECT(lwfm_support_count(back) == 8 && lwfm_support_from_features(back) == features);
    EXPECT(lwfm_support_class_name(back, 2) && !strcmp(lwfm_support_class_name(back, 2), names[2]));
    EXPECT(lwfm_support_class_name(back, 4) == NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/set.lwfmsup", dir);
    EXPECT(lwfm_support_save(s, path) == LWFM_OK);
    EXPECT(lwfm_support_load(&file, m, path) == LWFM_OK);
    EXPECT(same_scores(s, file, e, features));
    free(buf);
    lwfm_support_destroy(s), lwfm_support_destroy(back), lwfm_support_destroy(file);
}

/* add == prepare whole, bit for bit; the base is unchanged. */
static void grow(lwfm_model *m, const episode *e, int features) {
    const size_t img = (size_t)(e->ch * e->h * e->w), feat = (size_t)(e->C * e->fh * e->fw);
    lwfm_support *whole = NULL, *base = NULL, *base_again = NULL, *grown = NULL, *one = NULL;
#define PREP(out, first, n, way)                                                              \
    (features ? lwfm_support_prepare_features(out, m, e->sf + (first) * feat, n,              \
                                              kLabels + (first), e->C, e->fh, e->fw, way)     \
              : lwfm_support_prepare(out, m, e->s + (first) * img, n, kLabels + (first),      \
                                     e->ch, e->h, e->w, way))
#define ADD(out, b, first, n, way)                                                            \
    (features ? lwfm_support_add_features(out, b, e->sf + (first) * feat, n, kLabels + (first), \
                                          e->C, e->fh, e->fw, way)                            \
              : lwfm_support_add(out, b, e->s + (first) * img, n, kLabels + (first), e->ch,   \
                                 e->h, e->w, way))
    EXPECT(PREP(&whole, 0, 8, 4) == LWFM_OK);
    EXPECT(PREP(&base, 0, 3, 3) == LWFM_OK);
    EXPECT(PREP(&base_again, 0, 3, 3) == LWFM_OK);
    EXPECT(ADD(&grown, base, 3, 5, 4) == LWFM_OK); /* old classes and new class 3 */
    EXPECT(grown && lwfm_support_way(grown) == 4 && lwfm_support_count(grown) == 8);
    EXPECT(same_scores(grown, whole, e, features) && same_scores(grown, whole, e, !features));
    EXPECT(same_scores(base, base_again, e, features) && lwfm_support_count(base) == 3);
    /* one image at a time: 3 sets deep */
    lwfm_support *cur = base;
    for (int j = 3; j < 8; j++) {
        one = NULL;
        EXPECT(ADD(&one, cur, j, 1, j >= 4 ? 4 : 3) == LWFM_OK);
        if (cur != base) lwfm_support_destroy(cur);
        cur = one;
    }
    EXPECT(same_scores(cur, whole, e, features));
    if (cur != base) lwfm_support_destroy(cur);
    /* refusals: a new class without images; fewer classes; out untouched */
    lwfm_support *bad = (lwfm_support *)&bad;
    EXPECT(ADD(&bad, base, 3, 1, 5) == LWFM_ERR_INVALID_ARGUMENT && bad == (lwfm_support *)&bad);
    EXPECT(strstr(lwfm_last_error(), "class") != NULL);
    EXPECT(ADD(&bad, base, 3, 1, 2) == LWFM_ERR_INVALID_ARGUMENT && bad == (lwfm_support *)&bad);
    lwfm_support_destroy(whole), lwfm_support_destroy(base), lwfm_support_destroy(base_again);
    lwfm_support_destroy(grown);
#undef PREP
#undef ADD
}

/* Sets are immutable: threads score a base while it is grown and saved,
 * bitwise equal to its scores before. */
typedef struct scorer {
    const lwfm_support *s;
    const episode *e;
    const float *want;
    int bad;
} scorer;

static void *score_loop(void *arg) {
    scorer *c = arg;
    float got[64];
    const size_t n = sizeof(float) * (size_t)(c->e->nq * lwfm_support_way(c->s));
    for (int i = 0; i < 20; i++)
        if (score(c->s, c->e, 1, got) || memcmp(got, c->want, n)) c->bad++;
    return NULL;
}

static void add_while_scoring(lwfm_model *m, const episode *e) {
    const size_t feat = (size_t)(e->C * e->fh * e->fw);
    lwfm_support *base = NULL;
    float want[64];
    EXPECT(lwfm_support_prepare_features(&base, m, e->sf, 3, kLabels, e->C, e->fh, e->fw, 3) ==
           LWFM_OK);
    if (!base || score(base, e, 1, want)) return;
    scorer c[2] = {{base, e, want, 0}, {base, e, want, 0}};
    pthread_t t[2];
    for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, score_loop, &c[k]);
    for (int i = 0; i < 6; i++) {
        lwfm_support *g = NULL;
        size_t n = 0;
        EXPECT(lwfm_support_add_features(&g, base, e->sf + 3 * feat, 5, kLabels + 3, e->C, e->fh,
                                         e->fw, 4) == LWFM_OK);
        EXPECT(lwfm_support_save_to_memory(base, NULL, 0, &n) == LWFM_OK && n > 0);
        lwfm_support_destroy(g);
    }
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    EXPECT(c[0].bad == 0 && c[1].bad == 0);
    lwfm_support_destroy(base);
}

/* ------------------------------------------------------------------------ */
/* Hostile bytes                                                            */

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void fix_crc(unsigned char *d, size_t n) {
    put32(d + n - 4, (uint32_t)crc32(0, d, (uInt)(n - 4)));
}

/* Load a modified copy of d (edit applied, CRC recomputed); the status. */
static lwfm_status load_edited(lwfm_model *m, const unsigned char *d, size_t n, size_t at,
                               const void *bytes, size_t len, int crc) {
    unsigned char *c = test_alloc(n);
    memcpy(c, d, n);
    memcpy(c + at, bytes, len);
    if (crc) fix_crc(c, n);
    lwfm_support *s = (lwfm_support *)c;
    lwfm_status st = lwfm_support_load_from_memory(&s, m, c, n);
    if (st) EXPECT(s == (lwfm_support *)c); /* out untouched */
    if (!st) lwfm_support_destroy(s);
    free(c);
    return st;
}

static void hostile(lwfm_model *m, const episode *e, lwfm_model *other_weights,
                    lwfm_model *other_method) {
    lwfm_support *s = NULL, *out;
    const int32_t labels[2] = {0, 1};
    EXPECT(lwfm_support_prepare_features(&s, m, e->sf, 2, labels, e->C, e->fh, e->fw, 2) ==
           LWFM_OK);
    if (!s) return;
    const char *names[2] = {"a", "b"};
    EXPECT(lwfm_support_set_class_names(s, names, 2) == LWFM_OK);
    size_t n = 0;
    EXPECT(lwfm_support_save_to_memory(s, NULL, 0, &n) == LWFM_OK);
    unsigned char *d = test_alloc(n);
    EXPECT(lwfm_support_save_to_memory(s, d, n, NULL) == LWFM_OK);

    /* every truncation */
    int refused = 0;
    for (size_t k = 0; k < n; k++) {
        out = NULL;
        refused += lwfm_support_load_from_memory(&out, m, d, k) == LWFM_ERR_FORMAT && !out;
    }
    EXPECT(refused == (int)n);
    out = NULL;
    EXPECT(lwfm_support_load_from_memory(&out, m, d, 10) == LWFM_ERR_FORMAT &&
           strstr(lwfm_last_error(), "truncated"));
    /* a flipped bit at every byte: the CRC or the checks before it */
    refused = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned char b = (unsigned char)(d[k] ^ (1u << (k % 8)));
        refused += load_edited(m, d, n, k, &b, 1, 0) != LWFM_OK;
    }
    EXPECT(refused == (int)n);
    unsigned char b = (unsigned char)(d[n / 2] ^ 4);
    EXPECT(load_edited(m, d, n, n / 2, &b, 1, 0) == LWFM_ERR_FORMAT &&
           strstr(lwfm_last_error(), "CRC"));

    /* valid CRC, hostile fields */
    unsigned char w[8];
    put32(w, 2);
    EXPECT(load_edited(m, d, n, 8, w, 4, 1) == LWFM_ERR_UNSUPPORTED); /* version */
    put32(w, 7);
    EXPECT(load_edited(m, d, n, HEADER + 4, w, 4, 1) == LWFM_ERR_INVALID_ARGUMENT); /* label */
    put32(w, 0);
    EXPECT(load_edited(m, d, n, HEADER + 4, w, 4, 1) == LWFM_ERR_INVALID_ARGUMENT); /* class 1 gone */
    put64(w, 1u << 20);
    EXPECT(load_edited(m, d, n, 72, w, 8, 1) == LWFM_ERR_LIMIT); /* way */
    put64(w, (uint64_t)1 << 62);
    EXPECT(load_edited(m, d, n, 104, w, 8, 1) == LWFM_ERR_FORMAT); /* buffer size overflow */
    put64(w, 3);
    EXPECT(load_edited(m, d, n, 80, w, 8, 1) == LWFM_ERR_FORMAT); /* n: size disagrees */
    EXPECT(load_edited(m, d, n, HEADER + 8, "\xff", 1, 1) == LWFM_ERR_INVALID_ARGUMENT); /* UTF-8 */
    EXPECT(load_edited(m, d, n, HEADER + 8, "b", 1, 1) == LWFM_ERR_INVALID_ARGUMENT);  /* twice */
    const float nan = NAN;
    EXPECT(load_edited(m, d, n, n - 8, &nan, 4, 1) == LWFM_ERR_NONFINITE);
    EXPECT(load_edited(m, d, n, 16, "dn4\0\0\0\0\0\0\0\0\0\0\0\0", 16, 1) == LWFM_ERR_WRONG_KIND); /* method */

    /* another model: other weights, another method; both fingerprints named */
    char fp[LWFM_FINGERPRINT_CHARS + 1], fo[LWFM_FINGERPRINT_CHARS + 1];
    EXPECT(lwfm_model_fingerprint(m, fp, 10) == LWFM_ERR_BUFFER_TOO_SMALL);
    EXPECT(lwfm_model_fingerprint(m, fp, sizeof fp) == LWFM_OK && strlen(fp) == 64);
    lwfm_model *others[2] = {other_weights, other_method};
    for (int k = 0; k < 2; k++) {
        if (!others[k]) continue;
        EXPECT(lwfm_model_fingerprint(others[k], fo, sizeof fo) == LWFM_OK && strcmp(fp, fo));
        out = NULL;
        EXPECT(lwfm_support_load_from_memory(&out, others[k], d, n) == LWFM_ERR_WRONG_KIND &&
               !out);
        EXPECT(strstr(lwfm_last_error(), fp) && strstr(lwfm_last_error(), fo));
    }

    /* class names: count, duplicates, UTF-8, length */
    const char *dup[2] = {"x", "x"}, *bad_utf8[2] = {"x", "\xc0\xaf"};
    EXPECT(lwfm_support_set_class_names(s, names, 3) == LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_support_set_class_names(s, dup, 2) == LWFM_ERR_INVALID_ARGUMENT);
    EXPECT(lwfm_support_set_class_names(s, bad_utf8, 2) == LWFM_ERR_INVALID_ARGUMENT);
    char *longname = test_alloc(LWFM_LIMIT_CLASS_NAME + 2);
    memset(longname, 'a', LWFM_LIMIT_CLASS_NAME + 1);
    longname[LWFM_LIMIT_CLASS_NAME + 1] = 0;
    const char *too_long[2] = {"x", longname};
    EXPECT(lwfm_support_set_class_names(s, too_long, 2) == LWFM_ERR_LIMIT);
    longname[LWFM_LIMIT_CLASS_NAME] = 0;
    EXPECT(lwfm_support_set_class_names(s, too_long, 2) == LWFM_OK);
    EXPECT(strlen(lwfm_support_class_name(s, 1)) == LWFM_LIMIT_CLASS_NAME);
    EXPECT(lwfm_support_set_class_names(s, NULL, 0) == LWFM_OK &&
           !lwfm_support_class_name(s, 0));
    free(longname);
    free(d);
    lwfm_support_destroy(s);
}

/* Writes are atomic: no temporary file left, an unwritable path refused. */
static void atomic_writes(lwfm_model *m, const episode *e, const char *dir) {
    lwfm_support *s = NULL;
    const int32_t labels[2] = {0, 1};
    EXPECT(lwfm_support_prepare_features(&s, m, e->sf, 2, labels, e->C, e->fh, e->fw, 2) ==
           LWFM_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/no/such/dir/s.lwfmsup", dir);
    EXPECT(lwfm_support_save(s, path) == LWFM_ERR_IO && strstr(lwfm_last_error(), path));
    snprintf(path, sizeof path, "%s/over.lwfmsup", dir);
    FILE *f = fopen(path, "w");
    fputs("old", f);
    fclose(f);
    EXPECT(lwfm_support_save(s, path) == LWFM_OK); /* replaces the old file */
    lwfm_support *back = NULL;
    EXPECT(lwfm_support_load(&back, m, path) == LWFM_OK);
    lwfm_support_destroy(back);
    EXPECT(lwfm_support_save(s, dir) == LWFM_ERR_IO); /* a directory: rename fails */
    DIR *dd = opendir(dir);
    int temps = 0;
    for (struct dirent *de; dd && (de = readdir(dd));) temps += strstr(de->d_name, ".tmp-") != 0;
    if (dd) closedir(dd);
    EXPECT(temps == 0);
    EXPECT(lwfm_support_load(&back, m, dir) == LWFM_ERR_IO);
    snprintf(path, sizeof path, "%s/missing.lwfmsup", dir);
    EXPECT(lwfm_support_load(&back, m, path) == LWFM_ERR_IO);
    lwfm_support_destroy(s);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s SMALL_MODEL.npz MODEL.npz...\n", argv[0]);
        return 2;
    }
    sha_vectors(0);
    sha_vectors(1);
    char dir[] = "/tmp/lwfm-support-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    lwfm_model *models[8] = {0};
    for (int k = 1; k < argc && k <= 8; k++) {
        EXPECT(lwfm_model_load(&models[k - 1], argv[k], NULL) == LWFM_OK);
        if (!models[k - 1]) continue;
        episode e;
        make_episode(models[k - 1], 8, &e);
        for (int features = 0; features < 2; features++) {
            round_trip(models[k - 1], &e, features, dir);
            grow(models[k - 1], &e, features);
        }
        if (k == 1) atomic_writes(models[0], &e, dir), add_while_scoring(models[0], &e);
        free_episode(&e);
        printf("%s: %d checks, %d failed so far\n", argv[k], checks, fails);
    }
    /* hostile files on the small model; refused by the second (same method,
     * other weights) and by a model of another method */
    episode e;
    make_episode(models[0], 2, &e);
    lwfm_model *other_method = NULL;
    for (int k = 1; k < 8; k++)
        if (models[k] && lwfm_model_method(models[k]) != lwfm_model_method(models[0]))
            other_method = models[k], k = 8;
    hostile(models[0], &e,
            models[1] && lwfm_model_method(models[1]) == lwfm_model_method(models[0]) ? models[1]
                                                                                       : NULL,
            other_method);
    free_episode(&e);
    for (int k = 0; k < 8; k++) lwfm_model_destroy(models[k]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    printf("%d checks, %d failed\n", checks, fails);
    return fails != 0;
}
