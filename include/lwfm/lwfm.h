/*
 * libLWFM: few-shot image classification with the LWFM-SPM metric
 * (Layer-Wise Feature Metric of Semantic-Pixel Matching) and its peers.
 *
 * This is the only public header. It is C99 and C++ clean.
 *
 * ---------------------------------------------------------------------------
 * THREAD SAFETY
 * ---------------------------------------------------------------------------
 *  - A loaded lwfm_model is immutable: any number of threads may use the same
 *    model at once through the calls documented as "thread-safe".
 *  - An lwfm_backbone handle is an execution context (cached primitives and
 *    scratch buffers for the input shapes it has seen). It is NOT thread-safe:
 *    use one per thread. Creating one is cheap; it shares the model's weights.
 *  - lwfm_model_destroy() and lwfm_backbone_destroy() must not race with calls
 *    that use the same handle. Handles keep their model alive (reference
 *    counting), so a model may be destroyed before the handles made from it.
 *  - Error details are kept per thread (lwfm_last_error()).
 *  - The log callback is process-global; set it before other threads use the
 *    library.
 *  - Parallel work inside a call uses OpenMP (GNU libgomp, the runtime oneDNN
 *    uses). Control the thread count with OMP_NUM_THREADS or omp_set_num_threads.
 *  - fork(): a child process may go on using the models and handles it
 *    inherited (Python's multiprocessing with the fork start method does).
 *    GNU libgomp cannot run the parent's thread pool in a child, so in a child
 *    forked by a thread that had used libLWFM, that thread's OpenMP thread
 *    count is set to 1 (a pthread_atfork handler): its calls compute,
 *    single-threaded, with the same results. Threads the child creates later
 *    use OpenMP's defaults. Fork while no other thread is inside a libLWFM
 *    call (as with any library that holds locks).
 *  - Every handle is destroyed exactly once: a second lwfm_*_destroy() of the
 *    same pointer is undefined behaviour (a double free), as for free().
 *
 * ---------------------------------------------------------------------------
 * CONVENTIONS
 * ---------------------------------------------------------------------------
 *  - Every fallible call returns lwfm_status (LWFM_OK == 0). Out-parameters
 *    come first and are left untouched when a call fails; output buffers are
 *    not written unless the call succeeds.
 *  - Tensors are dense float32, row-major. Images are NCHW
 *    (image, channel, row, column), already normalised as the model's
 *    configuration says (see lwfm_model_config_json()). Features are
 *    (image, channel, row, column) as well.
 *  - Sizes are int64_t element counts; capacities are counted in elements
 *    (not bytes) of the buffer the caller owns.
 *  - An output buffer may overlap the call's input buffers (compute features
 *    in place, probabilities over their logits): every call reads all of its
 *    inputs before it writes any output. Outputs must not overlap each other.
 *  - The library never prints, never aborts and never exits on bad input.
 */
#ifndef LWFM_LWFM_H
#define LWFM_LWFM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @name Version
 *  The soname is liblwfm.so.LWFM_ABI_VERSION; it changes on every ABI break.
 *  @{ */
#define LWFM_VERSION_MAJOR 0
#define LWFM_VERSION_MINOR 1
#define LWFM_VERSION_PATCH 0
#define LWFM_VERSION_STRING "0.1.0"
#define LWFM_ABI_VERSION 0
/** @} */

#if defined(_WIN32) && defined(LWFM_BUILDING)
#define LWFM_API __declspec(dllexport)
#elif defined(__GNUC__) && defined(LWFM_BUILDING)
#define LWFM_API __attribute__((visibility("default")))
#else
#define LWFM_API
#endif

/** Status codes. Values are pinned: they are part of the ABI. */
typedef enum lwfm_status {
    LWFM_OK = 0,
    LWFM_ERR_INVALID_ARGUMENT = 1, /**< NULL pointer, zero/negative count, value out of range */
    LWFM_ERR_OUT_OF_MEMORY = 2,    /**< an allocation failed */
    LWFM_ERR_IO = 3,               /**< a file could not be opened or read */
    LWFM_ERR_FORMAT = 4,           /**< malformed weight file (zip, npy header, truncated member) */
    LWFM_ERR_MISSING_KEY = 5,      /**< the weight file lacks a tensor the model needs */
    LWFM_ERR_SHAPE = 6,            /**< a tensor or argument has the wrong shape */
    LWFM_ERR_DTYPE = 7,            /**< a weight-file array has an unsupported dtype */
    LWFM_ERR_LIMIT = 8,            /**< a resource limit was exceeded (sizes, counts) */
    LWFM_ERR_UNSUPPORTED = 9,      /**< well-formed but not supported (unknown method, backbone) */
    LWFM_ERR_WRONG_KIND = 10,      /**< the call does not apply to this model's method */
    LWFM_ERR_NONFINITE = 11,       /**< NaN or infinity in an input tensor */
    LWFM_ERR_BUFFER_TOO_SMALL = 12,/**< an output buffer is smaller than needed */
    LWFM_ERR_BACKEND = 13,         /**< oneDNN reported a failure */
    LWFM_ERR_INTERNAL = 14         /**< a bug in libLWFM; please report it */
} lwfm_status;

/** @name Resource limits
 *  Inputs over these limits are refused with LWFM_ERR_LIMIT before any
 *  buffer is read or any large allocation is made; the message names the
 *  limit and the value, e.g. "way = 20000 exceeds LWFM_LIMIT_WAY = 16384".
 *  They are part of the API (docs/api.md, "Resource limits"): raising one is
 *  a compatible change, lowering one is not. An allocation that fails within
 *  them gives LWFM_ERR_OUT_OF_MEMORY.
 *  @{ */
#define LWFM_LIMIT_WAY 16384                /**< classes of an episode (and at least 2) */
#define LWFM_LIMIT_SHOT 4096                /**< support images of one class */
#define LWFM_LIMIT_IMAGES 65536             /**< images or feature maps per call (support, query, batch) */
#define LWFM_LIMIT_IMAGE_SIDE 16384         /**< height and width of an input image, pixels */
#define LWFM_LIMIT_POSITIONS 4096           /**< fh * fw of a feature map scored in an episode */
#define LWFM_LIMIT_SPM_POSITIONS 256        /**< feature_size^2 of an LWFM-SPM model with SPM on (matcher_prob > 0), checked at load: the matcher's assignment costs O(positions^3) per pair and layer */
#define LWFM_LIMIT_NPZ_MEMBERS 4096         /**< members of a weight file */
#define LWFM_LIMIT_NPZ_NAME 512             /**< bytes of a member name */
#define LWFM_LIMIT_NPZ_BYTES (1ull << 30)   /**< decompressed bytes of one member, and by default of the whole file (lwfm_load_options_set_max_total_bytes()) */
#define LWFM_LIMIT_NPY_ELEMENTS (1ull << 28) /**< elements of one array in a weight file */
#define LWFM_LIMIT_NPY_NDIM 8               /**< dimensions of one array in a weight file */
#define LWFM_LIMIT_CLASS_NAME 4096          /**< bytes of one class name of a support set (lwfm_support_set_class_names()) */
/** @} */

/** Method a weight file implements. Values are pinned. */
typedef enum lwfm_method {
    LWFM_METHOD_LWFM_SPM = 0,
    LWFM_METHOD_DN4 = 1,
    LWFM_METHOD_MML = 2,
    LWFM_METHOD_RCN = 3
} lwfm_method;

/** Arithmetic precision of the backbone, chosen at load time. */
typedef enum lwfm_precision {
    LWFM_PRECISION_FP32 = 0,
    LWFM_PRECISION_BF16 = 1,
    /** int8 convolutions (u8/s8 inputs, s8 weights per output channel, f32
     *  outputs): needs the calibrated input ranges of a weight file's
     *  `quant/` members (docs/weight-format.md, `python3 -m lwfm.quantize`) */
    LWFM_PRECISION_INT8 = 2
} lwfm_precision;

/** How an fp32 backbone runs its 3x3 stride-1 convolutions, chosen at load
 *  time (lwfm_load_options_set_convolutions()). Results agree to float32
 *  rounding (docs/internals.md, "Winograd"); each choice is deterministic. */
typedef enum lwfm_convolutions {
    /** Winograd F(m x m, 3 x 3) where it was measured faster: CPUs with AVX2
     *  and FMA but no AVX-512; oneDNN's direct convolution elsewhere */
    LWFM_CONVOLUTIONS_AUTO = 0,
    /** oneDNN's direct convolution everywhere: the least memory (ResNet-18
     *  holds about 45 MB of weights instead of 113 MB) and the fastest load,
     *  at a lower speed on AVX2 CPUs */
    LWFM_CONVOLUTIONS_DIRECT = 1,
    /** Winograd on every CPU with AVX2 and FMA, AVX-512 ones included (not
     *  measured against oneDNN's AVX-512 kernels); direct on the others */
    LWFM_CONVOLUTIONS_WINOGRAD = 2
} lwfm_convolutions;

/** Log levels for the log callback. */
typedef enum lwfm_log_level {
    LWFM_LOG_DEBUG = 0,
    LWFM_LOG_INFO = 1,
    LWFM_LOG_WARN = 2,
    LWFM_LOG_ERROR = 3
} lwfm_log_level;

/** Opaque handles. */
typedef struct lwfm_model lwfm_model;               /**< immutable loaded model */
typedef struct lwfm_backbone lwfm_backbone;         /**< per-thread feature extractor */
typedef struct lwfm_load_options lwfm_load_options; /**< options for lwfm_model_load() */
typedef struct lwfm_support lwfm_support;           /**< prepared support set */
typedef struct lwfm_lwe lwfm_lwe;                   /**< LWE fuser of a model (per-pair view) */
typedef struct lwfm_spm lwfm_spm;                   /**< SPM matcher of a model (per-pair view) */
typedef struct lwfm_rcn lwfm_rcn;                   /**< RCN region comparison (per-pair view) */

/* ------------------------------------------------------------------------- */
/** @name Library information and errors
 *  @{ */

/** Version string of the library at run time, e.g. "0.1.0". Static storage. */
LWFM_API const char *lwfm_version(void);

/** Packed run-time version: major * 10000 + minor * 100 + patch. */
LWFM_API int lwfm_version_number(void);

/** Short, static English description of a status code ("invalid argument").
 *  Unknown codes give "unknown status". Never NULL. Thread-safe. */
LWFM_API const char *lwfm_status_string(lwfm_status status);

/** Detail message of the most recent failed call made by the calling thread,
 *  for example "weights.npz: member 'feature_extractor.layer1.0.conv1.weight':
 *  expected shape (64, 64, 3, 3), got (64, 64, 1, 1)". Empty string when the
 *  last call succeeded. The pointer stays valid until the next libLWFM call on
 *  the same thread. Never NULL. */
LWFM_API const char *lwfm_last_error(void);

/** Log callback. `message` is NUL-terminated and valid only during the call. */
typedef void (*lwfm_log_fn)(lwfm_log_level level, const char *message, void *user_data);

/** Install a log callback receiving messages at `min_level` and above.
 *  NULL restores the default, which is silence. Process-global: call it before
 *  other threads use the library. */
LWFM_API void lwfm_set_log_callback(lwfm_log_fn fn, void *user_data, lwfm_log_level min_level);

/** @} */

/* ------------------------------------------------------------------------- */
/** @name Load options
 *  @{ */

/** Create load options with defaults: fp32, limits as documented in
 *  docs/weight-format.md. Destroy with lwfm_load_options_destroy(). */
LWFM_API lwfm_status lwfm_load_options_create(lwfm_load_options **out);

/** Destroy load options. NULL is accepted. */
LWFM_API void lwfm_load_options_destroy(lwfm_load_options *options);

/** Backbone precision (default LWFM_PRECISION_FP32). bf16 runs only on CPUs
 *  with AVX-512 (oneDNN 2.6 has no bf16 convolution below it): elsewhere
 *  lwfm_model_load() refuses it with LWFM_ERR_UNSUPPORTED. int8 needs a
 *  weight file with a `quant/<convolution weight key>` member per
 *  convolution: lwfm_model_load() refuses one without them with
 *  LWFM_ERR_MISSING_KEY (the message names the tool that adds them). */
LWFM_API lwfm_status lwfm_load_options_set_precision(lwfm_load_options *options,
                                                     lwfm_precision precision);

/** How the fp32 backbone runs its 3x3 stride-1 convolutions (default
 *  LWFM_CONVOLUTIONS_AUTO); bf16 and int8 backbones always use oneDNN's. The
 *  environment variable LWFM_WINOGRAD=0 or 1 overrides AUTO only (a
 *  diagnostic switch). Unknown values: LWFM_ERR_INVALID_ARGUMENT. */
LWFM_API lwfm_status lwfm_load_options_set_convolutions(lwfm_load_options *options,
                                                        lwfm_convolutions convolutions);

/** Upper bound on the total decompressed size of all arrays in a weight file,
 *  in bytes (default 1 GiB), and on their size once converted (float16 arrays
 *  widen to float32; integer arrays are kept at their size). Loading a larger
 *  file fails with LWFM_ERR_LIMIT. A load holds at most about twice this
 *  (the converted arrays and one member's raw bytes) besides the model. */
LWFM_API lwfm_status lwfm_load_options_set_max_total_bytes(lwfm_load_options *options,
                                                           uint64_t bytes);

/** @} */

/* ------------------------------------------------------------------------- */
/** @name Model
 *  @{ */

/** Load a weight file (NumPy .npz, see docs/weight-format.md).
 *  `options` may be NULL for defaults. The file is fully validated and closed
 *  before the call returns; the model holds one copy of the weights, already
 *  in the backbone's compute layout. On success *out owns a reference, to be
 *  released with lwfm_model_destroy(). Thread-safe. */
LWFM_API lwfm_status lwfm_model_load(lwfm_model **out, const char *path,
                                     const lwfm_load_options *options);

/** Same as lwfm_model_load() from a buffer in memory (`size` bytes). The
 *  buffer is not referenced after the call returns. */
LWFM_API lwfm_status lwfm_model_load_from_memory(lwfm_model **out, const void *data, size_t size,
                                                 const lwfm_load_options *options);

/** Release the caller's reference. The model is freed when the last handle
 *  made from it is destroyed as well. NULL is accepted. */
LWFM_API void lwfm_model_destroy(lwfm_model *model);

/** The method the model implements; (lwfm_method)-1 for NULL. */
LWFM_API lwfm_method lwfm_model_method(const lwfm_model *model);

/** Characters of a model fingerprint, without the terminating NUL. */
#define LWFM_FINGERPRINT_CHARS 64

/** The model's fingerprint: the SHA-256 digest, as 64 lowercase hex digits
 *  and a NUL, of the weight file's arrays as the library reads them (names,
 *  shapes and values, configuration included; docs/weight-format.md,
 *  "Fingerprint"). It names the weights, not the file: the same arrays
 *  stored in another order or with other compression give the same
 *  fingerprint, any changed value, shape or key another. The load precision
 *  is not part of it. Taken once, when the model is loaded. A prepared
 *  support set saved to a file is bound to its model's fingerprint
 *  (lwfm_support_load()). `capacity` counts the bytes of `hex` (at least
 *  LWFM_FINGERPRINT_CHARS + 1, else LWFM_ERR_BUFFER_TOO_SMALL and `hex`
 *  untouched). Thread-safe. */
LWFM_API lwfm_status lwfm_model_fingerprint(const lwfm_model *model, char *hex, size_t capacity);

/** The model's configuration as a JSON object (method, backbone, every
 *  parameter of the method, preprocessing). Writes at most `capacity` bytes
 *  including the terminating NUL into `buffer`; `*length` (may be NULL)
 *  receives the string length without NUL. If `capacity` is too small the
 *  call fails with LWFM_ERR_BUFFER_TOO_SMALL, writes nothing to `buffer` and
 *  still sets `*length`, so call it once with capacity 0 to size the buffer.
 *  Thread-safe. */
LWFM_API lwfm_status lwfm_model_config_json(const lwfm_model *model, char *buffer, size_t capacity,
                                            size_t *length);

/** The name of a method as the configuration spells it: "lwfm-spm", "dn4",
 *  "mml", "rcn"; NULL for a value that is no lwfm_method. A static string.
 *  Thread-safe. */
LWFM_API const char *lwfm_method_name(lwfm_method method);

/** The schema of a weight file's configuration (the `config/...` arrays,
 *  docs/weight-format.md section 4) as a JSON document: the one table the
 *  library reads and validates configurations with, so that writers (the
 *  Python bindings' `lwfm.weights`) check exactly what the library checks.
 *
 *  An object with `format_version` (the weight-file format this library
 *  reads), `methods` and `backbones` (the accepted names), `keys` and
 *  `rules`. `keys` is an array, in the order of lwfm_model_config_json(), of
 *  objects with:
 *  - `name` (the array is `config/<name>`), `type`: "int", "bool" (0 / 1,
 *    a bool array accepted), "float", "string" (ASCII, stored as uint8),
 *    "int_list" or "float_list";
 *  - `stored` (false: not a file key, e.g. `input_channels`, shown by
 *    lwfm_model_config_json() only), `required` (the library refuses a file
 *    without it), `write` (writers store it for every model that uses it);
 *  - bounds, inclusive: `min`, `max` (of the value, or of every list entry;
 *    a float32 value is compared with the bounds rounded to float32),
 *    `values` (strings: the accepted ones), `min_length`, `max_length`,
 *    `lengths` (lists: the accepted lengths, when not all in range),
 *    `increasing` (int lists: strictly increasing);
 *  - use: `methods`, `backbones` (the models that use the key; their
 *    lwfm_model_config_json() shows it), `when` (an object {key: value}:
 *    used only when that key has that value), `calibration` (shown only for
 *    a calibrated model);
 *  - `default_by` ("method" or "backbone") and `default` (an object from
 *    each method or backbone name to the value the library assumes when the
 *    file lacks the key; null for a required or derived key).
 *
 *  `rules` is an array of rules between keys, checked in order after every
 *  key, each with `rule`, `key`, optional `other`, `methods` (the models it
 *  applies to), optional `if_positive` (it applies only when that key is >
 *  0), `status` (the lwfm_status of a violation), optional `why`:
 *  "value_only_for" (`key` may be `value` only for `methods`),
 *  "same_length" (lists `key` and `other`; an absent `other` takes `key`'s
 *  length), "zero_or_at_least" (`key` is 0 or at least `other`),
 *  "square_at_most" (`key`^2 <= `max`), "at_least" (`key` >= `min`),
 *  "at_most_square_of" (`key` <= `other`^2). A rule reads an absent key as
 *  its default. Checks that need the tensors (the backbone's block ids,
 *  `mean` with one entry or one per input channel) are not in the schema.
 *
 *  New members may be added in later versions; readers ignore unknown ones
 *  (an unknown `rule` is a check the reader cannot make: refuse to write).
 *
 *  Returns a static NUL-terminated UTF-8 string, valid as long as the library
 *  is loaded; the caller must not free it. Never NULL in a correct build.
 *  Thread-safe. */
LWFM_API const char *lwfm_config_schema_json(void);

/** @name Typed configuration
 *  One key of the model's configuration, without parsing JSON. The keys are
 *  those of lwfm_model_config_json() (docs/weight-format.md), plus
 *  `calibration_temperature` (1 when uncalibrated) and `unknown_threshold`
 *  (0 when none), which every model has. A key that does not apply to the
 *  model (e.g. `top_k` of a DN4 model, `first_padding` of a Conv-64F one) or
 *  is unknown fails with LWFM_ERR_MISSING_KEY; a key of another type with
 *  LWFM_ERR_WRONG_KIND. On failure `*value` is left untouched. Thread-safe.
 *
 *  Types: integers `format_version`, `input_channels`, `first_padding`,
 *  `feature_size`, `top_k`, `neighbor_k`, `query_batch`, `image_size`,
 *  `resize`, and `learnable_matcher` (0 or 1); numbers `temperature`,
 *  `temperature_attn`, `matcher_prob`, `calibration_temperature`,
 *  `unknown_threshold`; strings `method`, `backbone`, `distance`,
 *  `batch_norm`; lists `hyperpixel_ids` (integers), `mean`, `std` (one value,
 *  or one per input channel).
 *  @{ */

/** An integer key. */
LWFM_API lwfm_status lwfm_model_config_int(const lwfm_model *model, const char *key,
                                           int64_t *value);

/** A number key; integer keys are accepted too (converted exactly). */
LWFM_API lwfm_status lwfm_model_config_float(const lwfm_model *model, const char *key,
                                             double *value);

/** A string key. `*value` points to a static string (valid as long as the
 *  library is loaded). */
LWFM_API lwfm_status lwfm_model_config_string(const lwfm_model *model, const char *key,
                                              const char **value);

/** A list key (`mean`, `std`, `hyperpixel_ids`), as numbers: writes the
 *  values to `values[0..capacity-1]`; `*count` (may be NULL) receives their
 *  number. With `capacity` too small the call fails with
 *  LWFM_ERR_BUFFER_TOO_SMALL, writes nothing to `values` and still sets
 *  `*count`, so call it with capacity 0 to size the buffer. */
LWFM_API lwfm_status lwfm_model_config_floats(const lwfm_model *model, const char *key,
                                              double *values, size_t capacity, size_t *count);

/** @} */

/** Class probabilities of `n` rows of `way` logits (any method), calibrated:
 *  softmax(logits / T) per row, T the model's `calibration_temperature`
 *  (fitted on held-out classes by `python3 -m lwfm.calibrate`, docs/models.md;
 *  1 for a model that was not calibrated). `probs` (n * way floats) may be
 *  `logits` itself. Non-finite logits fail with LWFM_ERR_NONFINITE and leave
 *  `probs` untouched. Thread-safe. */
LWFM_API lwfm_status lwfm_model_probabilities(const lwfm_model *model, const float *logits,
                                              int64_t n, int64_t way, float *probs,
                                              size_t probs_len);

/** The model's calibrated "none of these" threshold: a query whose largest
 *  calibrated probability is below it belongs, by the model's measured
 *  rates, to none of the support classes (opt-in: `lwfm classify --unknown`).
 *  0 when the model carries no threshold; negative for a NULL model. */
LWFM_API double lwfm_model_unknown_threshold(const lwfm_model *model);

/** Input the model expects: channels and the preprocessed image size
 *  (e.g. 3, 84, 84). The forward calls accept any height and width for which
 *  every layer gets a non-empty input (as PyTorch does); others fail with
 *  LWFM_ERR_SHAPE. */
LWFM_API lwfm_status lwfm_model_input_shape(const lwfm_model *model, int64_t *channels,
                                            int64_t *height, int64_t *width);

/** Shape of the feature map produced for one image of `height` x `width`
 *  pixels: `*channels` (sum of the tapped layers' channels) x `*fh` x `*fw`.
 *  Fails with LWFM_ERR_SHAPE when the input is too small for the backbone. */
LWFM_API lwfm_status lwfm_model_feature_shape(const lwfm_model *model, int64_t height,
                                              int64_t width, int64_t *channels, int64_t *fh,
                                              int64_t *fw);

/** Backbone features of a batch of images, thread-safe form: equivalent to
 *  lwfm_backbone_forward() on an execution context taken from a pool inside
 *  the model. See lwfm_backbone_forward() for the arguments. */
LWFM_API lwfm_status lwfm_model_features(const lwfm_model *model, const float *images, int64_t n,
                                         int64_t channels, int64_t height, int64_t width,
                                         float *features, size_t capacity);

/** Number of convolutions of the model's backbone, in the order it runs
 *  them (those its taps need). 0 when `model` is NULL. Thread-safe. */
LWFM_API int64_t lwfm_model_convolutions(const lwfm_model *model);

/** Weight key of convolution `i` (0 .. lwfm_model_convolutions() - 1), e.g.
 *  "feature_extractor.layer1.0.conv1.weight"; NULL when `model` is NULL or
 *  `i` is out of range. Owned by the model, valid while it lives.
 *  Thread-safe. */
LWFM_API const char *lwfm_model_convolution_name(const lwfm_model *model, int64_t i);

/** int8 calibration: run the backbone on `n` normalised images (as
 *  lwfm_model_features()) and write, for image k and convolution i, the
 *  largest absolute value that convolution reads to
 *  `ranges[k * lwfm_model_convolutions(model) + i]`; `ranges` holds
 *  `capacity` floats. The model must be loaded in fp32
 *  (LWFM_ERR_UNSUPPORTED otherwise). `python3 -m lwfm.quantize` stores a
 *  statistic of these as the `quant/` members int8 needs. On failure
 *  `ranges` is untouched. Thread-safe. */
LWFM_API lwfm_status lwfm_model_convolution_ranges(const lwfm_model *model, const float *images,
                                                   int64_t n, int64_t channels, int64_t height,
                                                   int64_t width, float *ranges, size_t capacity);

/** int8 calibration, value histograms: run the backbone on `n`
 *  normalised images (as lwfm_model_features()) and, for every value x that
 *  convolution i reads, add 1 to `counts[i * bins + b]`, where b is x's bin
 *  among `bins` equal bins over [-limits[i], limits[i]]:
 *  b = floor((x / limits[i] + 1) * bins / 2), values outside that interval
 *  counted in the first or last bin. `counts` is added to, not
 *  overwritten, so that calls on successive batches accumulate; it holds
 *  `capacity` >= lwfm_model_convolutions(model) * `bins` entries. `limits`
 *  holds lwfm_model_convolutions(model) finite positive floats (e.g. the
 *  largest of lwfm_model_convolution_ranges() over the images); `bins` is
 *  2 .. 16777216. The model must be loaded in fp32 (LWFM_ERR_UNSUPPORTED
 *  otherwise). `python3 -m lwfm.quantize` chooses the `quant/` ranges from
 *  these. On failure `counts` is untouched. Thread-safe (concurrent calls
 *  must not share `counts`). */
LWFM_API lwfm_status lwfm_model_convolution_histograms(const lwfm_model *model, const float *images,
                                                       int64_t n, int64_t channels, int64_t height,
                                                       int64_t width, const float *limits,
                                                       int64_t bins, uint64_t *counts,
                                                       size_t capacity);

/** @} */

/* ------------------------------------------------------------------------- */
/** @name Preprocessing
 *  @{ */

/** Sample type of decoded pixels given to lwfm_model_preprocess(). Values are
 *  pinned. */
typedef enum lwfm_pixel_format {
    LWFM_PIXEL_U8 = 0, /**< 8-bit samples, 0..255 */
    LWFM_PIXEL_U16 = 1 /**< 16-bit samples, 0..65535, native byte order */
} lwfm_pixel_format;

/** Turn one decoded image into one normalised model input, exactly as the
 *  model's configuration says (the preprocessing of `lwfm.episodes.preprocess`
 *  in the Python bindings and of the `lwfm` command).
 *
 *  `pixels`: `height` rows of `width` interleaved pixels of `channels`
 *  samples: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA; row `y` starts at
 *  `pixels + y * row_stride_bytes` (0: rows are packed,
 *  `width * channels * sample size` bytes apart).
 *
 *  `out` receives the image as the model takes it: float32
 *  (in_channels, image_size, image_size), the shape lwfm_model_input_shape()
 *  gives; `out_count` is the number of floats `out` holds (at least
 *  in_channels * image_size * image_size; only that many are written).
 *
 *  Steps: samples scaled to [0, 1] (/ 255 or / 65535); alpha composited over
 *  white (`v * a + 1 - a`); grey input for a 3-channel model replicated, RGB
 *  input for a 1-channel model turned into luma 0.299 R + 0.587 G + 0.114 B;
 *  resized to `resize` x `resize` (`image_size` when the configuration's
 *  `resize` is 0) with antialiased bilinear interpolation (PIL's and
 *  PyTorch's `interpolate(mode="bilinear", antialias=True)`: a triangle
 *  filter widened by the scale factor when shrinking, weights normalised per
 *  output pixel; skipped when the image already has that size); centre crop
 *  of `image_size` at offset round((resize - image_size) / 2), halves to
 *  even; then `(x - mean[c]) / std[c]`. Non-square images are stretched to
 *  the square size (no aspect-preserving crop). Single precision throughout.
 *
 *  Fails, leaving `out` untouched, with LWFM_ERR_INVALID_ARGUMENT (NULL
 *  `model`, `pixels` or `out`; `height` or `width` < 1; an unknown `format`;
 *  a `row_stride_bytes` that is negative or shorter than a packed row),
 *  LWFM_ERR_SHAPE (`channels` not in 1..4), LWFM_ERR_LIMIT (a side over
 *  2^31 - 1 pixels, or sizes whose byte counts overflow),
 *  LWFM_ERR_BUFFER_TOO_SMALL (`out_count` below what the model needs) or
 *  LWFM_ERR_OUT_OF_MEMORY. Allocates scratch proportional to
 *  `height * image_size` per call; no global state. Thread-safe. */
LWFM_API lwfm_status lwfm_model_preprocess(const lwfm_model *model, const void *pixels,
                                           lwfm_pixel_format format, int64_t height,
                                           int64_t width, int64_t channels,
                                           int64_t row_stride_bytes, float *out,
                                           size_t out_count);

/** @} */

/* ------------------------------------------------------------------------- */
/** @name Backbone
 *  @{ */

/** Create an execution context for `model`'s backbone. It takes a reference
 *  on the model. Not thread-safe: one per thread. */
LWFM_API lwfm_status lwfm_backbone_create(lwfm_backbone **out, lwfm_model *model);

/** Destroy a backbone context. NULL is accepted. */
LWFM_API void lwfm_backbone_destroy(lwfm_backbone *backbone);

/** Run the backbone on `n` images, NCHW float32 (n x channels x height x
 *  width, normalised), and write the concatenated tapped feature maps,
 *  (n, C, fh, fw) float32 with C, fh, fw from lwfm_model_feature_shape(), to
 *  `features`, which holds `capacity` floats (it may overlap `images`). NaN
 *  or infinite pixels give LWFM_ERR_NONFINITE, and so do finite pixels of
 *  extreme magnitude whose features overflow to NaN or infinity (as in the
 *  episode calls); `features` is then untouched. The batch is computed into
 *  scratch of the output's size and copied out. Primitives for a shape are created on first use and
 *  reused; scratch buffers grow to the largest batch seen and are reused. */
LWFM_API lwfm_status lwfm_backbone_forward(lwfm_backbone *backbone, const float *images, int64_t n,
                                           int64_t channels, int64_t height, int64_t width,
                                           float *features, size_t capacity);

/** @} */

/* ------------------------------------------------------------------------- */
/** @name Episodes
 *
 *  An episode: `n_support` labelled support images of `way` classes and
 *  `n_query` query images; the result is logits (n_query, way) float32,
 *  row-major; the predicted class of a query is the argmax of its row.
 *  Labels are int32 in 0..way-1, in any order; every class needs at least
 *  one support image and classes may have different numbers of them (class
 *  means are taken over each class's own supports). Images are NCHW float32,
 *  normalised as the model's configuration says; support and query images
 *  may differ in size. Errors leave `logits` untouched.
 *  @{ */

/** Score one episode from images: backbone, LWE fuser and SPM matcher.
 *  `capacity` is the number of floats `logits` holds (>= n_query * way).
 *  Thread-safe. */
LWFM_API lwfm_status lwfm_episode_score(const lwfm_model *model, const float *support,
                                        int64_t n_support, const int32_t *support_labels,
                                        const float *query, int64_t n_query, int64_t channels,
                                        int64_t height, int64_t width, int64_t way, float *logits,
                                        size_t capacity);

/** Score one episode from feature maps as lwfm_model_features() produces
 *  them: (n, channels, fh, fw) float32 with the model's feature shape.
 *  Thread-safe. */
LWFM_API lwfm_status lwfm_episode_score_features(const lwfm_model *model,
                                                 const float *support_features, int64_t n_support,
                                                 const int32_t *support_labels,
                                                 const float *query_features, int64_t n_query,
                                                 int64_t channels, int64_t fh, int64_t fw,
                                                 int64_t way, float *logits, size_t capacity);

/** Prepare a support set once (backbone and every support-side step of the
 *  metric) to score any number of query batches with lwfm_support_score().
 *  Takes a reference on the model; the images and labels are copied as
 *  needed and not referenced after the call. Destroy with
 *  lwfm_support_destroy(). */
LWFM_API lwfm_status lwfm_support_prepare(lwfm_support **out, lwfm_model *model,
                                          const float *support, int64_t n_support,
                                          const int32_t *support_labels, int64_t channels,
                                          int64_t height, int64_t width, int64_t way);

/** Same as lwfm_support_prepare() from support feature maps. */
LWFM_API lwfm_status lwfm_support_prepare_features(lwfm_support **out, lwfm_model *model,
                                                   const float *support_features, int64_t n_support,
                                                   const int32_t *support_labels, int64_t channels,
                                                   int64_t fh, int64_t fw, int64_t way);

/** Destroy a prepared support set. NULL is accepted. Must not race with
 *  lwfm_support_score() on the same set. */
LWFM_API void lwfm_support_destroy(lwfm_support *support);

/** Number of classes of a prepared support set (0 for NULL). */
LWFM_API int64_t lwfm_support_way(const lwfm_support *support);

/** Number of support images of a prepared support set (0 for NULL). */
LWFM_API int64_t lwfm_support_count(const lwfm_support *support);

/** Logits (n_query, way) of query images against a prepared support set.
 *  Thread-safe: any number of threads may score against one support set at
 *  once (each call has its own scratch). */
LWFM_API lwfm_status lwfm_support_score(const lwfm_support *support, const float *query,
                                        int64_t n_query, int64_t channels, int64_t height,
                                        int64_t width, float *logits, size_t capacity);

/** Same as lwfm_support_score() from query feature maps. Thread-safe. */
LWFM_API lwfm_status lwfm_support_score_features(const lwfm_support *support,
                                                 const float *query_features, int64_t n_query,
                                                 int64_t channels, int64_t fh, int64_t fw,
                                                 float *logits, size_t capacity);

/** @} */

/* ------------------------------------------------------------------------- */
/** @name Support sets that persist and grow
 *
 *  A prepared support set is immutable: growing one gives a new set and
 *  leaves the first as it was (other threads may go on scoring it), so any
 *  number of threads may score, save or grow one set at once. The one
 *  exception is lwfm_support_set_class_names(), which must not run while
 *  another call uses the same set: name a set before sharing it.
 *
 *  A saved set (docs/support-format.md) holds what preparing computed (the
 *  method's per-image buffers), the labels, the class names and the
 *  fingerprint of its model (lwfm_model_fingerprint()): loading copies it
 *  back, nothing is recomputed, and scores are bit-identical to the saved
 *  set's. It loads only with a model of the same weights, method and
 *  precision. Files and buffers are validated to the last byte (sizes,
 *  counts, labels, names, a CRC-32 of the whole, finite values) before use.
 *  @{ */

/** Give the classes 0..way-1 of a set their names: `count` must be the
 *  set's way; each name valid UTF-8 of 1..LWFM_LIMIT_CLASS_NAME bytes, all
 *  different. The names are copied and replace earlier ones; `names` NULL
 *  with `count` 0 removes them. They travel with the set when it is saved.
 *  Not thread-safe on this set (see above). On failure the set keeps its
 *  names. */
LWFM_API lwfm_status lwfm_support_set_class_names(lwfm_support *support,
                                                  const char *const *names, int64_t count);

/** Name of class `k` of a set; NULL when the set has no names, `k` is out of
 *  range or `support` is NULL. Valid as long as the set and until its names
 *  are set again. Thread-safe. */
LWFM_API const char *lwfm_support_class_name(const lwfm_support *support, int64_t k);

/** 1 when the set was prepared from feature maps
 *  (lwfm_support_prepare_features(), or loaded from such a set), 0 from
 *  images, -1 for NULL. Either kind scores images and feature maps alike;
 *  the flag is kept so a saved set says which queries its user gives. */
LWFM_API int lwfm_support_from_features(const lwfm_support *support);

/** A new set: the images of `base` followed by `n` new images (NCHW
 *  float32, normalised, of the size that gives the base's feature-map
 *  positions) with `labels` in 0..new_way-1: existing classes 0..way-1 or new
 *  ones way..new_way-1 (new_way >= way), every new class with at least one
 *  image. Only the new images are prepared; the base's prepared buffers are
 *  copied, so the new set scores exactly as one prepared from all the images
 *  at once (base's first). `base` is unchanged and may be scored meanwhile.
 *  Class names are copied when new_way == way; with new classes the new set
 *  has none until lwfm_support_set_class_names(). The new set takes a
 *  reference on the model; destroy it with lwfm_support_destroy(). Fails
 *  with the errors of lwfm_support_prepare(), LWFM_ERR_SHAPE for images of
 *  another feature-map size, LWFM_ERR_INVALID_ARGUMENT for new_way < way or
 *  a new class without images, LWFM_ERR_LIMIT past the limits of the whole
 *  set. Thread-safe. */
LWFM_API lwfm_status lwfm_support_add(lwfm_support **out, const lwfm_support *base,
                                      const float *images, int64_t n, const int32_t *labels,
                                      int64_t channels, int64_t height, int64_t width,
                                      int64_t new_way);

/** Same as lwfm_support_add() from feature maps (n, channels, fh, fw).
 *  Thread-safe. */
LWFM_API lwfm_status lwfm_support_add_features(lwfm_support **out, const lwfm_support *base,
                                               const float *features, int64_t n,
                                               const int32_t *labels, int64_t channels,
                                               int64_t fh, int64_t fw, int64_t new_way);

/** Save a set to the file `path` (docs/support-format.md): written to a
 *  temporary file next to it, flushed to disk, then renamed over `path`, so
 *  `path` is never left partly written (it holds the old file or the whole
 *  new one). LWFM_ERR_IO (with the system's reason) when it cannot be
 *  written; the temporary file is then removed. Thread-safe. */
LWFM_API lwfm_status lwfm_support_save(const lwfm_support *support, const char *path);

/** Save a set to memory. With `buffer` NULL only `*size` is set (the bytes
 *  the set needs); otherwise `capacity` bytes of `buffer` are available:
 *  too few give LWFM_ERR_BUFFER_TOO_SMALL, `buffer` untouched and `*size`
 *  still set. `size` may be NULL. The bytes are those lwfm_support_save()
 *  writes. Thread-safe. */
LWFM_API lwfm_status lwfm_support_save_to_memory(const lwfm_support *support, void *buffer,
                                                 size_t capacity, size_t *size);

/** Load a set saved by lwfm_support_save(), for `model`, on which it takes a
 *  reference. The model must be the one that prepared the set: another
 *  method, other weights (fingerprint) or another precision give
 *  LWFM_ERR_WRONG_KIND, naming both fingerprints. A malformed, truncated or
 *  corrupted file gives LWFM_ERR_FORMAT (or LWFM_ERR_UNSUPPORTED for a newer
 *  format version, LWFM_ERR_LIMIT past the limits, LWFM_ERR_NONFINITE for
 *  non-finite values) with a message naming `path`; nothing is allocated
 *  beyond the size the file's header declares, and only once the file has
 *  that size. Thread-safe. */
LWFM_API lwfm_status lwfm_support_load(lwfm_support **out, lwfm_model *model, const char *path);

/** Same as lwfm_support_load() from `size` bytes in memory (not referenced
 *  after the call). Thread-safe. */
LWFM_API lwfm_status lwfm_support_load_from_memory(lwfm_support **out, lwfm_model *model,
                                                   const void *data, size_t size);
/** @} */

/* ------------------------------------------------------------------------- */
/** @name Top-k classes of a prepared support set
 *
 *  For large galleries (thousands of classes): per query, only the k best
 *  classes, their logits and optionally their calibrated probabilities,
 *  without the caller holding a full (n_query, way) logits buffer.
 *  @{ */

/** Per query, the `k` (1..way) classes with the largest logits, best first:
 *  row q of `classes`, `logits` and `probabilities` (each n_query * k
 *  entries, `capacity` entries each) holds query q's classes, ordered by
 *  logit, larger first; on equal logits the lower class index comes first
 *  (so the result equals a stable sort of lwfm_support_score()'s row by
 *  decreasing logit, cut at k). `logits` and `probabilities` may be NULL
 *  when not wanted; `probabilities` are those of lwfm_model_probabilities()
 *  over the whole row (calibrated softmax over all `way` classes), so a
 *  row's k values sum to at most 1. k outside 1..way fails with
 *  LWFM_ERR_INVALID_ARGUMENT, too small a capacity with
 *  LWFM_ERR_BUFFER_TOO_SMALL; on any failure the outputs are untouched.
 *  The library still computes each query's full row of logits internally
 *  (per-call scratch): what is saved is the caller's buffer and the copy.
 *  Thread-safe as lwfm_support_score(). */
LWFM_API lwfm_status lwfm_support_score_topk(const lwfm_support *support, const float *query,
                                             int64_t n_query, int64_t channels, int64_t height,
                                             int64_t width, int64_t k, int32_t *classes,
                                             float *logits, float *probabilities,
                                             size_t capacity);

/** Same as lwfm_support_score_topk() from query feature maps (as
 *  lwfm_support_score_features()). Thread-safe. */
LWFM_API lwfm_status lwfm_support_score_topk_features(const lwfm_support *support,
                                                      const float *query_features,
                                                      int64_t n_query, int64_t channels,
                                                      int64_t fh, int64_t fw, int64_t k,
                                                      int32_t *classes, float *logits,
                                                      float *probabilities, size_t capacity);

/** @} */

/* ------------------------------------------------------------------------- */
/** @name LWE fuser and SPM matcher, one pair at a time
 *
 *  What an episode computes for one (support, query) pair of feature maps
 *  (each channels x fh x fw, the model's feature shape), exposed to explain
 *  a decision or to build other pipelines on the two stages. P = fh * fw
 *  positions (row-major), L = lwfm_model_layers() tapped layers; per-layer
 *  outputs are (L, P) row-major and `capacity` counts the elements of each
 *  such buffer (>= L * P). Both handles take a reference on the model; their
 *  calls are thread-safe.
 *  @{ */

/** Number of tapped layers L of a model's feature map (0 for NULL). */
LWFM_API int64_t lwfm_model_layers(const lwfm_model *model);

/** The LWE fuser of an LWFM-SPM model (LWFM_ERR_WRONG_KIND otherwise). */
LWFM_API lwfm_status lwfm_lwe_create(lwfm_lwe **out, lwfm_model *model);
/** Destroy an LWE handle. NULL is accepted. */
LWFM_API void lwfm_lwe_destroy(lwfm_lwe *lwe);

/** Attention of one pair: `support_weights[l * P + a]` (ws of spec step 4,
 *  positive, summing to P over a) and `query_weights[l * P + b]` (wq), and in
 *  `*global_similarity` (may be NULL) the cosine of the pooled attended maps
 *  (step 6 with this single support). */
LWFM_API lwfm_status lwfm_lwe_pair(const lwfm_lwe *lwe, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, float *support_weights, float *query_weights,
                                   size_t capacity, float *global_similarity);

/** The SPM matcher of an LWFM-SPM model with SPM on (matcher_prob > 0);
 *  LWFM_ERR_WRONG_KIND otherwise. */
LWFM_API lwfm_status lwfm_spm_create(lwfm_spm **out, lwfm_model *model);
/** Destroy an SPM handle. NULL is accepted. */
LWFM_API void lwfm_spm_destroy(lwfm_spm *spm);

/** Semantic-pixel matching of one pair: per layer l, the optimal assignment
 *  `assignment[l * P + a]` (query position matched to support position a),
 *  the matched similarities `similarity[l * P + a]` = cos(g_l(u_a),
 *  g_l(v_assignment)), `layer_scores[l]` = matcher_prob x the sum of the
 *  top_k similarities (L floats), and `*score` (may be NULL) = the maximum
 *  over layers, the pair's SPM term. */
LWFM_API lwfm_status lwfm_spm_pair(const lwfm_spm *spm, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, int64_t *assignment, float *similarity,
                                   float *layer_scores, size_t capacity, float *score);

/** The region comparison of an RCN model (LWFM_ERR_WRONG_KIND otherwise). */
LWFM_API lwfm_status lwfm_rcn_create(lwfm_rcn **out, lwfm_model *model);
/** Destroy an RCN handle. NULL is accepted. */
LWFM_API void lwfm_rcn_destroy(lwfm_rcn *rcn);

/** Region comparison of one pair (peers.md 4.3-4.5): for each of the P = fh * fw
 *  support regions r (row-major), `similarity[r]` = the best cosine of the support
 *  region with any query region, `match[r]` = that query region, `weight[r]` = the
 *  meta-learner's weight of the region (>= 0); `*score` (may be NULL) = sum_r
 *  weight[r] * similarity[r], the pair's term (a class's logit is the mean of its
 *  supports' terms). `capacity` counts the elements of each output (>= P). */
LWFM_API lwfm_status lwfm_rcn_pair(const lwfm_rcn *rcn, const float *support_feature,
                                   const float *query_feature, int64_t channels, int64_t fh,
                                   int64_t fw, float *similarity, int64_t *match, float *weight,
                                   size_t capacity, float *score);

/** @} */

/* ------------------------------------------------------------------------- */
/** @name Assignment solver
 *  @{ */

/** Exact minimum-cost perfect assignment (linear sum assignment) of the
 *  `n` x `n` row-major cost matrix `cost`, the problem the SPM matcher solves
 *  per pair: `assignment[i]` receives the column given to row i (a
 *  permutation of 0..n-1) and `*total_cost` (may be NULL) the sum of the
 *  chosen costs, accumulated in row order. Shortest augmenting paths
 *  (Hungarian / Jonker-Volgenant), O(n^3) in the worst case, deterministic;
 *  exact for integer costs of magnitude up to 2^53 / (8 n), otherwise optimal
 *  up to rounding (about n * DBL_EPSILON * max|cost|). Fails with
 *  LWFM_ERR_INVALID_ARGUMENT (NULL `cost` or `assignment`, n < 1),
 *  LWFM_ERR_LIMIT (n > 4096, or a cost of magnitude over DBL_MAX / (16 n),
 *  whose sums could overflow), LWFM_ERR_NONFINITE (a NaN or infinite cost; the
 *  message names its row and column) or LWFM_ERR_OUT_OF_MEMORY; outputs are
 *  untouched on failure. Allocates O(n) scratch per call. Thread-safe. */
LWFM_API lwfm_status lwfm_linear_assignment(const double *cost, int64_t n, int64_t *assignment,
                                            double *total_cost);

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* LWFM_LWFM_H */
