#pragma once
// A small Prometheus registry (text exposition format 0.0.4). Metric updates are lock-free
// atomics; a family's label lookup takes a shared lock, so hot paths resolve a child once with
// with() and keep the reference (valid for the registry's lifetime).
//
// Cardinality is capped: a family holds at most max_series_per_family() label sets. A new label
// set past the cap is refused: with() returns the family's overflow child, which is never
// exported, and segue_metrics_series_refused_total{family="..."} counts the refusal. So a label
// value that leaks from input can cost a bounded amount of memory and scrape size, never more.

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace segue::metrics {

// Formats a sample value the Prometheus way: integers without a fraction ("3"), other values
// %g-style with the fewest digits that round-trip ("0.25", "0.0005", "1e-05"), and "+Inf",
// "-Inf", "NaN".
std::string format_value(double v);

// Writes exposition text; collectors use it to append their own families. Names are not
// validated here: collectors are code, not input.
class text_writer {
  public:
    using label = std::pair<std::string_view, std::string_view>;

    explicit text_writer(std::string& out) noexcept : out_(out) {}

    // "# HELP name help" (help escaped) and "# TYPE name type" (counter, gauge, histogram...).
    void family_header(std::string_view name, std::string_view help, std::string_view type);
    // "name{k="v",...} value" with label values escaped; no braces when labels is empty.
    void sample(std::string_view name, const std::vector<label>& labels, double value);
    void sample(std::string_view name, double value);
    // A whole single-sample, unlabelled family.
    void write_gauge(std::string_view name, std::string_view help, double value);
    void write_counter(std::string_view name, std::string_view help, double value);

  private:
    std::string& out_;
};

// Monotonic. Negative and NaN increments are ignored: a counter never goes down.
class counter {
  public:
    counter() = default;
    counter(const counter&) = delete;
    counter& operator=(const counter&) = delete;

    void inc(double v = 1.0) noexcept;
    double value() const noexcept { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<double> value_{0.0};
};

class gauge {
  public:
    gauge() = default;
    gauge(const gauge&) = delete;
    gauge& operator=(const gauge&) = delete;

    void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
    void inc(double v = 1.0) noexcept;
    void dec(double v = 1.0) noexcept { inc(-v); }
    double value() const noexcept { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<double> value_{0.0};
};

class histogram {
  public:
    // `bounds`: finite, strictly increasing upper bounds; the +Inf bucket is implicit.
    // Throws std::invalid_argument otherwise (a trailing +Inf is accepted and dropped).
    explicit histogram(std::vector<double> bounds);
    histogram(const histogram&) = delete;
    histogram& operator=(const histogram&) = delete;

    void observe(double v) noexcept;

    const std::vector<double>& bounds() const noexcept { return bounds_; }
    // Per-bucket (non-cumulative) counts, bounds().size() + 1 entries, the last one for +Inf.
    std::vector<std::uint64_t> bucket_counts() const;
    // Cumulative counts as exposed ("le" semantics); the last entry equals count().
    std::vector<std::uint64_t> cumulative_counts() const;
    std::uint64_t count() const noexcept;
    double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

  private:
    std::vector<double> bounds_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1
    std::atomic<double> sum_{0.0};
};

// Seconds: 0.0005 .. 10.
std::vector<double> default_latency_buckets();

// Label sets a family keeps before it refuses new ones (see registry).
inline constexpr std::size_t default_max_series_per_family = 1000;

// The counter of refused label sets, by family.
inline constexpr std::string_view series_refused_metric = "segue_metrics_series_refused_total";

class registry;

namespace detail {

// Orders label-value tuples lexicographically; transparent so lookups need not build strings.
struct label_values_less {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
        auto ai = a.begin();
        auto bi = b.begin();
        for (; ai != a.end() && bi != b.end(); ++ai, ++bi) {
            const std::string_view x = *ai;
            const std::string_view y = *bi;
            if (x != y)
                return x < y;
        }
        return ai == a.end() && bi != b.end();
    }
};

class family_base {
  public:
    family_base(std::string name, std::string help, std::vector<std::string> label_names)
        : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}
    family_base(const family_base&) = delete;
    family_base& operator=(const family_base&) = delete;
    virtual ~family_base() = default;

    const std::string& name() const noexcept { return name_; }
    const std::string& help() const noexcept { return help_; }
    const std::vector<std::string>& label_names() const noexcept { return label_names_; }
    virtual std::string_view type() const noexcept = 0;
    virtual void write(std::string& out) const = 0;

  private:
    std::string name_;
    std::string help_;
    std::vector<std::string> label_names_;
};

}  // namespace detail

template <class T>
class family final : public detail::family_base {
  public:
    // Returns the child for these label values (in the order of the family's label names),
    // creating it on first use. Past the registry's per-family cap a new label set is refused:
    // the family's overflow child is returned (usable, never exported) and the refusal counted.
    // Throws std::invalid_argument on a wrong number of values.
    T& with(std::initializer_list<std::string_view> label_values);
    T& with(const std::vector<std::string>& label_values);

    std::size_t size() const;  // number of children (exported series), the overflow not included
    const std::vector<double>& bounds() const noexcept { return bounds_; }  // histograms only

    std::string_view type() const noexcept override;
    void write(std::string& out) const override;

  private:
    friend class registry;
    family(registry* owner, std::string name, std::string help,
           std::vector<std::string> label_names, std::vector<double> bounds);

    template <class Values>
    T& with_impl(const Values& values);

    registry* owner_;  // for the cap and the refusal counter; null: uncapped
    std::vector<double> bounds_;
    std::unique_ptr<T> overflow_;  // what refused label sets get
    mutable std::shared_mutex mutex_;
    // unique_ptr keeps children in place; the map keeps them sorted for stable output.
    std::map<std::vector<std::string>, std::unique_ptr<T>, detail::label_values_less> children_;
};

extern template class family<counter>;
extern template class family<gauge>;
extern template class family<histogram>;

class registry {
  public:
    explicit registry(std::size_t max_series_per_family = default_max_series_per_family);
    ~registry();
    registry(const registry&) = delete;
    registry& operator=(const registry&) = delete;

    // Registering an existing name with the same type, label names (and buckets) returns the
    // existing family; anything else, or an invalid name, throws std::invalid_argument.
    family<counter>& counter_family(std::string name, std::string help,
                                    std::vector<std::string> label_names = {});
    family<gauge>& gauge_family(std::string name, std::string help,
                                std::vector<std::string> label_names = {});
    family<histogram>& histogram_family(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> buckets);

    counter& make_counter(std::string name, std::string help);
    gauge& make_gauge(std::string name, std::string help);

    // Run at every scrape, after the registered families, to append complete families (with
    // HELP/TYPE). Output of a collector that throws is dropped.
    void add_collector(std::function<void(text_writer&)> fn);

    std::string serialize() const;

    // The cap on label sets per family (at least 1). Lowering it keeps the series that exist and
    // refuses new ones until a family is below it; it applies to every family.
    void set_max_series_per_family(std::size_t n) noexcept;
    std::size_t max_series_per_family() const noexcept {
        return max_series_.load(std::memory_order_relaxed);
    }

  private:
    template <class T>
    friend class family;

    template <class T>
    family<T>& add_family(std::string name, std::string help, std::vector<std::string> label_names,
                          std::vector<double> buckets, bool capped = true);
    // Counts one refused label set of `family_name`.
    void count_refused(const std::string& family_name);

    std::atomic<std::size_t> max_series_;
    // segue_metrics_series_refused_total, registered on the first refusal (so a registry that
    // never refuses exports nothing extra); uncapped: one series per family at most.
    std::atomic<family<counter>*> refused_{nullptr};
    mutable std::shared_mutex mutex_;
    std::vector<std::unique_ptr<detail::family_base>> families_;  // registration order
    std::map<std::string, detail::family_base*, std::less<>> by_name_;
    std::vector<std::shared_ptr<const std::function<void(text_writer&)>>> collectors_;
};

}  // namespace segue::metrics
