/* Model configuration: the "config/..." arrays of a weight file.
 *
 * One table, kKeys, is the schema: per key its type, its bounds and rules,
 * the methods (and backbones) that use it, its default per method (or per
 * backbone) or "required", and where it lives in lwfm__config. Reading and
 * validation (lwfm__config_read), a model's configuration as JSON
 * (lwfm__config_json) and the schema document that the Python bindings
 * check against (lwfm_config_schema_json, docs/weight-format.md section 4)
 * all walk it; the rules that tie two keys together are the short list
 * kRules. Add a key by adding a row (and its field in config.h). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "backbone/net.h"
#include "core/core.h"
#include "methods/method.h"

#define N_METHODS 4
#define N_BACKBONES 4

static const char *const kMethods[N_METHODS] = {"lwfm-spm", "dn4", "mml", "rcn"};
static const char *const kBackbones[N_BACKBONES] = {"resnet18", "conv64f", "resnet12", "conv4"};
static const char *const kDistances[] = {"wass", "kl", "w2"};
static const char *const kBatchNorm[] = {"running", "batch"};

/* Names, tensor prefixes and first convolutions come from the method and
 * backbone tables (lib/methods/table.c, lib/backbone/table.c). kMethods and
 * kBackbones above are the schema's enum values for config/method and
 * config/backbone: the same names in id order (to do: read them from the
 * tables, so that a registered method can be named in a weight file). */
const char *lwfm__method_name(lwfm_method m) {
    const lwfm__method *me = lwfm__method_get(m);
    return me ? me->name : "unknown";
}

const char *lwfm__backbone_name(lwfm__backbone_kind b) {
    const lwfm__backbone *bb = lwfm__backbone_get(b);
    return bb ? bb->name : "unknown";
}

const char *lwfm__distance_name(lwfm__mml_distance d) {
    return (unsigned)d < 3 ? kDistances[d] : "unknown";
}

const char *lwfm__backbone_prefix(const lwfm__config *cfg) {
    const lwfm__method *me = lwfm__method_get(cfg->method);
    return me ? me->weight_prefix : "";
}

/* ------------------------------------------------------------------------ */
/* The table                                                                */
/* ------------------------------------------------------------------------ */

typedef enum key_type {
    T_INT,    /* integer scalar, int field */
    T_BOOL,   /* 0 / 1 (a bool array accepted), int field; JSON true / false */
    T_FLOAT,  /* float scalar, double field */
    T_ENUM,   /* ASCII string, one of `names`; int field holds its index */
    T_INTS,   /* integer list: int array field, count in count_off */
    T_FLOATS  /* float list: double array field, count in count_off */
} key_type;

enum {
    F_REQUIRED = 1u << 0,      /* the file must hold it; no default */
    F_DERIVED = 1u << 1,       /* not a file key: shown in the JSON only */
    F_WRITE = 1u << 2,         /* writers (lwfm.weights) must store it where it is used */
    F_BY_BACKBONE = 1u << 3,   /* the defaults are per backbone, not per method */
    F_VERSION = 1u << 4,       /* out of range: LWFM_ERR_UNSUPPORTED, a format version */
    F_INCREASING = 1u << 5,    /* list entries strictly increasing */
    F_CALIBRATION = 1u << 6    /* shown only in a calibrated model (one such key not
                                * at its default) */
};

#define M(m) (1u << (m))
#define SPM M(LWFM_METHOD_LWFM_SPM)
#define DN4 M(LWFM_METHOD_DN4)
#define MML M(LWFM_METHOD_MML)
#define RCN M(LWFM_METHOD_RCN)
#define ALL (SPM | DN4 | MML | RCN)
#define ALL_BB 0xfu
#define RESNET18 M(LWFM_BACKBONE_RESNET18)

typedef struct cfg_default {
    int n; /* number of values; 0: none (a required or derived key) */
    double v[3];
} cfg_default;

typedef struct cfg_key {
    const char *name; /* the array is "config/<name>" */
    key_type type;
    unsigned flags;
    unsigned methods, backbones; /* where it is used (and shown in the JSON) */
    const char *when;            /* used only when this enum key ... */
    int when_value;              /* ... has this value */
    double min, max;             /* bounds of the value, or of every list entry */
    int max_len;                 /* lists: at most this many entries (at least 1) */
    unsigned lengths;            /* lists: bit n set: n entries allowed; 0: 1..max_len */
    const char *const *names;    /* enum values */
    int n_names;
    cfg_default def[4];          /* per method (or per backbone, F_BY_BACKBONE) */
    size_t off, count_off;       /* field in lwfm__config (and its count) */
} cfg_key;

#define D1(x) {1, {x, 0, 0}}
#define DALL(x) {D1(x), D1(x), D1(x), D1(x)}
#define NAMES(a) a, (int)(sizeof a / sizeof a[0])
#define AT(field) offsetof(lwfm__config, field)
#define MINI_MEAN {3, {125.3 / 255, 123.0 / 255, 113.9 / 255}}
#define MINI_STD {3, {63.0 / 255, 62.1 / 255, 66.7 / 255}}

/* In the order of the JSON. Defaults: spec section 4 (lwfm-spm), peers.md
 * (dn4: k = 3, mml: k = 1, rcn: 25 queries per batch). */
static const cfg_key kKeys[] = {
    {"format_version", T_INT, F_REQUIRED | F_VERSION, ALL, ALL_BB, NULL, 0, LWFM_FORMAT_VERSION,
     LWFM_FORMAT_VERSION, 0, 0, NULL, 0, {{0}}, AT(format_version), 0},
    {"method", T_ENUM, F_REQUIRED, ALL, ALL_BB, NULL, 0, 0, 0, 0, 0, NAMES(kMethods), {{0}},
     AT(method), 0},
    {"backbone", T_ENUM, F_REQUIRED, ALL, ALL_BB, NULL, 0, 0, 0, 0, 0, NAMES(kBackbones), {{0}},
     AT(backbone), 0},
    {"input_channels", T_INT, F_DERIVED, ALL, ALL_BB, NULL, 0, 1, 4, 0, 0, NULL, 0, {{0}},
     AT(input_channels), 0},
    {"first_padding", T_INT, F_WRITE, ALL, RESNET18, NULL, 0, 0, 16, 0, 0, NULL, 0, DALL(3),
     AT(first_padding), 0},
    /* block ids; which exist is the backbone's business (lib/backbone) */
    {"hyperpixel_ids", T_INTS, F_WRITE | F_BY_BACKBONE | F_INCREASING, ALL, ALL_BB, NULL, 0, 0, 64,
     LWFM_MAX_TAPS, 0, NULL, 0, {{2, {7, 8, 0}}, D1(3), D1(3), D1(3)}, AT(hyperpixel_ids),
     AT(n_taps)},
    {"feature_size", T_INT, F_WRITE, ALL, ALL_BB, NULL, 0, 0, 64, 0, 0, NULL, 0, DALL(3),
     AT(feature_size), 0},
    {"temperature", T_FLOAT, F_WRITE, SPM, ALL_BB, NULL, 0, 1e-6, 1e6, 0, 0, NULL, 0, DALL(0.2),
     AT(temperature), 0},
    {"temperature_attn", T_FLOAT, F_WRITE, SPM, ALL_BB, NULL, 0, 1e-6, 1e6, 0, 0, NULL, 0,
     DALL(5.0), AT(temperature_attn), 0},
    {"matcher_prob", T_FLOAT, F_WRITE, SPM, ALL_BB, NULL, 0, 0.0, 1e6, 0, 0, NULL, 0, DALL(0.25),
     AT(matcher_prob), 0},
    {"learnable_matcher", T_BOOL, F_WRITE, SPM, ALL_BB, NULL, 0, 0, 1, 0, 0, NULL, 0, DALL(1),
     AT(learnable_matcher), 0},
    {"top_k", T_INT, F_WRITE, SPM, ALL_BB, NULL, 0, 1, 4096, 0, 0, NULL, 0, DALL(1), AT(top_k),
     0},
    {"neighbor_k", T_INT, F_WRITE, DN4 | MML, ALL_BB, NULL, 0, 1, 4096, 0, 0, NULL, 0,
     {D1(3), D1(3), D1(1), D1(3)}, AT(neighbor_k), 0},
    {"distance", T_ENUM, 0, MML, ALL_BB, NULL, 0, 0, 0, 0, 0, NAMES(kDistances),
     DALL(LWFM_MML_WASS), AT(distance), 0},
    {"batch_norm", T_ENUM, 0, RCN, ALL_BB, NULL, 0, 0, 0, 0, 0, NAMES(kBatchNorm), DALL(0),
     AT(bn_batch), 0},
    {"query_batch", T_INT, 0, RCN, ALL_BB, "batch_norm", 1, 1, LWFM_RCN_QUERY_BATCH_MAX, 0, 0, NULL,
     0, DALL(LWFM_RCN_QUERY_BATCH), AT(query_batch), 0},
    {"calibration_temperature", T_FLOAT, F_CALIBRATION, ALL, ALL_BB, NULL, 0, 1e-6, 1e6, 0, 0,
     NULL, 0, DALL(1.0), AT(calibration_temperature), 0},
    {"unknown_threshold", T_FLOAT, F_CALIBRATION, ALL, ALL_BB, NULL, 0, 0.0, 1.0, 0, 0, NULL, 0,
     DALL(0.0), AT(unknown_threshold), 0},
    {"image_size", T_INT, F_WRITE, ALL, ALL_BB, NULL, 0, 8, 4096, 0, 0, NULL, 0, DALL(84),
     AT(image_size), 0},
    {"resize", T_INT, F_WRITE, ALL, ALL_BB, NULL, 0, 0, 8192, 0, 0, NULL, 0, DALL(92), AT(resize),
     0},
    /* inputs scaled to [0, 1] then normalise to finite values of moderate
     * size (a std of 1e-45 passed "positive" and made
     * lwfm_model_preprocess() return infinities); one entry, or one per
     * input channel (checked against the first convolution) */
    {"mean", T_FLOATS, F_WRITE, ALL, ALL_BB, NULL, 0, -1e6, 1e6, 3, (1u << 1) | (1u << 3), NULL, 0,
     {MINI_MEAN, MINI_MEAN, MINI_MEAN, MINI_MEAN}, AT(mean), AT(n_norm)},
    {"std", T_FLOATS, F_WRITE, ALL, ALL_BB, NULL, 0, 1e-6, 1e6, 3, (1u << 1) | (1u << 3), NULL, 0,
     {MINI_STD, MINI_STD, MINI_STD, MINI_STD}, AT(std), AT(n_std)},
};
#define N_KEYS (sizeof kKeys / sizeof kKeys[0])

/* Rules between keys, checked in this order after every key has been read. */
typedef enum rule_kind {
    R_VALUE_ONLY_FOR, /* `key` may have enum value `value` only for `methods` */
    R_SAME_LENGTH,    /* lists `key` and `other` have the same length; `other`, when
                       * absent, takes `key`'s length (the first entries of its default) */
    R_ZERO_OR_AT_LEAST, /* `key` is 0 or at least `other` */
    R_SQUARE_AT_MOST, /* key * key <= value */
    R_AT_LEAST,       /* key >= value */
    R_AT_MOST_SQUARE_OF /* key <= other * other */
} rule_kind;

/* A rule applies to the models of `methods` (R_VALUE_ONLY_FOR: to the
 * others), and only when key `if_positive` (if any) is > 0. */
typedef struct cfg_rule {
    rule_kind kind;
    const char *key, *other, *if_positive;
    unsigned methods;
    int value;
    lwfm_status status;
    const char *bound_name; /* R_SQUARE_AT_MOST: the limit's name */
    const char *why;
} cfg_rule;

static const cfg_rule kRules[] = {
    /* batch statistics are RCN's transductive protocol (peers.md 4.7) */
    {R_VALUE_ONLY_FOR, "batch_norm", NULL, NULL, RCN, 1, LWFM_ERR_UNSUPPORTED, NULL, NULL},
    {R_SAME_LENGTH, "mean", "std", NULL, ALL, 0, LWFM_ERR_FORMAT, NULL, NULL},
    {R_ZERO_OR_AT_LEAST, "resize", "image_size", NULL, ALL, 0, LWFM_ERR_FORMAT, NULL, NULL},
    /* the SPM matcher solves a P x P assignment per (support, query) pair and
     * layer, O(P^3): P = feature_size^2 is bounded (feature_size 64 gave
     * 4096 positions and minutes for a one-query episode) */
    {R_SQUARE_AT_MOST, "feature_size", NULL, "matcher_prob", SPM, LWFM_LIMIT_SPM_POSITIONS,
     LWFM_ERR_LIMIT, "LWFM_LIMIT_SPM_POSITIONS",
     "the SPM assignment costs O(positions^3) per pair and layer"},
    {R_AT_LEAST, "feature_size", NULL, NULL, SPM, 2, LWFM_ERR_FORMAT, NULL,
     "its attention normalises over the fs*fs positions"},
    /* SPM sums the top_k best matched pairs of the fs x fs positions (also
     * checked when the model is built, lib/model.c; here so that the schema
     * has it and writers refuse it) */
    {R_AT_MOST_SQUARE_OF, "top_k", "feature_size", "matcher_prob", SPM, 0, LWFM_ERR_FORMAT, NULL,
     NULL},
};
#define N_RULES (sizeof kRules / sizeof kRules[0])

_Static_assert(sizeof(lwfm_method) == sizeof(int) && sizeof(lwfm__backbone_kind) == sizeof(int) &&
                   sizeof(lwfm__mml_distance) == sizeof(int),
               "enum fields of lwfm__config are stored as int");
_Static_assert(N_KEYS <= 32, "lwfm__config_read keeps the keys present in a uint32_t");
_Static_assert(sizeof kMethods / sizeof kMethods[0] == N_METHODS && N_BACKBONES == N_METHODS,
               "cfg_key.def has one entry per method and per backbone");

/* ------------------------------------------------------------------------ */
/* Fields                                                                   */
/* ------------------------------------------------------------------------ */

static int get_i(const lwfm__config *c, size_t off) {
    int v;
    memcpy(&v, (const char *)c + off, sizeof v);
    return v;
}

static void set_i(lwfm__config *c, size_t off, int v) { memcpy((char *)c + off, &v, sizeof v); }

static double get_f(const lwfm__config *c, size_t off) {
    double v;
    memcpy(&v, (const char *)c + off, sizeof v);
    return v;
}

static void set_f(lwfm__config *c, size_t off, double v) { memcpy((char *)c + off, &v, sizeof v); }

static const cfg_key *find_key(const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(kKeys[i].name, name) == 0) return &kKeys[i];
    return NULL;
}

static const cfg_default *key_default(const lwfm__config *c, const cfg_key *k) {
    unsigned i = (k->flags & F_BY_BACKBONE) ? (unsigned)c->backbone : (unsigned)c->method;
    return i < 4 ? &k->def[i] : &k->def[0];
}

static void set_default(lwfm__config *c, const cfg_key *k) {
    const cfg_default *d = key_default(c, k);
    if (d->n == 0) return;
    switch (k->type) {
    case T_INT:
    case T_BOOL:
    case T_ENUM:
        set_i(c, k->off, (int)d->v[0]);
        break;
    case T_FLOAT:
        set_f(c, k->off, d->v[0]);
        break;
    case T_INTS:
        for (int i = 0; i < d->n; i++) set_i(c, k->off + (size_t)i * sizeof(int), (int)d->v[i]);
        set_i(c, k->count_off, d->n);
        break;
    case T_FLOATS:
        for (int i = 0; i < d->n; i++) set_f(c, k->off + (size_t)i * sizeof(double), d->v[i]);
        set_i(c, k->count_off, d->n);
        break;
    }
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */
/* ------------------------------------------------------------------------ */

/* Bool arrays are integers to the archive; only T_BOOL keys take one
 * (docs/weight-format.md): a bool `format_version` (True == 1) is refused. */
static lwfm_status no_bool(const lwfm__archive *ar, const char *key) {
    const lwfm__tensor *t = lwfm__archive_find(ar, key);
    if (t && t->descr[1] == 'b')
        return lwfm__error(LWFM_ERR_FORMAT, "config value '%s' is a bool; it must be an integer",
                           key);
    return LWFM_OK;
}

static lwfm_status read_int(lwfm__config *c, const cfg_key *k, const lwfm__archive *ar,
                            const char *key) {
    lwfm_status st;
    if (k->type != T_BOOL && (st = no_bool(ar, key))) return st;
    int64_t x;
    if ((st = lwfm__archive_get_int(ar, key, &x))) return st;
    const int lo = (int)k->min, hi = (int)k->max;
    if (x < lo || x > hi) {
        if (k->flags & F_VERSION)
            return lwfm__error(LWFM_ERR_UNSUPPORTED,
                               "weight-file format version %lld; this library reads version %d",
                               (long long)x, hi);
        return lwfm__error(LWFM_ERR_FORMAT, "config value '%s' = %lld is outside [%d, %d]", key,
                           (long long)x, lo, hi);
    }
    set_i(c, k->off, (int)x);
    return LWFM_OK;
}

static lwfm_status read_float(lwfm__config *c, const cfg_key *k, const lwfm__archive *ar,
                              const char *key) {
    double x, lo = k->min, hi = k->max;
    lwfm_status st = lwfm__archive_get_float(ar, key, &x);
    if (st) return st;
    /* a float32 or float16 value is compared with the bounds rounded to
     * float32: float32(1e-6) is 9.99999997e-07, and refusing it as "outside
     * [1e-06, ...]" would contradict the message */
    const lwfm__tensor *t = lwfm__archive_find(ar, key);
    if (t->f32 && t->descr[2] != '8') {
        lo = (double)(float)lo;
        hi = (double)(float)hi;
    }
    if (!(x >= lo && x <= hi))
        return lwfm__error(LWFM_ERR_FORMAT, "config value '%s' = %.9g is outside [%g, %g]", key,
                           x, k->min, k->max);
    set_f(c, k->off, x);
    return LWFM_OK;
}

static lwfm_status read_enum(lwfm__config *c, const cfg_key *k, const lwfm__archive *ar,
                             const char *key) {
    char s[64];
    lwfm_status st = lwfm__archive_get_string(ar, key, s, sizeof s);
    if (st) return st;
    for (int i = 0; i < k->n_names; i++)
        if (strcmp(s, k->names[i]) == 0) {
            set_i(c, k->off, i);
            return LWFM_OK;
        }
    return lwfm__error(LWFM_ERR_UNSUPPORTED, "config '%s' = '%s' is not supported", key, s);
}

static lwfm_status read_ints(lwfm__config *c, const cfg_key *k, const lwfm__archive *ar,
                             const char *key) {
    int64_t vals[LWFM_MAX_TAPS];
    size_t n;
    lwfm_status st;
    if ((st = no_bool(ar, key))) return st;
    /* at most max_len entries, and never more than the field holds */
    const size_t cap = k->max_len < LWFM_MAX_TAPS ? (size_t)k->max_len : LWFM_MAX_TAPS;
    if ((st = lwfm__archive_get_int_array(ar, key, vals, cap, &n))) return st;
    if (n == 0) return lwfm__error(LWFM_ERR_FORMAT, "config '%s' is empty", key);
    for (size_t i = 0; i < n; i++) {
        if (vals[i] < (int64_t)k->min || vals[i] > (int64_t)k->max ||
            ((k->flags & F_INCREASING) && i > 0 && vals[i] <= vals[i - 1]))
            return lwfm__error(LWFM_ERR_FORMAT,
                               "config '%s' must be strictly increasing block ids", key);
        set_i(c, k->off + i * sizeof(int), (int)vals[i]);
    }
    set_i(c, k->count_off, (int)n);
    return LWFM_OK;
}

static lwfm_status read_floats(lwfm__config *c, const cfg_key *k, const lwfm__archive *ar,
                               const char *key) {
    const lwfm__tensor *t = lwfm__archive_find(ar, key);
    /* the fields (mean, std) hold 3 values; max_len is at most that */
    if (!t->f32 || t->ndim > 1 || t->numel > (size_t)k->max_len || t->numel > 3 ||
        !(k->lengths & (1u << t->numel)))
        return lwfm__error(LWFM_ERR_FORMAT, "config value '%s' must be 1 or 3 floats", key);
    /* the values are float32: compared with the bounds rounded to float32 */
    const double lo = (double)(float)k->min, hi = (double)(float)k->max;
    for (size_t i = 0; i < t->numel; i++) {
        const double v = t->f32[i];
        if (!(v >= lo && v <= hi))
            return lwfm__error(LWFM_ERR_FORMAT,
                               "config value '%s' has an invalid entry %.9g (must be in [%g, %g])",
                               key, v, k->min, k->max);
        set_f(c, k->off + i * sizeof(double), v);
    }
    set_i(c, k->count_off, (int)t->numel);
    return LWFM_OK;
}

static int key_present(const cfg_key *k, const lwfm__archive *ar) {
    char key[64];
    snprintf(key, sizeof key, "config/%s", k->name);
    return !(k->flags & F_DERIVED) && lwfm__archive_find(ar, key) != NULL;
}

/* One key: absent keeps the default (a required key's absence is the
 * archive's "missing tensor" error); present but malformed is an error. */
static lwfm_status read_key(lwfm__config *c, const cfg_key *k, const lwfm__archive *ar) {
    char key[64];
    snprintf(key, sizeof key, "config/%s", k->name);
    if (k->flags & F_DERIVED) return LWFM_OK;
    if (!(k->flags & F_REQUIRED) && !lwfm__archive_find(ar, key)) return LWFM_OK;
    switch (k->type) {
    case T_INT:
    case T_BOOL:
        return read_int(c, k, ar, key);
    case T_FLOAT:
        return read_float(c, k, ar, key);
    case T_ENUM:
        return read_enum(c, k, ar, key);
    case T_INTS:
        return read_ints(c, k, ar, key);
    case T_FLOATS:
        return read_floats(c, k, ar, key);
    }
    return lwfm__error(LWFM_ERR_INTERNAL, "config key '%s' has no type", k->name);
}

/* An int-valued key (T_INT, T_BOOL, T_ENUM; a list's length) or a float. */
static double key_number(const lwfm__config *c, const cfg_key *k) {
    switch (k->type) {
    case T_FLOAT:
        return get_f(c, k->off);
    case T_INTS:
    case T_FLOATS:
        return get_i(c, k->count_off);
    default:
        return get_i(c, k->off);
    }
}

/* R_VALUE_ONLY_FOR: the value is refused for the methods the rule does not name. */
static lwfm_status check_value_only_for(const lwfm__config *c, const cfg_rule *r,
                                        const cfg_key *k) {
    if ((r->methods & M(c->method)) || get_i(c, k->off) != r->value) return LWFM_OK;
    char who[64] = "";
    for (int m = 0; m < N_METHODS; m++)
        if (r->methods & M(m))
            snprintf(who + strlen(who), sizeof who - strlen(who), "%s%s", who[0] ? "/" : "",
                     kMethods[m]);
    return lwfm__error(r->status,
                       "config 'config/%s' = '%s' is for %s models only (this model is %s)",
                       k->name, k->names[r->value], who, lwfm__method_name(c->method));
}

static lwfm_status check_rule(lwfm__config *c, const cfg_rule *r, uint32_t present) {
    const cfg_key *k = find_key(r->key), *o = r->other ? find_key(r->other) : NULL;
    if (!k || (r->other && !o))
        return lwfm__error(LWFM_ERR_INTERNAL, "config rule on unknown key '%s'", r->key);
    const cfg_key *p = r->if_positive ? find_key(r->if_positive) : NULL;
    if (r->if_positive && !p)
        return lwfm__error(LWFM_ERR_INTERNAL, "config rule on unknown key '%s'", r->if_positive);
    if (r->kind == R_VALUE_ONLY_FOR) return check_value_only_for(c, r, k);
    if (!(r->methods & M(c->method)) || (p && !(key_number(c, p) > 0))) return LWFM_OK;
    const int v = (int)key_number(c, k);
    switch (r->kind) {
    case R_VALUE_ONLY_FOR:
        break;
    case R_SAME_LENGTH:
        if (!(present & (1u << (o - kKeys)))) set_i(c, o->count_off, v);
        if (v == (int)key_number(c, o)) return LWFM_OK;
        return lwfm__error(r->status, "config 'config/%s' and 'config/%s' differ in length",
                           k->name, o->name);
    case R_ZERO_OR_AT_LEAST:
        if (v == 0 || v >= (int)key_number(c, o)) return LWFM_OK;
        return lwfm__error(r->status, "config 'config/%s' (%d) is smaller than 'config/%s' (%d)",
                           k->name, v, o->name, (int)key_number(c, o));
    case R_SQUARE_AT_MOST:
        if (v * v <= r->value) return LWFM_OK;
        return lwfm__error(r->status,
                           "config 'config/%s' = %d gives %d matched positions, more than %s = %d "
                           "(%s)",
                           k->name, v, v * v, r->bound_name, r->value, r->why);
    case R_AT_LEAST:
        if (v >= r->value) return LWFM_OK;
        return lwfm__error(r->status, "%s needs config 'config/%s' >= %d (%s)",
                           lwfm__method_name(c->method), k->name, r->value, r->why);
    case R_AT_MOST_SQUARE_OF: {
        const int w = (int)key_number(c, o);
        if (v <= w * w) return LWFM_OK;
        return lwfm__error(r->status,
                           "config %s = %d exceeds the %d positions of a %dx%d feature map",
                           k->name, v, w * w, w, w);
    }
    }
    return LWFM_OK;
}

/* present: bit i set when the file holds kKeys[i] */
static lwfm_status check_rules(lwfm__config *c, uint32_t present) {
    lwfm_status st;
    for (size_t i = 0; i < N_RULES; i++)
        if ((st = check_rule(c, &kRules[i], present))) return st;
    return LWFM_OK;
}

lwfm_status lwfm__config_read(lwfm__config *out, const lwfm__archive *ar) {
    lwfm_status st;
    lwfm__config c;
    memset(&c, 0, sizeof c);
    /* format_version, method and backbone first: the defaults depend on them */
    for (size_t i = 0; i < N_KEYS; i++)
        if ((kKeys[i].flags & F_REQUIRED) && (st = read_key(&c, &kKeys[i], ar))) return st;
    for (size_t i = 0; i < N_KEYS; i++) set_default(&c, &kKeys[i]);
    uint32_t present = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!(kKeys[i].flags & F_REQUIRED) && (st = read_key(&c, &kKeys[i], ar))) return st;
        if (key_present(&kKeys[i], ar)) present |= 1u << i;
    }
    if ((st = check_rules(&c, present))) return st;

    /* Input channels come from the first convolution's weight. */
    char key[160];
    snprintf(key, sizeof key, "%s%s", lwfm__backbone_prefix(&c),
             lwfm__backbone_get(c.backbone)->first_weight);
    const lwfm__tensor *first = lwfm__archive_find(ar, key);
    if (!first) return lwfm__error(LWFM_ERR_MISSING_KEY, "missing tensor '%s'", key);
    if (first->ndim != 4 || first->shape[1] < 1 || first->shape[1] > 4)
        return lwfm__error(LWFM_ERR_SHAPE, "tensor '%s' must be (out, 1..4, kh, kw)", key);
    c.input_channels = (int)first->shape[1];
    if (c.n_norm != 1 && c.n_norm != c.input_channels)
        return lwfm__error(LWFM_ERR_FORMAT,
                           "config 'config/mean' has %d entries for a %d-channel "
                           "model",
                           c.n_norm, c.input_channels);
    *out = c;
    return LWFM_OK;
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                     */
/* ------------------------------------------------------------------------ */

/* Append formatted text; tracks the full length even past cap. */
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...) LWFM_PRINTF(4, 5);
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *dst = *len < cap ? buf + *len : NULL;
    int n = vsnprintf(dst, dst ? cap - *len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n;
}

/* The shortest decimal that reads back as the same float32 (the values are
 * float32 quantities): 0.2, not 0.200000003. Non-finite values as %g. */
static const char *f32(char out[32], double v) {
    const float want = (float)v;
    for (int p = 1; p <= 9 && isfinite(want); p++) {
        snprintf(out, 32, "%.*g", p, (double)want);
        if (strtof(out, NULL) == want) return out;
    }
    snprintf(out, 32, "%.9g", (double)want);
    return out;
}

/* The shortest decimal that reads back as the same double (the schema's
 * bounds and defaults, e.g. 1e-06, 0.49137254901960786). */
static const char *f64(char out[32], double v) {
    for (int p = 1; p <= 17; p++) {
        snprintf(out, 32, "%.*g", p, v);
        if (strtod(out, NULL) == v) return out;
    }
    return out;
}

/* A calibrated model: one of the calibration keys is not at its default. */
static int calibrated(const lwfm__config *c) {
    for (size_t i = 0; i < N_KEYS; i++)
        if ((kKeys[i].flags & F_CALIBRATION) &&
            get_f(c, kKeys[i].off) != key_default(c, &kKeys[i])->v[0])
            return 1;
    return 0;
}

/* Whether the model uses the key (and so its JSON shows it). */
static int shown(const lwfm__config *c, const cfg_key *k) {
    if (!(k->methods & M(c->method)) || !(k->backbones & M(c->backbone))) return 0;
    if (k->when) {
        const cfg_key *w = find_key(k->when);
        if (!w || get_i(c, w->off) != k->when_value) return 0;
    }
    return !(k->flags & F_CALIBRATION) || calibrated(c);
}

static void put_value(char *buf, size_t cap, size_t *len, const lwfm__config *c,
                      const cfg_key *k) {
    char t[32];
    const int v = k->type == T_FLOAT ? 0 : get_i(c, k->type >= T_INTS ? k->count_off : k->off);
    switch (k->type) {
    case T_INT:
        put(buf, cap, len, "%d", v);
        break;
    case T_BOOL:
        put(buf, cap, len, "%s", v ? "true" : "false");
        break;
    case T_FLOAT:
        put(buf, cap, len, "%s", f32(t, get_f(c, k->off)));
        break;
    case T_ENUM:
        put(buf, cap, len, "\"%s\"", v >= 0 && v < k->n_names ? k->names[v] : "unknown");
        break;
    case T_INTS:
    case T_FLOATS:
        put(buf, cap, len, "[");
        for (int i = 0; i < v; i++) {
            if (k->type == T_INTS)
                put(buf, cap, len, "%s%d", i ? ", " : "", get_i(c, k->off + (size_t)i * sizeof(int)));
            else
                put(buf, cap, len, "%s%s", i ? ", " : "",
                    f32(t, get_f(c, k->off + (size_t)i * sizeof(double))));
        }
        put(buf, cap, len, "]");
        break;
    }
}

size_t lwfm__config_json(const lwfm__config *c, char *buf, size_t cap) {
    size_t len = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!shown(c, &kKeys[i])) continue;
        put(buf, cap, &len, "%s\"%s\": ", len ? ", " : "{", kKeys[i].name);
        put_value(buf, cap, &len, c, &kKeys[i]);
    }
    put(buf, cap, &len, "}");
    if (cap > 0 && len >= cap) buf[cap - 1] = '\0';
    return len;
}

/* ------------------------------------------------------------------------ */
/* The schema as JSON (lwfm_config_schema_json)                             */
/* ------------------------------------------------------------------------ */

static const char *const kTypeNames[] = {"int", "bool", "float", "string", "int_list",
                                         "float_list"};

/* ["a", "b"]: the names whose bit is set in mask. */
static void put_names(char *buf, size_t cap, size_t *len, const char *field,
                      const char *const *names, int n, unsigned mask) {
    put(buf, cap, len, ", \"%s\": [", field);
    for (int i = 0, first = 1; i < n; i++)
        if (mask & (1u << i)) {
            put(buf, cap, len, "%s\"%s\"", first ? "" : ", ", names[i]);
            first = 0;
        }
    put(buf, cap, len, "]");
}

static void put_default(char *buf, size_t cap, size_t *len, const cfg_key *k,
                        const cfg_default *d) {
    char t[32];
    if (k->type == T_INTS || k->type == T_FLOATS) put(buf, cap, len, "[");
    for (int i = 0; i < d->n; i++) {
        const char *sep = i ? ", " : "";
        if (k->type == T_FLOAT || k->type == T_FLOATS)
            put(buf, cap, len, "%s%s", sep, f64(t, d->v[i]));
        else if (k->type == T_BOOL)
            put(buf, cap, len, "%s", d->v[i] ? "true" : "false");
        else if (k->type == T_ENUM)
            put(buf, cap, len, "\"%s\"", k->names[(int)d->v[i]]);
        else
            put(buf, cap, len, "%s%d", sep, (int)d->v[i]);
    }
    if (k->type == T_INTS || k->type == T_FLOATS) put(buf, cap, len, "]");
}

static void put_bounds(char *buf, size_t cap, size_t *len, const cfg_key *k) {
    char t1[32], t2[32];
    if (k->type == T_ENUM) {
        put_names(buf, cap, len, "values", k->names, k->n_names, (1u << k->n_names) - 1);
        return;
    }
    if (k->type == T_FLOAT || k->type == T_FLOATS)
        put(buf, cap, len, ", \"min\": %s, \"max\": %s", f64(t1, k->min), f64(t2, k->max));
    else
        put(buf, cap, len, ", \"min\": %d, \"max\": %d", (int)k->min, (int)k->max);
    if (k->type != T_INTS && k->type != T_FLOATS) return;
    put(buf, cap, len, ", \"min_length\": 1, \"max_length\": %d", k->max_len);
    if (k->lengths) {
        put(buf, cap, len, ", \"lengths\": [");
        for (int n = 0, first = 1; n <= k->max_len; n++)
            if (k->lengths & (1u << n)) {
                put(buf, cap, len, "%s%d", first ? "" : ", ", n);
                first = 0;
            }
        put(buf, cap, len, "]");
    }
    if (k->type == T_INTS)
        put(buf, cap, len, ", \"increasing\": %s", k->flags & F_INCREASING ? "true" : "false");
}

static void put_key(char *buf, size_t cap, size_t *len, const cfg_key *k) {
    put(buf, cap, len, "{\"name\": \"%s\", \"type\": \"%s\"", k->name, kTypeNames[k->type]);
    put(buf, cap, len, ", \"stored\": %s, \"required\": %s, \"write\": %s",
        k->flags & F_DERIVED ? "false" : "true", k->flags & F_REQUIRED ? "true" : "false",
        k->flags & (F_WRITE | F_REQUIRED) ? "true" : "false");
    put_bounds(buf, cap, len, k);
    put_names(buf, cap, len, "methods", kMethods, N_METHODS, k->methods);
    put_names(buf, cap, len, "backbones", kBackbones, N_BACKBONES, k->backbones);
    if (k->when) {
        const cfg_key *w = find_key(k->when);
        put(buf, cap, len, ", \"when\": {\"%s\": \"%s\"}", k->when,
            w ? w->names[k->when_value] : "?");
    }
    if (k->flags & F_CALIBRATION) put(buf, cap, len, ", \"calibration\": true");
    const int by_backbone = (k->flags & F_BY_BACKBONE) != 0;
    put(buf, cap, len, ", \"default_by\": \"%s\", \"default\": ",
        by_backbone ? "backbone" : "method");
    if (k->def[0].n == 0) {
        put(buf, cap, len, "null}");
        return;
    }
    const char *const *over = by_backbone ? kBackbones : kMethods;
    for (int i = 0; i < 4; i++) {
        put(buf, cap, len, "%s\"%s\": ", i ? ", " : "{", over[i]);
        put_default(buf, cap, len, k, &k->def[i]);
    }
    put(buf, cap, len, "}}");
}

static const char *const kRuleNames[] = {"value_only_for", "same_length", "zero_or_at_least",
                                         "square_at_most", "at_least", "at_most_square_of"};

static void put_rule(char *buf, size_t cap, size_t *len, const cfg_rule *r) {
    put(buf, cap, len, "{\"rule\": \"%s\", \"key\": \"%s\"", kRuleNames[r->kind], r->key);
    if (r->other) put(buf, cap, len, ", \"other\": \"%s\"", r->other);
    if (r->if_positive) put(buf, cap, len, ", \"if_positive\": \"%s\"", r->if_positive);
    if (r->kind == R_VALUE_ONLY_FOR) {
        const cfg_key *k = find_key(r->key);
        put(buf, cap, len, ", \"value\": \"%s\"", k ? k->names[r->value] : "?");
    } else if (r->kind == R_SQUARE_AT_MOST) {
        put(buf, cap, len, ", \"max\": %d", r->value);
    } else if (r->kind == R_AT_LEAST) {
        put(buf, cap, len, ", \"min\": %d", r->value);
    }
    put_names(buf, cap, len, "methods", kMethods, N_METHODS, r->methods);
    put(buf, cap, len, ", \"status\": %d", (int)r->status);
    if (r->why) put(buf, cap, len, ", \"why\": \"%s\"", r->why);
    put(buf, cap, len, "}");
}

static size_t schema_json(char *buf, size_t cap) {
    size_t len = 0;
    put(buf, cap, &len, "{\"format_version\": %d", LWFM_FORMAT_VERSION);
    put_names(buf, cap, &len, "methods", kMethods, N_METHODS, ALL);
    put_names(buf, cap, &len, "backbones", kBackbones, N_BACKBONES, ALL_BB);
    put(buf, cap, &len, ", \"keys\": [");
    for (size_t i = 0; i < N_KEYS; i++) {
        put(buf, cap, &len, "%s", i ? ",\n  " : "\n  ");
        put_key(buf, cap, &len, &kKeys[i]);
    }
    put(buf, cap, &len, "],\n \"rules\": [");
    for (size_t i = 0; i < N_RULES; i++) {
        put(buf, cap, &len, "%s", i ? ",\n  " : "\n  ");
        put_rule(buf, cap, &len, &kRules[i]);
    }
    put(buf, cap, &len, "]}\n");
    return len;
}

static char g_schema[16384];
static const char *g_schema_out;
static pthread_once_t g_schema_once = PTHREAD_ONCE_INIT;

static void build_schema(void) {
    /* the document is static: it fits, or the call returns NULL (and the
     * tests fail) */
    if (schema_json(g_schema, sizeof g_schema) < sizeof g_schema) g_schema_out = g_schema;
}

LWFM_API const char *lwfm_config_schema_json(void) {
    pthread_once(&g_schema_once, build_schema);
    return g_schema_out;
}
