// A few-shot episode from raw pixels in C++17: 5-way 1-shot.
//
//   episode_cpp MODEL.npz [QUERIES_PER_CLASS]
//
// The C API wrapped the usual C++ way: handles owned by std::unique_ptr with
// custom deleters, failures thrown as exceptions carrying lwfm_last_error(),
// buffers in std::vector. The synthetic images (a coloured pattern per
// class; queries are shifted, noisy copies) go through
// lwfm_model_preprocess(), the preprocessing of `lwfm classify`: any model,
// grey (the bundled omniglot, 28 x 28) or RGB; the configuration is read
// through the typed calls (lwfm_model_config_int / _string), not as JSON.
#include <lwfm/lwfm.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace lwfmpp {

// A failed libLWFM call: what() is "call: status: detail".
class Error : public std::runtime_error {
  public:
    Error(const std::string &call, lwfm_status status)
        : std::runtime_error(call + ": " + lwfm_status_string(status) + ": " + lwfm_last_error()),
          status_(status) {}
    lwfm_status status() const noexcept { return status_; }

  private:
    lwfm_status status_;
};

inline void check(lwfm_status status, const char *call) {
    if (status != LWFM_OK) throw Error(call, status);
}

struct ModelDeleter {
    void operator()(lwfm_model *m) const noexcept { lwfm_model_destroy(m); }
};
struct SupportDeleter {
    void operator()(lwfm_support *s) const noexcept { lwfm_support_destroy(s); }
};

// Images in the model's layout: n x channels x height x width floats.
struct Batch {
    int64_t n = 0, channels = 0, height = 0, width = 0;
    std::vector<float> data;
    float *image(int64_t i) { return data.data() + i * channels * height * width; }
};

// Logits (n_query x way), row-major.
struct Logits {
    int64_t rows = 0, way = 0;
    std::vector<float> data;
    const float *row(int64_t q) const { return data.data() + q * way; }
};

// A prepared support set; keeps its model alive (the C library counts references).
class Support {
  public:
    int64_t way() const { return lwfm_support_way(h_.get()); }
    int64_t count() const { return lwfm_support_count(h_.get()); }

    Logits score(const Batch &query) const {
        Logits out{query.n, way(), std::vector<float>(static_cast<size_t>(query.n * way()))};
        check(lwfm_support_score(h_.get(), query.data.data(), query.n, query.channels,
                                 query.height, query.width, out.data.data(), out.data.size()),
              "lwfm_support_score");
        return out;
    }

  private:
    friend class Model;
    explicit Support(lwfm_support *h) : h_(h) {}
    std::unique_ptr<lwfm_support, SupportDeleter> h_;
};

class Model {
  public:
    explicit Model(const std::string &path) {
        lwfm_model *m = nullptr;
        check(lwfm_model_load(&m, path.c_str(), nullptr), "lwfm_model_load");
        h_.reset(m);
    }

    int64_t config_int(const char *key) const {
        int64_t v = 0;
        check(lwfm_model_config_int(h_.get(), key, &v), "lwfm_model_config_int");
        return v;
    }

    std::string config_string(const char *key) const {
        const char *v = nullptr;
        check(lwfm_model_config_string(h_.get(), key, &v), "lwfm_model_config_string");
        return v;
    }

    // One decoded 8-bit image (h x w x channels, interleaved) -> the model's
    // input at `out` (channels x size x size floats of input_shape()).
    void preprocess(const std::vector<uint8_t> &pixels, int h, int w, int channels,
                    float *out) const {
        const auto s = input_shape();
        check(lwfm_model_preprocess(h_.get(), pixels.data(), LWFM_PIXEL_U8, h, w, channels, 0, out,
                                    static_cast<size_t>(s[0] * s[1] * s[2])),
              "lwfm_model_preprocess");
    }

    std::vector<float> probabilities(const Logits &logits) const {
        std::vector<float> p(logits.data.size());
        check(lwfm_model_probabilities(h_.get(), logits.data.data(), logits.rows, logits.way, p.data(),
                                       p.size()),
              "lwfm_model_probabilities");
        return p;
    }

    std::array<int64_t, 3> input_shape() const {
        std::array<int64_t, 3> s{};
        check(lwfm_model_input_shape(h_.get(), &s[0], &s[1], &s[2]), "lwfm_model_input_shape");
        return s;
    }

    Logits episode_score(const Batch &support, const std::vector<int32_t> &labels,
                         const Batch &query, int64_t way) const {
        Logits out{query.n, way, std::vector<float>(static_cast<size_t>(query.n * way))};
        check(lwfm_episode_score(h_.get(), support.data.data(), support.n, labels.data(),
                                 query.data.data(), query.n, query.channels, query.height,
                                 query.width, way, out.data.data(), out.data.size()),
              "lwfm_episode_score");
        return out;
    }

    Support prepare_support(const Batch &support, const std::vector<int32_t> &labels,
                            int64_t way) const {
        lwfm_support *s = nullptr;
        check(lwfm_support_prepare(&s, h_.get(), support.data.data(), support.n, labels.data(),
                                   support.channels, support.height, support.width, way),
              "lwfm_support_prepare");
        return Support(s);
    }

  private:
    std::unique_ptr<lwfm_model, ModelDeleter> h_;
};

}  // namespace lwfmpp

namespace {

constexpr int kWay = 5;
constexpr int kRawH = 100, kRawW = 120;

// Class `cls`'s pattern shifted by (dy, dx), with uniform noise.
std::vector<uint8_t> draw(int cls, int dy, int dx, int amplitude, std::mt19937 &gen) {
    std::uniform_int_distribution<int> noise(-amplitude, amplitude);
    std::vector<uint8_t> rgb(size_t(kRawH) * kRawW * 3);
    for (int y = 0; y < kRawH; ++y)
        for (int x = 0; x < kRawW; ++x) {
            const int Y = y + dy, X = x + dx;
            std::array<int, 3> px{};
            switch (cls) {
            case 0: px = {(Y / 8) % 2 ? 220 : 40, 30, 30}; break;                    // red stripes
            case 1: px = {30, (X / 6) % 2 ? 210 : 50, 40}; break;                    // green bars
            case 2: px = ((Y / 16 + X / 16) % 2) ? std::array<int, 3>{230, 220, 40}  // checkers
                                                  : std::array<int, 3>{30, 40, 200};
                break;
            case 3: px = {(X + Y) % 64 * 4, 20, (X + Y) % 64 * 3 + 40}; break;       // gradient
            default: {                                                                // rings
                const bool on = int(std::hypot(Y - 50.0, X - 60.0) / 7.0) % 2;
                px = {20, on ? 200 : 60, on ? 220 : 70};
            }
            }
            for (int c = 0; c < 3; ++c)
                rgb[(size_t(y) * kRawW + x) * 3 + c] =
                    uint8_t(std::clamp(px[c] + noise(gen), 0, 255));
        }
    return rgb;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        std::cerr << "usage: " << argv[0] << " MODEL.npz [QUERIES_PER_CLASS]\n";
        return 2;
    }
    const int per_class = argc > 2 ? std::atoi(argv[2]) : 2;
    if (per_class < 1 || per_class > 100) {
        std::cerr << "QUERIES_PER_CLASS must be in 1..100\n";
        return 2;
    }
    try {
        const lwfmpp::Model model(argv[1]);
        const int64_t C = model.config_int("input_channels"), S = model.config_int("image_size");
        std::cout << "libLWFM " << lwfm_version() << ": " << model.config_string("method")
                  << " on " << model.config_string("backbone") << ", input " << C << "x" << S
                  << "x" << S << "\n";
        std::mt19937 gen(2024);

        lwfmpp::Batch support{kWay, C, S, S, std::vector<float>(size_t(kWay * C * S * S))};
        std::vector<int32_t> labels(kWay);
        for (int k = 0; k < kWay; ++k) {
            labels[k] = (k + 2) % kWay;  // any order
            model.preprocess(draw(labels[k], 0, 0, 8, gen), kRawH, kRawW, 3, support.image(k));
        }
        const int64_t n_query = int64_t(kWay) * per_class;
        lwfmpp::Batch query{n_query, C, S, S, std::vector<float>(size_t(n_query * C * S * S))};
        for (int64_t q = 0; q < n_query; ++q) {
            const int i = int(q / kWay) + 1;
            model.preprocess(draw(int(q % kWay), 3 * i, 5 * i, 30, gen), kRawH, kRawW, 3,
                             query.image(q));
        }

        const lwfmpp::Logits logits = model.episode_score(support, labels, query, kWay);

        // The same through a prepared support set, all queries in one batch.
        const lwfmpp::Support prepared = model.prepare_support(support, labels, kWay);
        const lwfmpp::Logits again = prepared.score(query);
        float max_abs = 0, max_diff = 0;
        for (size_t i = 0; i < logits.data.size(); ++i) {
            max_abs = std::max(max_abs, std::fabs(logits.data[i]));
            max_diff = std::max(max_diff, std::fabs(logits.data[i] - again.data[i]));
        }
        if (!(max_diff <= 1e-5f * std::max(max_abs, 1.0f))) {
            std::cerr << "episode_score and the prepared support set disagree by " << max_diff
                      << "\n";
            return 1;
        }

        std::cout << "libLWFM " << lwfm_version() << ": " << prepared.way() << "-way, "
                  << prepared.count() << " support images, " << n_query << " queries\n";
        const std::vector<float> probs = model.probabilities(logits);  // calibrated
        int correct = 0;
        for (int64_t q = 0; q < n_query; ++q) {
            const float *p = probs.data() + q * kWay;
            const int best = int(std::max_element(p, p + kWay) - p);
            std::printf("query %2lld (class %lld): predicted %d  p =", (long long)q,
                        (long long)(q % kWay), best);
            for (int c = 0; c < kWay; ++c) std::printf(" %.3f", p[c]);
            std::printf("\n");
            correct += best == q % kWay;
        }
        std::cout << correct << " of " << n_query << " queries classified as their class\n";
    } catch (const lwfmpp::Error &e) {
        std::cerr << "libLWFM error " << int(e.status()) << ": " << e.what() << "\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
