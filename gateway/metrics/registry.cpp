#include "gateway/metrics/registry.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <mutex>
#include <span>
#include <stdexcept>
#include <type_traits>

namespace segue::metrics {

namespace {

void append_value(std::string& out, double v) {
    if (std::isnan(v)) {
        out += "NaN";
        return;
    }
    if (std::isinf(v)) {
        out += v > 0 ? "+Inf" : "-Inf";
        return;
    }
    char buf[32];
    std::to_chars_result r;
    // Exact integers print as integers (%g would give "1e+06"); others as %g with the fewest
    // digits that round-trip, so bucket bounds read "0.0005", not "0.00050000000000000001".
    if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0) {
        r = std::to_chars(buf, buf + sizeof buf, static_cast<std::int64_t>(v));
    } else {
        r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
    }
    out.append(buf, r.ptr);
}

void append_help_escaped(std::string& out, std::string_view s) {
    for (char c : s) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
}

void append_label_value_escaped(std::string& out, std::string_view s) {
    for (char c : s) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
}

void append_header(std::string& out, std::string_view name, std::string_view help,
                   std::string_view type) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_help_escaped(out, help);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

void append_label(std::string& out, bool& first, std::string_view name, std::string_view value) {
    out += first ? '{' : ',';
    first = false;
    out += name;
    out += "=\"";
    append_label_value_escaped(out, value);
    out += '"';
}

// One sample of a registered family: names and values are parallel; `le` is an extra label.
void append_sample(std::string& out, std::string_view name, std::string_view suffix,
                   const std::vector<std::string>& label_names,
                   const std::vector<std::string>& label_values, const std::string* le,
                   double value) {
    out += name;
    out += suffix;
    bool first = true;
    for (std::size_t i = 0; i < label_names.size(); ++i) {
        append_label(out, first, label_names[i], label_values[i]);
    }
    if (le != nullptr)
        append_label(out, first, "le", *le);
    if (!first)
        out += '}';
    out += ' ';
    append_value(out, value);
    out += '\n';
}

void atomic_add(std::atomic<double>& a, double v) noexcept {
    double cur = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
    }
}

bool is_metric_name(std::string_view s) {
    if (s.empty())
        return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

bool is_label_name(std::string_view s) {
    return is_metric_name(s) && s.find(':') == std::string_view::npos && !s.starts_with("__");
}

std::vector<double> checked_bounds(std::vector<double> b) {
    if (!b.empty() && std::isinf(b.back()) && b.back() > 0)
        b.pop_back();
    for (std::size_t i = 0; i < b.size(); ++i) {
        if (!std::isfinite(b[i])) {
            throw std::invalid_argument("histogram bucket bounds must be finite");
        }
        if (i > 0 && !(b[i - 1] < b[i])) {
            throw std::invalid_argument("histogram bucket bounds must be strictly increasing");
        }
    }
    return b;
}

constexpr std::string_view histogram_suffixes[] = {"_bucket", "_sum", "_count"};

}  // namespace

std::string format_value(double v) {
    std::string s;
    append_value(s, v);
    return s;
}

// ---- text_writer

void text_writer::family_header(std::string_view name, std::string_view help,
                                std::string_view type) {
    append_header(out_, name, help, type);
}

void text_writer::sample(std::string_view name, const std::vector<label>& labels, double value) {
    out_ += name;
    bool first = true;
    for (const auto& [k, v] : labels)
        append_label(out_, first, k, v);
    if (!first)
        out_ += '}';
    out_ += ' ';
    append_value(out_, value);
    out_ += '\n';
}

void text_writer::sample(std::string_view name, double value) {
    sample(name, {}, value);
}

void text_writer::write_gauge(std::string_view name, std::string_view help, double value) {
    family_header(name, help, "gauge");
    sample(name, value);
}

void text_writer::write_counter(std::string_view name, std::string_view help, double value) {
    family_header(name, help, "counter");
    sample(name, value);
}

// ---- counter, gauge, histogram

void counter::inc(double v) noexcept {
    if (!(v >= 0))
        return;  // also rejects NaN
    atomic_add(value_, v);
}

void gauge::inc(double v) noexcept {
    atomic_add(value_, v);
}

histogram::histogram(std::vector<double> bounds)
    : bounds_(checked_bounds(std::move(bounds))),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void histogram::observe(double v) noexcept {
    // First bound >= v ("le"); NaN compares false everywhere and lands in +Inf, as in
    // client_golang.
    const std::size_t i =
        std::isnan(v) ? bounds_.size()
                      : static_cast<std::size_t>(
                            std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    atomic_add(sum_, v);
}

std::vector<std::uint64_t> histogram::bucket_counts() const {
    std::vector<std::uint64_t> out(bounds_.size() + 1);
    for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = buckets_[i].load(std::memory_order_relaxed);
    }
    return out;
}

std::vector<std::uint64_t> histogram::cumulative_counts() const {
    std::vector<std::uint64_t> out = bucket_counts();
    for (std::size_t i = 1; i < out.size(); ++i)
        out[i] += out[i - 1];
    return out;
}

std::uint64_t histogram::count() const noexcept {
    // Derived from the buckets so that _count always equals the +Inf bucket.
    std::uint64_t n = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        n += buckets_[i].load(std::memory_order_relaxed);
    }
    return n;
}

std::vector<double> default_latency_buckets() {
    return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

// ---- family

namespace {

template <class T>
std::unique_ptr<T> make_child(const std::vector<double>& bounds) {
    if constexpr (std::is_same_v<T, histogram>) {
        return std::make_unique<T>(bounds);
    } else {
        return std::make_unique<T>();
    }
}

}  // namespace

template <class T>
family<T>::family(registry* owner, std::string name, std::string help,
                  std::vector<std::string> label_names, std::vector<double> bounds)
    : family_base(std::move(name), std::move(help), std::move(label_names)),
      owner_(owner),
      bounds_(std::move(bounds)),
      overflow_(make_child<T>(bounds_)) {
    // An unlabelled metric exists (and is exposed as 0) from registration on.
    if (this->label_names().empty())
        with({});
}

template <class T>
template <class Values>
T& family<T>::with_impl(const Values& values) {
    if (values.size() != label_names().size()) {
        throw std::invalid_argument("metric " + name() + ": expected " +
                                    std::to_string(label_names().size()) + " label values, got " +
                                    std::to_string(values.size()));
    }
    {
        std::shared_lock lock(mutex_);
        if (auto it = children_.find(values); it != children_.end())
            return *it->second;
    }
    std::unique_ptr<T> child = make_child<T>(bounds_);
    std::vector<std::string> key(values.begin(), values.end());
    {
        std::unique_lock lock(mutex_);
        // Another thread may have inserted it meanwhile: that one is kept.
        if (auto it = children_.find(key); it != children_.end())
            return *it->second;
        // The cap is checked under the lock, so racing inserts cannot overshoot it.
        if (owner_ == nullptr || children_.size() < owner_->max_series_per_family()) {
            auto [it, inserted] = children_.emplace(std::move(key), std::move(child));
            return *it->second;
        }
    }
    // Counted outside the family's lock: the refusal counter is a family too.
    owner_->count_refused(name());
    return *overflow_;
}

template <class T>
T& family<T>::with(std::initializer_list<std::string_view> label_values) {
    return with_impl(std::span<const std::string_view>(label_values.begin(), label_values.size()));
}

template <class T>
T& family<T>::with(const std::vector<std::string>& label_values) {
    return with_impl(label_values);
}

template <class T>
std::size_t family<T>::size() const {
    std::shared_lock lock(mutex_);
    return children_.size();
}

template <class T>
std::string_view family<T>::type() const noexcept {
    if constexpr (std::is_same_v<T, counter>) {
        return "counter";
    } else if constexpr (std::is_same_v<T, gauge>) {
        return "gauge";
    } else {
        return "histogram";
    }
}

template <class T>
void family<T>::write(std::string& out) const {
    append_header(out, name(), help(), type());
    std::shared_lock lock(mutex_);
    for (const auto& [values, child] : children_) {
        if constexpr (std::is_same_v<T, histogram>) {
            const std::vector<std::uint64_t> cum = child->cumulative_counts();
            std::string le;
            for (std::size_t i = 0; i < cum.size(); ++i) {
                le = i < bounds_.size() ? format_value(bounds_[i]) : "+Inf";
                append_sample(out, name(), "_bucket", label_names(), values, &le,
                              static_cast<double>(cum[i]));
            }
            append_sample(out, name(), "_sum", label_names(), values, nullptr, child->sum());
            append_sample(out, name(), "_count", label_names(), values, nullptr,
                          static_cast<double>(cum.back()));
        } else {
            append_sample(out, name(), "", label_names(), values, nullptr, child->value());
        }
    }
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

// ---- registry

registry::registry(std::size_t max_series_per_family)
    : max_series_(std::max<std::size_t>(1, max_series_per_family)) {}
registry::~registry() = default;

void registry::set_max_series_per_family(std::size_t n) noexcept {
    max_series_.store(std::max<std::size_t>(1, n), std::memory_order_relaxed);
}

void registry::count_refused(const std::string& family_name) {
    family<counter>* f = refused_.load(std::memory_order_acquire);
    if (f == nullptr) {
        // Registering twice returns the same family, so a race here is harmless.
        f = &add_family<counter>(std::string(series_refused_metric),
                                 "New label sets refused because their family reached the "
                                 "per-family series cap, by family.",
                                 {"family"}, {}, /*capped=*/false);
        refused_.store(f, std::memory_order_release);
    }
    f->with({family_name}).inc();
}

template <class T>
family<T>& registry::add_family(std::string name, std::string help,
                                std::vector<std::string> label_names, std::vector<double> buckets,
                                bool capped) {
    constexpr bool is_histogram = std::is_same_v<T, histogram>;
    if (!is_metric_name(name))
        throw std::invalid_argument("invalid metric name: " + name);
    for (std::size_t i = 0; i < label_names.size(); ++i) {
        const std::string& l = label_names[i];
        if (!is_label_name(l)) {
            throw std::invalid_argument("metric " + name + ": invalid label name: " + l);
        }
        if (is_histogram && l == "le") {
            throw std::invalid_argument("metric " + name + ": label name le is reserved");
        }
        if (std::find(label_names.begin(), label_names.begin() + i, l) != label_names.begin() + i) {
            throw std::invalid_argument("metric " + name + ": duplicate label name: " + l);
        }
    }
    if constexpr (is_histogram)
        buckets = checked_bounds(std::move(buckets));

    std::unique_lock lock(mutex_);
    if (auto it = by_name_.find(name); it != by_name_.end()) {
        auto* existing = dynamic_cast<family<T>*>(it->second);
        if (existing == nullptr || existing->label_names() != label_names ||
            existing->bounds() != buckets) {
            throw std::invalid_argument("metric " + name +
                                        " already registered with another type, labels or buckets");
        }
        return *existing;
    }
    // A histogram's series names must not clash with another family's.
    for (std::string_view suffix : histogram_suffixes) {
        if (is_histogram) {
            if (by_name_.contains(name + std::string(suffix))) {
                throw std::invalid_argument("histogram " + name + " clashes with metric " + name +
                                            std::string(suffix));
            }
        } else if (name.ends_with(suffix)) {
            auto it = by_name_.find(std::string_view(name).substr(0, name.size() - suffix.size()));
            if (it != by_name_.end() && it->second->type() == "histogram") {
                throw std::invalid_argument("metric " + name + " clashes with histogram " +
                                            it->first);
            }
        }
    }
    std::unique_ptr<family<T>> f(new family<T>(capped ? this : nullptr, name, std::move(help),
                                               std::move(label_names), std::move(buckets)));
    family<T>& ref = *f;
    by_name_.emplace(std::move(name), f.get());
    families_.push_back(std::move(f));
    return ref;
}

family<counter>& registry::counter_family(std::string name, std::string help,
                                          std::vector<std::string> label_names) {
    return add_family<counter>(std::move(name), std::move(help), std::move(label_names), {});
}

family<gauge>& registry::gauge_family(std::string name, std::string help,
                                      std::vector<std::string> label_names) {
    return add_family<gauge>(std::move(name), std::move(help), std::move(label_names), {});
}

family<histogram>& registry::histogram_family(std::string name, std::string help,
                                              std::vector<std::string> label_names,
                                              std::vector<double> buckets) {
    return add_family<histogram>(std::move(name), std::move(help), std::move(label_names),
                                 std::move(buckets));
}

counter& registry::make_counter(std::string name, std::string help) {
    return counter_family(std::move(name), std::move(help)).with({});
}

gauge& registry::make_gauge(std::string name, std::string help) {
    return gauge_family(std::move(name), std::move(help)).with({});
}

void registry::add_collector(std::function<void(text_writer&)> fn) {
    auto p = std::make_shared<const std::function<void(text_writer&)>>(std::move(fn));
    std::unique_lock lock(mutex_);
    collectors_.push_back(std::move(p));
}

std::string registry::serialize() const {
    std::string out;
    decltype(collectors_) collectors;
    {
        std::shared_lock lock(mutex_);
        for (const auto& f : families_)
            f->write(out);
        collectors = collectors_;
    }
    // Collectors run unlocked so that one touching the registry cannot deadlock.
    std::string scratch;
    for (const auto& c : collectors) {
        scratch.clear();
        text_writer w(scratch);
        try {
            (*c)(w);
        } catch (...) {
            continue;  // a half-written family would make the whole scrape unparseable
        }
        out += scratch;
    }
    return out;
}

}  // namespace segue::metrics
