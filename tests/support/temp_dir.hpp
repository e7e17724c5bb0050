#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace troupe::test {

/// A fresh directory under /tmp, removed with its contents on destruction.
class temp_dir {
public:
  temp_dir() {
    char tmpl[] = "/tmp/troupe-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& sub) const { return path_ + "/" + sub; }

private:
  std::string path_;
};

} // namespace troupe::test
