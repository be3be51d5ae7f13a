//===- Toolkit.cpp - Where the CUDA libraries and headers are -------------===//

#include "runtime/cuda/Toolkit.h"

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include <glob.h>

namespace kiln::rt::cuda {

namespace fs = std::filesystem;

namespace {

/// The existing paths `pattern` matches, sorted (glob(3) sorts them).
std::vector<fs::path> matches(const std::string &pattern) {
  std::vector<fs::path> paths;
  glob_t found{};
  if (::glob(pattern.c_str(), 0, nullptr, &found) == 0)
    for (std::size_t i = 0; i < found.gl_pathc; ++i)
      paths.emplace_back(found.gl_pathv[i]);
  ::globfree(&found);
  return paths;
}

bool isDirectory(const fs::path &path) {
  std::error_code error;
  return fs::is_directory(path, error);
}

/// Appends `path` if it is an existing directory not yet in `paths`.
void addDirectory(std::vector<fs::path> &paths, const fs::path &path) {
  if (isDirectory(path) &&
      std::find(paths.begin(), paths.end(), path) == paths.end())
    paths.push_back(path);
}

std::string environment(const char *name) {
  const char *value = std::getenv(name);
  return value ? value : "";
}

/// What a toolkit or a site keeps in `kind` ("lib" or "include").
std::vector<fs::path> directories(const ToolkitRoots &roots,
                                  std::string_view kind) {
  std::vector<fs::path> paths;
  for (const fs::path &toolkit : roots.toolkits) {
    if (kind == "lib")
      addDirectory(paths, toolkit / "lib64");
    else
      addDirectory(paths, toolkit / "include");
    for (const char *target : {"x86_64-linux", "sbsa-linux", "aarch64-linux"})
      addDirectory(paths, toolkit / "targets" / target / std::string(kind));
  }
  for (const fs::path &site : roots.sitePackages) {
    addDirectory(paths, site / "nvidia" / "cu13" / std::string(kind));
    for (const fs::path &path :
         matches((site / "nvidia" / "*" / std::string(kind)).string()))
      addDirectory(paths, path);
  }
  return paths;
}

} // namespace

ToolkitRoots ToolkitRoots::fromEnvironment() {
  ToolkitRoots roots;
  if (std::string home = environment("CUDA_HOME"); !home.empty())
    roots.toolkits.emplace_back(home);
  if (std::find(roots.toolkits.begin(), roots.toolkits.end(),
                fs::path("/usr/local/cuda")) == roots.toolkits.end())
    roots.toolkits.emplace_back("/usr/local/cuda");

  std::string pythonPath = environment("PYTHONPATH");
  for (std::size_t begin = 0; begin <= pythonPath.size();) {
    std::size_t end = pythonPath.find(':', begin);
    if (end == std::string::npos)
      end = pythonPath.size();
    if (end > begin)
      addDirectory(roots.sitePackages, pythonPath.substr(begin, end - begin));
    begin = end + 1;
  }
  std::vector<std::string> patterns;
  for (const char *prefix : {"VIRTUAL_ENV", "CONDA_PREFIX"})
    if (std::string root = environment(prefix); !root.empty())
      patterns.push_back(root + "/lib/python3*/site-packages");
  if (std::string home = environment("HOME"); !home.empty())
    patterns.push_back(home + "/.local/lib/python3*/site-packages");
  for (const char *pattern :
       {"/usr/local/lib/python3*/dist-packages",
        "/usr/local/lib/python3*/site-packages",
        "/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages",
        "/opt/conda/lib/python3*/site-packages",
        "/opt/venv/lib/python3*/site-packages"})
    patterns.emplace_back(pattern);
  for (const std::string &pattern : patterns)
    for (const fs::path &path : matches(pattern))
      addDirectory(roots.sitePackages, path);
  return roots;
}

std::vector<fs::path> libraryDirectories(const ToolkitRoots &roots) {
  return directories(roots, "lib");
}

std::vector<fs::path> includeDirectories(const ToolkitRoots &roots) {
  return directories(roots, "include");
}

std::string findIncludeDirectory(const ToolkitRoots &roots) {
  for (const fs::path &dir : includeDirectories(roots)) {
    std::error_code error;
    if (fs::exists(dir / "cuda_bf16.h", error))
      return dir.string();
  }
  return "";
}

} // namespace kiln::rt::cuda
