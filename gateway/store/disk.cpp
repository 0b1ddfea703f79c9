#include "gateway/store/disk.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>

namespace segue::store {

std::optional<volume_space> volume_of(const std::string& path) {
    std::error_code ec;
    std::filesystem::path p = std::filesystem::absolute(path.empty() ? "." : path, ec);
    if (ec)
        return std::nullopt;
    for (int depth = 0; depth < 64; ++depth) {
        struct statvfs vfs {};
        struct stat st {};
        if (::statvfs(p.c_str(), &vfs) == 0 && ::stat(p.c_str(), &st) == 0) {
            volume_space v;
            v.device = static_cast<std::uint64_t>(st.st_dev);
            v.available = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
            v.size = static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize;
            return v;
        }
        if (!p.has_parent_path() || p.parent_path() == p)
            break;
        p = p.parent_path();
    }
    return std::nullopt;
}

std::optional<volume_space> tightest_volume(const std::vector<std::string>& paths) {
    std::optional<volume_space> out;
    for (const auto& p : paths) {
        auto v = volume_of(p);
        if (v && (!out || v->available < out->available))
            out = v;
    }
    return out;
}

std::uint64_t file_size(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        return 0;
    return static_cast<std::uint64_t>(st.st_size);
}

bool space_gate::admits(std::uint64_t floor, std::uint64_t incoming, clock::time_point now) {
    std::lock_guard lk(m_);
    if (!last_ || now < at_ || now - at_ >= max_age)
        return false;
    const std::uint64_t headroom = std::max(floor, min_headroom);
    const std::uint64_t left = last_->available > admitted_ ? last_->available - admitted_ : 0;
    // floor + incoming + headroom, without overflowing on absurd inputs.
    if (incoming > left || left - incoming < floor || left - incoming - floor < headroom)
        return false;
    admitted_ += incoming;
    return true;
}

void space_gate::measured(std::optional<volume_space> v, clock::time_point at,
                          std::uint64_t admitted) {
    std::lock_guard lk(m_);
    last_ = v;
    at_ = at;
    admitted_ = admitted;
}

}  // namespace segue::store
