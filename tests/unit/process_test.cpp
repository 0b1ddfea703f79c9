// The test support's child processes: a sanitizer report in a child's log fails the test that
// started the child (how the TSAN run, scripts/tsan.sh, sees races in segue and the fakes).

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/support/process.hpp"

namespace {

using namespace std::chrono_literals;
using segue::test::child_process;
using segue::test::temp_dir;

const char* const report_line = "WARNING: ThreadSanitizer: data race (pid=4242)";

void child_reports_and_exits() {
    temp_dir dir;
    child_process p;
    p.start({"/bin/sh", "-c", std::string("echo '") + report_line + "' >&2; exit 66"},
            dir.file("log"));
    p.wait(5s);
}

void child_reports_and_is_killed() {
    temp_dir dir;
    child_process p;
    p.start({"/bin/sh", "-c", std::string("echo '") + report_line + "' >&2; exec sleep 30"},
            dir.file("log"));
    std::this_thread::sleep_for(300ms);  // the line is written; the destructor kills the child
}

void command_reports() {
    segue::test::run_command({"/bin/sh", "-c", std::string("echo '") + report_line + "'"});
}

void child_restarted_on_the_same_log_after_a_report() {
    temp_dir dir;
    child_process p;
    p.start({"/bin/sh", "-c", std::string("echo '") + report_line + "' >&2"}, dir.file("log"));
    p.wait(5s);  // reported here, once
    p.start({"/bin/sh", "-c", "echo clean >&2"}, dir.file("log"));
    p.wait(5s);
}

TEST(child_process, report_from_an_exited_child_fails_the_test) {
    EXPECT_NONFATAL_FAILURE(child_reports_and_exits(), "data race (pid=4242)");
}

TEST(child_process, report_from_a_killed_child_fails_the_test) {
    EXPECT_NONFATAL_FAILURE(child_reports_and_is_killed(), "sanitizer report from child");
}

TEST(child_process, report_from_a_command_fails_the_test) {
    EXPECT_NONFATAL_FAILURE(command_reports(), "sanitizer report from /bin/sh");
}

TEST(child_process, a_report_counts_once_per_child) {
    // One failure, not two: the second child appends to the same log without a report.
    EXPECT_NONFATAL_FAILURE(child_restarted_on_the_same_log_after_a_report(),
                            "data race (pid=4242)");
}

TEST(child_process, a_clean_child_passes) {
    temp_dir dir;
    child_process p;
    p.start({"/bin/sh", "-c", "echo 'ThreadSanitizer is only a word here' >&2"}, dir.file("log"));
    EXPECT_EQ(p.wait(5s), 0);
}

}  // namespace
