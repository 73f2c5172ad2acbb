/* Fuzz target: the episode API's argument checking.
 *
 * The input bytes choose a call (episode from images or features, prepared
 * support sets, forward passes, the per-pair views, preprocessing, the
 * assignment solver), a model (LWFM-SPM on Conv-64F RGB 32x32, DN4 RGB,
 * the bundled Omniglot LWFM-SPM and RCN grey 28x28, or NULL), the counts
 * (way, supports, queries; small, zero, negative, at and over the limits of
 * lwfm.h, huge), the shapes, the labels (valid or raw), NaN / infinity
 * injected into the pixels or features, the output capacity and NULL
 * pointers. Invariants:
 *  - no crash, no sanitizer report, no leak;
 *  - a failing call returns a known status with a message and leaves the
 *    output buffer and the out-parameter untouched (canaries);
 *  - a successful call writes exactly n_query * way floats;
 *  - a count over its documented limit always fails, before the buffer it
 *    describes is read (such buffers are 16 floats here, so that reading
 *    them is a heap overflow under ASan).
 * Buffers are as large as the counts claim whenever that fits a budget;
 * claims over the budget but within the limits are skipped. */
#include <math.h>

#include "fuzz_common.h"

#define N_MODELS 4
static lwfm_model *g_m[N_MODELS];
static int g_native[N_MODELS]; /* feature maps of any size (DN4's native taps) */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    g_m[0] = fuzz_test_model("lwfm_tiny.npz");
    g_m[1] = fuzz_test_model("dn4_random.npz");
    g_m[2] = fuzz_bundled_model("omniglot.npz");
    g_m[3] = fuzz_bundled_model("omniglot-rcn.npz");
    for (int k = 0; k < N_MODELS; k++) {
        int64_t c, h, w, C1, h1, w1, C2, h2, w2;
        FUZZ_CHECK(lwfm_model_input_shape(g_m[k], &c, &h, &w) == LWFM_OK);
        FUZZ_CHECK(lwfm_model_feature_shape(g_m[k], h, w, &C1, &h1, &w1) == LWFM_OK);
        FUZZ_CHECK(lwfm_model_feature_shape(g_m[k], 2 * h, 2 * w, &C2, &h2, &w2) == LWFM_OK);
        g_native[k] = h2 != h1;
    }
    return 0;
}

#define BUDGET ((int64_t)1 << 20) /* floats in one buffer */
#define DUMMY 16                  /* floats in a buffer whose claim must be refused */
#define CANARY_FLOATS 8
#define CANARY 0x5a

/* A count: mostly small, sometimes zero, negative, at/over `limit`, huge. */
static int64_t pick_count(fuzz_reader *r, int64_t small, int64_t limit) {
    uint8_t b = fuzz_u8(r);
    if (b < 208) return 1 + b % small;
    switch (b % 8) {
    case 0: return 0;
    case 1: return -1 - (int64_t)fuzz_u8(r);
    case 2: return INT64_MIN;
    case 3: return limit;
    case 4: return limit + 1;
    case 5: return (int64_t)1 << 31;
    case 6: return (int64_t)1 << 62;
    default: return INT64_MAX;
    }
}

/* A dimension near `typical`: itself, another small size, or hostile. */
static int64_t pick_dim(fuzz_reader *r, int64_t typical, int64_t limit) {
    uint8_t b = fuzz_u8(r);
    if (b < 160) return typical;
    if (b < 224) return 1 + fuzz_u8(r) % 48;
    switch (b % 8) {
    case 0: return 0;
    case 1: return -1;
    case 2: return limit;
    case 3: return limit + 1;
    case 4: return typical + 1;
    case 5: return typical - 1;
    case 6: return (int64_t)1 << 40;
    default: return INT64_MIN;
    }
}

/* Elements of a claimed buffer: -1 when a dimension is not positive, over
 * the budget, or the product overflows. */
static int64_t claim(const int64_t *d, int n) {
    int64_t t = 1;
    for (int i = 0; i < n; i++) {
        if (d[i] <= 0 || d[i] > BUDGET) return -1;
        t *= d[i];
        if (t > BUDGET) return -1;
    }
    return t;
}

/* A buffer claim (count, channels, height, width) that the call refuses
 * from the numbers alone, before reading the buffer. */
static int claim_refused(int k, int features, int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t mc, mh, mw, fc, fh, fw;
    lwfm_model_input_shape(g_m[k], &mc, &mh, &mw);
    lwfm_model_feature_shape(g_m[k], mh, mw, &fc, &fh, &fw);
    if (n <= 0 || n > LWFM_LIMIT_IMAGES || h <= 0 || w <= 0) return 1;
    if (!features) return c != mc || h > LWFM_LIMIT_IMAGE_SIDE || w > LWFM_LIMIT_IMAGE_SIDE;
    if (c != fc) return 1;
    if (!g_native[k]) return h != fh || w != fw;
    return h > LWFM_LIMIT_POSITIONS || w > LWFM_LIMIT_POSITIONS || h * w > LWFM_LIMIT_POSITIONS;
}

typedef struct buf {
    float *p;
    int64_t n;   /* floats it holds */
    int dummy;   /* smaller than claimed: the call must refuse before reading */
} buf;

/* A buffer for `claimed` floats filled from `seed` (values in [-3, 3]). */
static buf make_buf(int64_t claimed, uint64_t seed) {
    buf b;
    b.dummy = claimed < 0;
    b.n = b.dummy ? DUMMY : claimed;
    b.p = malloc((size_t)b.n * sizeof(float));
    FUZZ_CHECK(b.p);
    for (int64_t i = 0; i < b.n; i++)
        b.p[i] = (float)((double)(fuzz_mix(&seed) >> 11) * 0x1p-53 * 6.0 - 3.0);
    return b;
}

/* NaN, infinities or a huge finite value at a chosen element. */
static void poison(fuzz_reader *r, buf *b) {
    uint8_t k = fuzz_u8(r);
    if (k < 0xc0 || b->n == 0) return;
    uint32_t at = fuzz_u32(r) % (uint32_t)b->n;
    static const float v[4] = {NAN, INFINITY, -INFINITY, 3e38f};
    b->p[at] = v[k % 4];
}

typedef struct outbuf {
    float *p;
    size_t alloc;    /* floats allocated */
    size_t need;     /* floats a success writes */
    size_t capacity; /* what the call is told */
} outbuf;

static outbuf make_out(fuzz_reader *r, int64_t rows, int64_t cols) {
    outbuf o;
    int64_t d[2] = {rows, cols};
    int64_t need = claim(d, 2);
    o.need = need < 0 ? 0 : (size_t)need;
    o.alloc = o.need + CANARY_FLOATS;
    o.p = malloc(o.alloc * sizeof(float));
    FUZZ_CHECK(o.p);
    memset(o.p, CANARY, o.alloc * sizeof(float));
    uint8_t m = fuzz_u8(r);
    o.capacity = m < 192 ? o.need
                 : m % 4 == 0 ? (o.need ? o.need - 1 : 0)
                 : m % 4 == 1 ? 0
                 : m % 4 == 2 ? o.need + 1
                              : o.need; /* SIZE_MAX would license writes we cannot hold */
    return o;
}

static int untouched_from(const outbuf *o, size_t from) {
    const unsigned char *b = (const unsigned char *)(o->p + from);
    for (size_t i = 0; i < (o->alloc - from) * sizeof(float); i++)
        if (b[i] != CANARY) return 0;
    return 1;
}

/* The invariants of a call that writes `o` (need floats on success). */
static void check_out(lwfm_status st, const outbuf *o, int must_fail) {
    if (getenv("LWFM_FUZZ_VERBOSE"))
        fprintf(stderr, "status %d: %s\n", (int)st, st ? lwfm_last_error() : "ok");
    if (st) {
        FUZZ_CHECK_FAILURE(st);
        FUZZ_CHECK(untouched_from(o, 0));
    } else {
        FUZZ_CHECK(!must_fail);
        FUZZ_CHECK(untouched_from(o, o->need));
        /* a success never hands out NaN or infinity (features of +-3e38
         * pixels did, issue 15) */
        if (o->p)
            for (size_t i = 0; i < o->need; i++) FUZZ_CHECK(isfinite(o->p[i]));
    }
}

static int32_t *make_labels(fuzz_reader *r, int64_t n, int64_t way, int *dummy) {
    int64_t d[1] = {n};
    int64_t k = claim(d, 1);
    *dummy = k < 0;
    int32_t *l = malloc(sizeof(int32_t) * (size_t)(k < 0 ? DUMMY : k));
    FUZZ_CHECK(l);
    uint8_t mode = fuzz_u8(r);
    uint8_t shift = fuzz_u8(r);
    for (int64_t j = 0; j < (k < 0 ? DUMMY : k); j++) {
        if (mode < 192 && way > 0)
            l[j] = (int32_t)((j + shift) % way);
        else
            l[j] = (int8_t)fuzz_u8(r);
    }
    return l;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_m[0]) LLVMFuzzerInitialize(NULL, NULL);
    fuzz_reader rd = {data, size}, *r = &rd;
    const uint8_t op = fuzz_u8(r) % 8;
    const uint8_t mi = fuzz_u8(r);
    lwfm_model *model = (mi & 0xf0) == 0xf0 ? NULL : g_m[mi % N_MODELS];
    lwfm_model *base = g_m[mi % N_MODELS];
    const uint8_t nulls = fuzz_u8(r) >= 0xf0 ? fuzz_u8(r) : 0;
    const uint64_t seed = fuzz_u8(r);

    int64_t mc, mh, mw, fc, ffh, ffw;
    FUZZ_CHECK(lwfm_model_input_shape(base, &mc, &mh, &mw) == LWFM_OK);
    FUZZ_CHECK(lwfm_model_feature_shape(base, mh, mw, &fc, &ffh, &ffw) == LWFM_OK);

    const int64_t way = pick_count(r, 6, LWFM_LIMIT_WAY);
    const int64_t ns = pick_count(r, 12, LWFM_LIMIT_IMAGES);
    const int64_t nq = pick_count(r, 6, LWFM_LIMIT_IMAGES);
    const int features = op == 1 || op == 3;
    const int64_t c = pick_dim(r, features ? fc : mc, features ? 1 << 20 : 4);
    const int64_t h = pick_dim(r, features ? ffh : mh,
                               features ? LWFM_LIMIT_POSITIONS : LWFM_LIMIT_IMAGE_SIDE);
    const int64_t w = pick_dim(r, features ? ffw : mw,
                               features ? LWFM_LIMIT_POSITIONS : LWFM_LIMIT_IMAGE_SIDE);
    /* prepared sets (ops 2, 3): queries of another size */
    const int prepared = op == 2 || op == 3;
    const int64_t h2 = fuzz_u8(r) < 200 || !prepared ? h : pick_dim(r, features ? ffh : mh, 1 << 20);
    const int64_t w2 = fuzz_u8(r) < 200 || !prepared ? w : pick_dim(r, features ? ffw : mw, 1 << 20);

    /* Hostile counts the API promises to refuse (lwfm.h, "Resource limits"). */
    const int over = way > LWFM_LIMIT_WAY || ns > LWFM_LIMIT_IMAGES || nq > LWFM_LIMIT_IMAGES ||
                     (!features && (h > LWFM_LIMIT_IMAGE_SIDE || w > LWFM_LIMIT_IMAGE_SIDE));
    /* A buffer may be smaller than its claim only when the claim itself is
     * refused (by the checks of that buffer, which come before reading it);
     * a valid claim over the budget skips the input. */
    const int s_bad = claim_refused(mi % N_MODELS, features, ns, c, h, w);
    const int q_bad = claim_refused(mi % N_MODELS, features, nq, c, h2, w2);

    int64_t ds[4] = {ns, c, h, w}, dq[4] = {nq, c, h2, w2};
    buf S = make_buf(claim(ds, 4), seed), Q = make_buf(claim(dq, 4), seed + 1);
    poison(r, &S);
    poison(r, &Q);
    int ldummy;
    int32_t *labels = make_labels(r, ns, way, &ldummy);
    outbuf o = make_out(r, nq, way);
    if ((S.dummy && !s_bad) || (Q.dummy && !q_bad) || (ldummy && ns > 0 && ns <= LWFM_LIMIT_IMAGES))
        goto done; /* a valid claim over the budget */

    const float *sp = nulls & 1 ? NULL : S.p, *qp = nulls & 2 ? NULL : Q.p;
    const int32_t *lp = nulls & 4 ? NULL : labels;
    float *op_out = nulls & 8 ? NULL : o.p;
    lwfm_status st;
    switch (op) {
    case 0:
        st = lwfm_episode_score(model, sp, ns, lp, qp, nq, c, h, w, way, op_out, o.capacity);
        check_out(st, &o, over);
        break;
    case 1:
        st = lwfm_episode_score_features(model, sp, ns, lp, qp, nq, c, h, w, way, op_out,
                                         o.capacity);
        check_out(st, &o, over);
        break;
    case 2:
    case 3: {
        lwfm_support *const canary = (lwfm_support *)&o;
        lwfm_support *set = canary;
        st = op == 2 ? lwfm_support_prepare(nulls & 16 ? NULL : &set, model, sp, ns, lp, c, h, w,
                                            way)
                     : lwfm_support_prepare_features(nulls & 16 ? NULL : &set, model, sp, ns, lp,
                                                     c, h, w, way);
        if (st) {
            FUZZ_CHECK_FAILURE(st);
            FUZZ_CHECK(set == canary);
            FUZZ_CHECK(!(way > LWFM_LIMIT_WAY || ns > LWFM_LIMIT_IMAGES) || st);
            break;
        }
        FUZZ_CHECK(set != canary && set);
        FUZZ_CHECK(!(way > LWFM_LIMIT_WAY || ns > LWFM_LIMIT_IMAGES));
        FUZZ_CHECK(lwfm_support_way(set) == way && lwfm_support_count(set) == ns);
        st = op == 2 ? lwfm_support_score(nulls & 32 ? NULL : set, qp, nq, c, h2, w2, op_out,
                                          o.capacity)
                     : lwfm_support_score_features(nulls & 32 ? NULL : set, qp, nq, c, h2, w2,
                                                   op_out, o.capacity);
        check_out(st, &o, nq > LWFM_LIMIT_IMAGES || h2 > LWFM_LIMIT_IMAGE_SIDE ||
                              w2 > LWFM_LIMIT_IMAGE_SIDE);
        lwfm_support_destroy(set);
        break;
    }
    case 4: {
        /* forward passes: features of the support images */
        int64_t C = 0, fh = 0, fw = 0;
        if (h > 0 && w > 0 && h <= 64 && w <= 64 && model &&
            lwfm_model_feature_shape(model, h, w, &C, &fh, &fw) == LWFM_OK) {
            outbuf f = make_out(r, ns > 0 && ns <= 64 ? ns : 1, C * fh * fw);
            float *fp = nulls & 8 ? NULL : f.p;
            const int over_batch = ns > LWFM_LIMIT_IMAGES; /* h, w <= 64 here */
            st = lwfm_model_features(model, sp, ns, c, h, w, fp, f.capacity);
            check_out(st, &f, over_batch);
            lwfm_backbone *bb = NULL;
            if (lwfm_backbone_create(&bb, model) == LWFM_OK) {
                memset(f.p, CANARY, f.alloc * sizeof(float));
                st = lwfm_backbone_forward(bb, sp, ns, c, h, w, fp, f.capacity);
                check_out(st, &f, over_batch);
                lwfm_backbone_destroy(bb);
            }
            free(f.p);
        } else {
            float out1[DUMMY];
            st = lwfm_model_features(model, sp, ns, c, h, w, out1, 0);
            FUZZ_CHECK(st != LWFM_OK);
            FUZZ_CHECK_FAILURE(st);
        }
        break;
    }
    case 5: {
        /* the per-pair views: wrong kinds, shapes, capacities */
        const int64_t L = lwfm_model_layers(base);
        const int64_t P = h > 0 && w > 0 && h <= 64 && w <= 64 ? h * w : 1;
        const size_t cap = (size_t)(L * P) - (fuzz_u8(r) > 200 ? 1 : 0);
        float *a = calloc((size_t)(L * P) + 1, sizeof(float));
        float *b = calloc((size_t)(L * P) + 1, sizeof(float));
        float *ls = calloc((size_t)L + 1, sizeof(float));
        int64_t *as = calloc((size_t)(L * P) + 1, sizeof(int64_t));
        FUZZ_CHECK(a && b && ls && as);
        float g = 0;
        const int64_t d3[3] = {c, h, w}, one = claim(d3, 3);
        const int sz_ok = one > 0 && S.n >= one && Q.n >= one; /* the buffers hold one map each */
        int64_t pc = c, ph = h, pw = w;
        if (!sz_ok) pc = -1; /* refused before reading */
        lwfm_lwe *lwe = NULL;
        lwfm_spm *spm = NULL;
        lwfm_rcn *rcn = NULL;
        if ((st = lwfm_lwe_create(&lwe, model)) == LWFM_OK) {
            st = lwfm_lwe_pair(lwe, sp, qp, pc, ph, pw, a, b, cap, &g);
            if (st) FUZZ_CHECK_FAILURE(st);
            lwfm_lwe_destroy(lwe);
        } else {
            FUZZ_CHECK_FAILURE(st);
        }
        if ((st = lwfm_spm_create(&spm, model)) == LWFM_OK) {
            st = lwfm_spm_pair(spm, sp, qp, pc, ph, pw, as, a, ls, cap, &g);
            if (st) FUZZ_CHECK_FAILURE(st);
            lwfm_spm_destroy(spm);
        } else {
            FUZZ_CHECK_FAILURE(st);
        }
        if ((st = lwfm_rcn_create(&rcn, model)) == LWFM_OK) {
            st = lwfm_rcn_pair(rcn, sp, qp, pc, ph, pw, a, as, b, cap, &g);
            if (st) FUZZ_CHECK_FAILURE(st);
            lwfm_rcn_destroy(rcn);
        } else {
            FUZZ_CHECK_FAILURE(st);
        }
        free(a);
        free(b);
        free(ls);
        free(as);
        break;
    }
    case 6: {
        /* preprocessing of decoded pixels: formats, channels, strides */
        const int fmt = fuzz_u8(r) % 3; /* 2: unknown */
        const int64_t ch = (int64_t)(fuzz_u8(r) % 6) - (fuzz_u8(r) > 240 ? 3 : 0);
        const int64_t ih = 1 + fuzz_u8(r) % 64, iw = 1 + fuzz_u8(r) % 64;
        const uint8_t sm = fuzz_u8(r);
        const int64_t bps = fmt == 1 ? 2 : 1;
        const int64_t packed = iw * (ch > 0 ? ch : 1) * bps;
        const int64_t stride = sm < 128 ? 0 : sm < 192 ? packed + sm % 7 : sm < 240 ? packed - 1 : -1;
        const int64_t rows = stride > packed ? stride : packed;
        unsigned char *px = malloc((size_t)(rows * ih));
        FUZZ_CHECK(px);
        for (int64_t i = 0; i < rows * ih; i++) px[i] = fuzz_u8(r);
        outbuf p = make_out(r, 1, mc * mh * mw);
        st = lwfm_model_preprocess(model, nulls & 1 ? NULL : px, (lwfm_pixel_format)fmt,
                                   ih, iw, ch, stride, nulls & 8 ? NULL : p.p, p.capacity);
        check_out(st, &p, 0);
        free(px);
        free(p.p);
        break;
    }
    default: {
        /* the assignment solver */
        const int64_t n = pick_count(r, 12, 4096);
        const int64_t k = n > 0 && n <= 64 ? n * n : DUMMY;
        double *cost = malloc((size_t)k * sizeof(double));
        int64_t *as = malloc((size_t)(n > 0 && n <= 64 ? n : DUMMY) * sizeof(int64_t));
        FUZZ_CHECK(cost && as);
        uint64_t s2 = seed;
        for (int64_t i = 0; i < k; i++) cost[i] = (double)(fuzz_mix(&s2) % 1000) - 500.0;
        const uint8_t pz = fuzz_u8(r);
        if (pz > 0xc0) cost[fuzz_u32(r) % (uint32_t)k] = pz & 1 ? NAN : INFINITY;
        double total = 0;
        st = n > 64 && n <= 4096 ? LWFM_ERR_LIMIT /* in-limit but larger than the buffer */
                                 : lwfm_linear_assignment(nulls & 1 ? NULL : cost, n, as, &total);
        if (n > 64 && n <= 4096) {
        } else if (st) {
            FUZZ_CHECK_FAILURE(st);
        } else {
            FUZZ_CHECK(n >= 1 && n <= 64);
            for (int64_t i = 0; i < n; i++) FUZZ_CHECK(as[i] >= 0 && as[i] < n);
        }
        free(cost);
        free(as);
        break;
    }
    }
done:
    free(S.p);
    free(Q.p);
    free(labels);
    free(o.p);
    return 0;
}
