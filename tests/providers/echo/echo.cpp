#include "tests/providers/echo/echo.hpp"

#include <filesystem>
#include <memory>
#include <string>

#include "gateway/config/schema.hpp"

namespace segue::test::echo {
namespace {

namespace fs = std::filesystem;
using providers::update;

class echo_provider final : public providers::provider {
  public:
    explicit echo_provider(echo_settings s) : settings_(s) {
        caps_.source_file = true;
        caps_.max_outputs = 2;
        caps_.polling = false;  // settles in submit: nothing to poll, no webhook to wait for
        caps_.webhooks = false;
    }
    std::string_view name() const override { return "echo"; }
    const providers::capabilities& caps() const override { return caps_; }

    boost::asio::awaitable<update> submit(const providers::task_view& task,
                                          providers::services& svc) override {
        update u;
        u.method = "echo";
        if (task.request.source != core::source_kind::file || task.input_path.empty()) {
            u.what = update::kind::failed;
            u.error = core::error_class::rejected;
            u.error_code = "unsupported_source";
            u.error_message = "echo only takes uploaded files";
            co_return u;
        }
        u.what = update::kind::done;
        u.provider_task_id = "echo-" + task.task_id;
        std::error_code ec;
        fs::create_directories(svc.work_dir, ec);
        for (int i = 1; i <= task.request.num_outputs; ++i) {
            const fs::path out = fs::path(svc.work_dir) / ("echo_" + std::to_string(i) + ".mp3");
            fs::copy_file(task.input_path, out, fs::copy_options::overwrite_existing, ec);
            providers::output_update o;
            o.index = i;
            if (ec) {
                o.status = core::output_status::failed;
                o.error = "copy failed: " + ec.message();
            } else {
                o.status = core::output_status::ready;
                o.mp3 = providers::local_file{out.string(), "audio/mpeg"};
                o.title = "echo x" + std::to_string(settings_.speed);
            }
            u.outputs.push_back(std::move(o));
        }
        co_return u;
    }

    boost::asio::awaitable<update> poll(const providers::task_view&,
                                        providers::services&) override {
        update u;  // never called: the task is done at submit
        u.what = update::kind::failed;
        u.error = core::error_class::unknown;
        u.error_code = "not_polled";
        u.error_message = "echo has nothing to poll";
        co_return u;
    }

  private:
    echo_settings settings_;
    providers::capabilities caps_;
};

config::object_schema<echo_settings> echo_schema() {
    config::object_schema<echo_settings> s;
    s.field("enabled", &echo_settings::enabled, "Route requests to the echo test provider.")
        .def(false);
    s.field("speed", &echo_settings::speed, "How fast the echo comes back (shown in titles).")
        .def(1)
        .range(1, 10);
    s.field("price", &echo_settings::price, "Credits per output.").def(7.0).range(0.0, 1000.0);
    return s;
}

}  // namespace

const providers::descriptor& provider_descriptor() {
    static const providers::descriptor d = providers::make_descriptor<echo_settings>(
        "echo", "The echo test provider (tests/providers/echo).", echo_schema(),
        [](const echo_settings& s) { return std::make_unique<echo_provider>(s); });
    return d;
}

}  // namespace segue::test::echo
