#include "gateway/store/disk.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>

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

}  // namespace segue::store
